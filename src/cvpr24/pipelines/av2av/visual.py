"""Procedural visual stream of the embedded "EspeakAV" data (spec section 8.3).

espeak phoneme -> one of 12 visemes -> mouth-shape targets (opening, width, rounding, teeth, tongue) at phoneme
centres, Gaussian-smoothed in time (coarticulation, sigma 30 ms), sampled at 25 fps; a vectorised numpy renderer
draws a 64x64 RGB face per speaker identity (skin, face shape, lip colour, eyes fixed per speaker; AR(1) head
jitter and blinks per utterance) with the mouth from those parameters; the lip ROI is a 32x32 grayscale crop
around the mouth located from the face bounding box (as the real-data path does with detected boxes).
`make_utterance` ties espeak synthesis and rendering together (n_frames = len(audio) // 640).
"""

from __future__ import annotations

import hashlib

import numpy as np

from .common import FACE, FPS, LIP, SAMPLES_PER_FRAME

VISEMES: tuple[str, ...] = ("sil", "PBM", "FV", "TH", "TDNSZL", "SH/CH", "KG/NG", "R", "AA", "EH/E", "IY/I",
                            "OW/UW/W")

# (opening, width, rounding, teeth visible, tongue visible), each in [0, 1]
VISEME_SHAPES: np.ndarray = np.array([
    [0.05, 0.50, 0.20, 0.0, 0.0],   # sil
    [0.00, 0.45, 0.25, 0.0, 0.0],   # PBM: lips pressed
    [0.15, 0.55, 0.10, 1.0, 0.0],   # FV: upper teeth on lower lip
    [0.30, 0.55, 0.10, 0.8, 1.0],   # TH: tongue between teeth
    [0.25, 0.60, 0.10, 0.8, 0.5],   # TDNSZL
    [0.30, 0.35, 0.80, 0.7, 0.0],   # SH/CH: protruded
    [0.40, 0.55, 0.20, 0.3, 0.2],   # KG/NG
    [0.30, 0.40, 0.60, 0.3, 0.3],   # R
    [0.95, 0.60, 0.20, 0.4, 0.3],   # AA: wide open
    [0.60, 0.75, 0.10, 0.6, 0.2],   # EH/E
    [0.30, 1.00, 0.00, 0.9, 0.1],   # IY/I: spread
    [0.50, 0.20, 1.00, 0.1, 0.1],   # OW/UW/W: rounded
], dtype=np.float32)

_V = {name: i for i, name in enumerate(VISEMES)}
# Every espeak-ng 1.51 mnemonic produced for the corpus in en/es/fr/it/pt (checked by the unit test).
_PHONEME_VISEME: dict[str, int] = {}
for _syms, _vis in [
    ("_ _: _| ; _!", "sil"),
    ("p b m B", "PBM"),
    ("f v", "FV"),
    ("T D", "TH"),
    ("t d n s z l z2 ss s# l^ n^ L", "TDNSZL"),
    ("S Z tS dZ J^ J", "SH/CH"),
    ("k g N x h Q c", "KG/NG"),
    ("r r- R * ** 3 3:", "R"),
    ("a aa a# a- A A: A~ aI aU & &~ &U~ V", "AA"),
    ("E e e- e@ eI eU EU E~ E: @ @- @L @2", "EH/E"),
    ("i i: I I2 j", "IY/I"),
    ("o O O: O@ O~ oI 0 u u: U w w2 y W Y", "OW/UW/W"),
]:
    for _s in _syms.split():
        _PHONEME_VISEME[_s] = _V[_vis]

_MODIFIERS = "~:-#2^L"


def phoneme_to_viseme(symbol: str) -> int:
    """Viseme index of an espeak phoneme mnemonic.

    Rule for symbols outside the table: anything starting with '_' is a pause (sil); otherwise trailing
    espeak modifier characters (~ : - # 2 ^ L: nasal, long, reduced, variant, palatal) are stripped one by one and
    the lookup retried. Raises KeyError naming the symbol if that fails.
    """
    if symbol in _PHONEME_VISEME:
        return _PHONEME_VISEME[symbol]
    if symbol.startswith("_"):
        return _V["sil"]
    s = symbol
    while len(s) > 1 and s[-1] in _MODIFIERS:
        s = s[:-1]
        if s in _PHONEME_VISEME:
            return _PHONEME_VISEME[s]
    raise KeyError(f"espeak phoneme {symbol!r} has no viseme: add it to visual._PHONEME_VISEME")


def _frame_times(n_frames: int, fps: int) -> np.ndarray:
    return (np.arange(n_frames) + 0.5) / fps


def viseme_track(phonemes: list[tuple[float, float, str]], n_frames: int, fps: int = FPS) -> np.ndarray:
    """(T,) int64 viseme at each frame centre; sil outside the phoneme intervals."""
    out = np.zeros(n_frames, np.int64)
    if not phonemes:
        return out
    t = _frame_times(n_frames, fps)
    starts = np.array([p[0] for p in phonemes])
    ends = np.array([p[1] for p in phonemes])
    vis = np.array([phoneme_to_viseme(p[2]) for p in phonemes])
    idx = np.searchsorted(starts, t, side="right") - 1
    inside = (idx >= 0) & (t < ends[np.clip(idx, 0, None)])
    out[inside] = vis[idx[inside]]
    return out


def mouth_track(phonemes: list[tuple[float, float, str]], n_frames: int, fps: int = FPS,
                sigma_s: float = 0.03) -> np.ndarray:
    """(T, 5) float32 mouth parameters: viseme targets at phoneme centres (sil up to the first phoneme's start and
    after the last phoneme's end), linearly interpolated on a 1 ms grid, Gaussian-smoothed (sigma_s), sampled at frame centres."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    dur = n_frames / fps
    knots_t = [0.0]
    knots_v = [VISEME_SHAPES[0]]
    if phonemes:  # hold the silence pose until speech starts
        knots_t.append(max(phonemes[0][0], 1e-4))
        knots_v.append(VISEME_SHAPES[0])
    for s, e, sym in phonemes:
        if e <= s:
            continue
        knots_t.append(0.5 * (s + e))
        knots_v.append(VISEME_SHAPES[phoneme_to_viseme(sym)])
    if phonemes:
        knots_t.append(max(phonemes[-1][1], knots_t[-1]) + 1e-3)
        knots_v.append(VISEME_SHAPES[0])
    knots_t.append(max(dur, knots_t[-1]) + 1e-3)
    knots_v.append(VISEME_SHAPES[0])
    kt, kv = np.array(knots_t), np.stack(knots_v)
    grid = np.arange(0.0, dur + 1e-9, 1e-3)
    dense = np.stack([np.interp(grid, kt, kv[:, c]) for c in range(kv.shape[1])], 1)
    if sigma_s > 0:
        half = int(np.ceil(4 * sigma_s / 1e-3))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) * 1e-3 / sigma_s) ** 2)
        k /= k.sum()
        padded = np.pad(dense, ((half, half), (0, 0)), mode="edge")
        dense = np.stack([np.convolve(padded[:, c], k, mode="valid") for c in range(dense.shape[1])], 1)
    idx = np.clip(np.round(_frame_times(n_frames, fps) / 1e-3).astype(int), 0, len(grid) - 1)
    return dense[idx].astype(np.float32)


def face_identity(speaker_id: str) -> dict:
    """Fixed appearance of a speaker, derived deterministically from the id (sha256 seed)."""
    seed = int.from_bytes(hashlib.sha256(speaker_id.encode()).digest()[:8], "little")
    r = np.random.default_rng(seed)
    skin = np.array([r.uniform(120, 235), 0, 0])
    skin[1] = skin[0] * r.uniform(0.68, 0.85)
    skin[2] = skin[0] * r.uniform(0.5, 0.72)
    return {
        "skin": [round(float(c), 1) for c in skin],
        "background": [round(float(c), 1) for c in r.uniform(20, 110, 3)],
        "lip": [round(float(r.uniform(130, 190)), 1), round(float(r.uniform(40, 80)), 1),
                round(float(r.uniform(50, 90)), 1)],
        "eye": [round(float(c), 1) for c in r.uniform(15, 70, 3)],
        "face_rx": round(float(r.uniform(17.0, 21.0)), 2),     # half width of the face ellipse (px)
        "face_ry": round(float(r.uniform(22.0, 26.0)), 2),     # half height
        "eye_dx": round(float(r.uniform(0.36, 0.46)), 3),      # eye offset from centre, fraction of rx
        "eye_dy": round(float(r.uniform(-0.30, -0.18)), 3),    # fraction of ry (negative = above centre)
    }


# mouth centre relative to the face box: x at the centre, y at this fraction of the box height
MOUTH_Y = 0.74
_YY, _XX = np.mgrid[0:FACE, 0:FACE].astype(np.float32)


def _soft_ellipse(cx, cy, ax, ay, xx=_XX, yy=_YY):
    """(T, H, W) soft mask of ellipses (1 inside, ~1 px anti-aliased edge); args are (T,1,1) arrays."""
    ax = np.maximum(ax, 1e-3)
    ay = np.maximum(ay, 1e-3)
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    return np.clip((1.0 - r) * np.minimum(ax, ay) + 0.5, 0.0, 1.0)


def _blend(canvas, mask, color):
    color = np.asarray(color, np.float32).reshape(-1, 1, 1, 3) if np.ndim(color) > 1 else \
        np.asarray(color, np.float32).reshape(1, 1, 1, 3)
    m = mask[..., None]
    canvas *= 1.0 - m
    canvas += m * color


def _paint_mouth(canvas: np.ndarray, params: np.ndarray, mcx, mcy, scale, lip_color) -> None:
    """Paint mouths on canvas (T,H,W,3) float32 in place; params (T,5); mcx, mcy, scale: (T,1,1).

    Only the rows and columns that can hold a mouth are computed (speed)."""
    r0 = int(max(0, np.floor((mcy - 0.3 * scale).min())))
    r1 = int(min(canvas.shape[1], np.ceil((mcy + 0.3 * scale).max()) + 1))
    c0 = int(max(0, np.floor((mcx - 0.45 * scale).min())))
    c1 = int(min(canvas.shape[2], np.ceil((mcx + 0.45 * scale).max()) + 1))
    if r1 <= r0 or c1 <= c0:
        return
    sub = canvas[:, r0:r1, c0:c1]
    _paint_mouth_full(sub, params, mcx - c0, mcy - r0, scale, lip_color, _XX[: r1 - r0, : c1 - c0],
                      _YY[: r1 - r0, : c1 - c0])
    canvas[:, r0:r1, c0:c1] = sub


def _paint_mouth_full(canvas, params, mcx, mcy, scale, lip_color, xx, yy) -> None:
    p = np.clip(params.astype(np.float32), 0.0, 1.0)
    opening, width, rounding, teeth, tongue = (p[:, i].reshape(-1, 1, 1) for i in range(5))
    half_w = scale * (0.22 + 0.20 * width - 0.08 * rounding)
    cav_h = scale * (0.02 + 0.19 * opening)
    lip_t = scale * (0.07 + 0.04 * rounding)
    # outer lips, dark cavity, upper teeth band, tongue at the bottom of the cavity
    _blend(canvas, _soft_ellipse(mcx, mcy, half_w + lip_t * 0.6, cav_h + lip_t, xx, yy), lip_color)
    cavity = _soft_ellipse(mcx, mcy, half_w * (1 - 0.25 * rounding), cav_h, xx, yy) * np.clip(opening * 8, 0, 1)
    _blend(canvas, cavity, (35, 10, 15))
    teeth_band = np.clip((mcy - cav_h * 0.3 - yy) + 0.5, 0, 1) * cavity * teeth
    _blend(canvas, teeth_band, (235, 235, 225))
    tongue_m = _soft_ellipse(mcx, mcy + cav_h * 0.55, half_w * 0.55, cav_h * 0.45 + 0.5, xx, yy) * cavity * tongue
    _blend(canvas, tongue_m, (205, 85, 95))


def render_faces(track: np.ndarray, identity: dict, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    """Render (T,64,64,3) uint8 RGB faces with mouths from `track` (T,5); returns (frames, face boxes).

    Per-utterance AR(1) head jitter (coefficient 0.85, ~1 px) and blinks are drawn from `seed`.
    """
    track = np.asarray(track, np.float32)
    if track.ndim != 2 or track.shape[1] != 5:
        raise ValueError(f"track must be (T, 5), got {track.shape}")
    T = track.shape[0]
    rng = np.random.default_rng(seed)
    eps = rng.normal(0.0, 0.5, (T, 2))
    jit = np.zeros((T, 2))
    for t in range(T):
        jit[t] = (0.85 * jit[t - 1] if t else 0.0) + eps[t]
    jit = np.clip(jit, -3.0, 3.0)
    openness = np.ones(T)
    t = 0
    while t < T:
        if rng.random() < 0.04:
            for k, v in enumerate((0.4, 0.0, 0.4)):
                if t + k < T:
                    openness[t + k] = v
            t += 3
        t += 1
    # integer head jitter: the static head (3 eye states) is drawn once on a padded canvas and slid per frame
    off = np.round(jit).astype(int)
    state = np.where(openness > 0.7, 0, np.where(openness > 0.2, 1, 2))
    key = repr(sorted(identity.items()))
    if key not in _HEAD_CACHE:
        if len(_HEAD_CACHE) > 64:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[key] = _head_templates(identity)
    heads = _HEAD_CACHE[key]
    rows = (_PAD - off[:, 1])[:, None] + np.arange(FACE)[None]
    cols = (_PAD - off[:, 0])[:, None] + np.arange(FACE)[None]
    canvas = heads[state[:, None, None], rows[:, :, None], cols[:, None, :]]
    rx, ry = identity["face_rx"], identity["face_ry"]
    cx = (FACE / 2 + off[:, 0]).reshape(-1, 1, 1).astype(np.float32)
    cy = (FACE / 2 + 1.5 + off[:, 1]).reshape(-1, 1, 1).astype(np.float32)
    x1, y1 = np.round(cx[:, 0, 0] - rx).astype(int), np.round(cy[:, 0, 0] - ry).astype(int)
    x2, y2 = np.round(cx[:, 0, 0] + rx).astype(int), np.round(cy[:, 0, 0] + ry).astype(int)
    bboxes = [[int(a), int(b), int(c), int(d)] for a, b, c, d in zip(x1, y1, x2, y2, strict=True)]
    mcx, mcy, scale = _mouth_geometry(np.array(bboxes, np.float32))
    _paint_mouth(canvas, track, mcx, mcy, scale, identity["lip"])
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), bboxes


_PAD = 3
_HEAD_CACHE: dict[str, np.ndarray] = {}


def _head_templates(identity: dict) -> np.ndarray:
    """(3, 64+2P, 64+2P, 3) float32 heads without mouth: eyes open, half closed, closed."""
    n = FACE + 2 * _PAD
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    rx, ry = identity["face_rx"], identity["face_ry"]
    one = np.ones((3, 1, 1), np.float32)
    cx, cy = (FACE / 2 + _PAD) * one, (FACE / 2 + 1.5 + _PAD) * one
    canvas = np.empty((3, n, n, 3), np.float32)
    canvas[:] = np.asarray(identity["background"], np.float32)
    _blend(canvas, _soft_ellipse(cx, cy, rx * one, ry * one, xx, yy), identity["skin"])
    eo = np.array([1.0, 0.4, 0.0], np.float32).reshape(-1, 1, 1)
    for side in (-1, 1):
        ex = cx + side * identity["eye_dx"] * rx
        ey = cy + identity["eye_dy"] * ry
        _blend(canvas, _soft_ellipse(ex, ey, 3.2 * one, 2.0 * one, xx, yy), (240, 240, 240))
        _blend(canvas, _soft_ellipse(ex, ey, 1.6 * one, 1.6 * eo + 1e-3, xx, yy) * (eo > 0.05), identity["eye"])
        _blend(canvas, _soft_ellipse(ex, ey, 3.4 * one, 0.6 * one, xx, yy) * (1 - eo) * 0.9,
               np.asarray(identity["skin"]) * 0.6)
    return canvas


def _mouth_geometry(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth centre and scale (face-box width) from (T,4) boxes, each as (T,1,1)."""
    mcx = (boxes[:, 0] + boxes[:, 2]) / 2
    mcy = boxes[:, 1] + MOUTH_Y * (boxes[:, 3] - boxes[:, 1])
    scale = boxes[:, 2] - boxes[:, 0]
    return mcx.reshape(-1, 1, 1), mcy.reshape(-1, 1, 1), scale.reshape(-1, 1, 1)


DEFAULT_BOX = [13, 10, 51, 58]


def draw_mouth(frame: np.ndarray, params, bbox=None, lip_color=(160, 60, 70)) -> np.ndarray:
    """Paint a mouth with `params` (5,) onto a copy of an existing face frame (64,64,3) uint8.

    The mouth is placed from the face box `bbox` [x1,y1,x2,y2] (default: a centred face box), as in render_faces.
    Used by the non-learned viseme-template baseline renderer.
    """
    frame = np.asarray(frame)
    if frame.shape != (FACE, FACE, 3):
        raise ValueError(f"frame must be ({FACE},{FACE},3), got {frame.shape}")
    canvas = frame.astype(np.float32)[None].copy()
    box = np.array([bbox if bbox is not None else DEFAULT_BOX], np.float32)
    mcx, mcy, scale = _mouth_geometry(box)
    _paint_mouth(canvas, np.asarray(params, np.float32).reshape(1, 5), mcx, mcy, scale, lip_color)
    return np.clip(np.round(canvas[0]), 0, 255).astype(np.uint8)


def lip_roi(frames: np.ndarray, bboxes) -> np.ndarray:
    """(T, 32, 32) uint8 grayscale crop around the mouth, located from the face boxes (side 0.75 x box width)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T,H,W,3), got {frames.shape}")
    boxes = np.asarray(bboxes, np.float32)
    if boxes.shape != (frames.shape[0], 4):
        raise ValueError(f"need one [x1,y1,x2,y2] box per frame, got {boxes.shape} for {frames.shape[0]} frames")
    mcx, mcy, scale = (a[:, 0, 0] for a in _mouth_geometry(boxes))
    side = 0.75 * scale
    u = (np.arange(LIP) + 0.5) / LIP - 0.5
    ys = np.clip(np.floor(mcy[:, None] + u[None] * side[:, None]), 0, frames.shape[1] - 1).astype(int)
    xs = np.clip(np.floor(mcx[:, None] + u[None] * side[:, None]), 0, frames.shape[2] - 1).astype(int)
    crop = frames[np.arange(len(frames))[:, None, None], ys[:, :, None], xs[:, None, :]].astype(np.float32)
    gray = crop @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)


def make_utterance(text: str, lang: str, speaker: dict, seed: int) -> dict:
    """Synthesise `text` with espeak and render the matching face video.

    Returns audio (N,) float32 16 kHz with N = 640 T, phonemes [(start_s, end_s, sym)], frames (T,64,64,3) uint8,
    lip (T,32,32) uint8, bboxes [[x1,y1,x2,y2]] * T, visemes (T,) int64.
    """
    from .espeak import synthesize

    audio, phonemes = synthesize(text, lang, speaker)
    n_frames = len(audio) // SAMPLES_PER_FRAME
    track = mouth_track(phonemes, n_frames)
    frames, bboxes = render_faces(track, face_identity(speaker["id"]), seed)
    return {"audio": audio, "phonemes": phonemes, "frames": frames, "lip": lip_roi(frames, bboxes),
            "bboxes": bboxes, "visemes": viseme_track(phonemes, n_frames)}
