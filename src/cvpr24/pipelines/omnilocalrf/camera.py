"""Equirectangular (ERP) camera geometry of OmniLocalRF (spec section 2.1), batched torch, float32/float64 agnostic.

Conventions (those of the official code, KAIST-VCLAB/OmniLocalRF @ 763f490, `src/utils/ray_utils.py` and
`src/utils/utils.py`):

- an ERP image is W x H (W = 2H for a full sphere); pixel (i, j) = (column, row); pixel centres are at +0.5:
  latitude  phi   = (j + 0.5) * pi / H - pi / 2       (row 0 looks up, towards -y),
  longitude theta = (i + 0.5) * 2 pi / W + pi,
  direction d = (cos phi sin theta, sin phi, cos phi cos theta), unit length;
  camera axes are OpenCV-like: x right, y down, z forward. The centre column (i + 0.5 = W / 2) looks along +z; the
  seam (the left edge of column 0 = the right edge of column W - 1) looks along -z, behind the camera.
- Projection is the exact inverse: theta = atan2(x, z), phi = asin(y / |p|) (computed as atan2(y, hypot(x, z))),
  i = (W / 2)(theta / pi + 1) - 0.5, j = H (phi / pi + 1/2) - 0.5: float pixel coordinates in
  [-0.5, W - 0.5] x [-0.5, H - 0.5]. i = -0.5 and i = W - 0.5 are the same longitude, so consumers take columns
  modulo W (`erp_bilinear_sample`).
- Depth is the distance along the unit ray from the camera centre, not the z coordinate: the renderer returns
  sum(w_k t_k) / |d| with |d| = 1 for ERP rays (`tensorBase.forward`), and the code back-projects a pixel as
  `directions * depth` (`train.py` flow loss, `omnilocal_rfs.forward_step` / `backward_step`).
- Poses are camera-to-world, 3x4 or 4x4, in the axes above (first frame = identity).
- A 6D rotation is the first two COLUMNS of the matrix, shape (..., 3, 2) (`sixD_to_mtx` / `mtx_to_sixD`).

Where the official code has a bug these functions implement the intent; each such place says so in its docstring.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cvpr24.core import geometry

NEAR = 1.0
FAR = 1000.0
SAMPLE_OFFSET = 0.1


def _check_size(h: int, w: int) -> None:
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"ERP size must be positive integers, got h={h}, w={w}")


def erp_pixel_to_direction(i: Tensor, j: Tensor, h: int, w: int) -> Tensor:
    """Unit camera-frame ray directions (..., 3) through float pixel coordinates (i, j) (pixel centre = integer + 0.5
    offset added here, as the code's `get_ray_directions_360`, which is also applied to projected float coords)."""
    _check_size(h, w)
    phi = (j + 0.5) * (math.pi / h) - math.pi / 2
    theta = (i + 0.5) * (2 * math.pi / w) + math.pi
    cos_phi = torch.cos(phi)
    return torch.stack([cos_phi * torch.sin(theta), torch.sin(phi), cos_phi * torch.cos(theta)], dim=-1)


def erp_pixel_grid(h: int, w: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                   ) -> Tensor:
    """(h, w, 2) integer pixel coordinates (i, j) = (column, row) as floats."""
    _check_size(h, w)
    jj, ii = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                            indexing="ij")
    return torch.stack([ii, jj], dim=-1)


def erp_directions(h: int, w: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                   ) -> Tensor:
    """(h, w, 3) unit ray directions of every pixel centre, in the camera frame."""
    grid = erp_pixel_grid(h, w, dtype=dtype, device=device)
    return erp_pixel_to_direction(grid[..., 0], grid[..., 1], h, w)


def erp_project(points: Tensor, h: int, w: int) -> Tensor:
    """Float pixel coordinates (..., 2) = (i, j) of camera-frame points (..., 3) (any non-zero length).

    Exact inverse of `erp_pixel_to_direction`. The code (`pts2px_360`) normalises with +1e-5, clamps to
    [-1 + 1e-5, 1 - 1e-5] and uses atan2(x, z + 1e-5): that bias is up to ~1e-5 rad; it is not reproduced.
    A point at the camera centre has no direction: it maps to (W/2 - 0.5, H/2 - 0.5); `reproject_rays` flags it.
    """
    _check_size(h, w)
    x, y, z = points.unbind(-1)
    theta = torch.atan2(x, z)
    phi = torch.atan2(y, torch.hypot(x, z))
    i = (w / 2) * (theta / math.pi + 1) - 0.5
    j = h * (phi / math.pi + 0.5) - 0.5
    return torch.stack([i, j], dim=-1)


def wrap_flow(flow: Tensor, w: float, h: float | None = None) -> Tensor:
    """Seam-aware ERP flow (..., 2): each horizontal component is replaced by its cyclic alternative (flow -+ W)
    whenever that is shorter, i.e. the horizontal flow is brought into [-W/2, W/2] (ties at +-W/2 keep the
    original, as the spec's strict `|flow| > |flow - W|`).

    The code (`get_pred_flow_360`) only tries `flow - W`, so a rightward seam crossing (flow close to -W) keeps the
    long way round; both signs are handled here (spec correction). With `h`, the vertical component gets the same
    treatment, as the code does (`cyclic_flow[..., 1] -= H`); rows do not really wrap on a sphere, so that branch
    only matters for absurd vertical flows and is off by default.
    """
    fx = flow[..., 0]
    fx = fx - w * torch.round(fx / w)
    out = [fx]
    fy = flow[..., 1]
    if h is not None:
        fy = fy - h * torch.round(fy / h)
    out.append(fy)
    return torch.stack(out, dim=-1)


def rotation_6d_to_matrix(x6: Tensor) -> Tensor:
    """(..., 3, 2) -> (..., 3, 3): Gram-Schmidt on the two columns, third column = b1 x b2 (`sixD_to_mtx`)."""
    if x6.shape[-2:] != (3, 2):
        raise ValueError(f"6D rotations have shape (..., 3, 2) (two matrix columns), got {tuple(x6.shape)}")
    a1, a2 = x6[..., 0], x6[..., 1]
    b1 = a1 / torch.linalg.vector_norm(a1, dim=-1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1
    b2 = b2 / torch.linalg.vector_norm(b2, dim=-1, keepdim=True)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(rot: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3, 2): the first two columns (`mtx_to_sixD`)."""
    if rot.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices have shape (..., 3, 3), got {tuple(rot.shape)}")
    return rot[..., :, :2].clone()


def contract(x: Tensor) -> Tensor:
    """mip-NeRF 360 contraction of points (..., 3): x if |x| <= 1 else (2 - 1/|x|) x / |x| (radius < 2);
    `cvpr24.core.geometry.contract` with the l2 norm.

    The code writes (2|x| - 1) / (|x|^2 + 1e-6) x: the same map up to the 1e-6 (relative difference <= 1e-6).
    """
    return geometry.contract(x, "l2")


def sample_ray_distances(n_samples: int, near: float = NEAR, far: float = FAR, *, jitter: bool = False,
                         generator: torch.Generator | None = None, n_rays: int | None = None,
                         offset: float = SAMPLE_OFFSET, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> Tensor:
    """Distances along a unit ray of the code's `sample_ray_contracted`, 2N of them with N = n_samples // 6.

    Reconstructed from the code (the spec describes it but leaves the jitter draws implicit):
    - first half: t_k = k / N (k = 0..N-1), + U(0, 1/N) when jittering, i.e. linear in [0, 1);
    - second half: s_k = k / N (+ an independent U(0, 1/N)), distance 1 / ((1 - s_k) / near + s_k / far), i.e.
      linear in disparity from `near` (s = 0) towards `far` (s -> 1);
    - `offset` (0.1) is added to all of them.
    The linear half draws its jitter first, then the disparity half (the code's order). Without `n_rays` the result
    has shape (2N,) and one draw is shared by all rays of a batch, exactly as the code (its jitter is one (1, N)
    tensor); with `n_rays` each ray gets its own draw, shape (n_rays, 2N) (the intent; use as an option).
    Distances are strictly increasing (linear half < 1 + offset <= disparity half). The renderer's last interval
    is 0 and the code also marks the last sample invalid, so the last sample never contributes.
    """
    n = int(n_samples) // 6
    if n < 1:
        raise ValueError(f"n_samples must be >= 6 (N = n_samples // 6 per half), got {n_samples}")
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    shape = (1 if n_rays is None else int(n_rays), n)
    base = torch.arange(n, dtype=dtype, device=device).expand(shape) / n
    lin, s = base, base
    if jitter:
        lin = base + torch.rand(shape, generator=generator, dtype=dtype, device=device) / n
        s = base + torch.rand(shape, generator=generator, dtype=dtype, device=device) / n
    disparity_half = 1.0 / ((1.0 - s) / near + s / far)
    out = torch.cat([lin, disparity_half], dim=-1) + offset
    return out[0] if n_rays is None else out


def as_homogeneous(pose: Tensor) -> Tensor:
    """(..., 3, 4) or (..., 4, 4) pose -> (..., 4, 4)."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"poses must be (..., 3, 4) or (..., 4, 4), got {tuple(pose.shape)}")
    bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1
    return torch.cat([pose, bottom], dim=-2)


def invert_pose(pose: Tensor) -> Tensor:
    """Inverse of a rigid pose (R | t) -> (R^T | -R^T t), (..., 4, 4)."""
    pose = as_homogeneous(pose)
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(pose)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def relative_pose(pose_src: Tensor, pose_dst: Tensor) -> Tensor:
    """Source-camera -> destination-camera transform world2cam_dst @ cam2world_src, (..., 4, 4) (`get_cam2cams`)."""
    return invert_pose(pose_dst) @ as_homogeneous(pose_src)


def reproject_rays(directions: Tensor, depth: Tensor, pose_src: Tensor, pose_dst: Tensor, h: int, w: int
                   ) -> tuple[Tensor, Tensor]:
    """Back-project source rays (..., N, 3) at distances `depth` (..., N) and project them into the destination ERP
    frame (the forward/backward steps of spec 2.4; `proj_360(directions * depth, get_cam2cams(...))`).

    Poses are camera-to-world, (..., 3|4, 4), broadcast against the leading dimensions. Returns float pixel
    coordinates (..., N, 2) in the destination frame (columns not wrapped: sample modulo W) and a validity mask
    (..., N): finite positive depth and a point not at the destination camera centre.
    """
    rel = relative_pose(pose_src, pose_dst).to(directions.dtype)
    pts = directions * depth[..., None]
    pts_dst = pts @ rel[..., :3, :3].transpose(-1, -2) + rel[..., None, :3, 3]
    coords = erp_project(pts_dst, h, w)
    scale = 1 + torch.linalg.vector_norm(rel[..., None, :3, 3], dim=-1)
    tiny = torch.finfo(directions.dtype).eps * 16
    valid = torch.isfinite(depth) & (depth > 0) & (torch.linalg.vector_norm(pts_dst, dim=-1) > tiny * scale)
    return coords, valid


def reproject(depth: Tensor, pose_src: Tensor, pose_dst: Tensor) -> tuple[Tensor, Tensor]:
    """Where every pixel centre of a source ERP depth map (..., H, W) (distance along the ray) lands in the
    destination frame: float pixel coordinates (..., H, W, 2) and a validity mask (..., H, W). Poses are
    camera-to-world (..., 3|4, 4) with the depth map's leading dimensions. Identity relative pose -> the pixel grid."""
    h, w = depth.shape[-2:]
    dirs = erp_directions(h, w, dtype=depth.dtype, device=depth.device).reshape(h * w, 3)
    lead = depth.shape[:-2]
    coords, valid = reproject_rays(dirs.expand(*lead, h * w, 3), depth.reshape(*lead, h * w), pose_src, pose_dst,
                                   h, w)
    return coords.reshape(*lead, h, w, 2), valid.reshape(*lead, h, w)


def depth_consistent(depth: Tensor, depth_ref: Tensor, margin: float = 0.05, max_depth: float = 1.0) -> Tensor:
    """Valid set of the bidirectional step (Eq. 5 / R_P): (1 - margin) d_ref < d < (1 + margin) d_ref and
    d < max_depth (strict, as the code). The paper's values are margin (tau) 0.05, max_depth (D_max) 1; the code
    passes margin 2, max_depth 0.05 to the forward step (an empty set in practice, spec correction) and 0.05, 1 to
    the backward step; callers choose."""
    return (depth_ref * (1 - margin) < depth) & (depth < depth_ref * (1 + margin)) & (depth < max_depth)


def erp_bilinear_sample(image: Tensor, coords: Tensor, *, wrap_rows: bool = False) -> Tensor:
    """Bilinear look-up of an ERP image (H, W, C) at float pixel coordinates (..., 2) = (i, j) -> (..., C).

    Columns wrap modulo W (the seam is seamless). Rows are clamped to [0, H - 1] by default; `wrap_rows=True`
    takes them modulo H as the code's `bilerp` does (geometrically wrong: row -1 is not row H - 1). The code's
    weights use truncation (`x - x.int()`) while its indices use floor, which extrapolates for negative coordinates
    (spec correction); floor is used for both here.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C), got {tuple(image.shape)}")
    h, w = image.shape[:2]
    i, j = coords[..., 0], coords[..., 1]
    i0, j0 = torch.floor(i), torch.floor(j)
    fi, fj = (i - i0)[..., None].to(image.dtype), (j - j0)[..., None].to(image.dtype)
    i0, j0 = i0.long(), j0.long()
    cols = (torch.remainder(i0, w), torch.remainder(i0 + 1, w))
    if wrap_rows:
        rows = (torch.remainder(j0, h), torch.remainder(j0 + 1, h))
    else:
        rows = (j0.clamp(0, h - 1), (j0 + 1).clamp(0, h - 1))
    top = image[rows[0], cols[0]] * (1 - fi) + image[rows[0], cols[1]] * fi
    bottom = image[rows[1], cols[0]] * (1 - fi) + image[rows[1], cols[1]] * fi
    return top * (1 - fj) + bottom * fj
