"""The glue of the AV2AV pipeline: translation pairs (every ordered pair of languages of a tuple), the k-means
assignment used for the reference units, direction groups and BLEU aggregation of the report, and the folder
dataset's atomic write."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cvpr24.pipelines.av2av import report as RP
from cvpr24.pipelines.av2av.fit import translation_pairs
from cvpr24.pipelines.av2av.jobs import nearest


def test_translation_pairs_are_every_ordered_pair_of_a_tuple():
    langs = ["en", "es", "fr", "it", "pt"]
    meta = pd.DataFrame([{"sample_id": f"{t}_{lang}", "tuple_id": t, "lang": lang} for t in ("t0", "t1")
                         for lang in langs])
    units = {s: np.array([i, i, i + 1]) for i, s in enumerate(meta["sample_id"])}
    pairs = translation_pairs(meta, np.arange(len(meta)), units)
    assert len(pairs) == 2 * 20
    assert {(p[1], p[3]) for p in pairs} == {(a, b) for a in langs for b in langs if a != b}
    src = next(p for p in pairs if p[1] == "en" and p[3] == "fr")
    assert src[0] == [0, 1] and src[2] == [2, 3]            # de-duplicated, from the same tuple t0
    assert all(p[0] != p[2] for p in pairs)


def test_nearest_matches_sklearn_kmeans_predict():
    from sklearn.cluster import KMeans

    x = np.random.default_rng(0).normal(size=(300, 8))
    km = KMeans(5, n_init=2, random_state=0).fit(x)
    y = np.random.default_rng(1).normal(size=(50, 8))
    assert (nearest(km.cluster_centers_, y) == km.predict(y)).all()


def test_direction_groups_and_bleu_aggregation():
    assert RP._group("es", "en") == "x_en" and RP._group("en", "fr") == "en_x" and RP._group("it", "pt") == "x_y"
    ref = "the old man reads the newspaper every morning"
    rows = [{"system": "S", "src": "es", "tgt": "en", "tuple_id": "t0", "hyp": ref, "ref": ref},
            {"system": "S", "src": "fr", "tgt": "en", "tuple_id": "t0", "hyp": "", "ref": ref}]
    tr = pd.DataFrame(rows)
    per = RP.direction_bleu(tr, "S")
    assert per["es-en"] == pytest.approx(100.0) and per["fr-en"] == pytest.approx(0.0)
    assert 0.0 < RP.corpus_bleu(tr, "S") < 100.0


def test_corpus_folder_is_written_atomically(tmp_path):
    from cvpr24.pipelines.av2av import folder as FO

    good = {"id": "t0_en", "lang": "en", "speaker": "spk0", "tuple_id": "t0",
            "texts": {lang: "a b c d" for lang in ("en", "es", "fr", "it", "pt")},
            "audio": np.zeros(640 * 3, np.float32), "frames": np.zeros((3, 64, 64, 3), np.uint8),
            "lip": np.zeros((3, 32, 32), np.uint8), "bboxes": [[0, 0, 64, 64]] * 3,
            "phonemes": [(0.0, 0.05, "_")]}
    dest = tmp_path / "corpus"
    FO.write_corpus([good], {"test": ["t0_en"]}, dest)
    first = (dest / "test.tsv").read_text()
    bad = dict(good, id="t1_en", frames=np.zeros((3, 64, 64), np.float32))    # fails while writing
    with pytest.raises(ValueError):
        FO.write_corpus([good, bad], {"test": ["t0_en", "t1_en"]}, dest)
    assert (dest / "test.tsv").read_text() == first                            # the previous corpus is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")]


def test_bleu_difference_claims_are_na_at_the_floor_not_pass():
    """Two systems both at 0 BLEU 'agree' trivially: C1b / C3 must say N/A, and C6b (zeroing removes the
    speaker gap) is N/A when C6 shows no gap."""
    rows = []
    for system in ("AV2AV", "A2A"):
        for tgt in ("en", "es"):
            rows.append({"system": system, "src": "fr", "tgt": tgt, "tuple_id": "t0", "snr": "clean",
                         "hyp": "r", "ref": "the old man reads the newspaper every morning"})
    tr = pd.DataFrame(rows)
    units = pd.DataFrame([{"sample_id": "s", "modality": m, "snr": "clean", "unit_acc": 0.5} for m in ("A", "V", "AV")])
    av = pd.DataFrame([{"kind": "speaker", "system": s, "gap": g} for s, g in
                       (("source embedding", 0.1), ("source embedding", -0.1), ("zeroed embedding", -0.2))]
                      + [{"kind": "video", "system": "AV-Renderer (ours)", "clip": 0, "lse_d": 1.0, "lse_c": 0.1},
                         {"kind": "video", "system": "source video unchanged", "clip": 0, "lse_d": 1.1, "lse_c": 0.0},
                         {"kind": "video", "system": "w/o unit branch", "clip": 0, "lse_d": 1.2, "lse_c": 0.0}])
    m = RP.measure_claims(tr, units, av, k=100)
    assert m["C1b"].units == {} and "floor" in m["C1b"].note
    assert m["C3"].units == {}
    assert m["C6b"].units == {} and m["C6"].units["outputs"] == 0.5
    assert m["C5"].units == {"0": pytest.approx(0.1)}


@pytest.mark.parametrize("shapes", [[(5, 8, 8, 3)], [(5, 8, 8, 3), (5, 8, 8, 3)], [(5, 8, 8, 3), (7, 8, 8, 3)]])
def test_clip_lists_stay_one_item_per_clip(shapes):
    from cvpr24.pipelines.av2av.evaluation import _object_vector

    items = [np.zeros(s, np.uint8) for s in shapes]
    out = _object_vector(items)
    assert out.shape == (len(shapes),) and out.dtype == object
    assert all(o.shape == s for o, s in zip(out, shapes, strict=True))
