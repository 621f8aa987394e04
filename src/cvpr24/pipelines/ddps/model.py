"""DDPS in one file: display patterns, image formation, polarization separation, photometric stereo, loss.

The whole method (spec Sec. 2) is a differentiable chain with one trainable tensor, the display patterns:

    theta --sigmoid--> P in [0,1]^{N x 9 x 16 x 3} --^gamma--> L (emitted radiance per superpixel)
    L, basis images B_j --relight--> I_n = clip(G s t sum_j L'_{n,j,c} B_j[p,c])        (Sec. 2.3)
    I_n, L, light directions l_j(p) --photometric_stereo--> normals n(p), albedo rho(p)   (Sec. 2.4)
    n, n_gt, mask --cosine_loss--> (1 - n.n_gt)/2 averaged over the eroded mask           (Sec. 2.5)

plus the physics used to *simulate* captures (`render_components`: inverse-square point lights, Lambertian
diffuse and GGX/Cook-Torrance specular reflection; `polarizer_images` and `separate_polarization`: the
four-angle polarization camera and its Stokes-based diffuse/specular separation).

Conventions: camera at the origin looking +z; normals that face the camera have negative z (official data
stores them as v = (1 - n)/2); light positions are in metres in the camera frame; images are (..., H*W, 3)
or (..., H, W, 3) float tensors in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# ----------------------------------------------------------------------------------------- patterns
HEURISTICS = ["OLAT", "grouped_OLAT", "mono_gradient", "tri_gradient", "mono_complementary",
              "tri_complementary", "mono_random", "tri_random", "gray_noise"]
ANY_N = {"mono_random", "tri_random", "gray_noise"}  # families defined for any number of patterns


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def initial_pattern(name: str, n: int, rows: int = 9, cols: int = 16, seed: int = 0) -> np.ndarray:
    """The official initial / heuristic patterns (spec Sec. 2.7) as P0 in [0.01, 0.99]^{n x rows x cols x 3}.

    Families defined for 2 or 4 patterns fill patterns beyond those with the base value 0.1 (as the official
    code does for N = 4); with fewer patterns than the family has, the first `n` are used.
    """
    g = np.random.default_rng(seed)
    base = 0.1
    out = np.full((n, rows, cols, 3), base, np.float64)
    r = np.arange(rows)[:, None] * np.ones((1, cols))
    c = np.ones((rows, 1)) * np.arange(cols)[None, :]
    vert = 0.1 + 0.8 * (1 - r / rows)
    horiz = 0.1 + 0.8 * (1 - c / cols)
    rad = np.hypot((r - (rows - 1) / 2) / rows, (c - (cols - 1) / 2) / cols)
    radial = 0.1 + 0.8 * (1 - rad / rad.max())
    fam: list[np.ndarray]
    if name == "tri_random":
        return np.clip(g.uniform(0, 1, (n, rows, cols, 3)), 0.01, 0.99)
    if name == "gray_noise":
        return np.clip(g.normal(0.5, 0.01, (n, rows, cols, 3)), 0.01, 0.99)
    if name == "mono_random":
        return np.clip(np.repeat(g.uniform(0, 1, (n, rows, cols, 1)), 3, axis=3), 0.01, 0.99)
    if name == "mono_gradient":
        fam = [np.repeat(x[..., None], 3, 2) for x in (vert, vert[::-1], horiz, horiz[:, ::-1])]
    elif name == "tri_gradient":
        fam = [np.stack([horiz, radial, vert], -1), np.stack([1.0 - horiz, 1.0 - radial, 1.0 - vert], -1)]
    elif name == "mono_complementary":
        halves = [c >= cols / 2, c < cols / 2, r >= rows / 2, r < rows / 2]  # right, left, bottom, top
        fam = [np.repeat(np.where(h, 0.9, base)[..., None], 3, 2) for h in halves]
    elif name == "tri_complementary":
        right, left, bottom, top = c >= cols / 2, c < cols / 2, r >= rows / 2, r < rows / 2
        fam = [np.stack([np.where(right, 0.9, base), np.where(left, 0.9, base), np.where(top, 0.9, base)], -1),
               np.stack([np.where(left, 0.9, base), np.where(right, 0.9, base), np.where(bottom, 0.9, base)], -1)]
    elif name == "OLAT":
        fam = []
        for rr, cc in ((0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)):
            p = np.full((rows, cols, 3), base)
            p[rr, cc] = 0.9
            fam.append(p)
    elif name == "grouped_OLAT":
        fam = []
        for rs, cs in ((slice(0, 3), slice(0, 3)), (slice(0, 3), slice(cols - 3, cols)),
                       (slice(rows - 3, rows), slice(0, 3)), (slice(rows - 3, rows), slice(cols - 3, cols))):
            p = np.full((rows, cols, 3), base)
            p[rs, cs] = 0.9
            fam.append(p)
    else:
        raise ValueError(f"unknown pattern family {name!r} (known: {HEURISTICS})")
    for i, p in enumerate(fam[:n]):
        out[i] = p
    return np.clip(out, 0.01, 0.99)


class DisplayPatterns(nn.Module):
    """The only trainable tensor of DDPS: pattern logits theta; P = sigmoid(theta).

    `channels="mono"` ties R, G and B (one logit per superpixel), the monochrome-pattern variant.
    """

    def __init__(self, p0: np.ndarray, channels: str = "rgb"):
        super().__init__()
        p = torch.as_tensor(np.asarray(p0), dtype=torch.float64 if np.asarray(p0).dtype == np.float64
                            else torch.float32)
        if channels == "mono":
            p = p.mean(dim=-1, keepdim=True)
        elif channels != "rgb":
            raise ValueError(f"channels must be 'rgb' or 'mono', got {channels!r}")
        self.channels = channels
        self.theta = nn.Parameter(logit(p.clamp(0.01, 0.99)))

    def forward(self) -> torch.Tensor:
        p = torch.sigmoid(self.theta)
        return p.expand(*p.shape[:-1], 3) if self.channels == "mono" else p


def radiance(p: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    """Display value -> emitted radiance (monitor gamma)."""
    return p.clamp_min(0) ** gamma


def exposure(n_patterns: int, rendering_scalar: float = 130 / 40, static_interval: float = 1 / 24,
             gain: float = 1.0) -> float:
    """G * s * t with the total capture time split across the patterns: t = static_interval / N."""
    return float(gain) * float(rendering_scalar) * float(static_interval) / int(n_patterns)


# -------------------------------------------------------------------------------- image formation
def relight(basis: torch.Tensor, light: torch.Tensor, scale: float, column_flip: bool = False) -> torch.Tensor:
    """Basis-image relighting before clipping: scale * sum_j L'_{n,j,c} B_j[p,c].

    basis (B, 3, J, P), channel-first (one contiguous J x P matrix per colour channel, so the sum over the J
    superpixels is a plain matrix product), J = rows*cols superpixels in row-major order; light
    (N, rows, cols, 3) radiance. With `column_flip` the pattern's columns are mirrored first (the official
    basis files are stored in horizontally mirrored order with respect to the calibration).
    Returns (B, N, P, 3).
    """
    lp = torch.flip(light, dims=[2]) if column_flip else light
    weights = lp.reshape(lp.shape[0], -1, 3).permute(2, 0, 1).to(basis.dtype)  # (3, N, J)
    return scale * torch.matmul(weights[None], basis).permute(0, 2, 3, 1)


def channel_first(basis: torch.Tensor) -> torch.Tensor:
    """(B, J, P, 3) basis images -> the (B, 3, J, P) layout `relight` takes."""
    return basis.permute(0, 3, 1, 2).contiguous()


def capture(linear: torch.Tensor, noise_sigma: float = 0.0, generator: torch.Generator | None = None,
            noise_model: str = "gaussian") -> torch.Tensor:
    """Camera: add noise (Gaussian, or Poisson-Gaussian approximated by a signal-dependent Gaussian) and
    clip to [1e-8, 1] as the official renderer does."""
    if noise_sigma > 0:
        eps = torch.randn(linear.shape, generator=generator, dtype=linear.dtype)
        std = noise_sigma if noise_model == "gaussian" else torch.sqrt(noise_sigma**2 + noise_sigma * linear.clamp_min(0))
        linear = linear + std * eps
    return linear.clamp(1e-8, 1.0)


def light_directions(points: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """Unit vectors from each surface point (..., P, 3) to each light (J, 3): (..., P, J, 3)."""
    d = lights.to(points.dtype) - points[..., :, None, :]
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def reference_points(height: int, width: int, focal: float, depth: float, dtype=torch.float32) -> torch.Tensor:
    """Pixel rays unprojected onto the plane z = depth (the official reconstructor's reference plane): (H*W, 3)."""
    r, c = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    x = (c + 0.5 - width / 2) / focal * depth
    y = (r + 0.5 - height / 2) / focal * depth
    return torch.stack([x, y, torch.full_like(x, depth)], -1).reshape(-1, 3)


def ggx_specular(n: np.ndarray, wi: np.ndarray, v: np.ndarray, rho_s, rough, fresnel: float = 0.98) -> np.ndarray:
    """Cook-Torrance BRDF with the GGX distribution and Smith shadowing, the formula of the older official
    commit: f_s = rho_s F D G / (4 (n.l)(n.v)), D = m^2 / (4 cos^4 th_h (m^2 + tan^2 th_h)^2),
    G = prod 2 / (1 + sqrt(1 + m^2 tan^2 th))."""
    h = wi + v
    h = h / np.linalg.norm(h, axis=-1, keepdims=True).clip(1e-12)
    ndl = np.clip((n * wi).sum(-1), 1e-4, 1.0)
    ndv = np.clip((n * v).sum(-1), 5e-2, 1.0)
    ndh = np.clip((n * h).sum(-1), 1e-4, 1.0)
    m2 = np.asarray(rough) ** 2

    def tan2(cos):
        return (1 - cos**2) / cos**2

    d = m2 / (4 * ndh**4 * (m2 + tan2(ndh)) ** 2)
    g = 2 / (1 + np.sqrt(1 + m2 * tan2(ndl))) * 2 / (1 + np.sqrt(1 + m2 * tan2(ndv)))
    return np.asarray(rho_s) * fresnel * d * g / (4 * ndl * ndv)


def render_components(points: np.ndarray, normals: np.ndarray, albedo: np.ndarray, lights: np.ndarray,
                      energy: float, rho_s=0.0, rough=0.3, distant: bool = False, centre=None,
                      specular: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-superpixel diffuse and specular images of a scene lit by each superpixel at full white.

    points/normals/albedo (P, 3), lights (J, 3). Point lights: l_j = (p_j - X)/|p_j - X|, irradiance
    E_j = energy/|p_j - X|^2; `distant=True` uses the direction and distance from `centre` for every pixel
    (the simplified image formation). Attached shadows max(0, n.l). Returns D, S of shape (J, P, 3).
    """
    if distant:
        c = np.asarray(centre, points.dtype)
        d = lights - c
        dist = np.linalg.norm(d, axis=-1)
        wi = np.broadcast_to((d / dist[:, None])[:, None, :], (len(lights), len(points), 3))
        e = np.broadcast_to((energy / dist**2)[:, None], (len(lights), len(points)))
    else:
        d = lights[:, None, :] - points[None]
        dist = np.linalg.norm(d, axis=-1)
        wi = d / dist[..., None]
        e = energy / dist**2
    cos = np.clip((normals[None] * wi).sum(-1), 0, None)
    diffuse = albedo[None] * (e * cos)[..., None]
    if not specular:
        return diffuse, np.zeros_like(diffuse)
    v = -points / np.linalg.norm(points, axis=-1, keepdims=True)
    fs = ggx_specular(normals[None], wi, v[None], rho_s, rough)
    spec = np.where(cos > 0, fs * e * cos, 0.0)
    return diffuse, np.repeat(spec[..., None], 3, -1)


# ------------------------------------------------------------------------------------ polarization
POLARIZER_ANGLES = (0.0, 45.0, 90.0, 135.0)


def polarizer_images(diffuse, specular, phi_deg: float = 45.0):
    """The four polarization-camera images I_theta = D/2 + S cos^2(theta - phi): unpolarized diffuse
    light loses half through any polarizer; the specular reflection keeps the LCD's linear polarization."""
    return [diffuse / 2 + specular * math.cos(math.radians(t - phi_deg)) ** 2 for t in POLARIZER_ANGLES]


def separate_polarization(i0, i45, i90, i135):
    """Stokes separation (spec Sec. 2.1): s0 = (I0+I45+I90+I135)/2, s1 = I0 - I90, s2 = I45 - I135,
    I_spec = sqrt(s1^2 + s2^2), I_diff = s0 - I_spec. Works on numpy arrays or torch tensors."""
    s0 = (i0 + i45 + i90 + i135) / 2
    s1, s2 = i0 - i90, i45 - i135
    spec = (s1**2 + s2**2) ** 0.5
    return s0 - spec, spec


# ------------------------------------------------------------------------------ photometric stereo
def solve3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched 3 x 3 solve by the adjugate (Cramer's rule): elementwise, so thousands of per-pixel systems
    cost a few vector operations instead of a batched LU; differentiable. a (..., 3, 3), b (..., 3)."""
    (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = (r.unbind(-1) for r in a.unbind(-2))
    c00, c01, c02 = a11 * a22 - a12 * a21, a12 * a20 - a10 * a22, a10 * a21 - a11 * a20
    det = a00 * c00 + a01 * c01 + a02 * c02
    inv = torch.stack([
        torch.stack([c00, a02 * a21 - a01 * a22, a01 * a12 - a02 * a11], -1),
        torch.stack([c01, a00 * a22 - a02 * a20, a02 * a10 - a00 * a12], -1),
        torch.stack([c02, a01 * a20 - a00 * a21, a00 * a11 - a01 * a10], -1),
    ], -2) / det[..., None, None]
    return (inv * b[..., None, :]).sum(-1)


def pack_directions(directions: torch.Tensor) -> torch.Tensor:
    """(P, J, 3) or (B, P, J, 3) light directions -> the (B, J, P, 3) contiguous layout `photometric_stereo`
    works in (pack once outside a training loop: strided permutes of this array dominate a step's time)."""
    d = directions if directions.dim() == 4 else directions[None]
    return d.permute(0, 2, 1, 3).contiguous()


def photometric_stereo(images: torch.Tensor, light: torch.Tensor, directions: torch.Tensor, scale: float = 1.0,
                       delta: float = 1e-12, albedo: bool = True,
                       packed: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Analytic RGB photometric stereo of the official reconstructor (spec Sec. 2.4), differentiable.

    images (B, N, P, 3); light (N, rows, cols, 3) radiance in calibration order; directions (P, J, 3) shared
    by the batch or (B, P, J, 3) (or, with `packed=True`, already in the (B or 1, J, P, 3) layout of
    `pack_directions`). Per pixel: effective light vectors m_{n,c} = sum_j L_{n,j,c} l_j, initial
    per-channel albedo a_c = max_n I_n[c], normal from the normal equations of the 3N equations
    a_c m_{n,c}^T x = I_n[c] with a ridge of `delta` times the Gram matrix's trace, n = x / |x|; then
    per-channel albedo by 1-D least squares with shading max(l_j.n, 1e-8), divided by the exposure `scale`. Returns normals (B, P, 3) and albedo (B, P, 3) (None
    with `albedo=False`, which training uses: the loss is on normals only). Pixels whose images are all zero
    (padding, black background) get a zero normal, never NaN.
    """
    b, n, p, _ = images.shape
    dirs = (directions if packed else pack_directions(directions)).to(images.dtype)  # (B', J, P, 3)
    bd, j = dirs.shape[0], dirs.shape[1]
    weights = light.reshape(n, j, 3).to(images.dtype)
    wt = weights.permute(0, 2, 1).reshape(n * 3, j)  # rows ordered (n, c)
    m = torch.matmul(wt[None], dirs.reshape(bd, j, p * 3)).reshape(bd, n, 3, p, 3)  # (B', N, 3c, P, 3k)
    a = images.amax(dim=1)  # (B, P, 3)
    rows = m.permute(0, 3, 1, 2, 4) * a[:, :, None, :, None]  # (B, P, N, 3c, 3k)
    rows = rows.reshape(b, p, n * 3, 3)
    rhs = images.permute(0, 2, 1, 3).reshape(b, p, n * 3).double()
    # A^T A and A^T b in float64 from the three columns of A (elementwise: far faster than P tiny batched
    # matmuls; float32 Gram matrices lose ~1e-7 x cond(A)^2 of the solution)
    col = rows.double().unbind(-1)
    ata = torch.stack([torch.stack([(col[k] * col[q]).sum(-1) for q in range(3)], -1) for k in range(3)], -2)
    atb = torch.stack([(col[k] * rhs).sum(-1) for k in range(3)], -1)
    # ridge relative to the Gram matrix's trace (scale-free, so dim and bright pixels are treated alike), plus
    # 1e-30 so all-zero systems (padding, black pixels) give x = 0 instead of 0/0. With delta = 1e-12 a system
    # of cond(A) = 1e3 (flat gray) is solved as plain least squares to ~1e-4 deg; rank-deficient ones stay finite
    ridge = delta * ata.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-30
    eye = torch.eye(3, dtype=torch.float64)
    x = solve3(ata + ridge[..., None, None] * eye, atb).to(images.dtype)
    normal = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
    if not albedo:
        return normal, None
    shading = torch.einsum("bjpk,bpk->bpj", dirs.expand(b, -1, -1, -1), normal).clamp_min(1e-8)
    e = torch.einsum("njc,bpj->bnpc", weights, shading)
    rho = (e * images).sum(1) / (e * e).sum(1).clamp_min(1e-12) / scale
    return normal, rho


# ------------------------------------------------------------------------------------ loss, metric
def cosine_loss(normal: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official `cosine` loss: sum over masked pixels of (1 - n.n_gt)/2, divided by the mask count."""
    e = (1 - (normal * target).sum(-1)) / 2
    m = mask.to(e.dtype)
    return (e * m).sum() / m.sum().clamp_min(1)


def angular_error_deg(normal, target):
    """arccos(clip(n.n_gt / (|n| |n_gt|), -1, 1)) in degrees (numpy or torch). The norms are divided out so
    the reconstructor's n = x / (|x| + 1e-8) does not add a spurious ~0.01 degree; a zero normal scores 90."""
    if isinstance(normal, torch.Tensor):
        cos = (normal * target).sum(-1) / (normal.norm(dim=-1) * target.norm(dim=-1)).clamp_min(1e-12)
        return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    normal, target = np.asarray(normal), np.asarray(target)
    cos = (normal * target).sum(-1) / np.maximum(np.linalg.norm(normal, axis=-1) * np.linalg.norm(target, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def step_lr_schedule(optimizer: torch.optim.Optimizer, step_size_epochs: int, gamma: float,
                     steps_per_epoch: int) -> torch.optim.lr_scheduler.StepLR:
    """The official StepLR (every `step_size_epochs` epochs times `gamma`), stepped once per optimisation
    step by core.training.train_loop, so its step size is counted in steps."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(step_size_epochs) * int(steps_per_epoch),
                                           gamma=float(gamma))
