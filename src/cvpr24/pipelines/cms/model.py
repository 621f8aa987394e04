"""CMS's networks and losses: the encoder, the DINO-shaped projection head, the single-step kNN mean
shift and the two contrastive losses (Choi, Kang & Cho, CVPR 2024; spec sections 2.2-2.4).

Read top to bottom:

- `Encoder`: a small CNN that stands in for DINO's ViT-B/16 (GroupNorm instead of BatchNorm so that an
  embedding never depends on the other images of its batch, exactly like the ViT's LayerNorm; this is
  also what makes data-parallel training equal single-process training). Its last stage plays the
  role of ViT block 11: the only backbone part that CMS fine-tunes.
- `DINOHead`: MLP -> L2 -> weight-normalised linear with its norm (g) fixed to 1, as GCD's DINOHead.
- `CMSNet`: normalize(head(backbone(x))): the SAME normalised head output is used by the kNN, the losses
  and the clustering.
- `knn_mean`: batched, chunked top-(k+1) by dot product, the top-1 dropped, the remaining k rows averaged.
- `mean_shift`: z = ((1-a) v + a m) / ||.||, the norm treated as a constant in the backward pass.
- `con_meanshift_loss` (positive NOT in the denominator) and `supcon_loss` (Khosla et al.; positives in
  the denominator, tau_sup = 0.07 whatever tau is).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------ encoder
def _stage(c_in: int, c_out: int, stride: int, norm: bool = True) -> nn.Sequential:
    if not norm:  # the last block: conv + bias + ReLU, so the feature scale can be folded into its weights
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(8, c_out), c_out), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """conv stages -> global average pool -> minus a frozen feature mean. `stages[-1]` is the "last block"
    (the only backbone part CMS trains).

    `set_standardisation` (run once after the self-supervised pre-training) plays the role of the ViT's
    frozen final LayerNorm: it scales the features to unit RMS and removes their mean, without which the
    post-ReLU features share one dominant direction and the freshly initialised head maps every image to
    nearly the same unit vector. The last block is conv + bias + ReLU without a normalisation layer, so
    the scale folds exactly into its weights (ReLU is positively homogeneous). A division after the block,
    or a GroupNorm inside it, would multiply the effective learning rate of the block by ~1/scale^2, and
    one SGD step at the paper's learning rate then collapses every embedding onto one point."""

    def __init__(self, in_ch: int = 1, widths: tuple[int, ...] = (32, 64, 128), strides: tuple[int, ...] | None = None):
        super().__init__()
        chans = [in_ch, *widths]
        strides = strides or tuple(1 if i == 0 else 2 for i in range(len(widths)))
        n = len(widths)
        self.stages = nn.ModuleList(_stage(chans[i], chans[i + 1], int(strides[i]), norm=i < n - 1) for i in range(n))
        self.out_dim = widths[-1]
        self.register_buffer("feat_mean", torch.zeros(widths[-1]))

    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages[:-1]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages[-1](self.frozen_features(x)).mean(dim=(2, 3)) - self.feat_mean

    @torch.no_grad()
    def set_standardisation(self, x: torch.Tensor, chunk: int = 512) -> None:
        def feats() -> torch.Tensor:
            return torch.cat([self(x[i: i + chunk]) for i in range(0, len(x), chunk)])

        self.feat_mean.zero_()
        f = feats()
        scale = float(f.std(0).pow(2).mean().sqrt().clamp_min(1e-8))
        conv = self.stages[-1][0]
        conv.weight.div_(scale)
        conv.bias.div_(scale)
        self.feat_mean.copy_(feats().mean(0))


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear -> L2 -> weight-norm Linear(bottleneck, out, no bias), g fixed to 1."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, bottleneck_dim: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        # official init: trunc-normal std 0.02 at fan-ins 768 / 2048 / 2048. At our smaller widths the same
        # std would shrink the bottleneck ~100x and blow up the gradient through its L2 normalisation, so
        # the std is rescaled to keep the official activation scale: 0.02 * sqrt(official fan-in / ours).
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        for m, official_fan_in in zip(linears, (768, 2048, 2048), strict=True):
            nn.init.trunc_normal_(m.weight, std=0.02 * math.sqrt(official_fan_in / m.in_features))
            nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)  # g = 1 ...
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)  # ... and never trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class CMSNet(nn.Module):
    """v = normalize(head(backbone(x))): the embedding used for kNN, losses and clustering."""

    def __init__(self, backbone: Encoder, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=-1)


def freeze_all_but_last_block(net: CMSNet) -> list[nn.Parameter]:
    """DINO recipe: backbone frozen except its last block; the head trains (bar its fixed g).
    Returns the trainable parameters."""
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    for p in net.backbone.stages[-1].parameters():
        p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def build_net(in_ch: int, widths: list[int], head: dict, strides: list[int] | None = None) -> CMSNet:
    backbone = Encoder(in_ch, tuple(int(w) for w in widths), tuple(int(s) for s in strides) if strides else None)
    return CMSNet(backbone, DINOHead(backbone.out_dim, int(head["out_dim"]), int(head["hidden_dim"]),
                                     int(head["bottleneck_dim"])))


# --------------------------------------------------------------------------------- kNN mean shift
@torch.no_grad()
def knn_indices(queries: torch.Tensor, bank: torch.Tensor, k: int, *, drop_top1: bool = True,
                chunk: int = 4096) -> torch.Tensor:
    """Indices (Q x k) of each query's k most similar bank rows by dot product (cosine on unit vectors),
    after dropping the single most similar one when `drop_top1` (the spec's "itself", dropped even when
    the query is not in the bank). Chunked over queries: memory O(chunk x len(bank))."""
    extra = 1 if drop_top1 else 0
    out = []
    for start in range(0, len(queries), chunk):
        sim = queries[start: start + chunk] @ bank.T
        top = sim.topk(k + extra, dim=1).indices
        out.append(top[:, extra:])
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


@torch.no_grad()
def knn_mean(queries: torch.Tensor, bank: torch.Tensor, k: int, *, drop_top1: bool = True,
             chunk: int = 4096) -> torch.Tensor:
    """m_i = (1/k) sum over the k nearest bank rows (top-1 dropped). No gradient: a constant target."""
    idx = knn_indices(queries, bank, k, drop_top1=drop_top1, chunk=chunk)
    return bank[idx].mean(dim=1)


def mean_shift(v: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
    """One mean-shift step z = ((1-a) v + a m) / ||(1-a) v + a m||, the norm detached (spec 2.3.3)."""
    s = (1.0 - alpha) * v + alpha * m
    return s / s.norm(dim=-1, keepdim=True).detach()


@torch.no_grad()
def iterate_mean_shift(v: torch.Tensor, k: int, alpha: float, chunk: int = 4096) -> torch.Tensor:
    """One synchronous inference step over a whole set: every row shifted towards the mean of its k
    nearest rows of the same set (itself dropped), renormalised."""
    return F.normalize((1.0 - alpha) * v + alpha * knn_mean(v, v, k, chunk=chunk), dim=-1)


# ------------------------------------------------------------------------------------------ losses
def _other_view(n2: int, device=None) -> torch.Tensor:
    b = n2 // 2
    return torch.cat([torch.arange(b, n2), torch.arange(0, b)]).to(device)


def con_meanshift_loss(z: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive mean-shift loss over 2B rows ordered [view-1 batch; view-2 batch].

    l_a = -z_a.z_p/tau + log sum_{n: other images} exp(z_a.z_n/tau): the positive (other view of the same
    image) is NOT in the denominator, and neither is the anchor itself. Mean over all 2B anchors."""
    n2 = len(z)
    logits = z @ z.T / tau
    pos_idx = _other_view(n2, z.device)
    pos = logits[torch.arange(n2), pos_idx]
    neg_mask = torch.ones(n2, n2, dtype=torch.bool, device=z.device)
    neg_mask[torch.arange(n2), torch.arange(n2)] = False
    neg_mask[torch.arange(n2), pos_idx] = False
    neg = logits.masked_fill(~neg_mask, -math.inf)
    return (-pos + torch.logsumexp(neg, dim=1)).mean()


def info_nce_loss(z: torch.Tensor, tau: float) -> torch.Tensor:
    """Standard SimCLR NT-Xent over [view-1; view-2]: the positive IS in the denominator (GCD baseline
    and the self-supervised pre-training)."""
    n2 = len(z)
    logits = (z @ z.T / tau).masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), -math.inf)
    return F.cross_entropy(logits, _other_view(n2, z.device))


def supcon_loss(v: torch.Tensor, labels: torch.Tensor, tau_sup: float = 0.07,
                base_tau: float = 0.07) -> torch.Tensor:
    """SupCon (Khosla et al., contrast mode "all") over labelled rows `v` (both views stacked) and their
    labels. l_a = -(1/|P(a)|) sum_p [v_a.v_p/t - log sum_{j != a} exp(v_a.v_j/t)] * (t/base_t);
    positives ARE in the denominator. Mean over anchors that have a positive."""
    n = len(v)
    if n < 2:
        return v.sum() * 0.0
    logits = v @ v.T / tau_sup
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, -math.inf), dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = n_pos > 0
    mean_log_prob = (log_prob * pos).sum(1)[has] / n_pos[has]
    return -(tau_sup / base_tau) * mean_log_prob.mean()


def cms_total_loss(v: torch.Tensor, bank: torch.Tensor | None, labels: torch.Tensor, labelled: torch.Tensor,
                   *, k: int, alpha: float, tau: float, tau_sup: float, lam: float,
                   positive_in_denominator: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """L = (1 - lam) L_cms(z) + lam L_sup(v of labelled rows). `v`: 2B embeddings [view1; view2];
    `labels`/`labelled`: per image (B). alpha = 0 (or no bank) turns the mean shift off;
    `positive_in_denominator` gives the GCD baseline's SimCLR term instead of L_cms."""
    if bank is not None and alpha > 0:
        z = mean_shift(v, knn_mean(v.detach(), bank, k), alpha)
    else:
        z = v
    l_u = info_nce_loss(z, tau) if positive_in_denominator else con_meanshift_loss(z, tau)
    mask2 = torch.cat([labelled, labelled])
    l_s = supcon_loss(v[mask2], torch.cat([labels, labels])[mask2], tau_sup) if mask2.any() else v.sum() * 0.0
    loss = (1.0 - lam) * l_u + lam * l_s
    return loss, {"loss": float(loss.detach()), "l_cms": float(l_u.detach()), "l_sup": float(l_s.detach())}
