"""Tests of the EspeakAV parallel text (spec 8.1): grammar, split, normalisation, dictionary translation."""

from __future__ import annotations

import itertools

import pytest

from cvpr24.pipelines.av2av import corpus as C
from cvpr24.pipelines.av2av.common import LANGS
from cvpr24.pipelines.av2av.corpus import (
    CHARSET,
    check_charset,
    dictionary_translate,
    generate,
    make_tuples,
    normalize_text,
    split_tuples,
)


def test_agreement_and_articles():
    assert generate({"subj": 0, "verb": 3, "obj": 1, "time": 0}, "fr") == "J'ai la pomme aujourd'hui."
    assert generate({"subj": 6, "verb": 0, "obj": 0, "time": -1}, "es") == "Los niños ven el libro."
    assert generate({"subj": 2, "verb": 6, "obj": 3, "time": 2}, "en") == "The man looks for the key every day."
    assert generate({"subj": 4, "verb": 3, "obj": 7, "time": -1}, "pt") == "Nós temos o pão."
    assert generate({"subj": 5, "verb": 1, "obj": 8, "time": 4}, "it") == "Loro vogliono la torta stasera."


def test_make_tuples_distinct_seeded_and_long_enough():
    a, b = make_tuples(300, 0), make_tuples(300, 0)
    assert a == b and make_tuples(300, 1) != a
    keys = {tuple(t["slots"].values()) for t in a}
    assert len(keys) == 300
    for lang in LANGS:
        texts = [t["text"][lang] for t in a]
        assert len(set(texts)) == 300, lang
        assert min(len(s.split()) for s in texts) >= 4


def test_split_unseen_sentences_seen_words():
    tuples = make_tuples(400, 0)
    sp = split_tuples(tuples, 300, 50, 50, 0)
    assert [len(sp[k]) for k in ("train", "valid", "test")] == [300, 50, 50]
    ids = [t["tuple_id"] for k in sp for t in sp[k]]
    assert len(set(ids)) == 400
    for lang in LANGS:
        train_sents = {t["text"][lang] for t in sp["train"]}
        train_words = {w for s in train_sents for w in normalize_text(s).split()}
        for t in sp["valid"] + sp["test"]:
            assert t["text"][lang] not in train_sents
            assert set(normalize_text(t["text"][lang]).split()) <= train_words


def test_split_repairs_uncovered_words():
    tuples = make_tuples(100, 3)
    sp = split_tuples(tuples, 60, 20, 20, 0)  # a plain seeded split leaves 13 held-out tuples with unseen words
    for lang in LANGS:
        words = {w for t in sp["train"] for w in normalize_text(t["text"][lang]).split()}
        for t in sp["test"] + sp["valid"]:
            assert set(normalize_text(t["text"][lang]).split()) <= words
    with pytest.raises(ValueError, match="n_train"):
        split_tuples(tuples, 5, 20, 20, 0)


def test_normalize_and_charset():
    assert normalize_text("  J'ai la Pomme,  aujourd'hui! ") == "j'ai la pomme aujourd'hui"
    assert normalize_text("Los niños: ¿ven? el PAN.") == "los niños ven el pan"
    for t in make_tuples(200, 0):
        for lang in LANGS:
            check_charset(normalize_text(t["text"][lang]))
    assert " " in CHARSET and "'" in CHARSET and "ñ" in CHARSET and "ç" in CHARSET
    with pytest.raises(ValueError, match="charset"):
        check_charset("hello!")


def test_dictionary_translate_exact_on_clean_input():
    for t in make_tuples(15, 2):
        for a, b in itertools.permutations(LANGS, 2):
            assert dictionary_translate(normalize_text(t["text"][a]), a, b) == normalize_text(t["text"][b])


def test_dictionary_translate_tolerates_asr_errors():
    assert dictionary_translate("los nilos bisca la cafa ahora", "es", "en") == "the children look for the box now"
    assert dictionary_translate("jai la pome se soir", "fr", "it") == "io ho la mela stasera"
    assert dictionary_translate("", "en", "es") == ""
    with pytest.raises(ValueError):
        dictionary_translate("i see the book", "en", "de")


def test_lexicon_holds_every_word_the_grammar_generates_and_nothing_else():
    for lang in LANGS:
        words = {w for sl in C.all_slots() for w in C.normalize_text(C.generate(sl, lang)).split()}
        assert set(C.lexicon(lang)) == words
        assert list(C.lexicon(lang)) == sorted(C.lexicon(lang))
    assert "j'ai" in C.lexicon("fr") and "homme" not in C.lexicon("fr")   # elisions are one word
    with pytest.raises(ValueError, match="language"):
        C.lexicon("xx")
