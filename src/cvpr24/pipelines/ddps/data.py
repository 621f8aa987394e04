"""DDPS data: the embedded generator (procedural objects, display, simulated polarization captures) and the
reader/writer of the official on-disk layout (spec Sec. 3.2), used for embedded and real data alike.

Official layout (`CreateBasisDataset`):

    <root>/selected_train_DDPS.txt, selected_test.txt      one scene name per line
    <root>/<scene>/main/diffuse/000.png ... 143.png         8-bit RGB basis image j (row-major 9 x 16)
    <root>/<scene>/geo_normal_img.npy                       (H, W, 3) in [0, 1]; n = -(2v - 1)
    <root>/<scene>/geo_normal_img_mask.npy                  (H, W, 3); nonzero = object (channel 0 used)

Traps handled here: the official loader drops the last character of every list line (so the last line
must end with a newline) -- this reader strips line endings instead, so both forms read the same; the
basis columns of the official files are mirrored with respect to the calibration (`basis_column_flip`,
applied by the renderer, not here); normals are stored as v = (1 - n)/2.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.pipelines.ddps import model as M

TRAIN_LIST, TEST_LIST = "selected_train_DDPS.txt", "selected_test.txt"
FAMILIES = ["ellipsoid", "superquadric", "bumpy", "vase", "toy"]
WHERE_TO_GET = (
    "The DDPS 3D-printed capture set is not public (ask the authors, github.com/MichaelCSJ/DDPS); the public "
    "DIR dataset (huggingface SeokjunChoi/display-inverse-rendering-dataset) is the documented alternative. "
    "Put it under the folder named by ddps.data.real.root (conf/full/parameters/ddps.yml) in the layout of "
    "pipelines/ddps/README.md (Real data)."
)


# --------------------------------------------------------------------------------------- hardware
def display_grid(rows: int = 9, cols: int = 16, x_range=(-0.56, 0.56), y_range=(-0.61, 0.0),
                 z_range=(0.25, 0.03)) -> np.ndarray:
    """Superpixel centres (rows, cols, 3) in metres, camera frame: a tilted panel above the camera
    matching the official calibration's extent (row 0 = top: y = -0.61 m, z = 0.25 m)."""
    x = np.linspace(*x_range, cols)
    y = np.linspace(*y_range, rows)
    z = np.linspace(*z_range, rows)
    grid = np.zeros((rows, cols, 3))
    grid[..., 0] = x[None, :]
    grid[..., 1] = y[:, None]
    grid[..., 2] = z[:, None]
    return grid


def light_energy(lights: np.ndarray, exposure4: float, depth: float = 0.5, peak: float = 0.6) -> float:
    """Inverse-square constant so that a full-white display on a white fronto-parallel point at the object's
    depth gives `peak` at the 4-pattern exposure."""
    x = np.array([0.0, 0.0, depth])
    d = lights.reshape(-1, 3) - x
    dist = np.linalg.norm(d, axis=-1)
    cos = np.clip(-d[:, 2] / dist, 0, None)  # normal (0, 0, -1)
    return float(peak / (exposure4 * (cos / dist**2).sum()))


# --------------------------------------------------------------------------------------- geometry
def pixel_grid(height: int, width: int, focal: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """World x, y of each pixel on the plane at the object's depth (weak perspective: every pixel of the
    object keeps these x, y and gets its own depth z = depth - h(x, y))."""
    r, c = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return (c + 0.5 - width / 2) / focal * depth, (r + 0.5 - height / 2) / focal * depth


def _rot(x, y, angle):
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * x + sa * y, -sa * x + ca * y


def shape_height(family: str, rng: np.random.Generator):
    """A random height function h(x, y) >= 0 (metres toward the camera; NaN off the object)."""
    def ell(a, b, c, ang, cx=0.0, cy=0.0):
        def h(x, y):
            u, v = _rot(x - cx, y - cy, ang)
            q = 1 - (u / a) ** 2 - (v / b) ** 2
            return np.where(q > 0, c * np.sqrt(np.clip(q, 0, None)), np.nan)
        return h

    if family == "ellipsoid":
        return ell(*rng.uniform(0.04, 0.06, 3), rng.uniform(0, np.pi))
    if family == "superquadric":
        a, b, c = rng.uniform(0.04, 0.06, 3)
        p, ang = rng.uniform(1.2, 3.0), rng.uniform(0, np.pi)

        def h(x, y):
            u, v = _rot(x, y, ang)
            q = 1 - np.abs(u / a) ** p - np.abs(v / b) ** p
            return np.where(q > 0, c * np.clip(q, 0, None) ** (1 / p), np.nan)
        return h
    if family == "bumpy":
        base = ell(*rng.uniform(0.045, 0.06, 3), rng.uniform(0, np.pi))
        k = rng.integers(3, 9)
        centres = rng.uniform(-0.035, 0.035, (k, 2))
        amps = rng.uniform(-0.005, 0.005, k)
        widths = rng.uniform(0.005, 0.02, k)

        def h(x, y):
            out = base(x, y)
            for (cx, cy), amp, w in zip(centres, amps, widths, strict=True):
                out = out + amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2))
            return out
        return h
    if family == "vase":
        r0, half = rng.uniform(0.03, 0.045), rng.uniform(0.045, 0.055)
        freq, phase, ang = rng.uniform(2, 6), rng.uniform(0, 2 * np.pi), rng.uniform(-0.6, 0.6)
        amp = rng.uniform(0.08, 0.18)

        def h(x, y):
            u, v = _rot(x, y, ang)
            r = r0 * (1 + amp * np.sin(2 * np.pi * freq * v / (2 * half) + phase))
            q = r**2 - u**2
            return np.where((q > 0) & (np.abs(v) < half), np.sqrt(np.clip(q, 0, None)), np.nan)
        return h
    if family == "toy":
        parts = []
        for _ in range(rng.integers(2, 5)):
            a, b = rng.uniform(0.02, 0.04, 2)
            parts.append((ell(a, b, rng.uniform(0.02, 0.04), rng.uniform(0, np.pi),
                              *rng.uniform(-0.035, 0.035, 2)), rng.uniform(0.0, 0.02)))

        def h(x, y):
            stack = np.stack([hp(x, y) + dz for hp, dz in parts])
            return np.where(np.all(np.isnan(stack), 0), np.nan, np.nanmax(np.nan_to_num(stack, nan=-1.0), 0))
        return h
    raise ValueError(f"unknown shape family {family!r} (known: {FAMILIES})")


def surface(h, x: np.ndarray, y: np.ndarray, depth: float, eps: float = 1e-5):
    """Points X = (x, y, depth - h), unit normals facing the camera (negative z) from the height gradient,
    and the object mask (finite height and gradient)."""
    hz = h(x, y)
    hx = (h(x + eps, y) - h(x - eps, y)) / (2 * eps)
    hy = (h(x, y + eps) - h(x, y - eps)) / (2 * eps)
    n = np.stack([-hx, -hy, -np.ones_like(hx)], -1)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    mask = np.isfinite(hz) & np.isfinite(n).all(-1) & (hz > 0)
    pts = np.stack([x, y, depth - np.nan_to_num(hz)], -1)
    n = np.where(mask[..., None], n, 0.0)
    return pts, n, mask


def albedo_map(mask: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant RGB Voronoi regions (3-6 cells, colours U(0.2, 0.9)) times a smooth field
    in [0.8, 1.0]."""
    k = rng.integers(3, 7)
    xs, ys = x[mask], y[mask]
    seeds = np.stack([rng.uniform(xs.min(), xs.max(), k), rng.uniform(ys.min(), ys.max(), k)], -1) \
        if mask.any() else np.zeros((k, 2))
    d = (x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
    colours = rng.uniform(0.2, 0.9, (k, 3))
    alb = colours[np.argmin(d, -1)]
    fx, fy, ph = rng.uniform(10, 40), rng.uniform(10, 40), rng.uniform(0, 2 * np.pi, 2)
    smooth = 0.9 + 0.05 * np.sin(fx * x + ph[0]) + 0.05 * np.sin(fy * y + ph[1])
    return (alb * smooth[..., None]) * mask[..., None]


def make_scene(family: str, seed: int, height: int, width: int, focal: float, depth: float) -> dict[str, Any]:
    """One procedural object: points, normals, mask, albedo, GGX parameters."""
    rng = np.random.default_rng(seed)
    x, y = pixel_grid(height, width, focal, depth)
    pts, n, mask = surface(shape_height(family, rng), x, y, depth)
    return {"points": pts, "normals": n, "mask": mask, "albedo": albedo_map(mask, x, y, rng),
            "rho_s": float(rng.uniform(0.0, 0.4)), "rough": float(rng.uniform(0.1, 0.5)), "family": family}


# --------------------------------------------------------------------------- simulated basis capture
def quantize8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255.0) / 255.0


def scene_components(scene: dict[str, Any], lights: np.ndarray, energy: float, *, distant: bool = False,
                     specular: bool = True, depth: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse and specular images (J, M, 3) of the scene's M object pixels (row-major order of the mask),
    lit by each superpixel at full white. Background pixels have zero radiance."""
    m = scene["mask"]
    return M.render_components(scene["points"][m], scene["normals"][m], scene["albedo"][m],
                               lights.reshape(-1, 3), energy, rho_s=scene["rho_s"], rough=scene["rough"],
                               distant=distant, centre=(0.0, 0.0, depth), specular=specular)


def scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., M, C) values of the object pixels -> (..., H, W, C) images with zeros elsewhere."""
    out = np.zeros((*values.shape[:-2], *mask.shape, values.shape[-1]), values.dtype)
    out[..., mask, :] = values
    return out


def capture_basis(diffuse: np.ndarray, specular: np.ndarray, rng: np.random.Generator, *, noise_sigma: float,
                  phi_deg: float, polarized: bool = True) -> np.ndarray:
    """The basis 'capture': four polarizer images per superpixel with Gaussian noise and 8-bit quantisation,
    then Stokes separation -> the stored diffuse basis values (uint8). `polarized=False` stores the
    quantised noise-free diffuse image directly (the simplified image formation)."""
    if not polarized:
        return np.round(np.clip(diffuse, 0, 1) * 255).astype(np.uint8)
    shots = [quantize8(i + rng.normal(0, noise_sigma, i.shape)) for i in M.polarizer_images(diffuse, specular, phi_deg)]
    diff, _ = M.separate_polarization(*shots)
    return np.round(np.clip(diff, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ layout I/O
def encode_normals(n: np.ndarray) -> np.ndarray:
    return ((1 - n) / 2).astype(np.float32)


def decode_normals(v: np.ndarray) -> np.ndarray:
    n = -(2 * np.asarray(v, np.float64) - 1)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    keep = ~np.isfinite(norm) | (norm > 1e-6)  # NaN stays NaN (validation reports it); zero stays zero
    return np.where(keep, n / np.maximum(np.nan_to_num(norm, nan=1.0), 1e-12), 0.0).astype(np.float32)


def read_list(path: Path) -> list[str]:
    """Scene names, one per line; trailing newline or not (the official loader would cut the last character
    of an unterminated last line: this reader strips line endings instead)."""
    if not path.is_file():
        raise MissingDatasetError(f"list file {path} is missing. {WHERE_TO_GET}")
    names = [ln.strip() for ln in path.read_text().splitlines()]
    return [n for n in names if n]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise MissingDatasetError(f"basis image {path} is missing (each scene needs main/diffuse/000.png ... "
                                f"143.png). {WHERE_TO_GET}")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    except Exception as exc:
        raise DatasetError(f"basis image {path} cannot be decoded ({exc}); re-export or re-copy this file") from exc
    return arr


def _read_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise MissingDatasetError(f"{what} {path} is missing. {WHERE_TO_GET}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"{what} {path} is not a readable .npy ({exc}); re-copy this file") from exc


def read_scene(folder: Path, n_lights: int = 144) -> dict[str, np.ndarray]:
    """One scene in the official layout: basis (J, H, W, 3) uint8, normals (H, W, 3) unit, mask (H, W) bool."""
    basis = [_read_png(folder / "main" / "diffuse" / f"{j:03d}.png") for j in range(n_lights)]
    shapes = {b.shape for b in basis}
    if len(shapes) != 1:
        bad = next(j for j, b in enumerate(basis) if b.shape != basis[0].shape)
        raise DatasetError(f"basis image {folder / 'main' / 'diffuse' / f'{bad:03d}.png'} has shape "
                           f"{basis[bad].shape}, the scene's others {basis[0].shape}; all 144 must match")
    basis = np.stack(basis)
    h, w = basis.shape[1:3]
    raw_n = _read_npy(folder / "geo_normal_img.npy", "normal map")
    raw_m = _read_npy(folder / "geo_normal_img_mask.npy", "mask")
    for arr, name in ((raw_n, "geo_normal_img.npy"), (raw_m, "geo_normal_img_mask.npy")):
        if arr.ndim != 3 or arr.shape[:2] != (h, w) or arr.shape[2] != 3:
            raise DatasetError(f"{folder / name} has shape {arr.shape}, expected ({h}, {w}, 3) like the "
                               f"scene's basis images")
    return {"basis": basis, "normals": decode_normals(raw_n), "normals_raw": raw_n.astype(np.float32),
            "mask": raw_m[..., 0] != 0}


def read_layout(root: str | Path, n_lights: int = 144, max_scenes: int | None = None) -> dict[str, Any]:
    """The whole dataset: {"train": [...], "test": [...], "scenes": {name: read_scene(...)}}."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDatasetError(f"DDPS dataset folder {root} does not exist. {WHERE_TO_GET}")
    train, test = read_list(root / TRAIN_LIST), read_list(root / TEST_LIST)
    if max_scenes:
        train, test = train[:max_scenes], test[:max_scenes]
    for name, lst in ((TRAIN_LIST, train), (TEST_LIST, test)):
        if not lst:
            raise DatasetError(f"{root / name} lists no scenes (empty split); each split needs at least one")
    scenes = {}
    for name in dict.fromkeys(train + test):
        if not (root / name).is_dir():
            raise MissingDatasetError(f"scene folder {root / name} (listed in the split files) is missing. {WHERE_TO_GET}")
        scenes[name] = read_scene(root / name, n_lights)
    return {"train": train, "test": test, "scenes": scenes}


def write_layout(root: str | Path, layout: dict[str, Any]) -> None:
    """Write `layout` in the official format (the embedded generator's output; also test fixtures)."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, lst in ((TRAIN_LIST, layout["train"]), (TEST_LIST, layout["test"])):
        (root / name).write_text("".join(f"{s}\n" for s in lst))
    for name, sc in layout["scenes"].items():
        folder = root / name / "main" / "diffuse"
        folder.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(sc["basis"]):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", compress_level=1)
            (folder / f"{j:03d}.png").write_bytes(buf.getvalue())
        normals_raw = sc.get("normals_raw")
        if normals_raw is None:
            normals_raw = encode_normals(sc["normals"])
        np.save(root / name / "geo_normal_img.npy", np.asarray(normals_raw, np.float32))
        np.save(root / name / "geo_normal_img_mask.npy",
                np.repeat(np.asarray(sc["mask"], np.uint8)[..., None], 3, -1))


class DDPSLayoutDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Kedro dataset for the official DDPS folder layout: `save` writes it (embedded generator), `load` reads
    it with the same reader the real data goes through."""

    def __init__(self, path: str, n_lights: int = 144, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._n = int(n_lights)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return read_layout(self._path, self._n)

    def save(self, data: dict[str, Any]) -> None:
        write_layout(self._path, data)

    def _exists(self) -> bool:
        return (self._path / TRAIN_LIST).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "n_lights": self._n}


# ------------------------------------------------------------------------------------- utilities
def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion with a size x size square, one iteration (official: 7 x 7); size <= 1 is a no-op."""
    if size <= 1:
        return mask.astype(bool)
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask.astype(bool), structure=np.ones((size, size), bool), border_value=0)


def median3(basis: np.ndarray) -> np.ndarray:
    """3 x 3 median filter of every basis image (the official loader's cv2.medianBlur(.., 3))."""
    from scipy.ndimage import median_filter

    return median_filter(basis, size=(1, 3, 3, 1), mode="nearest")


def resize_scene(sc: dict[str, np.ndarray], factor: int) -> dict[str, np.ndarray]:
    """Downsample a scene by an integer factor (box filter for basis images, subsampling for normals and
    mask) -- the official `resizing_factor`."""
    if factor <= 1:
        return sc
    j, h, w, _ = sc["basis"].shape
    h2, w2 = h // factor, w // factor
    b = sc["basis"][:, : h2 * factor, : w2 * factor].astype(np.float32)
    b = b.reshape(j, h2, factor, w2, factor, 3).mean((2, 4))
    n = sc["normals"][factor // 2:: factor, factor // 2:: factor][:h2, :w2]
    m = sc["mask"][factor // 2:: factor, factor // 2:: factor][:h2, :w2]
    return {"basis": np.round(b).astype(np.uint8), "normals": n, "mask": m}
