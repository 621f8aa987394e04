"""Tests of the libespeak-ng ctypes synthesis (spec 8.2)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cvpr24.pipelines.av2av import espeak
from cvpr24.pipelines.av2av.common import LANGS, SAMPLES_PER_FRAME, SR

try:
    espeak.require_espeak()
    HAVE = True
except espeak.EspeakMissingError:
    HAVE = False
# skipped on a developer machine without espeak-ng; under CI (CI set) the tests run and fail with the fix
needs_espeak = pytest.mark.skipif(
    not HAVE and not os.environ.get("CI"),
    reason="the espeak-ng system library is not installed here (`make espeak` installs it); skipped only outside "
           "CI: under CI it is installed by .ci/run and these tests must run")


def test_speakers_fixed():
    assert len(espeak.SPEAKERS) == 8
    assert [s["split"] for s in espeak.SPEAKERS].count("train") == 6
    assert len({s["id"] for s in espeak.SPEAKERS}) == 8
    assert all(35 <= s["pitch"] <= 70 and 140 <= s["speed"] <= 180 for s in espeak.SPEAKERS)


@needs_espeak
def test_waveform_and_phoneme_timing():
    audio, ph = espeak.synthesize("La mujer tiene la pelota por la mañana.", "es", espeak.SPEAKERS[0])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) % SAMPLES_PER_FRAME == 0 and 1.0 < len(audio) / SR < 4.0
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.1
    starts = [p[0] for p in ph]
    assert starts == sorted(starts)
    assert all(ph[i][1] == ph[i + 1][0] for i in range(len(ph) - 1))
    assert ph[-1][1] <= len(audio) / SR
    assert len([p for p in ph if not p[2].startswith("_")]) >= 20
    # speech energy lies inside the phoneme span
    s0, s1 = int(ph[0][0] * SR), int(ph[-1][1] * SR)
    assert np.abs(audio[:s0]).max(initial=0) < 0.05 and np.abs(audio[s1 + 400:]).max(initial=0) < 0.05


@needs_espeak
def test_deterministic_and_speakers_differ():
    a1, p1 = espeak.synthesize("I see the book now.", "en", espeak.SPEAKERS[2])
    espeak.synthesize("Je vois la pomme.", "fr", espeak.SPEAKERS[5])
    a2, p2 = espeak.synthesize("I see the book now.", "en", espeak.SPEAKERS[2])
    assert np.array_equal(a1, a2) and p1 == p2
    a3, _ = espeak.synthesize("I see the book now.", "en", espeak.SPEAKERS[3])
    assert len(a3) != len(a1) or not np.allclose(a1, a3)


@needs_espeak
def test_languages_have_different_inventories():
    inv = {}
    for lang, text in zip(LANGS, ["The children have the bread.", "Los niños tienen el pan.",
                                  "Les enfants ont le pain.", "I bambini hanno il pane.",
                                  "As crianças têm o pão."], strict=True):
        inv[lang] = {p[2] for p in espeak.synthesize(text, lang, espeak.SPEAKERS[0])[1]}
    assert len({frozenset(v) for v in inv.values()}) == 5
    assert "D" in inv["en"] and "&U~" in inv["pt"]


def test_bad_input():
    with pytest.raises(ValueError, match="lang"):
        espeak.synthesize("hello", "de", espeak.SPEAKERS[0])
    with pytest.raises(ValueError, match="variant"):
        espeak.synthesize("hello", "en", {"id": "x"})


def test_missing_library_message(monkeypatch):
    monkeypatch.setattr(espeak, "_state", {})
    monkeypatch.setattr(espeak, "_LIB_NAMES", ("libdoes-not-exist.so.9",))
    monkeypatch.setattr(espeak.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(espeak.EspeakMissingError, match="make espeak"):
        espeak.require_espeak()


@needs_espeak
def test_synthesis_server_keeps_the_caller_pristine_and_restarts():
    """The caller never initialises the library (every utterance comes from the server's pristine state); a
    server that died is replaced and gives the same audio."""
    a1, p1 = espeak.synthesize("I see the book now.", "en", espeak.SPEAKERS[1])
    assert "lib" not in espeak._state
    srv = espeak._state["server"]
    assert srv["pid"] == os.getpid() and srv["proc"].poll() is None
    espeak.synthesize("Je vois la pomme.", "fr", espeak.SPEAKERS[4])
    assert espeak._state["server"]["proc"].pid == srv["proc"].pid   # one server per caller
    srv["proc"].kill()
    srv["proc"].wait()
    a2, p2 = espeak.synthesize("I see the book now.", "en", espeak.SPEAKERS[1])
    assert espeak._state["server"]["proc"].pid != srv["proc"].pid
    assert np.array_equal(a1, a2) and p1 == p2
