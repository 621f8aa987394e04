"""MagNet data: the word-level tokenizer and encoding, the ShapeRef generator (determinism, uniqueness of every
expression, distractor rule, split templates, masks), the REFER writer/loader on the embedded data (exact round
trip, atomic write) and on a tiny fixture in the real RefCOCO format (polygon masks, the overlap rule, all
sentences of a ref, truncation to 20 tokens), and the clear errors bad input gets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.magnet import data as D

W, H = 64, 48  # fixture JPEG size
RECT = [10, 5, 30, 5, 30, 25, 10, 25]
TRIANGLE = [5, 40, 30, 5, 55, 40]
OVERLAP = [[35, 10, 55, 10, 55, 30, 35, 30], [45, 20, 60, 20, 60, 40, 45, 40]]  # overlap 45..55 x 20..30
LONG = ("the very tall man standing on the far left side of the picture wearing a dark blue shirt and "
        "holding a small red umbrella")  # 23 words


def build_fixture(root: Path) -> dict:
    """A tiny dataset in the real REFER layout: 2 JPEGs (64x48) under images/mscoco/images/train2014/,
    refcoco/instances.json with 3 polygon annotations (ann 102 has two overlapping polygons) and
    refcoco/refs(unc).p with 3 refs (train / val / testA), 1-2 sentences each, one of 23 words."""
    img_dir = root / D.COCO_IMAGE_DIR
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg"}
    for name in names.values():
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_dir / name, quality=90)
    ds = root / "refcoco"
    ds.mkdir()
    inst = {"images": [{"id": i, "file_name": n, "height": H, "width": W} for i, n in names.items()],
            "annotations": [
                {"id": 101, "image_id": 1, "category_id": 1, "segmentation": [RECT], "area": 400.0,
                 "bbox": [10, 5, 20, 20], "iscrowd": 0},
                {"id": 102, "image_id": 1, "category_id": 3, "segmentation": OVERLAP, "area": 700.0,
                 "bbox": [35, 10, 25, 30], "iscrowd": 0},
                {"id": 201, "image_id": 2, "category_id": 1, "segmentation": [TRIANGLE], "area": 875.0,
                 "bbox": [5, 5, 50, 35], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                           {"id": 3, "name": "car", "supercategory": "vehicle"}]}
    (ds / "instances.json").write_text(json.dumps(inst))

    def sent(sid, raw):
        return {"sent_id": sid, "raw": raw, "sent": " ".join(D.tokenize(raw)), "tokens": D.tokenize(raw)}

    refs = [
        {"ref_id": 1, "ann_id": 101, "image_id": 1, "category_id": 1, "split": "train", "sent_ids": [11, 12],
         "sentences": [sent(11, "The man on the LEFT."), sent(12, "left guy")],
         "file_name": "COCO_train2014_000000000001_101.jpg"},
        {"ref_id": 2, "ann_id": 102, "image_id": 1, "category_id": 3, "split": "val", "sent_ids": [21],
         "sentences": [sent(21, "car on the right")], "file_name": "COCO_train2014_000000000001_102.jpg"},
        {"ref_id": 3, "ann_id": 201, "image_id": 2, "category_id": 1, "split": "testA", "sent_ids": [31, 32],
         "sentences": [sent(31, LONG), sent(32, "tall man")],
         "file_name": "COCO_train2014_000000000002_201.jpg"},
    ]
    with open(ds / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return {"instances": inst, "refs": refs, "image_dir": img_dir}


def _edit_instances(root: Path, fn) -> None:
    path = root / "refcoco" / "instances.json"
    inst = json.loads(path.read_text())
    fn(inst)
    path.write_text(json.dumps(inst))


def _edit_refs(root: Path, fn) -> None:
    path = root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    fn(refs)
    path.write_bytes(pickle.dumps(refs, protocol=2))


@pytest.fixture(scope="module")
def scenes():
    return D.generate_shaperef(n_train=400, n_val=60, n_testA=60, n_testB=60, seed=3)


def _obj(shape, colour, cx, cy, size="small"):
    return D.ShapeObject(shape, colour, size, float(cx), float(cy), 6.0, (0.5, 0.5, 0.5))


# ------------------------------------------------------------------------------------------- tokenizer
def test_tokenize_and_vocab():
    assert D.tokenize("The man's  LEFT-most, #2 shirt!") == ["the", "man", "s", "left", "most", "2", "shirt"]
    v = D.Vocab.from_sentences(["b a c", "a a", "zz"], min_count=1)
    assert v.itos[:5] == D.SPECIALS and v.words == ["a", "b", "c", "zz"]
    assert v.id("a") == 5 and v.id("never") == D.UNK_ID
    assert D.Vocab.from_sentences(["b a c", "a a"], min_count=2).words == ["a"]
    assert D.Vocab.from_sentences(["zz", "a a", "b a c"]) == v  # order of sentences does not matter
    assert D.Vocab.from_json(v.to_json()) == v
    with pytest.raises(DataValidationError, match="specials"):
        D.Vocab.from_json(json.dumps({"specials": ["[PAD]"], "words": ["a"]}))


def test_encode_layout_and_long_sentences():
    v = D.Vocab.from_sentences(["the red circle", "a b c d e f"])
    ids, attn = D.encode(["the red circle", "the blue circle"], v, max_tokens=8)
    assert ids.dtype == np.int64 and attn.dtype == np.int64 and ids.shape == attn.shape == (2, 8)
    assert ids[0].tolist() == [D.CLS_ID, v.id("the"), v.id("red"), v.id("circle"), D.SEP_ID, 0, 0, 0]
    assert ids[1, 2] == D.UNK_ID
    assert attn[0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    long = "a b c d e f"  # 8 ids with CLS/SEP
    with pytest.raises(DataValidationError, match=r"'a b c d e f'.*ref 7 in refs\(unc\)\.p.*max_tokens"):
        D.encode(["the red circle", long], v, max_tokens=6, where=["ref 1", "ref 7 in refs(unc).p"])
    ids, attn = D.encode([long], v, max_tokens=6, on_long="truncate")
    assert ids[0].tolist() == [D.CLS_ID, *v.ids(["a", "b", "c", "d"]), D.SEP_ID] and attn[0].sum() == 6
    ids, _ = D.encode([long], v, max_tokens=6, on_long="released")  # LAVT's plain slice: no SEP
    assert ids[0].tolist() == [D.CLS_ID, *v.ids(["a", "b", "c", "d", "e"])]
    ids, attn = D.encode([long], v, max_tokens=8)  # exactly fits
    assert ids[0, -1] == D.SEP_ID and attn[0].sum() == 8


# ------------------------------------------------------------------------------------------- generator
def test_generator_deterministic():
    kw = {"n_train": 12, "n_val": 4, "n_testA": 4, "n_testB": 4}
    a, b = D.generate_shaperef(seed=5, **kw), D.generate_shaperef(seed=5, **kw)
    c = D.generate_shaperef(seed=6, **kw)
    assert [s.sentence for s in a] == [s.sentence for s in b]
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.masks, y.masks)
               and x.distractor == y.distractor for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))
    # a split does not depend on the size of another one
    d = D.generate_shaperef(seed=5, n_train=3, n_val=4, n_testA=0, n_testB=0)
    assert [s.sentence for s in d if s.split == "val"] == [s.sentence for s in a if s.split == "val"]


def test_every_expression_is_unique_to_its_target(scenes):
    for s in scenes:
        assert D.matches(s.spec, s.objects) == [s.target], (s.image_id, s.sentence)
        words = D.tokenize(s.sentence)
        assert s.spec["shape"] in words
        colours = [w for w in words if w in D.COLOURS]
        if s.template == "R":  # the target's own colour is not named, only the reference's
            assert colours == [s.spec["ref_colour"]]
            assert D.tokenize(s.sentence)[-2:] == [s.spec["ref_colour"], s.spec["ref_shape"]]
        elif s.template == "A":
            assert colours == [s.objects[s.target].colour]


def test_distractor_rule_and_distractor_ann(scenes):
    for s in scenes:
        t = s.objects[s.target]
        others = [o for k, o in enumerate(s.objects) if k != s.target]
        assert any(o.shape == t.shape for o in others) and any(o.colour == t.colour for o in others)
        assert s.distractor != s.target and s.distractor_ann_id in s.ann_ids
    # drawn, not always the same position
    assert len({s.distractor - s.target for s in scenes}) > 2


def test_split_templates(scenes):
    by = {}
    for s in scenes:
        by.setdefault(s.split, []).append(s.template)
    assert set(by["testA"]) == {"A"} and set(by["testB"]) == {"R", "O"}
    train = np.array(by["train"])
    assert abs(np.isin(train, ["R", "O"]).mean() - 0.6) < 0.08
    assert {"A", "R", "O"} <= set(by["val"])
    assert sum(1 for s in scenes if s.split == "train") == 400 and len(scenes) == 580


def test_masks_disjoint_with_gap_and_painted(scenes):
    from scipy import ndimage

    for s in scenes[:150]:
        assert s.masks.shape == (len(s.objects), 64, 64) and 3 <= len(s.objects) <= 5
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert (s.masks.reshape(len(s.objects), -1).sum(1) > 0).all()
        assert s.masks.sum(0).max() == 1
        for k, m in enumerate(s.masks):
            grown = ndimage.binary_dilation(m.astype(bool), np.ones((3, 3), bool))
            rest = np.delete(s.masks, k, axis=0).sum(0) > 0
            assert not (grown & rest).any(), "objects closer than the 2 px gap"
            rgb = np.rint(np.asarray(s.objects[k].rgb) * 255)
            assert (s.image[m.astype(bool)] == rgb).all()


def test_vocabulary_size_and_length(scenes):
    v = D.Vocab.from_sentences(s.sentence for s in scenes if s.split == "train")
    assert 35 <= len(v) <= 45
    assert max(len(D.tokenize(s.sentence)) + 2 for s in scenes) <= 12
    ids, attn = D.encode([s.sentence for s in scenes], v, max_tokens=12)
    assert (ids[attn.astype(bool)] != D.UNK_ID).mean() > 0.99


def test_matches_semantics():
    objs = [_obj("circle", "red", 10, 30), _obj("circle", "blue", 40, 32), _obj("square", "red", 25, 8),
            _obj("square", "green", 54, 50)]
    m = {"margin": 2.0}
    assert D.matches({"template": "A", "shape": "circle", "colour": "red", "size": None, **m}, objs) == [0]
    assert D.matches({"template": "A", "shape": "circle", "colour": "red", "size": "big", **m}, objs) == []
    r = {"template": "R", "shape": "circle", "ref_colour": "blue", "ref_shape": "circle", **m}
    assert D.matches({**r, "relation": "left of"}, objs) == [0]
    assert D.matches({**r, "relation": "right of"}, objs) == []
    assert D.matches({"template": "R", "shape": "square", "relation": "above", "ref_colour": "red",
                      "ref_shape": "circle", **m}, objs) == [2]
    # the reference phrase must be unique: two red objects are fine, two red circles are not
    assert D.matches({**r, "ref_colour": "red", "ref_shape": "circle", "relation": "right of"}, objs) == [1]
    two_red = [*objs, _obj("circle", "red", 60, 10)]
    assert D.matches({**r, "ref_colour": "red", "ref_shape": "circle", "relation": "right of"}, two_red) == []
    o = {"template": "O", "kind": "ordinal", "shape": "circle", **m}
    assert D.matches({**o, "rank": 0, "side": "left"}, objs) == [0]
    assert D.matches({**o, "rank": 0, "side": "right"}, objs) == [1]
    assert D.matches({**o, "rank": 2, "side": "left"}, objs) == []
    tie = [*objs, _obj("circle", "green", 11, 55)]  # x within the margin of circle 0: order ambiguous
    assert D.matches({**o, "rank": 0, "side": "left"}, tie) == []
    e = {"template": "O", "kind": "extreme", "shape": "square", "colour": None, **m}
    assert D.matches({**e, "extreme": "top"}, objs) == [2] and D.matches({**e, "extreme": "bottom"}, objs) == [3]
    # next to: the reference's nearest object, by a margin
    nt = {"template": "R", "relation": "next to", "ref_colour": "green", "ref_shape": "square", **m}
    assert D.matches({**nt, "shape": "circle"}, objs) == [1]
    assert D.matches({**nt, "shape": "square"}, objs) == []


# ------------------------------------------------------------------------------------------- REFER loader
def test_fixture_polygon_masks_and_sentences(tmp_path):
    fx = build_fixture(tmp_path)
    refs, anns, images = D.load_refer(tmp_path, "refcoco", "unc", D.COCO_IMAGE_DIR)
    assert list(refs.columns) == D.REFS_COLUMNS and len(refs) == 5
    assert refs["sent_id"].tolist() == [11, 12, 21, 31, 32]
    assert refs.groupby("ref_id")["sent_id"].apply(list).to_dict() == {1: [11, 12], 2: [21], 3: [31, 32]}
    assert refs["split"].tolist() == ["train", "train", "val", "testA", "testA"]
    assert set(refs["template"]) == {"all"} and refs["distractor_ann_id"].isna().all()
    assert refs["file_name"].iloc[0] == "COCO_train2014_000000000001.jpg"  # the image, not the ref's name
    assert refs.loc[0, "sentence"] == "The man on the LEFT."
    assert set(anns) == {101, 102, 201} and set(images) == {1, 2}

    rect = D.decode_mask(anns[101], H, W)
    assert rect.dtype == np.uint8 and rect.shape == (H, W) and rect.sum() == 400  # pycocotools: 20 x 20
    assert rect[5:25, 10:30].all()

    def pil(poly):
        im = Image.new("L", (W, H), 0)
        ImageDraw.Draw(im).polygon(poly, fill=1)
        return np.asarray(im).astype(bool)

    for ann_id, poly in ((101, RECT), (201, TRIANGLE)):
        m = D.decode_mask(anns[ann_id], H, W).astype(bool)
        ref = pil(poly)
        assert (m & ref).sum() / (m | ref).sum() > 0.9
    # the released loader's overlap rule: pixels inside both polygons are background, the rest is target
    over = D.decode_mask(anns[102], H, W)
    a, b = (D.decode_mask({"id": 0, "segmentation": [p]}, H, W).astype(bool) for p in OVERLAP)
    assert (a & b).sum() == 100 and over[a & b].sum() == 0
    assert np.array_equal(over.astype(bool), a ^ b)

    arrays = D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], 32)
    assert arrays["images"].shape == (2, 32, 32, 3) and arrays["masks"].shape == (5, 32, 32)
    assert arrays["image_index"].tolist() == [0, 0, 0, 1, 1]
    assert np.array_equal(arrays["masks"][0], arrays["masks"][1])  # same ref, one mask per sentence
    assert set(np.unique(arrays["masks"])) <= {0, 1} and not arrays["has_distractor"].any()
    assert arrays["distractor_masks"].sum() == 0

    v = D.Vocab.from_sentences(refs["sentence"])
    where = [f"ref {r} in refs(unc).p" for r in refs["ref_id"]]
    with pytest.raises(DataValidationError, match=r"the very tall man.*ref 3 in refs\(unc\)\.p"):
        D.encode(refs["sentence"].tolist(), v, 20, where=where)
    ids, attn = D.encode(refs["sentence"].tolist(), v, 20, on_long="truncate")
    assert ids.shape == (5, 20) and ids[3, 0] == D.CLS_ID and ids[3, 19] == D.SEP_ID and attn[3].all()
    assert ids[3, 1:19].tolist() == v.ids(D.tokenize(LONG)[:18])

    sub, _, _ = D.load_refer(tmp_path, "refcoco", "unc", D.COCO_IMAGE_DIR, splits=["val", "testA"])
    assert sub["ref_id"].tolist() == [2, 3, 3]
    assert fx["image_dir"] == Path(sub.attrs["image_dir"])


def test_rle_decoding_variants():
    from pycocotools import mask as mask_utils

    m = np.zeros((H, W), np.uint8)
    m[3:9, 4:30] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()  # starts with a 0-run
    for seg in (rle, {"size": [H, W], "counts": rle["counts"].decode()}, {"size": [H, W], "counts": runs}):
        assert np.array_equal(D.decode_mask({"id": 9, "segmentation": seg}, H, W), m)
    with pytest.raises(DataValidationError, match=r"annotation 9 \(x\.jpg\).*\[48, 64\].*\[40, 64\]"):
        D.decode_mask({"id": 9, "segmentation": {"size": [H, W], "counts": runs}}, 40, W, where="x.jpg")


def test_shaperef_round_trip(tmp_path):
    sc = D.generate_shaperef(n_train=6, n_val=2, n_testA=2, n_testB=2, seed=1)
    D.write_refer(tmp_path, sc)
    assert not list(tmp_path.glob(".*"))  # no temporary folders left
    refs, anns, images = D.load_refer(tmp_path, "shaperef", "unc", D.EMBEDDED_IMAGE_DIR)
    pd.testing.assert_frame_equal(refs, D.refs_frame(sc))
    assert refs["sentence"].tolist() == [s.sentence for s in sc]
    assert refs["template"].tolist() == [s.template for s in sc]
    assert refs["split"].tolist() == [s.split for s in sc]
    assert refs["ann_id"].tolist() == [s.target_ann_id for s in sc]
    assert refs["distractor_ann_id"].tolist() == [s.distractor_ann_id for s in sc]
    arrays = D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], 64)
    assert np.array_equal(arrays["images"], np.stack([s.image for s in sc]))
    assert np.array_equal(arrays["masks"], np.stack([s.masks[s.target] for s in sc]))
    assert np.array_equal(arrays["distractor_masks"], np.stack([s.masks[s.distractor] for s in sc]))
    for s in sc:  # every object, not only the targets
        for k, ann_id in enumerate(s.ann_ids):
            assert np.array_equal(D.decode_mask(anns[ann_id], 64, 64), s.masks[k])
            assert anns[ann_id]["category_id"] == D.CATEGORY_IDS[s.objects[k].shape]
    raw = pickle.loads((tmp_path / "shaperef" / "refs(unc).p").read_bytes())
    assert [r["sentences"][0]["spec"] for r in raw] == [s.spec for s in sc]
    # rewriting replaces the old data
    D.write_refer(tmp_path, sc[:3])
    assert len(D.load_refer(tmp_path, "shaperef", "unc", D.EMBEDDED_IMAGE_DIR)[0]) == 3
    assert len(list((tmp_path / D.EMBEDDED_IMAGE_DIR).iterdir())) == 3


def test_layout_pointer_is_relative_and_survives_a_move(tmp_path):
    """The embedded layout's pointer holds no absolute path: a clone or a moved project reads its own copy,
    and the folder's bytes (DVC's hash of it) do not depend on where the project lives."""
    sc = D.generate_shaperef(n_train=4, n_val=2, n_testA=2, n_testB=2, seed=3)
    a, b = tmp_path / "a" / "refer", tmp_path / "b" / "refer"
    D.ReferLayoutDataset(str(a)).save({"scenes": sc})
    D.ReferLayoutDataset(str(b)).save({"scenes": sc})
    assert (a / D.POINTER).read_bytes() == (b / D.POINTER).read_bytes()
    assert str(tmp_path) not in (a / D.POINTER).read_text()
    moved = tmp_path / "moved"
    a.parent.rename(moved)
    pointer = D.ReferLayoutDataset(str(moved / "refer")).load()
    assert pointer["data_root"] == str(moved / "refer") and "inside_layout" not in pointer
    refs = D.load_refer(**pointer)[0]
    assert refs["sentence"].tolist() == [s.sentence for s in sc]
    # a real-data pointer is returned as written
    real = {"data_root": "/data/refer", "dataset": "refcoco", "split_by": "unc", "image_dir": D.COCO_IMAGE_DIR}
    D.ReferLayoutDataset(str(tmp_path / "real")).save({"pointer": real})
    assert D.ReferLayoutDataset(str(tmp_path / "real")).load() == real


def test_write_refer_is_atomic(tmp_path, monkeypatch):
    sc = D.generate_shaperef(n_train=4, n_val=0, n_testA=0, n_testB=0, seed=0)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:  # killed while writing: nothing appears
        mp.setattr(D.pickle, "dump", boom)
        with pytest.raises(KeyboardInterrupt):
            D.write_refer(tmp_path, sc)
    assert not (tmp_path / "shaperef").exists() and not (tmp_path / D.EMBEDDED_IMAGE_DIR).exists()
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(MissingDatasetError):
        D.load_refer(tmp_path, "shaperef", "unc", D.EMBEDDED_IMAGE_DIR)

    D.write_refer(tmp_path, sc[:3])
    with monkeypatch.context() as mp:  # killed while rewriting: the old data stays whole
        mp.setattr(D.pickle, "dump", boom)
        with pytest.raises(KeyboardInterrupt):
            D.write_refer(tmp_path, sc)
    assert len(D.load_refer(tmp_path, "shaperef", "unc", D.EMBEDDED_IMAGE_DIR)[0]) == 3

    real_rename = D.os.rename

    def rename(src, dst):  # killed after the new images are in place, before the new refs
        if Path(dst) == tmp_path / "shaperef" and ".tmp-" in str(src):
            raise KeyboardInterrupt
        return real_rename(src, dst)

    with monkeypatch.context() as mp:
        mp.setattr(D.os, "rename", rename)
        with pytest.raises(KeyboardInterrupt):
            D.write_refer(tmp_path, sc)
    with pytest.raises(MissingDatasetError):  # old refs never describe the new images
        D.load_refer(tmp_path, "shaperef", "unc", D.EMBEDDED_IMAGE_DIR)


# ------------------------------------------------------------------------------------------- errors
def test_missing_files(tmp_path):
    with pytest.raises(MissingDatasetError, match=r"refs\(unc\)\.p.*lichengunc/refer") as e:
        D.load_refer(tmp_path, "refcoco", "unc")
    assert str(tmp_path / "refcoco" / "refs(unc).p") in str(e.value)
    build_fixture(tmp_path)
    (tmp_path / "refcoco" / "instances.json").unlink()
    with pytest.raises(MissingDatasetError, match="instances.json"):
        D.load_refer(tmp_path, "refcoco", "unc")
    build_fixture(tmp_path / "b")
    (tmp_path / "b" / D.COCO_IMAGE_DIR / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(MissingDatasetError, match="COCO_train2014_000000000002.jpg"):
        D.load_refer(tmp_path / "b", "refcoco", "unc")


def test_size_mismatch_names_ann_and_file(tmp_path):
    build_fixture(tmp_path)

    def taller(inst):
        inst["images"][1]["height"] = 50

    _edit_instances(tmp_path, taller)
    with pytest.raises(DataValidationError, match=r"000000000002\.jpg is 48x64.*height 50.*ann\(s\) \[201\]"):
        D.load_refer(tmp_path, "refcoco", "unc")
    refs, anns, images = D.load_refer(tmp_path, "refcoco", "unc", check_images=False)
    with pytest.raises(DataValidationError, match=r"000000000002\.jpg is 48x64.*\[201\]"):
        D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], 16)

    def rle_other_size(inst):
        inst["images"][1]["height"] = H
        inst["annotations"][2]["segmentation"] = {"size": [40, W], "counts": "0"}

    _edit_instances(tmp_path, rle_other_size)
    with pytest.raises(DataValidationError, match=r"annotation 201 .*RLE size \[40, 64\].*\[48, 64\]"):
        D.load_refer(tmp_path, "refcoco", "unc")


def test_corrupt_image_is_named(tmp_path):
    fx = build_fixture(tmp_path)
    bad = fx["image_dir"] / "COCO_train2014_000000000001.jpg"
    bad.write_bytes(b"this is not a jpeg" * 20)
    with pytest.raises(DataValidationError, match="COCO_train2014_000000000001.jpg cannot be"):
        D.load_refer(tmp_path, "refcoco", "unc")
    refs, anns, images = D.load_refer(tmp_path, "refcoco", "unc", check_images=False)
    with pytest.raises(DataValidationError, match="COCO_train2014_000000000001.jpg cannot be decoded"):
        D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], 16)


def test_bad_refs(tmp_path):
    build_fixture(tmp_path)
    with pytest.raises(DataValidationError, match=r"unknown split.*'testD'"):
        D.load_refer(tmp_path, "refcoco", "unc", splits=["train", "testD"])
    with pytest.raises(DataValidationError, match=r"no refs of split\(s\) \['testB'\]"):
        D.load_refer(tmp_path, "refcoco", "unc", splits=["testB"])

    def bogus_split(refs):
        refs[1]["split"] = "holdout"

    _edit_refs(tmp_path, bogus_split)
    with pytest.raises(DataValidationError, match=r"ref 2 has unknown split 'holdout'"):
        D.load_refer(tmp_path, "refcoco", "unc")

    def lost_ann(refs):
        refs[1]["split"] = "val"
        refs[1]["ann_id"] = 999

    _edit_refs(tmp_path, lost_ann)
    with pytest.raises(DataValidationError, match=r"ref 2 points to ann_id 999.*instances\.json"):
        D.load_refer(tmp_path, "refcoco", "unc")

    def lost_image(refs):
        refs[1]["ann_id"] = 102
        refs[1]["image_id"] = 7

    _edit_refs(tmp_path, lost_image)
    with pytest.raises(DataValidationError, match=r"ref 2 points to image_id 7"):
        D.load_refer(tmp_path, "refcoco", "unc")


def test_empty_masks(tmp_path):
    build_fixture(tmp_path)

    def empty_seg(inst):
        inst["annotations"][0]["segmentation"] = []

    _edit_instances(tmp_path, empty_seg)
    with pytest.raises(DataValidationError, match="annotation 101 .*empty segmentation"):
        D.load_refer(tmp_path, "refcoco", "unc")

    def twice(inst):  # the same polygon twice: every pixel is covered twice -> empty after the overlap rule
        inst["annotations"][0]["segmentation"] = [RECT, RECT]

    _edit_instances(tmp_path, twice)
    refs, anns, images = D.load_refer(tmp_path, "refcoco", "unc")
    with pytest.raises(DataValidationError, match=r"annotation 101 .*empty mask"):
        D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], 16)
