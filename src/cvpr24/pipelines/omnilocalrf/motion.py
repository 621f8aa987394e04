"""OmniLocalRF's motion-mask module (spec 2.3, 2.5 items 2-4; paper Sec. 3.3, Eq. 10-12), after the official code
(KAIST-VCLAB/OmniLocalRF @ 763f490, `src/omnilocal_rfs.py`).

- Per frame k, ``levels`` (4) feature planes of ``channels`` (4) channels; level l has (H0 / 2^l) x (W0 / 2^l)
  texels (H0 x W0 = 128 x 256, the ERP aspect 2:1). One tensor per level, shape (C, n_frames, H_l, W_l), sampled by
  trilinear ``grid_sample`` (``align_corners=True``, border padding) at (u, v, f) in [-1, 1]; ``f = 2 k / (n - 1) - 1``
  lands on frame k's plane exactly, so frames never blend.
- The concatenated features (levels x channels) go through a global MLP Linear(16, 128) -> Linear(128, 128) ->
  Linear(128, 4) -> sigmoid: the dynamic colour C_dy (3) and the mask M (1). The official MLP has NO activation
  between its layers (an affine map and a sigmoid); that is the default, ``hidden_act: relu`` is the option. Planes
  start at zero and the Linear layers keep PyTorch's initialisation (biases included), so an untrained module gives
  one constant (C_dy, M) = sigmoid(MLP(0)) everywhere, not exactly 0.5 (spec correction of 2026-11-30).
- A frame appended to the window copies the previous frame's planes (:meth:`MotionMask.append_frame`).
- Compositing (Eq. 10): C = M C_dy + (1 - M) C_st, clamped to [0, 1] (:func:`composite`); the code prepends M as a
  "sample" of alpha M in front of the ray, which scales the static weights by (1 - M): the same thing.
- Losses: the dynamic-colour supervision (Eq. 11) ``mean |C_dy - clamp(C_gt + n)| lw / mean(lw)`` with n uniform in
  [-noise, noise] (the code's uniform noise of width 0.1; the paper says Gaussian), weight 1e-2; the binary term
  (Eq. 12) ``mean(M^2 (1 - M)^2)``, weight 0.1; the mask TV (Eq. 12) ``tv_x + tv_y + t_weight tv_t`` of squared
  differences of M decoded on a dense (frames, rows, columns) grid (400 x 200 in the code), weight 3e-2.
- Pixel to plane coordinates: the code looks planes up at ``2 col / W - 1`` (column index, not the pixel centre);
  ``convention="code"`` (default) reproduces it, ``"centre"`` uses ``2 (col + 0.5) / W - 1``. Both map the training
  pixels and the TV grid the same way, which is what matters for the module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HIDDEN_ACTS = ("none", "relu")
CONVENTIONS = ("code", "centre")


@dataclass(frozen=True)
class MotionMaskConfig:
    levels: int = 4
    channels: int = 4
    base_size: tuple[int, int] = (128, 256)      # (H0, W0) of level 0
    hidden: int = 128
    hidden_act: str = "none"                      # official: no activation between the Linear layers
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if self.levels < 1 or self.channels < 1 or self.hidden < 1:
            raise ValueError(f"levels, channels and hidden must be >= 1, got {self.levels}, {self.channels}, "
                             f"{self.hidden}")
        h, w = (int(x) for x in self.base_size)
        if h >> (self.levels - 1) < 1 or w >> (self.levels - 1) < 1:
            raise ValueError(f"base_size {self.base_size} is too small for {self.levels} levels (each halves it)")

    def level_size(self, level: int) -> tuple[int, int]:
        h, w = (int(x) for x in self.base_size)
        return h >> level, w >> level


class MotionMask(nn.Module):
    """Per-frame mask planes + the global decoder (module docstring). ``forward(u, v, frame)`` -> (C_dy, M)."""

    def __init__(self, n_frames: int, cfg: MotionMaskConfig | None = None):
        super().__init__()
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        self.cfg = cfg or MotionMaskConfig()
        c = self.cfg
        self.planes = nn.ParameterList(
            nn.Parameter(torch.zeros(c.channels, n_frames, *c.level_size(level))) for level in range(c.levels))
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(int(c.seed))
        try:
            act: list[nn.Module] = [nn.ReLU()] if c.hidden_act == "relu" else []
            self.mlp = nn.Sequential(nn.Linear(c.levels * c.channels, c.hidden), *act,
                                     nn.Linear(c.hidden, c.hidden), *act, nn.Linear(c.hidden, 4))
        finally:
            torch.random.set_rng_state(gen_state)

    @property
    def n_frames(self) -> int:
        return int(self.planes[0].shape[1])

    def frame_coord(self, frame: Tensor) -> Tensor:
        """Frame index -> the depth coordinate of ``grid_sample`` (exactly on the plane)."""
        n = self.n_frames
        frame = frame.to(self.planes[0].dtype)
        return torch.zeros_like(frame) if n == 1 else 2.0 * frame / (n - 1) - 1.0

    def features(self, u: Tensor, v: Tensor, frame: Tensor) -> Tensor:
        """(N,) coordinates in [-1, 1] (u: columns, v: rows) and frame indices -> (N, levels * channels)."""
        f = self.frame_coord(frame)
        grid = torch.stack([u.to(f.dtype), v.to(f.dtype), f], dim=-1).view(1, -1, 1, 1, 3)
        out = [F.grid_sample(p.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=True)
               .view(p.shape[0], -1).t() for p in self.planes]
        return torch.cat(out, dim=-1)

    def forward(self, u: Tensor, v: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        out = torch.sigmoid(self.mlp(self.features(u, v, frame)))
        return out[:, :3], out[:, 3]

    @torch.no_grad()
    def append_frame(self) -> None:
        """Grow every level by one frame, a copy of the last frame's planes (new Parameters: rebuild optimisers)."""
        for i, p in enumerate(self.planes):
            self.planes[i] = nn.Parameter(torch.cat([p, p[:, -1:]], dim=1))

    def param_groups(self, lr_planes: float = 1e-2, lr_mlp: float = 5e-4) -> list[dict]:
        """Adam groups as the code: level l's planes at lr_planes / (l + 1), the MLP at lr_mlp."""
        groups = [{"params": [p], "lr": lr_planes / (level + 1)} for level, p in enumerate(self.planes)]
        return groups + [{"params": list(self.mlp.parameters()), "lr": lr_mlp}]

    def decode_grid(self, frames: Sequence[int], rows: int, cols: int) -> Tensor:
        """M on a dense (frames, rows, cols) grid spanning [-1, 1]^2 (the TV term's grid)."""
        v, u = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
        ms = []
        for k in frames:
            fr = torch.full((rows * cols,), float(k))
            ms.append(self(u.reshape(-1), v.reshape(-1), fr)[1].view(rows, cols))
        return torch.stack(ms)


def pixel_to_plane(rows: Tensor, cols: Tensor, h: int, w: int, convention: str = "code") -> tuple[Tensor, Tensor]:
    """Pixel indices -> (u, v) in [-1, 1] for :meth:`MotionMask.features` (module docstring, "convention")."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    off = 0.5 if convention == "centre" else 0.0
    return 2.0 * (cols.float() + off) / w - 1.0, 2.0 * (rows.float() + off) / h - 1.0


def composite(c_static: Tensor, c_dynamic: Tensor, mask: Tensor) -> Tensor:
    """Eq. 10: M C_dy + (1 - M) C_st, clamped to [0, 1]. ``mask`` (N,) or (N, 1)."""
    m = mask.reshape(-1, 1)
    return (m * c_dynamic + (1.0 - m) * c_static).clamp(0.0, 1.0)


def binary_loss(mask: Tensor) -> Tensor:
    """Eq. 12's binary term: mean(M^2 (1 - M)^2); 0 at M in {0, 1}, largest (1/16) at 0.5."""
    return (mask.square() * (1.0 - mask).square()).mean()


def tv_loss(mask_grid: Tensor, t_weight: float = 0.1) -> Tensor:
    """Eq. 12's TV term on a (frames, rows, cols) grid: mean squared differences along columns and rows, plus
    ``t_weight`` times along frames (0 for a single frame)."""
    tv_x = (mask_grid[:, :, 1:] - mask_grid[:, :, :-1]).square().mean()
    tv_y = (mask_grid[:, 1:, :] - mask_grid[:, :-1, :]).square().mean()
    tv_t = (mask_grid[1:] - mask_grid[:-1]).square().mean() if mask_grid.shape[0] > 1 else mask_grid.new_zeros(())
    return tv_x + tv_y + t_weight * tv_t


def dynamic_colour_loss(c_dynamic: Tensor, c_gt: Tensor, weights: Tensor, *, noise: float = 0.05,
                        generator: torch.Generator | None = None) -> Tensor:
    """Eq. 11 as the code: mean |C_dy - clamp(C_gt + n, 0, 1)| lw / mean(lw), n ~ U(-noise, noise) per channel."""
    n = (torch.rand(c_gt.shape, generator=generator, dtype=c_gt.dtype) * 2.0 - 1.0) * noise
    target = (c_gt + n).clamp(0.0, 1.0)
    lw = weights.reshape(-1, 1) / weights.mean()
    return ((c_dynamic - target).abs() * lw).mean()
