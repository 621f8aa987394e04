"""Token reduction between transformer blocks: vid-TLDR, ToMe and the controls. Batched torch code.

Every reducer maps ``(x, size, source)`` with ``x`` (B, N, C) tokens, ``size`` (B, N, 1) token sizes
(how many input patches a token stands for) and optional ``source`` (B, N, N0) patch membership to the
same triple with N - r tokens. ``r`` follows the official convention: an int is a token count, a value in
(0, 1) a fraction of N; it is clamped to [0, N // 2] and r = 0 returns the inputs unchanged.

vid-TLDR (spec section 2, read from the official ``vid_TLDR.py`` for facts only):

* :func:`saliency_score` -- attention sharpness s_i = sum_j A_ij log A_ij of the head-averaged attention,
  min-max normalised per clip; background tokens (below the clip mean) are set to 0 and the rest sharpened
  to (s - mean) / (max - mean).
* :func:`bipartite_merge` -- ToMe's bipartite soft matching (even positions = set A, odd = set B, the r
  most similar A tokens are merged into their best B match) with the source tokens weighted by their
  saliency: x_b' = (size_b x_b + sum_a s_a size_a x_a) / (size_b + sum_a s_a size_a). A background
  source (s_a = 0) is dropped: it adds neither features nor size.

ToMe (Bolya et al., ICLR 2023) is the same matching with the attention keys as the similarity metric,
weights s = 1 and the kept A tokens left in score order. The controls drop tokens instead of merging them:
:func:`random_drop` (uniformly random tokens) and :func:`attention_prune` (EViT-style: keep the tokens that
receive the most attention, no fusion).
"""

from __future__ import annotations

import torch

EPS = 1e-12


def clamp_r(r: float, n: int) -> int:
    """Tokens to remove from n: a fraction when 0 < r < 1, clamped to [0, n // 2]."""
    if 0 < r < 1:
        r = int(n * r)
    return max(0, min(int(r), n // 2))


def sharpness(attn: torch.Tensor) -> torch.Tensor:
    """Negative entropy of each token's head-averaged attention row, min-max normalised per clip.

    attn: (B, H, N, N) softmax attention (rows sum to 1). Returns (B, N, 1) in [0, 1]; a token that
    attends to one token scores 1, a token that attends uniformly to all scores 0. ``xlogy`` makes
    0 log 0 = 0, so an attention entry that underflowed to 0 never gives NaN.
    """
    a = attn.float().mean(dim=1)
    s = torch.xlogy(a, a).sum(dim=-1, keepdim=True)
    s = s - s.amin(dim=1, keepdim=True)
    return s / s.amax(dim=1, keepdim=True).clamp_min(EPS)


def saliency_score(attn: torch.Tensor, background_drop: bool = True) -> torch.Tensor:
    """vid-TLDR's saliency (B, N, 1): sharpness, then background tokens (below the clip mean) set to 0 and
    the foreground sharpened to (s - mean) / (max - mean). ``background_drop=False`` is the ablation that
    keeps the min-max normalised sharpness as it is."""
    s = sharpness(attn)
    if not background_drop:
        return s
    mean = s.mean(dim=1, keepdim=True)
    background = s < mean
    s = s - mean
    s = s / s.amax(dim=1, keepdim=True).clamp_min(EPS)
    return s.masked_fill(background, 0.0)


def bipartite_merge(
    x: torch.Tensor,
    metric: torch.Tensor,
    size: torch.Tensor,
    r: float,
    weight: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
    sort_kept: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Bipartite soft matching + weighted-average merge of r tokens (batched).

    x (B, N, C) tokens; metric (B, N, Cm) the similarity features; size (B, N, 1); weight (B, N, 1) the
    saliency multiplying each source token's size (None = 1, ToMe); source (B, N, N0) patch membership.
    Output order: [kept A tokens, all B tokens]; the kept A tokens in original order when ``sort_kept``
    (vid-TLDR) or in descending-score order (ToMe).
    """
    n = x.shape[1]
    r = clamp_r(r, n)
    if r == 0:
        return x, size, source
    dtype = x.dtype
    x, size = x.float(), size.float()
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(EPS)
    ma, mb = m[:, ::2], m[:, 1::2]
    sim = (ma @ mb.transpose(-1, -2) + 1.0) / 2.0  # (B, Na, Nb) in [0, 1]
    best, best_idx = sim.max(dim=-1)  # every A token's most similar B token
    order = torch.argsort(best, dim=-1, descending=True, stable=True)[..., None]  # (B, Na, 1)
    src_idx, kept_idx = order[:, :r], order[:, r:]
    if sort_kept:
        kept_idx = kept_idx.sort(dim=1).values
    dst_idx = best_idx[..., None].gather(1, src_idx)  # (B, r, 1)

    c = x.shape[-1]
    xa, xb = x[:, ::2], x[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    wa = sa if weight is None else sa * weight.float()[:, ::2]
    src_w = wa.gather(1, src_idx)  # (B, r, 1): s_a * size_a of each source
    src_x = xa.gather(1, src_idx.expand(-1, -1, c))
    num = (xb * sb).scatter_reduce(1, dst_idx.expand(-1, -1, c), src_x * src_w, reduce="sum")
    den = sb.scatter_reduce(1, dst_idx, src_w, reduce="sum")
    x_new = torch.cat([xa.gather(1, kept_idx.expand(-1, -1, c)), num / den], dim=1)
    size_new = torch.cat([sa.gather(1, kept_idx), den], dim=1)
    if source is not None:
        n0 = source.shape[-1]
        pa, pb = source[:, ::2], source[:, 1::2]
        src_p = pa.gather(1, src_idx.expand(-1, -1, n0)) * (src_w > 0)  # dropped background joins no group
        pb = pb.scatter_reduce(1, dst_idx.expand(-1, -1, n0), src_p, reduce="amax")
        source = torch.cat([pa.gather(1, kept_idx.expand(-1, -1, n0)), pb], dim=1)
    return x_new.to(dtype), size_new, source


def _keep(x: torch.Tensor, size: torch.Tensor, source: torch.Tensor | None, keep: torch.Tensor):
    keep = keep.sort(dim=1).values[..., None]  # original order
    out_x = x.gather(1, keep.expand(-1, -1, x.shape[-1]))
    out_s = size.gather(1, keep)
    out_p = None if source is None else source.gather(1, keep.expand(-1, -1, source.shape[-1]))
    return out_x, out_s, out_p


def random_drop(x, size, r, generator: torch.Generator, source=None):
    """Control: drop r uniformly random tokens (no fusion)."""
    n = x.shape[1]
    r = clamp_r(r, n)
    if r == 0:
        return x, size, source
    noise = torch.rand(x.shape[0], n, generator=generator)
    keep = noise.argsort(dim=1)[:, : n - r]
    return _keep(x, size, source, keep)


def attention_prune(x, size, attn, r, source=None):
    """Control (EViT-style, no fusion): keep the N - r tokens that receive the most attention
    (head-averaged attention column mean), drop the rest."""
    n = x.shape[1]
    r = clamp_r(r, n)
    if r == 0:
        return x, size, source
    received = attn.float().mean(dim=1).mean(dim=1)  # (B, N)
    keep = torch.argsort(received, dim=1, descending=True, stable=True)[:, : n - r]
    return _keep(x, size, source, keep)
