"""Tests of the procedural visual stream (spec 8.3): viseme table, tracks, renderer, lip ROI, utterances."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cvpr24.pipelines.av2av import espeak
from cvpr24.pipelines.av2av.common import LANGS, LIP, SAMPLES_PER_FRAME
from cvpr24.pipelines.av2av.corpus import OBJECTS, SUBJECTS, TIMES, VERBS, generate
from cvpr24.pipelines.av2av.visual import (
    VISEME_SHAPES,
    VISEMES,
    draw_mouth,
    face_identity,
    lip_roi,
    make_utterance,
    mouth_track,
    phoneme_to_viseme,
    render_faces,
    viseme_track,
)

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


def test_table_basics():
    assert len(VISEMES) == 12 and VISEME_SHAPES.shape == (12, 5)
    assert len({tuple(r) for r in VISEME_SHAPES}) == 12
    assert phoneme_to_viseme("_:") == 0 and phoneme_to_viseme("p") == VISEMES.index("PBM")
    assert phoneme_to_viseme("u:") == VISEMES.index("OW/UW/W") and phoneme_to_viseme("i") == VISEMES.index("IY/I")
    assert phoneme_to_viseme("O~:") == phoneme_to_viseme("O")  # documented modifier-stripping rule
    with pytest.raises(KeyError, match="%%"):
        phoneme_to_viseme("%%")


@needs_espeak
def test_mapping_covers_corpus_in_all_languages():
    # every subject+verb form (elisions included), object and time phrase of every language, spoken as lists
    # (fast speaker) so that the whole lexicon takes a few synthesis calls
    from cvpr24.pipelines.av2av.corpus import _subj_verb

    fast = dict(espeak.SPEAKERS[0], speed=260)
    for lang in LANGS:
        phrases = [_subj_verb(s, v, lang) for s in range(len(SUBJECTS)) for v in range(len(VERBS))]
        phrases += [o[lang] for o in OBJECTS] + [t[lang] for t in TIMES]
        phrases.append(generate({"subj": 6, "verb": 2, "obj": 9, "time": 3}, lang))
        for i in range(0, len(phrases), 25):
            text = ", ".join(phrases[i:i + 25]) + "."
            for _, _, sym in espeak.synthesize(text, lang, fast)[1]:
                phoneme_to_viseme(sym)  # KeyError names the symbol


def test_tracks_length_and_silence():
    ph = [(0.2, 0.3, "m"), (0.3, 0.5, "a"), (0.5, 0.6, "u")]
    tr = mouth_track(ph, 25)
    assert tr.shape == (25, 5) and tr.dtype == np.float32
    np.testing.assert_allclose(tr[0], VISEME_SHAPES[0], atol=1e-4)
    np.testing.assert_allclose(tr[-1], VISEME_SHAPES[0], atol=1e-4)
    assert tr[:, 0].max() > 0.7  # the AA opening is (nearly) reached
    vt = viseme_track(ph, 25)
    assert vt.shape == (25,)
    assert vt[0] == 0 and vt[9] == VISEMES.index("AA") and vt[14] == VISEMES.index("OW/UW/W") and vt[20] == 0
    unsmoothed = mouth_track(ph, 25, sigma_s=0.0)
    assert np.abs(np.diff(tr[:, 0])).max() < np.abs(np.diff(unsmoothed[:, 0])).max()


def test_render_deterministic_and_boxes():
    ident = face_identity("spk3")
    assert ident == face_identity("spk3") and ident != face_identity("spk4")
    tr = np.repeat(VISEME_SHAPES[None, 8], 30, 0)
    f1, b1 = render_faces(tr, ident, seed=5)
    f2, b2 = render_faces(tr, ident, seed=5)
    f3, b3 = render_faces(tr, ident, seed=6)
    assert f1.shape == (30, 64, 64, 3) and f1.dtype == np.uint8
    assert np.array_equal(f1, f2) and b1 == b2
    assert not np.array_equal(f1, f3)
    for x1, y1, x2, y2 in b1:
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and 30 < x2 - x1 < 48


def test_visemes_give_different_mouth_crops():
    ident = face_identity("spk0")
    frames, boxes = render_faces(VISEME_SHAPES, ident, seed=0)
    lips = lip_roi(frames, boxes).astype(np.float32)
    assert lips.shape == (12, LIP, LIP)
    d = np.abs(lips[:, None] - lips[None]).mean(axis=(2, 3))
    off = d[~np.eye(12, dtype=bool)]
    assert off.min() > 1.0, off.min()
    # the open mouth is darker in the crop centre than the closed one
    assert lips[VISEMES.index("AA"), 12:20, 12:20].mean() < lips[VISEMES.index("PBM"), 12:20, 12:20].mean() - 20


def test_draw_mouth_changes_only_the_mouth():
    frames, boxes = render_faces(VISEME_SHAPES[[1]], face_identity("spk1"), seed=0)
    out = draw_mouth(frames[0], VISEME_SHAPES[8], bbox=boxes[0])
    diff = np.abs(out.astype(int) - frames[0]).sum(-1) > 0
    assert diff.any() and not diff[: boxes[0][1] + 20].any()
    with pytest.raises(ValueError):
        draw_mouth(frames[0][:32], VISEME_SHAPES[8])


@needs_espeak
def test_make_utterance_alignment():
    u = make_utterance("Los niños ven el libro hoy.", "es", espeak.SPEAKERS[6], seed=1)
    T = len(u["audio"]) // SAMPLES_PER_FRAME
    assert len(u["audio"]) == T * SAMPLES_PER_FRAME
    assert u["frames"].shape == (T, 64, 64, 3) and u["lip"].shape == (T, LIP, LIP)
    assert len(u["bboxes"]) == T and u["visemes"].shape == (T,)
    assert (u["visemes"] != 0).mean() > 0.6
