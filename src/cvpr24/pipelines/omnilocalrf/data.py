"""OmniLocalRF data: the embedded procedural 360 street (spec section 8), its writer in the released folder layout
and the ONE loader that reads both the embedded scene and the authors' real / synthetic scenes (spec section 3).

Conventions are those of `camera.py` (used here, not re-derived): ERP W x H with W = 2H, pixel (i, j) = (column,
row) with centres at +0.5, OpenCV-like axes (x right, y DOWN, z forward), the centre column looks along +z and the
seam (column 0 / W-1) along -z; depth = distance along the unit ray; poses camera-to-world 4x4.

On-disk layout of one scene (`<datadir>`; what the official `OmniLocalRFDataset` reads, spec 3):

    images/<stem>.<ext>       frames, any extension OpenCV reads, sorted by file name; embedded: frame_%04d.png,
                              8-bit RGB PNG. Hidden files and non-image extensions are ignored (choice).
    depth/<stem>.png          monocular inverse-depth-like prior, 16-bit single-channel PNG, read as float32 raw
                              values and resized to the image size (INTER_AREA), as the code does. Embedded: the
                              ground-truth depth of the full frame (dynamic objects included) -> 1/depth -> a
                              random positive affine map -> x(1 + 5 % Gaussian noise) -> Gaussian blur sigma 1 px
                              (columns wrap) -> per-frame min-max to 0..65535 (DPT's writer does the same min-max),
                              spec 7(b). depth_source="gt" skips the affine map, the noise and the blur.
    flow_ds/fwd_<stem>.png    (frame_step 1) or fwd_step<k>_<stem>.png / bwd_step<k>_<stem>.png (frame_step k):
    flow_ds/bwd_<stem>.png    3-channel uint16 PNG written and read with OpenCV: array channels 0, 1 = flow x, y
                              * 256 + 32768 (truncated to uint16 as the code's `encode_flow`), channel 2 = 65535
                              where the forward-backward check passed (and the value fits), else 0; inside the
                              file the order is reversed (R = validity, G = flow y, B = flow x). fwd_<stem k> holds
                              the flow from frame k-1 to k, bwd_<stem k> the flow from k to k-1; frame 0's files
                              hold zero flow, all invalid. The loader gives frame i the fwd file named after frame
                              i+1 (the last frame wraps to frame 0) and the bwd file named after frame i; the
                              ENCODED image is resized to the image size (INTER_AREA) before decoding and the flow
                              multiplied by image_h / flow_h, as the code does. Embedded: OpenCV DIS flow
                              (`flow.dis_flow`, seam-padded) at 0.5 scale (INTER_CUBIC downsizing, as
                              `run_flow.py`) with `flow.fwd_bwd_consistency`; frame 0's zero flow is written at the
                              same 0.5 scale (the code writes it at full size; the loader rescales either).
    masks/<stem>.png          optional, per frame: nonzero = keep (multiplies the loss weight). Not written for
                              the embedded scene (the method must find the dynamic objects itself).
    eval_masks/<stem>.png     optional: manual masks of test frames, nonzero = dynamic (excluded from metrics);
                              the spec's choice for where the real data keeps them. Without the folder the loader
                              falls back to masks/ of the test frames (dynamic = mask == 0). Embedded: the true
                              dynamic mask of every test frame (index % test_frame_every == 0), uint8 0/255.
    traj.csv                  optional: one line per image (ALL images, before frame_step), space-separated: a
                              leading token (ignored; embedded writes the frame index) then the 16 numbers of the
                              world-to-camera 4x4, row-major. Embedded: the ground-truth poses, written with
                              repr() so they read back exactly. Read as float64 (the code uses float32).
    gt/                       ground truth the real data does not have; read only when the folder exists, and
                              then it must be complete (choice: the spec puts these at the top level; they are
                              kept apart here so a real scene and an embedded one differ only by gt/). Spec 8's
                              names are kept inside it:
      gt/static/<stem>.png    the static twin: same camera, dynamic objects removed (evaluation GT), 8-bit RGB
      gt/dyn_mask/<stem>.png  true dynamic pixels, uint8 single-channel OBJECT IDS: 0 static, 1 photographer,
                              2.. pedestrians (nonzero = dynamic; `OBJECT_NAMES`), choice: ids instead of 0/255 so
                              the photographer region can be scored on its own (spec 9 check 5)
      gt/gt_depth/<stem>.npy  float32 (H, W) true depth (distance along the ray) of the dynamic scene
      gt/gt_depth_static/<stem>.npy   float32 (H, W) true depth of the static scene (added: spec 8 has one depth)
      gt/gt_poses.json        {"convention": ..., "stems": [...], "c2w": [4x4 row-major per stem]} camera-to-world
      gt/scene.json           the generator's parameters and seed (informational, not read)

The sky has no depth: it gets `SKY_DEPTH` (= camera.FAR = 1000), so ground-truth depth is always finite.

`write_street` writes the dynamic video (`STREET_ON` by default) and, optionally, its static-only twin
(`STREET_OFF`, spec 8: "a street_off twin for the 'static only' rows"), both in the layout above. The twin's
images are the static renders, its priors are computed from them, its gt/dyn_mask is all zero, and its eval_masks
are the DYNAMIC video's masks of the same test frames (choice: the same pixels can be excluded in both rows).

Writes are atomic: everything goes to a hidden temporary folder next to the destination and is renamed into place
(`cvpr24.core.datasets.swap_in_folder`) only when complete, so a killed or failed ingest leaves no half-written
scene (a hard kill may leave a hidden `.<name>.tmp-*` folder, which the loader never reads).

The loader validates everything before training starts and raises `MissingDatasetError` (missing folder / file,
naming it and how to get or produce it) or `DataValidationError` (frame counts that disagree between folders,
images of different sizes, an ERP aspect other than 2:1, NaN/inf depth, undecodable files, a bad traj.csv ...),
each naming the file and the fix. Not reproduced from the code: `subsequence` (its slice re-applies frame_step).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.datasets import swap_in_folder
from cvpr24.core.images import read_rgb
from cvpr24.core.ingest import missing_dataset
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.omnilocalrf.camera import FAR, erp_pixel_to_direction

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- constants
IMAGE_DIR, DEPTH_DIR, FLOW_DIR, MASK_DIR, EVAL_MASK_DIR, TRAJ_FILE = (
    "images", "depth", "flow_ds", "masks", "eval_masks", "traj.csv")
GT_DIR = "gt"
GT_STATIC, GT_DYN_MASK, GT_DEPTH, GT_DEPTH_STATIC, GT_POSES, GT_SCENE = (
    "static", "dyn_mask", "gt_depth", "gt_depth_static", "gt_poses.json", "scene.json")
STREET_ON, STREET_OFF = "street_on", "street_off"
STEM_FORMAT = "frame_{:04d}"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".exr", ".jp2")
SKY_DEPTH = float(FAR)
FLOW_OFFSET, FLOW_SCALE_FACTOR, FLOW_VALID = 2 ** 15, 2 ** 8, 2 ** 16 - 1
OBJECT_NAMES = ("static", "photographer", "ped_with_camera", "ped_crossing", "ped_against")
PHOTOGRAPHER_ID = 1

REAL_FIX = ("download the scene from the OmniLocalRF authors (Google Drive link in the README of "
            "github.com/KAIST-VCLAB/OmniLocalRF) and run their preprocessing (scripts/preprocess_real.sh or "
            "preprocess_syn.sh: DPT depth -> depth/, RAFT flow -> flow_ds/); for the embedded street delete the "
            "scene folder and re-run the ingest stage; check omnilocalrf.data in "
            "conf/<env>/parameters/omnilocalrf.yml")
CORRUPT_FIX = ("the file is damaged or truncated: re-download / re-copy it, or for the embedded street delete the "
               "scene folder and re-run the ingest stage")


# ------------------------------------------------------------------------------------------- OpenCV / IO helpers
def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("OmniLocalRF data needs OpenCV: pip install opencv-python-headless") from exc
    cv2.setNumThreads(1)
    return cv2


def _imwrite(path: Path, array: np.ndarray) -> None:
    """Write a PNG with OpenCV (arrays in OpenCV channel order); raise if OpenCV reports a failure."""
    if not _cv2().imwrite(str(path), array):
        raise OSError(f"OpenCV could not write {path}")


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    _imwrite(path, np.ascontiguousarray(rgb[..., ::-1]))


def _imread_unchanged(path: Path, what: str) -> np.ndarray:
    """OpenCV IMREAD_UNCHANGED; an undecodable file raises DataValidationError naming it."""
    cv2 = _cv2()
    try:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except Exception as exc:  # pragma: no cover - OpenCV usually returns None instead
        raise DataValidationError(f"{what} {path} cannot be decoded ({exc}); {CORRUPT_FIX}") from exc
    if arr is None:
        raise DataValidationError(f"{what} {path} cannot be decoded by OpenCV; {CORRUPT_FIX}")
    return arr


def _resize(arr: np.ndarray, hw: tuple[int, int], interp: str = "area") -> np.ndarray:
    if arr.shape[:2] == tuple(hw):
        return arr
    cv2 = _cv2()
    flag = {"area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}[interp]
    return cv2.resize(arr, (int(hw[1]), int(hw[0])), interpolation=flag)


# ------------------------------------------------------------------------------------------- flow PNG encoding
def encode_flow(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w, 2) float flow + (h, w) validity -> (h, w, 3) uint16 in the code's array order (x, y, validity):
    flow * 256 + 32768 truncated to uint16 (`utils.encode_flow`; round-trip error < 1/256 px), validity 65535
    where valid and both encoded components lie strictly inside (0, 65535), else 0."""
    flow = np.asarray(flow, np.float64)
    enc = FLOW_OFFSET + flow * FLOW_SCALE_FACTOR
    ok = np.asarray(valid, bool) & (enc.max(axis=-1) < FLOW_VALID) & (enc.min(axis=-1) > 0)
    out = np.empty(flow.shape[:2] + (3,), np.uint16)
    out[..., :2] = np.clip(enc, 0, FLOW_VALID).astype(np.uint16)
    out[..., 2] = ok.astype(np.uint16) * FLOW_VALID
    return out


def decode_flow(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_flow` (`utils.decode_flow`): float32 (h, w, 2) flow and bool (h, w) validity
    (channel 2 > 32768)."""
    flow = (encoded[..., :2].astype(np.float32) - FLOW_OFFSET) / FLOW_SCALE_FACTOR
    return flow, encoded[..., 2] > FLOW_OFFSET


def flow_file_name(kind: str, stem: str, frame_step: int = 1) -> str:
    """`fwd_<stem>.png` / `bwd_<stem>.png` (frame_step 1) or `fwd_step<k>_<stem>.png` (frame_step k)."""
    if kind not in ("fwd", "bwd"):
        raise ValueError(f"kind must be 'fwd' or 'bwd', got {kind!r}")
    return f"{kind}_step{frame_step}_{stem}.png" if frame_step != 1 else f"{kind}_{stem}.png"


def flow_files_for_frames(stems: Sequence[str], frame_step: int = 1) -> list[tuple[str, str]]:
    """(fwd, bwd) file names the loader reads for each retained frame i: fwd named after frame i+1 (the last
    frame wraps to frame 0), bwd named after frame i (the code's `read_meta`)."""
    n = len(stems)
    return [(flow_file_name("fwd", stems[(i + 1) % n], frame_step), flow_file_name("bwd", stems[i], frame_step))
            for i in range(n)]


def write_flow_png(path: Path, flow: np.ndarray, valid: np.ndarray) -> None:
    _imwrite(Path(path), encode_flow(flow, valid))


def read_flow_png(path: Path) -> np.ndarray:
    """The encoded (h, w, 3) uint16 array of a flow_ds file (OpenCV order = the code's array order)."""
    enc = _imread_unchanged(Path(path), "flow file")
    if enc.dtype != np.uint16 or enc.ndim != 3 or enc.shape[2] != 3:
        raise DataValidationError(
            f"flow file {path} is {enc.dtype} with shape {enc.shape}, not the flow_ds encoding (3-channel uint16 "
            f"PNG, flow * 256 + 32768 and a validity channel); re-run the flow preprocessing "
            f"(scripts/run_flow.py, or re-run the embedded ingest stage)")
    return enc


# ------------------------------------------------------------------------------------------- priors
def depth_prior_png(depth: np.ndarray, rng: np.random.Generator, *, source: str = "noisy", noise: float = 0.05,
                    blur: float = 1.0) -> np.ndarray:
    """A DPT-like inverse-depth prior (H, W) uint16 from a true depth map (spec 7b): 1/depth, a random positive
    affine map a * x + b, multiplicative Gaussian noise (sigma `noise`), a Gaussian blur (`blur` px, columns wrap),
    then per-frame min-max to 0..65535. `source="gt"`: only 1/depth and the min-max (ablations)."""
    from scipy.ndimage import gaussian_filter

    if source not in ("noisy", "gt"):
        raise ValueError(f"depth source must be 'noisy' or 'gt', got {source!r}")
    inv = 1.0 / np.asarray(depth, np.float64)
    if source == "noisy":
        a = rng.uniform(0.5, 2.0)
        b = rng.uniform(0.0, 0.5) * float(inv.mean())
        inv = (a * inv + b) * (1.0 + noise * rng.standard_normal(inv.shape))
        if blur > 0:
            inv = gaussian_filter(inv, sigma=blur, mode=("nearest", "wrap"))
    lo, hi = float(inv.min()), float(inv.max())
    scaled = (inv - lo) / (hi - lo) if hi > lo else np.zeros_like(inv)
    return np.rint(scaled * FLOW_VALID).astype(np.uint16)


FlowPair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def flow_priors(images: np.ndarray, *, scale: float = 0.5, preset: str = "medium") -> list[FlowPair]:
    """Per frame k (the flow_ds files named after frame k): (fwd flow k-1 -> k, fwd valid, bwd flow k -> k-1,
    bwd valid) at `scale` of the image size, by `flow.dis_flow` + `flow.fwd_bwd_consistency`, as `run_flow.py`
    does with RAFT; frame 0 gets zero flow and all-invalid masks."""
    from cvpr24.pipelines.omnilocalrf.flow import dis_flow, fwd_bwd_consistency

    h, w = images.shape[1:3]
    hs, ws = max(1, int(round(h * scale))), max(2, int(round(w * scale)))
    small = [_resize(np.ascontiguousarray(im), (hs, ws), "cubic") for im in images]
    zero, invalid = np.zeros((hs, ws, 2), np.float32), np.zeros((hs, ws), bool)
    out: list[FlowPair] = [(zero, invalid, zero, invalid)]
    for k in range(1, len(small)):
        fwd, bwd = dis_flow(small[k - 1], small[k], preset=preset), dis_flow(small[k], small[k - 1], preset=preset)
        fwd_ok, bwd_ok = fwd_bwd_consistency(fwd, bwd)
        out.append((fwd, fwd_ok, bwd, bwd_ok))
    return out


# ------------------------------------------------------------------------------------------- procedural street
@dataclass
class StreetScene:
    """The embedded street video (spec 8). Arrays over N frames of H x W ERP:

    images (N, H, W, 3) uint8 with the dynamic objects; static (N, H, W, 3) uint8, the same cameras without them;
    dyn_ids (N, H, W) uint8 object ids (`OBJECT_NAMES`: 0 static, 1 photographer, 2.. pedestrians); depth /
    depth_static (N, H, W) float32 distance along the pixel-centre ray (sky = SKY_DEPTH); c2w (N, 4, 4) float64.
    With supersampling the colour is the mean of s x s sub-pixel rays, the depth that of the pixel-centre ray, and
    a pixel is dynamic when ANY of its rays (centre or sub-pixel) hits a dynamic object, so `static` equals
    `images` exactly wherever `dyn_mask` is False.
    """

    images: np.ndarray
    static: np.ndarray
    dyn_ids: np.ndarray
    depth: np.ndarray
    depth_static: np.ndarray
    c2w: np.ndarray
    params: dict[str, Any]
    generation_seconds: float = 0.0
    object_names: tuple[str, ...] = OBJECT_NAMES

    @property
    def dyn_mask(self) -> np.ndarray:
        return self.dyn_ids > 0

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def stems(self) -> list[str]:
        return [STEM_FORMAT.format(k) for k in range(self.n_frames)]


class _Noise:
    """2D value noise on a seeded 256 x 256 lattice (smoothstep-bilinear, wraps every 256 units)."""

    def __init__(self, rng: np.random.Generator, size: int = 256):
        self.table = rng.random((size, size))
        self.size = size

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        iu, iv = np.floor(u), np.floor(v)
        fu, fv = u - iu, v - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        i0, j0 = np.mod(iu, self.size).astype(np.int64), np.mod(iv, self.size).astype(np.int64)
        i1, j1 = (i0 + 1) % self.size, (j0 + 1) % self.size
        t = self.table
        top = t[j0, i0] * (1 - fu) + t[j0, i1] * fu
        bottom = t[j1, i0] * (1 - fu) + t[j1, i1] * fu
        return top * (1 - fv) + bottom * fv


_PALETTE = np.array([[0.72, 0.45, 0.35], [0.80, 0.74, 0.60], [0.55, 0.60, 0.68], [0.85, 0.80, 0.72],
                     [0.62, 0.38, 0.30], [0.70, 0.66, 0.50], [0.48, 0.55, 0.50], [0.78, 0.60, 0.45]])
_CLOTHES = np.array([[0.85, 0.20, 0.15], [0.15, 0.45, 0.85], [0.95, 0.75, 0.10], [0.20, 0.65, 0.30],
                     [0.60, 0.25, 0.70], [0.95, 0.50, 0.15]])
_SKIN = np.array([0.86, 0.66, 0.52])
_HORIZON, _ZENITH, _SUN = np.array([0.80, 0.86, 0.93]), np.array([0.30, 0.50, 0.85]), np.array([1.0, 0.96, 0.85])
_LIGHT = np.array([0.45, -0.75, 0.50]) / np.linalg.norm([0.45, -0.75, 0.50])  # towards the sun (y down)
_AMBIENT, _DIFFUSE = 0.45, 0.55
_INF = np.inf


def _cull(o: np.ndarray, d: np.ndarray, c: np.ndarray, radius: float) -> np.ndarray:
    """Indices of the unit rays o + t d (t > 0) that can meet the ball (c, radius), a cheap bounding-cone test
    (all rays when o is inside the ball)."""
    oc = c - o
    dist = float(np.linalg.norm(oc))
    if dist <= radius:
        return np.arange(len(d))
    return np.flatnonzero(d @ (oc / dist) > math.sqrt(1.0 - (radius / dist) ** 2) - 1e-9)


def _sphere_t(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    oc = o - c
    b = d @ oc
    h = b * b - (float(oc @ oc) - r * r)
    t = -b - np.sqrt(np.maximum(h, 0.0))
    return np.where((h >= 0) & (t > 0), t, _INF)


def _spheres(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Nearest positive hit distance (n, M) of unit rays o + t d with M spheres (inf = miss); o outside."""
    out = np.full((len(d), len(c)), _INF)
    for m in range(len(c)):
        rays = _cull(o, d, c[m], float(r[m]))
        out[rays, m] = _sphere_t(o, d[rays], c[m], float(r[m]))
    return out


def _capsule_t(o: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    ba, oa = b - a, o - a
    baba, baoa, oaoa = float(ba @ ba), float(ba @ oa), float(oa @ oa)
    bard, rdoa = d @ ba, d @ oa
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    ok = (qa > 1e-12) & (h >= 0)
    t = (-qb - np.sqrt(np.maximum(h, 0.0))) / np.where(ok, qa, 1.0)
    y = baoa + t * bard
    side = np.where(ok & (t > 0) & (y > 0) & (y < baba), t, _INF)
    return np.minimum(side, np.minimum(_sphere_t(o, d, a, r), _sphere_t(o, d, b, r)))


def _capsules(o: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Nearest hit (n, M) with M capsules (segment a-b, radius r) = min(finite cylinder side, the two end balls)."""
    out = np.full((len(d), len(a)), _INF)
    for m in range(len(a)):
        rays = _cull(o, d, (a[m] + b[m]) / 2, float(np.linalg.norm(b[m] - a[m])) / 2 + float(r[m]))
        out[rays, m] = _capsule_t(o, d[rays], a[m], b[m], float(r[m]))
    return out


def _capsule_normals(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ba = b - a
    s = np.clip(((p - a) * ba).sum(-1) / (ba * ba).sum(-1), 0.0, 1.0)
    n = p - (a + s[:, None] * ba)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _boxes(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest entry distance (n,) and box index (n,) of rays with M axis-aligned boxes (slab method), inf = miss;
    o outside all boxes. One box at a time on (n,) arrays (cache-friendly), tested only against the rays that
    can meet its bounding ball (and, for a box entirely on one side of the camera in x, head that way)."""
    dd = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / dd
    best, idx = np.full(len(d), _INF), np.zeros(len(d), np.int64)
    right, left = np.flatnonzero(d[:, 0] > 0), np.flatnonzero(d[:, 0] < 0)
    for m in range(len(lo)):
        rays = right if lo[m, 0] > o[0] else left if hi[m, 0] < o[0] else None
        cone = _cull(o, d if rays is None else d[rays], (lo[m] + hi[m]) / 2, float(np.linalg.norm(hi[m] - lo[m])) / 2)
        rays = cone if rays is None else rays[cone]
        sub = inv[rays]
        tnear, tfar = np.full(len(sub), -_INF), np.full(len(sub), _INF)
        for a in range(3):
            t1, t2 = (lo[m, a] - o[a]) * sub[:, a], (hi[m, a] - o[a]) * sub[:, a]
            tnear = np.maximum(tnear, np.minimum(t1, t2))
            tfar = np.minimum(tfar, np.maximum(t1, t2))
        t = np.where((tnear <= tfar) & (tnear > 0), tnear, _INF)
        closer = t < best[rays]
        best[rays[closer]], idx[rays[closer]] = t[closer], m
    return best, idx


def _ellipsoid(o: np.ndarray, d: np.ndarray, c: np.ndarray, radii: np.ndarray) -> np.ndarray:
    out = np.full(len(d), _INF)
    rays = _cull(o, d, c, float(radii.max()))
    out[rays] = _ellipsoid_t(o, d[rays], c, radii)
    return out


def _ellipsoid_t(o: np.ndarray, d: np.ndarray, c: np.ndarray, radii: np.ndarray) -> np.ndarray:
    oo, dd = (o - c) / radii, d / radii
    qa = (dd * dd).sum(-1)
    qb = dd @ oo
    qc = float(oo @ oo) - 1.0
    h = qb * qb - qa * qc
    t = (-qb - np.sqrt(np.maximum(h, 0.0))) / qa
    return np.where((h >= 0) & (t > 0), t, _INF)


def _lambert(albedo: np.ndarray, normal: np.ndarray, light: np.ndarray) -> np.ndarray:
    return albedo * (_AMBIENT + _DIFFUSE * np.clip(normal @ light, 0.0, None))[:, None]


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


class _Street:
    """The static street, the pedestrians and the photographer, all drawn from one seeded generator."""

    def __init__(self, rng: np.random.Generator, *, n_frames: int, step: float, cam_height: float,
                 n_pedestrians: int, photographer: bool, photographer_jitter: float):
        self.noise = _Noise(rng)
        # buildings: two rows of boxes, facades at x = +-3, heights 2-4, depth 3-6, small alleys between them
        lo, hi, col, heights = [], [], [], []
        for side in (-1.0, 1.0):
            z = -30.0
            while z < 40.0:
                length, height, depth = rng.uniform(3.0, 6.0), rng.uniform(2.0, 4.0), rng.uniform(3.0, 6.0)
                x0, x1 = (3.0, 3.0 + depth) if side > 0 else (-3.0 - depth, -3.0)
                lo.append([x0, -height, z])
                hi.append([x1, 0.1, z + length])
                col.append(_PALETTE[rng.integers(len(_PALETTE))] * rng.uniform(0.85, 1.1))
                heights.append(height)
                z += length + (rng.uniform(0.4, 1.5) if rng.random() < 0.5 else 0.0)
        self.box_lo, self.box_hi = np.array(lo), np.array(hi)
        self.box_col, self.box_h = np.clip(np.array(col), 0, 1), np.array(heights)
        # far "city wall": the inside of a box ring x = +-45, z in [-42, 55], skyline heights per 6-unit segment
        self.wall_x, self.wall_z0, self.wall_z1 = 45.0, -42.0, 55.0
        self.wall_seg = 6.0
        self.wall_h = rng.uniform(6.0, 20.0, size=(4, 40))
        self.wall_col = rng.integers(len(_PALETTE), size=(4, 40))
        # six trees along the sidewalks: capsule trunks and sphere crowns
        tz = np.array([1.0, 6.0, 11.0, 3.5, 8.5, 13.5]) * max(1.0, step * n_frames / 8.0) + rng.uniform(-1, 1, 6)
        tx = np.array([2.45, 2.45, 2.45, -2.45, -2.45, -2.45])
        trunk_h = rng.uniform(1.8, 2.3, 6)
        self.trunk_a = np.stack([tx, np.full(6, 0.05), tz], -1)
        self.trunk_b = np.stack([tx, -trunk_h, tz], -1)
        self.trunk_r = np.full(6, 0.12)
        self.crown_r = rng.uniform(0.5, 0.65, 6)
        self.crown_c = np.stack([tx, -trunk_h - 0.5 * self.crown_r, tz], -1)
        # camera path: +z at `step` per frame, sinusoidal yaw and bob (set per frame in `pose`)
        self.n_frames, self.step, self.cam_height = n_frames, step, cam_height
        # pedestrians (capsules, height 1.7, radius 0.25): with the camera, crossing, against
        self.n_ped = int(n_pedestrians)
        self.ped_col = _CLOTHES[rng.permutation(len(_CLOTHES))[:3]]
        z_end = step * (n_frames - 1)
        self.ped_speed = np.array([step, rng.uniform(0.06, 0.10), rng.uniform(0.05, 0.12)])
        self.cross_z = 0.45 * z_end + 1.0
        self.cross_k = (self.cross_z - 0.0) / step           # frame at which the camera passes the crossing line
        self.against_z0 = z_end + rng.uniform(2.0, 4.0)
        self.ped_phase = rng.uniform(0, 2 * np.pi, 3)
        # photographer in the camera frame (0.45 behind, 0.6 below), jittered by up to `photographer_jitter`
        self.photographer = photographer
        self.jacket = _CLOTHES[rng.integers(len(_CLOTHES))] * 0.8
        self.jitter = rng.uniform(-photographer_jitter, photographer_jitter, size=(n_frames, 3))

    # ---------------------------------------------------------------- poses and moving objects
    def pose(self, k: int, yaw_deg: float, yaw_period: float, bob: float, bob_period: float) -> np.ndarray:
        yaw = math.radians(yaw_deg) * math.sin(2 * math.pi * k / yaw_period)
        c, s = math.cos(yaw), math.sin(yaw)
        c2w = np.eye(4)
        c2w[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]   # yaw about the (down) y axis
        c2w[:3, 3] = [0.0, -self.cam_height + bob * math.sin(2 * math.pi * k / bob_period), self.step * k]
        return c2w

    def pedestrians(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Capsule end points (n_ped, 3) x 2 of the pedestrians at frame k (ground y = 0, up = -y)."""
        v = self.ped_speed
        xz = np.array([
            [0.9, self.step * k + 2.2],                              # walks with the camera, same speed
            [1.0 - v[1] * (k - self.cross_k), self.cross_z],         # crosses the street right -> left
            [-1.3, self.against_z0 - v[2] * k],                      # walks against the camera
        ])[: self.n_ped]
        sway = 0.03 * np.sin(self.ped_phase[: self.n_ped] + 0.8 * k)   # a little lateral sway while walking
        xz[:, 0] += sway
        a = np.stack([xz[:, 0], np.full(len(xz), -0.25), xz[:, 1]], -1)
        b = np.stack([xz[:, 0], np.full(len(xz), -1.45), xz[:, 1]], -1)
        return a, b

    def photographer_parts(self, k: int) -> dict[str, np.ndarray]:
        j = self.jitter[k]
        return {
            "torso_c": np.array([0.0, 0.6, -0.45]) + j, "torso_r": np.array([0.2, 0.35, 0.15]),
            "head_c": np.array([[0.0, 0.14, -0.45]]) + j, "head_r": np.array([0.11]),
            "arm_a": np.array([[0.17, 0.35, -0.45], [-0.17, 0.35, -0.45]]) + j,
            "arm_b": np.array([[0.07, 0.22, -0.17], [-0.07, 0.22, -0.17]]) + j,
            "arm_r": np.array([0.04, 0.04]),
        }

    # ---------------------------------------------------------------- static scene
    def static(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (n,) (SKY_DEPTH for the sky) and shaded colour (n, 3) of the static street."""
        n = len(d)
        t_ground = np.where(d[:, 1] > 1e-12, -o[1] / np.where(d[:, 1] > 1e-12, d[:, 1], 1.0), _INF)
        t_box, box_idx = _boxes(o, d, self.box_lo, self.box_hi)
        t_wall, wall_axis, wall_seg, wall_side = self._wall(o, d)
        tt = _capsules(o, d, self.trunk_a, self.trunk_b, self.trunk_r)
        trunk_idx, t_trunk = tt.argmin(1), tt.min(1)
        tc = _spheres(o, d, self.crown_c, self.crown_r)
        crown_idx, t_crown = tc.argmin(1), tc.min(1)
        ts = np.stack([t_ground, t_box, t_wall, t_trunk, t_crown])
        group, t = ts.argmin(0), ts.min(0)
        col = np.empty((n, 3))
        sky = ~np.isfinite(t)
        col[sky] = self._sky(d[sky])
        p = o[None] + np.where(sky, 0.0, t)[:, None] * d
        m = (group == 0) & ~sky
        col[m] = self._ground(p[m])
        m = (group == 1) & ~sky
        col[m] = self._facade(p[m], box_idx[m])
        m = (group == 2) & ~sky
        col[m] = self._city_wall(p[m], wall_axis[m], wall_seg[m], wall_side[m], d[m])
        m = (group == 3) & ~sky
        idx = trunk_idx[m]
        nrm = _capsule_normals(p[m], self.trunk_a[idx], self.trunk_b[idx])
        g = 0.8 + 0.4 * self.noise(p[m, 1] * 6 + 31, (p[m, 0] + p[m, 2]) * 9)
        col[m] = _lambert(np.array([0.36, 0.25, 0.16]) * g[:, None], nrm, _LIGHT)
        m = (group == 4) & ~sky
        idx = crown_idx[m]
        nrm = (p[m] - self.crown_c[idx]) / self.crown_r[idx, None]
        g = 0.6 + 0.8 * self.noise(p[m, 0] * 5 + p[m, 1] * 3 + 7, p[m, 2] * 5 - p[m, 1] * 4)
        col[m] = _lambert(np.array([0.18, 0.42, 0.16]) * g[:, None], nrm, _LIGHT)
        return np.where(sky, SKY_DEPTH, t), col

    def _wall(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
        dx = np.where(np.abs(d[:, 0]) < 1e-12, 1e-12, d[:, 0])
        dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
        tx = (np.where(dx > 0, self.wall_x, -self.wall_x) - o[0]) / dx
        tz = (np.where(dz > 0, self.wall_z1, self.wall_z0) - o[2]) / dz
        axis = np.where(tx < tz, 0, 2)
        t = np.minimum(tx, tz)
        p = o[None] + t[:, None] * d
        u = np.where(axis == 0, p[:, 2], p[:, 0])
        side = np.where(axis == 0, (dx > 0).astype(int), 2 + (dz > 0).astype(int))
        seg = np.clip(np.floor((u + 60.0) / self.wall_seg).astype(int), 0, self.wall_h.shape[1] - 1)
        ok = -p[:, 1] <= self.wall_h[side, seg]
        return np.where(ok, t, _INF), axis, seg, side

    def _sky(self, d: np.ndarray) -> np.ndarray:
        up = -d[:, 1]
        s = np.clip(up, 0, 1) ** 0.6
        col = _HORIZON[None] * (1 - s[:, None]) + _ZENITH[None] * s[:, None]
        denom = np.maximum(up, 0.0) + 0.15
        cloud = self.noise(d[:, 0] / denom * 2.0 + 100, d[:, 2] / denom * 2.0 + 100)
        cloud = np.clip((cloud - 0.55) * 3.0, 0, 1) * (up > 0)
        col = col * (1 - 0.6 * cloud[:, None]) + 0.6 * cloud[:, None]
        sun = d @ _LIGHT > math.cos(math.radians(4.0))
        return np.where(sun[:, None], _SUN[None], col)

    def _ground(self, p: np.ndarray) -> np.ndarray:
        x, z = p[:, 0], p[:, 2]
        ax = np.abs(x)
        n1, n2 = self.noise(x * 2.5, z * 2.5), self.noise(x * 9 + 50, z * 9 + 50)
        g = 0.30 + 0.12 * (n1 - 0.5) + 0.08 * (n2 - 0.5)
        tint = np.tile([1.0, 1.0, 1.05], (len(p), 1))
        sidewalk = ax > 2.0
        joint = (_frac(x * 2) < 0.07) | (_frac(z * 2) < 0.07)
        g = np.where(sidewalk, np.where(joint, 0.42, 0.58 + 0.08 * (n1 - 0.5)), g)
        tint[sidewalk] = [1.0, 0.97, 0.92]
        g = np.where((ax > 1.96) & (ax < 2.04), 0.75, g)                    # curb
        g = np.where((ax < 0.08) & (_frac(z / 3.0) < 0.5), 0.92, g)         # dashed centre line
        g = np.where((ax > 1.75) & (ax < 1.83), 0.88, g)                    # edge lines
        return _lambert(np.clip(g[:, None] * tint, 0, 1), np.tile([0.0, -1.0, 0.0], (len(p), 1)), _LIGHT)

    def _facade(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        lo, hi = self.box_lo[idx], self.box_hi[idx]
        dist = np.concatenate([np.abs(p - lo), np.abs(p - hi)], axis=1)      # (n, 6): faces lo_x..lo_z, hi_x..hi_z
        face = dist.argmin(1)
        axis, sign = face % 3, np.where(face < 3, -1.0, 1.0)
        nrm = np.zeros_like(p)
        nrm[np.arange(len(p)), axis] = sign
        u = np.where(axis == 0, p[:, 2], p[:, 0])
        v = -p[:, 1]
        base = self.box_col[idx] * (0.85 + 0.3 * self.noise(u * 1.5 + idx * 17.0, v * 1.5))[:, None]
        win = ((_frac(u / 1.3) > 0.25) & (_frac(u / 1.3) < 0.75) & (_frac(v / 1.2) > 0.3) & (_frac(v / 1.2) < 0.8)
               & (v > 0.8) & (v < self.box_h[idx] - 0.3))
        glass = (np.array([0.10, 0.13, 0.20]) + 0.15 * self.noise(u * 3 + 5, v * 3)[:, None]
                 * np.array([0.6, 0.7, 1.0]))
        albedo = np.where(win[:, None], glass, base)
        albedo = np.where((v < 0.8)[:, None], base * 0.7, albedo)                       # ground floor band
        albedo = np.where((v > self.box_h[idx] - 0.2)[:, None], base * 0.6, albedo)     # cornice
        return _lambert(np.clip(albedo, 0, 1), nrm, _LIGHT)

    def _city_wall(self, p: np.ndarray, axis: np.ndarray, seg: np.ndarray, side: np.ndarray, d: np.ndarray
                   ) -> np.ndarray:
        u = np.where(axis == 0, p[:, 2], p[:, 0])
        v = -p[:, 1]
        base = _PALETTE[self.wall_col[side, seg]] * 0.8
        win = (_frac(u / 2.0) > 0.3) & (_frac(u / 2.0) < 0.7) & (_frac(v / 2.5) > 0.3) & (_frac(v / 2.5) < 0.75)
        albedo = np.where(win[:, None], base * 0.45, base)
        nrm = np.zeros_like(p)
        nrm[axis == 0, 0] = -np.sign(d[axis == 0, 0])
        nrm[axis == 2, 2] = -np.sign(d[axis == 2, 2])
        col = _lambert(albedo, nrm, _LIGHT)
        return 0.65 * col + 0.35 * _HORIZON[None]                                        # haze

    # ---------------------------------------------------------------- dynamic objects
    def dynamic(self, k: int, o: np.ndarray, d: np.ndarray, d_cam: np.ndarray, rot: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance (n,), colour (n, 3) and object id (n,) uint8 of the nearest dynamic object (inf / 0 = none)."""
        n = len(d)
        t = np.full(n, _INF)
        ids = np.zeros(n, np.uint8)
        col = np.zeros((n, 3))
        if self.n_ped:
            a, b = self.pedestrians(k)
            tp = _capsules(o, d, a, b, np.full(len(a), 0.25))
            pi, tmin = tp.argmin(1), tp.min(1)
            m = np.isfinite(tmin)
            p = o[None] + tmin[m, None] * d[m]
            v = -p[:, 1]
            shirt = self.ped_col[pi[m]] * (0.8 + 0.2 * (_frac(v * 6) < 0.5))[:, None]
            albedo = np.where((v < 0.85)[:, None], np.array([0.15, 0.17, 0.30]), shirt)
            albedo = np.where((v > 1.45)[:, None], _SKIN, albedo)
            col[m] = _lambert(albedo, _capsule_normals(p, a[pi[m]], b[pi[m]]), _LIGHT)
            t[m], ids[m] = tmin[m], 2 + pi[m].astype(np.uint8)
        if self.photographer:
            parts = self.photographer_parts(k)
            light = rot.T @ _LIGHT                                   # the light in the camera frame
            zero = np.zeros(3)
            t_torso = _ellipsoid(zero, d_cam, parts["torso_c"], parts["torso_r"])
            t_head = _spheres(zero, d_cam, parts["head_c"], parts["head_r"])[:, 0]
            ta = _capsules(zero, d_cam, parts["arm_a"], parts["arm_b"], parts["arm_r"])
            arm_idx, t_arm = ta.argmin(1), ta.min(1)
            tt = np.stack([t_torso, t_head, t_arm])
            which, tmin = tt.argmin(0), tt.min(0)
            m = tmin < t
            p = tmin[m, None] * d_cam[m]
            w = which[m]
            nrm = np.where((w == 0)[:, None], (p - parts["torso_c"]) / parts["torso_r"] ** 2, p - parts["head_c"][0])
            nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
            arm = w == 2
            ai = arm_idx[m][arm]
            nrm[arm] = _capsule_normals(p[arm], parts["arm_a"][ai], parts["arm_b"][ai])
            zipper = (np.abs(p[:, 0] - parts["torso_c"][0]) < 0.02) & (w == 0)
            albedo = np.where((w == 1)[:, None], _SKIN, self.jacket[None] * np.ones((len(p), 1)))
            albedo = np.where(zipper[:, None], np.array([0.9, 0.9, 0.9]), albedo)
            col[m] = _lambert(albedo, nrm, light)
            t[m], ids[m] = tmin[m], PHOTOGRAPHER_ID
        return t, col, ids


def _to_u8(col: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(col, 0.0, 1.0) * 255.0).astype(np.uint8)


def generate_street(*, seed: int = 0, height: int = 64, width: int | None = None, n_frames: int = 40,
                    step: float = 0.2, cam_height: float = 1.6, yaw_deg: float = 10.0, yaw_period: float = 40.0,
                    bob: float = 0.02, bob_period: float = 8.0, supersample: int = 2, n_pedestrians: int = 3,
                    photographer: bool = True, photographer_jitter: float = 0.02) -> StreetScene:
    """Render the embedded 360 street video (spec 8) by analytic ray casting, deterministic for a seed.

    Static street: ground y = 0 (asphalt noise, dashed centre line, edge lines, curbs, tiled sidewalks beyond
    |x| = 2), two rows of boxes with window grids and facades at x = +-3 (heights 2-4), six trees (capsule trunk +
    sphere crown), a far city wall ring (x = +-45, z in [-42, 55], skyline 6-20 high), sky gradient with clouds
    and a sun disk; Lambertian shading, one directional light + ambient, no shadows. Camera: +z at `step` per
    frame (40 frames: z 0 -> 7.8), height `cam_height` with a +-`bob` bob, yaw +-`yaw_deg` sinusoidal. Dynamic:
    the photographer fixed in the camera frame (ellipsoid torso 0.6 below and 0.45 behind the camera, head, two
    arms up towards the camera; jitter +-`photographer_jitter` per frame), and up to three pedestrian capsules
    (height 1.7, radius 0.25): one walking with the camera at its speed 2.2 ahead, one crossing the street, one
    walking against the camera (0.05-0.12 units per frame).

    `supersample` s: the colour of a pixel is the mean of s x s sub-pixel rays (s = 1: the pixel-centre ray).
    """
    width = 2 * height if width is None else int(width)
    if height < 2 or width != 2 * height:
        raise ValueError(f"the street is a full-sphere ERP video: width must be 2 x height, got {height} x {width}")
    if n_frames < 1 or supersample < 1 or not 0 <= n_pedestrians <= 3:
        raise ValueError(f"need n_frames >= 1, supersample >= 1, 0 <= n_pedestrians <= 3; got {n_frames}, "
                         f"{supersample}, {n_pedestrians}")
    params = {k: v for k, v in dict(locals()).items() if k != "params"}
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    street = _Street(rng, n_frames=n_frames, step=step, cam_height=cam_height, n_pedestrians=n_pedestrians,
                     photographer=photographer, photographer_jitter=photographer_jitter)
    # rays of a frame in the camera frame: the pixel centre, then s x s sub-pixel rays (camera.py convention)
    jj, ii = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    offsets = [(0.0, 0.0)]
    if supersample > 1:
        sub = (np.arange(supersample) + 0.5) / supersample - 0.5
        offsets += [(du, dv) for dv in sub for du in sub]
    dirs = torch.stack([erp_pixel_to_direction(torch.from_numpy(ii + du), torch.from_numpy(jj + dv), height, width)
                        for du, dv in offsets]).numpy().reshape(-1, 3)
    n_pix, n_sets = height * width, len(offsets)
    shape = (n_frames, height, width)
    images, static = np.empty(shape + (3,), np.uint8), np.empty(shape + (3,), np.uint8)
    dyn_ids = np.zeros(shape, np.uint8)
    depth, depth_static = np.empty(shape, np.float32), np.empty(shape, np.float32)
    c2w = np.empty((n_frames, 4, 4))
    for k in range(n_frames):
        pose = street.pose(k, yaw_deg, yaw_period, bob, bob_period)
        rot, o = pose[:3, :3], pose[:3, 3]
        d_world = dirs @ rot.T
        t_s, col_s = street.static(o, d_world)
        t_d, col_d, id_d = street.dynamic(k, o, d_world, dirs, rot)
        hit = t_d < t_s
        col_dyn = np.where(hit[:, None], col_d, col_s)
        sets = slice(1, None) if n_sets > 1 else slice(0, 1)
        col_s_px = col_s.reshape(n_sets, n_pix, 3)[sets].mean(0)
        col_d_px = col_dyn.reshape(n_sets, n_pix, 3)[sets].mean(0)
        ids = np.where(hit, id_d, 0).reshape(n_sets, n_pix)
        px_ids = np.where(ids[0] > 0, ids[0], ids.max(0))
        images[k] = _to_u8(col_d_px).reshape(height, width, 3)
        static[k] = _to_u8(col_s_px).reshape(height, width, 3)
        dyn_ids[k] = px_ids.reshape(height, width)
        depth[k] = np.minimum(t_s[:n_pix], t_d[:n_pix]).reshape(height, width)
        depth_static[k] = t_s[:n_pix].reshape(height, width)
        c2w[k] = pose
    seconds = time.perf_counter() - t0
    log.info("generated the OmniLocalRF street: %d frames of %dx%d ERP (supersample %d) in %.2f s",
             n_frames, width, height, supersample, seconds)
    return StreetScene(images=images, static=static, dyn_ids=dyn_ids, depth=depth, depth_static=depth_static,
                       c2w=c2w, params=params, generation_seconds=seconds)


# ------------------------------------------------------------------------------------------- loaded data
@dataclass
class GroundTruth:
    """gt/ of a scene (embedded only). static (N, H, W, 3) uint8; dyn_ids (N, H, W) uint8 object ids;
    depth / depth_static (N, H, W) float32; c2w (N, 4, 4) float64."""

    static: np.ndarray
    dyn_ids: np.ndarray
    depth: np.ndarray
    depth_static: np.ndarray
    c2w: np.ndarray

    @property
    def dyn_mask(self) -> np.ndarray:
        return self.dyn_ids > 0


@dataclass
class OmniData:
    """One scene as the method consumes it (after frame_step / downsampling).

    images (N, H, W, 3) uint8; invdepth (N, H, W) float32 raw prior values or None; fwd_flow / bwd_flow
    (N, H, W, 2) float32 px at image size and fwd_valid / bwd_valid (N, H, W) bool, or None; masks (N, H, W)
    bool keep-masks (True where a frame has no masks/ file) or None without masks/; eval_masks {frame index:
    (H, W) bool dynamic}; w2c (N, 4, 4) float64 from traj.csv or None; test (N,) bool (index % every == 0);
    gt: GroundTruth or None.
    """

    root: Path
    stems: list[str]
    images: np.ndarray
    test: np.ndarray
    invdepth: np.ndarray | None = None
    fwd_flow: np.ndarray | None = None
    fwd_valid: np.ndarray | None = None
    bwd_flow: np.ndarray | None = None
    bwd_valid: np.ndarray | None = None
    masks: np.ndarray | None = None
    eval_masks: dict[int, np.ndarray] = field(default_factory=dict)
    w2c: np.ndarray | None = None
    gt: GroundTruth | None = None

    @property
    def n_frames(self) -> int:
        return len(self.stems)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def c2w_from_traj(self) -> np.ndarray | None:
        return None if self.w2c is None else np.linalg.inv(self.w2c)


# ------------------------------------------------------------------------------------------- writer
def _write_scene_folder(folder: Path, *, stems: Sequence[str], images: np.ndarray, invdepth_png: np.ndarray | None,
                        flows: Sequence[FlowPair] | None, flow_step: int, masks: np.ndarray | None,
                        eval_masks: dict[int, np.ndarray] | None, w2c: np.ndarray | None,
                        gt: GroundTruth | None, scene_meta: dict[str, Any] | None) -> None:
    """Write one scene into `folder` (which must not exist yet). `flows[m]` belongs to stems[::flow_step][m]."""
    folder.mkdir(parents=True)
    (folder / IMAGE_DIR).mkdir()
    for stem, im in zip(stems, images, strict=True):
        _write_rgb(folder / IMAGE_DIR / f"{stem}.png", im)
    if invdepth_png is not None:
        (folder / DEPTH_DIR).mkdir()
        for stem, dep in zip(stems, invdepth_png, strict=True):
            _imwrite(folder / DEPTH_DIR / f"{stem}.png", np.asarray(dep, np.uint16))
    if flows is not None:
        (folder / FLOW_DIR).mkdir()
        for stem, (fwd, fwd_ok, bwd, bwd_ok) in zip(list(stems)[::flow_step], flows, strict=True):
            write_flow_png(folder / FLOW_DIR / flow_file_name("fwd", stem, flow_step), fwd, fwd_ok)
            write_flow_png(folder / FLOW_DIR / flow_file_name("bwd", stem, flow_step), bwd, bwd_ok)
    if masks is not None:
        (folder / MASK_DIR).mkdir()
        for stem, m in zip(stems, masks, strict=True):
            _imwrite(folder / MASK_DIR / f"{stem}.png", np.asarray(m, bool).astype(np.uint8) * 255)
    if eval_masks:
        (folder / EVAL_MASK_DIR).mkdir()
        for idx, m in sorted(eval_masks.items()):
            _imwrite(folder / EVAL_MASK_DIR / f"{stems[idx]}.png", np.asarray(m, bool).astype(np.uint8) * 255)
    if w2c is not None:
        lines = [" ".join([str(k)] + [repr(float(v)) for v in np.asarray(m, np.float64).reshape(16)])
                 for k, m in enumerate(w2c)]
        (folder / TRAJ_FILE).write_text("\n".join(lines) + "\n")
    if gt is not None:
        root = folder / GT_DIR
        for sub in (GT_STATIC, GT_DYN_MASK, GT_DEPTH, GT_DEPTH_STATIC):
            (root / sub).mkdir(parents=True)
        for k, stem in enumerate(stems):
            _write_rgb(root / GT_STATIC / f"{stem}.png", gt.static[k])
            _imwrite(root / GT_DYN_MASK / f"{stem}.png", np.asarray(gt.dyn_ids[k], np.uint8))
            np.save(root / GT_DEPTH / f"{stem}.npy", np.asarray(gt.depth[k], np.float32))
            np.save(root / GT_DEPTH_STATIC / f"{stem}.npy", np.asarray(gt.depth_static[k], np.float32))
        poses = {"convention": "camera-to-world 4x4 row-major; camera axes x right, y down, z forward; world: "
                               "ground plane y = 0, y down", "stems": list(stems),
                 "c2w": [np.asarray(m, np.float64).tolist() for m in gt.c2w]}
        (root / GT_POSES).write_text(json.dumps(poses))
        if scene_meta is not None:
            (root / GT_SCENE).write_text(json.dumps(scene_meta, indent=1, sort_keys=True, default=str))


def _commit(pairs: Sequence[tuple[Path, Path]]) -> None:
    for tmp, dest in pairs:
        swap_in_folder(tmp, dest)


def _tmp_for(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"


def write_dataset(dest: str | os.PathLike, images: np.ndarray, *, stems: Sequence[str] | None = None,
                  invdepth_png: np.ndarray | None = None, flows: Sequence[FlowPair] | None = None,
                  flow_step: int = 1, masks: np.ndarray | None = None,
                  eval_masks: dict[int, np.ndarray] | None = None, w2c: np.ndarray | None = None,
                  gt: GroundTruth | None = None, scene_meta: dict[str, Any] | None = None) -> Path:
    """Write one scene in the released layout, atomically (temporary folder + rename; an existing `dest` is
    replaced only once the new one is complete). `invdepth_png` (N, H', W') uint16; `flows` one `FlowPair` per
    frame of stems[::flow_step] (named after that frame, see `flow_priors`); `masks` (N, H, W) keep-masks;
    `eval_masks` {frame index: dynamic mask}; `w2c` (N, 4, 4) for traj.csv; `gt` the ground truth."""
    dest = Path(dest)
    images = np.asarray(images)
    stems = [STEM_FORMAT.format(k) for k in range(len(images))] if stems is None else list(stems)
    tmp = _tmp_for(dest)
    try:
        _write_scene_folder(tmp, stems=stems, images=images, invdepth_png=invdepth_png, flows=flows,
                            flow_step=flow_step, masks=masks, eval_masks=eval_masks, w2c=w2c, gt=gt,
                            scene_meta=scene_meta)
        _commit([(tmp, dest)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_street(scene: StreetScene, dest: str | os.PathLike, *, static_dest: str | os.PathLike | None = None,
                 seed: int = 0, test_frame_every: int = 10, depth_source: str = "noisy", depth_noise: float = 0.05,
                 depth_blur: float = 1.0, flow_scale: float = 0.5, flow_preset: str = "medium",
                 write_traj: bool = True) -> dict[str, Path]:
    """Write the embedded street (dynamic video at `dest`, static-only twin at `static_dest` when given) in the
    released layout with its priors (depth/, flow_ds/), eval_masks/ of the test frames, traj.csv (ground-truth
    poses, as world-to-camera) and gt/. Both folders are built completely before either is renamed into place.
    `seed` drives the depth prior's random affine map and noise. Returns {"on": dest, "off": static_dest}."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    stems = scene.stems
    test = [k for k in range(scene.n_frames) if test_frame_every > 0 and k % test_frame_every == 0]
    eval_masks = {k: scene.dyn_mask[k] for k in test}
    w2c = np.linalg.inv(scene.c2w) if write_traj else None
    meta = {"generator": "omnilocalrf street", "params": scene.params, "seed_priors": seed,
            "depth_source": depth_source, "depth_noise": depth_noise, "depth_blur": depth_blur,
            "flow": f"opencv DIS ({flow_preset}) at scale {flow_scale}", "object_names": list(scene.object_names)}
    variants: list[tuple[Path, dict[str, Any]]] = []
    variants.append((Path(dest), dict(
        images=scene.images, depth_full=scene.depth,
        gt=GroundTruth(scene.static, scene.dyn_ids, scene.depth, scene.depth_static, scene.c2w),
        meta={**meta, "variant": "on"})))
    if static_dest is not None:
        variants.append((Path(static_dest), dict(
            images=scene.static, depth_full=scene.depth_static,
            gt=GroundTruth(scene.static, np.zeros_like(scene.dyn_ids), scene.depth_static, scene.depth_static,
                           scene.c2w),
            meta={**meta, "variant": "off (static-only twin; eval_masks are the dynamic video's)"})))
    pairs: list[tuple[Path, Path]] = []
    try:
        for target, v in variants:
            invdepth = np.stack([depth_prior_png(dm, rng, source=depth_source, noise=depth_noise, blur=depth_blur)
                                 for dm in v["depth_full"]])
            flows = flow_priors(v["images"], scale=flow_scale, preset=flow_preset)
            tmp = _tmp_for(target)
            pairs.append((tmp, target))
            _write_scene_folder(tmp, stems=stems, images=v["images"], invdepth_png=invdepth, flows=flows,
                                flow_step=1, masks=None, eval_masks=eval_masks, w2c=w2c, gt=v["gt"],
                                scene_meta=v["meta"])
        _commit(pairs)
    finally:
        for tmp, _ in pairs:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote the OmniLocalRF street (%d frames) to %s in %.2f s", scene.n_frames,
             ", ".join(str(t) for t, _ in variants), time.perf_counter() - t0)
    return {"on": Path(dest), **({"off": Path(static_dest)} if static_dest is not None else {})}


# ------------------------------------------------------------------------------------------- loader
def _list_images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def _check_aspect(path: Path, hw: tuple[int, ...], what: str) -> None:
    h, w = int(hw[0]), int(hw[1])
    if w != 2 * h:
        raise DataValidationError(
            f"{what} {path} is {w}x{h} (WxH), not a 2:1 equirectangular (ERP) frame; OmniLocalRF needs full-sphere "
            f"ERP video: export the 360 video as equirectangular with width = 2 x height (or fix / remove the file)")


def _check_folder_files(folder: Path, expected: Sequence[str], ext: str, images_dir: Path,
                        all_stems: Sequence[str]) -> None:
    """Every `<stem><ext>` of the retained frames (`expected`) exists in `folder`, and `folder` holds no
    `<ext>` file whose frame images/ lacks (`all_stems`: every frame before frame_step)."""
    have = {p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(ext) and not p.name.startswith(".")}
    n_images = len(all_stems)
    missing = [s for s in expected if f"{s}{ext}" not in have]
    extra = sorted(have - {f"{s}{ext}" for s in all_stems})
    if missing or extra:
        detail = (f"{folder / (missing[0] + ext)} is missing" if missing
                  else f"{folder / extra[0]} has no frame in {images_dir}")
        raise DataValidationError(
            f"frame counts disagree: {folder} has {len(have)} {ext} files but {images_dir} has {n_images} frames "
            f"({detail}); re-run the preprocessing that writes {folder.name}/ for every frame of images/ "
            f"(or, for the embedded street, delete the scene folder and re-run the ingest stage)")


def _read_depth_png(path: Path, hw: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise missing_dataset("depth prior file", path, "run the DPT preprocessing for every frame (" + REAL_FIX + ")")
    arr = _imread_unchanged(path, "depth prior")
    if arr.ndim != 2:
        raise DataValidationError(f"depth prior {path} has shape {arr.shape}, expected a single-channel 16-bit PNG "
                                  f"(DPT output); re-run the depth preprocessing")
    _check_aspect(path, arr.shape, "depth prior")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataValidationError(f"depth prior {path} contains NaN or inf values; re-run the depth preprocessing "
                                  f"for this frame")
    return _resize(arr, hw, "area")


def _read_mask(path: Path, hw: tuple[int, int], what: str) -> np.ndarray:
    arr = _imread_unchanged(path, what)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return _resize(arr, hw, "area") > 0


def _read_traj(path: Path, n_images: int) -> np.ndarray:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < n_images:
        raise DataValidationError(f"frame counts disagree: {path} has {len(lines)} poses but images/ has "
                                  f"{n_images} frames; re-export the trajectory for every image (one line each)")
    out = np.empty((n_images, 4, 4))
    for k in range(n_images):
        tokens = lines[k].split()
        try:
            vals = np.array(tokens[1:], dtype=np.float64)
        except ValueError as exc:
            raise DataValidationError(f"{path} line {k + 1} is not '<token> m00 .. m33' numbers ({exc}); "
                                      f"re-export the trajectory") from exc
        if vals.size != 16 or not np.isfinite(vals).all():
            raise DataValidationError(f"{path} line {k + 1} needs a leading token and 16 finite numbers (the "
                                      f"world-to-camera 4x4, row-major), got {len(tokens)} tokens; re-export it")
        out[k] = vals.reshape(4, 4)
    return out


def _load_gt(gt_dir: Path, stems: Sequence[str], all_stems: Sequence[str], images_dir: Path,
             hw: tuple[int, int]) -> GroundTruth:
    fix = "delete the scene folder and re-run the embedded ingest stage (gt/ is written only by the generator)"
    for sub, ext in ((GT_STATIC, ".png"), (GT_DYN_MASK, ".png"), (GT_DEPTH, ".npy"), (GT_DEPTH_STATIC, ".npy")):
        if not (gt_dir / sub).is_dir():
            raise missing_dataset(f"ground-truth folder {sub}/", gt_dir / sub, fix)
        _check_folder_files(gt_dir / sub, stems, ext, images_dir, all_stems)
    poses_path = gt_dir / GT_POSES
    if not poses_path.is_file():
        raise missing_dataset("ground-truth poses", poses_path, fix)
    try:
        poses = json.loads(poses_path.read_text())
        by_stem = dict(zip(poses["stems"], poses["c2w"], strict=True))
        c2w = np.array([by_stem[s] for s in stems], np.float64).reshape(len(stems), 4, 4)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataValidationError(f"{poses_path} is not a ground-truth pose file with a 4x4 c2w for every frame "
                                  f"({exc!r}); {fix}") from exc
    if not np.isfinite(c2w).all():
        raise DataValidationError(f"{poses_path} contains NaN or inf poses; {fix}")
    static, ids, depth, depth_static = [], [], [], []
    for stem in stems:
        p = gt_dir / GT_STATIC / f"{stem}.png"
        im = read_rgb(p, "ground-truth static image", CORRUPT_FIX)
        m = _imread_unchanged(gt_dir / GT_DYN_MASK / f"{stem}.png", "ground-truth dynamic mask")
        if m.ndim == 3:
            m = m[..., 0]
        for arr, path in ((im, p), (m, gt_dir / GT_DYN_MASK / f"{stem}.png")):
            if arr.shape[:2] != tuple(hw):
                raise DataValidationError(f"{path} is {arr.shape[1]}x{arr.shape[0]} but the images are "
                                          f"{hw[1]}x{hw[0]}; {fix}")
        static.append(im)
        ids.append(m.astype(np.uint8))
        for sub, acc in ((GT_DEPTH, depth), (GT_DEPTH_STATIC, depth_static)):
            path = gt_dir / sub / f"{stem}.npy"
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise DataValidationError(f"ground-truth depth {path} cannot be read ({exc}); {fix}") from exc
            if arr.shape != tuple(hw):
                raise DataValidationError(f"ground-truth depth {path} has shape {arr.shape}, the images are "
                                          f"{tuple(hw)}; {fix}")
            if not np.isfinite(arr).all():
                raise DataValidationError(f"ground-truth depth {path} contains NaN or inf values "
                                          f"({int((~np.isfinite(arr)).sum())} pixels); {fix}")
            acc.append(arr.astype(np.float32, copy=False))
    return GroundTruth(np.stack(static), np.stack(ids), np.stack(depth), np.stack(depth_static), c2w)


def load_dataset(root: str | os.PathLike, *, frame_step: int = 1, test_frame_every: int = 10,
                 load_depth: bool = True, load_flow: bool = True, load_gt: bool = True,
                 downsampling: float = -1) -> OmniData:
    """Read and validate one scene in the released layout (see the module docstring): real, synthetic or embedded.

    Follows `OmniLocalRFDataset.read_meta`: images sorted by name and subsampled by `frame_step`; test frames =
    index % test_frame_every == 0 (after the step); depth resized to the image size; flow files chosen with the
    i+1 offset and decoded after resizing; masks/ nonzero = keep; `downsampling` d > 0 resizes images, priors and
    masks by 1/d (INTER_AREA; uint8 images here, the code resizes float images) and the ground truth with the
    same size (static INTER_AREA, ids and depth nearest). traj.csv and gt/ are read when present.
    """
    root = Path(root)
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    if not root.is_dir():
        raise missing_dataset("OmniLocalRF scene folder", root, REAL_FIX)
    images_dir = root / IMAGE_DIR
    if not images_dir.is_dir():
        raise missing_dataset("image folder images/", images_dir, REAL_FIX)
    all_files = _list_images(images_dir)
    if not all_files:
        raise missing_dataset(f"frames ({', '.join(IMAGE_EXTS[:4])}, ...) in images/", images_dir, REAL_FIX)
    all_stems = [os.path.splitext(f)[0] for f in all_files]
    if len(set(all_stems)) != len(all_stems):
        dup = sorted({s for s in all_stems if all_stems.count(s) > 1})[0]
        raise DataValidationError(f"{images_dir} holds two frames named {dup}.* (different extensions); keep one")
    files, stems = all_files[::frame_step], all_stems[::frame_step]
    n = len(stems)

    # images: decodable, one size, 2:1
    images, hw0 = [], None
    for name in files:
        path = images_dir / name
        im = read_rgb(path, "frame", CORRUPT_FIX)
        if hw0 is None:
            _check_aspect(path, im.shape, "frame")
            hw0 = im.shape[:2]
        elif im.shape[:2] != hw0:
            raise DataValidationError(
                f"images of different sizes: {path} is {im.shape[1]}x{im.shape[0]} but {images_dir / files[0]} is "
                f"{hw0[1]}x{hw0[0]}; every frame of a scene must have the same size (re-export the video)")
        images.append(im)
    assert hw0 is not None
    hw = hw0 if downsampling in (-1, None) or downsampling <= 0 else (
        int(round(hw0[0] / downsampling)), int(round(hw0[1] / downsampling)))
    imgs = np.stack([_resize(im, hw, "area") for im in images])
    test = np.array([test_frame_every > 0 and k % test_frame_every == 0 for k in range(n)])
    data = OmniData(root=root, stems=stems, images=imgs, test=test)

    if load_depth:
        depth_dir = root / DEPTH_DIR
        if not depth_dir.is_dir():
            raise missing_dataset("monocular depth folder depth/", depth_dir, REAL_FIX)
        _check_folder_files(depth_dir, stems, ".png", images_dir, all_stems)
        data.invdepth = np.stack([_read_depth_png(depth_dir / f"{s}.png", hw) for s in stems])

    if load_flow:
        flow_dir = root / FLOW_DIR
        if not flow_dir.is_dir():
            raise missing_dataset("optical-flow folder flow_ds/", flow_dir, REAL_FIX)
        names = flow_files_for_frames(stems, frame_step)
        for fwd_name, bwd_name in names:
            for name in (fwd_name, bwd_name):
                if not (flow_dir / name).is_file():
                    n_kind = len([p for p in flow_dir.glob(name.split("_")[0] + "_*.png")])
                    raise DataValidationError(
                        f"frame counts disagree: {flow_dir / name} is missing ({flow_dir} has {n_kind} "
                        f"{name.split('_')[0]} files, images/ has {len(all_stems)} frames, frame_step "
                        f"{frame_step}); run the flow preprocessing with --frame_step {frame_step} "
                        f"(scripts/run_flow.py; {REAL_FIX})")
        fwd_f, fwd_v, bwd_f, bwd_v = [], [], [], []
        for fwd_name, bwd_name in names:
            enc = []
            for name in (fwd_name, bwd_name):
                e = read_flow_png(flow_dir / name)
                _check_aspect(flow_dir / name, e.shape, "flow file")
                enc.append(e)
            scale = hw[0] / enc[0].shape[0]
            (ff, fv), (bf, bv) = (decode_flow(_resize(e, hw, "area")) for e in enc)
            fwd_f.append(ff * scale)
            bwd_f.append(bf * scale)
            fwd_v.append(fv)
            bwd_v.append(bv)
        data.fwd_flow, data.fwd_valid = np.stack(fwd_f), np.stack(fwd_v)
        data.bwd_flow, data.bwd_valid = np.stack(bwd_f), np.stack(bwd_v)

    mask_dir = root / MASK_DIR
    if mask_dir.is_dir():
        data.masks = np.stack([
            _read_mask(mask_dir / f"{s}.png", hw, "mask") if (mask_dir / f"{s}.png").is_file()
            else np.ones(hw, bool) for s in stems])
    eval_dir = root / EVAL_MASK_DIR
    for k in np.flatnonzero(test):
        s = stems[k]
        if eval_dir.is_dir():
            if (eval_dir / f"{s}.png").is_file():
                data.eval_masks[int(k)] = _read_mask(eval_dir / f"{s}.png", hw, "evaluation mask")
        elif (mask_dir / f"{s}.png").is_file():
            data.eval_masks[int(k)] = ~_read_mask(mask_dir / f"{s}.png", hw, "mask")

    if (root / TRAJ_FILE).is_file():
        data.w2c = _read_traj(root / TRAJ_FILE, len(all_stems))[::frame_step]

    gt_dir = root / GT_DIR
    if load_gt and gt_dir.is_dir():
        gt = _load_gt(gt_dir, stems, all_stems, images_dir, hw0)
        if hw != hw0:
            gt = GroundTruth(np.stack([_resize(x, hw, "area") for x in gt.static]),
                             np.stack([_resize(x, hw, "nearest") for x in gt.dyn_ids]),
                             np.stack([_resize(x, hw, "nearest") for x in gt.depth]),
                             np.stack([_resize(x, hw, "nearest") for x in gt.depth_static]), gt.c2w)
        data.gt = gt
    return data
