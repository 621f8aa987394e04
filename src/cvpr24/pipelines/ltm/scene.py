"""The embedded "garden-lite" scene (spec 8): an analytic SDF of a small unbounded garden, its appearance, a sphere
tracer that renders it from a 360-degree orbit, ground-truth surface samples, and the scene-folder writer / loader
that reads the embedded folder and real mip-NeRF 360 / Tanks and Temples / Deep Blending folders (spec 3) alike.

Conventions
-----------
* World units, **y up**, right-handed; the inner scene lies in |x|inf <= 0.8 (inside the inner cascade [-1, 1]^3),
  the far field (hills, the background sphere) lies entirely outside |x| = 2 (outer cascade / contraction).
* Cameras are :class:`~.colmap.Cameras` (camera-to-world in OpenCV axes: x right, y down, z forward; pixel
  centres at +0.5; see colmap.py for COLMAP / LLFF / transforms.json). Depth maps hold the **z-depth** along the
  optical axis (OpenCV z), 0 where a pixel's centre ray hits nothing; normal maps hold unit **world-space**
  normals (0 where nothing is hit). Images are linear RGB in [0, 1] quantised to uint8 (no sRGB gamma, spec 8).
* Material ids (:data:`MATERIALS`, the order of :meth:`GardenLite.components`): 0 ground, 1 glossy sphere, 2 torus,
  3 table (top + legs), 4 glossy vase, 5 plant stems, 6 fence posts, 7 hills, 8 background sphere (sky).

Geometry (spec 8; [interpretation] marks where the spec left a choice)
-----------------------------------------------------------------------
ground y = 0.02 sin(6x) cos(5z), SDF (y - h) / sqrt(1 + |grad h|^2) (exact zero set, first-order distance);
sphere r 0.18 at (0.25, 0.18, 0.1) (glossy); torus R 0.15, r 0.045, axis z, centre (-0.3, 0.195, 0); table: rounded
box 0.5 x 0.03 x 0.3 (rounding 0.005), top at y 0.3, centre (0, ., -0.35), four legs r 0.025 at (+-0.22, ., +-0.12)
from y -0.05 into the top; vase at (0.4, ., -0.4): capped cylinder r 0.06 from the ground to y 0.2 [interpretation:
"h 0.2" = full height above the ground] smooth-unioned (k 0.05) with a sphere r 0.09 resting on the ground
[interpretation] (glossy); fence posts 0.04 x 0.3 x 0.04 at (+-0.7, ., +-0.7) (sunk 0.04 into the ground).
Added for the brief's thin-structure requirement (not in spec 8): three **plant stems** = capsules of radius
``stem_radius`` (default 0.008, i.e. 0.016 wide: half a voxel of a 64^3 grid over [-1, 1]^3, ~1.3 voxels of stage
B's 160^3 grid) growing from the vase's neck to y ~ 0.45. Far field: 5 hills = spheres of radius 2-4 at horizontal
distance 5-9 (seeded), centres 40-70 % of their radius below y = 0 [interpretation of "sunk to 40-70 % below
y = 0"], radius capped at distance - 2.5 so every hill stays > 2 from the origin; background sphere R 12,
SDF 12 - |x| (every ray of the orbit hits something).

Appearance: albedo from 3D position (spec 8 palettes; the ground is a 0.08-period checker mixed 50/50 with 3-octave
value noise), shading ``albedo (0.35 + 0.65 max(0, n.l))`` with l = normalize(0.4, 1, 0.3), plus white Blinn-Phong
``0.5 max(0, n.h)^40`` on the sphere and the vase (view-dependent), clamped to [0, 1]. The background sphere is
unlit (sky gradient above the horizon, a mountain silhouette band from 1-D noise in azimuth) [interpretation]; rays
that miss everything (step cap or max distance) get the same sky colour of their direction. The SDF runs on numpy
arrays and torch tensors alike (one implementation, differentiable in torch); colours are numpy only.

Rendering: sphere tracing (<= 256 steps, step scale 0.8, hit when sdf < eps max(1, t) with eps 5e-4, max distance
30), 2x2 supersampling averaged (anti-aliased like photos); depth / normals / material maps from one extra ray
through each pixel centre; normals by central differences (h 1e-4). Spec 8 says <= 160 steps: that leaves up to
~0.2 % of a view's rays (those grazing the ground ~2 degrees below the horizon, 10-13 units away) still marching,
shaded as sky; 256 leaves 4 of the 1.3 M rays of the default scene and costs no measurable time.

On-disk layout (mip-NeRF 360 + our ground truth apart in ``gt/``)
--------------------------------------------------------------
::

    <scene>/images/<name>.png           W x H RGB (the names sort in view order: view_000.png, ...)
    <scene>/images_<k>/<name>.png       W/k x H/k box-filtered copies, k in config.downscales (spec: 2)
    <scene>/sparse/0/cameras.bin        COLMAP binary, PINHOLE (one camera)
    <scene>/sparse/0/images.bin         world-to-camera poses + 2D observations of the sparse points
    <scene>/sparse/0/points3D.bin       ``sparse_points`` visible surface points (sky excluded) with colours and
                                        tracks (every view whose depth map agrees, 1 % + 2 mm)
    <scene>/poses_bounds.npy            LLFF N x 17; near/far = 0.1 / 99.9 percentiles of each view's GT depths
    <scene>/transforms.json             NeRF / instant-ngp, OpenGL camera-to-world, file_path "images/<name>"
    <scene>/gt/surface_points.npy       (M, 3) float32: area-weighted samples of the inner surfaces (|x|inf <= 0.9)
    <scene>/gt/surface_normals.npy      (M, 3) float32: their unit outward normals
    <scene>/gt/depth/<stem>.npy         (H, W) float32 z-depth of each view (0 = no hit)
    <scene>/gt/normal/<stem>.npy        (H, W, 3) float32 world normals
    <scene>/gt/scene.json               generator configuration, counts and timings

Real scene folders have everything above but ``gt/`` (T&T / Deep Blending as prepared for 3DGS: ``images/`` and
``sparse/0`` only). [Spec 8 names ``gt_surface.npz``, ``gt_depth/``, ``gt_normal/`` at the top level; the brief
asked for a separate ``gt/`` folder, which is what is written.] The writer is atomic: everything goes into a
temporary sibling folder that is renamed into place last (an existing folder is swapped out only then).

:func:`load_scene_folder` reads the cameras from ``sparse/0`` (binary, else text; also ``sparse/`` itself), else
``poses_bounds.npy`` (names = the name-sorted ``images/`` listing), else ``transforms.json`` [the spec names all
three formats but no order: this one follows N2M, which reads COLMAP], the images from ``images`` (downscale 1) or
``images_<k>`` (intrinsics scaled by the size ratio), and checks everything before training starts.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvpr24.core.images import read_rgb
from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm.colmap import (
    Cameras,
    Points3D,
    cameras_from_colmap,
    check_image_files,
    colmap_from_cameras,
    find_model,
    look_at_c2w,
    read_model,
    read_poses_bounds,
    read_transforms_json,
    write_model,
    write_poses_bounds,
    write_transforms_json,
)

log = logging.getLogger(__name__)

__all__ = [
    "MATERIALS",
    "GardenLite",
    "GardenLiteConfig",
    "GardenLiteData",
    "SceneData",
    "TraceResult",
    "generate_garden_lite",
    "load_scene_folder",
    "orbit_cameras",
    "render_view",
    "sphere_trace",
    "surface_samples",
    "write_scene_folder",
]

MATERIALS = ("ground", "sphere", "torus", "table", "vase", "stems", "posts", "hills", "sky")
GLOSSY = (1, 4)
SKY = 8
LIGHT = np.array([0.4, 1.0, 0.3]) / np.linalg.norm([0.4, 1.0, 0.3])
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")

SCENE_FIX = ("download the scene (mip-NeRF 360: https://jonbarron.info/mipnerf360/; Tanks and Temples / Deep "
             "Blending as prepared for 3D Gaussian Splatting) into that folder, or write the embedded scene with "
             "cvpr24.pipelines.ltm.scene.write_scene_folder, and point the ltm data root at it")
EMBEDDED_FIX = "delete the scene folder and write the embedded garden-lite scene again (write_scene_folder)"


# ============================================================================================ array backends
class _NumpyOps:
    sqrt, sin, cos, abs, floor = np.sqrt, np.sin, np.cos, np.abs, np.floor
    minimum, maximum, where = np.minimum, np.maximum, np.where

    @staticmethod
    def clamp(x: Any, lo: float | None = None, hi: float | None = None) -> Any:
        return np.clip(x, lo, hi)

    @staticmethod
    def stack(xs: Sequence[Any]) -> Any:
        return np.stack(xs, -1)


class _TorchOps:
    def __init__(self) -> None:
        import torch

        self.sqrt, self.sin, self.cos, self.abs, self.floor = torch.sqrt, torch.sin, torch.cos, torch.abs, torch.floor
        self.minimum, self.maximum, self.where = torch.minimum, torch.maximum, torch.where
        self._torch = torch

    def clamp(self, x: Any, lo: float | None = None, hi: float | None = None) -> Any:
        return self._torch.clamp(x, min=lo, max=hi)

    def stack(self, xs: Sequence[Any]) -> Any:
        return self._torch.stack(list(xs), -1)


_NP = _NumpyOps()
_TORCH: _TorchOps | None = None


def _ops(x: Any) -> Any:
    global _TORCH
    if isinstance(x, np.ndarray | float | int | np.number):
        return _NP
    if type(x).__module__.startswith("torch"):
        if _TORCH is None:
            _TORCH = _TorchOps()
        return _TORCH
    raise TypeError(f"expected numpy arrays (or numbers) or torch tensors, got {type(x).__name__}")


def _length(o: Any, x: Any, y: Any, z: Any | None = None) -> Any:
    return o.sqrt(x * x + y * y + (z * z if z is not None else 0.0))


# ============================================================================================ the scene
def _default_stems() -> tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...]:
    return (((0.41, 0.15, -0.40), (0.47, 0.44, -0.37)),
            ((0.39, 0.15, -0.41), (0.34, 0.41, -0.43)),
            ((0.40, 0.15, -0.39), (0.41, 0.46, -0.47)))


@dataclass(eq=False)
class GardenLite:
    """The analytic garden-lite scene. ``sdf`` / ``components`` take points ``(..., 3)`` as a numpy array or a torch
    tensor; colours (:meth:`albedo`, :meth:`shade`, :meth:`sky_color`) take numpy arrays."""

    seed: int = 0
    stem_radius: float = 0.008
    stems: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = field(
        default_factory=_default_stems)
    ground_amp: float = 0.02
    sphere_c: tuple[float, float, float] = (0.25, 0.18, 0.1)
    sphere_r: float = 0.18
    torus_c: tuple[float, float, float] = (-0.3, 0.195, 0.0)
    torus_big: float = 0.15
    torus_small: float = 0.045
    table_c: tuple[float, float, float] = (0.0, 0.285, -0.35)
    table_half: tuple[float, float, float] = (0.25, 0.015, 0.15)
    table_round: float = 0.005
    leg_xz: tuple[float, float] = (0.22, 0.12)
    leg_r: float = 0.025
    leg_y: tuple[float, float] = (-0.05, 0.275)
    vase_c: tuple[float, float] = (0.4, -0.4)
    vase_r: float = 0.06
    vase_top: float = 0.2
    vase_bulb_r: float = 0.09
    vase_k: float = 0.05
    post_xz: float = 0.7
    post_half: tuple[float, float, float] = (0.02, 0.17, 0.02)
    post_cy: float = 0.13
    bg_radius: float = 12.0
    n_hills: int = 5
    hills: np.ndarray = field(init=False)  # (n_hills, 4): cx, cy, cz, r
    mountain: np.ndarray = field(init=False)  # (4, 3): frequency (integer), amplitude (rad), phase

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        az = (np.arange(self.n_hills) + rng.uniform(-0.3, 0.3, self.n_hills)) * 2 * np.pi / self.n_hills
        dist = rng.uniform(5.0, 9.0, self.n_hills)
        r = np.minimum(rng.uniform(2.0, 4.0, self.n_hills), dist - 2.5)
        sink = rng.uniform(0.4, 0.7, self.n_hills)
        self.hills = np.stack([dist * np.cos(az), -sink * r, dist * np.sin(az), r], 1)
        freq = np.array([2.0, 5.0, 11.0, 23.0])
        self.mountain = np.stack([freq, np.array([0.035, 0.02, 0.01, 0.005]), rng.uniform(0, 2 * np.pi, 4)], 1)

    # ------------------------------------------------------------------------------------ distances
    def ground_height(self, x: Any, z: Any) -> Any:
        o = _ops(x)
        return self.ground_amp * o.sin(6.0 * x) * o.cos(5.0 * z)

    def components(self, p: Any) -> dict[str, Any]:
        """Signed distance of each part (the :data:`MATERIALS` order) at points ``(..., 3)``."""
        o = _ops(p)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        a = self.ground_amp
        hx = a * 6.0 * o.cos(6.0 * x) * o.cos(5.0 * z)
        hz = -a * 5.0 * o.sin(6.0 * x) * o.sin(5.0 * z)
        ground = (y - a * o.sin(6.0 * x) * o.cos(5.0 * z)) / o.sqrt(1.0 + hx * hx + hz * hz)

        sc = self.sphere_c
        sphere = _length(o, x - sc[0], y - sc[1], z - sc[2]) - self.sphere_r

        tc = self.torus_c
        qx, qy, qz = x - tc[0], y - tc[1], z - tc[2]
        ring = _length(o, qx, qy) - self.torus_big
        torus = _length(o, ring, qz) - self.torus_small

        c, h, rr = self.table_c, self.table_half, self.table_round
        top = _round_box(o, x - c[0], y - c[1], z - c[2], h, rr)
        lx, lz = o.abs(x - c[0]) - self.leg_xz[0], o.abs(z - c[2]) - self.leg_xz[1]
        ly0, ly1 = self.leg_y
        legs = _capped_cylinder_y(o, lx, y - 0.5 * (ly0 + ly1), lz, self.leg_r, 0.5 * (ly1 - ly0))
        table = o.minimum(top, legs)

        vx, vz = x - self.vase_c[0], z - self.vase_c[1]
        neck = _capped_cylinder_y(o, vx, y - 0.5 * self.vase_top, vz, self.vase_r, 0.5 * self.vase_top)
        bulb = _length(o, vx, y - self.vase_bulb_r, vz) - self.vase_bulb_r
        vase = _smooth_min(o, neck, bulb, self.vase_k)

        stems = None
        for base, tip in self.stems:
            d = _capsule(o, x, y, z, base, tip, self.stem_radius)
            stems = d if stems is None else o.minimum(stems, d)

        px, pz = o.abs(x) - self.post_xz, o.abs(z) - self.post_xz
        posts = _round_box(o, px, y - self.post_cy, pz, self.post_half, 0.0)

        hills = None
        for hcx, hcy, hcz, hr in self.hills.tolist():
            d = _length(o, x - hcx, y - hcy, z - hcz) - hr
            hills = d if hills is None else o.minimum(hills, d)

        sky = self.bg_radius - _length(o, x, y, z)
        return dict(zip(MATERIALS, (ground, sphere, torus, table, vase, stems, posts, hills, sky), strict=True))

    def sdf(self, p: Any) -> Any:
        """Scene SDF at points ``(..., 3)`` (numpy or torch; torch keeps the autograd graph)."""
        o = _ops(p)
        out = None
        for d in self.components(p).values():
            out = d if out is None else o.minimum(out, d)
        return out

    def sdf_torch(self, p: Any) -> Any:
        """The torch version (same formulas): ``p`` a float tensor ``(..., 3)``."""
        if isinstance(p, np.ndarray):
            raise TypeError("sdf_torch takes a torch tensor; use sdf for numpy arrays")
        return self.sdf(p)

    def material(self, p: np.ndarray) -> np.ndarray:
        """Material id (index into :data:`MATERIALS`) of the nearest part at numpy points ``(..., 3)``."""
        return np.argmin(np.stack(list(self.components(p).values()), -1), axis=-1)

    def normal(self, p: np.ndarray, h: float = 1e-4) -> np.ndarray:
        """Unit SDF gradient by central differences (step ``h``) at numpy points ``(..., 3)``."""
        g = np.empty(p.shape, dtype=np.float64)
        for k in range(3):
            e = np.zeros(3)
            e[k] = h
            g[..., k] = self.sdf(p + e) - self.sdf(p - e)
        return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)

    # ------------------------------------------------------------------------------------ appearance
    def sky_color(self, dirs: np.ndarray) -> np.ndarray:
        """Colour of the unlit background sphere / of a missed ray in world direction ``dirs (..., 3)``."""
        d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
        elev = np.arcsin(np.clip(d[..., 1], -1.0, 1.0))
        az = np.arctan2(d[..., 2], d[..., 0])
        ridge = 0.05 + sum(a * np.sin(f * az + ph) for f, a, ph in self.mountain.tolist())
        t = np.sqrt(np.clip(elev / (0.5 * np.pi), 0.0, 1.0))[..., None]
        sky = (1 - t) * np.array([0.78, 0.85, 0.93]) + t * np.array([0.22, 0.42, 0.80])
        m = np.clip(elev / 0.15, 0.0, 1.0)[..., None]
        mountain = (1 - m) * np.array([0.26, 0.28, 0.33]) + m * np.array([0.42, 0.45, 0.55])
        below = np.array([0.30, 0.30, 0.27])
        out = np.where((elev < ridge)[..., None], mountain, sky)
        return np.where((elev < 0.0)[..., None], below, out)

    def albedo(self, p: np.ndarray, mat: np.ndarray) -> np.ndarray:
        """Albedo in [0, 1] ``(..., 3)`` of numpy points ``p`` of materials ``mat``."""
        out = np.zeros(p.shape[:-1] + (3,))
        painters: dict[int, Callable[[np.ndarray], np.ndarray]] = {
            0: self._ground_albedo, 1: self._sphere_albedo, 2: self._torus_albedo, 3: self._table_albedo,
            4: lambda q: np.broadcast_to([0.12, 0.28, 0.62], q.shape),
            5: lambda q: np.broadcast_to([0.18, 0.45, 0.12], q.shape),
            6: lambda q: np.broadcast_to([0.45, 0.40, 0.36], q.shape),
            7: self._hill_albedo, 8: self.sky_color,
        }
        for m, paint in painters.items():
            sel = mat == m
            if np.any(sel):
                out[sel] = paint(p[sel])
        return out

    def _ground_albedo(self, p: np.ndarray) -> np.ndarray:
        checker = (np.floor(p[:, 0] / 0.04) + np.floor(p[:, 2] / 0.04)) % 2.0
        t = np.clip(0.5 * checker + 0.5 * _fbm(p, 10.0, 3), 0.0, 1.0)[:, None]
        return (1 - t) * np.array([0.22, 0.42, 0.14]) + t * np.array([0.46, 0.33, 0.18])

    def _sphere_albedo(self, p: np.ndarray) -> np.ndarray:
        t = (p[:, 1] - (self.sphere_c[1] - self.sphere_r)) / (2 * self.sphere_r)
        return 0.5 + 0.45 * np.cos(2 * np.pi * (0.6 * t[:, None] + np.array([0.0, 0.33, 0.67])))

    def _torus_albedo(self, p: np.ndarray) -> np.ndarray:
        q = p - np.asarray(self.torus_c)
        phi = np.arctan2(q[:, 2], np.hypot(q[:, 0], q[:, 1]) - self.torus_big)  # angle around the tube
        n = round(2 * np.pi * self.torus_small / 0.03)  # stripes of period ~0.03 along the tube's circumference
        stripe = np.floor((phi + np.pi) / (2 * np.pi) * 2 * n) % 2.0
        return np.where(stripe[:, None] > 0.5, np.array([0.85, 0.20, 0.15]), np.array([0.95, 0.90, 0.80]))

    def _table_albedo(self, p: np.ndarray) -> np.ndarray:
        rho = np.hypot(p[:, 0] - self.table_c[0], p[:, 2] - self.table_c[2])
        t = (0.5 + 0.5 * np.sin(2 * np.pi * rho / 0.02))[:, None]
        return (1 - t) * np.array([0.60, 0.40, 0.20]) + t * np.array([0.38, 0.22, 0.10])

    def _hill_albedo(self, p: np.ndarray) -> np.ndarray:
        t = _fbm(p, 0.6, 3)[:, None]
        return (1 - t) * np.array([0.26, 0.40, 0.17]) + t * np.array([0.47, 0.48, 0.30])

    def shade(self, p: np.ndarray, n: np.ndarray, dirs: np.ndarray, mat: np.ndarray) -> np.ndarray:
        """Outgoing colour ``(..., 3)`` in [0, 1] at surface points ``p`` with unit normals ``n``, seen along ray
        directions ``dirs`` (from the camera towards the point), of materials ``mat``."""
        alb = self.albedo(p, mat)
        ndl = np.clip(np.sum(n * LIGHT, -1), 0.0, None)[..., None]
        col = alb * (0.35 + 0.65 * ndl)
        v = -dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
        hv = LIGHT + v
        hv /= np.maximum(np.linalg.norm(hv, axis=-1, keepdims=True), 1e-12)
        spec = 0.5 * np.clip(np.sum(n * hv, -1), 0.0, None) ** 40
        glossy = np.isin(mat, GLOSSY)
        col = col + np.where(glossy, spec, 0.0)[..., None]
        col = np.where((mat == SKY)[..., None], alb, col)
        return np.clip(col, 0.0, 1.0)


def _round_box(o: Any, x: Any, y: Any, z: Any, half: Sequence[float], rad: float) -> Any:
    qx, qy, qz = o.abs(x) - (half[0] - rad), o.abs(y) - (half[1] - rad), o.abs(z) - (half[2] - rad)
    outside = _length(o, o.clamp(qx, 0.0), o.clamp(qy, 0.0), o.clamp(qz, 0.0))
    inside = o.clamp(o.maximum(qx, o.maximum(qy, qz)), None, 0.0)
    return outside + inside - rad


def _capped_cylinder_y(o: Any, x: Any, y: Any, z: Any, r: float, half_h: float) -> Any:
    dr, dy = _length(o, x, z) - r, o.abs(y) - half_h
    return o.clamp(o.maximum(dr, dy), None, 0.0) + _length(o, o.clamp(dr, 0.0), o.clamp(dy, 0.0))


def _capsule(o: Any, x: Any, y: Any, z: Any, a: Sequence[float], b: Sequence[float], r: float) -> Any:
    bax, bay, baz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    pax, pay, paz = x - a[0], y - a[1], z - a[2]
    h = o.clamp((pax * bax + pay * bay + paz * baz) / (bax * bax + bay * bay + baz * baz), 0.0, 1.0)
    return _length(o, pax - bax * h, pay - bay * h, paz - baz * h) - r


def _smooth_min(o: Any, a: Any, b: Any, k: float) -> Any:
    h = o.clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _hash3(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    s = np.sin(i * 127.1 + j * 311.7 + k * 74.7) * 43758.5453
    return s - np.floor(s)


def _value_noise(p: np.ndarray) -> np.ndarray:
    i = np.floor(p)
    f = p - i
    u = f * f * (3 - 2 * f)
    out = np.zeros(p.shape[:-1])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((u[..., 0] if dx else 1 - u[..., 0]) * (u[..., 1] if dy else 1 - u[..., 1])
                     * (u[..., 2] if dz else 1 - u[..., 2]))
                out += w * _hash3(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz)
    return out


def _fbm(p: np.ndarray, freq: float, octaves: int) -> np.ndarray:
    total, norm, amp = np.zeros(p.shape[:-1]), 0.0, 1.0
    for k in range(octaves):
        total += amp * _value_noise(p * freq * 2**k)
        norm += amp
        amp *= 0.5
    return total / norm


# ============================================================================================ sphere tracing
@dataclass
class TraceResult:
    t: np.ndarray  # ray parameter of the hit (or where the march stopped)
    hit: np.ndarray  # bool
    steps: np.ndarray  # SDF evaluations per ray
    capped: np.ndarray  # bool: still marching when the step cap was reached (counted as a miss)


def sphere_trace(sdf: Callable[[np.ndarray], np.ndarray], origins: np.ndarray, dirs: np.ndarray, *,
                 max_steps: int = 256, step_scale: float = 0.8, eps: float = 5e-4, max_dist: float = 30.0,
                 t0: float = 0.0) -> TraceResult:
    """March rays ``origins + t dirs`` (unit dirs, ``(R, 3)``) until ``sdf < eps max(1, t)`` (a hit), ``t >
    max_dist`` or ``max_steps`` evaluations. Vectorised over the rays still marching."""
    origins, dirs = np.asarray(origins, dtype=np.float64), np.asarray(dirs, dtype=np.float64)
    n = len(origins)
    t = np.full(n, float(t0))
    hit = np.zeros(n, dtype=bool)
    steps = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    for _ in range(max_steps):
        if not active.size:
            break
        ta = t[active]
        d = sdf(origins[active] + ta[:, None] * dirs[active])
        steps[active] += 1
        done = d < eps * np.maximum(1.0, ta)
        hit[active[done]] = True
        ta = ta + step_scale * d
        t[active[~done]] = ta[~done]
        active = active[~done & (ta <= max_dist)]
    capped = np.zeros(n, dtype=bool)
    capped[active] = True
    return TraceResult(t, hit, steps, capped)


# ============================================================================================ cameras, rendering
@dataclass(frozen=True)
class GardenLiteConfig:
    """Sizes of the generated scene (spec 8 defaults; ``smoke()`` for 48 x 36). All [DESIGN]."""

    n_views: int = 48
    width: int = 96
    height: int = 72
    fovy_deg: float = 55.0
    rings: tuple[tuple[float, float], ...] = ((1.5, 0.5), (2.2, 1.0))  # (radius, height), interleaved azimuths
    target: tuple[float, float, float] = (0.0, 0.15, 0.0)
    target_jitter: float = 0.05
    azimuth_jitter_deg: float = 3.0
    supersample: int = 2
    max_steps: int = 256  # spec 8: 160; rays grazing the ground near the horizon need ~200 (see the docstring)
    step_scale: float = 0.8
    eps: float = 5e-4
    max_dist: float = 30.0
    downscales: tuple[int, ...] = (2,)
    sparse_points: int = 2000
    surface_samples: int = 200_000
    surface_resolution: int = 256
    surface_extent: float = 0.9
    test_every: int = 8
    seed: int = 0
    stem_radius: float = 0.008

    @classmethod
    def smoke(cls, **kw: Any) -> GardenLiteConfig:
        return cls(**{"width": 48, "height": 36, **kw})

    def __post_init__(self) -> None:
        for k in self.downscales:
            if k < 2 or self.width % k or self.height % k:
                raise ValueError(f"downscale {k} must be >= 2 and divide the image size {self.width}x{self.height}")
        if self.n_views < 1 or self.width < 1 or self.height < 1 or self.supersample < 1:
            raise ValueError("n_views, width, height and supersample must be positive")


def orbit_cameras(cfg: GardenLiteConfig) -> Cameras:
    """The 360-degree orbit of spec 8: views alternate between the rings (interleaved azimuths, +-jitter), each
    looking at ``target`` + a uniform offset in [-target_jitter, target_jitter]^3; pinhole, square pixels, vertical
    FoV ``fovy_deg``, principal point at the image centre. Names ``view_000.png``... (sorted = view order)."""
    rng = np.random.default_rng(cfg.seed + 1)
    n_rings = len(cfg.rings)
    per_ring = math.ceil(cfg.n_views / n_rings)
    c2w, names = [], []
    for k in range(cfg.n_views):
        ring, j = k % n_rings, k // n_rings
        radius, height = cfg.rings[ring]
        az = 2 * np.pi * (j + ring / n_rings) / per_ring + np.radians(rng.uniform(-1, 1) * cfg.azimuth_jitter_deg)
        eye = np.array([radius * np.cos(az), height, radius * np.sin(az)])
        target = np.asarray(cfg.target) + rng.uniform(-cfg.target_jitter, cfg.target_jitter, 3)
        c2w.append(look_at_c2w(eye, target))
        names.append(f"view_{k:03d}.png")
    f = 0.5 * cfg.height / math.tan(math.radians(cfg.fovy_deg) / 2)
    return Cameras(names, cfg.width, cfg.height, f, f, cfg.width / 2, cfg.height / 2, np.stack(c2w))


@dataclass
class RenderedView:
    rgb: np.ndarray  # (H, W, 3) float64 in [0, 1], supersampled
    depth: np.ndarray  # (H, W) z-depth of the pixel-centre ray, 0 = no hit
    normal: np.ndarray  # (H, W, 3) world normals, 0 = no hit
    material: np.ndarray  # (H, W) int, -1 = no hit
    hit: np.ndarray  # (H, W) bool
    misses: int  # supersampled rays that hit nothing (step cap or max distance)
    capped: int  # of which stopped by the step cap


def _shade_rays(scene: GardenLite, origins: np.ndarray, dirs: np.ndarray, tr: TraceResult) -> np.ndarray:
    col = scene.sky_color(dirs)
    if np.any(tr.hit):
        p = origins[tr.hit] + tr.t[tr.hit, None] * dirs[tr.hit]
        col[tr.hit] = scene.shade(p, scene.normal(p), dirs[tr.hit], scene.material(p))
    return col


def render_view(scene: GardenLite, cams: Cameras, i: int, cfg: GardenLiteConfig) -> RenderedView:
    """Sphere-trace view ``i``: ``cfg.supersample``^2 rays per pixel on a regular sub-pixel grid (averaged) for the
    colour, one ray through the pixel centre for depth / normal / material."""
    h, w, s = int(cams.height[i]), int(cams.width[i]), cfg.supersample
    trace = dict(max_steps=cfg.max_steps, step_scale=cfg.step_scale, eps=cfg.eps, max_dist=cfg.max_dist)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    sub = (np.arange(s) + 0.5) / s
    u = cols[:, :, None, None] + sub[None, None, None, :]
    v = rows[:, :, None, None] + sub[None, None, :, None]
    u, v = np.broadcast_arrays(u, v)  # (H, W, s, s): sub-row, sub-column
    o, d = cams.pixel_rays(i, u.reshape(-1), v.reshape(-1))
    tr = sphere_trace(scene.sdf, o, d, **trace)
    rgb = _shade_rays(scene, o, d, tr).reshape(h, w, s * s, 3).mean(2)

    oc, dc = cams.pixel_rays(i, (cols + 0.5).reshape(-1), (rows + 0.5).reshape(-1))
    tc = sphere_trace(scene.sdf, oc, dc, **trace)
    depth = np.zeros(h * w)
    normal = np.zeros((h * w, 3))
    mat = np.full(h * w, -1, dtype=np.int64)
    if np.any(tc.hit):
        p = oc[tc.hit] + tc.t[tc.hit, None] * dc[tc.hit]
        depth[tc.hit] = tc.t[tc.hit] * (dc[tc.hit] @ cams.forward[i])
        normal[tc.hit] = scene.normal(p)
        mat[tc.hit] = scene.material(p)
    return RenderedView(rgb, depth.reshape(h, w), normal.reshape(h, w, 3), mat.reshape(h, w),
                        tc.hit.reshape(h, w), int((~tr.hit).sum()), int(tr.capped.sum()))


# ============================================================================================ ground-truth surface
def surface_samples(scene: GardenLite, n: int, *, resolution: int = 256, extent: float = 0.9,
                    y_range: tuple[float, float] = (-0.08, 0.52), seed: int = 0, tol: float = 1e-5,
                    chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted samples (float64 points, unit normals) of the scene's surfaces inside |x|inf <= extent:
    marching cubes of the SDF on a grid of spacing 2 extent / resolution (y only over ``y_range``, which holds every
    inner surface; the far field lies outside), triangles drawn by area, uniform barycentrics, then Newton steps
    ``p -= s(p) grad s / |grad s|^2`` onto the zero level set; samples that do not reach |s| < tol are redrawn."""
    from skimage.measure import marching_cubes

    step = 2.0 * extent / resolution
    xs = np.linspace(-extent, extent, resolution + 1)
    ny = int(math.ceil((y_range[1] - y_range[0]) / step)) + 1
    ys = y_range[0] + step * np.arange(ny)
    vol = np.empty((len(xs), ny, len(xs)), dtype=np.float32)
    per = max(1, chunk // (ny * len(xs)))
    for a in range(0, len(xs), per):
        gx, gy, gz = np.meshgrid(xs[a:a + per], ys, xs, indexing="ij")
        vol[a:a + per] = scene.sdf(np.stack([gx, gy, gz], -1))
    verts, faces, _, _ = marching_cubes(vol, 0.0, spacing=(step, step, step))
    verts = verts.astype(np.float64) + np.array([-extent, y_range[0], -extent])
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    out_p, out_n, have = [], [], 0
    for _ in range(10):
        m = int((n - have) * 1.1) + 16
        f = rng.choice(len(faces), size=m, p=area / area.sum())
        r1, r2 = np.sqrt(rng.random(m)), rng.random(m)
        p = ((1 - r1)[:, None] * tri[f, 0] + (r1 * (1 - r2))[:, None] * tri[f, 1] + (r1 * r2)[:, None] * tri[f, 2])
        for _ in range(4):
            g = sdf_gradient(scene, p)
            p = p - (scene.sdf(p) / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
        ok = (np.abs(scene.sdf(p)) < tol) & (np.abs(p).max(1) <= extent)
        out_p.append(p[ok])
        out_n.append(scene.normal(p[ok]))
        have += int(ok.sum())
        if have >= n:
            break
    pts, nrm = np.concatenate(out_p)[:n], np.concatenate(out_n)[:n]
    if len(pts) < n:
        raise RuntimeError(f"surface_samples: only {len(pts)} of {n} samples reached |sdf| < {tol}")
    return pts, nrm


def sdf_gradient(scene: GardenLite, p: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of the scene SDF at points p (n, 3)."""
    g = np.empty_like(p)
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        g[:, k] = (scene.sdf(p + e) - scene.sdf(p - e)) / (2 * h)
    return g


# ============================================================================================ generation
@dataclass
class GardenLiteData:
    """Everything :func:`write_scene_folder` writes."""

    config: GardenLiteConfig
    cameras: Cameras  # with near / far
    images: np.ndarray  # (N, H, W, 3) uint8
    downscaled: dict[int, np.ndarray]  # k -> (N, H/k, W/k, 3) uint8
    depth: np.ndarray  # (N, H, W) float32
    normal: np.ndarray  # (N, H, W, 3) float32
    points: Points3D
    observations: list[tuple[np.ndarray, np.ndarray]]  # per view: xys (K, 2), point3D ids (K,)
    surface_points: np.ndarray  # (M, 3) float32
    surface_normals: np.ndarray  # (M, 3) float32
    stats: dict[str, Any]


def _box_downscale(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img.reshape(h // k, k, w // k, k, -1).mean(axis=(1, 3))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _sparse_points(cams: Cameras, rgb: np.ndarray, depth: np.ndarray, material: np.ndarray, n: int,
                   seed: int) -> tuple[Points3D, list[tuple[np.ndarray, np.ndarray]]]:
    """``n`` pixel-centre hits (sky excluded) of random views as a COLMAP point cloud with tracks: a point is seen by
    every view it projects into whose depth map agrees within 1 % + 2 mm."""
    rng = np.random.default_rng(seed + 2)
    views, pix = np.nonzero(((material >= 0) & (material != SKY)).reshape(len(cams), -1))
    if len(views) == 0 or n == 0:
        return Points3D.empty(), [(np.zeros((0, 2)), np.zeros(0, np.int64)) for _ in range(len(cams))]
    pick = rng.choice(len(views), size=min(n, len(views)), replace=False)
    views, pix = views[pick], pix[pick]
    h, w = depth.shape[1:]
    r, c = pix // w, pix % w
    xyz = np.empty((len(pick), 3))
    for i in np.unique(views):
        sel = views == i
        o, d = cams.pixel_rays(int(i), c[sel] + 0.5, r[sel] + 0.5)
        t = depth[i, r[sel], c[sel]] / (d @ cams.forward[i])
        xyz[sel] = o + t[:, None] * d
    colour = rgb[views, r, c]
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(pick))]
    obs_xy: list[list[np.ndarray]] = [[] for _ in range(len(cams))]
    obs_id: list[list[int]] = [[] for _ in range(len(cams))]
    for i in range(len(cams)):
        uv, z = cams.project(i, xyz)
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (z > 1e-6) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        ref = np.zeros(len(xyz))
        ref[inside] = depth[i, row[inside], col[inside]]
        seen = (inside & (np.abs(z - ref) < 0.01 * z + 2e-3)) | (views == i)
        for k in np.flatnonzero(seen):
            tracks[k].append((i + 1, len(obs_id[i])))
            obs_xy[i].append(uv[k])
            obs_id[i].append(k + 1)
    points = Points3D.from_tracks(np.arange(1, len(pick) + 1), xyz, colour, np.zeros(len(pick)), tracks)
    obs = [(np.asarray(obs_xy[i]).reshape(-1, 2), np.asarray(obs_id[i], dtype=np.int64)) for i in range(len(cams))]
    return points, obs


def generate_garden_lite(cfg: GardenLiteConfig | None = None, scene: GardenLite | None = None) -> GardenLiteData:
    """Render every view, the downscaled copies, the sparse points and the ground-truth surface samples."""
    cfg = cfg or GardenLiteConfig()
    scene = scene or GardenLite(seed=cfg.seed, stem_radius=cfg.stem_radius)
    t_start = time.perf_counter()
    cams = orbit_cameras(cfg)
    n, h, w = cfg.n_views, cfg.height, cfg.width
    rgb = np.empty((n, h, w, 3))
    depth, normal = np.empty((n, h, w), np.float32), np.empty((n, h, w, 3), np.float32)
    material = np.empty((n, h, w), np.int64)
    misses = capped = 0
    for i in range(n):
        view = render_view(scene, cams, i, cfg)
        rgb[i], depth[i], normal[i], material[i] = view.rgb, view.depth, view.normal, view.material
        misses, capped = misses + view.misses, capped + view.capped
    t_render = time.perf_counter() - t_start
    valid = [depth[i][depth[i] > 0] for i in range(n)]
    cams.near = np.array([np.percentile(v, 0.1) if v.size else 0.1 for v in valid])
    cams.far = np.array([np.percentile(v, 99.9) if v.size else cfg.max_dist for v in valid])
    images = _to_uint8(rgb)
    downscaled = {k: _to_uint8(np.stack([_box_downscale(im, k) for im in rgb])) for k in cfg.downscales}
    t0 = time.perf_counter()
    points, obs = _sparse_points(cams, images, depth, material, cfg.sparse_points, cfg.seed)
    t_points = time.perf_counter() - t0
    t0 = time.perf_counter()
    surf_p, surf_n = surface_samples(scene, cfg.surface_samples, resolution=cfg.surface_resolution,
                                     extent=cfg.surface_extent, seed=cfg.seed + 3)
    t_surface = time.perf_counter() - t0
    hit_counts = np.bincount(material[material >= 0].ravel(), minlength=len(MATERIALS))
    stats = {
        "rays_missed": misses, "rays_step_capped": capped, "rays_total": n * h * w * cfg.supersample**2,
        "pixel_hits_per_material": dict(zip(MATERIALS, hit_counts.tolist(), strict=True)),
        "sparse_points": len(points), "mean_track_length": float(np.diff(points.track_offsets).mean())
        if len(points) else 0.0,
        "seconds": {"render": round(t_render, 3), "sparse_points": round(t_points, 3),
                    "surface_samples": round(t_surface, 3), "total": round(time.perf_counter() - t_start, 3)},
    }
    log.info("garden-lite: %d views %dx%d rendered in %.1f s, %d surface samples in %.1f s", n, w, h, t_render,
             len(surf_p), t_surface)
    return GardenLiteData(cfg, cams, images, downscaled, depth, normal, points, obs, surf_p.astype(np.float32),
                          surf_n.astype(np.float32), stats)


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, format="PNG", compress_level=1)


def write_scene_folder(root: str | Path, data: GardenLiteData | None = None, *,
                       config: GardenLiteConfig | None = None) -> Path:
    """Write the garden-lite scene (``data``, or generated from ``config``) in the layout of the module docstring.
    Atomic: written into ``.<name>.tmp-<id>`` beside ``root`` and renamed into place last; on any error the
    temporary folder is removed and an existing ``root`` is left as it was."""
    from cvpr24.core.datasets import swap_in_folder

    root = Path(root)
    if data is None:
        data = generate_garden_lite(config)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        cams = data.cameras
        (tmp / "images").mkdir(parents=True)
        for i, name in enumerate(cams.names):
            _save_png(tmp / "images" / name, data.images[i])
        for k, imgs in data.downscaled.items():
            (tmp / f"images_{k}").mkdir()
            for i, name in enumerate(cams.names):
                _save_png(tmp / f"images_{k}" / name, imgs[i])
        write_model(colmap_from_cameras(cams, data.points, data.observations), tmp / "sparse" / "0")
        write_poses_bounds(tmp / "poses_bounds.npy", cams)
        write_transforms_json(tmp / "transforms.json", cams, image_dir="images")
        gt = tmp / "gt"
        (gt / "depth").mkdir(parents=True)
        (gt / "normal").mkdir()
        np.save(gt / "surface_points.npy", data.surface_points)
        np.save(gt / "surface_normals.npy", data.surface_normals)
        for i, name in enumerate(cams.names):
            stem = Path(name).stem
            np.save(gt / "depth" / f"{stem}.npy", data.depth[i])
            np.save(gt / "normal" / f"{stem}.npy", data.normal[i])
        meta = {"generator": "cvpr24.pipelines.ltm.scene (garden-lite)", "config": asdict(data.config),
                "stats": data.stats, "test_ids": list(range(0, len(cams), data.config.test_every)),
                "write_seconds": round(time.perf_counter() - t0, 3)}
        (gt / "scene.json").write_text(json.dumps(meta, indent=1))
        swap_in_folder(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote the garden-lite scene to %s in %.1f s", root, time.perf_counter() - t0)
    return root


# ============================================================================================ loading
@dataclass
class SceneData:
    """A validated scene folder. Cameras are sorted by image name and scaled to the loaded images."""

    root: Path
    source: str  # "colmap-bin" | "colmap-txt" | "poses_bounds" | "transforms"
    image_dir: Path
    cameras: Cameras
    images: np.ndarray  # (N, H, W, 3) uint8
    train_ids: np.ndarray
    test_ids: np.ndarray
    points_xyz: np.ndarray | None = None  # COLMAP sparse points (P, 3)
    points_rgb: np.ndarray | None = None  # (P, 3) uint8
    gt_surface_points: np.ndarray | None = None  # embedded scenes only
    gt_surface_normals: np.ndarray | None = None

    def gt_maps(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(depth, normal) of view ``i`` at the full resolution when the folder has ground truth, else None."""
        stem = Path(self.cameras.names[i]).stem
        d, nrm = self.root / "gt" / "depth" / f"{stem}.npy", self.root / "gt" / "normal" / f"{stem}.npy"
        return (np.load(d), np.load(nrm)) if d.is_file() and nrm.is_file() else None


def _list_images(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_EXTS)


def _read_cameras(root: Path, source: str) -> tuple[Cameras, str, np.ndarray | None, np.ndarray | None, str]:
    """(cameras, source name, points xyz, points rgb, image folder name relative to root)."""
    order = ["colmap", "poses_bounds", "transforms"] if source == "auto" else [source]
    if any(s not in ("colmap", "poses_bounds", "transforms") for s in order):
        raise ValueError(f"camera source must be 'auto', 'colmap', 'poses_bounds' or 'transforms', got {source!r}")
    for src in order:
        if src == "colmap":
            found = find_model(root / "sparse" / "0") or find_model(root / "sparse")
            if found is None:
                continue
            model = read_model(found[0])
            cams = cameras_from_colmap(model)
            pts = model.points3D
            xyz, rgb = (pts.xyz, pts.rgb) if len(pts) else (None, None)
            if xyz is not None and not np.all(np.isfinite(xyz)):
                raise DataValidationError(f"{found[0]}/points3D.{found[1]}: 3D points hold NaN or inf; "
                                          f"re-export or re-download the model")
            return cams, f"colmap-{found[1]}", xyz, rgb, "images"
        if src == "poses_bounds" and (root / "poses_bounds.npy").is_file():
            names = _list_images(root / "images")
            if not names:
                raise MissingDatasetError(f"{root / 'poses_bounds.npy'} needs the images in {root / 'images'} (its "
                                          f"rows follow their sorted names), and that folder has none: {SCENE_FIX}")
            return read_poses_bounds(root / "poses_bounds.npy", names), "poses_bounds", None, None, "images"
        if src == "transforms" and (root / "transforms.json").is_file():
            cams, files = read_transforms_json(root / "transforms.json")
            parents = {f.parent.resolve() for f in files}
            if len(parents) != 1:
                raise DataValidationError(f"{root / 'transforms.json'}: the frames' images are in several folders "
                                          f"({sorted(map(str, parents))}); one image folder is supported")
            folder = files[0].parent.resolve().relative_to(root.resolve()).as_posix()
            cams.names = [f.name for f in files]
            return cams, "transforms", None, None, folder
    looked = {"colmap": f"{root}/sparse/0/cameras.bin + images.bin (or .txt)",
              "poses_bounds": f"{root}/poses_bounds.npy", "transforms": f"{root}/transforms.json"}
    raise MissingDatasetError(f"no camera file in {root} (looked for {'; '.join(looked[s] for s in order)}): "
                              f"{SCENE_FIX}")


def load_scene_folder(root: str | Path, *, downscale: int = 1, source: str = "auto", test_every: int = 8,
                      fix: str = SCENE_FIX) -> SceneData:
    """Read and validate a scene folder (embedded or real, layout in the module docstring): cameras from ``source``
    ("auto": COLMAP, else poses_bounds.npy, else transforms.json), images from ``images`` (downscale 1) or
    ``images_<downscale>``, test views = every ``test_every``-th of the name-sorted list. Raises
    MissingDatasetError for a missing folder / camera file / image, DataValidationError (naming the file and
    ``fix``) for unreadable images, sizes that do not match the cameras, NaN / inf or malformed camera files."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(f"scene folder {root} not found: {fix}")
    cams, src, xyz, rgb, folder = _read_cameras(root, source)
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    if downscale > 1:
        if folder != "images":
            raise DataValidationError(f"{root}: downscale {downscale} needs the images in images/ (the cameras "
                                      f"list {folder}/); load with downscale 1")
        folder = f"images_{downscale}"
    image_dir = root / folder
    if not image_dir.is_dir():
        raise MissingDatasetError(f"image folder {image_dir} not found: {fix}" + (
            f" (or create it by downscaling images/ by {downscale}, or load with downscale 1)" if downscale > 1
            else ""))
    cams.validate(f"{root} ({src})", fix)
    files = check_image_files(cams.names, image_dir, f"{root} ({src})")
    imgs = [read_rgb(f, "image file", f"re-download or re-copy it ({fix})") for f in files]
    exp_w, exp_h = cams.width / downscale, cams.height / downscale
    for i, (f, im) in enumerate(zip(files, imgs, strict=True)):
        hh, ww = im.shape[:2]
        if abs(ww - exp_w[i]) > (0 if downscale == 1 else 1) or abs(hh - exp_h[i]) > (0 if downscale == 1 else 1):
            raise DataValidationError(f"image file {f} is {ww}x{hh} but the cameras ({src}) expect "
                                      f"{exp_w[i]:g}x{exp_h[i]:g} (camera size {cams.width[i]}x{cams.height[i]}"
                                      f"{f' / {downscale}' if downscale > 1 else ''}); the image or the camera file is "
                                      f"from another version of the scene: {fix}")
    sizes = {im.shape for im in imgs}
    if len(sizes) != 1:
        raise DataValidationError(f"the images in {image_dir} have different sizes {sorted(sizes)}; one size per "
                                  f"scene folder is supported: {fix}")
    h, w = imgs[0].shape[:2]
    if downscale > 1:
        cams = cams.resized(w, h)
    ids = np.arange(len(cams))
    test = ids[::test_every] if test_every > 0 else ids[:0]
    data = SceneData(root, src, image_dir, cams, np.stack(imgs), np.setdiff1d(ids, test), test, xyz, rgb)
    gt = root / "gt" / "surface_points.npy"
    if gt.is_file():
        data.gt_surface_points = _load_points(gt)
        nrm = root / "gt" / "surface_normals.npy"
        data.gt_surface_normals = _load_points(nrm) if nrm.is_file() else None
    return data


def _load_points(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataValidationError(f"{path} is not a readable .npy file ({exc}); {EMBEDDED_FIX}") from exc
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.all(np.isfinite(arr)):
        raise DataValidationError(f"{path}: expected finite (M, 3) points, got {arr.shape} {arr.dtype}"
                                  f"{' with NaN / inf' if arr.ndim == 2 and not np.all(np.isfinite(arr)) else ''}; "
                                  f"{EMBEDDED_FIX}")
    return arr

