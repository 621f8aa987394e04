"""CMS data: the two embedded GCD sets, the GCD split, the two-view augmentation, and the readers of the
real datasets' original on-disk formats (full profile).

Embedded (spec section 8):
- `digits_gcd`: scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], bilinearly upsampled to
  16x16; old classes 0-4 (the CIFAR-10 convention), new 5-9.
- `glyphs_gcd`: a procedural 24-class set (8 shapes x 3 fills, 32x32 RGB) with nuisance position, size,
  rotation, colour, gradient background, noise and clutter; fine-grained pairs (triangle up/down,
  solid/striped) play the fine-grained datasets' role.

Real formats (each reader returns uint8 images N x H x W x C and integer labels; see the README):
CIFAR-10/100 python pickles, ImageNet(-100) class folders, CUB-200-2011 text files, Stanford Cars devkit
`.mat`, FGVC-Aircraft variant lists, SSB split pickles. The CIFAR batches and the SSB split files ARE
Python pickles: they are read only from a path the user gave, with a restricted unpickler that refuses to
build anything but plain containers, strings, numbers and NumPy arrays.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvpr24.core.ingest import MissingDatasetError, missing_dataset
from cvpr24.core.safety import load_weights

DIGITS_OLD = [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------- embedded
def digits_gcd(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as uint8 N x size x size x 1 (0..255) and labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    img = np.clip(np.rint(x[:, 0].numpy() * 255.0), 0, 255).astype(np.uint8)[..., None]
    return img, d.target.astype(np.int64)


SHAPES = ["disc", "square", "triangle_up", "triangle_down", "plus", "ring", "diamond", "bar_h"]
FILLS = ["solid", "stripes", "checker"]


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of shape-local coordinates (u right, v down, shape radius 1)."""
    r2 = u ** 2 + v ** 2
    if shape == "disc":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5 ** 2)
    if shape == "plus":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
    if shape == "bar_h":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)
    if shape in ("triangle_up", "triangle_down"):
        vv = v if shape == "triangle_up" else -v
        # apex (0, -1), base corners (+-0.95, 0.75): inside = below both slanted edges and above the base
        return (vv <= 0.75) & (vv >= -1.0 + 1.75 * np.abs(u) / 0.95)
    raise ValueError(shape)


def _hsv_to_rgb(h, s, v):
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v))


def glyphs_gcd(seed: int = 0, n_per_class: int = 160, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The spec's procedural 24-class glyph set: class = shape x fill. Pure function of (seed, n_per_class)."""
    rng = np.random.default_rng(seed)
    n_cls = len(SHAPES) * len(FILLS)
    labels = np.repeat(np.arange(n_cls), n_per_class)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    stripes = ((yy.astype(int) // 2) % 2) == 0
    checker = (((yy.astype(int) // 2) + (xx.astype(int) // 2)) % 2) == 0
    out = np.empty((len(labels), size, size, 3), np.uint8)
    scale = size / 32.0
    for i, lab in enumerate(labels):
        shape, fill = SHAPES[lab // len(FILLS)], FILLS[lab % len(FILLS)]
        cx, cy = rng.uniform(10, 22, 2) * scale
        rad = rng.uniform(9, 15) * scale / 2
        rot = math.radians(rng.uniform(-10, 10) if "triangle" in shape else rng.uniform(-15, 15))
        dx, dy = xx - cx, yy - cy
        u = (math.cos(rot) * dx + math.sin(rot) * dy) / rad
        v = (-math.sin(rot) * dx + math.cos(rot) * dy) / rad
        mask = _shape_mask(shape, u, v)
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        ang = rng.uniform(0, 2 * math.pi)
        ramp = (((xx - size / 2) * math.cos(ang) + (yy - size / 2) * math.sin(ang)) / size + 0.5)[..., None]
        bg = (1 - ramp) * c0 * 0.6 + ramp * c1 * 0.6
        fg = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 1), rng.uniform(0.6, 1))
        pattern = {"solid": np.ones_like(mask), "stripes": stripes, "checker": checker}[fill]
        img = bg.copy()
        img[mask & pattern] = fg
        img[mask & ~pattern] = fg * 0.35
        for _ in range(rng.integers(0, 3)):
            px, py = rng.integers(0, size - 3, 2)
            img[py: py + 3, px: px + 3] = rng.uniform(0, 1, 3)
        img = img + rng.normal(0, 0.04, img.shape)
        out[i] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return out, labels.astype(np.int64)


def glyph_class_names() -> list[str]:
    return [f"{s}/{f}" for s in SHAPES for f in FILLS]


# -------------------------------------------------------------------------------------------- split
def stratified_holdout(labels: np.ndarray, frac: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of a stratified `frac` hold-out ("test" split used only for checkpoint selection)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, int(round(frac * len(idx))), replace=False)] = True
    return test


def gcd_split(labels: np.ndarray, old_classes: list[int], prop_train_labels: float = 0.5,
              seed: int = 0) -> dict[str, np.ndarray]:
    """The GCD split of a training set (spec 3.1): D_L = a uniformly random int(prop * n_old) of the
    old-class images (numpy seed 0, without replacement); D_U = everything else. Labels are remapped so
    old classes are 0..|old|-1 and new classes follow in sorted order."""
    old_classes = [int(c) for c in old_classes]
    new_classes = sorted(int(c) for c in np.unique(labels) if int(c) not in old_classes)
    remap = {c: i for i, c in enumerate([*old_classes, *new_classes])}
    y = np.array([remap[int(c)] for c in labels], np.int64)
    old_idx = np.flatnonzero(np.isin(labels, old_classes))
    rng = np.random.RandomState(seed)
    chosen = rng.choice(old_idx, int(prop_train_labels * len(old_idx)), replace=False)
    labelled = np.zeros(len(labels), bool)
    labelled[chosen] = True
    return {"y": y, "labelled": labelled, "is_old": y < len(old_classes),
            "class_order": np.array([*old_classes, *new_classes], np.int64)}


def ssb_like_old_classes(n_classes: int, n_old: int, seed: int = 0) -> list[int]:
    """Old classes drawn at random (the spec's glyph convention, numpy seed 0), returned sorted."""
    return sorted(int(c) for c in np.random.RandomState(seed).choice(n_classes, n_old, replace=False))


# -------------------------------------------------------------------------------------- augmentation
def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x C -> float N x C x H x W in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, gen: torch.Generator, *, max_shift: float = 2.0, max_rot_deg: float = 10.0,
            scale: tuple[float, float] = (0.9, 1.1), noise: float = 0.05, cutout: int = 3,
            cutout_p: float = 0.3, hflip: bool = False, colour: bool = False,
            grayscale_p: float = 0.2) -> torch.Tensor:
    """The spec's training view, batched: random translation (+-max_shift px), rotation, scale, optional
    horizontal flip, optional colour nuisance (RGB only: channel permutation, brightness, grayscale with
    probability `grayscale_p`), additive Gaussian noise and a random cutout square with probability p. All random
    numbers come from `gen`, drawn for the whole batch at once (so any sharding of the batch over
    workers sees the same views)."""
    n, _, h, w = x.shape
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_rot_deg)
    sc = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
    tx = (torch.rand(n, generator=gen) * 2 - 1) * max_shift * 2 / w
    ty = (torch.rand(n, generator=gen) * 2 - 1) * max_shift * 2 / h
    flip = (torch.rand(n, generator=gen) < 0.5) if hflip else torch.zeros(n, dtype=torch.bool)
    sx = torch.where(flip, -1.0, 1.0) / sc
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos * sx, -sin / sc, tx], 1), torch.stack([sin * sx, cos / sc, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if colour and x.shape[1] == 3:  # DINO-style colour nuisance: channel permutation, brightness, grayscale
        perm = torch.rand(n, 3, generator=gen).argsort(dim=1)
        out = out.gather(1, perm[:, :, None, None].expand(-1, -1, h, w))
        out = out * (0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen))
        grey = torch.rand(n, generator=gen) < grayscale_p
        out = torch.where(grey[:, None, None, None], out.mean(1, keepdim=True).expand_as(out), out)
    out = out + noise * torch.randn(out.shape, generator=gen)
    if cutout > 0 and cutout_p > 0:
        on = torch.rand(n, generator=gen) < cutout_p
        cy = torch.randint(0, h - cutout + 1, (n,), generator=gen)
        cx = torch.randint(0, w - cutout + 1, (n,), generator=gen)
        ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        box = ((ys >= cy[:, None, None]) & (ys < cy[:, None, None] + cutout)
               & (xs >= cx[:, None, None]) & (xs < cx[:, None, None] + cutout) & on[:, None, None])
        out = out.masked_fill(box[:, None], 0.0)
    return out


def test_transform(x: torch.Tensor) -> torch.Tensor:
    """Evaluation view: the image itself (deterministic)."""
    return x


# ---------------------------------------------------------------------------------- real: helpers
def _need(path: Path, what: str, where: str) -> Path:
    if not path.exists():
        raise missing_dataset(what, path, where)
    return path


class _SafeUnpickler(pickle.Unpickler):
    """Builds only NumPy arrays/dtypes and plain containers: a hostile pickle cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"), ("builtins", "set"),
               ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 store bytes

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def load_data_pickle(path: str | Path) -> Any:
    """Load a DATA pickle (CIFAR batch, SSB split file) from a user-given path with the restricted
    unpickler above (latin1 for the Python-2 CIFAR pickles)."""
    data = Path(path).read_bytes()
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        if "refusing" in str(exc):
            raise pickle.UnpicklingError(f"{path}: {exc}") from exc
        raise ValueError(f"{path}: not a readable data pickle ({exc}); re-extract it from the original archive") from exc
    except (EOFError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable data pickle ({exc!r}); re-extract it from the original archive") from exc


def _images_from_files(files: list[Path], size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
        except Exception as exc:
            raise ValueError(f"{f}: cannot be read as an image ({exc}); re-copy it from the original archive") from exc
    return out


# ------------------------------------------------------------------------------- real: the readers
CIFAR_WHERE = ("Get the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "unpack it under the configured root (cifar-10-batches-py/ or cifar-100-python/).")


def read_cifar(root: str | Path, which: str = "cifar100", train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10/100 in torchvision's python-pickle layout (rows of 3072 uint8 = R, G, B planes)."""
    root = Path(root)
    if which == "cifar10":
        base = _need(root / "cifar-10-batches-py", "CIFAR-10", CIFAR_WHERE)
        files = [base / f"data_batch_{i}" for i in range(1, 6)] if train else [base / "test_batch"]
        key = "labels"
    elif which == "cifar100":
        base = _need(root / "cifar-100-python", "CIFAR-100", CIFAR_WHERE)
        files, key = [base / ("train" if train else "test")], "fine_labels"
    else:
        raise ValueError(f"unknown CIFAR variant {which!r}")
    xs, ys = [], []
    for f in files:
        entry = load_data_pickle(_need(f, f"{which} batch", CIFAR_WHERE))
        data = np.asarray(entry["data"], np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{f}: 'data' has shape {data.shape}, expected N x 3072 (32x32x3 planes)")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(entry[key], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


IMAGENET_WHERE = ("Put ImageNet-1k's train split in class folders: <root>/train/<wnid>/*.JPEG "
                  "(from image-net.org; the val split must also be arranged in class folders).")


def imagenet100_classes(root: str | Path, seed: int = 0, n: int = 100) -> list[str]:
    """GCD's ImageNet-100: np.random.seed(0); choice(range(1000), 100, replace=False) over the sorted
    class folders, relabelled 0..99 in draw order."""
    folders = sorted(p.name for p in _need(Path(root) / "train", "ImageNet train", IMAGENET_WHERE).iterdir()
                     if p.is_dir())
    np.random.seed(seed)
    picks = np.random.choice(range(len(folders)), min(n, len(folders)), replace=False)
    return [folders[i] for i in picks]


def read_imagenet_subset(root: str | Path, classes: list[str], split: str = "train", size: int = 224,
                         max_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    base = _need(Path(root) / split, f"ImageNet {split}", IMAGENET_WHERE)
    files, labels = [], []
    for i, wnid in enumerate(classes):
        folder = _need(base / wnid, f"ImageNet class {wnid}", IMAGENET_WHERE)
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        if not found:
            raise ValueError(f"{folder}: empty class folder; {IMAGENET_WHERE}")
        found = found[:max_per_class] if max_per_class else found
        files += found
        labels += [i] * len(found)
    return _images_from_files(files, size), np.array(labels, np.int64)


CUB_WHERE = "Get CUB_200_2011.tgz (Caltech-UCSD Birds-200-2011) and unpack it so that <root>/CUB_200_2011/images.txt exists."


def read_cub(root: str | Path, train: bool = True, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    base = _need(Path(root) / "CUB_200_2011", "CUB-200-2011", CUB_WHERE)

    def table(name: str) -> dict[int, str]:
        rows = _need(base / name, f"CUB {name}", CUB_WHERE).read_text().split("\n")
        return {int(r.split(" ", 1)[0]): r.split(" ", 1)[1].strip() for r in rows if r.strip()}

    paths, labels, split = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    ids = [i for i in sorted(paths) if (split[i] == "1") == train]
    files = [_need(base / "images" / paths[i], "CUB image", CUB_WHERE) for i in ids]
    return _images_from_files(files, size), np.array([int(labels[i]) - 1 for i in ids], np.int64)


CARS_WHERE = ("Get the Stanford Cars images (cars_train/, cars_test/) and the devkit with "
              "cars_train_annos.mat / cars_test_annos_withlabels.mat; put them under <root>.")


def read_stanford_cars(root: str | Path, train: bool = True, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Stanford Cars devkit annotations: struct array `annotations` with bbox_x1..bbox_y2, class (1..196), fname."""
    import scipy.io

    root = Path(root)
    ann = _need(root / "devkit" / ("cars_train_annos.mat" if train else "cars_test_annos_withlabels.mat"),
                "Stanford Cars annotations", CARS_WHERE)
    mat = scipy.io.loadmat(ann, squeeze_me=True, struct_as_record=False)
    if "annotations" not in mat:
        raise ValueError(f"{ann}: no 'annotations' struct array; {CARS_WHERE}")
    anns = np.atleast_1d(mat["annotations"])
    folder = root / ("cars_train" if train else "cars_test")
    files = [_need(folder / str(a.fname), "Stanford Cars image", CARS_WHERE) for a in anns]
    return _images_from_files(files, size), np.array([int(a.__dict__["class"]) - 1 for a in anns], np.int64)


AIRCRAFT_WHERE = "Get fgvc-aircraft-2013b.tar.gz and unpack it so that <root>/fgvc-aircraft-2013b/data/images_variant_trainval.txt exists."


def read_aircraft(root: str | Path, train: bool = True, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """FGVC-Aircraft variant lists ("<7-digit id> <variant name with spaces>"); classes = sorted variants."""
    base = _need(Path(root) / "fgvc-aircraft-2013b" / "data", "FGVC-Aircraft", AIRCRAFT_WHERE)
    variants = set()
    rows = {}
    for split in ("trainval", "test"):
        f = base / f"images_variant_{split}.txt"
        if split == "trainval" or f.exists():
            lines = [ln.strip() for ln in _need(f, "aircraft variant list", AIRCRAFT_WHERE).read_text().splitlines() if ln.strip()]
            rows[split] = [(ln.split(" ", 1)[0], ln.split(" ", 1)[1]) for ln in lines]
            variants |= {v for _, v in rows[split]}
    classes = sorted(variants)
    pick = rows["trainval" if train else "test"]
    files = [_need(base / "images" / f"{i}.jpg", "aircraft image", AIRCRAFT_WHERE) for i, _ in pick]
    return _images_from_files(files, size), np.array([classes.index(v) for _, v in pick], np.int64)


def read_ssb_split(path: str | Path) -> dict[str, Any]:
    """An SSB split pickle ({known_classes: [...], unknown_classes: {Easy, Medium, Hard}}), user-given path."""
    split = load_data_pickle(_need(Path(path), "SSB split file", "Copy data/ssb_splits/*.pkl from the GCD/CMS "
                                   "repositories (they are data) to the configured split-file folder."))
    if "known_classes" not in split:
        raise ValueError(f"{path}: not an SSB split file (no 'known_classes')")
    unknown = split.get("unknown_classes", {})
    return {"old": [int(c) for c in split["known_classes"]],
            "new": [int(c) for k in ("Hard", "Medium", "Easy") for c in unknown.get(k, [])]}


def load_dino_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The user's local DINO ViT-B/16 state dict (`dino_vitbase16_pretrain.pth`), weights only."""
    p = Path(path)
    if not p.is_file():
        raise MissingDatasetError(f"DINO weights: {p} does not exist. Download dino_vitbase16_pretrain.pth from "
                                  "the DINO project (facebookresearch/dino) and set cms.model.weights to its path.")
    state = load_weights(p)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not any(k.startswith("blocks.11.") for k in state):
        raise ValueError(f"{p}: not a ViT-B/16 state dict (no blocks.11.* keys)")
    return state


READERS = {"cifar10": lambda r, tr, s: read_cifar(r, "cifar10", tr), "cifar100": lambda r, tr, s: read_cifar(r, "cifar100", tr),
           "cub": lambda r, tr, s: read_cub(r, tr, s), "scars": lambda r, tr, s: read_stanford_cars(r, tr, s),
           "aircraft": lambda r, tr, s: read_aircraft(r, tr, s)}
