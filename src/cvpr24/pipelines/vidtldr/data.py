"""vid-TLDR data: the embedded salient-sprites videos and the real-dataset readers.

Embedded (spec 8.1): every clip shows one *salient* sprite (saturated, bright, 10-14 px) whose shape
(disc, square, triangle, cross, ring) and motion (linear with reflection, circular orbit) make the label
(10 classes), over a drifting low-contrast texture ("camera" motion) with small desaturated distractor
sprites of the same shapes and Gaussian noise. Background and distractors carry no label information:
they come from their own random generator (:func:`sample_background`), so swapping the backgrounds of two
clips keeps both labels. The salient object's per-frame mask is kept and turned into per-token foreground
labels (:func:`token_foreground`) for scoring the saliency. The `clutter` split has 8-10 distractors and a
stronger texture.

Real data (full profile), read from the layouts the official code bases use:

* Kinetics-400 (UMT / VideoMAE ``single_modality``): list files ``train.csv`` / ``val.csv`` /
  ``test.csv`` with rows ``<video path> <integer label>`` (space-delimited, no header), paths relative to
  the video folder.
* Something-Something v2: ``labels.json`` ({template: id}), ``train.json`` / ``validation.json`` (lists of
  {"id", "template", ...}; the template's brackets removed gives the label name) and ``<id>.webm`` videos.

Video decoding: this environment has no video decoder (no PyAV, torchcodec or ffmpeg bindings), so the
readers read *decoded-frame folders* -- a video ``abc.mp4`` / ``123.webm`` is the folder ``abc/`` / ``123/``
of its frames as JPEG/PNG files, sorted by name (what ``ffmpeg -i abc.mp4 abc/%05d.jpg`` writes). If PyAV is
installed the video files themselves are decoded. A video with neither gives an error that says how to
extract its frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cvpr24.core.ingest import MissingDatasetError, missing_dataset

SHAPES = ("disc", "square", "triangle", "cross", "ring")
MOTIONS = ("linear", "orbit")
CLASSES = [f"{s}-{m}" for s in SHAPES for m in MOTIONS]  # label = 2 * shape + motion
FRAME_EXT = (".jpg", ".jpeg", ".png")
K400_SOURCE = "https://github.com/cvdfoundation/kinetics-dataset (videos) + the UMT/VideoMAE list files"
SSV2_SOURCE = "https://developer.qualcomm.com/software/ai-datasets/something-something (videos + JSON labels)"


# ------------------------------------------------------------------------------------------- sprites
def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Pixels inside a sprite of the given shape and half-size, from offsets dx, dy to its centre."""
    if shape == "disc":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * half
    if shape == "triangle":  # apex up, base down
        return (dy <= 0.8 * half) & (dy >= -half) & (np.abs(dx) <= (dy + half) / 1.8 * 1.0)
    if shape == "cross":
        arm = half / 2.6
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= half))
    if shape == "ring":
        rr = dx**2 + dy**2
        return (rr <= half**2) & (rr >= (0.5 * half) ** 2)
    raise ValueError(f"unknown shape {shape!r} (known: {SHAPES})")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _linear_path(rng, t: int, lo: float, hi: float, speed: tuple[float, float]) -> np.ndarray:
    pos = rng.uniform(lo, hi, size=2)
    ang = rng.uniform(0, 2 * np.pi)
    vel = rng.uniform(*speed) * np.array([np.cos(ang), np.sin(ang)])
    out = np.zeros((t, 2))
    for i in range(t):
        out[i] = pos
        pos = pos + vel
        for d in range(2):  # reflect at the borders
            if pos[d] < lo:
                pos[d], vel[d] = 2 * lo - pos[d], -vel[d]
            elif pos[d] > hi:
                pos[d], vel[d] = 2 * hi - pos[d], -vel[d]
    return out


def sample_object(rng: np.random.Generator, label: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """The salient object of one clip: everything that determines the label (and nothing else does)."""
    t, hw = int(cfg["frames"]), int(cfg["size"])
    shape, motion = SHAPES[label // 2], MOTIONS[label % 2]
    half = rng.uniform(*cfg["object_size"]) / 2
    if motion == "linear":
        path = _linear_path(rng, t, half, hw - 1 - half, tuple(cfg["speed"]))
    else:
        centre = rng.uniform(hw / 3, 2 * hw / 3, size=2)
        radius = rng.uniform(*cfg["orbit_radius"])
        omega = rng.uniform(np.pi / 6, np.pi / 4) * rng.choice([-1, 1])
        phase = rng.uniform(0, 2 * np.pi)
        ang = phase + omega * np.arange(t)
        path = centre + radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    colour = _hsv(rng.uniform(), rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.0))
    return {"label": label, "shape": shape, "half": half, "path": path, "colour": colour}


def sample_background(rng: np.random.Generator, cfg: dict[str, Any], clutter: bool) -> dict[str, Any]:
    """Texture, camera drift, distractors and noise: no label information."""
    t, hw = int(cfg["frames"]), int(cfg["size"])
    lo_c, hi_c = cfg["clutter_contrast"] if clutter else cfg["texture_contrast"]
    gratings = []
    for _ in range(3):
        period = rng.uniform(6, 20)
        theta = rng.uniform(0, np.pi)
        gratings.append((2 * np.pi / period * np.cos(theta), 2 * np.pi / period * np.sin(theta),
                         rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.0, size=3).astype(np.float32)))
    drift_ang = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(0, 1.5) * np.array([np.cos(drift_ang), np.sin(drift_ang)])
    n_dis = int(rng.integers(*(cfg["clutter_distractors"] if clutter else cfg["distractors"]), endpoint=True))
    level = rng.uniform(0.25, 0.45)
    distractors = []
    for _ in range(n_dis):
        half = rng.uniform(*cfg["distractor_size"]) / 2
        grey = np.clip(level + rng.uniform(-0.2, 0.2), 0, 1)
        distractors.append({"shape": SHAPES[int(rng.integers(len(SHAPES)))], "half": half,
                            "path": _linear_path(rng, t, half, hw - 1 - half, (0.5, 2.5)),
                            "colour": _hsv(rng.uniform(), rng.uniform(0, 0.3), grey)})
    return {"gratings": gratings, "contrast": rng.uniform(lo_c, hi_c), "level": level, "drift": drift,
            "distractors": distractors, "noise": rng.standard_normal(size=(t, hw, hw, 3), dtype=np.float32) * np.float32(cfg["noise_std"])}


def render(obj: dict[str, Any], bg: dict[str, Any], cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One clip (T, H, W, 3) uint8 and its salient-object mask (T, H, W) bool (vectorised over frames)."""
    t, hw = int(cfg["frames"]), int(cfg["size"])
    yy, xx = np.mgrid[0:hw, 0:hw].astype(np.float32)
    shift = (bg["drift"][None, :] * np.arange(t)[:, None]).astype(np.float32)  # (T, 2) camera drift
    tex = np.zeros((t, hw, hw, 3), np.float32)
    for kx, ky, ph, col in bg["gratings"]:
        base = (kx * xx + ky * yy + ph).astype(np.float32)[None]
        offset = (kx * shift[:, 0] + ky * shift[:, 1]).astype(np.float32)[:, None, None]
        tex += np.sin(base + offset)[..., None] * (col / 3.0)
    img = np.float32(bg["level"]) + np.float32(bg["contrast"]) * tex  # (T, H, W, 3)

    def sprite(s: dict[str, Any]) -> np.ndarray:
        p = s["path"].astype(np.float32)
        return shape_mask(s["shape"], xx[None] - p[:, 0, None, None], yy[None] - p[:, 1, None, None], s["half"])

    for d in bg["distractors"]:
        m = sprite(d)
        img[m] = d["colour"]
    masks = sprite(obj)
    img[masks] = obj["colour"]
    frames = img + bg["noise"]
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8), masks


def token_foreground(masks: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    """Fraction of object pixels in every tubelet token, in the model's (t, h, w) token order.

    masks (..., T, H, W) -> (..., T/tubelet * H/patch * W/patch)."""
    *lead, t, h, w = masks.shape
    m = masks.reshape(*lead, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    frac = m.mean(axis=(-5, -3, -1))
    return frac.reshape(*lead, -1).astype(np.float32)


def make_split(n: int, seed_of, cfg: dict[str, Any], clutter: bool):
    """n class-balanced clips; `seed_of(i, part)` gives each clip's object / background seeds."""
    labels = np.arange(n) % len(CLASSES)
    clips, masks = [], []
    for i in range(n):
        obj = sample_object(np.random.default_rng(seed_of(i, "object")), int(labels[i]), cfg)
        bg = sample_background(np.random.default_rng(seed_of(i, "background")), cfg, clutter)
        clip, mask = render(obj, bg, cfg)
        clips.append(clip)
        masks.append(mask)
    return np.stack(clips), labels.astype(np.int64), np.stack(masks)


# ---------------------------------------------------------------------------------------- real data
def _missing(what: str, path: Path, source: str, layout: str) -> MissingDatasetError:
    return missing_dataset(what, path, f"get the dataset from {source} and put it there ({layout}); see "
                           "pipelines/vidtldr/README.md (Real data). Nothing is downloaded at run time.")


def _decode_frames(path: Path) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8: a decoded-frame folder, else the file via PyAV."""
    folder = path.with_suffix("") if path.suffix else path
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXT)
        if not files:
            raise ValueError(f"{folder} holds no frames ({', '.join(FRAME_EXT)}); re-extract them "
                             f"(ffmpeg -i {path.name} {folder.name}/%05d.jpg)")
        from PIL import Image

        try:
            return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        except Exception as exc:
            raise ValueError(f"{folder}: a frame cannot be read ({exc}); re-extract the frames of {path.name} "
                             f"(ffmpeg -i {path.name} {folder.name}/%05d.jpg)") from exc
    if path.is_file():
        try:
            import av  # noqa: F401  (optional)
        except ImportError as exc:
            raise ValueError(
                f"{path}: no video decoder is installed (PyAV/ffmpeg bindings), so videos are read as decoded-"
                f"frame folders: run `ffmpeg -i {path} {folder}/%05d.jpg` (or `pip install av`)") from exc
        import av

        try:
            with av.open(str(path)) as container:
                return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        except Exception as exc:
            raise ValueError(f"{path} cannot be decoded ({exc}); re-download it or extract its frames") from exc
    raise missing_dataset(f"video {path.name} (or its frame folder {folder.name}/)", path.parent,
                          "check the list file and the video folder; see pipelines/vidtldr/README.md (Real data)")


def sample_clip(frames: np.ndarray, num_frames: int, size: int) -> np.ndarray:
    """`num_frames` frames from the middle of uniform segments (the test protocol of UMT), resized
    (shorter side) and centre-cropped to size x size. (T, H, W, 3) uint8 -> (num_frames, size, size, 3)."""
    import torch
    import torch.nn.functional as F

    t = frames.shape[0]
    idx = ((np.arange(num_frames) + 0.5) * t / num_frames).astype(int).clip(0, t - 1)
    x = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                      align_corners=False, antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top: top + size, left: left + size]
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def read_kinetics(root: str | Path, split: str, num_frames: int, size: int, max_videos: int | None = None):
    """Kinetics-400 list file `<root>/<split>.csv` (`<video path> <label>` per line) + `<root>/videos/`.

    Returns (clips uint8 (N, T, S, S, 3), labels int64, records [{sample_id, source, label}])."""
    import pandas as pd

    root = Path(root)
    layout = "<root>/train.csv, val.csv (`<video> <label>` per line) and <root>/videos/<video>"
    if not root.is_dir():
        raise _missing("Kinetics-400", root, K400_SOURCE, layout)
    lst = root / f"{split}.csv"
    if not lst.is_file():
        raise _missing(f"Kinetics-400 {split} list", lst, K400_SOURCE, layout)
    try:
        table = pd.read_csv(lst, header=None, delimiter=" ", dtype={0: str})
    except Exception as exc:
        raise ValueError(f"{lst} is not a `<video> <label>` list ({exc})") from exc
    if table.shape[1] < 2:
        raise ValueError(f"{lst}: expected two space-separated columns `<video> <label>`, got {table.shape[1]}")
    labels = pd.to_numeric(table[1], errors="coerce")
    bad = table[labels.isna() | (labels < 0)]
    if len(bad):
        raise ValueError(f"{lst}: rows {list(bad.index[:5])} have no valid integer label ({bad.iloc[0].tolist()})")
    rows = list(zip(table[0], labels.astype(int), strict=True))[:max_videos]
    return _read_rows(root / "videos", rows, num_frames, size, "k400")


def read_ssv2(root: str | Path, split: str, num_frames: int, size: int, max_videos: int | None = None):
    """Something-Something v2: `<root>/labels.json` ({template: id}), `<root>/<split>.json` (list of
    {"id", "template"}) and `<root>/videos/<id>.webm` (or its frame folder)."""
    root = Path(root)
    layout = "<root>/labels.json, train.json, validation.json and <root>/videos/<id>.webm"
    if not root.is_dir():
        raise _missing("Something-Something v2", root, SSV2_SOURCE, layout)
    label_file, split_file = root / "labels.json", root / f"{split}.json"
    for f in (label_file, split_file):
        if not f.is_file():
            raise _missing(f"Something-Something v2 {f.name}", f, SSV2_SOURCE, layout)
    try:
        names = {re.sub(r"[\[\]]", "", k): int(v) for k, v in json.loads(label_file.read_text()).items()}
        items = json.loads(split_file.read_text())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{label_file} or {split_file} is not valid SSv2 JSON ({exc})") from exc
    rows = []
    for item in items[:max_videos]:
        template = re.sub(r"[\[\]]", "", str(item.get("template", "")))
        if template not in names:
            raise ValueError(f"{split_file}: video {item.get('id')} has the unknown label {template!r} "
                             f"(not in {label_file.name}); use the labels.json of the same release")
        rows.append((f"{item['id']}.webm", names[template]))
    return _read_rows(root / "videos", rows, num_frames, size, "ssv2")


def _read_rows(video_dir: Path, rows, num_frames: int, size: int, prefix: str):
    if not video_dir.is_dir():
        raise missing_dataset("video folder", video_dir, "put the videos (or their decoded-frame folders) there; "
                              "see pipelines/vidtldr/README.md (Real data)")
    if not rows:
        raise ValueError(f"the list for {video_dir.parent} is empty (no videos in this split)")
    clips, labels, records = [], [], []
    for name, label in rows:
        path = video_dir / name
        clips.append(sample_clip(_decode_frames(path), num_frames, size))
        labels.append(int(label))
        records.append({"sample_id": f"{prefix}:{name}", "source": str(path), "label": int(label)})
    return np.stack(clips), np.asarray(labels, np.int64), records
