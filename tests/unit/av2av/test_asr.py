"""Tests of the ASR-BLEU evaluator: greedy CTC decoding, a toy CTC recogniser, WER/CER/BLEU wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.pipelines.av2av.asr import (
    CTCRecognizer,
    bleu,
    cer,
    ctc_greedy_decode,
    encode_text,
    fit_asr,
    transcribe,
    wer,
)
from cvpr24.pipelines.av2av.features import log_mel

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 16000
CHARSET = "abcd "
FREQ = {"a": 400.0, "b": 800.0, "c": 1400.0, "d": 2200.0, " ": None}


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    assert ctc_greedy_decode([0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 5, 3], CHARSET) == "aab c"
    assert ctc_greedy_decode([0, 0, 0], CHARSET) == ""
    # through the model's argmax path: hand-made logits
    logits = torch.full((7, 6), -5.0)
    for t, k in enumerate([2, 2, 0, 2, 4, 4, 0]):
        logits[t, k] = 5.0
    assert ctc_greedy_decode(logits.argmax(-1), CHARSET) == "bbd"


def test_encode_text_rejects_unknown_characters():
    assert encode_text("ab d", CHARSET) == [1, 2, 5, 4]
    with pytest.raises(ValueError, match="'x'"):
        encode_text("axe", CHARSET)


def _tone_utterance(text, rng):
    parts = []
    for ch in text:
        n = int(rng.uniform(0.09, 0.13) * SR)
        t = np.arange(n) / SR
        f = FREQ[ch]
        seg = np.zeros(n) if f is None else 0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
        parts += [seg, np.zeros(int(0.03 * SR))]
    w = np.concatenate(parts + [np.zeros(640)])
    w = np.pad(w, (0, (-len(w)) % 640)) + 0.003 * rng.normal(size=len(w) + (-len(w)) % 640)
    return log_mel(w.astype(np.float32))


def test_ctc_learns_toy_tone_alphabet():
    rng = np.random.default_rng(0)

    def sample(n):
        texts = ["".join(rng.choice(list("abcd"), size=rng.integers(3, 7))) for _ in range(n)]
        texts = [t[:2] + " " + t[2:] for t in texts]
        return [_tone_utterance(t, rng) for t in texts], texts

    mels, texts = sample(48)
    langs = ["en", "fr"] * 24
    cfg = {"steps": 120, "batch": 16, "channels": 48, "hidden": 48, "lr": 1e-2, "dropout": 0.0}
    sd, hist = fit_asr(mels, texts, langs, CHARSET, cfg, seed=0,
                       augment={"time_masks": 1, "time_width": 2, "freq_masks": 1, "freq_width": 4})
    assert hist[-1]["ctc"] < 0.3 * hist[0]["ctc"]
    model = CTCRecognizer.from_state_dict(sd)
    test_mels, test_texts = sample(12)
    hyps = transcribe(model, test_mels, ["en"] * 12, CHARSET)
    assert cer(hyps, test_texts) < 0.15, list(zip(hyps, test_texts, strict=True))


def test_fit_asr_validates():
    mel = np.zeros((20, 80), np.float32)
    with pytest.raises(ValueError, match="bogus"):
        fit_asr([mel], ["ab"], ["en"], CHARSET, {"bogus": 1}, seed=0)
    with pytest.raises(ValueError, match="too few"):
        fit_asr([mel[:4]], ["abcdabcd"], ["en"], CHARSET, {"steps": 1}, seed=0)
    with pytest.raises(ValueError, match="language"):
        fit_asr([mel], ["ab"], ["xx"], CHARSET, {"steps": 1}, seed=0)


def test_wer_cer_hand_computed():
    assert wer(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(1 / 6)
    # corpus-level: (1 substitution + 1 deletion) / 6 reference words
    assert wer(["a b c", "d e"], ["a x c", "d e f"]) == pytest.approx(2 / 6)
    assert cer(["abed"], ["abcd"]) == pytest.approx(1 / 4)
    assert wer(["same words here"], ["same words here"]) == 0.0
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


def test_bleu_wrapper():
    refs = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore every day"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["", ""], refs) == pytest.approx(0.0)
    # hand-computed: one word changed in a 9-word sentence -> precisions 8/9, 6/8, 4/7, 3/6, BP 1
    expect = 100 * np.exp(np.mean(np.log([8 / 9, 6 / 8, 4 / 7, 3 / 6])))
    got = bleu(["the quick brown fox jumps over a lazy dog"], refs[:1])
    assert got == pytest.approx(expect, abs=1e-6)


def test_snap_to_lexicon_picks_nearest_word_independent_of_order():
    from cvpr24.pipelines.av2av.asr import snap_to_lexicon

    lex = ["the", "man", "sees", "book", "books"]
    assert snap_to_lexicon("th mam ses bok", lex) == "the man sees book"
    assert snap_to_lexicon("the man sees books", lex) == "the man sees books"   # exact words are kept
    assert snap_to_lexicon("", lex) == ""
    # ties in edit distance: the closer length, then the alphabet, never the lexicon's order
    assert snap_to_lexicon("boo", lex) == snap_to_lexicon("boo", lex[::-1]) == "book"
    assert snap_to_lexicon("ab", ["ax", "ay"]) == snap_to_lexicon("ab", ["ay", "ax"]) == "ax"
    cache: dict[str, str] = {}
    assert snap_to_lexicon("mam mam", lex, cache) == "man man" and cache == {"mam": "man"}
    with pytest.raises(ValueError, match="empty"):
        snap_to_lexicon("x", [])


def test_lexicon_decoding_lowers_wer_of_character_errors():
    from cvpr24.pipelines.av2av import corpus as C
    from cvpr24.pipelines.av2av.asr import snap_to_lexicon

    ref = C.normalize_text(C.generate({"subj": 2, "verb": 1, "obj": 3, "time": 0}, "es"))
    noisy = " ".join(w[:-1] + "x" if len(w) > 3 else w for w in ref.split())   # one wrong letter per long word
    assert wer([noisy], [ref]) > 0.3
    assert wer([snap_to_lexicon(noisy, C.lexicon("es"))], [ref]) == 0.0
