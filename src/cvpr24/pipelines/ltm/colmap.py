"""Camera files of LTM's datasets (spec 3): COLMAP sparse models (binary and text), LLFF ``poses_bounds.npy`` and
NeRF / instant-ngp ``transforms.json``, one neutral camera type (:class:`Cameras`) and the conversions between them.

Readers and writers are our own ``struct`` / numpy implementations of the documented formats (COLMAP's "Output
Format" page and ``src/colmap/scene/reconstruction_io``; LLFF's ``imgs2poses``/``load_llff_data``; NeRF's
``load_blender`` and instant-ngp's ``nerf_loader``). Nothing here imports pycolmap.

Conventions
-----------
* World frame: whatever the files use; nothing is re-centred, re-scaled or re-oriented here (the embedded
  garden-lite scene is y-up). Scene normalisation is the pipeline's business.
* :class:`Cameras` keeps **camera-to-world matrices in OpenCV / COLMAP camera axes**: ``c2w[:, :3, 0]`` = x
  (image right), ``[:, :3, 1]`` = y (image **down**), ``[:, :3, 2]`` = z (**forward**, the viewing direction),
  ``c2w[:, :3, 3]`` = the camera centre, float64 ``(N, 4, 4)``. Intrinsics are pinhole ``fx, fy, cx, cy`` in
  pixels; pixel (row r, column c) covers [c, c+1] x [r, r+1] and its centre is (c + 0.5, r + 0.5) (COLMAP's and
  instant-ngp's convention; raster.py samples the same centres). A world point X projects to
  ``u = fx x/z + cx, v = fy y/z + cy`` with ``[x, y, z] = R_w2c X + t_w2c``.
* COLMAP (``images.bin`` / ``images.txt``): world-to-camera ``qvec`` = (qw, qx, qy, qz), a unit Hamilton
  quaternion, and ``tvec``: ``x_cam = R(qvec) X + tvec``; centre ``C = -R^T tvec``; viewing direction
  ``R^T [0, 0, 1]`` (the third row of R). :func:`rotmat_to_qvec` returns qw >= 0.
* OpenGL / NeRF / instant-ngp (``transforms.json``, and raster.py's :func:`~.raster.look_at`): camera-to-world
  with columns [right, **up**, **back**] (the camera looks down its -z axis): ``c2w_gl = c2w_cv @ diag(1, -1,
  -1, 1)`` (:func:`opencv_to_opengl`; the same matrix converts back). ``look_at(eye, target)`` equals
  ``inv(c2w_gl)``.
* LLFF (``poses_bounds.npy``): ``(N, 17)`` float64; row i = a 3x5 matrix flattened row-major, then near, far. The
  3x5 matrix is ``[c2w columns in the order (down, right, back) | camera centre | (h, w, f)]``, i.e. in OpenCV
  terms ``[y, x, -z]`` (:func:`opencv_to_llff`, :func:`llff_to_opencv`); ``h, w`` are the full-resolution image
  size (the ``images/`` folder) and ``f`` the focal length in pixels; the principal point is the image centre
  and pixels are square (LLFF cannot store anything else: :func:`write_poses_bounds` refuses). Rows follow the
  **name-sorted** image list (LLFF's ``imgs2poses`` sorts), so the file carries no names: the reader takes them.
  near/far: LLFF's are the 0.1 / 99.9 percentiles of the depths of the points a view sees.
* ``transforms.json``: ``frames[i].transform_matrix`` is the 4x4 OpenGL camera-to-world matrix and
  ``frames[i].file_path`` the image path relative to the JSON's folder (NeRF-synthetic style paths without an
  extension are tried with ``.png``). Intrinsics: instant-ngp keys ``fl_x, fl_y, cx, cy, w, h`` (top level, or
  per frame, which wins), else NeRF's ``camera_angle_x`` (+ ``camera_angle_y``): ``fx = w / (2 tan(angle_x /
  2))``, ``fy = fx`` unless ``camera_angle_y`` / ``fl_y`` is given, ``cx, cy`` = the image centre; without ``w, h``
  the image file's size is used. The writer writes both sets, ``cx, cy`` in the pixel-centre-at-+0.5 convention
  above. Distortion keys (``k1, k2, p1, p2``) must be absent or zero.
* Cameras from any source are sorted by image name (the every-8th test split of mip-NeRF 360 is taken on the
  name-sorted list).

COLMAP binary layout (little endian; ``Q`` uint64, ``I`` uint32, ``i`` int32, ``q`` int64, ``d`` float64)
--------------------------------------------------------------------------------------------------------
* ``cameras.bin``: ``Q`` count; per camera: ``I`` camera_id, ``i`` model_id, ``Q`` width, ``Q`` height, then
  ``d`` x num_params (the model's count, :data:`CAMERA_MODELS`).
* ``images.bin``: ``Q`` count; per image: ``I`` image_id, ``4d`` qvec (w, x, y, z), ``3d`` tvec, ``I``
  camera_id, the name as bytes ending in NUL, ``Q`` num_points2D, then per 2D point ``d`` x, ``d`` y,
  ``q`` point3D_id (-1: not triangulated; COLMAP writes it as uint64 max, the same bytes).
* ``points3D.bin``: ``Q`` count; per point: ``Q`` point3D_id, ``3d`` xyz, ``3B`` rgb, ``d`` reprojection error,
  ``Q`` track length, then per track element ``I`` image_id, ``I`` point2D_idx.
Text files (``cameras.txt``, ``images.txt``, ``points3D.txt``) hold the same fields as whitespace-separated
tokens, ``#`` comment lines; ``images.txt`` has two lines per image (the second, the 2D points, may be empty).
Newer COLMAP versions add ``rigs.bin`` / ``frames.bin`` beside these; they are ignored here.

Errors: a missing file raises ``MissingDatasetError`` (a ``FileNotFoundError``) naming it; a truncated or corrupt
file raises :class:`ColmapFormatError` (a ``DataValidationError``) naming the file, the record and what was
expected; an unknown camera model names the model and the known ones; an image the model lists but the image
folder lacks is reported by :func:`check_image_files` with the missing names.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError

__all__ = [
    "CAMERA_MODELS",
    "CAMERA_MODEL_IDS",
    "CAMERA_MODEL_NAMES",
    "COLMAP_FIX",
    "CameraModel",
    "Cameras",
    "ColmapCamera",
    "ColmapFormatError",
    "ColmapImage",
    "ColmapModel",
    "Points3D",
    "c2w_to_colmap_pose",
    "cameras_from_colmap",
    "check_image_files",
    "colmap_from_cameras",
    "colmap_pose_to_c2w",
    "find_model",
    "llff_to_opencv",
    "look_at_c2w",
    "opencv_to_llff",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "qvec_to_rotmat",
    "read_cameras_binary",
    "read_cameras_text",
    "read_images_binary",
    "read_images_text",
    "read_model",
    "read_points3D_binary",
    "read_points3D_text",
    "read_poses_bounds",
    "read_transforms_json",
    "rotmat_to_qvec",
    "write_cameras_binary",
    "write_images_binary",
    "write_model",
    "write_points3D_binary",
    "write_poses_bounds",
    "write_transforms_json",
]

COLMAP_FIX = ("re-export the model with `colmap model_converter --input_path sparse/0 --output_path sparse/0 "
              "--output_type BIN`, or re-download / re-copy the scene folder")
IMAGES_FIX = "re-download or re-copy the scene's images, or point the loader at the right scene folder"


class ColmapFormatError(DataValidationError):
    """A COLMAP (or LLFF / transforms.json) camera file is truncated, corrupt or holds something unsupported."""


# --------------------------------------------------------------------------------------------- camera models
class CameraModel(NamedTuple):
    model_id: int
    name: str
    num_params: int
    params: str  # the parameter order COLMAP uses


CAMERA_MODELS: tuple[CameraModel, ...] = (
    CameraModel(0, "SIMPLE_PINHOLE", 3, "f, cx, cy"),
    CameraModel(1, "PINHOLE", 4, "fx, fy, cx, cy"),
    CameraModel(2, "SIMPLE_RADIAL", 4, "f, cx, cy, k"),
    CameraModel(3, "RADIAL", 5, "f, cx, cy, k1, k2"),
    CameraModel(4, "OPENCV", 8, "fx, fy, cx, cy, k1, k2, p1, p2"),
    CameraModel(5, "OPENCV_FISHEYE", 8, "fx, fy, cx, cy, k1, k2, k3, k4"),
    CameraModel(6, "FULL_OPENCV", 12, "fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6"),
    CameraModel(7, "FOV", 5, "fx, fy, cx, cy, omega"),
    CameraModel(8, "SIMPLE_RADIAL_FISHEYE", 4, "f, cx, cy, k"),
    CameraModel(9, "RADIAL_FISHEYE", 5, "f, cx, cy, k1, k2"),
    CameraModel(10, "THIN_PRISM_FISHEYE", 12, "fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1"),
)
CAMERA_MODEL_IDS: dict[int, CameraModel] = {m.model_id: m for m in CAMERA_MODELS}
CAMERA_MODEL_NAMES: dict[str, CameraModel] = {m.name: m for m in CAMERA_MODELS}
# models whose image is a pinhole image once the distortion parameters are zero: name -> (fx, fy, cx, cy, dist)
_PINHOLE_LIKE: dict[str, tuple[int, int, int, int, slice]] = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2, slice(3, 3)),
    "PINHOLE": (0, 1, 2, 3, slice(4, 4)),
    "SIMPLE_RADIAL": (0, 0, 1, 2, slice(3, 4)),
    "RADIAL": (0, 0, 1, 2, slice(3, 5)),
    "OPENCV": (0, 1, 2, 3, slice(4, 8)),
    "FULL_OPENCV": (0, 1, 2, 3, slice(4, 12)),
}


def _known_models() -> str:
    return ", ".join(f"{m.model_id} {m.name}" for m in CAMERA_MODELS)


def _model_by_id(model_id: int, path: Path, record: str) -> CameraModel:
    if model_id not in CAMERA_MODEL_IDS:
        raise ColmapFormatError(f"{path}: {record} has camera model id {model_id}, which is not a COLMAP camera "
                                f"model (known: {_known_models()}); the file is corrupt or from an unsupported "
                                f"COLMAP version: {COLMAP_FIX}")
    return CAMERA_MODEL_IDS[model_id]


def _model_by_name(name: str, path: Path | str, record: str) -> CameraModel:
    if name not in CAMERA_MODEL_NAMES:
        raise ColmapFormatError(f"{path}: {record} has camera model {name!r}, which is not a COLMAP camera model "
                                f"(known: {_known_models()}); {COLMAP_FIX}")
    return CAMERA_MODEL_NAMES[name]


# --------------------------------------------------------------------------------------------- model records
@dataclass
class ColmapCamera:
    """One entry of ``cameras.bin``: ``params`` in the model's order (:data:`CAMERA_MODELS`)."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        expected = _model_by_name(self.model, "<camera>", f"camera {self.id}").num_params
        if self.params.size != expected:
            raise ValueError(f"camera {self.id}: model {self.model} takes {expected} parameters, got "
                             f"{self.params.size}")


@dataclass
class ColmapImage:
    """One entry of ``images.bin``: world-to-camera pose, its camera, the file name and its 2D points."""

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    def __post_init__(self) -> None:
        self.qvec = np.asarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.asarray(self.tvec, dtype=np.float64).reshape(3)
        self.xys = np.asarray(self.xys, dtype=np.float64).reshape(-1, 2)
        self.point3D_ids = np.asarray(self.point3D_ids, dtype=np.int64).reshape(-1)
        if len(self.xys) != len(self.point3D_ids):
            raise ValueError(f"image {self.id}: {len(self.xys)} 2D points but {len(self.point3D_ids)} point3D ids")

    @property
    def rotation(self) -> np.ndarray:
        return qvec_to_rotmat(self.qvec)


@dataclass
class Points3D:
    """``points3D.bin`` as arrays: point ``k`` has id ``ids[k]``, track elements
    ``track_image_ids[track_offsets[k]:track_offsets[k + 1]]`` (and the matching ``track_point2D_idxs``)."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    track_offsets: np.ndarray
    track_image_ids: np.ndarray
    track_point2D_idxs: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        n = len(self.ids)
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(n, 3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(n, 3)
        self.error = np.asarray(self.error, dtype=np.float64).reshape(n)
        self.track_offsets = np.asarray(self.track_offsets, dtype=np.int64).reshape(n + 1)
        self.track_image_ids = np.asarray(self.track_image_ids, dtype=np.int64).reshape(-1)
        self.track_point2D_idxs = np.asarray(self.track_point2D_idxs, dtype=np.int64).reshape(-1)
        if self.track_offsets[0] != 0 or np.any(np.diff(self.track_offsets) < 0) or \
                self.track_offsets[-1] != len(self.track_image_ids) or \
                len(self.track_image_ids) != len(self.track_point2D_idxs):
            raise ValueError("Points3D: track_offsets must start at 0, not decrease and end at the track length")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Points3D:
        return cls(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(1), np.zeros(0),
                   np.zeros(0))

    @classmethod
    def from_tracks(cls, ids: Sequence[int], xyz: np.ndarray, rgb: np.ndarray, error: Sequence[float],
                    tracks: Sequence[Sequence[tuple[int, int]]]) -> Points3D:
        """Build from one list of (image_id, point2D_idx) pairs per point."""
        lengths = [len(t) for t in tracks]
        flat = [pair for t in tracks for pair in t]
        pairs = np.asarray(flat, dtype=np.int64).reshape(-1, 2)
        return cls(np.asarray(ids), xyz, rgb, np.asarray(error), np.concatenate([[0], np.cumsum(lengths)]),
                   pairs[:, 0], pairs[:, 1])

    def track(self, k: int) -> list[tuple[int, int]]:
        s, e = self.track_offsets[k], self.track_offsets[k + 1]
        return list(zip(self.track_image_ids[s:e].tolist(), self.track_point2D_idxs[s:e].tolist(), strict=True))


@dataclass
class ColmapModel:
    """A sparse model: cameras and images keyed by id, the 3D points as arrays."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points3D: Points3D = field(default_factory=Points3D.empty)
    path: Path | None = None  # the folder it was read from


# --------------------------------------------------------------------------------------------- rotations
def qvec_to_rotmat(qvec: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotation matrix of a (qw, qx, qy, qz) Hamilton quaternion (normalised first); ``(..., 4) -> (..., 3, 3)``."""
    q = np.asarray(qvec, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12) or not np.all(np.isfinite(q)):
        raise ValueError(f"qvec must be a finite non-zero quaternion, got {q}")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def rotmat_to_qvec(rotmat: np.ndarray) -> np.ndarray:
    """(qw, qx, qy, qz) with qw >= 0 of a rotation matrix ``(3, 3)`` (or ``(..., 3, 3)``); Shepperd's method (the
    largest of |qw|, |qx|, |qy|, |qz| is taken from the diagonal, the others from off-diagonal sums), normalised."""
    r = np.asarray(rotmat, dtype=np.float64)
    m = r.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    cand = np.stack([m00 + m11 + m22, m00 - m11 - m22, m11 - m00 - m22, m22 - m00 - m11], 1)
    case = np.argmax(cand, axis=1)
    s = 2.0 * np.sqrt(np.maximum(1.0 + cand[np.arange(len(m)), case], 1e-300))  # = 4 |largest component|
    # rows: the quaternion (w, x, y, z) for each case, times s
    opts = np.stack([
        np.stack([s * s / 4, m21 - m12, m02 - m20, m10 - m01], 1),
        np.stack([m21 - m12, s * s / 4, m01 + m10, m02 + m20], 1),
        np.stack([m02 - m20, m01 + m10, s * s / 4, m12 + m21], 1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, s * s / 4], 1),
    ], 1)
    q = opts[np.arange(len(m)), case] / s[:, None]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0
    return q.reshape(r.shape[:-2] + (4,))


def colmap_pose_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """World-to-camera (qvec, tvec) -> 4x4 camera-to-world in OpenCV camera axes."""
    r = qvec_to_rotmat(qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -r.T @ np.asarray(tvec, dtype=np.float64)
    return c2w


def c2w_to_colmap_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 (or 3x4) camera-to-world in OpenCV axes -> COLMAP world-to-camera (qvec, tvec)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    r = c2w[:3, :3].T
    return rotmat_to_qvec(r), -r @ c2w[:3, 3]


_GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world ``(..., 4, 4)`` with OpenCV axes (right, down, forward) -> OpenGL axes (right, up, back)."""
    return np.asarray(c2w, dtype=np.float64) @ _GL_FLIP


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """The inverse of :func:`opencv_to_opengl` (the same axis flip)."""
    return np.asarray(c2w, dtype=np.float64) @ _GL_FLIP


def opencv_to_llff(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world ``(N, 4, 4)`` (OpenCV axes) -> LLFF's ``(N, 3, 4)`` [down, right, back | centre]."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return np.stack([c2w[..., :3, 1], c2w[..., :3, 0], -c2w[..., :3, 2], c2w[..., :3, 3]], axis=-1)


def llff_to_opencv(m: np.ndarray) -> np.ndarray:
    """LLFF ``(N, 3, 4+)`` [down, right, back | centre (| hwf)] -> camera-to-world ``(N, 4, 4)`` in OpenCV axes."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros(m.shape[:-2] + (4, 4))
    out[..., :3, 0], out[..., :3, 1], out[..., :3, 2] = m[..., :, 1], m[..., :, 0], -m[..., :, 2]
    out[..., :3, 3] = m[..., :, 3]
    out[..., 3, 3] = 1.0
    return out


def look_at_c2w(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 camera-to-world (OpenCV axes) of a camera at ``eye`` looking at ``target``, image up ≈ ``up``."""
    e, t, u = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    fwd = t - e
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, u)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"look_at_c2w: viewing direction {fwd} is parallel to up {u}")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, e
    return c2w


# --------------------------------------------------------------------------------------------- neutral cameras
@dataclass
class Cameras:
    """N pinhole cameras: image names, sizes, intrinsics (pixels) and camera-to-world in OpenCV axes (see the
    module docstring). ``near`` / ``far`` are per-view depth bounds when the source has them (LLFF)."""

    names: list[str]
    width: np.ndarray
    height: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    c2w: np.ndarray
    near: np.ndarray | None = None
    far: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        n = len(self.names)
        self.width = np.broadcast_to(np.asarray(self.width, dtype=np.int64), (n,)).copy()
        self.height = np.broadcast_to(np.asarray(self.height, dtype=np.int64), (n,)).copy()
        for key in ("fx", "fy", "cx", "cy"):
            setattr(self, key, np.broadcast_to(np.asarray(getattr(self, key), dtype=np.float64), (n,)).copy())
        self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(n, 4, 4)
        for key in ("near", "far"):
            if getattr(self, key) is not None:
                setattr(self, key, np.asarray(getattr(self, key), dtype=np.float64).reshape(n))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def centers(self) -> np.ndarray:
        """Camera centres in world coordinates ``(N, 3)``."""
        return self.c2w[:, :3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing directions (the optical axes) in world coordinates ``(N, 3)``."""
        return self.c2w[:, :3, 2].copy()

    @property
    def w2c(self) -> np.ndarray:
        """World-to-camera ``(N, 4, 4)`` (OpenCV axes; what COLMAP's qvec/tvec encode)."""
        return np.linalg.inv(self.c2w)

    @property
    def c2w_opengl(self) -> np.ndarray:
        return opencv_to_opengl(self.c2w)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the usual name of the intrinsic matrix)
        k = np.zeros((len(self), 3, 3))
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1.0
        return k

    def subset(self, idx: Sequence[int] | np.ndarray) -> Cameras:
        idx = np.asarray(idx, dtype=np.int64)
        return Cameras([self.names[i] for i in idx], self.width[idx], self.height[idx], self.fx[idx],
                       self.fy[idx], self.cx[idx], self.cy[idx], self.c2w[idx],
                       None if self.near is None else self.near[idx], None if self.far is None else self.far[idx])

    def sorted_by_name(self) -> Cameras:
        return self.subset(sorted(range(len(self)), key=lambda i: self.names[i]))

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras for images resized from (self.width, self.height) to (width, height) (all views the
        same size): intrinsics scale with the size ratio per axis (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        return Cameras(self.names, width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                       self.c2w, self.near, self.far)

    def project(self, i: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(P, 2)`` (u to the right, v down, centres at +0.5) and camera z-depth ``(P,)`` of
        world points in view ``i``."""
        w2c = self.w2c[i]
        cam = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx[i] * cam[:, 0] / z + self.cx[i], self.fy[i] * cam[:, 1] / z + self.cy[i]], 1)
        return uv, z

    def pixel_rays(self, i: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World-space origins and unit directions of the rays through pixel coordinates (u, v) of view ``i``
        (continuous coordinates: the centre of pixel (r, c) is u = c + 0.5, v = r + 0.5). Shapes follow u."""
        u, v = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
        d_cam = np.stack([(u - self.cx[i]) / self.fx[i], (v - self.cy[i]) / self.fy[i], np.ones_like(u)], -1)
        d = d_cam @ self.c2w[i, :3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(self.c2w[i, :3, 3], d.shape).copy(), d

    def validate(self, source: str | Path, fix: str) -> None:
        """DataValidationError naming ``source`` and ``fix`` for non-finite values, non-positive sizes or focal
        lengths, or rotations that are not orthonormal."""
        bad = [k for k in ("fx", "fy", "cx", "cy", "c2w") if not np.all(np.isfinite(getattr(self, k)))]
        for key in ("near", "far"):
            if getattr(self, key) is not None and not np.all(np.isfinite(getattr(self, key))):
                bad.append(key)
        if bad:
            raise DataValidationError(f"{source}: non-finite (NaN or inf) camera values in {bad}; {fix}")
        if np.any(self.width <= 0) or np.any(self.height <= 0) or np.any(self.fx <= 0) or np.any(self.fy <= 0):
            raise DataValidationError(f"{source}: image sizes and focal lengths must be positive; {fix}")
        r = self.c2w[:, :3, :3]
        err = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(axis=(1, 2))
        det = np.linalg.det(r)
        wrong = np.flatnonzero((err > 1e-3) | (det < 0))
        if len(wrong):
            i = int(wrong[0])
            raise DataValidationError(f"{source}: the rotation of view {self.names[i]!r} is not a proper rotation "
                                      f"(|R R^T - I| = {err[i]:.2g}, det {det[i]:.3g}); {fix}")


# --------------------------------------------------------------------------------------------- binary I/O
class _Reader:
    """Sequential little-endian reads from a file's bytes, with errors that name the file, the record and what was
    expected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise MissingDatasetError(f"COLMAP file {path} not found: {COLMAP_FIX}")
        self.buf = path.read_bytes()
        self.pos = 0

    def _truncated(self, need: int, what: str, record: str) -> ColmapFormatError:
        have = len(self.buf) - self.pos
        return ColmapFormatError(f"{self.path}: truncated in {record}: expected {need} more bytes for {what} at byte "
                                 f"offset {self.pos}, the file ends after {have} (file size {len(self.buf)}); the "
                                 f"file is incomplete or corrupt: {COLMAP_FIX}")

    def unpack(self, fmt: str, what: str, record: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise self._truncated(size, what, record)
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def array(self, dtype: np.dtype, count: int, what: str, record: str) -> np.ndarray:
        size = int(count) * np.dtype(dtype).itemsize
        if count < 0 or self.pos + size > len(self.buf):
            raise self._truncated(size, what, record)
        out = np.frombuffer(self.buf, dtype=dtype, count=int(count), offset=self.pos)
        self.pos += size
        return out

    def cstring(self, what: str, record: str) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise ColmapFormatError(f"{self.path}: truncated in {record}: {what} (a NUL-terminated string starting at "
                                    f"byte offset {self.pos}) never ends; the file is incomplete or corrupt: "
                                    f"{COLMAP_FIX}")
        raw = self.buf[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ColmapFormatError(f"{self.path}: {record}: {what} is not UTF-8 text ({exc}); the file is corrupt: "
                                    f"{COLMAP_FIX}") from exc

    def count(self, kind: str) -> int:
        (n,) = self.unpack("Q", f"the number of {kind}", "the header")
        return int(n)

    def finish(self, n: int, kind: str) -> None:
        if self.pos != len(self.buf):
            raise ColmapFormatError(f"{self.path}: {len(self.buf) - self.pos} unexpected bytes after the last of the "
                                    f"{n} {kind} the header announces (at byte offset {self.pos}); the record count "
                                    f"or a record is corrupt: {COLMAP_FIX}")


def read_cameras_binary(path: str | Path) -> dict[int, ColmapCamera]:
    """``cameras.bin`` -> {camera_id: ColmapCamera}."""
    rd = _Reader(Path(path))
    n = rd.count("cameras")
    cameras: dict[int, ColmapCamera] = {}
    for k in range(n):
        record = f"camera record {k + 1} of {n}"
        cam_id, model_id, width, height = rd.unpack("IiQQ", "camera_id, model_id, width, height (24 bytes)", record)
        model = _model_by_id(model_id, rd.path, f"{record} (camera_id {cam_id})")
        params = rd.array(np.dtype("<f8"), model.num_params,
                          f"the {model.num_params} float64 parameters of a {model.name} camera", record)
        if cam_id in cameras:
            raise ColmapFormatError(f"{rd.path}: {record}: camera_id {cam_id} appears twice; {COLMAP_FIX}")
        cameras[cam_id] = ColmapCamera(cam_id, model.name, int(width), int(height), params.astype(np.float64))
    rd.finish(n, "cameras")
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
_TRACK = np.dtype([("image_id", "<u4"), ("point2D_idx", "<u4")])


def read_images_binary(path: str | Path) -> dict[int, ColmapImage]:
    """``images.bin`` -> {image_id: ColmapImage}."""
    rd = _Reader(Path(path))
    n = rd.count("images")
    images: dict[int, ColmapImage] = {}
    for k in range(n):
        record = f"image record {k + 1} of {n}"
        vals = rd.unpack("I4d3dI", "image_id, qvec (4 float64), tvec (3 float64), camera_id (64 bytes)", record)
        image_id, qvec, tvec, cam_id = vals[0], vals[1:5], vals[5:8], vals[8]
        record = f"image record {k + 1} of {n} (image_id {image_id})"
        name = rd.cstring("the image name", record)
        (n2d,) = rd.unpack("Q", "the number of 2D points", f"{record}, name {name!r}")
        pts = rd.array(_POINT2D, n2d, f"{n2d} 2D points of 24 bytes (x, y float64, point3D_id int64)",
                       f"{record}, name {name!r}")
        if image_id in images:
            raise ColmapFormatError(f"{rd.path}: {record}: image_id {image_id} appears twice; {COLMAP_FIX}")
        images[image_id] = ColmapImage(image_id, np.array(qvec), np.array(tvec), cam_id, name,
                                       np.stack([pts["x"], pts["y"]], 1), pts["id"].astype(np.int64))
    rd.finish(n, "images")
    return images


def read_points3D_binary(path: str | Path) -> Points3D:  # noqa: N802 (COLMAP's file name)
    """``points3D.bin`` -> :class:`Points3D`."""
    rd = _Reader(Path(path))
    n = rd.count("3D points")
    if n * 51 > len(rd.buf) - rd.pos:  # 51 bytes = the smallest record (an empty track)
        raise ColmapFormatError(f"{rd.path}: the header announces {n} 3D points, more than a file of "
                                f"{len(rd.buf)} bytes can hold (51+ bytes each); the file is corrupt: {COLMAP_FIX}")
    ids, xyz, rgb, err = np.empty(n, dtype=np.int64), np.empty((n, 3)), np.empty((n, 3), dtype=np.uint8), np.empty(n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    tracks: list[np.ndarray] = []
    for k in range(n):
        record = f"3D point record {k + 1} of {n}"
        vals = rd.unpack("Q3d3BdQ", "point3D_id, xyz (3 float64), rgb (3 uint8), error, track length (51 bytes)",
                         record)
        ids[k], xyz[k], rgb[k], err[k] = vals[0], vals[1:4], vals[4:7], vals[7]
        tr = rd.array(_TRACK, vals[8], f"a track of {vals[8]} (image_id, point2D_idx) uint32 pairs",
                      f"{record} (point3D_id {vals[0]})")
        tracks.append(tr)
        offsets[k + 1] = offsets[k] + len(tr)
    rd.finish(n, "3D points")
    flat = np.concatenate(tracks) if tracks else np.zeros(0, dtype=_TRACK)
    return Points3D(ids, xyz, rgb, err, offsets, flat["image_id"].astype(np.int64),
                    flat["point2D_idx"].astype(np.int64))


def write_cameras_binary(cameras: dict[int, ColmapCamera] | Iterable[ColmapCamera], path: str | Path) -> None:
    cams = list(cameras.values()) if isinstance(cameras, dict) else list(cameras)
    chunks = [struct.pack("<Q", len(cams))]
    for cam in cams:
        model = _model_by_name(cam.model, path, f"camera {cam.id}")
        if cam.params.size != model.num_params:
            raise ValueError(f"camera {cam.id}: model {model.name} takes {model.num_params} parameters, got "
                             f"{cam.params.size}")
        chunks.append(struct.pack("<IiQQ", cam.id, model.model_id, cam.width, cam.height))
        chunks.append(cam.params.astype("<f8").tobytes())
    Path(path).write_bytes(b"".join(chunks))


def write_images_binary(images: dict[int, ColmapImage] | Iterable[ColmapImage], path: str | Path) -> None:
    imgs = list(images.values()) if isinstance(images, dict) else list(images)
    chunks = [struct.pack("<Q", len(imgs))]
    for im in imgs:
        name = im.name.encode("utf-8")
        if b"\x00" in name:
            raise ValueError(f"image {im.id}: the name {im.name!r} contains a NUL byte")
        chunks.append(struct.pack("<I4d3dI", im.id, *im.qvec.tolist(), *im.tvec.tolist(), im.camera_id))
        chunks.append(name + b"\x00")
        chunks.append(struct.pack("<Q", len(im.xys)))
        pts = np.empty(len(im.xys), dtype=_POINT2D)
        pts["x"], pts["y"], pts["id"] = im.xys[:, 0], im.xys[:, 1], im.point3D_ids
        chunks.append(pts.tobytes())
    Path(path).write_bytes(b"".join(chunks))


def write_points3D_binary(points: Points3D, path: str | Path) -> None:  # noqa: N802 (COLMAP's file name)
    chunks = [struct.pack("<Q", len(points))]
    for k in range(len(points)):
        s, e = points.track_offsets[k], points.track_offsets[k + 1]
        chunks.append(struct.pack("<Q3d3BdQ", int(points.ids[k]), *points.xyz[k].tolist(), *points.rgb[k].tolist(),
                                  float(points.error[k]), int(e - s)))
        tr = np.empty(int(e - s), dtype=_TRACK)
        tr["image_id"], tr["point2D_idx"] = points.track_image_ids[s:e], points.track_point2D_idxs[s:e]
        chunks.append(tr.tobytes())
    Path(path).write_bytes(b"".join(chunks))


def write_model(model: ColmapModel, folder: str | Path) -> Path:
    """Write ``cameras.bin``, ``images.bin`` and ``points3D.bin`` into ``folder`` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_cameras_binary(model.cameras, folder / "cameras.bin")
    write_images_binary(model.images, folder / "images.bin")
    write_points3D_binary(model.points3D, folder / "points3D.bin")
    return folder


# --------------------------------------------------------------------------------------------- text I/O
def _data_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise MissingDatasetError(f"COLMAP file {path} not found: {COLMAP_FIX}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ColmapFormatError(f"{path} is not a UTF-8 text file ({exc}); {COLMAP_FIX}") from exc
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]


def _parse(tokens: Sequence[str], kinds: str, path: Path, lineno: int, what: str) -> list[Any]:
    try:
        return [int(t) if k == "i" else float(t) for t, k in zip(tokens, kinds, strict=True)]
    except ValueError as exc:
        raise ColmapFormatError(f"{path}, line {lineno}: cannot parse {what} from {' '.join(tokens)!r} ({exc}); "
                                f"{COLMAP_FIX}") from exc


def read_cameras_text(path: str | Path) -> dict[int, ColmapCamera]:
    """``cameras.txt``: one ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` line per camera."""
    path = Path(path)
    cameras: dict[int, ColmapCamera] = {}
    for lineno, line in _data_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 4:
            raise ColmapFormatError(f"{path}, line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got "
                                    f"{line!r}; {COLMAP_FIX}")
        model = _model_by_name(tok[1], path, f"line {lineno} (camera {tok[0]})")
        if len(tok) != 4 + model.num_params:
            raise ColmapFormatError(f"{path}, line {lineno}: a {model.name} camera has {model.num_params} parameters "
                                    f"({model.params}), the line has {len(tok) - 4}; {COLMAP_FIX}")
        cam_id, width, height = _parse([tok[0], tok[2], tok[3]], "iii", path, lineno, "CAMERA_ID WIDTH HEIGHT")
        params = _parse(tok[4:], "f" * model.num_params, path, lineno, "the camera parameters")
        cameras[cam_id] = ColmapCamera(cam_id, model.name, width, height, np.array(params))
    return cameras


def read_images_text(path: str | Path) -> dict[int, ColmapImage]:
    """``images.txt``: per image a line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and the next line (possibly
    empty) ``X Y POINT3D_ID ...``, as COLMAP reads it."""
    path = Path(path)
    lines = _data_lines(path)
    images: dict[int, ColmapImage] = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 10:
            raise ColmapFormatError(f"{path}, line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, "
                                    f"got {line!r}; {COLMAP_FIX}")
        vals = _parse(tok[:9], "i" + "f" * 7 + "i", path, lineno, "the image pose")
        name = " ".join(tok[9:])
        pts_line = lines[i][1] if i < len(lines) else ""
        pts_lineno = lines[i][0] if i < len(lines) else lineno + 1
        i += 1
        ptok = pts_line.split()
        if len(ptok) % 3:
            raise ColmapFormatError(f"{path}, line {pts_lineno}: the 2D points of image {vals[0]} ({name}) must be "
                                    f"X Y POINT3D_ID triples, got {len(ptok)} tokens; {COLMAP_FIX}")
        parsed = _parse(ptok, "ffi" * (len(ptok) // 3), path, pts_lineno, f"the 2D points of image {vals[0]}")
        arr = np.asarray(parsed, dtype=np.float64).reshape(-1, 3)
        ids = np.asarray(parsed[2::3], dtype=np.int64)
        images[vals[0]] = ColmapImage(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name,
                                      arr[:, :2], ids)
    return images


def read_points3D_text(path: str | Path) -> Points3D:  # noqa: N802 (COLMAP's file name)
    """``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)``."""
    path = Path(path)
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for lineno, line in _data_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 8 or (len(tok) - 8) % 2:
            raise ColmapFormatError(f"{path}, line {lineno}: expected POINT3D_ID X Y Z R G B ERROR and (IMAGE_ID, "
                                    f"POINT2D_IDX) pairs, got {len(tok)} tokens; {COLMAP_FIX}")
        vals = _parse(tok, "ifffiiif" + "ii" * ((len(tok) - 8) // 2), path, lineno, "a 3D point")
        ids.append(vals[0])
        xyz.append(vals[1:4])
        rgb.append(vals[4:7])
        err.append(vals[7])
        tracks.append(list(zip(vals[8::2], vals[9::2], strict=True)))
    if not ids:
        return Points3D.empty()
    return Points3D.from_tracks(ids, np.array(xyz), np.array(rgb), err, tracks)


def find_model(folder: str | Path) -> tuple[Path, str] | None:
    """(folder, "bin" | "txt") of the sparse model in ``folder`` (``cameras.bin`` + ``images.bin`` preferred over
    ``cameras.txt`` + ``images.txt``), or None."""
    folder = Path(folder)
    for ext in ("bin", "txt"):
        if (folder / f"cameras.{ext}").is_file() and (folder / f"images.{ext}").is_file():
            return folder, ext
    return None


def read_model(folder: str | Path) -> ColmapModel:
    """The sparse model in ``folder`` (binary preferred, text otherwise); ``points3D`` is empty when the folder has
    no points file. MissingDatasetError when neither cameras+images pair is there."""
    folder = Path(folder)
    found = find_model(folder)
    if found is None:
        raise MissingDatasetError(f"no COLMAP sparse model (cameras.bin + images.bin, or cameras.txt + images.txt) "
                                  f"in {folder}: {COLMAP_FIX}")
    _, ext = found
    if ext == "bin":
        cams, imgs = read_cameras_binary(folder / "cameras.bin"), read_images_binary(folder / "images.bin")
        pts_path, reader = folder / "points3D.bin", read_points3D_binary
    else:
        cams, imgs = read_cameras_text(folder / "cameras.txt"), read_images_text(folder / "images.txt")
        pts_path, reader = folder / "points3D.txt", read_points3D_text
    points = reader(pts_path) if pts_path.is_file() else Points3D.empty()
    model = ColmapModel(cams, imgs, points, folder)
    _check_references(model, folder, ext)
    return model


def _check_references(model: ColmapModel, folder: Path, ext: str) -> None:
    for im in model.images.values():
        if im.camera_id not in model.cameras:
            raise ColmapFormatError(f"{folder / f'images.{ext}'}: image {im.id} ({im.name}) refers to camera "
                                    f"{im.camera_id}, which {folder / f'cameras.{ext}'} does not have "
                                    f"(cameras: {sorted(model.cameras)}); {COLMAP_FIX}")
    names = [im.name for im in model.images.values()]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ColmapFormatError(f"{folder / f'images.{ext}'}: image names {dup[:5]} appear more than once; "
                                f"{COLMAP_FIX}")


# --------------------------------------------------------------------------------------------- model <-> Cameras
def cameras_from_colmap(model: ColmapModel, *, max_distortion: float = 0.0) -> Cameras:
    """Pinhole :class:`Cameras` (sorted by image name) of a sparse model. Models with distortion terms are accepted
    only when every distortion parameter is at most ``max_distortion`` in magnitude (undistort the images first,
    e.g. ``colmap image_undistorter``); fisheye / FOV models are refused."""
    where = model.path if model.path is not None else "<COLMAP model>"
    rows = []
    for im in sorted(model.images.values(), key=lambda m: m.name):
        cam = model.cameras[im.camera_id]
        if cam.model not in _PINHOLE_LIKE:
            raise ColmapFormatError(f"{where}: camera {cam.id} ({cam.model}, used by {im.name}) is not a pinhole "
                                    f"model; undistort the images to PINHOLE with `colmap image_undistorter` "
                                    f"(supported: {sorted(_PINHOLE_LIKE)})")
        ifx, ify, icx, icy, dist = _PINHOLE_LIKE[cam.model]
        d = cam.params[dist]
        if d.size and np.abs(d).max() > max_distortion:
            raise ColmapFormatError(f"{where}: camera {cam.id} ({cam.model}, used by {im.name}) has distortion "
                                    f"parameters {d.tolist()}; the pipeline needs undistorted pinhole images: run "
                                    f"`colmap image_undistorter` on the scene (or raise max_distortion)")
        p = cam.params
        rows.append((im.name, cam.width, cam.height, p[ifx], p[ify], p[icx], p[icy],
                     colmap_pose_to_c2w(im.qvec, im.tvec)))
    if not rows:
        raise ColmapFormatError(f"{where}: the sparse model has no images; {COLMAP_FIX}")
    names, w, h, fx, fy, cx, cy, c2w = zip(*rows, strict=True)
    return Cameras(list(names), np.array(w), np.array(h), np.array(fx), np.array(fy), np.array(cx), np.array(cy),
                   np.stack(c2w))


def colmap_from_cameras(cams: Cameras, points: Points3D | None = None,
                        observations: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> ColmapModel:
    """A sparse model of ``cams``: one PINHOLE camera per distinct (size, intrinsics), image ids 1..N in the given
    order. ``observations[i] = (xys (K, 2), point3D_ids (K,))`` are image i's 2D points (none by default)."""
    cameras: dict[int, ColmapCamera] = {}
    key_to_id: dict[tuple[float, ...], int] = {}
    images: dict[int, ColmapImage] = {}
    for i in range(len(cams)):
        key = (float(cams.width[i]), float(cams.height[i]), cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i])
        if key not in key_to_id:
            key_to_id[key] = len(key_to_id) + 1
            cameras[key_to_id[key]] = ColmapCamera(key_to_id[key], "PINHOLE", int(cams.width[i]),
                                                   int(cams.height[i]), np.array(key[2:]))
        qvec, tvec = c2w_to_colmap_pose(cams.c2w[i])
        xys, pids = observations[i] if observations is not None else (np.zeros((0, 2)), np.zeros(0, np.int64))
        images[i + 1] = ColmapImage(i + 1, qvec, tvec, key_to_id[key], cams.names[i], xys, pids)
    return ColmapModel(cameras, images, points if points is not None else Points3D.empty())


def check_image_files(names: Iterable[str], image_dir: str | Path, source: str | Path) -> list[Path]:
    """The files ``image_dir/name`` of every name ``source`` lists; MissingDatasetError naming ``source``, the folder
    and (up to 5 of) the missing names when any is absent."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise MissingDatasetError(f"image folder {image_dir} (for the images {source} lists) not found: "
                                  f"{IMAGES_FIX}")
    paths = [image_dir / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MissingDatasetError(f"{len(missing)} image(s) that {source} lists are missing from {image_dir}: "
                                  f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; {IMAGES_FIX}")
    return paths


# --------------------------------------------------------------------------------------------- LLFF
def write_poses_bounds(path: str | Path, cams: Cameras, near: np.ndarray | None = None,
                       far: np.ndarray | None = None, *, atol: float = 1e-6) -> None:
    """Write ``poses_bounds.npy`` (N x 17 float64, rows in the name-sorted order of ``cams``). LLFF stores one focal
    length and a centred principal point: other cameras raise ValueError."""
    cams = cams.sorted_by_name()
    near = cams.near if near is None else np.asarray(near, dtype=np.float64)
    far = cams.far if far is None else np.asarray(far, dtype=np.float64)
    if near is None or far is None:
        raise ValueError("poses_bounds.npy needs near and far bounds per view (pass near=, far=)")
    off = np.abs(cams.fx - cams.fy).max(initial=0.0), np.abs(cams.cx - cams.width / 2).max(initial=0.0), \
        np.abs(cams.cy - cams.height / 2).max(initial=0.0)
    if max(off) > atol * max(1.0, float(cams.fx.max(initial=1.0))):
        raise ValueError(f"poses_bounds.npy stores square pixels and a centred principal point only; these cameras "
                         f"differ by |fx - fy| {off[0]:.3g}, |cx - w/2| {off[1]:.3g}, |cy - h/2| {off[2]:.3g} px")
    m = np.concatenate([opencv_to_llff(cams.c2w),
                        np.stack([cams.height, cams.width, cams.fx], 1).astype(np.float64)[:, :, None]], axis=2)
    arr = np.concatenate([m.reshape(len(cams), 15), near[:, None], far[:, None]], axis=1)
    with open(path, "wb") as fh:
        np.save(fh, arr.astype(np.float64))


def read_poses_bounds(path: str | Path, names: Sequence[str] | None = None) -> Cameras:
    """``poses_bounds.npy`` -> :class:`Cameras` with near/far; ``names`` = the name-sorted image names the rows
    belong to (placeholders ``"{i:05d}"`` when not given)."""
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetError(f"{path} not found: re-download or re-copy the scene folder")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ColmapFormatError(f"{path} is not a readable .npy file ({exc}); re-download or re-copy it") from exc
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.floating):
        raise ColmapFormatError(f"{path}: expected an (N, 17) float array (LLFF 3x5 pose + near, far per image), got "
                                f"{arr.shape} {arr.dtype}; re-download or re-copy it")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        rows = np.flatnonzero(~np.isfinite(arr).all(1))
        raise ColmapFormatError(f"{path}: rows {rows[:5].tolist()} hold NaN or inf; re-download or re-copy it")
    n = len(arr)
    if names is None:
        names = [f"{i:05d}" for i in range(n)]
    names = sorted(str(x) for x in names)
    if len(names) != n:
        raise ColmapFormatError(f"{path} holds {n} poses but there are {len(names)} images; poses_bounds.npy has "
                                f"one row per image of the name-sorted list: re-generate it (LLFF imgs2poses) or "
                                f"remove the extra images")
    m = arr[:, :15].reshape(n, 3, 5)
    h, w, f = m[:, 0, 4], m[:, 1, 4], m[:, 2, 4]
    if np.any(np.abs(h - np.round(h)) > 1e-6) or np.any(np.abs(w - np.round(w)) > 1e-6):
        raise ColmapFormatError(f"{path}: image sizes (h, w) in column 5 are not integers; not an LLFF file?")
    cams = Cameras(list(names), np.round(w), np.round(h), f, f, w / 2, h / 2, llff_to_opencv(m[:, :, :4]),
                   arr[:, 15], arr[:, 16])
    cams.validate(path, "re-download or re-copy poses_bounds.npy")
    return cams


# --------------------------------------------------------------------------------------------- transforms.json
_DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def write_transforms_json(path: str | Path, cams: Cameras, *, image_dir: str = "images",
                          extra: dict[str, Any] | None = None) -> None:
    """Write a NeRF / instant-ngp ``transforms.json``: OpenGL camera-to-world ``transform_matrix`` per frame,
    ``file_path = "<image_dir>/<name>"``; shared intrinsics at the top level (``camera_angle_x/y, fl_x, fl_y, cx,
    cy, w, h``) when all views share them, otherwise per frame."""
    keys = ("fl_x", "fl_y", "cx", "cy", "w", "h")
    per_view = [dict(zip(keys, (float(cams.fx[i]), float(cams.fy[i]), float(cams.cx[i]), float(cams.cy[i]),
                                int(cams.width[i]), int(cams.height[i])), strict=True)) for i in range(len(cams))]
    for d in per_view:
        d["camera_angle_x"] = 2.0 * math.atan(d["w"] / (2.0 * d["fl_x"]))
        d["camera_angle_y"] = 2.0 * math.atan(d["h"] / (2.0 * d["fl_y"]))
    shared = all(d == per_view[0] for d in per_view)
    out: dict[str, Any] = dict(per_view[0]) if shared and per_view else {}
    out.update(extra or {})
    gl = cams.c2w_opengl
    frames = []
    for i in range(len(cams)):
        fr: dict[str, Any] = {"file_path": f"{image_dir}/{cams.names[i]}" if image_dir else cams.names[i],
                              "transform_matrix": gl[i].tolist()}
        if not shared:
            fr.update(per_view[i])
        frames.append(fr)
    out["frames"] = frames
    Path(path).write_text(json.dumps(out, indent=1))


def _image_size(path: Path, json_path: Path) -> tuple[int, int]:
    from PIL import Image

    if not path.is_file():
        raise MissingDatasetError(f"{json_path} gives no w/h, and the image {path} it lists (needed for the size) "
                                  f"is missing: {IMAGES_FIX}")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise DataValidationError(f"image {path} (listed in {json_path}) cannot be read ({exc}); {IMAGES_FIX}") from exc


def _resolve_frame_path(base: Path, file_path: str) -> Path:
    p = base / file_path
    if p.suffix == "" and not p.is_file():
        for ext in (".png", ".jpg", ".jpeg", ".JPG", ".PNG"):
            if p.with_suffix(ext).is_file():
                return p.with_suffix(ext)
    return p


def read_transforms_json(path: str | Path) -> tuple[Cameras, list[Path]]:
    """``transforms.json`` -> (:class:`Cameras` sorted by file name, the image files in the same order). The names
    are the ``file_path`` values relative to the JSON's folder ("./" stripped)."""
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetError(f"{path} not found: re-download or re-copy the scene folder")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ColmapFormatError(f"{path} is not valid JSON ({exc}); re-download or re-copy it") from exc
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise ColmapFormatError(f"{path}: no 'frames' list; not a NeRF / instant-ngp transforms.json")
    rows = []
    for k, fr in enumerate(frames):
        where = f"{path}, frame {k}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise ColmapFormatError(f"{where}: each frame needs 'file_path' and 'transform_matrix'")
        m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        if m.shape == (3, 4):
            m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]])
        if m.shape != (4, 4):
            raise ColmapFormatError(f"{where} ({fr['file_path']}): transform_matrix must be 4x4, got {m.shape}")
        get = {**meta, **fr}.get
        dist = [float(get(key, 0.0)) for key in _DIST_KEYS]
        if any(abs(d) > 0 for d in dist):
            raise ColmapFormatError(f"{where}: distortion {dict(zip(_DIST_KEYS, dist, strict=True))} is not "
                                    f"supported; undistort the images first")
        name = str(fr["file_path"])
        name = name[2:] if name.startswith("./") else name
        img_path = _resolve_frame_path(path.parent, name)
        if get("w") is not None and get("h") is not None:
            w, h = int(get("w")), int(get("h"))
        else:
            w, h = _image_size(img_path, path)
        if get("fl_x") is not None:
            fx = float(get("fl_x"))
            fy = float(get("fl_y")) if get("fl_y") is not None else fx
        elif get("camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
            fy = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y"))) if get("camera_angle_y") is not None else fx
        else:
            raise ColmapFormatError(f"{where}: no focal length (fl_x or camera_angle_x)")
        cx = float(get("cx")) if get("cx") is not None else w / 2.0
        cy = float(get("cy")) if get("cy") is not None else h / 2.0
        rows.append((name, w, h, fx, fy, cx, cy, opengl_to_opencv(m), img_path))
    rows.sort(key=lambda r: r[0])
    names, w, h, fx, fy, cx, cy, c2w, files = zip(*rows, strict=True)
    cams = Cameras(list(names), np.array(w), np.array(h), np.array(fx), np.array(fy), np.array(cx), np.array(cy),
                   np.stack(c2w))
    cams.validate(path, "re-download or re-generate transforms.json")
    return cams, list(files)
