"""A small UMT/VideoMAE-style video ViT with a token-reduction hook between attention and MLP.

Architecture (spec 2.1 / 8.2): tubelet embedding (Conv3d), a fixed 1-D sin-cos position table, no class
token, pre-norm blocks, mean pool of the final tokens weighted by their merge sizes (:func:`pool_tokens`) ->
LayerNorm -> linear head. Module names follow
VideoMAE (``patch_embed.proj``, ``blocks.i.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2``,
``fc_norm``, ``head``) so a VideoMAE-style checkpoint maps onto it (:func:`load_pretrained`).

Each block with a reduction r_l > 0 runs (vid-TLDR's hook, spec 2.1):

1. ``y, A = attn(norm1(x), size)``; x = x + y. With token sizes the attention logits get + log(size_j) of
   the keys (ToMe's proportional attention); A, used for saliency, is the softmax without that term.
2. x, size = reduce(x, A, keys, size) -- vid-TLDR / ToMe / a control (:mod:`.merging`).
3. x = x + mlp(norm2(x)).

:class:`Reduction` says which reducer, which per-layer schedule and which variant. ``Reduction()`` (all
zeros) is the unmerged model, bit for bit. :func:`analytic_macs` counts the cost of any configuration
(1 multiply-add = 1 FLOP, the fvcore convention the paper uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from cvpr24.core.ingest import missing_dataset
from cvpr24.core.safety import load_weights
from cvpr24.pipelines.vidtldr import merging as G

METHODS = ("none", "vidtldr", "tome", "random", "evit")


@dataclass(frozen=True)
class ModelConfig:
    num_frames: int = 8
    image_size: int = 48
    tubelet: int = 2
    patch: int = 8
    width: int = 64
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 10
    stem: int = 0  # > 0: a conv stem (3x3 conv, stride 2 in space, this many channels, GELU) before the
    #               tubelet projection, which then sees the stem's map with a (tubelet, patch/2, patch/2) kernel
    pool: str = "size"  # final pooling over the tokens left: "size" = each token weighted by how many patches it
    #                     stands for (its merge size; = the plain mean of the unmerged model), "mean" = unweighted

    def __post_init__(self) -> None:
        if self.pool not in ("size", "mean"):
            raise ValueError(f"vidtldr.model.pool must be 'size' or 'mean', got {self.pool!r}")

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.num_frames // self.tubelet, self.image_size // self.patch, self.image_size // self.patch

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


@dataclass(frozen=True)
class Reduction:
    """A training-free token-reduction setting.

    method: none | vidtldr | tome | random | evit. schedule: tokens removed after each layer's attention
    (ints, or fractions in (0, 1)); missing layers remove 0. metric: hidden (vid-TLDR) | keys (ToMe).
    saliency: weight merged sources by the saliency score (vid-TLDR) or by 1 (ToMe).
    background_drop: zero + sharpen the background scores (vid-TLDR) or keep the min-max sharpness.
    prop_attn: add log(size) to the attention logits. sort_kept: keep the unmerged A tokens in original
    order (vid-TLDR) or in score order (ToMe).
    """

    method: str = "none"
    schedule: tuple[float, ...] = ()
    metric: str = "hidden"
    saliency: bool = True
    background_drop: bool = True
    prop_attn: bool = True
    sort_kept: bool = True
    seed: int = 0

    def r(self, layer: int) -> float:
        return self.schedule[layer] if layer < len(self.schedule) and self.method != "none" else 0

    @staticmethod
    def vidtldr(schedule, **kw) -> Reduction:
        return Reduction("vidtldr", tuple(schedule), **kw)

    @staticmethod
    def tome(schedule, **kw) -> Reduction:
        kw = {"metric": "keys", "saliency": False, "sort_kept": False, **kw}
        return Reduction("tome", tuple(schedule), **kw)


@dataclass
class Trace:
    """What a forward pass can report besides the logits."""

    tokens: list[int] = field(default_factory=list)  # tokens entering each block
    sharpness0: torch.Tensor | None = None  # (B, N0, 1) layer-0 sharpness (min-max, before zeroing)
    saliency: list[torch.Tensor] = field(default_factory=list)  # scores at each merging layer
    source: torch.Tensor | None = None  # (B, N, N0) final patch membership
    size: torch.Tensor | None = None


def sincos_table(n: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sinusoid position table of VideoMAE / UMT: (n, dim)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: torch.Tensor | None, need_attn: bool):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        plain = logits.softmax(dim=-1)
        if size is not None:
            attn = (logits + size.log()[:, None, None, :, 0]).softmax(dim=-1)
        else:
            attn = plain
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), (plain.detach() if need_attn else None), k.mean(dim=1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))


class VideoViT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Module()
        if cfg.stem > 0:  # a small convolutional stem: translation-equivariant local features per token
            if cfg.patch % 2:
                raise ValueError(f"vidtldr.model.stem needs an even patch size, got {cfg.patch}")
            self.patch_embed.stem = nn.Conv3d(3, cfg.stem, kernel_size=(1, 3, 3), stride=(1, 2, 2),
                                              padding=(0, 1, 1))
            k = (cfg.tubelet, cfg.patch // 2, cfg.patch // 2)
            self.patch_embed.proj = nn.Conv3d(cfg.stem, cfg.width, kernel_size=k, stride=k)
        else:
            k = (cfg.tubelet, cfg.patch, cfg.patch)
            self.patch_embed.proj = nn.Conv3d(3, cfg.width, kernel_size=k, stride=k)
        self.register_buffer("pos_embed", sincos_table(cfg.num_tokens, cfg.width)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.fc_norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, cfg.num_classes)
        self.apply(_init)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W), normalised -> tokens (B, N0, C) in (t, h, w) order."""
        if self.cfg.stem > 0:
            video = F.gelu(self.patch_embed.stem(video))
        return self.patch_embed.proj(video).flatten(2).transpose(1, 2) + self.pos_embed

    def forward(self, video: torch.Tensor, red: Reduction | None = None, trace: Trace | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        red = red or Reduction()
        x = self.embed(video)
        b, n0, _ = x.shape
        size = None  # all ones until the first merge (then proportional attention starts)
        source = torch.eye(n0).expand(b, n0, n0) if trace is not None and red.method != "none" else None
        if red.method == "random" and generator is None:
            generator = torch.Generator().manual_seed(red.seed)
        for layer, blk in enumerate(self.blocks):
            r = red.r(layer)
            if trace is not None:
                trace.tokens.append(x.shape[1])
            uses_attn = red.method == "evit" or (red.method in ("vidtldr", "tome") and red.saliency)
            need = (r > 0 and uses_attn) or (trace is not None and layer == 0)
            y, attn, keys = blk.attn(blk.norm1(x), size if red.prop_attn else None, need)
            x = x + y
            if trace is not None and layer == 0:
                trace.sharpness0 = G.sharpness(attn)
            if r > 0:
                if size is None:
                    size = x.new_ones(b, x.shape[1], 1)
                if red.method in ("vidtldr", "tome"):
                    weight = None
                    if red.saliency:
                        weight = G.saliency_score(attn, background_drop=red.background_drop)
                        if trace is not None:
                            trace.saliency.append(weight)
                    metric = x if red.metric == "hidden" else keys
                    x, size, source = G.bipartite_merge(x, metric, size, r, weight, source, red.sort_kept)
                elif red.method == "random":
                    x, size, source = G.random_drop(x, size, r, generator, source)
                elif red.method == "evit":
                    x, size, source = G.attention_prune(x, size, attn, r, source)
                else:
                    raise ValueError(f"unknown reduction method {red.method!r} (known: {METHODS})")
            x = x + blk.mlp(blk.norm2(x))
        if trace is not None:
            trace.source, trace.size = source, size
        return self.head(self.fc_norm(pool_tokens(x, size if self.cfg.pool == "size" else None)))


def pool_tokens(x: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    """Mean of the final tokens (B, N, C) -> (B, C), each weighted by its size (B, N, 1) when given: a token
    that stands for k merged patches counts k times, so the pooled vector is the mean over the input patches
    (for the unmerged model, or after drops only, it is the plain mean). Elementwise, so FLOP counters see
    nothing, as with `mean`."""
    if size is None:
        return x.mean(dim=1)
    w = size.to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def normalise(clips_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float, scaled to [0, 1] and standardised per channel."""
    x = clips_uint8.float().div_(255.0)
    x = (x - torch.as_tensor(mean, dtype=torch.float32)) / torch.as_tensor(std, dtype=torch.float32)
    return x.permute(0, 4, 1, 2, 3).contiguous()


# ---------------------------------------------------------------------------------------------- FLOPs
def tokens_per_layer(cfg: ModelConfig, red: Reduction) -> list[tuple[int, int]]:
    """(tokens entering, tokens leaving) each block's reduction step."""
    n, out = cfg.num_tokens, []
    for layer in range(cfg.depth):
        r = G.clamp_r(red.r(layer), n)
        out.append((n, n - r))
        n -= r
    return out


def analytic_macs(cfg: ModelConfig, red: Reduction | None = None, *, batch: int = 1) -> int:
    """Multiply-adds of one forward pass (= FLOPs in the fvcore / paper convention).

    Counted: the tubelet convolution (and the conv stem when there is one), every linear layer, the two attention matmuls (q k^T, A v) and the
    matching similarity of bipartite merging (|A| x |B| x metric width). Not counted (as in fvcore's
    defaults for this model): norms, softmax, GELU, the scatter of the merge, sorting. Per block with N
    tokens entering and N' = N - r leaving: 4 N C^2 (qkv + proj) + 2 N^2 C (attention) + 8 N' C^2 (MLP).
    """
    red = red or Reduction()
    c, (kt, kp) = cfg.width, (cfg.tubelet, cfg.patch)
    hidden = int(c * cfg.mlp_ratio)
    if cfg.stem > 0:  # stem: every output pixel (T x H/2 x W/2) sees 3 x 3 x 3 inputs; then the projection
        total = cfg.num_frames * (cfg.image_size // 2) ** 2 * 27 * cfg.stem
        total += cfg.num_tokens * (cfg.stem * kt * (kp // 2) ** 2) * c
    else:
        total = cfg.num_tokens * (3 * kt * kp * kp) * c
    for n, n_out in tokens_per_layer(cfg, red):
        total += n * c * 3 * c + 2 * n * n * c + n * c * c  # qkv, q k^T and A v, proj
        total += 2 * n_out * c * hidden  # fc1 + fc2
        if n_out < n and red.method in ("vidtldr", "tome"):
            width = c if red.metric == "hidden" else c // cfg.heads
            total += ((n + 1) // 2) * (n // 2) * width
    total += c * cfg.num_classes
    return int(total * batch)


def counted_macs(model: VideoViT, video: torch.Tensor, red: Reduction) -> float:
    """FLOPs counted by torch's FlopCounterMode (2 FLOPs per multiply-add) / 2, for cross-checking."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(video, red)
    return counter.get_total_flops() / 2.0 / video.shape[0]


def state_hash(model: nn.Module) -> str:
    """sha256 of every parameter and buffer: equal before and after an evaluation = training-free."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_pretrained(model: VideoViT, path: str) -> list[str]:
    """Load a user's local checkpoint with ``core.safety.load_weights`` (``torch.load(weights_only=True)``).

    Accepts a raw state dict or one under ``model`` / ``module`` / ``state_dict``; VideoMAE's separate
    ``q_bias`` / ``v_bias`` are folded into ``qkv.bias`` (k has no bias there); a stored ``pos_embed`` is
    ignored (the table is fixed). Returns the checkpoint keys that were not used. Raises with the key names
    when a model weight is missing or has the wrong shape.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise missing_dataset("pretrained checkpoint", p, "put your (VideoMAE-style) video ViT weights there or set "
                              "vidtldr.train.pretrained to its path in conf/local/parameters/vidtldr.yml (nothing is "
                              "downloaded)")
    state = load_weights(p)
    for key in ("model", "module", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    for i in range(len(model.blocks)):
        q, v = state.pop(f"blocks.{i}.attn.q_bias", None), state.pop(f"blocks.{i}.attn.v_bias", None)
        if q is not None and v is not None:
            state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    state.pop("pos_embed", None)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(f"checkpoint {p} does not fit the configured model (vidtldr.model): "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}; wrong shape {wrong[:6]}")
    model.load_state_dict({k: state[k] for k in own})
    return sorted(k for k in state if k not in own)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
