"""StyleGRU data: the on-disk layouts of FaceForensics++ and the cross-dataset test sets, their readers, and
the writer of the embedded "SynthTalk" data (spec Sec. 3, 8.4, 10). The embedded data is written in the
same formats as the real datasets and read back by the same code (`index_ffpp`, `index_testlist`,
`read_frames`), so one reader path serves both.

Embedded layout (`write_layout`; S x S RGB uint8 frames, T frames per video):

    <root>/FaceForensics++/original_sequences/youtube/raw/frames/<id>.npy               (T, S, S, 3) uint8
    <root>/FaceForensics++/manipulated_sequences/<Method>/raw/frames/<target>_<source>.npy
    <root>/FaceForensics++/splits/{train,val,test}.json                                  FF++ pair lists
    <root>/<SetFolder>/{real,fake}/<name>.npy                                            each cross set
    <root>/<SetFolder>/List_of_testing_videos.txt                                        Celeb-DF v2 list
    <root>/truth/latents.npz        true (T, 9, 8) latents per video_id (embedded only, for checks)
    <root>/index.parquet            the video index (columns `INDEX_COLUMNS`, paths relative to root)

SetFolder per cross set: cdf -> Celeb-DF-v2-synth, dfd -> DFD-synth, fsh -> FaceShifter-synth,
dfo -> DeeperForensics-synth (`CROSS_SETS`). All four use Celeb-DF v2's test-list format, one
`<label> <folder>/<file>` per line with label 1 = REAL and 0 = fake (inverted w.r.t. the index, where
label 1 = fake), so `index_testlist` reads them all.

Real layouts (`index_*`; the index they return holds absolute paths):

    FF++ (official downloader): <ffpp>/original_sequences/youtube/<comp>/<form>,
        <ffpp>/manipulated_sequences/<Method>/<comp>/<form>, comp in raw|c23|c40, where <form> is one of
        videos/<name>.mp4 | frames/<name>.npy | crop_images/<name>/<track:02d>_<frame:04d>.png;
        split JSONs (github.com/ondyari/FaceForensics dataset/splits) list pairs [a, b]:
        reals a and b, fakes a_b and b_a (official `get_files_from_split`).
    DFD: <ffpp>/original_sequences/actors/<comp>/<form> and
        <ffpp>/manipulated_sequences/DeepFakeDetection/<comp>/<form>; the whole set is test.
    FaceShifter: <ffpp>/manipulated_sequences/FaceShifter/<comp>/<form>, fakes of the FF++ test pairs,
        plus the FF++ test reals.
    Celeb-DF v2: <cdf>/List_of_testing_videos.txt + the listed <folder>/<file>.mp4.
    DeeperForensics-1.0: <dfo>/manipulated_videos/end_to_end/<target>_<actor>.mp4 (e.g. 000_M101.mp4;
        ASSUMED convention: the part before the first "_" is the FF++ youtube id the face was swapped
        into), those whose target is an FF++ test id, plus the FF++ test reals.

Official StyleGRU latent pickles (`read_latent_clips`): <clip_root>/<Type>/<video>/clipnum_<k>.p, each a
pickled float array (32, 9216) of pSp latents; read with a restricted unpickler (numpy arrays only).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset

from cvpr24.core.datasets import swap_in_folder
from cvpr24.core.images import read_rgb
from cvpr24.core.ingest import missing_dataset
from cvpr24.core.validation import DataValidationError

log = logging.getLogger(__name__)

REAL_METHOD = "Origin"
FFPP_METHODS = ("Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures")
SPLITS = ("train", "val", "test")
COMPRESSIONS = ("raw", "c23", "c40")
FORMS = ("crop_images", "frames", "videos")  # "auto" takes the first that exists for a video
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# embedded cross sets: dataset key -> (set folder, fake method)
CROSS_SETS = {"cdf": ("Celeb-DF-v2-synth", "X-CDF"), "dfd": ("DFD-synth", "X-DFD"),
              "fsh": ("FaceShifter-synth", "X-FSh"), "dfo": ("DeeperForensics-synth", "X-DFo")}
# fake method names of the real cross sets
REAL_FAKE_METHODS = {"cdf": "Celeb-synthesis", "dfd": "DeepFakeDetection", "fsh": "FaceShifter",
                     "dfo": "DeeperForensics"}
KNOWN_METHODS = frozenset({REAL_METHOD, *FFPP_METHODS, *(m for _, m in CROSS_SETS.values()),
                           *REAL_FAKE_METHODS.values()})
INDEX_COLUMNS = ["video_id", "dataset", "method", "label", "split", "path", "n_frames", "target", "source"]
FFPP_DIR, SPLITS_DIR, TESTLIST = "FaceForensics++", "splits", "List_of_testing_videos.txt"
TRUTH_FILE, INDEX_FILE = "truth/latents.npz", "index.parquet"

FFPP_FIX = ("download FaceForensics++ with the official script (github.com/ondyari/FaceForensics, e.g. "
            "`-d all -c c23 -t videos`), put the split JSONs (dataset/splits/{train,val,test}.json of that "
            "repository) in the splits folder, and set stylegru.data.real.ffpp_root / splits_dir in "
            "conf/<env>/parameters/stylegru.yml (pipelines/stylegru/README.md, Real data)")
CDF_FIX = ("download Celeb-DF v2 (github.com/yuezunli/celeb-deepfakeforensics) and set "
           "stylegru.data.real.celebdf_root to the folder holding List_of_testing_videos.txt "
           "(pipelines/stylegru/README.md, Real data)")
DFO_FIX = ("download DeeperForensics-1.0 (github.com/EndlessSora/DeeperForensics-1.0) and set "
           "stylegru.data.real.deeperforensics_root to the folder holding manipulated_videos/end_to_end "
           "(pipelines/stylegru/README.md, Real data)")
LATENT_FIX = ("extract the pSp latents of every clip into <clip_root>/<Type>/<video>/clipnum_<k>.p "
              "(k = 0..n-1) as in the official StyleGRU preprocessing (pipelines/stylegru/README.md)")


# ------------------------------------------------------------------------------------------- frames
_PNG_RE = re.compile(r"^(?:(\d+)_)?(\d+)\.png$", re.IGNORECASE)


def _png_files(folder: Path, track: int | None = None) -> list[Path]:
    """The PNG frames of one crop folder (`<track:02d>_<frame:04d>.png` or `<frame>.png`) of one track,
    in numeric frame order. Without `track`, a folder holding several tracks gives its longest one."""
    tracks: dict[int, list[tuple[int, Path]]] = {}
    for p in folder.iterdir():
        if p.suffix.lower() != ".png":
            continue
        m = _PNG_RE.match(p.name)
        if not m:
            raise DataValidationError(f"frame file {p} is not named <track:02d>_<frame:04d>.png or "
                                      f"<frame>.png; rename it or remove it from the crop folder")
        tracks.setdefault(int(m.group(1) or 0), []).append((int(m.group(2)), p))
    if not tracks:
        raise DataValidationError(f"crop folder {folder} holds no PNG frames; re-run the face-crop "
                                  f"preprocessing for this video or drop it from the index")
    if track is None:
        track = max(sorted(tracks), key=lambda k: len(tracks[k]))  # longest; ties -> lowest number
        if len(tracks) > 1:
            log.info("crop folder %s holds tracks %s; using track %d (the longest)", folder, sorted(tracks),
                     track)
    elif track not in tracks:
        raise DataValidationError(f"crop folder {folder} has no track {track} (tracks: {sorted(tracks)})")
    return [p for _, p in sorted(tracks[track], key=lambda fp: fp[0])]


def _check_frames(arr: Any, where: str | Path) -> np.ndarray:
    """uint8 (T, H, W, 3) with T >= 1, no NaN; else DataValidationError naming `where`."""
    if not isinstance(arr, np.ndarray):
        raise DataValidationError(f"{where}: frames must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.kind in "fc" and np.isnan(arr).any():
        raise DataValidationError(f"{where}: frames contain NaN; re-export this video as uint8 RGB")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataValidationError(f"{where}: frames have shape {arr.shape}, expected (T, H, W, 3) RGB; "
                                  f"re-export this video as a (T, H, W, 3) uint8 array")
    if arr.dtype != np.uint8:
        raise DataValidationError(f"{where}: frames have dtype {arr.dtype}, expected uint8; re-export this "
                                  f"video as uint8 RGB")
    if arr.shape[0] == 0:
        raise DataValidationError(f"{where}: video has no frames; re-export it or drop it from the index")
    return arr


def _read_png(path: Path) -> np.ndarray:
    return read_rgb(path, "frame file", "re-run the face-crop preprocessing for this video or re-copy the file")


def _read_video(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    except Exception as exc:
        raise DataValidationError(f"video file {path} cannot be decoded ({exc}); re-download or re-copy "
                                  f"it") from exc
    if not frames:
        raise DataValidationError(f"video file {path} decodes to no frames; re-download or re-copy it")
    return np.stack(frames)


def read_frames(path: str | Path, track: int | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of one video: a .npy array, a video file (.mp4 etc., via imageio-ffmpeg) or
    a folder of PNG crops `<track:02d>_<frame:04d>.png` (numeric frame order; `track` as `_png_files`)."""
    path = Path(path)
    if not path.exists():
        raise missing_dataset("video", path, "re-create the layout or fix the index's path column")
    if path.is_dir():
        files = _png_files(path, track)
        imgs = [_read_png(p) for p in files]
        for p, im in zip(files, imgs, strict=True):
            if im.shape != imgs[0].shape:
                raise DataValidationError(f"frame file {p} has shape {im.shape}, the folder's first frame "
                                          f"{files[0].name} {imgs[0].shape}; all crops of a track must match")
        return _check_frames(np.stack(imgs), path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataValidationError(f"frame array {path} is not a readable .npy ({exc}); re-create or "
                                      f"re-copy it") from exc
        return _check_frames(arr, path)
    if suffix in VIDEO_SUFFIXES:
        return _check_frames(_read_video(path), path)
    raise DataValidationError(f"{path}: unknown video format {suffix!r} (use .npy, "
                              f"{'/'.join(VIDEO_SUFFIXES)} or a folder of PNG frames)")


def count_frames(path: str | Path, track: int | None = None) -> int:
    """Number of frames of a video without decoding it where the format allows (.npy header, PNG count);
    video files are counted exactly by ffmpeg (decodes the stream)."""
    path = Path(path)
    if not path.exists():
        raise missing_dataset("video", path, "re-create the layout or fix the index's path column")
    if path.is_dir():
        return len(_png_files(path, track))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise DataValidationError(f"frame array {path} is not a readable .npy ({exc}); re-create or "
                                      f"re-copy it") from exc
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise DataValidationError(f"{path}: frames have shape {arr.shape}, expected (T, H, W, 3) RGB")
        return int(arr.shape[0])
    if suffix in VIDEO_SUFFIXES:
        import imageio_ffmpeg

        try:
            return int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])
        except Exception as exc:
            raise DataValidationError(f"video file {path} cannot be decoded ({exc}); re-download or re-copy "
                                      f"it") from exc
    raise DataValidationError(f"{path}: unknown video format {suffix!r}")


# -------------------------------------------------------------------------------------------- clips
def clips_of(n_frames: int, clip_size: int, max_clips: int | None = None, *, name: str = "video",
             pad_short: str = "error", min_frames: int | None = None) -> list[tuple[int, int]]:
    """Non-overlapping clips [start, end) of `clip_size` frames (a trailing remainder is dropped), at most
    `max_clips`. A video shorter than `clip_size` raises, or with `pad_short="pingpong"` and at least
    `min_frames` (default clip_size // 2, the official 16 of 32) frames gives one clip (0, clip_size) whose
    indices past the end are mirrored (`clip_indices`), as the official preprocessing pads short tracks."""
    if clip_size < 1:
        raise ValueError(f"clip_size must be >= 1, got {clip_size}")
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be >= 1 or None, got {max_clips}")
    if pad_short not in ("error", "pingpong"):
        raise ValueError(f"pad_short must be 'error' or 'pingpong', got {pad_short!r}")
    if n_frames < clip_size:
        lowest = clip_size // 2 if min_frames is None else int(min_frames)
        if pad_short == "pingpong" and n_frames >= max(lowest, 1):
            return [(0, clip_size)]
        hint = (f"it has fewer than {lowest} frames, too short to pad" if pad_short == "pingpong"
                else "or set pad_short='pingpong' to pad tracks of >= clip_size // 2 frames")
        raise DataValidationError(f"video {name} has {n_frames} frames, fewer than clip_size {clip_size}: "
                                  f"drop it from the index (validate_index lists such videos), lower "
                                  f"clip_size, {hint}")
    n = n_frames // clip_size
    if max_clips is not None:
        n = min(n, max_clips)
    return [(k * clip_size, (k + 1) * clip_size) for k in range(n)]


def pingpong_indices(n_frames: int, length: int) -> np.ndarray:
    """0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... (mirror without repeating the ends), `length` entries."""
    if n_frames < 1:
        raise ValueError("pingpong_indices needs at least one frame")
    t = np.arange(length)
    if n_frames == 1:
        return np.zeros(length, dtype=np.int64)
    period = 2 * n_frames - 2
    t = t % period
    return np.where(t < n_frames, t, period - t).astype(np.int64)


def clip_indices(n_frames: int, start: int, end: int) -> np.ndarray:
    """Frame indices of clip [start, end): plain range, ping-pong mirrored where it runs past the end."""
    if end <= n_frames:
        return np.arange(start, end, dtype=np.int64)
    return pingpong_indices(n_frames, end)[start:end]


def take_clip(frames: np.ndarray, start: int, end: int) -> np.ndarray:
    """frames[start:end] along the first axis, ping-pong padded if the clip runs past the end."""
    return frames[clip_indices(len(frames), start, end)]


# ------------------------------------------------------------------------------- latent pickles
def _np_attr(sub: str, name: str):
    try:
        mod = importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # numpy < 2
        mod = importlib.import_module(f"numpy.core.{sub}")
    return getattr(mod, name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}  # protocol-2 byte strings
    for pkg in ("numpy._core", "numpy.core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = _np_attr("multiarray", "_reconstruct")
        allowed[(f"{pkg}.multiarray", "scalar")] = _np_attr("multiarray", "scalar")
        allowed[(f"{pkg}.numeric", "_frombuffer")] = _np_attr("numeric", "_frombuffer")
    return allowed


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no arbitrary callables)."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if _NumpyUnpickler._allowed is None:
            _NumpyUnpickler._allowed = _allowed_globals()
        try:
            return _NumpyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (numpy arrays only)") \
                from None


def load_latent_pickle(path: str | Path) -> np.ndarray:
    """One `clipnum_<k>.p`: a 2-D float array (frames, latent dims) without NaN, read with a restricted
    unpickler; anything else raises DataValidationError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _NumpyUnpickler(fh).load()
    except Exception as exc:
        raise DataValidationError(f"latent pickle {path} was refused or is unreadable ({exc}); only pickled "
                                  f"numpy arrays are loaded. {LATENT_FIX}") from exc
    if not isinstance(obj, np.ndarray) or obj.dtype.kind != "f" or obj.ndim != 2:
        what = f"array {obj.dtype} {obj.shape}" if isinstance(obj, np.ndarray) else type(obj).__name__
        raise DataValidationError(f"latent pickle {path} holds {what}, expected a 2-D float array "
                                  f"(frames, dims), e.g. (32, 9216). {LATENT_FIX}")
    if not np.isfinite(obj).all():
        raise DataValidationError(f"latent pickle {path} contains NaN/inf; re-extract this clip. "
                                  f"{LATENT_FIX}")
    return obj


_CLIP_RE = re.compile(r"^clipnum_(\d+)\.p$")


def read_latent_clips(clip_root: str | Path, type_folder: str, video: str) -> list[np.ndarray]:
    """All clips of one video in the official StyleGRU layout, k in numeric order (clipnum_10 after
    clipnum_9); the numbering must run 0..n-1 without gaps (the official loader indexes it so)."""
    folder = Path(clip_root) / type_folder / video
    if not folder.is_dir():
        raise missing_dataset(f"latent clips of {type_folder}/{video}", folder, LATENT_FIX)
    ks = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CLIP_RE.match(p.name)))
    if not ks:
        raise DataValidationError(f"latent folder {folder} holds no clipnum_<k>.p files. {LATENT_FIX}")
    for i, (k, _) in enumerate(ks):
        if k != i:
            raise DataValidationError(f"latent folder {folder}: clipnum_{i}.p is missing (found up to "
                                      f"clipnum_{ks[-1][0]}.p); the clips must be numbered 0..n-1. "
                                      f"{LATENT_FIX}")
    return [load_latent_pickle(p) for _, p in ks]


def write_latent_clips(clip_root: str | Path, type_folder: str, video: str,
                       clips: Sequence[np.ndarray]) -> list[Path]:
    """Write clips as `clipnum_<k>.p` pickles (float32, protocol 4), replacing the folder's old clips."""
    folder = Path(clip_root) / type_folder / video
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():
        if _CLIP_RE.match(p.name):
            p.unlink()
    out = []
    for k, clip in enumerate(clips):
        p = folder / f"clipnum_{k}.p"
        with open(p, "wb") as fh:
            pickle.dump(np.ascontiguousarray(clip, dtype=np.float32), fh, protocol=4)
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------- index
def _index_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    df = df.astype({"video_id": str, "dataset": str, "method": str, "label": np.int64, "split": str,
                    "path": str, "n_frames": np.int64, "target": str, "source": str})
    dup = df["video_id"][df["video_id"].duplicated()]
    if len(dup):
        first = df[df["video_id"] == dup.iloc[0]]["path"].tolist()
        raise DataValidationError(f"video_id {dup.iloc[0]!r} occurs more than once ({first}); two files of "
                                  f"one dataset/method share a name: rename one or drop it")
    return df.reset_index(drop=True)


def _row(dataset: str, method: str, name: str, label: int, split: str, path: Path, target: str = "",
         source: str = "") -> dict[str, Any]:
    return {"video_id": f"{dataset}/{method}/{name}", "dataset": dataset, "method": method,
            "label": int(label), "split": split, "path": str(path), "n_frames": count_frames(path),
            "target": target, "source": source}


def _form_path(base: Path, form: str, name: str) -> Path:
    return {"crop_images": base / "crop_images" / name, "frames": base / "frames" / f"{name}.npy",
            "videos": base / "videos" / f"{name}.mp4"}[form]


def _check_form(form: str) -> None:
    if form != "auto" and form not in FORMS:
        raise ValueError(f"form must be 'auto' or one of {FORMS}, got {form!r}")


def _locate(base: Path, name: str, form: str, what: str, fix: str) -> Path:
    """The file or crop folder of video `name` under `base` (= .../<comp>)."""
    forms = FORMS if form == "auto" else (form,)
    for f in forms:
        p = _form_path(base, f, name)
        if p.exists():
            return p
    tried = " or ".join(str(_form_path(base, f, name)) for f in forms)
    raise missing_dataset(f"{what} video {name!r}", tried, fix)


def _list_names(base: Path, form: str) -> list[str]:
    """Names of all videos stored under `base` (= .../<comp>) in the given form(s), sorted."""
    forms = FORMS if form == "auto" else (form,)
    names: set[str] = set()
    for f in forms:
        d = base / f
        if not d.is_dir():
            continue
        if f == "crop_images":
            names.update(p.name for p in d.iterdir() if p.is_dir())
        else:
            names.update(p.stem for p in d.iterdir() if p.suffix == (".npy" if f == "frames" else ".mp4"))
    return sorted(names)


def _check_compression(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def read_split(path: str | Path) -> list[tuple[str, str]]:
    """One FF++ split JSON: a list of [id, id] string pairs."""
    path = Path(path)
    if not path.is_file():
        raise missing_dataset(f"FF++ split file {path.name}", path, FFPP_FIX)
    try:
        pairs = json.loads(path.read_text())
    except Exception as exc:
        raise DataValidationError(f"FF++ split file {path} is not valid JSON ({exc}); re-download it "
                                  f"(github.com/ondyari/FaceForensics dataset/splits)") from exc
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(i, str) for i in p) for p in pairs):
        raise DataValidationError(f"FF++ split file {path} must be a list of [id, id] string pairs such as "
                                  f'[["071", "054"], ...]; re-download it')
    return [(a, b) for a, b in pairs]


def index_ffpp(ffpp_root: str | Path, methods: Iterable[str] = FFPP_METHODS, compression: str = "c23",
               splits_dir: str | Path | None = None, *, splits: Iterable[str] = SPLITS, form: str = "auto",
               dataset: str = "ffpp") -> pd.DataFrame:
    """FF++ in the official layout: for every pair [a, b] of each split JSON the reals a, b
    (original_sequences/youtube) and the fakes a_b, b_a of each method (manipulated_sequences/<Method>).
    `splits_dir` defaults to <ffpp_root>/splits; `form` picks videos|frames|crop_images ("auto": first found,
    in the order crop_images, frames, videos)."""
    root = Path(ffpp_root)
    _check_compression(compression)
    _check_form(form)
    if not root.is_dir():
        raise missing_dataset("FaceForensics++ root", root, FFPP_FIX)
    sdir = Path(splits_dir) if splits_dir is not None else root / SPLITS_DIR
    methods, splits = list(methods), list(splits)
    pairs = {s: read_split(sdir / f"{s}.json") for s in splits}
    owner: dict[str, str] = {}
    for s in splits:
        for i in {i for p in pairs[s] for i in p}:
            if owner.setdefault(i, s) != s:
                raise DataValidationError(f"FF++ id {i!r} is in both {sdir / (owner[i] + '.json')} and "
                                          f"{sdir / (s + '.json')}; the splits must be disjoint")
    real_base = root / "original_sequences" / "youtube" / compression
    rows = []
    for s in splits:
        reals = sorted({i for p in pairs[s] for i in p})
        fakes = sorted({f"{a}_{b}" for a, b in pairs[s]} | {f"{b}_{a}" for a, b in pairs[s]})
        for name in reals:
            rows.append(_row(dataset, REAL_METHOD, name, 0, s,
                             _locate(real_base, name, form, f"FF++ {compression} real", FFPP_FIX), name, ""))
        for m in methods:
            base = root / "manipulated_sequences" / m / compression
            for name in fakes:
                t, src = name.split("_", 1)
                rows.append(_row(dataset, m, name, 1, s,
                                 _locate(base, name, form, f"FF++ {compression} {m}", FFPP_FIX), t, src))
    return _index_frame(rows)


def _listed_path(set_root: Path, rel: str) -> Path | None:
    """A test-list entry as a file, or (for preprocessed copies) the same name as .npy or a crop folder."""
    p = set_root / rel
    for cand in (p, p.with_suffix(""), p.with_suffix(".npy")):
        if cand.exists() and (cand.is_dir() or cand.suffix.lower() in (".npy", *VIDEO_SUFFIXES)):
            return cand
    return None


def index_testlist(set_root: str | Path, list_file: str = TESTLIST, dataset: str = "cdf",
                   method_fake: str = "Celeb-synthesis", method_real: str = REAL_METHOD) -> pd.DataFrame:
    """A test set in Celeb-DF v2's list format: `<label> <folder>/<file>` per line with label 1 = REAL,
    0 = fake in the file (the index stores 1 = fake). All videos are split "test"; target/source are ""
    (the format does not say)."""
    root = Path(set_root)
    lst = root / list_file
    if not lst.is_file():
        raise missing_dataset(f"{dataset} test list {list_file}", lst, CDF_FIX)
    rows = []
    for lineno, line in enumerate(lst.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise DataValidationError(f"{lst}:{lineno}: expected '<1 real | 0 fake> <folder>/<file>', got "
                                      f"{line!r}; fix or re-download the list")
        rel = parts[1].strip()
        path = _listed_path(root, rel)
        if path is None:
            raise missing_dataset(f"video listed at {lst}:{lineno}", root / rel, CDF_FIX)
        label = 1 - int(parts[0])
        name = path.name if path.is_dir() else path.stem
        rows.append(_row(dataset, method_fake if label else method_real, name, label, "test", path))
    if not rows:
        raise DataValidationError(f"test list {lst} lists no videos; re-download it")
    return _index_frame(rows)


def index_dfd(ffpp_root: str | Path, compression: str = "c23", *, form: str = "auto") -> pd.DataFrame:
    """DeepFakeDetection (distributed with FF++): all actor videos (real) and DeepFakeDetection fakes, split
    "test". Names `<actor>__<scene>` / `<target>_<source>__<scene>__<code>` give target/source."""
    root = Path(ffpp_root)
    _check_compression(compression)
    _check_form(form)
    rows = []
    for method, label, base in (
            (REAL_METHOD, 0, root / "original_sequences" / "actors" / compression),
            (REAL_FAKE_METHODS["dfd"], 1,
             root / "manipulated_sequences" / "DeepFakeDetection" / compression)):
        names = _list_names(base, form)
        if not names:
            raise missing_dataset(f"DFD {method} videos", base, FFPP_FIX)
        for name in names:
            m = re.match(r"^(\d+)_(\d+)__", name) if label else re.match(r"^(\d+)__", name)
            t, s = (m.group(1), m.group(2) if label else "") if m else ("", "")
            rows.append(_row("dfd", method, name, label, "test",
                             _locate(base, name, form, f"DFD {method}", FFPP_FIX), t, s))
    return _index_frame(rows)


def index_faceshifter(ffpp_root: str | Path, compression: str = "c23", splits_dir: str | Path | None = None,
                      *, form: str = "auto") -> pd.DataFrame:
    """FaceShifter fakes (manipulated_sequences/FaceShifter) of the FF++ test pairs + the FF++ test reals."""
    return index_ffpp(ffpp_root, methods=(REAL_FAKE_METHODS["fsh"],), compression=compression,
                      splits_dir=splits_dir, splits=("test",), form=form, dataset="fsh")


def index_deeperforensics(dfo_root: str | Path, ffpp_root: str | Path, compression: str = "c23",
                          splits_dir: str | Path | None = None, *, form: str = "auto") -> pd.DataFrame:
    """DeeperForensics-1.0 end_to_end fakes whose target is an FF++ test id + the FF++ test reals.
    ASSUMED name convention `<target>_<actor>` (e.g. 000_M101.mp4: FF++ youtube id 000, actor M101);
    entries (.mp4, .npy or crop folders) not of that form are skipped."""
    reals = index_ffpp(ffpp_root, methods=(), compression=compression, splits_dir=splits_dir,
                       splits=("test",), form=form, dataset="dfo")
    test_ids = set(reals["target"])
    folder = Path(dfo_root) / "manipulated_videos" / "end_to_end"
    if not folder.is_dir():
        raise missing_dataset("DeeperForensics end_to_end videos", folder, DFO_FIX)
    rows, skipped = [], 0
    for p in sorted(folder.iterdir()):
        if not (p.is_dir() or p.suffix.lower() in (".npy", *VIDEO_SUFFIXES)):
            continue
        name = p.name if p.is_dir() else p.stem
        m = re.match(r"^(\d+)_(.+)$", name)
        if not m:
            skipped += 1
            continue
        if m.group(1) in test_ids:
            rows.append(_row("dfo", REAL_FAKE_METHODS["dfo"], name, 1, "test", p, m.group(1), m.group(2)))
    if skipped:
        log.warning("%d entries of %s are not named <target>_<actor> and were skipped", skipped, folder)
    if not rows:
        raise DataValidationError(f"no video in {folder} is named <target>_<actor> with target an FF++ test "
                                  f"id (e.g. 000_M101.mp4); check the folder and the FF++ split files")
    fakes = _index_frame(rows)
    return _index_frame(pd.concat([reals, fakes], ignore_index=True).to_dict("records"))


def resolve(root: str | Path, path: str | Path) -> Path:
    """An index path as an absolute path (relative paths are relative to the layout root)."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def validate_index(index: pd.DataFrame, clip_size: int, root: str | Path | None = None,
                   min_frames: int | None = None) -> None:
    """Every path exists (relative ones under `root`), labels in {0, 1}, methods known, every dataset/split
    that has videos has at least one real and one fake, n_frames >= min_frames (default clip_size)."""
    missing_cols = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing_cols:
        raise DataValidationError(f"video index lacks columns {missing_cols}; rebuild it with write_layout "
                                  f"or the index_* readers")
    bad = index[~index["label"].isin([0, 1])]
    if len(bad):
        r = bad.iloc[0]
        raise DataValidationError(f"video {r['video_id']} ({r['path']}) has label {r['label']}; labels are "
                                  f"0 = real, 1 = fake")
    bad = index[~index["method"].isin(KNOWN_METHODS)]
    if len(bad):
        r = bad.iloc[0]
        raise DataValidationError(f"video {r['video_id']} ({r['path']}) has unknown method {r['method']!r} "
                                  f"(known: {sorted(KNOWN_METHODS)}); fix the index or add the method")
    for _, r in index.iterrows():
        p = Path(r["path"])
        if not p.is_absolute():
            if root is None:
                raise ValueError(f"index path {p} is relative: pass the layout root to validate_index")
            p = Path(root) / p
        if not p.exists():
            raise missing_dataset(f"video {r['video_id']}", p, "re-create the layout or fix the index")
    lowest = clip_size if min_frames is None else int(min_frames)
    short = index[index["n_frames"] < lowest]
    if len(short):
        r = short.iloc[0]
        raise DataValidationError(f"{len(short)} videos have fewer than {lowest} frames, e.g. "
                                  f"{r['video_id']} ({r['path']}, {r['n_frames']} frames): drop them from "
                                  f"the index, lower clip_size, or pad short videos (pad_short='pingpong')")
    for (ds, split), g in index.groupby(["dataset", "split"], sort=True):
        labels = set(g["label"])
        if labels != {0, 1}:
            lacking = "real" if 0 not in labels else "fake"
            raise DataValidationError(f"dataset {ds!r} split {split!r} has no {lacking} video (e.g. "
                                      f"{g['path'].iloc[0]}); each split needs both classes: add {lacking} "
                                      f"videos or fix the split files")


# ---------------------------------------------------------------------------------- embedded layout
def _write_tree(root: Path, synth: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Write the embedded tree under `root` (a fresh folder); return records by video_id, cross sets."""
    if "videos" not in synth or "splits" not in synth:
        raise DataValidationError("synth data must hold 'videos' and 'splits' (the generator's output)")
    ff = root / FFPP_DIR
    (ff / SPLITS_DIR).mkdir(parents=True)
    for s in SPLITS:
        pairs = [[str(a), str(b)] for a, b in synth["splits"].get(s, [])]
        (ff / SPLITS_DIR / f"{s}.json").write_text(json.dumps(pairs))
    records: dict[str, dict[str, Any]] = {}
    lists: dict[str, list[str]] = {}
    truth: dict[str, np.ndarray] = {}
    for rec in synth["videos"]:
        ds, method, name, label = rec["dataset"], rec["method"], str(rec["name"]), int(rec["label"])
        vid = f"{ds}/{method}/{name}"
        if vid in records:
            raise DataValidationError(f"synth data holds video {vid} twice; the generator must name videos "
                                      f"uniquely")
        frames = _check_frames(np.asarray(rec["frames"]), f"synth video {vid}")
        if ds == "ffpp":
            if (method == REAL_METHOD) != (label == 0) or (label and method not in FFPP_METHODS):
                raise DataValidationError(f"synth video {vid}: label {label} does not fit method {method!r} "
                                          f"(FF++ methods: Origin (real) or {FFPP_METHODS})")
            folder = (ff / "original_sequences" / "youtube" if label == 0
                      else ff / "manipulated_sequences" / method) / "raw" / "frames"
            path = folder / f"{name}.npy"
        elif ds in CROSS_SETS:
            set_folder, fake_method = CROSS_SETS[ds]
            if method != (fake_method if label else REAL_METHOD):
                raise DataValidationError(f"synth video {vid}: a {ds} video with label {label} must have "
                                          f"method {fake_method if label else REAL_METHOD!r}")
            sub = "fake" if label else "real"
            path = root / set_folder / sub / f"{name}.npy"
            lists.setdefault(ds, []).append(f"{1 - label} {sub}/{name}.npy")  # Celeb-DF: 1 = real
        else:
            raise DataValidationError(f"synth video {vid}: unknown dataset {ds!r} (ffpp or "
                                      f"{list(CROSS_SETS)})")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, frames)
        records[vid] = rec
        if rec.get("latents") is not None:
            truth[vid] = np.asarray(rec["latents"], np.float32)
    for ds, lines in lists.items():
        (root / CROSS_SETS[ds][0] / TESTLIST).write_text("".join(f"{ln}\n" for ln in lines))
    if truth:
        (root / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / TRUTH_FILE, **truth)
    return records, [ds for ds in CROSS_SETS if ds in lists]


def _index_tree(root: Path, records: dict[str, dict[str, Any]], cross: list[str]) -> pd.DataFrame:
    """Index the written tree with the real-data readers, check it against the records, make paths
    relative and take target/source from the records (the Celeb-DF list format cannot carry them)."""
    parts = []
    ff_methods = [m for m in FFPP_METHODS if any(r["dataset"] == "ffpp" and r["method"] == m
                                                  for r in records.values())]
    if any(r["dataset"] == "ffpp" for r in records.values()):
        parts.append(index_ffpp(root / FFPP_DIR, methods=ff_methods, compression="raw",
                                splits_dir=root / FFPP_DIR / SPLITS_DIR, form="frames"))
    for ds in cross:
        parts.append(index_testlist(root / CROSS_SETS[ds][0], dataset=ds, method_fake=CROSS_SETS[ds][1]))
    index = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INDEX_COLUMNS)
    found, written = set(index["video_id"]), set(records)
    if found != written:
        extra, lost = sorted(written - found), sorted(found - written)
        raise DataValidationError(f"the written layout does not read back as generated: videos not in the "
                                  f"FF++ split pairs {extra[:5]}, split pairs without a video {lost[:5]}; "
                                  f"the generator's 'splits' and 'videos' disagree")
    for r in index.itertuples():
        rec = records[r.video_id]
        if str(rec["split"]) != r.split or int(rec["label"]) != r.label:
            raise DataValidationError(f"synth video {r.video_id}: generated as split {rec['split']!r} label "
                                      f"{rec['label']}, reads back as split {r.split!r} label {r.label} from "
                                      f"the split files; the generator's 'splits' and 'videos' disagree")
    index["target"] = [str(records[v].get("target", "")) for v in index["video_id"]]
    index["source"] = [str(records[v].get("source", "")) for v in index["video_id"]]
    index["path"] = [Path(p).relative_to(root).as_posix() for p in index["path"]]
    return _index_frame(index.to_dict("records"))


def write_layout(root: str | Path, synth: dict[str, Any]) -> pd.DataFrame:
    """Write the embedded data (generator output) as the layout of the module docstring and return its
    index (paths relative to root). Atomic: written into a temporary sibling folder, then renamed over
    `root`; a failure leaves an existing `root` untouched."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # (not mkdtemp: its 0700 mode would stick to root after the rename)
    try:
        records, cross = _write_tree(tmp, synth)
        index = _index_tree(tmp, records, cross)
        index.to_parquet(tmp / INDEX_FILE, index=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in_folder(tmp, root)
    return index


def write_index(root: str | Path, index: pd.DataFrame) -> None:
    """Write `index` as <root>/index.parquet (atomically via a temporary file)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{INDEX_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _index_frame(index[INDEX_COLUMNS].to_dict("records")).to_parquet(tmp, index=False)
        os.replace(tmp, root / INDEX_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def read_index(root: str | Path) -> pd.DataFrame:
    """The video index <root>/index.parquet (columns `INDEX_COLUMNS`; label 1 = fake)."""
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise missing_dataset("stylegru video index", path,
                              "run the stylegru ingest node (it writes the layout and its index.parquet)")
    df = pd.read_parquet(path)
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"video index {path} lacks columns {missing}; delete it and re-run ingest")
    return _index_frame(df[INDEX_COLUMNS].to_dict("records"))


def read_truth(root: str | Path) -> dict[str, np.ndarray]:
    """The embedded data's true (T, 9, 8) latents by video_id (<root>/truth/latents.npz)."""
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        raise missing_dataset("true latents of the embedded data", path, "re-run the stylegru ingest node "
                              "(real data has no true latents)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class SynthTalkLayoutDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Kedro dataset for the stylegru layout at `path`. `save(synth)` with a "videos" key writes the embedded
    layout (`write_layout`); `save({"index": df})` (real data, absolute paths) writes only
    <path>/index.parquet and copies nothing. `load()` -> {"root": str(path), "index": DataFrame}."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return {"root": str(self._path), "index": read_index(self._path)}

    def save(self, data: dict[str, Any]) -> None:
        if "videos" in data:
            write_layout(self._path, data)
            return
        if "index" not in data:
            raise DataValidationError("SynthTalkLayoutDataset.save needs the generator output (with "
                                      "'videos') or {'index': DataFrame} for real data")
        index = data["index"]
        rel = [p for p in index["path"] if not Path(p).is_absolute()]
        if rel:
            raise DataValidationError(f"a real-data index must hold absolute paths (nothing is copied into "
                                      f"{self._path}); got e.g. {rel[0]!r}")
        write_index(self._path, index)

    def _exists(self) -> bool:
        return (self._path / INDEX_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

