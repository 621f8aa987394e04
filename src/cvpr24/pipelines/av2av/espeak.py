"""Offline speech synthesis with phoneme timings: libespeak-ng 1.51 through ctypes (spec section 8.2, "EspeakAV").

`espeak-ng --pho` prints nothing for the formant (non-MBROLA) voices, so the library is driven directly:
``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, NULL, espeakINITIALIZE_PHONEME_EVENTS)`` with a synth
callback that collects the 22,050 Hz int16 samples and the phoneme events (type 7, ``audio_position`` in ms,
mnemonic in ``id.string``). The waveform is resampled to 16 kHz (``resample_poly`` 320/441) and padded with
silence to a multiple of 640 samples (one 25 fps video frame, see ``common``).

The library keeps synthesis state between utterances, so every utterance is spoken by a child forked from a
process that has initialised the library and never synthesised (bit-identical output run to run). That process
is a small synthesis server (``_serve``: numpy and ctypes, ~40 MB) started once per calling process: forking the
caller itself cost ~30 ms per utterance once it held a few GB (the evaluation's models and features), about 1 ms
from the server. The caller never loads the library's state, only checks that it can be found.

The 8 "speakers" are espeak voice variants with fixed pitch/speed (spec: pitch in [35, 70], speed in [140, 180]);
they are written out here rather than drawn at import so that they never depend on RNG state.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any

import numpy as np

from .common import LANGS, SAMPLES_PER_FRAME, SR

ESPEAK_SR = 22_050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_PHONEME = 7
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_PARAM_RATE, _PARAM_PITCH = 1, 3
_LIB_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")
_FIX = "run `make espeak` (apt-get install espeak-ng)"

SPEAKERS: list[dict[str, Any]] = [
    {"id": "spk0", "variant": "m1", "pitch": 40, "speed": 160, "split": "train"},
    {"id": "spk1", "variant": "f1", "pitch": 62, "speed": 150, "split": "train"},
    {"id": "spk2", "variant": "m3", "pitch": 48, "speed": 175, "split": "train"},
    {"id": "spk3", "variant": "f2", "pitch": 68, "speed": 165, "split": "train"},
    {"id": "spk4", "variant": "m7", "pitch": 36, "speed": 145, "split": "train"},
    {"id": "spk5", "variant": "klatt", "pitch": 55, "speed": 170, "split": "train"},
    {"id": "spk6", "variant": "f4", "pitch": 58, "speed": 155, "split": "test"},
    {"id": "spk7", "variant": "croak", "pitch": 44, "speed": 178, "split": "test"},
]


class EspeakMissingError(RuntimeError):
    """libespeak-ng (or one of its language voices) is not installed."""


class _Event(ctypes.Structure):
    # espeak_EVENT of speak_lib.h (1.51); the id union is 8 bytes (char string[8] / int / const char *).
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _on_synth(wav, numsamples, events):  # noqa: ANN001 - ctypes callback
    buf = _state["buf"]
    if numsamples > 0 and wav:
        buf["samples"].append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    i = 0
    while True:
        ev = events[i]
        if ev.type == 0:  # LIST_TERMINATED
            break
        if ev.type == _EVENT_PHONEME:
            buf["phonemes"].append((int(ev.audio_position), bytes(ev.id).split(b"\0", 1)[0].decode("utf-8")))
        elif ev.type in (_EVENT_END, _EVENT_MSG_TERMINATED):
            buf["ends"].append(int(ev.audio_position))
        i += 1
    return 0


def _find_lib() -> ctypes.CDLL:
    """Load the shared library (no espeak state is touched), or raise `EspeakMissingError` naming the fix."""
    for name in (*_LIB_NAMES, ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise EspeakMissingError(f"libespeak-ng.so.1 not found: {_FIX}")


def _lib() -> ctypes.CDLL:
    """Load and initialise libespeak-ng once per process (in the synthesis server only)."""
    if "lib" in _state:
        return _state["lib"]
    lib = _find_lib()
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                 _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if rate != ESPEAK_SR:
        raise EspeakMissingError(f"espeak_Initialize returned {rate} (expected {ESPEAK_SR} Hz): {_FIX}")
    cb = _CALLBACK(_on_synth)
    lib.espeak_SetSynthCallback(cb)
    _state["cb"] = cb  # keep the callback alive
    _state["lib"] = lib
    _state["libc"] = ctypes.CDLL(None)
    return lib


def _set_voice(lib: ctypes.CDLL, name: str) -> None:
    if lib.espeak_SetVoiceByName(name.encode()) != 0:
        raise EspeakMissingError(f"espeak-ng voice {name!r} is not available: {_FIX}")


def require_espeak(langs: tuple[str, ...] = LANGS) -> None:
    """Raise `EspeakMissingError` (naming the fix) unless the library and every language voice load."""
    with _lock:
        _find_lib()
        ok = _state.setdefault("voices_ok", set())
        for lang in langs:
            if lang not in ok:
                _request("a", lang, 50, 175)
                ok.add(lang)


def _raw(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, list[tuple[int, str]], int]:
    lib = _lib()
    _set_voice(lib, voice)
    lib.espeak_SetParameter(_PARAM_RATE, int(speed), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    _state["libc"].srand(0)  # espeak's noise sources use libc rand(): reseed for deterministic output
    _state["buf"] = {"samples": [], "phonemes": [], "ends": []}
    data = text.encode("utf-8") + b"\0"
    err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed with error {err} on {text!r}")
    lib.espeak_Synchronize()
    buf = _state.pop("buf")
    wav = np.concatenate(buf["samples"]) if buf["samples"] else np.zeros(0, np.int16)
    end_ms = max(buf["ends"]) if buf["ends"] else int(round(1000 * len(wav) / ESPEAK_SR))
    return wav, buf["phonemes"], end_ms


def _raw_forked(text: str, voice: str, pitch: int, speed: int) -> bytes:
    """Run `_raw` in a forked child of the initialised-but-unused library; return the pickled
    ("ok", result) or ("err", exception).

    libespeak-ng keeps synthesis state between utterances (wave-generator phase, flutter index, Klatt filter
    memories), so the same text comes out slightly different on a second call. A child forked from a process
    that has initialised the library but never synthesised starts from the same pristine state every time,
    which makes the output bit-identical run to run.
    """
    try:
        _lib()
    except BaseException as exc:  # noqa: BLE001 - forwarded to the caller
        return pickle.dumps(("err", exc))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send the result, exit without running Python cleanup
        code = 0
        try:
            os.close(rfd)
            try:
                payload = ("ok", _raw(text, voice, pitch, speed))
            except BaseException as exc:  # noqa: BLE001 - forwarded to the caller
                payload = ("err", exc)
            data = pickle.dumps(payload)
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        return pickle.dumps(("err", RuntimeError(f"espeak-ng synthesis child died on {text!r} ({voice})")))
    return data


# ---------------------------------------------------------------------------------------------------------------
# the synthesis server: length-prefixed pickles over two pipes
def _send(f, data: bytes) -> None:
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def _recv(f) -> bytes | None:
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    return data if len(data) == n else None


def _serve(rfd: int, wfd: int) -> None:
    """The server's loop: one (text, voice, pitch, speed) request in, one pickled result out, until EOF."""
    with os.fdopen(rfd, "rb") as rf, os.fdopen(wfd, "wb") as wf:
        while True:
            req = _recv(rf)
            if req is None:
                return
            _send(wf, _raw_forked(*pickle.loads(req)))


def _server() -> dict[str, Any]:
    srv = _state.get("server")
    if srv is not None:
        if srv["pid"] != os.getpid():     # inherited through a fork: the parent's server, not ours
            _state.pop("server")
        elif srv["proc"].poll() is None:
            return srv
        else:                             # it died (killed): close its pipes, start another
            _stop_server()
    to_r, to_w = os.pipe()      # caller -> server
    from_r, from_w = os.pipe()  # server -> caller
    code = f"from cvpr24.pipelines.av2av.espeak import _serve; _serve({to_r}, {from_w})"
    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
                            close_fds=True)
    os.close(to_r)
    os.close(from_w)
    srv = {"pid": os.getpid(), "proc": proc, "w": os.fdopen(to_w, "wb"), "r": os.fdopen(from_r, "rb")}
    _state["server"] = srv
    return srv


def _stop_server() -> None:
    srv = _state.pop("server", None)
    if srv is None or srv["pid"] != os.getpid():
        return
    for f in (srv["w"], srv["r"]):
        try:
            f.close()
        except OSError:
            pass
    try:
        srv["proc"].wait(timeout=5)
    except subprocess.TimeoutExpired:
        srv["proc"].kill()


atexit.register(_stop_server)


def _request(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, list[tuple[int, str]], int]:
    srv = _server()
    try:
        _send(srv["w"], pickle.dumps((text, voice, int(pitch), int(speed))))
        data = _recv(srv["r"])
    except (BrokenPipeError, OSError):
        data = None
    if data is None:
        _stop_server()
        raise RuntimeError(f"the espeak-ng synthesis server died on {text!r} ({voice}); {_FIX} if the library "
                           "is missing, else run the command again")
    status, result = pickle.loads(data)
    if status != "ok":
        raise result
    return result


def synthesize(text: str, lang: str, speaker: dict) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Speak `text` in `lang` with `speaker` (an entry of SPEAKERS).

    Returns (float32 mono waveform at 16 kHz in [-1, 1], length a multiple of 640 samples) and the phonemes
    as (start_s, end_s, espeak mnemonic): end = next start, last end = end of speech (<= duration).
    Deterministic: each utterance is spoken from the library's pristine state (the synthesis server).
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    for key in ("variant", "pitch", "speed"):
        if key not in speaker:
            raise ValueError(f"speaker dict lacks {key!r}; use an entry of espeak.SPEAKERS")
    if not text.strip():
        raise ValueError("text is empty")
    # imported here, not at module level: the synthesis server needs numpy and ctypes only
    from scipy.signal import resample_poly

    with _lock:
        wav, events, end_ms = _request(text, f"{lang}+{speaker['variant']}", speaker["pitch"], speaker["speed"])
    wav = wav.astype(np.float32) / 32768.0
    audio = np.clip(resample_poly(wav, SR, ESPEAK_SR), -1.0, 1.0).astype(np.float32)
    n = -(-len(audio) // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
    audio = np.pad(audio, (0, n - len(audio)))
    dur = n / SR
    # event times clipped to the padded duration and made non-decreasing; pauses (_, _:, ;) are kept as phonemes
    starts = [min(ms / 1000.0, dur) for ms, _ in events]
    starts = list(np.maximum.accumulate(starts)) if starts else []
    speech_end = min(max(end_ms / 1000.0, starts[-1] if starts else 0.0), dur)
    phonemes = []
    for i, (_, sym) in enumerate(events):
        start = float(starts[i])
        end = float(starts[i + 1]) if i + 1 < len(events) else speech_end
        phonemes.append((start, end, sym))
    return audio, phonemes
