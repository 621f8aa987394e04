"""LTM stage A (spec 2.1, sizes of spec 8): a neural SDF and a colour field of an unbounded scene, trained by NeuS
volume rendering on CPU, in the layout LTM's viewer evaluates (NeRF2Mesh's SDF mode, [N2M]; dense grids instead of
hash grids, [DESIGN]).

Measured on 2 cores (2026-12-02, garden-lite, 42 training views at 96x72): the spec's sizes cost 1.3-3.3 s a step
(30+ minutes for 1,500 steps). The embedded profile's neural stage A (``neural_stage_a`` in
``conf/base/parameters/ltm.yml``: 256 rays, 32 + 32 samples, ``cos_estimate: sections``, grids 24/48/96, 1,000 steps,
``lr_variance`` 1e-2) takes 192 s and reaches about 23.5 dB on its training rays but 16.2 dB on the test views, and
its zero set is 18.6 % of the inner diagonal from the true surface (Chamfer-L1); the main rows therefore use
``sdf_source: analytic`` (300 steps of 1,024 rays, 61 s), see pipelines/ltm/README.md.

Space and units
---------------
World points ``x`` are contracted, ``c = contract(x, contraction)`` (:mod:`cvpr24.core.geometry`; identity inside
the unit box / ball, ``|c| < 2`` everywhere), and the grids are sampled at ``u = c / bound`` in [-1, 1]^3
(``F.grid_sample``, trilinear, ``align_corners=True``, border padding). Everything of the renderer lives in
contracted space: ray samples are contracted, sections between consecutive samples are straight segments of
contracted space (length ``delta``, direction ``d_c``), the SDF is a signed distance **in contracted units**
(``|grad_c s| = 1`` is what the eikonal term asks) and finite differences step in contracted units. Inside the unit
box all of this equals world space, so the inner scene's SDF is a world-space SDF and its zero set is what
:func:`~.mesh.extract_cascades` meshes (it only needs the sign). The colour field's view direction ``d`` is the world
ray direction (the viewer's "camera centre to fragment" vector).

f_sdf (:class:`SDFField`)
    ``s = MLP([u, grid(u)])``: dense levels ``sdf_resolutions`` x ``sdf_channels`` (spec 8: 32^3, 64^3, 128^3 x 4,
    grid values init U(-1e-4, 1e-4) as N2M's hash grids), MLP ``3 + L*C -> sdf_hidden (x sdf_layers) -> 1`` with
    softplus(beta 100) hidden activations (spec 8) and biases ([DESIGN]: N2M's SDF MLP has none; the double-sphere
    target needs a constant offset). ``inv_s = clip(exp(10 variance), 1e-6, 1e6)``, ``variance`` learnable (init
    0.3, own lr).
Double-sphere pretraining (:func:`pretrain_double_sphere`, [N2M], replaces NeuS's geometric init)
    The shell is defined on ``p = x / bound`` (world scaled by 1 / bound; the grid's own scale inside the unit box)
    with radii r1 0.5, r2 1.5, i.e. world radii 1 and 3: ``s < 0`` for ``|p| < r1`` and ``|p| > r2``, ``s > 0``
    between. Garden-lite's cameras sit at world radius 1.58-2.42 (|p| 0.79-1.21), in free space; the inner scene is
    inside the inner sphere and the far field (hills from world ~2.5, the background sphere at 12) mostly beyond
    the outer one. [Neither world nor contracted |x| works with r1 0.5, r2 1.5: the outer ring of cameras would be
    inside the outer sphere.] The target value is the signed distance *along the radial line, in contracted units*:
    ``|c(x)| - |c(R1 x/|x|)|`` if ``|p| < (r1 + r2) / 2`` else ``|c(R2 x/|x|)| - |c(x)|`` (R = r * bound; exact
    ``|x| - 1`` inside the unit box since contraction maps rays from the origin onto themselves). Adam on MSE over
    points drawn uniformly in contracted space ``[-bound, bound]^3``.
f_color (:class:`ColourField`) [N2M layout, spec 2.1 / 2.5]
    dense grid (``colour_resolutions`` x ``colour_channels``) + u -> MLP (no bias, ReLU) -> 6 -> sigmoid:
    ``k_d`` (3) and ``k_s`` (3) = :meth:`ColourField.features` (what textures bake); specular head
    ``g = sigmoid(W1 relu(W0 [d, k_s]))`` (no bias, H = ``specular_hidden``, divisible by 4);
    colour = ``clamp(k_d + g, 0, 1)``; ``k_d`` only while diffuse-only. [DESIGN] W1 starts negative
    (U(-1, -0.5)) so ``g`` starts near sigmoid(-4) instead of 0.5: the switch from diffuse-only to full colour
    does not brighten every pixel by 0.5. :meth:`ColourField.viewer_weights` gives the head in torch layout for
    :func:`~.mesh.export_viewer`; :func:`~.mesh.viewer_shade` with their transposes reproduces :meth:`shade`.
NeuS alpha (:func:`neus_alpha`) [N2M]
    ``s_prev = s - c delta / 2``, ``s_next = s + c delta / 2``, ``alpha = clamp((Phi(s_prev) - Phi(s_next) + 1e-5)
    / (Phi(s_prev) + 1e-5), 0, 1)``, ``Phi(t) = sigmoid(t inv_s)``, ``c`` the NeuS cosine annealed from
    ``-relu(-cos 0.5 + 0.5)`` to ``-relu(-cos)`` (``cos_anneal_ratio`` 0 -> 1 over ``cos_anneal_frac`` of the
    iterations). ``cos = d_c . grad s`` is estimated by ``cos_estimate``:
    ``gradient`` (central differences of s in all 3 axes at every sample, eps annealed: 7 SDF evaluations a
    sample), ``directional`` (central difference along ``d_c`` with the same eps: 3 evaluations; equal to
    ``d_c . grad s`` to O(eps^2)) or ``sections`` (s at the sample points themselves, ``cos = (s_i+1 - s_i) /
    delta``, ``s`` = their mean at the section middle: 1 evaluation; with the annealing finished this is NeuS's
    section formula). Finite-difference step (spec corrections): ``eps = 0.1 (1 - min(0.999, step / (0.5 iters)))``
    (0.1 -> 1e-4), 1e-4 at inference; the eikonal term ``mean((|grad s| - 1)^2)`` uses these raw central
    differences on ``eikonal_points`` random section middles of the batch.
Rays and samples [DESIGN]
    OpenCV cameras (pixel centres at +0.5, +z forward; :func:`camera_rays`). Each ray runs from ``near`` to where
    it leaves the world sphere of radius ``far_radius`` (12.5: garden-lite's background sphere is at 12).
    ``uniform_samples`` are stratified (jittered in training, bin middles at inference) uniformly in the contracted
    ray distance ``g(t) = t`` for ``t <= T``, ``T (2 - T / t)`` beyond (T = ``sample_linear_until``), so the far
    field is covered by a bounded number of samples; one round of importance sampling (NeuS up-sampling): section
    alphas from the uniform samples' SDF values (no grad) with ``inv_s = max(importance_inv_s, inv_s)``, weights
    -> inverse-CDF (deterministic quantiles) in g-space -> ``importance_samples`` more, merged and sorted. The
    final N samples give N - 1 sections; the SDF / colour are evaluated at the sections' middles in contracted
    space. rgb = sum w colour (no background: every garden-lite ray ends on a surface), depth = sum w t_mid
    (world ray distance), acc = sum w. Colours are evaluated only where the (detached) weight exceeds
    ``colour_weight_min`` (early-termination-style skipping; 0 evaluates all).
Training (:func:`train_stage_a`)
    MSE on RGB + ``eikonal_weight`` eikonal + ``specular_weight`` mean(g^2); Adam (eps 1e-15, fused) with lrs
    ``lr_grid`` (grids), ``lr_mlp`` (MLPs), ``lr_variance``; lr factor 0.01 -> 1 linearly over ``warmup_iters`` then
    exponential decay to ``final_lr_factor`` at the last iteration; diffuse-only for ``diffuse_only_iters``.
    Random rays of all training views (a ``torch.Generator`` seeded by ``seed``; parameters initialised under a
    forked, locally seeded torch RNG: the global generators are left as they were). Checkpoints (every
    ``checkpoint_every`` steps and at the end) hold the fields, the optimiser, the generator state, the history
    and the elapsed time; written atomically (temporary file, fsync, ``os.replace``); a run that finds its
    checkpoint resumes from it and ends bit-identical to an uninterrupted run. ``sdf_source: analytic`` replaces
    f_sdf by the garden-lite analytic SDF (:class:`AnalyticSDF`, fixed ``analytic_inv_s``): only the colour field
    trains, no pretraining, no eikonal term.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvpr24.core.geometry import check_contraction, contract, uncontract
from cvpr24.core.seeding import derive_seed
from cvpr24.core.validation import DataValidationError

log = logging.getLogger(__name__)

__all__ = [
    "AnalyticSDF",
    "ColourField",
    "DenseGrid",
    "FieldConfig",
    "SDFField",
    "StageAResult",
    "camera_rays",
    "colour_numpy",
    "cos_anneal_ratio",
    "double_sphere_target",
    "evaluate_views",
    "lr_factor",
    "neus_alpha",
    "normal_epsilon",
    "pretrain_double_sphere",
    "render_rays",
    "render_view",
    "sdf_numpy",
    "train_stage_a",
]

SDF_SOURCES = ("neural", "analytic")
COS_ESTIMATES = ("gradient", "directional", "sections")
CHECKPOINT_FORMAT = 1
NAN_FIX = ("lower the learning rates (lr_grid, lr_mlp, lr_variance) or lengthen warmup_iters, delete the stage-A "
           "checkpoint and run again")


# ============================================================================================ configuration
@dataclass(frozen=True)
class FieldConfig:
    """Every size and weight of stage A (module docstring). Defaults = the embedded profile (measured sizes, see
    the module docstring); :meth:`spec` = spec 8's sizes; :meth:`ci` = a tiny analytic-SDF run."""

    # space and rays
    contraction: str = "linf"
    bound: float = 2.0
    near: float = 0.05
    far_radius: float = 12.5
    sample_linear_until: float = 1.0
    # f_sdf
    sdf_source: str = "neural"
    sdf_resolutions: tuple[int, ...] = (32, 64, 128)
    sdf_channels: int = 4
    sdf_hidden: int = 64
    sdf_layers: int = 1
    softplus_beta: float = 100.0
    grid_init: float = 1e-4
    variance_init: float = 0.3
    analytic_inv_s: float = 1000.0
    # f_color
    colour_resolutions: tuple[int, ...] = (32, 64, 128)
    colour_channels: int = 4
    colour_hidden: int = 64
    colour_layers: int = 2
    specular_hidden: int = 32
    # rendering
    rays_per_step: int = 1024
    uniform_samples: int = 48
    importance_samples: int = 32
    importance_inv_s: float = 64.0
    cos_estimate: str = "directional"
    cos_anneal_frac: float = 0.5
    normal_eps_start: float = 0.1
    normal_eps_end: float = 1e-4
    normal_eps_frac: float = 0.5
    colour_weight_min: float = 1e-4
    # optimisation
    iterations: int = 1500
    lr_grid: float = 1e-2
    lr_mlp: float = 1e-3
    lr_variance: float = 1e-3
    adam_eps: float = 1e-15
    warmup_iters: int = 100
    warmup_start: float = 0.01
    final_lr_factor: float = 0.1
    diffuse_only_iters: int = 300
    eikonal_weight: float = 0.1
    eikonal_points: int = 4096
    specular_weight: float = 1e-5
    # double-sphere pretraining
    pretrain_iters: int = 300
    pretrain_points: int = 8192
    pretrain_lr: float = 1e-3
    pretrain_grid_lr: float = 1e-2
    pretrain_r1: float = 0.5
    pretrain_r2: float = 1.5
    # bookkeeping
    checkpoint_every: int = 250
    log_every: int = 10
    render_chunk: int = 2048
    seed: int = 0

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> FieldConfig:
        """A config from plain values (YAML / JSON): unknown keys raise a ValueError naming them; lists become
        tuples."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown stage-A (FieldConfig) keys {unknown}; known keys: {sorted(known)}")
        for key, val in list(values.items()):
            if isinstance(val, list):
                values[key] = tuple(val)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes: Any) -> FieldConfig:
        return replace(self, **changes)

    @classmethod
    def spec(cls, **changes: Any) -> FieldConfig:
        """Spec 8's stage-A sizes, literally (1024 rays, 48 + 32 samples, gradients by central differences at
        every sample, 1500 iterations)."""
        base = dict(rays_per_step=1024, uniform_samples=48, importance_samples=32, cos_estimate="gradient",
                    iterations=1500, warmup_iters=100, diffuse_only_iters=300, pretrain_iters=300,
                    sdf_resolutions=(32, 64, 128), colour_resolutions=(32, 64, 128), colour_weight_min=0.0)
        return cls(**{**base, **changes})

    @classmethod
    def ci(cls, **changes: Any) -> FieldConfig:
        """A tiny run for CI: analytic SDF, small colour grid, a few seconds on one thread."""
        base = dict(sdf_source="analytic", colour_resolutions=(16, 32), colour_channels=2, colour_hidden=32,
                    rays_per_step=128, uniform_samples=24, importance_samples=16, iterations=60, warmup_iters=5,
                    diffuse_only_iters=20, checkpoint_every=30, log_every=5, pretrain_iters=0)
        return cls(**{**base, **changes})

    def __post_init__(self) -> None:
        check_contraction(self.contraction)
        if self.sdf_source not in SDF_SOURCES:
            raise ValueError(f"sdf_source must be one of {SDF_SOURCES}, got {self.sdf_source!r}")
        if self.cos_estimate not in COS_ESTIMATES:
            raise ValueError(f"cos_estimate must be one of {COS_ESTIMATES}, got {self.cos_estimate!r}")
        for key in ("sdf_resolutions", "colour_resolutions"):
            res = tuple(int(r) for r in getattr(self, key))
            object.__setattr__(self, key, res)
            if not res or any(r < 2 for r in res):
                raise ValueError(f"{key} must be a non-empty list of resolutions >= 2, got {res}")
        positive = ("bound", "near", "far_radius", "sample_linear_until", "sdf_channels", "sdf_hidden",
                    "colour_channels", "colour_hidden", "specular_hidden", "rays_per_step", "uniform_samples",
                    "iterations", "lr_grid", "lr_mlp", "lr_variance", "adam_eps", "softplus_beta",
                    "analytic_inv_s", "importance_inv_s", "normal_eps_start", "normal_eps_end", "checkpoint_every",
                    "log_every", "render_chunk", "pretrain_points", "pretrain_lr", "pretrain_grid_lr", "warmup_start",
                    "final_lr_factor")
        bad = [k for k in positive if not (getattr(self, k) > 0 and math.isfinite(getattr(self, k)))]
        if bad:
            raise ValueError(f"stage-A config values {bad} must be positive and finite, got "
                             f"{[getattr(self, k) for k in bad]}")
        non_negative = ("importance_samples", "warmup_iters", "diffuse_only_iters", "eikonal_weight",
                        "eikonal_points", "specular_weight", "pretrain_iters", "sdf_layers", "colour_layers",
                        "colour_weight_min", "grid_init", "cos_anneal_frac", "normal_eps_frac")
        bad = [k for k in non_negative if getattr(self, k) < 0]
        if bad:
            raise ValueError(f"stage-A config values {bad} must be >= 0")
        if self.uniform_samples < 2:
            raise ValueError(f"uniform_samples must be >= 2, got {self.uniform_samples}")
        if self.specular_hidden % 4:
            raise ValueError(f"specular_hidden must be divisible by 4 (the viewer packs it in vec4s), got "
                             f"{self.specular_hidden}")
        if not 0 < self.pretrain_r1 < self.pretrain_r2:
            raise ValueError(f"need 0 < pretrain_r1 < pretrain_r2, got {self.pretrain_r1}, {self.pretrain_r2}")
        if self.far_radius <= self.near:
            raise ValueError("far_radius must exceed near")


# ============================================================================================ modules
def _linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=bias)


class DenseGrid(nn.Module):
    """Dense multi-level feature grid on [-1, 1]^3: ``forward(u (N, 3)) -> (N, levels * channels)``, trilinear
    (``F.grid_sample``, ``align_corners=True``, border padding). ``u[:, 0]`` runs along the last grid axis."""

    def __init__(self, resolutions: Sequence[int], channels: int, init: float = 1e-4) -> None:
        super().__init__()
        self.resolutions = tuple(int(r) for r in resolutions)
        self.channels = int(channels)
        self.levels = nn.ParameterList(
            [nn.Parameter(torch.empty(1, self.channels, r, r, r).uniform_(-init, init)) for r in self.resolutions])

    @property
    def out_dim(self) -> int:
        return len(self.resolutions) * self.channels

    def forward(self, u: Tensor) -> Tensor:
        g = u.reshape(1, -1, 1, 1, 3).to(self.levels[0].dtype)
        outs = [F.grid_sample(lv, g, mode="bilinear", padding_mode="border", align_corners=True).reshape(
            self.channels, -1) for lv in self.levels]
        return torch.cat(outs, 0).t()


class _Contracting(nn.Module):
    """World -> contracted -> grid coordinates, shared by the fields."""

    contraction: str
    bound: float

    def contract(self, x: Tensor) -> Tensor:
        """World points -> contracted space (identity inside the unit box / ball, ``|c| < 2``)."""
        return contract(x, self.contraction)

    def to_grid(self, c: Tensor) -> Tensor:
        return c / self.bound


class SDFField(_Contracting):
    """f_sdf: ``forward(x_world (N, 3)) -> s (N,)`` in contracted units (module docstring). ``sdf_c`` takes
    contracted points; ``inv_s()`` is NeuS's sharpness ``clip(exp(10 variance), 1e-6, 1e6)``."""

    def __init__(self, cfg: FieldConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or FieldConfig()
        self.contraction, self.bound = cfg.contraction, float(cfg.bound)
        self.grid = DenseGrid(cfg.sdf_resolutions, cfg.sdf_channels, cfg.grid_init)
        layers: list[nn.Module] = []
        n_in = 3 + self.grid.out_dim
        for _ in range(cfg.sdf_layers):
            layers += [_linear(n_in, cfg.sdf_hidden, True), nn.Softplus(beta=cfg.softplus_beta)]
            n_in = cfg.sdf_hidden
        layers.append(_linear(n_in, 1, True))
        self.mlp = nn.Sequential(*layers)
        self.variance = nn.Parameter(torch.tensor(float(cfg.variance_init)))

    def sdf_c(self, c: Tensor) -> Tensor:
        u = self.to_grid(c)
        return self.mlp(torch.cat([u, self.grid(u)], -1)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.sdf_c(self.contract(x))

    def inv_s(self) -> Tensor:
        return torch.exp(10.0 * self.variance).clamp(1e-6, 1e6)

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.grid.parameters())

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())


class AnalyticSDF(_Contracting):
    """``sdf_source: analytic``: the garden-lite scene's exact SDF (world units; :class:`~.scene.GardenLite`'s torch
    formulas) behind the same interface as :class:`SDFField`; nothing trains, ``inv_s`` is fixed."""

    def __init__(self, scene: Any = None, cfg: FieldConfig | None = None) -> None:
        super().__init__()
        from cvpr24.pipelines.ltm.scene import GardenLite

        cfg = cfg or FieldConfig(sdf_source="analytic")
        self.scene = scene if scene is not None else GardenLite()
        self.contraction, self.bound = cfg.contraction, float(cfg.bound)
        self.register_buffer("variance", torch.tensor(math.log(cfg.analytic_inv_s) / 10.0))

    @classmethod
    def from_scene_folder(cls, root: str | Path, cfg: FieldConfig | None = None) -> AnalyticSDF:
        """The analytic SDF of an embedded garden-lite folder (its ``gt/scene.json`` names the generator's seed and
        stem radius)."""
        from cvpr24.pipelines.ltm.scene import GardenLite

        meta = Path(root) / "gt" / "scene.json"
        if not meta.is_file():
            raise DataValidationError(f"sdf_source 'analytic' needs the embedded garden-lite scene, but {root} has no "
                                      f"gt/scene.json (a real scene has no analytic SDF): set sdf_source: neural")
        gen = json.loads(meta.read_text()).get("config", {})
        return cls(GardenLite(seed=int(gen.get("seed", 0)), stem_radius=float(gen.get("stem_radius", 0.008))), cfg)

    def sdf_c(self, c: Tensor) -> Tensor:
        x = uncontract(c.double(), self.contraction)
        return self.scene.sdf_torch(x).to(c.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.scene.sdf_torch(x.double()).to(x.dtype)

    def inv_s(self) -> Tensor:
        return torch.exp(10.0 * self.variance).clamp(1e-6, 1e6)


class ColourField(_Contracting):
    """f_color (module docstring): :meth:`features` -> (N, 6) sigmoid outputs (k_d, k_s), :meth:`shade` ->
    clamp(k_d + g(d, k_s), 0, 1), :meth:`viewer_weights` -> the specular head in torch layout."""

    def __init__(self, cfg: FieldConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or FieldConfig()
        self.contraction, self.bound = cfg.contraction, float(cfg.bound)
        self.grid = DenseGrid(cfg.colour_resolutions, cfg.colour_channels, cfg.grid_init)
        layers: list[nn.Module] = []
        n_in = 3 + self.grid.out_dim
        for _ in range(cfg.colour_layers):
            layers += [_linear(n_in, cfg.colour_hidden, False), nn.ReLU()]
            n_in = cfg.colour_hidden
        layers.append(_linear(n_in, 6, False))
        self.mlp = nn.Sequential(*layers)
        self.specular = nn.Sequential(_linear(6, cfg.specular_hidden, False), nn.ReLU(),
                                      _linear(cfg.specular_hidden, 3, False))
        with torch.no_grad():
            self.specular[2].weight.uniform_(-1.0, -0.5)

    def features_c(self, c: Tensor) -> Tensor:
        u = self.to_grid(c)
        return torch.sigmoid(self.mlp(torch.cat([u, self.grid(u)], -1)))

    def features(self, x: Tensor) -> Tensor:
        """(N, 6) in [0, 1] at world points: k_d (diffuse RGB) then k_s (specular features); what is baked."""
        return self.features_c(self.contract(x))

    def specular_term(self, feats: Tensor, dirs: Tensor) -> Tensor:
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.sigmoid(self.specular(torch.cat([d, feats[..., 3:]], -1)))

    def shade(self, feats: Tensor, dirs: Tensor, diffuse_only: bool = False) -> Tensor:
        """Colour from features (N, 6) and view directions (N, 3): k_d, or clamp(k_d + g(d, k_s), 0, 1)."""
        if diffuse_only:
            return feats[..., :3]
        return (feats[..., :3] + self.specular_term(feats, dirs)).clamp(0.0, 1.0)

    def forward(self, x: Tensor, dirs: Tensor, diffuse_only: bool = False) -> Tensor:
        return self.shade(self.features(x), dirs, diffuse_only)

    def viewer_weights(self) -> dict[str, Tensor]:
        """The specular MLP in torch layout: ``net.0.weight`` (H, 6), ``net.1.weight`` (3, H) (what
        :func:`~.mesh.export_viewer` takes; ``mlp.json`` stores the transposes)."""
        return {"net.0.weight": self.specular[0].weight.detach().clone(),
                "net.1.weight": self.specular[2].weight.detach().clone()}

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.grid.parameters())

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters()) + list(self.specular.parameters())


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module under a forked, locally seeded torch RNG (the global generator is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def build_fields(cfg: FieldConfig, scene_root: str | Path | None = None) -> tuple[nn.Module, ColourField]:
    """(f_sdf, f_color) initialised from ``cfg.seed`` (f_sdf = :class:`AnalyticSDF` for ``sdf_source: analytic``:
    read from ``scene_root``'s ``gt/scene.json`` when given, else the default garden-lite)."""
    if cfg.sdf_source == "analytic":
        sdf: nn.Module = (AnalyticSDF.from_scene_folder(scene_root, cfg) if scene_root is not None
                          else AnalyticSDF(None, cfg))
    else:
        sdf = _seeded(derive_seed(cfg.seed, "ltm-field", "sdf"), lambda: SDFField(cfg))
    colour = _seeded(derive_seed(cfg.seed, "ltm-field", "colour"), lambda: ColourField(cfg))
    return sdf, colour  # type: ignore[return-value]


# ============================================================================================ schedules
def lr_factor(step: int, cfg: FieldConfig) -> float:
    """Warm-up (``warmup_start`` -> 1, linear over ``warmup_iters``) then exponential decay to
    ``final_lr_factor`` at the last iteration."""
    if step < cfg.warmup_iters:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / cfg.warmup_iters
    span = max(cfg.iterations - 1 - cfg.warmup_iters, 1)
    return cfg.final_lr_factor ** (min(step - cfg.warmup_iters, span) / span)


def normal_epsilon(step: int | None, cfg: FieldConfig) -> float:
    """Finite-difference step (spec corrections): ``start (1 - min(0.999, step / (frac iters)))``, i.e. 0.1 ->
    1e-4 over half the iterations; ``normal_eps_end`` at inference (``step=None``)."""
    if step is None:
        return cfg.normal_eps_end
    span = max(cfg.normal_eps_frac * cfg.iterations, 1e-9)
    return max(cfg.normal_eps_start * (1.0 - min(0.999, step / span)), cfg.normal_eps_end)


def cos_anneal_ratio(step: int | None, cfg: FieldConfig) -> float:
    """NeuS's ``cos_anneal_ratio``: 0 -> 1 linearly over ``cos_anneal_frac`` of the iterations; 1 at inference."""
    if step is None or cfg.cos_anneal_frac <= 0:
        return 1.0
    return min(1.0, step / (cfg.cos_anneal_frac * cfg.iterations))


# ============================================================================================ rays
def camera_rays(cameras: Any, ids: Sequence[int] | np.ndarray | int) -> tuple[Tensor, Tensor]:
    """World origins and unit directions (float32) of every pixel-centre ray of the views ``ids`` (OpenCV: pixel
    (r, c) has centre (c + 0.5, r + 0.5), ``d_cam = ((u - cx) / fx, (v - cy) / fy, 1)``, ``d = R d_cam``
    normalised). Shapes ``(len(ids) * H * W, 3)`` in view, row, column order."""
    ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    origins, dirs = [], []
    for i in ids:
        h, w = int(cameras.height[i]), int(cameras.width[i])
        v, u = np.meshgrid(np.arange(h, dtype=np.float64) + 0.5, np.arange(w, dtype=np.float64) + 0.5,
                           indexing="ij")
        d_cam = np.stack([(u - cameras.cx[i]) / cameras.fx[i], (v - cameras.cy[i]) / cameras.fy[i],
                          np.ones_like(u)], -1).reshape(-1, 3)
        d = d_cam @ cameras.c2w[i, :3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        dirs.append(d)
        origins.append(np.broadcast_to(cameras.c2w[i, :3, 3], d.shape))
    return (torch.from_numpy(np.concatenate(origins).astype(np.float32)),
            torch.from_numpy(np.concatenate(dirs).astype(np.float32)))


def _g(t: Tensor, lin: float) -> Tensor:
    return torch.where(t <= lin, t, lin * (2.0 - lin / t.clamp_min(lin)))


def _g_inv(g: Tensor, lin: float) -> Tensor:
    return torch.where(g <= lin, g, lin * lin / (2.0 * lin - g).clamp_min(1e-6))


def _far(o: Tensor, d: Tensor, radius: float, near: float) -> Tensor:
    """Distance to where each ray leaves the sphere of ``radius`` (origin-centred); ``near`` + 1 for origins
    outside it that miss it."""
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius * radius
    disc = b * b - c
    t = -b + disc.clamp_min(0.0).sqrt()
    return torch.where(disc > 0, t, torch.full_like(t, near + 1.0)).clamp_min(near + 1e-3)


# ============================================================================================ NeuS
def neus_alpha(s: Tensor, cos: Tensor, delta: Tensor, inv_s: Tensor | float, ratio: float = 1.0) -> Tensor:
    """NeuS / N2M opacity of sections with SDF ``s`` at their middles, ``cos = d . grad s`` and length ``delta``:
    the annealed cosine ``-(relu(-cos/2 + 1/2) (1 - ratio) + relu(-cos) ratio)``, ``s_prev / s_next = s -/+ c
    delta / 2``, ``alpha = clamp((Phi(s_prev) - Phi(s_next) + 1e-5) / (Phi(s_prev) + 1e-5), 0, 1)``."""
    iter_cos = -(F.relu(-cos * 0.5 + 0.5) * (1.0 - ratio) + F.relu(-cos) * ratio)
    s_prev = s - iter_cos * delta * 0.5
    s_next = s + iter_cos * delta * 0.5
    p = torch.sigmoid(s_prev * inv_s)
    n = torch.sigmoid(s_next * inv_s)
    return ((p - n + 1e-5) / (p + 1e-5)).clamp(0.0, 1.0)


def _weights(alpha: Tensor) -> Tensor:
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-7], -1), -1)[..., :-1]
    return alpha * trans


def _sdf_eval(sdf: nn.Module, c: Tensor, grad: bool) -> Tensor:
    flat = c.reshape(-1, 3)
    if grad:
        return sdf.sdf_c(flat).reshape(c.shape[:-1])
    with torch.no_grad():
        return sdf.sdf_c(flat).reshape(c.shape[:-1])


def _central_gradient(sdf: nn.Module, c: Tensor, eps: float, grad: bool) -> tuple[Tensor, Tensor]:
    """(s, grad s) at points (..., 3) by central differences in the 3 axes (one batched call of 7 N points)."""
    n = c.reshape(-1, 3)
    off = torch.eye(3, dtype=c.dtype) * eps
    pts = torch.cat([n[None], n[None] + off[:, None], n[None] - off[:, None]], 0)  # (7, N, 3)
    vals = _sdf_eval(sdf, pts, grad)
    g = ((vals[1:4] - vals[4:7]) / (2.0 * eps)).t()
    return vals[0].reshape(c.shape[:-1]), g.reshape(c.shape)


def _importance(g_edges: Tensor, weights: Tensor, n: int) -> Tensor:
    """``n`` g-values per ray from the piecewise-constant pdf of ``weights`` over the sections between
    ``g_edges`` (deterministic quantiles (j + 0.5) / n)."""
    w = weights + 1e-5
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)
    cdf[..., -1] = 1.0
    u = ((torch.arange(n, dtype=g_edges.dtype) + 0.5) / n).expand(*cdf.shape[:-1], n).contiguous()
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    g0, g1 = g_edges.gather(-1, idx - 1), g_edges.gather(-1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return g0 + frac * (g1 - g0)


def render_rays(sdf: nn.Module, colour: ColourField | None, rays_o: Tensor, rays_d: Tensor, cfg: FieldConfig, *,
                step: int | None = None, generator: torch.Generator | None = None, diffuse_only: bool = False,
                eikonal: bool = False, train_sdf: bool = True) -> dict[str, Tensor]:
    """Volume-render rays (module docstring, "Rays and samples"). ``step``: training step (annealing; None =
    inference); ``generator``: stratified jitter and the eikonal subset (None = bin middles, no jitter);
    ``eikonal``: also return ``eikonal`` (mean (|grad s| - 1)^2 on ``eikonal_points`` section middles);
    ``train_sdf``: False evaluates the SDF without autograd (analytic SDF / colour-only training).
    Returns rgb (R, 3) (zeros when ``colour`` is None), depth (R,), acc (R,), weights (R, S), t_mid (R, S),
    spec (the specular terms of the shaded samples, for the sparsity loss)."""
    lin = float(cfg.sample_linear_until)
    n_rays = rays_o.shape[0]
    t_far = _far(rays_o, rays_d, cfg.far_radius, cfg.near)
    g_near = _g(torch.full_like(t_far, cfg.near), lin)
    g_far = _g(t_far, lin)
    nu = cfg.uniform_samples
    pos = torch.linspace(0.0, 1.0, nu, dtype=rays_o.dtype).expand(n_rays, nu)
    if generator is not None:  # jitter the interior samples by up to half a bin; the ends stay at near / far
        jitter = torch.rand(n_rays, nu, generator=generator, dtype=rays_o.dtype) - 0.5
        jitter[:, 0] = 0.0
        jitter[:, -1] = 0.0
        pos = pos + jitter / (nu - 1)
    g_u = g_near[:, None] + pos * (g_far - g_near)[:, None]
    inv_s = sdf.inv_s()

    if cfg.importance_samples > 0:
        with torch.no_grad():
            t_u = _g_inv(g_u, lin)
            c_u = contract(rays_o[:, None] + t_u[..., None] * rays_d[:, None], cfg.contraction)
            s_u = _sdf_eval(sdf, c_u, False)
            inv_imp = max(float(cfg.importance_inv_s), float(inv_s))
            phi = torch.sigmoid(s_u * inv_imp)
            a_u = ((phi[:, :-1] - phi[:, 1:] + 1e-5) / (phi[:, :-1] + 1e-5)).clamp(0.0, 1.0)
            g_i = _importance(g_u, _weights(a_u), cfg.importance_samples)
        g_all = torch.sort(torch.cat([g_u, g_i], -1), -1).values
    else:
        g_all = g_u
    t_all = _g_inv(g_all, lin)
    c_all = contract(rays_o[:, None] + t_all[..., None] * rays_d[:, None], cfg.contraction)
    seg = c_all[:, 1:] - c_all[:, :-1]
    delta = seg.norm(dim=-1).clamp_min(1e-7)
    d_c = seg / delta[..., None]
    c_mid = 0.5 * (c_all[:, 1:] + c_all[:, :-1])
    t_mid = 0.5 * (t_all[:, 1:] + t_all[:, :-1])
    eps = normal_epsilon(step, cfg)
    grad_s = None
    if cfg.cos_estimate == "sections":
        s_pts = _sdf_eval(sdf, c_all, train_sdf)
        s_mid = 0.5 * (s_pts[:, 1:] + s_pts[:, :-1])
        cos = (s_pts[:, 1:] - s_pts[:, :-1]) / delta
    elif cfg.cos_estimate == "directional":
        pts = torch.stack([c_mid, c_mid + eps * d_c, c_mid - eps * d_c], 0)
        vals = _sdf_eval(sdf, pts, train_sdf)
        s_mid = vals[0]
        cos = (vals[1] - vals[2]) / (2.0 * eps)
    else:
        s_mid, grad_s = _central_gradient(sdf, c_mid, eps, train_sdf)
        cos = (d_c * grad_s).sum(-1)
    alpha = neus_alpha(s_mid, cos, delta, inv_s, cos_anneal_ratio(step, cfg))
    weights = _weights(alpha)
    out: dict[str, Tensor] = {"weights": weights, "t_mid": t_mid, "depth": (weights * t_mid).sum(-1),
                              "acc": weights.sum(-1)}
    if colour is not None:
        n_s = weights.shape[1]
        flat_c = c_mid.reshape(-1, 3)
        flat_d = rays_d[:, None].expand(-1, n_s, -1).reshape(-1, 3)
        keep = None
        if cfg.colour_weight_min > 0:
            keep = torch.nonzero(weights.detach().reshape(-1) > cfg.colour_weight_min).squeeze(-1)
            flat_c, flat_d = flat_c[keep], flat_d[keep]
        feats = colour.features_c(flat_c)
        if diffuse_only:
            col, spec = feats[:, :3], feats.new_zeros(0, 3)
        else:
            spec = colour.specular_term(feats, flat_d)
            col = (feats[:, :3] + spec).clamp(0.0, 1.0)
        if keep is not None:
            full = col.new_zeros(n_rays * n_s, 3)
            col = full.index_copy(0, keep, col)
        out["rgb"] = (weights[..., None] * col.reshape(n_rays, n_s, 3)).sum(1)
        out["spec"] = spec
    else:
        out["rgb"] = rays_o.new_zeros(n_rays, 3)
        out["spec"] = rays_o.new_zeros(0, 3)
    if eikonal:
        flat = c_mid.detach().reshape(-1, 3)
        k = cfg.eikonal_points
        if 0 < k < flat.shape[0]:
            idx = torch.randint(flat.shape[0], (k,), generator=generator)
        else:
            idx = None
        if grad_s is not None:
            g = grad_s.reshape(-1, 3)
            g = g if idx is None else g[idx]
        else:
            _, g = _central_gradient(sdf, flat if idx is None else flat[idx], eps, True)
        out["eikonal"] = ((g.norm(dim=-1) - 1.0) ** 2).mean()
    return out


# ============================================================================================ pretraining
def double_sphere_target(x: Tensor, cfg: FieldConfig) -> Tensor:
    """The double-sphere shell (module docstring) at world points ``x`` (N, 3): negative inside world radius
    ``r1 bound`` and beyond ``r2 bound``, positive between; the value is the radial signed distance in contracted
    units."""
    r = x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    unit = x / r
    radii = (cfg.pretrain_r1 * cfg.bound, cfg.pretrain_r2 * cfg.bound)
    cn = contract(x, cfg.contraction).norm(dim=-1)
    c1 = contract(unit * radii[0], cfg.contraction).norm(dim=-1)
    c2 = contract(unit * radii[1], cfg.contraction).norm(dim=-1)
    inner = r.squeeze(-1) < 0.5 * (radii[0] + radii[1])
    return torch.where(inner, cn - c1, c2 - cn)


def pretrain_double_sphere(sdf: SDFField, cfg: FieldConfig, generator: torch.Generator | None = None) -> float:
    """Fit ``sdf`` to :func:`double_sphere_target` (Adam at ``pretrain_lr``, MSE, ``pretrain_iters`` steps of
    ``pretrain_points`` points uniform in contracted ``[-bound, bound]^3``). Only the MLP and the coarsest grid level
    (at ``pretrain_grid_lr``) train ([DESIGN]: the shell is smooth; updating the finer dense levels as well made
    this ~6x slower for no better fit). Returns the last MSE."""
    if generator is None:
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "ltm-field", "pretrain"))
    coarse = sdf.grid.levels[0]
    frozen = [p for p in sdf.grid_parameters() if p is not coarse]
    opt = torch.optim.Adam([{"params": [coarse], "lr": cfg.pretrain_grid_lr},
                            {"params": sdf.mlp_parameters(), "lr": cfg.pretrain_lr}], eps=cfg.adam_eps)
    last = float("nan")
    top = cfg.bound * (1.0 - 1e-4)
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(cfg.pretrain_iters):
            c = (torch.rand(cfg.pretrain_points, 3, generator=generator) * 2.0 - 1.0) * top
            target = double_sphere_target(uncontract(c, cfg.contraction), cfg)
            loss = F.mse_loss(sdf.sdf_c(c), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return last


# ============================================================================================ training
@dataclass
class StageAResult:
    """What :func:`train_stage_a` returns. ``history``: one dict per ``log_every`` steps (means over the window)."""

    sdf: nn.Module
    colour: ColourField
    history: list[dict[str, float]]
    seconds: float
    config: FieldConfig = field(default_factory=FieldConfig)
    steps: int = 0
    resumed_from: int | None = None
    pretrain_mse: float | None = None


def _check_scene(scene: Any) -> tuple[np.ndarray, np.ndarray]:
    cams, images = scene.cameras, np.asarray(scene.images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataValidationError(f"stage A: images must be (N, H, W, 3), got {images.shape}")
    if len(cams) != images.shape[0]:
        raise DataValidationError(f"stage A: {images.shape[0]} images but {len(cams)} cameras; reload the scene "
                                  f"folder (load_scene_folder) so images and cameras come from the same scene")
    h, w = images.shape[1:3]
    wrong = [i for i in range(len(cams)) if (int(cams.height[i]), int(cams.width[i])) != (h, w)]
    if wrong:
        i = wrong[0]
        raise DataValidationError(f"stage A: image {cams.names[i]!r} is {w}x{h} but its camera is "
                                  f"{int(cams.width[i])}x{int(cams.height[i])} ({len(wrong)} view(s) differ); resize "
                                  f"the cameras with Cameras.resized or load the matching image folder")
    train = np.asarray(scene.train_ids, dtype=np.int64)
    if train.size == 0:
        raise DataValidationError("stage A: the scene has no training views")
    if train.min() < 0 or train.max() >= len(cams):
        raise DataValidationError(f"stage A: train_ids out of range for {len(cams)} views")
    return images, train


def _optimizer(sdf: nn.Module, colour: ColourField, cfg: FieldConfig) -> torch.optim.Adam:
    groups = [{"params": colour.grid_parameters(), "lr": cfg.lr_grid, "base_lr": cfg.lr_grid},
              {"params": colour.mlp_parameters(), "lr": cfg.lr_mlp, "base_lr": cfg.lr_mlp}]
    if isinstance(sdf, SDFField):
        groups += [{"params": sdf.grid_parameters(), "lr": cfg.lr_grid, "base_lr": cfg.lr_grid},
                   {"params": sdf.mlp_parameters(), "lr": cfg.lr_mlp, "base_lr": cfg.lr_mlp},
                   {"params": [sdf.variance], "lr": cfg.lr_variance, "base_lr": cfg.lr_variance}]
    try:
        return torch.optim.Adam(groups, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - fused Adam unavailable
        return torch.optim.Adam(groups, eps=cfg.adam_eps)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    from cvpr24.core.training import atomic_torch_save

    atomic_torch_save(state, path)


def _load_checkpoint(path: Path, cfg: FieldConfig) -> dict[str, Any] | None:
    from cvpr24.core.safety import load_weights

    if not path.is_file():
        return None
    try:
        state = load_weights(path)
    except Exception as exc:
        raise RuntimeError(f"stage-A checkpoint {path} cannot be read ({exc}); delete it and run again") from exc
    if state.get("format") != CHECKPOINT_FORMAT or state.get("config") != cfg.to_dict():
        raise ValueError(f"stage-A checkpoint {path} was written with another configuration (or format); delete it "
                         f"to train from scratch with this one")
    return state


def train_stage_a(scene_data: Any, cfg: FieldConfig | Mapping[str, Any] | None = None, *,
                  checkpoint_path: str | Path | None = None, progress: bool = True,
                  log_fn: Callable[[dict[str, float]], None] | None = None) -> StageAResult:
    """Train stage A on ``scene_data`` (a :class:`~.scene.SceneData`: cameras, uint8 images, train ids) and return
    the fields (module docstring, "Training"). ``checkpoint_path``: a file; an existing one (same config) is
    resumed, and it is rewritten every ``checkpoint_every`` steps and at the end. ``log_fn`` gets every history
    row (``step``, ``loss``, ``mse``, ``psnr``, ``eikonal``, ``spec``, ``inv_s``, ``lr_factor``, ``eps``,
    ``seconds``) after the checkpoint of that step is written. Raises DataValidationError for images that do not
    match the cameras and FloatingPointError (naming the step and the fix) for a non-finite loss."""
    cfg = cfg if isinstance(cfg, FieldConfig) else FieldConfig.from_dict(cfg)
    images, train = _check_scene(scene_data)
    t_start = time.perf_counter()
    root = getattr(scene_data, "root", None)
    sdf, colour = build_fields(cfg, root if cfg.sdf_source == "analytic" else None)
    neural = isinstance(sdf, SDFField)
    opt = _optimizer(sdf, colour, cfg)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "ltm-field", "rays"))
    history: list[dict[str, float]] = []
    start, elapsed, pre_mse, resumed = 0, 0.0, None, None
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    state = _load_checkpoint(ckpt, cfg) if ckpt is not None else None
    if state is not None:
        sdf.load_state_dict(state["sdf"])
        colour.load_state_dict(state["colour"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history = list(state["history"])
        start, elapsed, pre_mse = int(state["step"]), float(state["seconds"]), state.get("pretrain_mse")
        resumed = start
        log.info("stage A: resumed from %s at step %d", ckpt, start)
    elif neural and cfg.pretrain_iters > 0:
        pre_mse = pretrain_double_sphere(sdf, cfg)  # type: ignore[arg-type]

    def snapshot(step: int) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "step": step, "sdf": sdf.state_dict(),
                "colour": colour.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "history": history, "seconds": elapsed + time.perf_counter() - t_start, "pretrain_mse": pre_mse}

    rays_o, rays_d = camera_rays(scene_data.cameras, train)
    target = torch.from_numpy(images[train].reshape(-1, 3).astype(np.float32) / 255.0)
    n_rays = rays_o.shape[0]
    bar = None
    if progress and start < cfg.iterations:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc="ltm stage A", leave=False, mininterval=1.0)
    window: dict[str, list[float]] = {}
    sdf.train()
    colour.train()
    try:
        for step in range(start, cfg.iterations):
            factor = lr_factor(step, cfg)
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
            idx = torch.randint(n_rays, (cfg.rays_per_step,), generator=gen)
            diffuse = step < cfg.diffuse_only_iters
            use_eik = neural and cfg.eikonal_weight > 0
            out = render_rays(sdf, colour, rays_o[idx], rays_d[idx], cfg, step=step, generator=gen,
                              diffuse_only=diffuse, eikonal=use_eik, train_sdf=neural)
            mse = F.mse_loss(out["rgb"], target[idx])
            loss = mse
            eik = out.get("eikonal")
            if eik is not None:
                loss = loss + cfg.eikonal_weight * eik
            spec = out["spec"]
            spec_loss = (spec ** 2).mean() if spec.numel() else spec.new_zeros(())
            if spec.numel() and cfg.specular_weight > 0:
                loss = loss + cfg.specular_weight * spec_loss
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"stage A: the training loss became {loss_value} at step {step} (rgb mse {float(mse):.4g}"
                    f"{'' if eik is None else f', eikonal {float(eik):.4g}'}, inv_s {float(sdf.inv_s()):.4g}): "
                    f"the optimisation diverged; {NAN_FIX}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            row = {"loss": loss_value, "mse": float(mse.detach()), "eikonal": float(eik.detach()) if eik is not None else 0.0,
                   "spec": float(spec_loss.detach()), "inv_s": float(sdf.inv_s().detach())}
            for k, v in row.items():
                window.setdefault(k, []).append(v)
            done = step + 1
            if bar is not None:
                bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.iterations:
                rec = {"step": float(done), **{k: float(np.mean(v)) for k, v in window.items()}}
                rec["psnr"] = float(-10.0 * math.log10(max(rec["mse"], 1e-12)))
                rec.update(lr_factor=factor, eps=normal_epsilon(step, cfg),
                           seconds=elapsed + time.perf_counter() - t_start)
                history.append(rec)
                window = {}
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", psnr=f"{rec['psnr']:.2f}")
            else:
                rec = None
            if ckpt is not None and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                _save_checkpoint(ckpt, snapshot(done))
            if rec is not None and log_fn is not None:
                log_fn(rec)
    finally:
        if bar is not None:
            bar.close()
    sdf.eval()
    colour.eval()
    seconds = elapsed + time.perf_counter() - t_start
    return StageAResult(sdf, colour, history, seconds, cfg, cfg.iterations, resumed, pre_mse)


# ============================================================================================ evaluation helpers
def _point_fn(fn: Callable[[Tensor], Tensor], chunk: int) -> Callable[[Any], np.ndarray]:
    def call(points: Any) -> np.ndarray:
        pts = points if isinstance(points, Tensor) else torch.from_numpy(np.asarray(points))
        pts = pts.reshape(-1, 3).to(torch.float32)
        outs = []
        with torch.no_grad():
            for s in range(0, pts.shape[0], chunk):
                outs.append(fn(pts[s:s + chunk]).double().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,))

    return call


def sdf_numpy(field: nn.Module, chunk: int = 1 << 16) -> Callable[[Any], np.ndarray]:
    """World points (N, 3) (numpy or torch) -> s (N,) numpy float64, no grad, chunked: the ``sdf_fn`` of
    :func:`~.mesh.extract_cascades`."""
    return _point_fn(lambda p: field(p), chunk)


def colour_numpy(field: ColourField, chunk: int = 1 << 16) -> Callable[[Any], np.ndarray]:
    """World points (N, 3) -> (N, 6) features in [0, 1] (k_d, k_s), no grad, chunked: the ``colour_fn`` of
    :func:`~.mesh.bake_textures`."""
    fn = _point_fn(lambda p: field.features(p), chunk)
    return lambda pts: fn(pts).reshape(-1, 6)


def render_view(sdf: nn.Module, colour: ColourField, cameras: Any, i: int, cfg: FieldConfig, *,
                chunk: int | None = None, diffuse_only: bool = False) -> dict[str, np.ndarray]:
    """Render view ``i`` at its full resolution (inference: bin middles, annealing finished), in chunks of rays.
    Returns rgb (H, W, 3), depth (H, W) (world ray distance), acc (H, W) as float32 numpy."""
    h, w = int(cameras.height[i]), int(cameras.width[i])
    o, d = camera_rays(cameras, [i])
    chunk = int(chunk or cfg.render_chunk)
    rgb, depth, acc = [], [], []
    with torch.no_grad():
        for s in range(0, o.shape[0], chunk):
            out = render_rays(sdf, colour, o[s:s + chunk], d[s:s + chunk], cfg, diffuse_only=diffuse_only,
                              train_sdf=False)
            rgb.append(out["rgb"])
            depth.append(out["depth"])
            acc.append(out["acc"])
    return {"rgb": torch.cat(rgb).reshape(h, w, 3).numpy(), "depth": torch.cat(depth).reshape(h, w).numpy(),
            "acc": torch.cat(acc).reshape(h, w).numpy()}


def evaluate_views(sdf: nn.Module, colour: ColourField, scene_data: Any, ids: Sequence[int], cfg: FieldConfig,
                   **kw: Any) -> dict[str, Any]:
    """PSNR (dB, on [0, 1] RGB) of each view in ``ids`` rendered at full resolution, and their mean."""
    psnrs = []
    for i in ids:
        img = render_view(sdf, colour, scene_data.cameras, int(i), cfg, **kw)["rgb"]
        ref = np.asarray(scene_data.images[int(i)], dtype=np.float32) / 255.0
        mse = float(np.mean((np.clip(img, 0.0, 1.0) - ref) ** 2))
        psnrs.append(-10.0 * math.log10(max(mse, 1e-12)))
    return {"psnr": psnrs, "mean_psnr": float(np.mean(psnrs)) if psnrs else float("nan")}
