"""StyleGRU's neural components at the embedded (SynthTalk) sizes: style encoder, style flow, StyleGRU, losses,
content branch, Style Attention Module, Temporal Transformer Encoder, the stage-2 detector and a per-frame baseline.

Data flow (spec Sec. 2, scaled down as in Sec. 8.5-8.6):

    frames (N,3,S,S) --StyleEncoder--> latents (N, 9 levels, 8 dims)       (pSp substitute, Sec. 8.5)
    latents (B,T,9,8) --select_levels--> (B,T,8*|levels|) --style_flow--> (B,T-1,.)   (Sec. 2.2)
    flows --StyleGRU--> (logit, E_style (B, 2*layers*hidden))                          (Sec. 2.3)
    clips (B,3,T,S,S) --ContentNet--> C_content (B, T/4, d)                             (Sec. 2.5)
    C_content, E_style --SAM | AddFusion | none--> fused tokens --TTE--> logit         (Sec. 2.6-2.7)
    clip logits --video_scores--> one score per video                                  (Sec. 2.8)

Where the authors' code and the spec differ, this follows the code (spec "Corrections"): the latent-dropout
mask is shared by the whole batch, the triplet distance is `F.pairwise_distance` (eps 1e-6). SAM's output
projection is zero-initialised in weight *and* bias (the code zeroes only the weight), so the fused tokens
equal the content tokens exactly at initialisation. "w/o SAM" (`AddFusion`) adds a zero-initialised
Linear(E_style -> d) of the whole style vector to every content token (the code adds token-wise; that needs as
many style tokens as content tokens, which the 16-frame clips do not have).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.validation import DataValidationError

N_LEVELS = 9
LEVEL_DIM = 8
LATENT_DIM = N_LEVELS * LEVEL_DIM
LEVEL_SETS: dict[str, tuple[int, ...]] = {
    "total": tuple(range(9)),
    "coarse": (0, 1, 2),
    "middle": (3, 4, 5),
    "fine": (6, 7, 8),
    "middle+": (3, 4, 5, 6, 7, 8),
    "coarse+": (0, 1, 2, 3, 4, 5),
}
LEVEL_GROUPS = (LEVEL_SETS["coarse"], LEVEL_SETS["middle"], LEVEL_SETS["fine"])


# ------------------------------------------------------------------------------------ latents and flow
def level_indices(name: str) -> tuple[int, ...]:
    """The style levels of a level set ('total', 'coarse', 'middle', 'fine', 'middle+', 'coarse+')."""
    if name not in LEVEL_SETS:
        raise DataValidationError(f"unknown latent level set {name!r}: use one of {sorted(LEVEL_SETS)} "
                                  f"(parameter stylegru.*.levels)")
    return LEVEL_SETS[name]


def level_dims(name: str) -> list[int]:
    """Flat indices (into the 72-d latent) of the dims of a level set, level-major."""
    return [lv * LEVEL_DIM + j for lv in level_indices(name) for j in range(LEVEL_DIM)]


def select_levels(latents: torch.Tensor | np.ndarray, name: str) -> torch.Tensor | np.ndarray:
    """(..., 9, 8) or flat (..., 72) latents -> (..., 8 * len(levels)) holding the set's levels in order."""
    shape = tuple(latents.shape)
    if shape[-2:] == (N_LEVELS, LEVEL_DIM):
        flat = latents.reshape(*shape[:-2], LATENT_DIM)
    elif shape and shape[-1] == LATENT_DIM:
        flat = latents
    else:
        raise DataValidationError(f"style latents have shape {shape}; expected (..., {N_LEVELS}, {LEVEL_DIM}) "
                                  f"or (..., {LATENT_DIM}): re-encode the frames with the style encoder")
    idx = level_dims(name)
    if isinstance(flat, torch.Tensor):
        return flat[..., torch.as_tensor(idx, device=flat.device)]
    return flat[..., idx]


def style_flow(latents: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Style flow d_t = s_{t+1} - s_t along axis 1: (B, T, ...) -> (B, T-1, ...)."""
    if latents.ndim < 2 or latents.shape[1] < 2:
        raise DataValidationError(f"style latents of shape {tuple(latents.shape)} have fewer than 2 time steps "
                                  "on axis 1: a clip needs at least 2 frames for a flow")
    return latents[:, 1:] - latents[:, :-1]


# ------------------------------------------------------------------------------------ style encoder
def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _HeadGroup(nn.Module):
    """k independent map2style heads on one feature map (strided convs -> GAP -> Linear(., out)), batched as
    one full conv followed by grouped convs and a grouped linear (the same function as k separate heads)."""

    def __init__(self, cin: int, k: int, width: int, n_convs: int, out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, k * width, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n_convs - 1):
            layers += [nn.Conv2d(k * width, k * width, 3, 2, 1, groups=k), nn.LeakyReLU(0.2, inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.k, self.width = k, width
        self.weight = nn.Parameter(torch.empty(k, width, out))
        self.bias = nn.Parameter(torch.zeros(k, out))
        nn.init.uniform_(self.weight, -1 / math.sqrt(width), 1 / math.sqrt(width))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        h = self.convs(fmap).mean(dim=(2, 3)).view(-1, self.k, self.width)  # (N, k, width)
        return torch.einsum("nkw,kwo->nko", h, self.weight) + self.bias


def _n_head_convs(size: int) -> int:
    """Strided convs that bring a size x size map to about 3 x 3 or less (at least one)."""
    return max(1, math.ceil(math.log2(max(size, 1) / 3)))


class StyleEncoder(nn.Module):
    """pSp substitute (spec 8.5): (N,3,S,S) in [0,1] -> (N, 9, 8) W+-like latents.

    Pyramid S/2 (widths[0] ch; the first conv is strided: full-resolution activations cost most on the
    CPU), S/4 (widths[1]), S/8 (widths[2]); FPN-like top-down path
    (p4 = c4 + up(lat(c8)), p2 = c2 + up(lat(p4))); coarse heads read the S/8 map, middle heads p4, fine heads p2.
    """

    def __init__(self, image_size: int = 48, widths: Sequence[int] = (32, 64, 128), head_width: int = 32,
                 level_groups: Sequence[Sequence[int]] = LEVEL_GROUPS, level_dim: int = LEVEL_DIM) -> None:
        super().__init__()
        if image_size % 8:
            raise DataValidationError(f"StyleEncoder image_size {image_size} is not a multiple of 8: render "
                                      "frames at 32, 48 or 64 px")
        c2, c4, c8 = widths
        self.image_size = image_size
        self.n_levels = sum(len(g) for g in level_groups)
        self.level_dim = level_dim
        self.order = [lv for g in level_groups for lv in g]
        self.down2 = nn.Sequential(_conv_bn(3, c2, 2), _conv_bn(c2, c2))  # strided stem: no full-res layer
        self.down4 = nn.Sequential(_conv_bn(c2, c4, 2), _conv_bn(c4, c4))
        self.down8 = nn.Sequential(_conv_bn(c4, c8, 2), _conv_bn(c8, c8))
        self.lat8 = nn.Conv2d(c8, c4, 1)
        self.lat4 = nn.Conv2d(c4, c2, 1)
        s8, s4, s2 = image_size // 8, image_size // 4, image_size // 2
        self.heads = nn.ModuleList([
            _HeadGroup(c8, len(level_groups[0]), head_width, _n_head_convs(s8), level_dim),
            _HeadGroup(c4, len(level_groups[1]), head_width, _n_head_convs(s4), level_dim),
            _HeadGroup(c2, len(level_groups[2]), head_width, _n_head_convs(s2), level_dim),
        ])
        inverse = [0] * self.n_levels
        for pos, lv in enumerate(self.order):
            inverse[lv] = pos
        self.register_buffer("_inverse", torch.as_tensor(inverse), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % 8 or images.shape[-2] % 8:
            raise DataValidationError(f"StyleEncoder input has shape {tuple(images.shape)}; expected (N, 3, S, S) "
                                      "with S a multiple of 8 (float frames in [0, 1])")
        c2 = self.down2(images * 2.0 - 1.0)
        c4 = self.down4(c2)
        c8 = self.down8(c4)
        p4 = c4 + F.interpolate(self.lat8(c8), size=c4.shape[-2:], mode="nearest")
        p2 = c2 + F.interpolate(self.lat4(p4), size=c2.shape[-2:], mode="nearest")
        out = torch.cat([self.heads[0](c8), self.heads[1](p4), self.heads[2](p2)], dim=1)  # group order
        return out[:, self._inverse]


# ------------------------------------------------------------------------------------ StyleGRU
class LatentDropout(nn.Module):
    """Latent dropout (spec 2.3 + Corrections): in training ONE Bernoulli(1-p) mask m of length D/2, tiled to
    [m, m], multiplies every sample and time step; output x * mask / (1-p). Identity in eval."""

    def __init__(self, p: float = 0.2, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"latent dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator = generator

    def mask(self, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The tiled mask of length `dim` (even), on the CPU."""
        if dim % 2:
            raise DataValidationError(f"latent dropout needs an even feature size, got {dim}")
        g = generator if generator is not None else self.generator
        half = torch.bernoulli(torch.full((dim // 2,), 1.0 - self.p), generator=g)
        return torch.cat([half, half])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        m = self.mask(x.shape[-1], generator).to(device=x.device, dtype=x.dtype)
        return x * m / (1.0 - self.p)


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class StyleGRU(nn.Module):
    """Latent dropout -> BatchNorm1d over the time axis -> bidirectional GRU with a learned h0 -> E_style
    (the 2*layers final hidden states concatenated) -> residual MLP head -> logit (spec 2.3)."""

    def __init__(self, input_dim: int, steps: int, hidden: int = 64, layers: int = 2, p_drop: float = 0.2,
                 gru_dropout: float = 0.1, head_hidden: int = 128, head_dropout: float = 0.5) -> None:
        super().__init__()
        self.input_dim, self.steps, self.hidden, self.layers = input_dim, steps, hidden, layers
        self.embed_dim = 2 * layers * hidden
        self.latent_dropout = LatentDropout(p_drop)
        self.bn = nn.BatchNorm1d(steps)
        self.gru = nn.GRU(input_dim, hidden, num_layers=layers, dropout=gru_dropout if layers > 1 else 0.0,
                          batch_first=True, bidirectional=True)
        self.h0 = nn.Parameter(torch.randn(2 * layers, 1, hidden))
        e = self.embed_dim
        self.head = nn.Sequential(
            nn.Dropout(head_dropout),
            Residual(nn.Sequential(nn.Linear(e, head_hidden), nn.ReLU(), nn.Dropout(head_dropout),
                                   nn.Linear(head_hidden, e))),
            nn.Dropout(head_dropout),
            nn.Linear(e, 1),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """E_style (B, 2*layers*hidden) of flows x (B, steps, input_dim)."""
        if x.ndim != 3 or x.shape[1] != self.steps or x.shape[2] != self.input_dim:
            raise DataValidationError(f"StyleGRU input has shape {tuple(x.shape)}; expected (B, {self.steps}, "
                                      f"{self.input_dim}): check clip_size and the latent level set")
        x = self.bn(self.latent_dropout(x))
        _, h = self.gru(x, self.h0.expand(-1, x.shape[0], -1).contiguous())
        return h.permute(1, 0, 2).reshape(x.shape[0], self.embed_dim)  # [l0 fwd, l0 bwd, l1 fwd, l1 bwd]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        return self.head(e).squeeze(-1), e


# ------------------------------------------------------------------------------------ stage-1 losses
def triplet_loss(e_a: torch.Tensor, e_p: torch.Tensor, e_n: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """MarginRankingLoss(margin, target=-1) on (||a-p||, ||a-n||) = mean(max(0, d_ap - d_an + margin))."""
    d_ap = F.pairwise_distance(e_a, e_p, eps=1e-6)
    d_an = F.pairwise_distance(e_a, e_n, eps=1e-6)
    return F.margin_ranking_loss(d_ap, d_an, -torch.ones_like(d_ap), margin=margin)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised z (N, E); positives are the
    other samples with the same label; averaged over the anchors that have a positive (0 if none has)."""
    z = F.normalize(z, dim=1)
    n = z.shape[0]
    labels = labels.reshape(-1)
    if labels.shape[0] != n:
        raise DataValidationError(f"supcon_loss: {n} embeddings but {labels.shape[0]} labels")
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / tau).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has] / n_pos[has]
    return per_anchor.mean()


# ------------------------------------------------------------------------------------ content branch
class _TemporalBlock(nn.Module):
    """Residual block of temporal-only convs (kernel (3,1,1)); temporal stride on the first conv."""

    def __init__(self, cin: int, cout: int, t_stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, (3, 1, 1), (t_stride, 1, 1), (1, 0, 0), bias=False), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, (3, 1, 1), 1, (1, 0, 0), bias=False), nn.BatchNorm3d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if cin != cout or t_stride != 1:
            self.skip = nn.Sequential(nn.Conv3d(cin, cout, 1, (t_stride, 1, 1), bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ContentNet(nn.Module):
    """Temporal-only 3D CNN (FTCN family, spec 8.6): (B,3,T,S,S) -> tokens (B, T // token_stride, d).

    Stage 1: Conv3d kernel (stem_t, 3, 3), spatial stride `stem_stride` (the only spatial kernel); later
    stages: temporal residual blocks (spatial kernel 1); MaxPool3d(1,2,2) after the first `spatial_pools`
    stages; temporal stride 2 in stages 2.. until `token_stride` is reached; spatial mean;
    Linear(channels[-1] -> d). The full-resolution activations dominate the CPU cost (element-wise ops), so
    the default stem is strided: S/2 after the stem, S/8 after two more pools.
    """

    def __init__(self, d: int = 32, channels: Sequence[int] = (16, 32, 64, 64), token_stride: int = 4,
                 spatial_pools: int = 2, stem_t: int = 3, stem_stride: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        n_halvings = int(round(math.log2(token_stride)))
        if 2**n_halvings != token_stride or n_halvings > len(channels) - 1:
            raise ValueError(f"token_stride {token_stride} must be a power of 2 <= 2**{len(channels) - 1}")
        self.token_stride = token_stride
        c = list(channels)
        stages: list[nn.Module] = [nn.Sequential(
            nn.Conv3d(3, c[0], (stem_t, 3, 3), (1, stem_stride, stem_stride), (stem_t // 2, 1, 1), bias=False),
            nn.BatchNorm3d(c[0]),
            nn.ReLU(inplace=True))]
        for i in range(1, len(c)):
            stages.append(_TemporalBlock(c[i - 1], c[i], 2 if i <= n_halvings else 1))
        self.stages = nn.ModuleList(stages)
        self.spatial_pools = spatial_pools
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(c[-1], d)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[1] != 3 or clips.shape[2] % self.token_stride:
            raise DataValidationError(f"clips have shape {tuple(clips.shape)}; expected (B, 3, T, S, S) with T a "
                                      f"multiple of {self.token_stride}")
        x = clips * 2.0 - 1.0
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < self.spatial_pools:
                x = F.max_pool3d(x, (1, 2, 2))
        tokens = x.mean(dim=(3, 4)).transpose(1, 2)  # (B, T', C)
        return self.proj(self.drop(tokens))


# ------------------------------------------------------------------------------------ fusion
class SAM(nn.Module):
    """Style Attention Module (spec 2.6): Q from content, K, V from style tokens; single head
    softmax(QK^T / sqrt(d)) V; zero-initialised W_o; returns content + W_o(AV) (identity at init)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d, d) for _ in range(4))
        nn.init.zeros_(self.w_o.weight)
        nn.init.zeros_(self.w_o.bias)

    def attention(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The (B, n_content, n_style) attention map."""
        q, k = self.w_q(content), self.w_k(style)
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.d), dim=-1)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return content + self.w_o(self.attention(content, style) @ self.w_v(style))


class AddFusion(nn.Module):
    """"w/o SAM": a zero-initialised Linear(E_style -> d) of the style vector added to every content token."""

    def __init__(self, style_dim: int, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(style_dim, d)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, content: torch.Tensor, e_style: torch.Tensor) -> torch.Tensor:
        return content + self.lin(e_style)[:, None, :]


# ------------------------------------------------------------------------------------ temporal transformer
class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(d, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dim_head), dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dim_head: int, mlp: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, heads, dim_head, dropout)
        self.ff = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, d),
                                nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class TTE(nn.Module):
    """Temporal Transformer Encoder (spec 2.7): learned CLS + positional embedding, pre-norm blocks, CLS ->
    LayerNorm -> Linear(d, 1). Accepts up to n_tokens tokens (the embedding is sliced, as in FTCN)."""

    def __init__(self, d: int, n_tokens: int, depth: int = 1, heads: int = 4, mlp: int = 64, dropout: float = 0.1,
                 dim_head: int | None = None) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n_tokens + 1, d))
        self.drop = nn.Dropout(dropout)
        dh = dim_head if dim_head is not None else max(1, d // heads)
        self.blocks = nn.ModuleList([_Block(d, heads, dh, mlp, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        if n > self.n_tokens:
            raise DataValidationError(f"TTE got {n} tokens but was built for at most {self.n_tokens}: raise "
                                      "clip_size in the detector config or shorten the clips")
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1) + self.pos[:, : n + 1]
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x[:, 0])


# ------------------------------------------------------------------------------------ detector
class Detector(nn.Module):
    """Stage-2 detector: ContentNet tokens, fused with E_style by SAM ('sam'), a zero-init add ('add') or not at
    all ('none' = w/o StyleGRU), then TTE -> logit (B,). E_style (B, E) is reshaped to n_style_tokens tokens
    of E // n_style_tokens dims and projected to d when those differ."""

    def __init__(self, fusion: str = "sam", style_dim: int = 256, d: int = 32, n_style_tokens: int = 8,
                 clip_len: int = 32, channels: Sequence[int] = (16, 32, 64, 64), token_stride: int = 4,
                 spatial_pools: int = 2, stem_t: int = 3, stem_stride: int = 2, content_dropout: float = 0.0,
                 tte_depth: int = 1, tte_heads: int = 4, tte_mlp: int = 64, tte_dropout: float = 0.1) -> None:
        super().__init__()
        if fusion not in ("sam", "add", "none"):
            raise ValueError(f"fusion must be 'sam', 'add' or 'none', got {fusion!r}")
        if fusion != "none" and style_dim % n_style_tokens:
            raise ValueError(f"style_dim {style_dim} is not divisible by n_style_tokens {n_style_tokens}")
        self.fusion, self.style_dim, self.n_style_tokens = fusion, style_dim, n_style_tokens
        # content and TTE first: with the same seed, every fusion variant starts from the same weights there
        self.content = ContentNet(d, channels, token_stride, spatial_pools, stem_t, stem_stride, content_dropout)
        self.tte = TTE(d, clip_len // token_stride, tte_depth, tte_heads, tte_mlp, tte_dropout)
        self.style_proj: nn.Module = nn.Identity()
        self.fuse: nn.Module | None = None
        if fusion == "sam":
            tok = style_dim // n_style_tokens
            if tok != d:
                self.style_proj = nn.Linear(tok, d)
            self.fuse = SAM(d)
        elif fusion == "add":
            self.fuse = AddFusion(style_dim, d)

    def forward(self, clips: torch.Tensor, e_style: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.content(clips)
        if self.fusion != "none":
            if e_style is None or e_style.shape != (clips.shape[0], self.style_dim):
                got = None if e_style is None else tuple(e_style.shape)
                raise DataValidationError(f"Detector(fusion={self.fusion!r}) needs e_style of shape "
                                          f"({clips.shape[0]}, {self.style_dim}), got {got}: pass the stage-1 "
                                          "StyleGRU embeddings of the same clips")
            if self.fusion == "sam":
                style = self.style_proj(e_style.reshape(e_style.shape[0], self.n_style_tokens, -1))
                tokens = self.fuse(tokens, style)
            else:
                tokens = self.fuse(tokens, e_style)
        return self.tte(tokens).squeeze(-1)


# ------------------------------------------------------------------------------------ per-frame baseline
class _SepConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout))


class _XBlock(nn.Module):
    """Xception block: ReLU-SepConv-ReLU-SepConv-MaxPool(3, 2) + strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), _SepConv(cin, cout), nn.ReLU(inplace=True), _SepConv(cout, cout),
                                  nn.MaxPool2d(3, 2, 1))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class FrameCNN(nn.Module):
    """Per-frame 2D CNN baseline (tiny Xception): (B,3,T,S,S) -> mean over frames of per-frame logits (B,).
    `frame_stride` > 1 scores every k-th frame only."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64), frame_stride: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        c = list(channels)
        self.frame_stride = frame_stride
        self.entry = nn.Sequential(nn.Conv2d(3, c[0], 3, 2, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_XBlock(c[i], c[i + 1]) for i in range(len(c) - 1)])
        self.exit = nn.Sequential(_SepConv(c[-1], c[-1]), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(c[-1], 1))

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) in [0,1] -> (N,) per-frame logits."""
        x = self.exit(self.blocks(self.entry(frames * 2.0 - 1.0)))
        return self.fc(x.mean(dim=(2, 3))).squeeze(-1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise DataValidationError(f"clips have shape {tuple(clips.shape)}; expected (B, 3, T, S, S)")
        x = clips[:, :, :: self.frame_stride]
        b, _, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, 3, h, w)
        return self.frame_logits(frames).view(b, t).mean(dim=1)


# ------------------------------------------------------------------------------------ video aggregation
def video_scores(clip_logits: np.ndarray | torch.Tensor, video_ids: Sequence[str],
                 how: str = "mean_logit") -> dict[str, float]:
    """One score per video (spec 2.8): sigmoid(mean of its clip logits) ('mean_logit') or the fraction of its
    clips with sigmoid(logit) >= 0.5 ('vote'). Keys in order of first appearance."""
    if isinstance(clip_logits, torch.Tensor):
        clip_logits = clip_logits.detach().cpu().numpy()
    logits = np.asarray(clip_logits, dtype=np.float64).reshape(-1)
    if logits.shape[0] != len(video_ids):
        raise DataValidationError(f"video_scores: {logits.shape[0]} clip logits but {len(video_ids)} video ids")
    if how not in ("mean_logit", "vote"):
        raise ValueError(f"video aggregation must be 'mean_logit' or 'vote', got {how!r}")
    groups: dict[str, list[float]] = {}
    for vid, lg in zip(video_ids, logits, strict=True):
        groups.setdefault(str(vid), []).append(float(lg))
    out: dict[str, float] = {}
    for vid, lgs in groups.items():
        arr = np.asarray(lgs)
        if how == "mean_logit":
            out[vid] = float(1.0 / (1.0 + np.exp(-arr.mean())))
        else:
            out[vid] = float(np.mean(arr >= 0.0))
    return out
