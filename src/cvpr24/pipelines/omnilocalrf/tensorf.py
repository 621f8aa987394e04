"""OmniLocalRF static scene model: local TensoRF VM fields, their volume rendering, the progressive allocation of
local RFs along the camera path and the per-frame exposure (spec sections 2.1, 2.2, 2.5 item 9, 2.6).

Everything follows the official code, KAIST-VCLAB/OmniLocalRF @ 763f490 (`src/models/tensorBase.py`,
`src/models/tensoRF.py`, `src/omnilocal_rfs.py`, `src/train.py`, `src/utils/utils.py`), a fork of
facebookresearch/localrf whose field is TensoRF's `TensorVMSplit`. Conventions:

- A field lives in CONTRACTED space: world points of an RF's frame go through `camera.contract` (radius < 2) and
  the axis-aligned box `aabb` = [-2, 2]^3 is mapped to [-1, 1]^3 (`normalize_coord`) for `grid_sample`
  (bilinear, `align_corners=True`, border padding).
- VM split: for mode m with plane axes `MAT_MODE[m]` = (a0, a1) and line axis `VEC_MODE[m]` = v, a plane has shape
  (1, C_m, N[a1], N[a0]) (rows = a1, columns = a0, so grid_sample's (x, y) = (coord[a0], coord[a1])) and a line
  (1, C_m, N[v], 1). `grid_size` = (N_x, N_y, N_z). Init 0.1 * randn. Density feature = sum over modes and
  components of plane * line; appearance = basis matrix (no bias) applied to the concatenated plane * line products.
- sigma = softplus(feature + density_shift) (density_shift -5); alpha = 1 - exp(-sigma * dt * distance_scale) with
  dt the spacing of the sample DISTANCES along the unit ray (world units, not contracted) and distance_scale 25.
- Shading `MLP_Fea_late_view` (`LateViewMLP`): features -> Linear(27, 128) - ReLU - Linear(128, 128) - ReLU, concat
  the (detached, unit) view direction -> Linear(131, 3) (bias 0 at init) -> sigmoid. Positional encodings are 0 in
  every official config; fea_pe / view_pe are supported as in the code (fea_pe with `refine=False` feeds zeros).
- Volume rendering (`render_rays`): T_i = prod_{k<i}(1 - alpha_k + 1e-10), w_i = alpha_i T_i; colour = sum w_i c_i;
  depth = sum w_i t_i / |d| (t along the UNIT ray, so depth is in units of |d|; ERP rays have |d| = 1);
  acc = sum w_i. The last sample is invalid (sigma 0; its interval is 0 anyway). Colours are only evaluated where
  w_i > rayMarch_weight_thres (1e-3); elsewhere c_i = 0. Background: none (black), as `OmniLocalRFs.rf_forward`
  which the pipeline uses; `background=1.0` is `TensorBase.forward`'s white_bg (its random white background in
  training is the caller's choice).
- Grid upsampling: bilinear (planes) / linear (lines) with align_corners=True to the new resolution, as
  `up_sampling_VM`; the field's values at the NEW grid nodes are unchanged. New Parameter objects are created, so
  optimisers must be rebuilt (the code resets the RF optimiser at every upsampling, lr_upsample_reset = 1).
- Voxel schedule: N_voxel_init 64^3 -> N_voxel_final 640^3 log-linear over len(upsamp_list) steps, each count
  rounded to a cube (`n_voxel_schedule`); per-frame keys [100, 150, 200, 250, 300] are multiplied by the number of
  frames of the RF's window at its second refinement iteration (`ProgressiveSchedule`).

Code behaviours treated as bugs (intent implemented, code behind a flag):
- `N_to_reso` truncates a float32 cube root: 13^3, 28^3, 63^3, ... voxels give 12, 27, 62, ... per axis.
  `n_to_reso` rounds; `code_truncation=True` reproduces. The default schedule (101, 161, 255, 404, 640) is the same
  either way.
- `density_L1` adds the three plane x line outer products after flattening each in its OWN axis order, so voxel
  (x, y, z) of mode 0 is summed with unrelated voxels of modes 1 and 2. `density_l1` aligns the voxels;
  `voxel_order="code"` reproduces.
- Test-frame exposure: the code wants the mean of the two neighbours' matrices and, at the ends, the single
  neighbour, but its fix for the last frame is dead code (it tests `view_ids_m == view_ids` after `view_ids_m` was
  already fixed), so the last frame averages its own matrix with its predecessor's. `test_frame_exposure`
  implements the intent; `code_quirk=True` reproduces.

Note for callers: the code picks `rf_forward`'s training branch (mask module composited) whenever a render chunk
holds as many rays as `ray_ids`, i.e. also at test time when a whole frame fits into one chunk (W x H <= batch
size / number of blended RFs). Real frames never do; `LocalRFs.render_static` is the test branch. Against the code
on the same weights, renders differ only through `camera.contract` (<= 1e-6 relative, see its docstring).

Reconstructed / not from the spec's wording (read from the code): the bookkeeping order of `ProgressiveSchedule`
(refine decision, add-frame timing, the rf_iter-based refinement length, upsample keys, deactivation of frames that
the new RF does not see); `should_refine`'s grouping (no frames left OR (more than n_overlap frames added AND
(drift > max_drift OR window >= n_max_frames))); the L1 term is NOT decayed by lr_factor in the code (the spec
says "all"; `tensorf_regularisers(decay_l1=False)` follows the code). Not implemented: the alpha mask (threshold
0 makes it all ones, a no-op), `shrink`, `floater_thresh` (0 in training and evaluation), the other shading modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvpr24.pipelines.omnilocalrf import camera

MAT_MODE: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
VEC_MODE: tuple[int, ...] = (2, 1, 0)
AABB_HALF = 2.0
WEIGHT_EPS = 1e-10

DEFAULT_UPSAMPLE_LIST: tuple[int, ...] = (100, 150, 200, 250, 300)


def _triple(x: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(x, int | np.integer):
        return int(x), int(x), int(x)
    values = tuple(int(v) for v in x)
    if len(values) != 3:
        raise ValueError(f"expected an int or three ints, got {x}")
    return values  # type: ignore[return-value]


def positional_encoding(x: Tensor, freqs: int) -> Tensor:
    """TensoRF's encoding: sin and cos of x * 2^k, k < freqs, (..., D) -> (..., 2 D freqs) (sin block first)."""
    bands = 2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)
    pts = (x[..., None] * bands).reshape(*x.shape[:-1], freqs * x.shape[-1])
    return torch.cat([torch.sin(pts), torch.cos(pts)], dim=-1)


class LateViewMLP(nn.Module):
    """`MLPRender_Fea_late_view`: features (+ PE) -> Linear-ReLU-Linear-ReLU -> concat view dir (+ PE) -> Linear(3)
    -> sigmoid. The last layer's bias starts at 0; the rest keep PyTorch's default Linear init."""

    def __init__(self, in_features: int = 27, feature_c: int = 128, view_pe: int = 0, fea_pe: int = 0) -> None:
        super().__init__()
        self.in_features, self.view_pe, self.fea_pe = in_features, view_pe, fea_pe
        self.in_mlp = 2 * fea_pe * in_features + in_features
        self.in_view = 2 * view_pe * 3 + 3
        self.mlp = nn.Sequential(nn.Linear(self.in_mlp, feature_c), nn.ReLU(), nn.Linear(feature_c, feature_c),
                                 nn.ReLU())
        self.mlp_view = nn.Sequential(nn.Linear(feature_c + self.in_view, 3))
        nn.init.constant_(self.mlp_view[0].bias, 0.0)

    def forward(self, features: Tensor, viewdirs: Tensor, refine: bool = True) -> Tensor:
        parts = [features]
        if self.fea_pe > 0:
            if refine:
                parts.append(positional_encoding(features, self.fea_pe))
            else:  # the code feeds zeros instead of the encoding while the RF is still growing
                parts.append(features.new_zeros(features.shape[0], self.in_mlp - features.shape[-1]))
        view = [viewdirs]
        if self.view_pe > 0:
            view.append(positional_encoding(viewdirs, self.view_pe))
        hidden = self.mlp(torch.cat(parts, dim=-1))
        return torch.sigmoid(self.mlp_view(torch.cat([hidden, *view], dim=-1)))


class TensoRFVM(nn.Module):
    """One local RF: TensoRF VM split (`TensorVMSplit` with `MLP_Fea_late_view` shading) in contracted space.

    Defaults are the official ones (grid 64^3, components [8,8,8] / [24,24,24], app_dim 27, featureC 128,
    density_shift -5, distance_scale 25, rayMarch_weight_thres 1e-3, step_ratio 0.5, aabb [-2, 2]^3); a CPU
    profile passes smaller sizes. `generator` seeds the plane/line init (the Linear layers use the global RNG).
    """

    def __init__(self, grid_size: int | Sequence[int] = 64, density_n_comp: Sequence[int] = (8, 8, 8),
                 app_n_comp: Sequence[int] = (24, 24, 24), app_dim: int = 27, feature_c: int = 128,
                 view_pe: int = 0, fea_pe: int = 0, density_shift: float = -5.0, distance_scale: float = 25.0,
                 ray_march_weight_thres: float = 1e-3, step_ratio: float = 0.5, aabb_half: float = AABB_HALF,
                 init_scale: float = 0.1, fea2dense: Literal["softplus", "relu"] = "softplus",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        grid = _triple(grid_size)
        if min(grid) < 2:
            raise ValueError(f"grid_size must be >= 2 per axis, got {grid}")
        self.density_n_comp, self.app_n_comp = _triple(density_n_comp), _triple(app_n_comp)
        self.app_dim = int(app_dim)
        self.density_shift, self.distance_scale = float(density_shift), float(distance_scale)
        self.ray_march_weight_thres, self.step_ratio = float(ray_march_weight_thres), float(step_ratio)
        if fea2dense not in ("softplus", "relu"):
            raise ValueError(f"fea2dense must be 'softplus' or 'relu', got {fea2dense!r}")
        self.fea2dense = fea2dense
        half = float(aabb_half)
        self.register_buffer("aabb", torch.tensor([[-half] * 3, [half] * 3]))
        self.density_plane, self.density_line = self._init_vm(self.density_n_comp, grid, init_scale, generator)
        self.app_plane, self.app_line = self._init_vm(self.app_n_comp, grid, init_scale, generator)
        self.basis_mat = nn.Linear(sum(self.app_n_comp), self.app_dim, bias=False)
        self.render_module = LateViewMLP(self.app_dim, feature_c, view_pe, fea_pe)

    @staticmethod
    def _init_vm(n_comp: tuple[int, int, int], grid: tuple[int, int, int], scale: float,
                 generator: torch.Generator | None) -> tuple[nn.ParameterList, nn.ParameterList]:
        planes, lines = [], []
        for m, ((a0, a1), v) in enumerate(zip(MAT_MODE, VEC_MODE, strict=True)):  # the code's draw order
            planes.append(nn.Parameter(scale * torch.randn(1, n_comp[m], grid[a1], grid[a0], generator=generator)))
            lines.append(nn.Parameter(scale * torch.randn(1, n_comp[m], grid[v], 1, generator=generator)))
        return nn.ParameterList(planes), nn.ParameterList(lines)

    # ------------------------------------------------------------------ sizes

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(N_x, N_y, N_z), read from the parameter shapes (mode 0 plane = (N_y, N_x), mode 0 line = N_z)."""
        plane, line = self.density_plane[0], self.density_line[0]
        return int(plane.shape[-1]), int(plane.shape[-2]), int(line.shape[-2])

    @property
    def step_size(self) -> float:
        """Mean voxel size x step_ratio (`update_stepSize`, float32 as the code)."""
        size = (self.aabb[1] - self.aabb[0]).float().cpu()
        units = size / (torch.tensor(self.grid_size, dtype=torch.float32) - 1)
        return float(torch.mean(units) * self.step_ratio)

    @property
    def n_samples(self) -> int:
        """TensoRF's automatic sample count int(aabbDiag / stepSize) + 1 (float32 as the code); the renderer takes
        n_samples // 6 linear + as many disparity samples per ray."""
        size = (self.aabb[1] - self.aabb[0]).float().cpu()
        units = size / (torch.tensor(self.grid_size, dtype=torch.float32) - 1)
        step = torch.mean(units) * self.step_ratio
        diag = torch.sqrt(torch.sum(torch.square(size)))
        return int((diag / step).item()) + 1

    def normalize_coord(self, xyz: Tensor) -> Tensor:
        """Contracted points -> [-1, 1]^3 grid coordinates (`normalize_coord`)."""
        return (xyz - self.aabb[0]) * (2.0 / (self.aabb[1] - self.aabb[0])) - 1

    # ------------------------------------------------------------------ features

    @staticmethod
    def _sample_vm(plane: Tensor, line: Tensor, xyz: Tensor, mode: int) -> tuple[Tensor, Tensor]:
        a0, a1 = MAT_MODE[mode]
        v = VEC_MODE[mode]
        n = xyz.shape[0]
        grid_plane = xyz[:, [a0, a1]].view(1, n, 1, 2)
        grid_line = torch.stack([torch.zeros_like(xyz[:, v]), xyz[:, v]], dim=-1).view(1, n, 1, 2)
        p = F.grid_sample(plane, grid_plane, align_corners=True, padding_mode="border").view(-1, n)
        ln = F.grid_sample(line, grid_line, align_corners=True, padding_mode="border").view(-1, n)
        return p, ln

    def density_feature(self, xyz_norm: Tensor) -> Tensor:
        """(N, 3) grid coordinates in [-1, 1] -> (N,) density features (`compute_densityfeature`)."""
        out = xyz_norm.new_zeros(xyz_norm.shape[0])
        for m in range(len(MAT_MODE)):
            p, ln = self._sample_vm(self.density_plane[m], self.density_line[m], xyz_norm, m)
            out = out + torch.sum(p * ln, dim=0)
        return out

    def app_feature(self, xyz_norm: Tensor) -> Tensor:
        """(N, 3) grid coordinates -> (N, app_dim) appearance features (`compute_appfeature`)."""
        prods = []
        for m in range(len(MAT_MODE)):
            p, ln = self._sample_vm(self.app_plane[m], self.app_line[m], xyz_norm, m)
            prods.append(p * ln)
        return self.basis_mat(torch.cat(prods).T)

    def feature_to_density(self, feature: Tensor) -> Tensor:
        if self.fea2dense == "softplus":
            return F.softplus(feature + self.density_shift)
        return F.relu(feature)

    def density(self, xyz_contracted: Tensor) -> Tensor:
        """sigma at contracted points (..., 3) -> (...)."""
        flat = self.normalize_coord(xyz_contracted.reshape(-1, 3))
        return self.feature_to_density(self.density_feature(flat)).view(xyz_contracted.shape[:-1])

    def shade(self, app_features: Tensor, viewdirs: Tensor, refine: bool = True) -> Tensor:
        return self.render_module(app_features, viewdirs, refine)

    def query(self, xyz_contracted: Tensor, viewdirs: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma (...), rgb (..., 3)) at contracted points for unit view directions (dense, no weight mask)."""
        flat = self.normalize_coord(xyz_contracted.reshape(-1, 3))
        sigma = self.feature_to_density(self.density_feature(flat)).view(xyz_contracted.shape[:-1])
        rgb = self.shade(self.app_feature(flat), viewdirs.reshape(-1, 3).expand(flat.shape[0], 3))
        return sigma, rgb.view(*xyz_contracted.shape[:-1], 3)

    def grid_points(self) -> Tensor:
        """(N_x, N_y, N_z, 3) contracted-space coordinates of the grid nodes."""
        axes = [torch.linspace(float(self.aabb[0, k]), float(self.aabb[1, k]), n, device=self.aabb.device)
                for k, n in enumerate(self.grid_size)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    # ------------------------------------------------------------------ optimisation helpers

    @torch.no_grad()
    def upsample(self, res_target: int | Sequence[int]) -> None:
        """Resample planes (bilinear) and lines (linear) to `res_target` = (N_x, N_y, N_z), align_corners=True
        (`upsample_volume_grid`); new Parameters, so rebuild the optimiser afterwards."""
        res = _triple(res_target)
        for planes, lines in ((self.app_plane, self.app_line), (self.density_plane, self.density_line)):
            for m, ((a0, a1), v) in enumerate(zip(MAT_MODE, VEC_MODE, strict=True)):
                planes[m] = nn.Parameter(F.interpolate(planes[m].detach(), size=(res[a1], res[a0]),
                                                       mode="bilinear", align_corners=True))
                lines[m] = nn.Parameter(F.interpolate(lines[m].detach(), size=(res[v], 1), mode="bilinear",
                                                      align_corners=True))

    def optimizer_param_groups(self, lr_spatial: float = 0.02, lr_network: float = 1e-3) -> list[dict]:
        """Adam groups in the code's order: density lines, density planes, app lines, app planes (lr 0.02),
        basis matrix and shading MLP (lr 1e-3)."""
        return [
            {"params": list(self.density_line), "lr": lr_spatial},
            {"params": list(self.density_plane), "lr": lr_spatial},
            {"params": list(self.app_line), "lr": lr_spatial},
            {"params": list(self.app_plane), "lr": lr_spatial},
            {"params": list(self.basis_mat.parameters()), "lr": lr_network},
            {"params": list(self.render_module.parameters()), "lr": lr_network},
        ]

    def make_optimizer(self, lr_spatial: float = 0.02, lr_network: float = 1e-3) -> torch.optim.Adam:
        return torch.optim.Adam(self.optimizer_param_groups(lr_spatial, lr_network), betas=(0.9, 0.99))

    def load_official_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load a `TensorVMSplit` state dict (renderModule -> render_module; aabb / invaabbSize / alphaMask
        entries are ignored). The grid must already have the checkpoint's resolution."""
        mapped = {}
        for key, value in state.items():
            if key.startswith(("invaabbSize", "alphaMask", "aabb")):
                continue
            mapped[key.replace("renderModule.", "render_module.", 1)] = value
        self.load_state_dict(mapped, strict=False)


# ---------------------------------------------------------------------------- regularisers (spec 2.5 item 9)


def tv_2d(x: Tensor) -> Tensor:
    """The code's `TVLoss` on (B, C, H, W): 2 (mean squared row difference + mean squared column difference),
    a term only where that axis has more than one entry."""
    out = x.new_zeros(())
    if x.shape[2] > 1:
        out = out + torch.mean((x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2)
    if x.shape[3] > 1:
        out = out + torch.mean((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2)
    return 2 * out


def tv_loss_density(field: TensoRFVM) -> Tensor:
    """sum over modes of TV(plane) 1e-2 + TV(line) 1e-3 (each tensor seen as (C, 1, H, W), `TV_loss_density`)."""
    return sum((tv_2d(p.transpose(0, 1)) * 1e-2 + tv_2d(ln.transpose(0, 1)) * 1e-3
                for p, ln in zip(field.density_plane, field.density_line, strict=True)), field.aabb.new_zeros(()))


def tv_loss_app(field: TensoRFVM) -> Tensor:
    """The same on the appearance planes and lines (`TV_loss_app`)."""
    return sum((tv_2d(p.transpose(0, 1)) * 1e-2 + tv_2d(ln.transpose(0, 1)) * 1e-3
                for p, ln in zip(field.app_plane, field.app_line, strict=True)), field.aabb.new_zeros(()))


def density_l1(field: TensoRFVM, voxel_order: Literal["aligned", "code"] = "aligned") -> Tensor:
    """mean over every grid node of sqrt(max(sigma, 1e-5)) (`density_L1`).

    "aligned" sums the three modes voxel by voxel (the intent). "code" reproduces the official flattening, where
    each mode's plane x line product is flattened in its own axis order (plane rows, plane columns, line) and the
    three flat vectors are added element by element (only the same voxel for mode 0)."""
    nx, ny, nz = field.grid_size
    if voxel_order == "code":
        feat = field.aabb.new_zeros(nx * ny * nz)
        for p, ln in zip(field.density_plane, field.density_line, strict=True):
            c = p.shape[1]
            prod = torch.bmm(p.reshape(c, -1)[..., None], ln.reshape(c, -1)[:, None]).view(c, -1)
            feat = feat + prod.sum(0)
    elif voxel_order == "aligned":
        feat = field.aabb.new_zeros(nx, ny, nz)
        for m, ((a0, a1), v) in enumerate(zip(MAT_MODE, VEC_MODE, strict=True)):
            plane = field.density_plane[m][0]  # (C, N[a1], N[a0])
            line = field.density_line[m][0, :, :, 0]  # (C, N[v])
            vol = torch.einsum("cij,ck->ijk", plane, line)  # axes (a1, a0, v)
            feat = feat + vol.permute(*[(a1, a0, v).index(k) for k in range(3)])
    else:
        raise ValueError(f"voxel_order must be 'aligned' or 'code', got {voxel_order!r}")
    return torch.sqrt(field.feature_to_density(feat).clamp(min=1e-5)).mean()


def tensorf_regularisers(field: TensoRFVM, *, tv_weight_density: float = 1.0, tv_weight_app: float = 0.1,
                         l1_weight: float = 1e-3, decay: float = 1.0, decay_l1: bool = False,
                         voxel_order: Literal["aligned", "code"] = "aligned") -> tuple[Tensor, Tensor]:
    """(tv, l1) of `get_reg_loss`: tv = TV_density tv_weight_density decay + TV_app tv_weight_app decay, with
    decay = lr_factor^rf_iter; l1 = density_l1 l1_weight (the code does not decay it; `decay_l1=True` follows
    the spec's "all x lr_factor^rf_iter"). Weights <= 0 switch a term off. Only while regularisation is on."""
    zero = field.aabb.new_zeros(())
    tv = zero
    if tv_weight_density > 0:
        tv = tv + tv_loss_density(field) * tv_weight_density * decay
    if tv_weight_app > 0:
        tv = tv + tv_loss_app(field) * tv_weight_app * decay
    l1 = density_l1(field, voxel_order) * l1_weight * (decay if decay_l1 else 1.0) if l1_weight > 0 else zero
    return tv, l1


# ---------------------------------------------------------------------------- voxel schedule


def n_to_reso(n_voxels: int, aabb_half: float = AABB_HALF, *, code_truncation: bool = False) -> tuple[int, int, int]:
    """Grid resolution for a voxel budget in a cube box: the cube root of n_voxels per axis (rounded). The code's
    `N_to_reso` truncates a float32 computation, which loses one for e.g. 13^3 or 28^3: `code_truncation=True`."""
    size = torch.full((3,), 2.0 * aabb_half, dtype=torch.float32)
    if code_truncation:
        voxel = (size.prod() / n_voxels).pow(1 / 3)
        return tuple(int(v) for v in (size / voxel).long().tolist())  # type: ignore[return-value]
    n = round(float(n_voxels) ** (1 / 3))
    return n, n, n


def n_voxel_schedule(n_voxel_init: int = 64 ** 3, n_voxel_final: int = 640 ** 3,
                     upsample_list: Sequence[int] = DEFAULT_UPSAMPLE_LIST) -> dict[int, int]:
    """{per-frame iteration: voxel count}: log-linear from init to final in len(upsample_list) steps, each count
    rounded, then rounded to a cube (train.py). Defaults: {100: 101^3, 150: 161^3, 200: 255^3, 250: 404^3,
    300: 640^3}."""
    counts = torch.round(torch.exp(torch.linspace(math.log(n_voxel_init), math.log(n_voxel_final),
                                                  len(upsample_list) + 1))).long().tolist()[1:]
    return {int(it): round(n ** (1 / 3)) ** 3 for it, n in zip(upsample_list, counts, strict=True)}


def scale_schedule(schedule: Mapping[int, int], n_frames: int) -> dict[int, int]:
    """Per-frame keys x the number of frames of the RF's window (`int(key * n_training_frames)`)."""
    return {int(k * n_frames): v for k, v in schedule.items()}


# ---------------------------------------------------------------------------- volume rendering


def alpha_to_weights(alpha: Tensor, fin_alpha_block: bool = False) -> tuple[Tensor, Tensor]:
    """(weights (R, S), T (R, S + 1)): T_i = prod_{k<i}(1 - alpha_k + 1e-10), w_i = alpha_i T_i; T[:, -1] is the
    transmittance after the last sample. `fin_alpha_block` forces the last alpha to 1 (config 0 = off)."""
    if fin_alpha_block:
        alpha = torch.cat([alpha[:, :-1], torch.ones_like(alpha[:, -1:])], dim=-1)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + WEIGHT_EPS], dim=-1), dim=-1)
    return alpha * trans[:, :-1], trans


@dataclass
class RayRender:
    """Output of `render_rays` for R rays and S samples."""

    rgb: Tensor  # (R, 3) sum w c (+ background (1 - acc))
    depth: Tensor  # (R,) sum w_static t / |d|
    acc: Tensor  # (R,) sum w
    weights: Tensor  # (R, S) compositing weights (scaled by 1 - lead_alpha when given)
    t_last: Tensor  # (R,) transmittance after the last sample (including lead_alpha)
    z_vals: Tensor  # (R, S) distances along the unit ray
    app_mask: Tensor  # (R, S) samples whose colour was evaluated


def render_rays(field: TensoRFVM, rays_o: Tensor, rays_d: Tensor, *, n_samples: int | None = None,
                jitter: bool = False, generator: torch.Generator | None = None, per_ray_jitter: bool = False,
                background: float | Tensor | None = None, fin_alpha_block: bool = False,
                lead_alpha: Tensor | None = None, refine: bool = True,
                weight_threshold: float | None = None) -> RayRender:
    """Render rays (R, 3) given in the RF's frame (`OmniLocalRFs.rf_forward`, static part).

    Samples: `camera.sample_ray_distances(n_samples)` (default `field.n_samples`: n_samples // 6 linear in [0, 1)
    and as many linear in disparity from 1 to 1000, + 0.1) along the unit direction; `jitter` = training (one draw
    for the batch as the code; `per_ray_jitter` draws per ray). Points are contracted, the last sample is invalid.
    `lead_alpha` (R,) is the mask module's alpha M, composited as an extra sample in front of the ray (spec 2.3):
    the colour weights become (1 - M) w while depth keeps the static weights. `background` adds
    background * (1 - acc) (None = black, as the pipeline's renderer; 1.0 = TensorBase's white_bg).
    """
    if rays_o.shape != rays_d.shape or rays_o.ndim != 2 or rays_o.shape[-1] != 3:
        raise ValueError(f"rays must be (R, 3), got {tuple(rays_o.shape)} and {tuple(rays_d.shape)}")
    n_rays = rays_o.shape[0]
    norm = torch.linalg.vector_norm(rays_d, dim=-1, keepdim=True)
    viewdirs = rays_d / norm
    z_vals = camera.sample_ray_distances(field.n_samples if n_samples is None else n_samples, jitter=jitter,
                                         generator=generator, n_rays=n_rays if per_ray_jitter else None,
                                         dtype=rays_o.dtype, device=rays_o.device).expand(n_rays, -1)
    n_s = z_vals.shape[1]
    xyz = field.normalize_coord(camera.contract(rays_o[:, None, :] + viewdirs[:, None, :] * z_vals[..., None]))
    dists = torch.cat([z_vals[:, 1:] - z_vals[:, :-1], torch.zeros_like(z_vals[:, :1])], dim=-1)

    feat = field.density_feature(xyz[:, :-1].reshape(-1, 3))  # the last sample is invalid (sigma = 0)
    sigma = torch.cat([field.feature_to_density(feat).view(n_rays, n_s - 1), z_vals.new_zeros(n_rays, 1)], dim=-1)
    alpha = 1.0 - torch.exp(-sigma * dists * field.distance_scale)

    weights_static, trans_static = alpha_to_weights(alpha, fin_alpha_block)
    if lead_alpha is None:
        weights, trans = weights_static, trans_static
    else:
        w_all, t_all = alpha_to_weights(torch.cat([lead_alpha.reshape(n_rays, 1), alpha], dim=-1), fin_alpha_block)
        weights, trans = w_all[:, 1:], t_all[:, 1:]
    acc = weights.sum(-1)
    depth = (weights_static * z_vals).sum(-1) / norm[:, 0]

    threshold = field.ray_march_weight_thres if weight_threshold is None else weight_threshold
    app_mask = weights > threshold
    rgb = xyz.new_zeros(n_rays, n_s, 3)
    if app_mask.any():
        dirs = viewdirs[:, None, :].expand(n_rays, n_s, 3)[app_mask].detach()
        rgb[app_mask] = field.shade(field.app_feature(xyz[app_mask]), dirs, refine)
    rgb_map = (weights[..., None] * rgb).sum(-2)
    if background is not None:
        rgb_map = rgb_map + (1.0 - acc[:, None]) * background
    return RayRender(rgb=rgb_map, depth=depth, acc=acc, weights=weights, t_last=trans[:, -1], z_vals=z_vals,
                     app_mask=app_mask)


# ---------------------------------------------------------------------------- exposure


def test_frame_exposure(exposures: Tensor, view_ids: Tensor, *, code_quirk: bool = False) -> Tensor:
    """3x3 exposure of test frames (never supervised): the mean of the neighbours' matrices, detached.

    exposures (F, 3, 3) for the F frames appended so far, view_ids (B,). Frame 0 uses frame 1, the last frame
    frame F - 2 (the intent); `code_quirk=True` gives the last frame (E[F-2] + E[F-1]) / 2 as the code does.
    With a single frame its own matrix is returned."""
    n = exposures.shape[0]
    ex = exposures.detach()
    if n == 1:
        return ex[torch.zeros_like(view_ids)]
    minus = (view_ids - 1).clamp(min=0)
    minus = torch.where(minus == view_ids, torch.ones_like(minus), minus)
    plus = (view_ids + 1).clamp(max=n - 1)
    if not code_quirk:
        plus = torch.where(plus == view_ids, torch.full_like(plus, n - 2), plus)
    return (ex[minus] + ex[plus]) / 2


def apply_exposure(rgb: Tensor, exposure: Tensor) -> Tensor:
    """Per-ray colour matrices (R, 3, 3) applied to static colours (R, 3): E @ c (not clamped here; the code
    clamps after adding the dynamic colour)."""
    return torch.bmm(exposure, rgb[..., None])[..., 0]


# ---------------------------------------------------------------------------- local RFs and progressive allocation


def overlap_count(n_added_frames: int, n_overlap: int, n_frames: int) -> int:
    """Frames shared by the old and the new RF: min(n_added_frames, n_overlap, n_frames - 1)."""
    return min(int(n_added_frames), int(n_overlap), int(n_frames) - 1)


def should_refine(*, has_left_frames: bool, n_added_frames: int, dist_to_last_rf: float, window_size: int,
                  n_overlap: int = 30, max_drift: float = 1.0, n_max_frames: int = 100) -> bool:
    """Stop growing the current RF's window (train.py): no frames left, or more than n_overlap frames were added
    AND (the newest camera is farther than max_drift from the RF's centre OR the window holds n_max_frames)."""
    return (not has_left_frames) or (n_added_frames > n_overlap and (dist_to_last_rf > max_drift
                                                                     or window_size >= n_max_frames))


class LocalRFs(nn.Module):
    """The set of local RFs with their world-to-RF offsets, the frame x RF blending weights and the per-frame
    exposure matrices (the bookkeeping half of `OmniLocalRFs`; poses and the mask module live elsewhere).

    - Frame 0 starts with weight row [1]; every appended frame copies the previous frame's row and is linked to
      the first RF with a non-zero weight in it (`pose_linked_rf`).
    - `append_rf(n_added_frames, last_t)`: the last n = min(n_added_frames, n_overlap, n_frames - 1) frames get
      the ramp w_k = k / n (k = 1..n) for the new RF and 1 - w_k for the previous newest RF (each row sums to 1;
      the last frame belongs to the new RF only); world2rf = -last_t (the newest camera's position); returns the
      index of the first frame the new RF is trained on (earlier frames are deactivated).
    - A camera-to-world pose is moved into RF m's frame by adding world2rf[m] to its translation.
    """

    def __init__(self, field_factory: Callable[[], TensoRFVM], n_init_frames: int = 5, n_overlap: int = 30) -> None:
        super().__init__()
        if n_init_frames < 1:
            raise ValueError(f"n_init_frames must be >= 1, got {n_init_frames}")
        self.field_factory = field_factory
        self.n_overlap = int(n_overlap)
        self.fields = nn.ModuleList()
        self.exposure = nn.ParameterList()
        self.register_buffer("blending_weights", torch.ones(1, 1))
        self.register_buffer("world2rf", torch.zeros(0, 3))
        self.pose_linked_rf: list[int] = []
        for _ in range(n_init_frames):
            self.append_frame()
        self.append_rf()

    @property
    def n_frames(self) -> int:
        return len(self.exposure)

    @property
    def n_rfs(self) -> int:
        return len(self.fields)

    def append_frame(self) -> None:
        if self.n_frames > 0:
            self.blending_weights = torch.cat([self.blending_weights, self.blending_weights[-1:]], dim=0)
        self.pose_linked_rf.append(int(torch.nonzero(self.blending_weights[-1])[0]))
        self.exposure.append(nn.Parameter(torch.eye(3, device=self.blending_weights.device)))

    def append_rf(self, n_added_frames: int = 1, last_t: Tensor | None = None) -> int:
        """Create the next RF (see the class docstring). Returns the first frame index it is trained on."""
        device = self.blending_weights.device
        if self.n_rfs > 0:
            n = overlap_count(n_added_frames, self.n_overlap, self.n_frames)
            if n < 1:
                raise ValueError("a new RF needs at least one added frame and two frames in total")
            if last_t is None:
                raise ValueError("last_t (the newest camera's translation) is needed after the first RF")
            ramp = torch.arange(1, n + 1, dtype=self.blending_weights.dtype, device=device) / n
            bw = self.blending_weights.clone()
            bw[-n:, -1] = 1 - ramp
            new_col = torch.zeros_like(bw[:, :1])
            new_col[-n:, 0] = ramp
            self.blending_weights = torch.cat([bw, new_col], dim=1)
            offset = -last_t.detach().to(self.world2rf.dtype).to(device).reshape(1, 3)
        else:
            offset = torch.zeros(1, 3, device=device)
        self.world2rf = torch.cat([self.world2rf, offset], dim=0)
        self.fields.append(self.field_factory().to(device))
        return self.first_training_frame()

    def first_training_frame(self, rf_id: int = -1) -> int:
        return int(torch.nonzero(self.blending_weights[:, rf_id] > 0)[0])

    def n_training_frames(self, rf_id: int = -1) -> int:
        return int((self.blending_weights[:, rf_id] > 0).sum())

    def dist_to_last_rf(self, last_t: Tensor) -> Tensor:
        """|t_last + world2rf[-1]|: how far the newest camera is from the newest RF's centre."""
        return torch.linalg.vector_norm(last_t + self.world2rf[-1].to(last_t.dtype))

    def cam_to_rf(self, c2w: Tensor, rf_id: int) -> Tensor:
        """(..., 3, 4) camera-to-world -> camera-to-RF (translation + world2rf[rf_id])."""
        out = c2w.clone()
        out[..., :3, 3] = out[..., :3, 3] + self.world2rf[rf_id].to(c2w.dtype)
        return out

    def exposures(self, view_ids: Tensor, *, test: bool = False, code_quirk: bool = False) -> Tensor:
        """(B, 3, 3) exposure matrices of frames `view_ids`; test frames use `test_frame_exposure`."""
        stacked = torch.stack(list(self.exposure), dim=0)
        if test:
            return test_frame_exposure(stacked, view_ids, code_quirk=code_quirk)
        return stacked[view_ids]

    def render_static(self, directions: Tensor, c2w: Tensor, blend: Tensor, *, exposure: Tensor | None = None,
                      **render_kwargs) -> dict[str, Tensor]:
        """Blend the RFs' static renders of camera-frame ray directions (R, 3) from poses (R, 3, 4) with per-ray
        weights (R, n_rfs) (`OmniLocalRFs.forward`, mask off): rgb = E @ sum_m b_m clamp(rgb_m, 0, 1), depth and
        t_last blended likewise; only RFs with a non-zero weight are rendered. `exposure` (R, 3, 3) optional."""
        rgb = directions.new_zeros(directions.shape[0], 3)
        depth = directions.new_zeros(directions.shape[0])
        t_last = directions.new_zeros(directions.shape[0])
        for rf_id in torch.nonzero(blend.sum(0))[:, 0].tolist():
            pose = self.cam_to_rf(c2w, rf_id)
            rays_o, rays_d = pose[:, :3, 3], (pose[:, :3, :3] @ directions[..., None])[..., 0]
            out = render_rays(self.fields[rf_id], rays_o, rays_d, **render_kwargs)
            b = blend[:, rf_id]
            rgb = rgb + out.rgb.clamp(0, 1) * b[:, None]
            depth = depth + out.depth * b
            t_last = t_last + out.t_last * b
        if exposure is not None:
            rgb = apply_exposure(rgb, exposure)
        return {"rgb": rgb, "depth": depth, "t_last": t_last}


@dataclass
class ScheduleTick:
    """What `ProgressiveSchedule.optimizer_tick` decided for one optimiser step of the newest RF."""

    regularize: bool
    upsample_to: int | None  # voxel count to upsample the newest RF to after this step (then rebuild its Adam)
    can_add_rf: bool
    lr_factor: float  # per-step RF lr decay while refining (lr_decay_target_ratio^(1 / n_iters))
    lr_cam_factor: float  # per-step pose lr decay ((0.1 ratio)^(1 / n_iters) = 0.01^(1 / n_iters))
    lr_dynmlp_factor: float  # per-step mask-MLP lr decay ((0.01 ratio)^(1 / n_iters) = 1e-3^(1 / n_iters))


@dataclass
class ScheduleEvents:
    """What `ProgressiveSchedule.progress` decided after one iteration."""

    start_refine: bool = False
    add_frame: bool = False
    append_rf: bool = False
    n_added_frames: int = 0  # frames added to the finished RF's window (for `LocalRFs.append_rf`)
    finished: bool = False


class ProgressiveSchedule:
    """The progressive optimisation of LocalRF / OmniLocalRF (spec 2.2; `train.py` and
    `OmniLocalRFs.optimizer_step`), as a state machine the trainer calls once per ordinary iteration:

    1. `optimizer_tick(n_training_frames)` with the optimiser step (skipped for pose-only test batches): at the
       newest RF's refinement iteration 0 the refinement length is n_iters_per_frame, at iteration 1 it becomes
       n_iters_per_frame x n_training_frames (also n_iters_reg and the upsample keys are multiplied, lr_factor =
       ratio^(1 / n_iters)); regularisers are on while rf_iter < n_iters_reg; upsampling happens when rf_iter is a
       key; rf_iter advances only while refining; can_add_rf = rf_iter >= n_iters - 1.
    2. `progress(iteration, dist_to_last_rf, can_add_rf)`: while growing, refinement starts once `should_refine`
       holds and add_frames_every iterations passed since the last frame was added; otherwise a frame is added
       every add_frames_every iterations; when refinement ends a new RF is appended (or training finishes when
       no frame is left) and frames before the new RF's overlap are deactivated.
    The window is `active` = [first, end) of frame indices.
    """

    def __init__(self, num_images: int, *, n_init_frames: int = 5, add_frames_every: int = 100, n_overlap: int = 30,
                 max_drift: float = 1.0, n_max_frames: int = 100, n_iters_per_frame: int = 600,
                 n_iters_reg: int = 100, upsample_per_frame: Mapping[int, int] | None = None,
                 lr_decay_target_ratio: float = 0.1) -> None:
        self.num_images = int(num_images)
        self.add_frames_every, self.n_overlap = int(add_frames_every), int(n_overlap)
        self.max_drift, self.n_max_frames = float(max_drift), int(n_max_frames)
        self.n_iters_per_frame, self.n_iters_reg_per_frame = int(n_iters_per_frame), int(n_iters_reg)
        self.upsample_per_frame = dict(n_voxel_schedule() if upsample_per_frame is None else upsample_per_frame)
        self.lr_decay_target_ratio = float(lr_decay_target_ratio)
        self.active = [0, min(int(n_init_frames), self.num_images)]
        self.n_added_frames = 0
        self.last_add_iter = 0
        self.is_refining = False
        self.rf_iter = 0
        self.n_rfs = 1
        self.n_iters, self.n_iters_reg = self.n_iters_per_frame, self.n_iters_reg_per_frame
        self.upsample_at = dict(self.upsample_per_frame)
        self.lr_factor = self.lr_cam_factor = self.lr_dynmlp_factor = 1.0
        self.finished = False

    def has_left_frames(self) -> bool:
        return self.active[1] < self.num_images

    @property
    def window_size(self) -> int:
        return self.active[1] - self.active[0]

    def optimizer_tick(self, n_training_frames: int) -> ScheduleTick:
        if self.rf_iter == 0:
            self.lr_factor = self.lr_cam_factor = self.lr_dynmlp_factor = 1.0
            self.n_iters, self.n_iters_reg = self.n_iters_per_frame, self.n_iters_reg_per_frame
        elif self.rf_iter == 1:
            self.n_iters = int(self.n_iters_per_frame * n_training_frames)
            self.n_iters_reg = int(self.n_iters_reg_per_frame * n_training_frames)
            self.lr_factor = self.lr_decay_target_ratio ** (1 / self.n_iters)
            self.lr_cam_factor = (0.1 * self.lr_decay_target_ratio) ** (1 / self.n_iters)
            self.lr_dynmlp_factor = (0.01 * self.lr_decay_target_ratio) ** (1 / self.n_iters)
            self.upsample_at = scale_schedule(self.upsample_per_frame, n_training_frames)
        regularize = self.rf_iter < self.n_iters_reg
        upsample = self.upsample_at.get(self.rf_iter)
        if self.is_refining:
            self.rf_iter += 1
        return ScheduleTick(regularize, upsample, self.rf_iter >= self.n_iters - 1, self.lr_factor, self.lr_cam_factor,
                            self.lr_dynmlp_factor)

    def progress(self, iteration: int, dist_to_last_rf: float, can_add_rf: bool) -> ScheduleEvents:
        ev = ScheduleEvents()
        if self.finished:
            ev.finished = True
            return ev
        if not self.is_refining:
            refine = should_refine(has_left_frames=self.has_left_frames(), n_added_frames=self.n_added_frames,
                                   dist_to_last_rf=float(dist_to_last_rf), window_size=self.window_size,
                                   n_overlap=self.n_overlap, max_drift=self.max_drift,
                                   n_max_frames=self.n_max_frames)
            if refine and iteration - self.last_add_iter >= self.add_frames_every:
                self.is_refining = ev.start_refine = True
            add = (self.has_left_frames() and (iteration - self.last_add_iter + 1) % self.add_frames_every == 0
                   and not refine and not self.is_refining)
            if add:
                self.active[1] = min(self.active[1] + 1, self.num_images)
                self.n_added_frames += 1
                self.last_add_iter = iteration
                ev.add_frame = True
        if can_add_rf:
            if self.has_left_frames():
                ev.append_rf, ev.n_added_frames = True, self.n_added_frames
                n = overlap_count(self.n_added_frames, self.n_overlap, self.active[1])
                self.active[0] = self.active[1] - n
                self.n_added_frames = 0
                self.rf_iter = 0
                self.is_refining = False
                self.n_rfs += 1
            else:
                self.finished = ev.finished = True
        return ev
