"""LTM's mesh stages: extraction (spec 2.2, stage B), simplification (2.3, stage C) and the textured real-time asset
(2.5, stage E): contraction, cascaded marching cubes, visibility culling, quadric simplification, xatlas unwrap,
texture baking with gutter fill, the viewer's files (``mesh_<c>.obj`` / ``.mtl``, ``feat0_<c>.jpg``,
``feat1_<c>.jpg``, ``mlp.json``), their reader, the viewer's shading formula in torch and the storage / memory
footprint.

What is reconstructed from what: the file format and the shading formula are LTM's own viewer (NeRF2Mesh's
``renderer.html``, spec 2.5, "confirmed exactly" by the spec's corrections); extraction, culling, simplification and
baking follow NeRF2Mesh's ``export_stage0`` / ``export_stage1`` / ``meshutils.py`` (the likely upstream of LTM's
stages B-E, spec 1 and 2.2-2.5; [N2M]); [DESIGN] marks our choices where both are silent.

Conventions
-----------
* Meshes are numpy ``vertices (V, 3)`` float32 world positions and ``faces (F, 3)`` int64 vertex indices.
  Marching cubes winds every face counter-clockwise seen from the SDF's positive side, so face normals
  ``(v1 - v0) x (v2 - v0)`` point into free space (NeRF2Mesh's ``mcubes`` call winds the other way; the viewer
  and :mod:`.raster` draw both sides, so only consistency matters).
* Contraction (spec 2.1 (a), NeRF2Mesh's ``contract`` / ``uncontract``): ``c(x) = x`` if ``|x| <= 1`` else
  ``(2 - 1/|x|) x / |x|`` with ``|.|`` the L-inf norm (``"linf"``, the default) or the L2 norm (``"l2"``,
  mip-NeRF 360 / BakedSDF); inverse ``x = c / (m (2 - m))`` with ``m = |c|``. Contracted space is the box (ball)
  of radius 2; a point at ``|c| >= 2`` (the image of infinity) is uncontracted as if it sat at
  ``|c| = 2 - UNCONTRACT_EPS`` (finite, ~5e5 from the origin). ``"none"`` is the identity.
* Texture coordinates are stored as the OBJ ``vt`` values (:func:`~.raster.texture_nearest`'s convention): u to the
  right, v up, texture arrays ``(H, W, C)`` with row 0 = the top row of the JPEG. xatlas's own ``(u, v)`` (v down
  the atlas image, like NeRF2Mesh's rasterised texture) become ``vt = (u, 1 - v)`` exactly where NeRF2Mesh writes
  ``vt u 1-v``.
* Cameras are :class:`~.colmap.Cameras` (OpenCV axes, pixel centres at +0.5); :func:`camera_mvp` turns a view into
  the OpenGL clip matrix that :mod:`.raster` expects, so the rasteriser's pixel (r, c) is the camera's pixel (r, c).

Stage B: cascades (:func:`extract_cascades`)
--------------------------------------------
Cascade 0 samples the SDF on ``resolution^3`` grid points ``linspace(-1, 1)`` per axis and runs scikit-image's
marching cubes at level 0: vertex = index / (R - 1) * 2 - 1 (spec 2.2, [N2M]). With contraction the one outer
cascade samples contracted [-2, 2]^3 the same way, the SDF being queried at the uncontracted (world) points, so the
zero set is exact and only the vertex placement between grid points is linear in contracted space; its vertices
are uncontracted to world space. Without contraction (spec 2.1 (b)) cascade k >= 1 samples world [-b_k, b_k]^3
with ``b_k = min(2^k, bound)``, ``1 + ceil(log2 bound)`` cascades as in NeRF2Mesh.
Cascade boundary [N2M, with the spec's "|c| <= 0.5" read as NeRF2Mesh's 0.45 of the normalised outer grid]: an
outer cascade drops every vertex (and the faces that use it) with world ``|x|inf <= cut``, ``cut = min(inner_cut *
b_(k-1), b_(k-1) - h)`` (``inner_cut`` 0.9: NeRF2Mesh's ``_r = 0.45`` of [-1, 1] normalised coordinates of a grid
twice as large; h = the outer grid's spacing, [DESIGN]: the border left by the removal lies within one cell of the
cut, so this bound keeps it inside the previous box even on coarse grids, where 0.9 alone would open a crack). The
outer mesh's open border thus lies in ``(cut, b_(k-1)]`` and overlaps the inner mesh, which reaches its box's faces
(no crack; the overlapping sliver is drawn twice, which opaque rendering tolerates).
[DESIGN] Outer vertices within ``far_margin`` voxels of the contracted domain's edge (``|c| >= 2 - margin * voxel``)
are dropped too (surfaces "at infinity" made by the clamped uncontraction), and, when ``aabb`` (world min / max) is
given, outer vertices outside it (NeRF2Mesh drops outer vertices outside the training AABB). Degenerate marching-
cubes triangles are not emitted (``allow_degenerate=False``).

Clean-up: :func:`cull_invisible` rasterises every training view with :func:`~.raster.rasterize` (at the views'
pixel size times ``scale``), marks the faces that own a pixel in at least one view, grows that set by ``dilation``
face rings (a ring = every face sharing a vertex with the set: pymeshlab's ``apply_selection_dilatation`` in
NeRF2Mesh's ``remove_masked_trigs``) and removes the rest; :func:`remove_small_components` drops connected
components with fewer than ``min_faces`` faces (NeRF2Mesh's ``clean_min_f``; its diameter criterion, a
percentage of the bounding box, is left out [DESIGN]).

Stage C: :func:`simplify` -- quadric edge collapse to ``target_faces``: pymeshlab's
``meshing_decimation_quadric_edge_collapse(targetfacenum, optimalplacement)`` (NeRF2Mesh's call; ``optimal_placement
=False`` is what it uses for outer cascades) or fast-simplification (Fast-Quadric-Mesh-Simplification; always
optimal placement, ``agg`` 7). ``backend="auto"`` takes pymeshlab when importable (spec 2.3).

Stage E: atlas, bake, files
---------------------------
* :func:`uv_atlas`: ``xatlas.Atlas`` with ``ChartOptions.max_iterations = 0`` (NeRF2Mesh) and [DESIGN]
  ``PackOptions.resolution = texture_size``, ``padding`` texels (default 2), so charts are separated on the texture
  grid (NeRF2Mesh packs at xatlas's own resolution with no padding and relies on the gutter fill). xatlas returns
  coordinates normalised by its atlas's width and height, which are only near ``texture_size``, so the padding on
  the final texture is ``padding * texture_size / max(atlas width, height)`` (:attr:`UVAtlas.effective_padding`).
  Optionally unwrapped in contracted space (``contraction``; spec 2.5 "in contracted space if contraction is on").
  xatlas has no random seed and gave bit-identical layouts across runs and processes.
* :func:`bake_textures` [N2M ``export_stage1``]: rasterise the layout (clip = (2u - 1, 2 vt_v - 1, 0, 1)) at
  ``texture_size * ssaa`` with :func:`~.raster.rasterize`, interpolate the world point per covered texel centre,
  evaluate ``colour_fn`` (6 channels in [0, 1]: diffuse RGB, specular features), quantise ``(x * 255).astype(uint8)``
  (floor, spec corrections), fill the ``gutter`` texels around the charts (binary dilation, 4-neighbourhood, counted
  on the supersampled grid, like NeRF2Mesh) with the value of the nearest texel of the charts' ``border``-texel-wide
  inner rim (scipy ``cKDTree``), then downsample each 3-channel half by ``ssaa`` with OpenCV ``INTER_LINEAR``
  (NeRF2Mesh's ``cv2.resize``; for ssaa 2 that is the rounded 2 x 2 mean).
* :func:`export_viewer` writes, per cascade c, ``mesh_<c>.obj`` (``mtllib``, ``v x y z``, ``vt u v`` (= xatlas's
  ``u 1-v``), ``usemtl``, ``f v/vt v/vt v/vt`` 1-based; floats in the shortest decimal that reads back to the same
  float32), ``mesh_<c>.mtl`` (NeRF2Mesh's material, ``map_Kd feat0_<c>.jpg``), ``feat0_<c>.jpg`` / ``feat1_<c>.jpg``
  (Pillow, quality 95, 4:2:0 chroma subsampling like OpenCV's default that NeRF2Mesh writes with), and
  ``mlp.json``: each weight of the specular MLP **transposed** from torch's (out, in) layout (``net.0.weight`` 6 x H,
  ``net.1.weight`` H x 3), then ``bound`` and ``cascade``, ``json.dump(indent=2)`` as NeRF2Mesh. Written into a
  temporary sibling folder that is renamed into place (:func:`cvpr24.core.datasets.swap_in_folder`).
* :func:`viewer_shade` (the fragment shader): ``clamp(k_d + sigmoid(relu([d, k_s] W0) W1), 0, 1)`` with
  W0 = ``net.0.weight`` (6 x H) and W1 = ``net.1.weight`` (H x 3) as stored in ``mlp.json``, d the unit vector
  from the camera centre to the fragment, k_d and k_s the NEAREST texels / 255; modes ``diffuse`` (k_d only),
  ``specular`` (the sigmoid term only), ``full``. :func:`render_viewer` draws a loaded asset with
  :func:`~.raster.render` (its analytic antialiasing included) and :func:`~.raster.texture_nearest`.
* :func:`footprint` [DESIGN, spec 2.5 "storage / memory"]: bytes on disk per file, per cascade and in total (what
  was written), and a GPU-side estimate: raw textures ``2 * W * H * 3`` bytes per cascade, plus indexed buffers
  (one float32 position + float32 uv per distinct (v, vt) corner pair, uint32 indices) -- the de-indexed size that
  three.js's OBJLoader actually builds (``3 F`` corners x 20 bytes) is reported beside it -- plus the float32 MLP.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cvpr24.core.geometry import (  # noqa: F401  (contract, uncontract re-exported)
    CONTRACTIONS,
    UNCONTRACT_EPS,
    check_contraction,
    contract,
    contraction_norm,
    uncontract,
)
from cvpr24.pipelines.ltm.colmap import Cameras
from cvpr24.pipelines.ltm.raster import (
    Fragments,
    Raster,
    interpolate,
    project,
    rasterize,
    render,
    texture_nearest,
)

log = logging.getLogger(__name__)

__all__ = [
    "CONTRACTIONS",
    "UNCONTRACT_EPS",
    "BakedTextures",
    "CascadeFootprint",
    "Culled",
    "Footprint",
    "MeshCascade",
    "TexturedCascade",
    "UVAtlas",
    "ViewerAsset",
    "bake_textures",
    "camera_mvp",
    "cascade_bounds",
    "contract",
    "cull_invisible",
    "export_viewer",
    "extract_cascades",
    "footprint",
    "load_viewer",
    "rasterize_uv",
    "remove_small_components",
    "render_viewer",
    "simplify",
    "textured_cascade",
    "uncontract",
    "uv_atlas",
    "uv_charts",
    "viewer_shade",
]

MLP_KEYS = ("net.0.weight", "net.1.weight")
ArrayLike = np.ndarray | Tensor


# ============================================================================================ stage B
@dataclass
class MeshCascade:
    """One cascade's mesh: world ``vertices (V, 3)`` float32, ``faces (F, 3)`` int64; ``index`` (0 = inner),
    ``bound`` (half-size of its sampling box, contracted units when contracted) and ``resolution`` (grid points per
    axis) of the grid it was extracted from."""

    vertices: np.ndarray
    faces: np.ndarray
    index: int = 0
    bound: float = 1.0
    resolution: int = 0

    @property
    def voxel(self) -> float:
        """Grid spacing (sampling-space units)."""
        return 2.0 * self.bound / max(self.resolution - 1, 1)


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _call_field(fn: Callable[[Any], Any], pts: np.ndarray, array: str) -> np.ndarray:
    """Evaluate a point function on world points ``(N, 3)`` handed over as float32 torch tensors (``array="torch"``,
    under no_grad) or float64 numpy arrays (``"numpy"``)."""
    if array == "torch":
        with torch.no_grad():
            return _as_numpy(fn(torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32))))
    if array == "numpy":
        return _as_numpy(fn(np.ascontiguousarray(pts, dtype=np.float64)))
    raise ValueError(f"array must be 'torch' or 'numpy', got {array!r}")


def _sample_grid(sdf_fn: Callable[[Any], Any], bound: float, res: int, kind: str, array: str,
                 chunk: int) -> np.ndarray:
    """SDF on the ``res^3`` grid ``linspace(-bound, bound)`` (indexing ij: axis 0 = x) of sampling space, queried
    at the uncontracted world points."""
    lin = np.linspace(-bound, bound, res)
    yz = np.stack(np.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 2)
    vol = np.empty((res, res, res), dtype=np.float32)
    slabs = max(1, chunk // (res * res))
    for i0 in range(0, res, slabs):
        xs = lin[i0:i0 + slabs]
        pts = np.concatenate([np.repeat(xs, res * res)[:, None], np.tile(yz, (len(xs), 1))], 1)
        vals = _call_field(sdf_fn, uncontract(pts, kind), array).reshape(-1)
        if vals.size != pts.shape[0]:
            raise ValueError(f"sdf_fn returned {vals.size} values for {pts.shape[0]} points")
        vol[i0:i0 + len(xs)] = vals.reshape(len(xs), res, res)
    bad = ~np.isfinite(vol)
    if bad.any():  # NaN / inf: treat as empty space
        finite = vol[~bad]
        vol[bad] = float(np.abs(finite).max()) if finite.size else 1.0
    return vol


def _marching_cubes(vol: np.ndarray, bound: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    if not (vol.min() < level < vol.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts, faces, _, _ = marching_cubes(vol, level=level, allow_degenerate=False)
    res = vol.shape[0]
    return verts.astype(np.float64) / (res - 1) * (2.0 * bound) - bound, faces.astype(np.int64)


def _compact(vertices: np.ndarray, faces: np.ndarray, keep_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the selected faces and the vertices they use (renumbered in their old order)."""
    faces = faces[keep_faces]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces].astype(np.int64)


def _drop_vertices(vertices: np.ndarray, faces: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the flagged vertices and every face that uses one (pymeshlab ``meshing_remove_selected_vertices``)."""
    return _compact(vertices, faces, ~drop[faces].any(1))


def cascade_bounds(contraction: str = "linf", bound: float = 2.0) -> list[float]:
    """Half-sizes of the cascades' sampling boxes: [1, 2] with contraction (contracted units), else
    ``min(2^k, bound)`` for k = 0 .. ceil(log2 bound) (world units; NeRF2Mesh's cascades)."""
    check_contraction(contraction)
    if contraction != "none":
        return [1.0, 2.0]
    n = 1 + max(0, math.ceil(math.log2(bound)))
    return [float(min(2 ** k, bound)) for k in range(n)]


def extract_cascades(sdf_fn: Callable[[Any], Any], resolution: int | Sequence[int], *, contraction: str = "linf",
                     bound: float = 2.0, inner_cut: float = 0.9, far_margin: float = 1.0,
                     aabb: Sequence[float] | None = None, level: float = 0.0, array: str = "torch",
                     chunk: int = 1 << 20) -> list[MeshCascade]:
    """Marching cubes of ``sdf_fn`` (world points ``(N, 3)`` -> signed distances ``(N,)``, negative inside) on the
    inner cube and the outer cascade(s) (module docstring, "Stage B"). ``resolution``: grid points per axis, one
    value or one per cascade. ``array``: hand the points to ``sdf_fn`` as torch float32 tensors or numpy arrays.
    Returns one :class:`MeshCascade` per cascade, vertices in world space (an empty mesh where nothing is found)."""
    check_contraction(contraction)
    bounds = cascade_bounds(contraction, bound)
    res = [int(resolution)] * len(bounds) if np.isscalar(resolution) else [int(r) for r in resolution]
    if len(res) != len(bounds):
        raise ValueError(f"{len(bounds)} cascades but {len(res)} resolutions")
    if any(r < 2 for r in res):
        raise ValueError(f"resolution must be >= 2, got {res}")
    out = []
    for k, (b, r) in enumerate(zip(bounds, res, strict=True)):
        kind = contraction if k > 0 else "none"
        vol = _sample_grid(sdf_fn, b, r, kind, array, chunk)
        c, f = _marching_cubes(vol, b, level)
        v = uncontract(c, kind)
        if k > 0 and len(f):
            voxel = 2.0 * b / (r - 1)  # = world size inside the previous box (contraction is the identity there)
            drop = np.abs(v).max(1) <= min(inner_cut * bounds[k - 1], bounds[k - 1] - voxel)
            if contraction != "none":
                drop |= contraction_norm(c, contraction)[:, 0] >= 2.0 - far_margin * voxel
            if aabb is not None:
                lo, hi = np.asarray(aabb, dtype=np.float64).reshape(2, 3)
                drop |= ((v < lo) | (v > hi)).any(1)
            v, f = _drop_vertices(v, f, drop)
        out.append(MeshCascade(v.astype(np.float32), f, k, b, r))
    return out


def remove_small_components(vertices: np.ndarray, faces: np.ndarray,
                            min_faces: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Drop connected components (faces sharing a vertex) with fewer than ``min_faces`` faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0 or min_faces <= 1:
        return vertices, faces
    n = len(vertices)
    a = faces[:, [0, 1, 2]].reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    comp = label[faces[:, 0]]
    counts = np.bincount(comp, minlength=label.max() + 1)
    return _compact(vertices, faces, counts[comp] >= min_faces)


# ------------------------------------------------------------------------------------------------ culling
def camera_mvp(cams: Cameras, i: int, near: float = 0.01, far: float = 1000.0) -> Tensor:
    """OpenGL clip matrix (4 x 4 float32) of view ``i`` for :mod:`.raster`: projection from the pinhole intrinsics
    (pixel (r, c) of the rasteriser = pixel (r, c) of the camera, principal point anywhere) times world-to-camera
    in OpenGL axes."""
    w, h = float(cams.width[i]), float(cams.height[i])
    fx, fy, cx, cy = float(cams.fx[i]), float(cams.fy[i]), float(cams.cx[i]), float(cams.cy[i])
    proj = np.array([[2 * fx / w, 0.0, 1.0 - 2 * cx / w, 0.0],
                     [0.0, 2 * fy / h, 2 * cy / h - 1.0, 0.0],
                     [0.0, 0.0, (far + near) / (near - far), 2 * far * near / (near - far)],
                     [0.0, 0.0, -1.0, 0.0]])
    return torch.from_numpy(proj @ np.linalg.inv(cams.c2w_opengl[i])).float()


def _dilate_faces(faces: np.ndarray, selected: np.ndarray, rings: int, n_vertices: int) -> np.ndarray:
    sel = selected.copy()
    for _ in range(rings):
        vsel = np.zeros(n_vertices, dtype=bool)
        vsel[faces[sel].reshape(-1)] = True
        grown = vsel[faces].any(1)
        if (grown == sel).all():
            break
        sel = grown
    return sel


@dataclass
class Culled:
    """Result of :func:`cull_invisible`: the kept mesh, ``seen (F,)`` faces that own a pixel in some view and
    ``kept (F,)`` = seen grown by the dilation (both over the input faces)."""

    vertices: np.ndarray
    faces: np.ndarray
    seen: np.ndarray
    kept: np.ndarray


def cull_invisible(vertices: np.ndarray, faces: np.ndarray, cameras: Cameras, *, dilation: int = 5,
                   scale: float = 1.0, near: float = 0.01, far: float = 1000.0,
                   views: Sequence[int] | None = None) -> Culled:
    """Remove faces no training view sees (spec 2.2 (i)): rasterise each view (``views``, default all) at its pixel
    size times ``scale`` with :func:`~.raster.rasterize` (z-buffered, double-sided), mark the faces that win a pixel,
    keep them and ``dilation`` face rings around them (NeRF2Mesh default 5), drop unreferenced vertices."""
    faces = np.asarray(faces, dtype=np.int64)
    seen = np.zeros(len(faces), dtype=bool)
    if len(faces):
        vt = torch.from_numpy(np.asarray(vertices, dtype=np.float32))
        ft = torch.from_numpy(faces)
        with torch.no_grad():
            for i in range(len(cameras)) if views is None else views:
                h = max(1, round(float(cameras.height[i]) * scale))
                w = max(1, round(float(cameras.width[i]) * scale))
                rast = rasterize(project(vt, camera_mvp(cameras, i, near, far)), ft, h, w)
                seen[rast.pix_face.numpy()] = True
    kept = _dilate_faces(faces, seen, dilation, len(vertices))
    v, f = _compact(np.asarray(vertices), faces, kept)
    log.debug("visibility culling: %d of %d faces seen, %d kept (dilation %d)", seen.sum(), len(faces), kept.sum(),
              dilation)
    return Culled(v, f, seen, kept)


# ============================================================================================ stage C
def _simplify_backend(backend: str) -> str:
    if backend == "auto":
        try:
            import pymeshlab  # noqa: F401
        except ImportError:
            return "fast-simplification"
        return "pymeshlab"
    if backend not in ("pymeshlab", "fast-simplification"):
        raise ValueError(f"backend must be auto|pymeshlab|fast-simplification, got {backend!r}")
    return backend


def simplify(vertices: np.ndarray, faces: np.ndarray, target_faces: int, *, backend: str = "auto",
             optimal_placement: bool = True, aggressiveness: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error edge collapse to at most ``target_faces`` faces (spec 2.3). A mesh already within the budget
    is returned unchanged (copies). ``optimal_placement`` only matters for pymeshlab; ``aggressiveness`` only for
    fast-simplification. Returns float32 vertices and int64 faces without unreferenced vertices."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces, dtype=np.int64)
    target = int(target_faces)
    if target < 1:
        raise ValueError(f"target_faces must be >= 1, got {target_faces}")
    if len(faces) <= target:
        return vertices.astype(np.float32, copy=True), faces.copy()
    name = _simplify_backend(backend)
    log.debug("simplify %d -> %d faces with %s", len(faces), target, name)
    if name == "pymeshlab":
        import pymeshlab

        ms = pymeshlab.MeshSet()
        ms.add_mesh(pymeshlab.Mesh(vertices.astype(np.float64), faces.astype(np.int32)))
        ms.meshing_decimation_quadric_edge_collapse(targetfacenum=target, optimalplacement=optimal_placement)
        m = ms.current_mesh()
        v, f = m.vertex_matrix(), m.face_matrix().astype(np.int64)
    else:
        import fast_simplification

        v, f = vertices.astype(np.float64), faces
        for _ in range(4):  # the collapse can stall short of the budget; go again on its output
            v, f = fast_simplification.simplify(v, f, target_count=target, agg=aggressiveness)
            if len(f) <= target:
                break
    if len(f) > target:
        raise RuntimeError(f"{name} left {len(f)} faces, above the budget {target}")
    v, f = _compact(np.asarray(v), np.asarray(f, dtype=np.int64), np.ones(len(f), dtype=bool))
    return v.astype(np.float32), f


# ============================================================================================ stage E: atlas
@dataclass
class UVAtlas:
    """An xatlas unwrap: ``vmapping (N,)`` input vertex of each atlas vertex (remapped vertices =
    ``vertices[vmapping]``), ``uv_faces (F, 3)`` atlas-vertex indices of each input face (same face order),
    ``uvs (N, 2)`` float32 OBJ ``vt`` coordinates in [0, 1]; xatlas's atlas size and the padding it leaves between
    charts on a ``texture_size`` grid."""

    vmapping: np.ndarray
    uv_faces: np.ndarray
    uvs: np.ndarray
    atlas_width: int
    atlas_height: int
    texture_size: int
    padding: int

    @property
    def corner_uvs(self) -> np.ndarray:
        """Per-face-corner uvs ``(F, 3, 2)``."""
        return self.uvs[self.uv_faces]

    @property
    def effective_padding(self) -> float:
        """Texels between charts on the final ``texture_size`` texture."""
        return self.padding * self.texture_size / max(self.atlas_width, self.atlas_height, 1)


def uv_atlas(vertices: np.ndarray, faces: np.ndarray, *, texture_size: int = 1024, padding: int = 2,
             contraction: str = "none") -> UVAtlas:
    """xatlas unwrap (``ChartOptions.max_iterations = 0``, ``PackOptions.resolution = texture_size``, ``padding``),
    of ``contract(vertices, contraction)`` when a contraction is given (spec 2.5)."""
    import xatlas

    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("uv_atlas needs at least one face")
    pos = np.asarray(contract(np.asarray(vertices, dtype=np.float64), contraction), dtype=np.float32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(pos), np.ascontiguousarray(faces.astype(np.uint32)))
    chart = xatlas.ChartOptions()
    chart.max_iterations = 0
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    atlas.generate(chart_options=chart, pack_options=pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas made {atlas.atlas_count} atlases for texture size {texture_size}; use a larger "
                           f"texture or a smaller padding")
    vmapping, uv_faces, uv = atlas[0]
    if uv_faces.shape[0] != len(faces):
        raise RuntimeError(f"xatlas returned {uv_faces.shape[0]} faces for {len(faces)}")
    uvs = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1).astype(np.float32)  # NeRF2Mesh's "vt u 1-v"
    return UVAtlas(vmapping.astype(np.int64), uv_faces.astype(np.int64), uvs, int(atlas.width),
                   int(atlas.height), int(texture_size), int(padding))


def uv_charts(uv_faces: np.ndarray, n_uvs: int | None = None) -> np.ndarray:
    """Chart id of every face ``(F,)``: connected components of the uv mesh (faces sharing an atlas vertex)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    uv_faces = np.asarray(uv_faces, dtype=np.int64)
    n = int(uv_faces.max()) + 1 if n_uvs is None else int(n_uvs)
    a = uv_faces[:, [0, 1, 2]].reshape(-1)
    b = uv_faces[:, [1, 2, 0]].reshape(-1)
    _, label = connected_components(coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)),
                                    directed=False)
    return label[uv_faces[:, 0]]


def rasterize_uv(uvs: np.ndarray, uv_faces: np.ndarray, height: int, width: int) -> Raster:
    """Rasterise a uv layout onto an ``height x width`` texel grid (row 0 = top of the texture image; texel (r, c)
    sampled at vt = ((c + 0.5) / W, 1 - (r + 0.5) / H)); returns a :class:`~.raster.Raster`."""
    uv = torch.from_numpy(np.asarray(uvs, dtype=np.float32))
    clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], 1)
    with torch.no_grad():
        return rasterize(clip, torch.from_numpy(np.asarray(uv_faces, dtype=np.int64)), height, width,
                         max_candidates=1 << 20)


# ============================================================================================ stage E: bake
@dataclass
class BakedTextures:
    """``feat0`` (diffuse RGB) and ``feat1`` (specular features), uint8 ``(H, W, 3)``; ``mask`` (H, W): texels with at
    least one covered supersample; ``filled`` (H, W): texels with at least one covered or gutter supersample."""

    feat0: np.ndarray
    feat1: np.ndarray
    mask: np.ndarray
    filled: np.ndarray


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _any_pool(mask: np.ndarray, k: int) -> np.ndarray:
    h, w = mask.shape[0] // k, mask.shape[1] // k
    return mask.reshape(h, k, w, k).any(axis=(1, 3))


def bake_textures(vertices: np.ndarray, faces: np.ndarray, atlas: UVAtlas, colour_fn: Callable[[Any], Any],
                  texture_size: int | Sequence[int] | None = None, *, ssaa: int = 2, gutter: int = 32,
                  border: int = 3, array: str = "torch", chunk: int = 640_000) -> BakedTextures:
    """Bake ``colour_fn`` (world points ``(N, 3)`` -> ``(N, 6)`` in [0, 1]: diffuse RGB, specular features) into the
    two 8-bit textures of the viewer (module docstring, "Stage E"). ``texture_size``: int or (H, W), default the
    atlas's; ``gutter`` / ``border`` in supersampled texels; ``array`` as in :func:`extract_cascades`."""
    import cv2
    from scipy.ndimage import binary_dilation, binary_erosion
    from scipy.spatial import cKDTree

    h0, w0 = _size2(atlas.texture_size if texture_size is None else texture_size)
    ssaa = int(ssaa)
    if ssaa < 1:
        raise ValueError(f"ssaa must be >= 1, got {ssaa}")
    h, w = h0 * ssaa, w0 * ssaa
    rast = rasterize_uv(atlas.uvs, atlas.uv_faces, h, w)
    pos = torch.from_numpy(np.asarray(vertices, dtype=np.float32)[atlas.vmapping])
    pts = interpolate(pos, rast, torch.from_numpy(atlas.uv_faces), packed=True).numpy()
    feats = np.zeros((h * w, 6), dtype=np.uint8)
    pix = rast.pix.numpy()
    for s in range(0, len(pix), chunk):
        vals = _call_field(colour_fn, pts[s:s + chunk], array).reshape(-1, 6)
        feats[pix[s:s + chunk]] = (np.clip(vals, 0.0, 1.0) * 255).astype(np.uint8)  # floor, as NeRF2Mesh
    feats = feats.reshape(h, w, 6)
    mask = rast.mask.numpy()

    # gutter: copy the nearest texel of the charts' inner rim into the dilated ring around them (NeRF2Mesh)
    inpaint = binary_dilation(mask, iterations=gutter) & ~mask if gutter > 0 else np.zeros_like(mask)
    rim = mask & ~binary_erosion(mask, iterations=border)
    if inpaint.any() and rim.any():
        rim_rc = np.argwhere(rim)
        fill_rc = np.argwhere(inpaint)
        _, idx = cKDTree(rim_rc).query(fill_rc)
        feats[fill_rc[:, 0], fill_rc[:, 1]] = feats[rim_rc[idx, 0], rim_rc[idx, 1]]
    filled = mask | inpaint

    f0, f1 = np.ascontiguousarray(feats[..., :3]), np.ascontiguousarray(feats[..., 3:])
    if ssaa > 1:
        f0 = cv2.resize(f0, (w0, h0), interpolation=cv2.INTER_LINEAR)
        f1 = cv2.resize(f1, (w0, h0), interpolation=cv2.INTER_LINEAR)
    return BakedTextures(f0, f1, _any_pool(mask, ssaa), _any_pool(filled, ssaa))


# ============================================================================================ stage E: files
@dataclass
class TexturedCascade:
    """One cascade of the viewer asset: ``vertices (V, 3)`` float32 and ``faces (F, 3)`` (OBJ ``v`` / the ``v`` of
    ``f v/vt``), ``uvs (T, 2)`` float32 OBJ ``vt`` and ``uv_faces (F, 3)`` (the ``vt`` of ``f v/vt``), textures
    ``feat0`` / ``feat1`` uint8 ``(H, W, 3)`` (row 0 = top of the JPEG)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray
    feat0: np.ndarray
    feat1: np.ndarray

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One vertex per distinct (v, vt) corner pair: ``(positions (N, 3), uvs (N, 2), faces (F, 3))``, the
        indexed buffers a renderer uploads."""
        pairs = np.stack([self.faces.reshape(-1), self.uv_faces.reshape(-1)], 1)
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        return self.vertices[uniq[:, 0]], self.uvs[uniq[:, 1]], inv.reshape(-1, 3).astype(np.int64)


def textured_cascade(vertices: np.ndarray, faces: np.ndarray, atlas: UVAtlas, baked: BakedTextures) -> TexturedCascade:
    return TexturedCascade(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), atlas.uvs,
                           atlas.uv_faces, baked.feat0, baked.feat1)


@dataclass
class ViewerAsset:
    """What :func:`load_viewer` reads: the cascades, the MLP weights as stored in ``mlp.json`` (``net.0.weight``
    6 x H, ``net.1.weight`` H x 3, float32), ``bound`` and ``cascade``."""

    cascades: list[TexturedCascade]
    mlp: dict[str, np.ndarray]
    bound: float
    cascade: int

    def torch_weights(self) -> dict[str, Tensor]:
        """The weights back in torch's (out, in) layout."""
        return {k: torch.from_numpy(np.ascontiguousarray(v.T)) for k, v in self.mlp.items()}


def _fmt_floats(a: np.ndarray) -> list[str]:
    """Shortest positional decimal of each float32 that parses back to the same float32."""
    return [np.format_float_positional(x, unique=True, trim="-") for x in np.asarray(a, dtype=np.float32).ravel()]


def _obj_text(c: int, cas: TexturedCascade) -> str:
    v = _fmt_floats(cas.vertices)
    vt = _fmt_floats(cas.uvs)
    lines = [f"mtllib mesh_{c}.mtl"]
    lines += [f"v {v[i]} {v[i + 1]} {v[i + 2]}" for i in range(0, len(v), 3)]
    lines += [f"vt {vt[i]} {vt[i + 1]}" for i in range(0, len(vt), 2)]
    lines.append("usemtl defaultMat")
    fv = (cas.faces + 1).tolist()
    ft = (cas.uv_faces + 1).tolist()
    lines += [f"f {a[0]}/{b[0]} {a[1]}/{b[1]} {a[2]}/{b[2]}" for a, b in zip(fv, ft, strict=True)]
    return "\n".join(lines) + "\n"


def _mtl_text(c: int) -> str:
    return (f"newmtl defaultMat\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nTr 1\nillum 1\nNs 0\nmap_Kd feat0_{c}.jpg\n")


def _check_mlp(weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torch-layout weights (``net.0.weight`` H x 6, ``net.1.weight`` 3 x H) as float32 arrays, checked."""
    missing = [k for k in MLP_KEYS if k not in weights]
    if missing:
        raise ValueError(f"mlp_weights lacks {missing} (expected the specular MLP's {MLP_KEYS}, torch layout)")
    out = {k: _as_numpy(weights[k]).astype(np.float32) for k in weights}
    w0, w1 = out[MLP_KEYS[0]], out[MLP_KEYS[1]]
    hidden = w0.shape[0]
    if w0.ndim != 2 or w0.shape[1] != 6 or w1.shape != (3, hidden):
        raise ValueError(f"expected net.0.weight (H, 6) and net.1.weight (3, H) in torch layout, got {w0.shape} and "
                         f"{w1.shape}")
    if hidden % 4:
        raise ValueError(f"the viewer packs the hidden layer in vec4s: H = {hidden} must be divisible by 4")
    return out


def write_mlp_json(folder: Path, mlp: dict[str, np.ndarray], bound: float, cascades: int) -> None:
    """The viewer's ``mlp.json``: the shading MLP's checked weights transposed (the viewer's layout), ``bound`` and
    the number of cascades."""
    doc: dict[str, Any] = {k: v.T.tolist() for k, v in mlp.items()}
    doc["bound"] = bound
    doc["cascade"] = int(cascades)
    with open(Path(folder) / "mlp.json", "w") as fh:
        json.dump(doc, fh, indent=2)


def export_viewer(folder: str | Path, cascades: Sequence[TexturedCascade], mlp_weights: Mapping[str, Any], *,
                  bound: float = 2.0, jpeg_quality: int = 95, subsampling: str = "4:2:0") -> Path:
    """Write the viewer's files (module docstring, "Stage E") into ``folder``, atomically (a temporary sibling
    folder renamed into place; an existing folder is replaced only then). ``mlp_weights``: the specular MLP in
    torch layout (``net.0.weight`` (H, 6), ``net.1.weight`` (3, H)); written transposed. Returns the folder."""
    from PIL import Image

    from cvpr24.core.datasets import swap_in_folder

    folder = Path(folder)
    mlp = _check_mlp(mlp_weights)
    if not cascades:
        raise ValueError("export_viewer needs at least one cascade")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for c, cas in enumerate(cascades):
            (tmp / f"mesh_{c}.obj").write_text(_obj_text(c, cas))
            (tmp / f"mesh_{c}.mtl").write_text(_mtl_text(c))
            for name, tex in ((f"feat0_{c}.jpg", cas.feat0), (f"feat1_{c}.jpg", cas.feat1)):
                arr = np.ascontiguousarray(tex, dtype=np.uint8)
                if arr.ndim != 3 or arr.shape[2] != 3:
                    raise ValueError(f"cascade {c}: {name} must be (H, W, 3) uint8, got {arr.shape}")
                Image.fromarray(arr, "RGB").save(tmp / name, format="JPEG", quality=int(jpeg_quality),
                                                 subsampling=subsampling)
        write_mlp_json(tmp, mlp, bound, len(cascades))
        swap_in_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _parse_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str | None]:
    v, vt, f = [], [], []
    mtllib = None
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append(line[2:])
        elif line.startswith("vt "):
            vt.append(line[3:])
        elif line.startswith("f "):
            f.append(line[2:].replace("/", " "))
        elif line.startswith("mtllib "):
            mtllib = line[7:].strip()
    verts = np.array(" ".join(v).split(), dtype=np.float32).reshape(-1, 3)
    uvs = np.array(" ".join(vt).split(), dtype=np.float32).reshape(-1, 2)
    idx = np.array(" ".join(f).split(), dtype=np.int64).reshape(-1, 3, 2) - 1
    if len(idx) and (idx.min() < 0 or idx[..., 0].max() >= len(verts) or idx[..., 1].max() >= len(uvs)):
        raise ValueError(f"{path}: face indices out of range (expected 1-based 'f v/vt' with {len(verts)} v and "
                         f"{len(uvs)} vt)")
    return verts, uvs, idx[..., 0].copy(), idx[..., 1].copy(), mtllib


def _map_kd(path: Path, default: str) -> str:
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip().startswith("map_Kd"):
                return line.strip().split(maxsplit=1)[1].strip()
    return default


def load_viewer(folder: str | Path) -> ViewerAsset:
    """Read an exported viewer folder back (``mlp.json`` first: its ``cascade`` says how many meshes to read; the
    diffuse texture is the ``.mtl``'s ``map_Kd``, the specular one ``feat1_<c>.jpg`` as in the viewer)."""
    from PIL import Image

    folder = Path(folder)
    with open(folder / "mlp.json") as fh:
        doc = json.load(fh)
    mlp = {k: np.asarray(doc[k], dtype=np.float32) for k in doc if k not in ("bound", "cascade")}
    cascades = []
    for c in range(int(doc["cascade"])):
        verts, uvs, faces, uv_faces, mtllib = _parse_obj(folder / f"mesh_{c}.obj")
        kd = _map_kd(folder / (mtllib or f"mesh_{c}.mtl"), f"feat0_{c}.jpg")
        feat0 = np.asarray(Image.open(folder / kd).convert("RGB"))
        feat1 = np.asarray(Image.open(folder / f"feat1_{c}.jpg").convert("RGB"))
        cascades.append(TexturedCascade(verts, faces, uvs, uv_faces, feat0, feat1))
    return ViewerAsset(cascades, mlp, float(doc["bound"]), int(doc["cascade"]))


# ============================================================================================ viewer shading
def viewer_shade(kd: Tensor, ks: Tensor, dirs: Tensor, w0: Tensor, w1: Tensor, mode: str = "full") -> Tensor:
    """The viewer's fragment colour ``(P, 3)``: ``clamp(kd + sigmoid(relu([d, ks] @ w0) @ w1), 0, 1)`` with ``kd``,
    ``ks`` the texels in [0, 1] ``(P, 3)``, ``dirs`` ``(P, 3)`` camera-to-fragment directions (normalised here),
    ``w0`` = ``net.0.weight`` as stored in ``mlp.json`` (6 x H), ``w1`` = ``net.1.weight`` (H x 3).
    ``mode``: ``full`` | ``diffuse`` (kd) | ``specular`` (the sigmoid term)."""
    if mode == "diffuse":
        return kd
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    spec = torch.sigmoid(torch.relu(torch.cat([d, ks], -1) @ w0.to(kd)) @ w1.to(kd))
    if mode == "specular":
        return spec
    if mode != "full":
        raise ValueError(f"mode must be full|diffuse|specular, got {mode!r}")
    return (kd + spec).clamp(0.0, 1.0)


def render_viewer(asset: ViewerAsset, mvp: Tensor, eye: Sequence[float] | Tensor, height: int, width: int, *,
                  background: Tensor | float | Sequence[float] | None = None, mode: str = "full") -> Tensor:
    """Render a loaded asset like the viewer: all cascades in one z-buffer (:func:`~.raster.render`), per pixel the
    NEAREST texels of its cascade's textures at the interpolated ``vt``, shaded by :func:`viewer_shade` with the
    direction from ``eye`` (the camera centre, world) to the surface point. Returns ``(H, W, 3)``."""
    pos, uv, fcs, offsets, texs = [], [], [], [0], []
    n_v = 0
    for cas in asset.cascades:
        p, t, f = cas.split()
        pos.append(p)
        uv.append(t)
        fcs.append(f + n_v)
        n_v += len(p)
        offsets.append(offsets[-1] + len(f))
        texs.append((torch.from_numpy(cas.feat0.astype(np.float32) / 255.0),
                     torch.from_numpy(cas.feat1.astype(np.float32) / 255.0)))
    w0 = torch.from_numpy(asset.mlp[MLP_KEYS[0]])
    w1 = torch.from_numpy(asset.mlp[MLP_KEYS[1]])
    eye_t = torch.as_tensor(eye, dtype=torch.float32).reshape(1, 3)
    bounds = torch.tensor(offsets[1:-1], dtype=torch.int64)

    def shade(frag: Fragments) -> Tensor:
        which = torch.bucketize(frag.face_id, bounds, right=True)
        kd = torch.zeros(len(frag.face_id), 3)
        ks = torch.zeros(len(frag.face_id), 3)
        for c, (t0, t1) in enumerate(texs):
            sel = which == c
            if sel.any():
                kd[sel] = texture_nearest(t0, frag.attr[sel])
                ks[sel] = texture_nearest(t1, frag.attr[sel])
        return viewer_shade(kd, ks, frag.points - eye_t, w0, w1, mode)

    with torch.no_grad():
        rgb, _ = render(torch.from_numpy(np.concatenate(pos)), torch.from_numpy(np.concatenate(fcs)), mvp, height,
                        width, shade, background, attr=torch.from_numpy(np.concatenate(uv)),
                        geometry_grad="silhouette")
    return rgb


# ============================================================================================ footprint
@dataclass
class CascadeFootprint:
    """Per cascade: bytes of each file on disk and their sum, triangles, OBJ ``v`` and ``vt`` counts, distinct
    (v, vt) corner pairs, texture sizes, and the GPU estimate (module docstring)."""

    files: dict[str, int]
    disk_bytes: int
    triangles: int
    vertices: int
    uv_vertices: int
    corners: int
    texture_sizes: list[tuple[int, int]]
    gpu_texture_bytes: int
    gpu_buffer_bytes: int
    gpu_buffer_bytes_unindexed: int


@dataclass
class Footprint:
    """All cascades plus ``mlp.json``: disk bytes (everything in the folder) and the GPU-side estimate."""

    cascades: list[CascadeFootprint]
    mlp_bytes: int
    mlp_gpu_bytes: int
    disk_bytes: int
    gpu_bytes: int

    @property
    def triangles(self) -> int:
        return sum(c.triangles for c in self.cascades)

    @property
    def vertices(self) -> int:
        return sum(c.vertices for c in self.cascades)

    def as_dict(self) -> dict[str, Any]:
        """Flat metrics (MLflow-friendly)."""
        out: dict[str, Any] = {"disk_bytes": self.disk_bytes, "gpu_bytes": self.gpu_bytes,
                               "mlp_bytes": self.mlp_bytes, "triangles": self.triangles, "vertices": self.vertices}
        for c, cf in enumerate(self.cascades):
            out.update({f"c{c}_disk_bytes": cf.disk_bytes, f"c{c}_triangles": cf.triangles,
                        f"c{c}_vertices": cf.vertices, f"c{c}_gpu_bytes": cf.gpu_texture_bytes + cf.gpu_buffer_bytes})
        return out


def footprint(folder: str | Path) -> Footprint:
    """Measure an exported viewer folder: bytes of the files actually written (per cascade: obj, mtl, both JPEGs;
    ``mlp.json``; the total counts every file in the folder), triangle / vertex counts parsed from the OBJs, and the
    GPU-side memory estimate of spec 2.5."""
    from PIL import Image

    folder = Path(folder)
    asset = load_viewer(folder)
    per = []
    for c, cas in enumerate(asset.cascades):
        names = [f"mesh_{c}.obj", f"mesh_{c}.mtl", f"feat0_{c}.jpg", f"feat1_{c}.jpg"]
        files = {n: (folder / n).stat().st_size for n in names}
        sizes = []
        for n in names[2:]:
            with Image.open(folder / n) as im:
                sizes.append((im.height, im.width))
        corners = len(np.unique(np.stack([cas.faces.reshape(-1), cas.uv_faces.reshape(-1)], 1), axis=0))
        n_f = len(cas.faces)
        per.append(CascadeFootprint(files, sum(files.values()), n_f, len(cas.vertices), len(cas.uvs), corners, sizes,
                                    sum(h * w * 3 for h, w in sizes), corners * 20 + n_f * 12, n_f * 3 * 20))
    mlp_gpu = sum(int(v.size) * 4 for v in asset.mlp.values())
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    gpu = sum(p.gpu_texture_bytes + p.gpu_buffer_bytes for p in per) + mlp_gpu
    return Footprint(per, (folder / "mlp.json").stat().st_size, mlp_gpu, disk, gpu)
