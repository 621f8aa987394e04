"""BUS data: the embedded "OpenStreets" source/target pair and readers for GTA5, SYNTHIA and Cityscapes.

OpenStreets (spec section 8) draws street scenes from a random layout into a *Cityscapes label-id* map
(the same ids GTA5's label PNGs use), then renders it twice, differently:

- source ("game"): flat saturated colours per class, small per-object jitter, hard edges, no noise;
- target ("real"): hue shifted by ~25 degrees, lower saturation, texture noise, an illumination gradient,
  blur and sensor noise; private objects (person, pole, truck, traffic sign) appear more often and at
  more varied sizes.

Private objects are coloured per object at random (`private_style: random_hue`, the default profile) or from
the class palette (`palette`); `private_prob`, `private_count` and `private_scale` set how often, how many
and how large they are per domain (see conf/base/parameters/bus.yml for why the default profile's values).

The id maps of `labels.py` then make the open-set protocol of section 2.1: the source keeps the private
objects in its images but labels them 255; the target evaluation split labels them 13 (`private`). The
target *train* split's labels are kept only as hidden labels for one measurement (pseudo-label accuracy)
and are never given to training.

Real-data readers return `(sample_id, image uint8 HxWx3, label-id map uint8 HxW)`; the conversion to train
ids is done by `labels.py`'s LUTs, so a label PNG is read in its original format.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from cvpr24.core.ingest import MissingDatasetError, missing_dataset

# Cityscapes label ids used by the generator
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE = 21, 22, 23, 24, 26, 27, 28, 32, 33
PRIVATE_SHAPES = ("person", "pole", "truck", "sign")
MAX_LABEL_ID = 33  # Cityscapes label ids 0-33 (GTA5 uses the same ids)

# source palette (hue in degrees, saturation, value) per label id; the target shifts hue and lowers saturation
PALETTE: dict[int, tuple[float, float, float]] = {
    ROAD: (260, 0.25, 0.45), SIDEWALK: (320, 0.55, 0.85), BUILDING: (30, 0.25, 0.55), WALL: (60, 0.45, 0.65),
    FENCE: (20, 0.55, 0.70), POLE: (0, 0.0, 0.80), LIGHT: (45, 0.95, 0.95), SIGN: (55, 0.95, 0.90),
    VEGETATION: (110, 0.80, 0.55), TERRAIN: (80, 0.55, 0.75), SKY: (205, 0.55, 0.95), PERSON: (345, 0.85, 0.85),
    CAR: (225, 0.90, 0.65), TRUCK: (180, 0.85, 0.60), BUS: (0, 0.85, 0.75), MOTORCYCLE: (285, 0.80, 0.70),
    BICYCLE: (160, 0.85, 0.80),
}
WINDOW = (200, 0.15, 0.30)  # building and bus windows (labelled as their object)


# ------------------------------------------------------------------------------------------ layout
def _rect(lab: np.ndarray, top: int, left: int, h: int, w: int, cls: int) -> None:
    H, W = lab.shape
    t, b = max(0, top), min(H, top + max(1, h))
    lft, r = max(0, left), min(W, left + max(1, w))
    if t < b and lft < r:
        lab[t:b, lft:r] = cls


def _ellipse(lab: np.ndarray, yy, xx, cy: float, cx: float, ry: float, rx: float, cls: int) -> None:
    lab[((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0] = cls


def draw_layout(rng: np.random.Generator, height: int, width: int, private_prob: float,
                private_scale: tuple[float, float], n_things: tuple[int, int],
                private_count: tuple[int, int] = (1, 3)) -> np.ndarray:
    """One scene as a Cityscapes label-id map (uint8 H x W)."""
    H, W = height, width
    s = H / 64.0  # sizes below are for 64-pixel-high images
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lab = np.full((H, W), SKY, np.uint8)
    horizon = int(H * rng.uniform(0.30, 0.45))
    # buildings from the horizon up
    x = int(rng.integers(-4, 4))
    while x < W:
        bw = int(rng.integers(int(10 * s), int(26 * s)))
        bh = int(rng.integers(int(8 * s), max(int(9 * s), horizon)))
        _rect(lab, horizon - bh, x, bh + 2, bw, BUILDING)
        x += bw + int(rng.integers(0, int(6 * s) + 1))
    # vegetation blobs around the horizon
    for _ in range(int(rng.integers(1, 4))):
        _ellipse(lab, yy, xx, horizon - rng.uniform(2, 8) * s, rng.uniform(0, W), rng.uniform(4, 9) * s,
                 rng.uniform(5, 14) * s, VEGETATION)
    # ground: terrain, then sidewalk band, then the road trapezoid
    lab[horizon:] = TERRAIN
    top_half = rng.uniform(0.12, 0.25) * W
    centre = W / 2 + rng.uniform(-0.1, 0.1) * W
    frac = np.clip((yy - horizon) / max(H - horizon, 1), 0, 1)
    half = top_half + frac * (0.75 * W - top_half)
    side = half + (3 + 10 * frac) * s
    ground = yy >= horizon
    lab[ground & (np.abs(xx - centre) <= side)] = SIDEWALK
    lab[ground & (np.abs(xx - centre) <= half)] = ROAD
    # low wall / fence bands at the horizon on one side
    for cls in (WALL, FENCE):
        if rng.random() < 0.6:
            w = int(rng.integers(int(10 * s), int(28 * s)))
            left = int(rng.integers(0, max(1, W - w)))
            h = int(rng.integers(int(3 * s), int(6 * s)) + 1)
            _rect(lab, horizon - h + 1, left, h, w, cls)
    # things (common) and private objects, standing on the ground
    def foot() -> tuple[int, int]:
        fy = int(rng.uniform(horizon + 3 * s, H - 1))
        return fy, int(rng.uniform(0, W))

    def scale_at(fy: int) -> float:  # perspective: bigger near the bottom
        return s * (0.6 + 0.9 * (fy - horizon) / max(H - horizon, 1))

    kinds = ["car", "car", "bus", "motorcycle", "bicycle", "light"]
    for _ in range(int(rng.integers(n_things[0], n_things[1] + 1))):
        kind = kinds[int(rng.integers(len(kinds)))]
        fy, fx = foot()
        k = scale_at(fy)
        _draw_object(lab, yy, xx, kind, fy, fx, k, rng)
    n_private = int(rng.random() < private_prob) * int(rng.integers(private_count[0], private_count[1] + 1))
    for _ in range(n_private):
        kind = PRIVATE_SHAPES[int(rng.integers(len(PRIVATE_SHAPES)))]
        fy, fx = foot()
        k = scale_at(fy) * rng.uniform(*private_scale)
        _draw_object(lab, yy, xx, kind, fy, fx, k, rng)
    return lab


def _draw_object(lab, yy, xx, kind: str, fy: int, fx: int, k: float, rng: np.random.Generator) -> None:
    if kind == "car":
        w, h = int(14 * k) + 2, int(6 * k) + 2
        _rect(lab, fy - h, fx - w // 2, h - int(2 * k), w, CAR)
        _rect(lab, fy - h - int(3 * k), fx - w // 4, int(3 * k) + 1, w // 2, CAR)
        for dx in (-w // 3, w // 3):
            _ellipse(lab, yy, xx, fy - 1.5 * k, fx + dx, 1.8 * k, 1.8 * k, CAR)
    elif kind == "bus":
        w, h = int(26 * k) + 3, int(11 * k) + 3
        _rect(lab, fy - h, fx - w // 2, h, w, BUS)
    elif kind in ("motorcycle", "bicycle"):
        cls = MOTORCYCLE if kind == "motorcycle" else BICYCLE
        r = (2.4 if kind == "motorcycle" else 2.0) * k + 0.8
        for dx in (-2.2 * r, 2.2 * r):
            _ellipse(lab, yy, xx, fy - r, fx + dx, r, r, cls)
        _rect(lab, int(fy - 2.6 * r), int(fx - 2.2 * r), max(1, int(0.8 * k) + 1), int(4.4 * r) + 1, cls)
    elif kind == "light":
        h = int(14 * k) + 4
        _rect(lab, fy - h, fx, h, max(1, int(1.2 * k)), POLE)  # its stub is a pole (private)
        _rect(lab, fy - h - int(5 * k) - 2, fx - int(1.2 * k), int(5 * k) + 2, int(2.8 * k) + 2, LIGHT)
    elif kind == "person":
        h = 14 * k + 4
        _ellipse(lab, yy, xx, fy - 0.4 * h, fx, 0.4 * h, 0.17 * h + 1, PERSON)
        _ellipse(lab, yy, xx, fy - 0.88 * h, fx, 0.12 * h + 0.8, 0.12 * h + 0.8, PERSON)
    elif kind == "pole":
        h = int(30 * k) + 6
        _rect(lab, fy - h, fx, h, max(2, int(1.6 * k) + 1), POLE)
    elif kind == "truck":
        w, h = int(22 * k) + 3, int(12 * k) + 3
        _rect(lab, fy - h, fx - w // 2, h, int(0.7 * w), TRUCK)
        _rect(lab, fy - int(0.65 * h), fx - w // 2 + int(0.7 * w), int(0.65 * h), w - int(0.7 * w), TRUCK)
    elif kind == "sign":
        h = int(18 * k) + 5
        _rect(lab, fy - h, fx, h, max(1, int(1.2 * k)), POLE)
        _ellipse(lab, yy, xx, fy - h - 2.5 * k, fx, 2.8 * k + 1, 2.8 * k + 1, SIGN)


# ---------------------------------------------------------------------------------------- rendering
def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h % 360) / 360.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))),
                    np.float32)


PRIVATE_IDS = (POLE, SIGN, PERSON, TRUCK)
PRIVATE_STYLES = ("palette", "random_hue")


def render(lab: np.ndarray, domain: str, rng: np.random.Generator, target_cfg: dict[str, Any],
           private_style: str = "palette") -> np.ndarray:
    """Colour a label-id map in the `source` or `target` style; returns uint8 H x W x 3. Private objects take
    their class colour from PALETTE (`palette`) or one random colour per object (`random_hue`)."""
    if private_style not in PRIVATE_STYLES:
        raise ValueError(f"bus.data.domains.<domain>.private_style must be one of {PRIVATE_STYLES}, got {private_style!r}")
    H, W = lab.shape
    img = np.zeros((H, W, 3), np.float32)
    for cid in np.unique(lab):
        if private_style == "random_hue" and int(cid) in PRIVATE_IDS:
            continue  # painted per object below
        h, s, v = PALETTE.get(int(cid), (0, 0, 0.5))
        if domain == "target":
            h, s = h + float(target_cfg["hue_shift"]), s * float(target_cfg["saturation"])
        mask = lab == cid
        comps, n = ndimage.label(mask)
        jit = 6.0 if domain == "source" else 12.0
        colours = np.stack([_rgb(h + rng.normal(0, jit), s + rng.normal(0, 0.05), v + rng.normal(0, 0.05))
                            for _ in range(n + 1)])
        img[mask] = colours[comps[mask]]
    # building windows: a grid of dark cells inside buildings
    win = (lab == BUILDING) & ((np.arange(H)[:, None] % 4) == 1) & ((np.arange(W)[None] % 5) < 2)
    wh, ws, wv = WINDOW
    if domain == "target":
        wh = wh + float(target_cfg["hue_shift"])
    img[win] = _rgb(wh, ws, wv)
    if private_style == "random_hue":
        _paint_private_random_hue(img, lab, domain, rng, target_cfg)
    if domain == "source":
        return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (H, W)), 1.5)
    img = img * (1 + float(target_cfg["texture"]) * tex / (tex.std() + 1e-6))[..., None]
    gy, gx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    a, b = rng.uniform(-1, 1, 2)
    img = img * (1 + float(target_cfg["illumination"]) * (a * (gx - 0.5) + b * (gy - 0.5)))[..., None]
    img = ndimage.gaussian_filter(img, (float(target_cfg["blur"]), float(target_cfg["blur"]), 0))
    img = img + rng.normal(0, float(target_cfg["sensor_noise"]), img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _paint_private_random_hue(img: np.ndarray, lab: np.ndarray, domain: str, rng: np.random.Generator,
                              target_cfg: dict[str, Any]) -> None:
    """`private_style: random_hue`: every private object (connected component) gets its own colour, hue
    uniform on the circle, saturation 0.4-0.9 (times the target's saturation factor in the target), value
    0.5-0.95: like clothing or liveries, no colour belongs to the private class, so a source-trained network
    cannot map it confidently onto one common class by colour (the `palette` style puts person next to bus,
    sign next to traffic light, pole next to road, and those objects are misread with confidence)."""
    comps, n = ndimage.label(np.isin(lab, PRIVATE_IDS))
    sat = float(target_cfg["saturation"]) if domain == "target" else 1.0
    for k in range(1, n + 1):
        img[comps == k] = _rgb(rng.uniform(0, 360), rng.uniform(0.4, 0.9) * sat, rng.uniform(0.5, 0.95))


def generate_split(n: int, domain: str, seed: int, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """`n` scenes of one domain: images uint8 (n, H, W, 3) and Cityscapes label-id maps uint8 (n, H, W)."""
    H, W = int(cfg["height"]), int(cfg["width"])
    dom = cfg["domains"][domain]
    rng = np.random.default_rng(seed)
    images = np.zeros((n, H, W, 3), np.uint8)
    labels = np.zeros((n, H, W), np.uint8)
    for i in range(n):
        lab = draw_layout(rng, H, W, float(dom["private_prob"]), tuple(dom["private_scale"]),
                          tuple(cfg["things_per_image"]), tuple(dom.get("private_count", (1, 3))))
        labels[i] = lab
        images[i] = render(lab, domain, rng, cfg["domains"]["target"], str(dom.get("private_style", "palette")))
    return images, labels


# -------------------------------------------------------------------------------------- real data
GTA5_SOURCE = "https://download.visinf.tu-darmstadt.de/data/from_games/ (images + labels archives)"
SYNTHIA_SOURCE = "https://synthia-dataset.net/downloads/ (SYNTHIA-RAND-CITYSCAPES)"
CITYSCAPES_SOURCE = "https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)"

# SYNTHIA RAND-CITYSCAPES class ids (first channel of GT/LABELS/*.png) -> Cityscapes label ids
SYNTHIA_TO_CITYSCAPES: dict[int, int] = {
    1: SKY, 2: BUILDING, 3: ROAD, 4: SIDEWALK, 5: FENCE, 6: VEGETATION, 7: POLE, 8: CAR, 9: SIGN, 10: PERSON,
    11: BICYCLE, 12: MOTORCYCLE, 15: LIGHT, 16: TERRAIN, 17: 25, 18: TRUCK, 19: BUS, 20: 31, 21: WALL,
}

# Cityscapes polygon label names -> label ids (the classes that matter here; anything else -> 0 unlabeled)
CITYSCAPES_NAME_TO_ID: dict[str, int] = {
    "unlabeled": 0, "ego vehicle": 1, "rectification border": 2, "out of roi": 3, "static": 4, "dynamic": 5,
    "ground": 6, "road": 7, "sidewalk": 8, "parking": 9, "rail track": 10, "building": 11, "wall": 12,
    "fence": 13, "guard rail": 14, "bridge": 15, "tunnel": 16, "pole": 17, "polegroup": 18,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23, "person": 24,
    "rider": 25, "car": 26, "truck": 27, "bus": 28, "caravan": 29, "trailer": 30, "train": 31,
    "motorcycle": 32, "bicycle": 33, "license plate": -1,
}


def _missing(what: str, path: Path, source: str, where: str) -> MissingDatasetError:
    return missing_dataset(what, path, f"download it from {source} and unpack it so that {where} exists "
                           "(or set its root in conf/local/parameters/bus.yml); see pipelines/bus/README.md (Real data).")


def read_png(path: Path) -> np.ndarray:
    """A PNG as a NumPy array, 8- or 16-bit, with a clear error for a missing or corrupt file."""
    import imageio.v3 as iio

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:
        raise ValueError(f"{path} is not a readable PNG ({exc}); re-extract it from the dataset archive") from exc


Sample = tuple[str, np.ndarray, "np.ndarray | None", str]  # (sample_id, image, label ids or None, source file)


def _rgb_only(image: np.ndarray) -> np.ndarray:
    return image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image


def read_gta5(root: str | Path, max_images: int | None = None) -> list[Sample]:
    """GTA5: `root/images/NNNNN.png` (RGB) with `root/labels/NNNNN.png` (single-channel label ids). A label
    that is missing comes back as None (the ingest manifest reports it with the image's path)."""
    root = Path(root)
    img_dir, lab_dir = root / "images", root / "labels"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise _missing("GTA5 folder", d, GTA5_SOURCE, f"{root}/images/*.png and {root}/labels/*.png")
    out: list[Sample] = []
    for img_path in sorted(img_dir.glob("*.png"))[: max_images or None]:
        lab_path = lab_dir / img_path.name
        label = None
        if lab_path.is_file():
            label = read_png(lab_path)
            if label.ndim == 3:  # an RGB-saved label carries the id in channel 0
                label = label[..., 0]
        out.append((f"gta5_{img_path.stem}", _rgb_only(read_png(img_path)), label, str(img_path)))
    if not out:
        raise _missing("GTA5 images", img_dir / "*.png", GTA5_SOURCE, f"{root}/images/*.png")
    return out


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def read_png16(path: Path) -> np.ndarray:
    """Decode a non-interlaced 8/16-bit grey/RGB(A) PNG with NumPy. Pillow reads 16-bit RGB PNGs (SYNTHIA's
    label format) as 8-bit and loses the class ids, so SYNTHIA labels go through this reader."""
    import struct
    import zlib

    raw = Path(path).read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: PNG without an IHDR chunk")
    width, height, depth, ctype, _, _, interlace = header
    if ctype not in _PNG_CHANNELS or depth not in (8, 16) or interlace:
        raise ValueError(f"{path}: unsupported PNG (colour type {ctype}, depth {depth}, interlace {interlace})")
    ch = _PNG_CHANNELS[ctype]
    bpp = ch * depth // 8
    try:
        data = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as exc:
        raise ValueError(f"{path}: corrupt PNG data ({exc}); re-extract it from the dataset archive") from exc
    stride = width * bpp
    rows = data[: height * (stride + 1)].reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for y in range(height):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            rec = line
        elif ftype == 1:  # Sub: a running sum per byte position within a pixel
            rec = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1)
        elif ftype == 2:
            rec = line + prior
        else:  # Average / Paeth depend on the reconstructed left pixel: one pixel at a time
            rec = np.zeros(stride, np.int32)
            up = prior.astype(np.int32)
            for x in range(0, stride, bpp):
                left = rec[x - bpp:x] if x else np.zeros(bpp, np.int32)
                if ftype == 3:
                    pred = (left + up[x:x + bpp]) // 2
                else:
                    ul = up[x - bpp:x] if x else np.zeros(bpp, np.int32)
                    p = left + up[x:x + bpp] - ul
                    pa, pb, pc = np.abs(p - left), np.abs(p - up[x:x + bpp]), np.abs(p - ul)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up[x:x + bpp], ul))
                rec[x:x + bpp] = (line[x:x + bpp] + pred) % 256
        out[y] = rec % 256
        prior = out[y]
    arr = out.view(">u2").astype(np.uint16) if depth == 16 else out
    arr = arr.reshape(height, width, ch)
    return arr[..., 0] if ch == 1 else arr


def read_synthia(root: str | Path, max_images: int | None = None) -> list[Sample]:
    """SYNTHIA RAND-CITYSCAPES: `root/RGB/*.png` with `root/GT/LABELS/*.png` (16-bit, class id in channel 0),
    converted to Cityscapes label ids (SYNTHIA's void and the classes it lacks become 0 = unlabelled)."""
    root = Path(root)
    img_dir, lab_dir = root / "RGB", root / "GT" / "LABELS"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise _missing("SYNTHIA folder", d, SYNTHIA_SOURCE, f"{root}/RGB/*.png and {root}/GT/LABELS/*.png")
    lut = np.zeros(65536, np.uint8)
    lut[np.arange(23, 65536)] = 255  # ids beyond SYNTHIA's 0-22 are not SYNTHIA labels: flagged in ingest
    for sid, cid in SYNTHIA_TO_CITYSCAPES.items():
        lut[sid] = cid
    out: list[Sample] = []
    for img_path in sorted(img_dir.glob("*.png"))[: max_images or None]:
        lab_path = lab_dir / img_path.name
        label = None
        if lab_path.is_file():
            raw = read_png16(lab_path)
            if raw.ndim == 3:
                raw = raw[..., 0]
            if raw.dtype != np.uint16:
                raise ValueError(f"{lab_path}: SYNTHIA labels are 16-bit PNGs, got {raw.dtype}; use the original "
                                 "GT/LABELS files, not a converted copy")
            label = lut[raw]
        out.append((f"synthia_{img_path.stem}", _rgb_only(read_png(img_path)), label, str(img_path)))
    if not out:
        raise _missing("SYNTHIA images", img_dir / "*.png", SYNTHIA_SOURCE, f"{root}/RGB/*.png")
    return out


def rasterize_cityscapes_polygons(doc: dict[str, Any], path: Path | str = "<json>") -> np.ndarray:
    """A Cityscapes `*_gtFine_polygons.json` document as a label-id map (objects drawn in file order,
    later ones on top, as the official `json2labelImg` does; unknown names raise)."""
    from skimage.draw import polygon as draw_polygon

    H, W = int(doc["imgHeight"]), int(doc["imgWidth"])
    lab = np.zeros((H, W), np.uint8)
    for obj in doc.get("objects", []):
        name = obj["label"]
        base = name[:-len("group")] if name.endswith("group") and name not in CITYSCAPES_NAME_TO_ID else name
        if base not in CITYSCAPES_NAME_TO_ID:
            raise ValueError(f"{path}: unknown Cityscapes label {name!r}")
        cid = CITYSCAPES_NAME_TO_ID[base]
        if cid < 0 or obj.get("deleted"):
            continue
        pts = np.asarray(obj["polygon"], np.float64)
        rr, cc = draw_polygon(pts[:, 1], pts[:, 0], shape=(H, W))
        lab[rr, cc] = cid
    return lab


def read_cityscapes(root: str | Path, split: str, max_images: int | None = None,
                    use_polygons: bool = False) -> list[Sample]:
    """Cityscapes: `root/leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
    `root/gtFine/<split>/<city>/*_gtFine_labelIds.png` (or `*_gtFine_polygons.json` when `use_polygons`)."""
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise _missing("Cityscapes folder", d, CITYSCAPES_SOURCE,
                           f"{root}/leftImg8bit/{split}/<city>/ and {root}/gtFine/{split}/<city>/")
    out: list[Sample] = []
    for img_path in sorted(img_dir.glob("*/*_leftImg8bit.png"))[: max_images or None]:
        stem = img_path.name.removesuffix("_leftImg8bit.png")
        city = img_path.parent.name
        label = None
        if use_polygons:
            gt_path = gt_dir / city / f"{stem}_gtFine_polygons.json"
            if gt_path.is_file():
                try:
                    doc = json.loads(gt_path.read_text())
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{gt_path} is not valid JSON ({exc}); re-extract gtFine") from exc
                label = rasterize_cityscapes_polygons(doc, gt_path)
        else:
            gt_path = gt_dir / city / f"{stem}_gtFine_labelIds.png"
            if gt_path.is_file():
                label = read_png(gt_path)
                label = label[..., 0] if label.ndim == 3 else label
        out.append((f"cs_{split}_{stem}", _rgb_only(read_png(img_path)), label, str(img_path)))
    if not out:
        raise _missing("Cityscapes images", img_dir / "<city>/*_leftImg8bit.png", CITYSCAPES_SOURCE,
                       f"{root}/leftImg8bit/{split}/<city>/")
    return out


def resize_pair(image: np.ndarray, label: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (bilinear) and its label map (nearest) to height x width."""
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return img, lab


def n_unknown_label_ids(label: np.ndarray) -> int:
    """Pixels whose id is not a Cityscapes/GTA5 label id (0-33)."""
    return int((np.asarray(label) > MAX_LABEL_ID).sum())
