"""On-disk layer of the AV2AV pipeline: readers/writers of the AV-HuBERT / MuAViC manifest layout (spec 2.1, 3, 10).

The real data (LRS3, MuAViC after its preparation script) and our embedded corpus share one layout and one
code path:

    <split>.tsv         first line: root dir; then `id<TAB>video<TAB>audio<TAB>n_video_frames<TAB>n_audio_samples`
                        (paths relative to the root; AV-HuBERT's `hubert_dataset.load_audio_visual`)
    <split>.<lang>      one text line per tsv row (e.g. test.en, test.es)
    <split>.km          units, space-separated ints, one utterance per line
    x.mp4 / x.npy       full face video: real mp4 (rgb) or embedded (T,64,64,3) uint8
    x.lip.mp4 / .npy    lip ROI: real 96x96 grayscale at 25 fps (Auto-AVSR) or embedded (T,32,32) uint8
    x.bbox.pkl          pickled list, one [x1,y1,x2,y2] or None per video frame (official av2av unit2av)
    x.wav               16 kHz mono
    00001.txt           LRS3 transcript, first line `Text:  <TRANSCRIPT>`

The reader picks the video decoder by the extension written in the tsv. `load_split` reads and validates a
whole split before returning anything, so training never starts on bad input. `write_fixture` writes the spec's
tiny fixture in the REAL format (mp4/wav), used by the unit tests and the integration test.

Deviations (ours):
- a relative root line is resolved against the tsv's folder (AV-HuBERT joins it to the working directory), so a
  corpus can be moved (DVC) without rewriting its manifests;
- bbox None entries are filled with the previous box (official code) and LEADING Nones with the first box that
  follows (the official code would keep None and crash);
- stereo audio is mixed down to mono by default (`stereo="mix"`; `stereo="error"` refuses it); AV-HuBERT assumes
  mono and would misread a stereo file;
- `load_split` trims/pads each utterance to exactly T video frames, 640 T audio samples and T boxes once the
  streams agree within `tol_frames` (common.py's rate alignment), instead of AV-HuBERT's crop/pad in the collater.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.ingest import MissingDatasetError, missing_dataset
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av.common import FPS, LANGS, LIP, SR, UNIT_HZ

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "video", "audio", "n_frames", "n_samples")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_RESAMPLE_FIX = "resample it to 16 kHz mono, e.g. `ffmpeg -i {src} -ar {sr} -ac 1 {dst}`"


def _need(path: Path, what: str, fix: str) -> None:
    if not path.exists():
        raise missing_dataset(what, path, fix)


# ------------------------------------------------------------------------------------------- manifest
def write_manifest(root: str | Path, split: str, rows: Sequence[Mapping[str, Any]], *,
                   root_line: str | None = None) -> Path:
    """Write `<root>/<split>.tsv`: the root line (default: the absolute root; pass "." for a movable corpus)
    then one row per utterance; `rows` are dicts with id, video, audio (paths relative to root), n_frames,
    n_samples. Returns the tsv path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(root.resolve()) if root_line is None else str(root_line)]
    for i, row in enumerate(rows):
        missing = [c for c in MANIFEST_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"manifest row {i} lacks {missing}; each row needs {list(MANIFEST_COLUMNS)}")
        fields = [str(row["id"]), str(row["video"]), str(row["audio"]), str(int(row["n_frames"])),
                  str(int(row["n_samples"]))]
        if any(("\t" in f or "\n" in f) for f in fields):
            raise ValueError(f"manifest row {i} ({row['id']!r}) has a tab or newline inside a field")
        lines.append("\t".join(fields))
    path = root / f"{split}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_manifest(tsv_path: str | Path) -> tuple[str, pd.DataFrame]:
    """(root dir, DataFrame[id, video, audio, n_frames, n_samples]) of an AV-HuBERT tsv; the root line is
    skipped (a relative root is taken relative to the tsv's folder). Errors name the file and line."""
    tsv_path = Path(tsv_path)
    _need(tsv_path, "manifest", "run the MuAViC / AV-HuBERT preparation script (or the embedded ingest) that "
                                "writes <split>.tsv, or fix the data root in the parameters")
    lines = tsv_path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise DataValidationError(f"{tsv_path}:1: empty manifest; the first line must be the root directory "
                                  f"(AV-HuBERT tsv format)")
    root_s = lines[0].strip()
    if "\t" in root_s:
        raise DataValidationError(f"{tsv_path}:1: the first line must be the root directory alone, found a "
                                  f"tab-separated row {root_s[:80]!r}; add the root dir as line 1")
    root = Path(root_s)
    if not root.is_absolute():
        root = tsv_path.parent / root
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            raise DataValidationError(
                f"{tsv_path}:{lineno}: expected 5 tab-separated fields (id, video, audio, n_video_frames, "
                f"n_audio_samples), found {len(parts)}; fix this line or re-run the manifest preparation")
        try:
            nf, ns = int(parts[3]), int(parts[4])
        except ValueError as exc:
            raise DataValidationError(f"{tsv_path}:{lineno}: n_video_frames / n_audio_samples must be "
                                      f"integers, got {parts[3]!r}, {parts[4]!r}; fix this line") from exc
        if nf <= 0 or ns <= 0:
            raise DataValidationError(f"{tsv_path}:{lineno}: utterance {parts[0]!r} has {nf} frames / {ns} "
                                      f"samples; drop empty utterances from the manifest")
        rows.append({"id": parts[0], "video": parts[1], "audio": parts[2], "n_frames": nf, "n_samples": ns})
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise DataValidationError(f"{tsv_path}: duplicate utterance ids {dup[:5]}; ids must be unique")
    return str(root), df


# ------------------------------------------------------------------------------------- labels and units
def write_labels(path: str | Path, lines: Iterable[str]) -> Path:
    """Write one text line per utterance (row-aligned with the tsv)."""
    path = Path(path)
    lines = [str(s) for s in lines]
    for i, s in enumerate(lines):
        if "\n" in s or "\r" in s:
            raise ValueError(f"{path}: label {i} contains a newline; one utterance per line")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    return path


def read_labels(path: str | Path, n_expected: int | None = None, manifest: str | Path | None = None
                ) -> list[str]:
    """Text lines of a label file, aligned by row with the manifest: a count mismatch with `n_expected`
    raises DataValidationError naming both files."""
    path = Path(path)
    _need(path, "label file", "write one text line per tsv row (e.g. test.en next to test.tsv)")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [s.rstrip("\r") for s in lines]
    if n_expected is not None and len(lines) != n_expected:
        other = f"manifest {manifest}" if manifest is not None else "the manifest"
        raise DataValidationError(f"label file {path} has {len(lines)} lines but {other} has {n_expected} "
                                  f"rows; labels are aligned by row, regenerate one so they match")
    return lines


def write_units(path: str | Path, units: Iterable[Sequence[int] | np.ndarray]) -> Path:
    """Write a `.km` file: one utterance per line, space-separated ints."""
    return write_labels(path, (" ".join(str(int(u)) for u in np.asarray(us).ravel()) for us in units))


def read_units(km_path: str | Path, n_expected: int | None = None, n_units: int | None = None,
               manifest: str | Path | None = None) -> list[np.ndarray]:
    """Units of a `.km` file: one int64 array per line (row-aligned; `n_units` bounds the values to [0, K))."""
    km_path = Path(km_path)
    out = []
    for lineno, line in enumerate(read_labels(km_path, n_expected, manifest), start=1):
        try:
            arr = np.array([int(t) for t in line.split()], dtype=np.int64)
        except ValueError as exc:
            raise DataValidationError(f"{km_path}:{lineno}: units must be space-separated integers "
                                      f"({exc}); regenerate the unit file") from exc
        if arr.size == 0:
            raise DataValidationError(f"{km_path}:{lineno}: empty unit line; every utterance needs units")
        if arr.min() < 0 or (n_units is not None and arr.max() >= n_units):
            raise DataValidationError(f"{km_path}:{lineno}: unit ids must lie in [0, {n_units}), found "
                                      f"[{arr.min()}, {arr.max()}]; check the k-means size K")
        out.append(arr)
    return out


def read_lrs3_text(txt: str | Path) -> str:
    """Transcript of an LRS3 `00001.txt` (first line `Text:  <TRANSCRIPT>`)."""
    txt = Path(txt)
    _need(txt, "LRS3 transcript", "copy the LRS3 .txt next to its .mp4 (same 5-digit name)")
    first = txt.read_text(encoding="utf-8").splitlines()[:1]
    if not first or not first[0].startswith("Text:"):
        raise DataValidationError(f"{txt}: first line must be 'Text:  <TRANSCRIPT>' (LRS3 format), got "
                                  f"{(first or [''])[0][:60]!r}")
    return first[0][len("Text:"):].strip()


# -------------------------------------------------------------------------------------------- bboxes
def write_bboxes(path: str | Path, boxes: Sequence[Sequence[float] | None]) -> Path:
    """Pickle a list of [x1, y1, x2, y2] (or None) per video frame."""
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump([None if b is None else [float(v) for v in b] for b in boxes], f)
    return path


def read_bboxes(pkl: str | Path) -> np.ndarray:
    """(T, 4) float32 face boxes [x1, y1, x2, y2]: None filled with the previous box, leading Nones with the
    next one (ours; official fills forward only)."""
    pkl = Path(pkl)
    _need(pkl, "bbox file", "run the face-detection preprocessing (one [x1,y1,x2,y2] or None per frame)")
    try:
        with open(pkl, "rb") as f:
            raw = pickle.load(f)  # noqa: S301 - our own / the dataset's preprocessing output
    except Exception as exc:
        raise DataValidationError(f"{pkl}: not a readable pickle ({exc}); re-run the bbox preprocessing") from exc
    if not isinstance(raw, list | tuple | np.ndarray) or len(raw) == 0:
        raise DataValidationError(f"{pkl}: expected a non-empty list of boxes, got {type(raw).__name__}")
    boxes: list[np.ndarray | None] = []
    for i, b in enumerate(raw):
        if b is None:
            boxes.append(None)
            continue
        arr = np.asarray(b, dtype=np.float64).ravel()
        if arr.size != 4 or not np.isfinite(arr).all() or arr[2] <= arr[0] or arr[3] <= arr[1]:
            raise DataValidationError(f"{pkl}: box {i} = {b!r} is not [x1, y1, x2, y2] with x2>x1, y2>y1; "
                                      f"re-run the bbox preprocessing")
        boxes.append(arr)
    first = next((b for b in boxes if b is not None), None)
    if first is None:
        raise DataValidationError(f"{pkl}: every box is None (no face detected); drop this utterance")
    prev = first
    out = np.empty((len(boxes), 4), np.float32)
    for i, b in enumerate(boxes):
        prev = prev if b is None else b
        out[i] = prev
    return out


# --------------------------------------------------------------------------------------------- audio
def write_audio(path: str | Path, audio: np.ndarray, sr: int = SR) -> Path:
    """Write mono audio (float in [-1, 1] or int16) as a 16-bit PCM wav."""
    path = Path(path)
    audio = np.asarray(audio)
    try:
        import soundfile as sf

        sf.write(str(path), audio, sr, subtype="PCM_16")
    except ImportError:  # fallback while soundfile is not installed
        from scipy.io import wavfile

        if audio.dtype != np.int16:
            audio = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
        wavfile.write(str(path), sr, audio)
    return path


def read_audio(path: str | Path, sr: int = SR, *, dtype: str = "float32", stereo: str = "mix") -> np.ndarray:
    """Mono audio (N,) of a wav/flac via soundfile: float32 in [-1, 1] or int16 (`dtype="int16"`, the values
    the official logfbank sees). A different sample rate raises (with the ffmpeg fix); stereo is mixed down
    (`stereo="mix"`, ours) or refused (`stereo="error"`)."""
    path = Path(path)
    _need(path, "audio file", "extract it from the video, e.g. `ffmpeg -i x.mp4 -ar 16000 -ac 1 x.wav`")
    if dtype not in ("float32", "int16"):
        raise ValueError(f"dtype must be 'float32' or 'int16', got {dtype!r}")
    if stereo not in ("mix", "error"):
        raise ValueError(f"stereo must be 'mix' or 'error', got {stereo!r}")
    try:
        try:
            import soundfile as sf

            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except ImportError:  # fallback while soundfile is not installed (wav only)
            from scipy.io import wavfile

            rate, data = wavfile.read(str(path))
            data = data.reshape(len(data), -1)
            scale = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31}.get(data.dtype, 1.0)
            data = data.astype(np.float32) / np.float32(scale)
    except Exception as exc:
        raise DataValidationError(f"audio file {path} cannot be decoded ({exc}); re-extract it as 16 kHz mono "
                                  f"wav") from exc
    fix = _RESAMPLE_FIX.format(src=path, sr=sr, dst=path.with_name(path.stem + "_16k.wav"))
    if rate != sr:
        raise DataValidationError(f"audio file {path} has sample rate {rate} Hz, expected {sr} Hz; {fix}")
    if data.shape[1] > 1:
        if stereo == "error":
            raise DataValidationError(f"audio file {path} has {data.shape[1]} channels, expected mono; {fix}")
        data = data.mean(axis=1, keepdims=True)
    mono = data[:, 0]
    if mono.size == 0:
        raise DataValidationError(f"audio file {path} is empty; re-extract it or drop the utterance")
    if dtype == "int16":
        return np.round(np.clip(mono, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    return np.ascontiguousarray(mono, dtype=np.float32)


# --------------------------------------------------------------------------------------------- video
def write_video(path: str | Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Write (T,H,W,3) RGB or (T,H,W) gray uint8 frames: .npy as is, .npz compressed, otherwise an mp4 (libx264, near-lossless
    crf 10) via imageio-ffmpeg."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"{path}: frames must be uint8 (T,H,W,3) or (T,H,W), got {frames.dtype} {frames.shape}")
    if path.suffix == ".npy":
        np.save(path, frames)
        return path
    if path.suffix == ".npz":  # the embedded corpus: zlib-compressed frames (procedural faces compress ~10x)
        with path.open("wb") as fh:
            np.savez_compressed(fh, frames=frames)
        return path
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    gray = frames.ndim == 3
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), pix_fmt_in="gray" if gray else "rgb24", fps=fps,
                                         macro_block_size=1, output_params=["-crf", "10"])
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def _decode(path: Path, gray: bool) -> np.ndarray:
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray" if gray else "rgb24",
                                         bpp=1 if gray else 3)
        meta = next(gen)
        w, h = meta["size"]
        shape = (h, w) if gray else (h, w, 3)
        frames = [np.frombuffer(b, np.uint8).reshape(shape) for b in gen]
    except Exception as exc:
        raise DataValidationError(f"video file {path} cannot be decoded ({exc}); re-download or re-copy it"
                                  ) from exc
    if not frames:
        raise DataValidationError(f"video file {path} decodes to no frames; re-download or re-copy it")
    return np.stack(frames)


def read_video(path: str | Path, gray: bool = False) -> np.ndarray:
    """uint8 frames of a .npy (stored as is) or an mp4 (imageio-ffmpeg; (T,H,W,3) rgb24, or (T,H,W) with
    `gray`)."""
    path = Path(path)
    _need(path, "video file", "re-run the preprocessing or fix the video column of the manifest")
    if path.suffix in (".npy", ".npz"):
        try:
            arr = np.load(path, allow_pickle=False)
            if path.suffix == ".npz":
                with arr as z:
                    arr = z["frames"]
        except Exception as exc:
            raise DataValidationError(f"frame array {path} is not a readable .npy ({exc}); re-create it") from exc
        want = 3 if gray else 4
        if arr.dtype != np.uint8 or arr.ndim != want or (not gray and arr.shape[-1] != 3) or len(arr) == 0:
            raise DataValidationError(f"frame array {path} has {arr.dtype} {arr.shape}, expected uint8 "
                                      f"{'(T,H,W)' if gray else '(T,H,W,3)'}; re-create it")
        return arr
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _decode(path, gray)
    raise DataValidationError(f"{path}: unknown video format {path.suffix!r}; use .npy, .npz or "
                              f"{'/'.join(VIDEO_SUFFIXES)}")


def read_lip(path: str | Path, size: int = LIP) -> np.ndarray:
    """(T, size, size) uint8 grayscale lip ROI of a `.lip.npy` or `.lip.mp4`; resized with cv2 (INTER_AREA)
    when the stored crop has another side (real data: 96x96)."""
    path = Path(path)
    lip = read_video(path, gray=True)
    if lip.shape[1] != lip.shape[2]:
        raise DataValidationError(f"lip video {path} has non-square frames {lip.shape[1:]}; re-run the mouth "
                                  f"ROI cropping (96x96 in Auto-AVSR)")
    if lip.shape[1] != size:
        import cv2

        lip = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in lip])
    return np.ascontiguousarray(lip, dtype=np.uint8)


# ------------------------------------------------------------------------------------------ checks
def _length(x: np.ndarray | int) -> int:
    return int(x) if isinstance(x, int | np.integer) else len(x)


def check_utterance(audio: np.ndarray | int, video: np.ndarray | int, fps: int = FPS, sr: int = SR,
                    tol_frames: int = 1, name: str = "utterance") -> None:
    """Audio (samples or count) and video (frames or count) must last the same within `tol_frames` video
    frames, else DataValidationError naming the utterance and the fix."""
    n_s, n_f = _length(audio), _length(video)
    audio_frames = n_s * fps / sr
    if abs(audio_frames - n_f) > tol_frames:
        raise DataValidationError(
            f"{name}: audio lasts {n_s / sr:.3f} s ({audio_frames:.1f} frames at {fps} fps) but the video has "
            f"{n_f} frames ({n_f / fps:.3f} s), more than {tol_frames} frame(s) apart; re-extract audio and "
            f"video from the same segment (e.g. `ffmpeg -i src.mp4 -ar {sr} -ac 1 x.wav` and `-r {fps}` for "
            f"the video) or drop the utterance from the manifest")


def check_language(lang: str, known: Sequence[str] = LANGS) -> str:
    """Return `lang` if known, else raise ValueError naming the known language tokens."""
    if lang not in known:
        raise ValueError(f"unknown language {lang!r}; known languages: {', '.join(known)} (fix the langs in "
                         f"the parameters or add the language to the known list)")
    return lang


# ------------------------------------------------------------------------------------------ splits
def _siblings(video_path: Path) -> tuple[Path | None, Path, Path]:
    """(face video or None, lip video, bbox pickle) of the tsv's video path (either x.<ext> or x.lip.<ext>)."""
    name, ext = video_path.name, video_path.suffix
    if name.endswith(".lip" + ext):
        base = name[: -len(".lip" + ext)]
        return video_path.with_name(base + ext), video_path, video_path.with_name(base + ".bbox.pkl")
    base = name[: -len(ext)] if ext else name
    return video_path, video_path.with_name(base + ".lip" + ext), video_path.with_name(base + ".bbox.pkl")


def _fit(arr: np.ndarray, n: int) -> np.ndarray:
    """Trim, or pad by repeating the last entry, to length n."""
    if len(arr) >= n:
        return arr[:n]
    return np.concatenate([arr, np.repeat(arr[-1:], n - len(arr), axis=0)])


def load_utterance(root: str | Path, row: Mapping[str, Any], *, lip_size: int = LIP, tol_frames: int = 1,
                   require_faces: bool = True) -> dict[str, Any]:
    """Read and validate one manifest row: audio (640 T,) float32, faces (T,H,W,3) uint8 or None, lip
    (T,lip_size,lip_size) uint8, bboxes (T,4) float32 or None, aligned to T video frames."""
    root = Path(root)
    uid = str(row["id"])
    name = f"utterance {uid!r}"
    video_p = root / str(row["video"])
    face_p, lip_p, bbox_p = _siblings(video_p)
    if not require_faces and not lip_p.exists() and video_p.exists():
        # AV-HuBERT / MuAViC manifests point straight at the lip-ROI mp4 (no full-face video next to it)
        face_p, lip_p = None, video_p
    audio = read_audio(root / str(row["audio"]))
    lip = read_lip(lip_p, lip_size)
    faces = bboxes = None
    if require_faces or (face_p is not None and face_p.exists()):
        faces = read_video(face_p)
        if require_faces or bbox_p.exists():
            bboxes = read_bboxes(bbox_p)
    n = len(lip)
    for what, m in (("declared n_video_frames", int(row["n_frames"])),
                    ("face video", None if faces is None else len(faces)),
                    ("bbox list", None if bboxes is None else len(bboxes))):
        if m is not None and abs(m - n) > tol_frames:
            raise DataValidationError(f"{name}: lip video {lip_p} has {n} frames but the {what} has {m}; "
                                      f"re-run the preprocessing so all streams have one entry per frame")
    check_utterance(int(row["n_samples"]), n, tol_frames=tol_frames, name=f"{name} (declared n_audio_samples)")
    check_utterance(audio, n, tol_frames=tol_frames, name=f"{name} ({root / str(row['audio'])})")
    if faces is not None:
        n = min(n, len(faces))
        faces = faces[:n]
        bboxes = None if bboxes is None else _fit(bboxes, n)
    lip = lip[:n]
    n_samp = n * (SR // FPS)
    audio = audio[:n_samp] if len(audio) >= n_samp else np.pad(audio, (0, n_samp - len(audio)))
    return {"id": uid, "audio": audio, "faces": faces, "lip": lip, "bboxes": bboxes}


def load_split(root_or_tsv: str | Path, split: str, langs: Sequence[str], *, known_langs: Sequence[str] = LANGS,
               units: bool | None = None, n_units: int | None = None, unit_hz: int | None = UNIT_HZ,
               lip_size: int = LIP, tol_frames: int = 1, require_faces: bool = True,
               max_errors: int = 20) -> list[dict[str, Any]]:
    """Read and validate a whole split before returning: list of dicts with id, audio, faces, lip, bboxes
    (see `load_utterance`), text {lang: str} from `<split>.<lang>`, and units (int64, from `<split>.km`) when
    `units` is True or (None and the file exists). `unit_hz` checks len(units) ~ 2 T (None: skip, e.g. for
    de-duplicated units). All problems are collected and raised together (up to `max_errors`)."""
    p = Path(root_or_tsv)
    tsv = p if p.suffix == ".tsv" else p / f"{split}.tsv"
    langs = [check_language(lang, known_langs) for lang in langs]
    root, df = read_manifest(tsv)
    n = len(df)
    if n == 0:
        raise DataValidationError(f"manifest {tsv} has no utterances; re-run the manifest preparation")
    texts = {lang: read_labels(tsv.with_name(f"{split}.{lang}"), n, tsv) for lang in langs}
    km = tsv.with_name(f"{split}.km")
    if units is None:
        units = km.exists()
    unit_lists = read_units(km, n, n_units, tsv) if units else None
    out: list[dict[str, Any]] = []
    errors: list[Exception] = []
    for i, row in enumerate(df.to_dict("records")):
        try:
            utt = load_utterance(root, row, lip_size=lip_size, tol_frames=tol_frames,
                                 require_faces=require_faces)
            utt["text"] = {lang: texts[lang][i] for lang in langs}
            if unit_lists is not None:
                u = unit_lists[i]
                t = len(utt["lip"])
                if unit_hz is not None and abs(len(u) - t * unit_hz / FPS) > 2 * tol_frames * unit_hz / FPS:
                    raise DataValidationError(
                        f"utterance {row['id']!r}: {km} line {i + 1} has {len(u)} units but {t} frames need "
                        f"~{t * unit_hz // FPS} at {unit_hz} Hz; regenerate the units (or pass unit_hz=None "
                        f"for de-duplicated units)")
                utt["units"] = u
            out.append(utt)
        except (DataValidationError, MissingDatasetError) as exc:
            errors.append(exc)
            if len(errors) >= max_errors:
                break
    if errors:
        msg = (f"{len(errors)}{'+' if len(errors) >= max_errors else ''} bad utterance(s) in {tsv} "
               f"(nothing was loaded):\n" + "\n".join(f"- {e}" for e in errors))
        if all(isinstance(e, MissingDatasetError) for e in errors):
            raise MissingDatasetError(msg)
        raise DataValidationError(msg)
    return out


# ------------------------------------------------------------------------------------------ fixture
FIXTURE_TEXT = {
    "en": ["the cat eats fish", "my friend reads a book today"],
    "es": ["el gato come pescado", "mi amigo lee un libro hoy"],
}


def write_fixture(folder: str | Path, seed: int = 0) -> Path:
    """Write the spec's tiny fixture in the REAL format under `folder` (spec section 3): two utterances
    `spk0/0000k` each with x.mp4 (25 fps, 1 s, 160x160 RGB), x.lip.mp4 (25 frames 96x96 gray), x.bbox.pkl (25
    boxes, one None), x.wav (16 kHz, 1 s) and an LRS3-style x.txt; test.tsv (root line + 2 rows), test.en,
    test.es, test.km (50 units each). Returns the tsv path."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    spk = folder / "spk0"
    spk.mkdir(parents=True, exist_ok=True)
    t_frames, side, lip_side = FPS, 160, 96
    rows, kms = [], []
    yy, xx = np.mgrid[0:side, 0:side]
    for k in range(2):
        uid = f"spk0/{k + 1:05d}"
        # face: a coloured disc moving right, mouth bar opening and closing (distinct per frame)
        faces = np.empty((t_frames, side, side, 3), np.uint8)
        lips = np.empty((t_frames, lip_side, lip_side), np.uint8)
        boxes: list[list[float] | None] = []
        for t in range(t_frames):
            cx, cy = 60 + 2 * t + 10 * k, 80
            img = np.full((side, side, 3), (40, 60, 90), np.uint8)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 40 ** 2] = (200, 160, 130)
            opening = 2 + int(8 * (1 + np.sin(2 * np.pi * t / 8 + k)))
            img[cy + 15: cy + 15 + opening, cx - 12: cx + 12] = (120, 30, 40)
            faces[t] = img
            lip = np.full((lip_side, lip_side), 170, np.uint8)
            lip[48 - 3 * opening: 48 + 3 * opening, 20:76] = 40
            lips[t] = lip
            boxes.append([cx - 40.0, cy - 40.0, cx + 40.0, cy + 40.0])
        boxes[7 + 5 * k] = None
        n_samp = t_frames * (SR // FPS)
        tt = np.arange(n_samp) / SR
        audio = (0.3 * np.sin(2 * np.pi * (180 + 40 * k) * tt) + 0.01 * rng.standard_normal(n_samp))
        write_video(spk / f"{k + 1:05d}.mp4", faces)
        write_video(spk / f"{k + 1:05d}.lip.mp4", lips)
        write_bboxes(spk / f"{k + 1:05d}.bbox.pkl", boxes)
        write_audio(spk / f"{k + 1:05d}.wav", audio.astype(np.float32))
        (spk / f"{k + 1:05d}.txt").write_text(
            f"Text:  {FIXTURE_TEXT['en'][k].upper()}\nConf:  3\n\nWORD START END ASDSCORE\n", encoding="utf-8")
        rows.append({"id": uid, "video": f"{uid}.mp4", "audio": f"{uid}.wav", "n_frames": t_frames,
                     "n_samples": n_samp})
        kms.append(rng.integers(0, 1000, size=2 * t_frames))
    tsv = write_manifest(folder, "test", rows)
    for lang, lines in FIXTURE_TEXT.items():
        write_labels(folder / f"test.{lang}", lines)
    write_units(folder / "test.km", kms)
    return tsv
