"""The salient-sprites generator and the real-format readers (Kinetics-400 list files, SSv2 JSON), on tiny
fixtures written here in those formats (videos as decoded-frame folders: no video decoder is installed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.pipelines.vidtldr import data as D

CFG = {"frames": 8, "size": 32, "object_size": [12, 16], "speed": [1.5, 2.5], "orbit_radius": [4, 7],
       "texture_contrast": [0.15, 0.3], "clutter_contrast": [0.3, 0.45], "distractors": [2, 4],
       "distractor_size": [4, 6], "clutter_distractors": [6, 8], "noise_std": 0.03}


def test_generator_is_seeded_balanced_and_masks_match_pixels():
    seed_of = lambda i, part: 1000 * i + (part == "object")  # noqa: E731
    x, y, m = D.make_split(20, seed_of, CFG, clutter=False)
    x2, y2, m2 = D.make_split(20, seed_of, CFG, clutter=False)
    assert x.shape == (20, 8, 32, 32, 3) and x.dtype == np.uint8 and np.array_equal(x, x2)
    assert np.bincount(y).tolist() == [2] * 10 and np.array_equal(m, m2)
    # object pixels carry the saturated object colour (up to the noise)
    obj = D.sample_object(np.random.default_rng(seed_of(0, "object")), int(y[0]), CFG)
    px = x[0][m[0]].astype(float) / 255
    assert np.abs(px.mean(0) - obj["colour"]).max() < 0.05
    assert m.reshape(20, -1).any(1).all()


def test_swapping_backgrounds_keeps_the_label_and_the_object():
    obj = D.sample_object(np.random.default_rng(1), 7, CFG)
    bg1 = D.sample_background(np.random.default_rng(2), CFG, False)
    bg2 = D.sample_background(np.random.default_rng(3), CFG, True)
    c1, m1 = D.render(obj, bg1, CFG)
    c2, m2 = D.render(obj, bg2, CFG)
    assert obj["label"] == 7 and D.CLASSES[7] == "cross-orbit"
    assert np.array_equal(m1, m2) and not np.array_equal(c1, c2)
    assert len(bg2["distractors"]) >= 6  # the clutter split is harder


def test_token_foreground_matches_the_token_order():
    masks = np.zeros((8, 32, 32), bool)
    masks[2:4, 8:16, 24:32] = True  # tubelet t=1, row 1, column 3
    fg = D.token_foreground(masks, 2, 8)
    assert fg.shape == (64,) and fg.argmax() == 1 * 16 + 1 * 4 + 3 and fg.max() == 1.0 and fg.sum() == 1.0


def _frames(folder, n=6, size=(40, 30), value=0):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), value + 10 * i, np.uint8)).save(folder / f"{i:05d}.jpg")


def test_kinetics_list_and_frame_folders(tmp_path):
    root = tmp_path / "k400"
    _frames(root / "videos" / "abc", value=0)
    _frames(root / "videos" / "def", value=100)
    (root / "val.csv").write_text("abc.mp4 3\ndef.mp4 399\n")
    x, y, rec = D.read_kinetics(root, "val", num_frames=4, size=16)
    assert x.shape == (2, 4, 16, 16, 3) and x.dtype == np.uint8 and y.tolist() == [3, 399]
    assert rec[0]["sample_id"] == "k400:abc.mp4" and rec[1]["source"].endswith("def.mp4")
    assert x[0, 0].mean() < x[0, -1].mean()  # frames sampled in order from the middle of segments


def test_kinetics_errors_name_the_problem(tmp_path):
    with pytest.raises(MissingDatasetError, match="kinetics"):
        D.read_kinetics(tmp_path / "missing", "val", 4, 16)
    root = tmp_path / "k400"
    (root / "videos").mkdir(parents=True)
    (root / "val.csv").write_text("abc.mp4 three\n")
    with pytest.raises(ValueError, match="valid integer label"):
        D.read_kinetics(root, "val", 4, 16)
    (root / "val.csv").write_text("abc.mp4 1\n")
    (root / "videos" / "abc.mp4").write_bytes(b"\x00" * 64)  # a video file, but no decoder here
    with pytest.raises(ValueError, match="ffmpeg"):
        D.read_kinetics(root, "val", 4, 16)


def test_ssv2_json_labels_and_corrupt_frames(tmp_path):
    root = tmp_path / "ssv2"
    _frames(root / "videos" / "12", size=(48, 32))
    (root / "labels.json").write_text(json.dumps({"Pushing something from left to right": "93",
                                                  "Holding something": "16"}))
    items = [{"id": "12", "label": "pushing a cup from left to right",
              "template": "Pushing [something] from left to right", "placeholders": ["a cup"]}]
    (root / "validation.json").write_text(json.dumps(items))
    x, y, rec = D.read_ssv2(root, "validation", num_frames=4, size=16)
    assert x.shape == (1, 4, 16, 16, 3) and y.tolist() == [93] and rec[0]["sample_id"] == "ssv2:12.webm"
    bad = [{"id": "12", "template": "Juggling [something]"}]
    (root / "validation.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown label"):
        D.read_ssv2(root, "validation", 4, 16)
    (root / "validation.json").write_text(json.dumps(items))
    (root / "videos" / "12" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="12"):
        D.read_ssv2(root, "validation", 4, 16)
    with pytest.raises(MissingDatasetError, match="qualcomm"):
        D.read_ssv2(tmp_path / "nope", "validation", 4, 16)


def test_ingest_goes_through_core_dispatch(tmp_path):
    from cvpr24.pipelines.vidtldr import nodes

    with pytest.raises(MissingDatasetError, match="vidtldr.data.real"):
        nodes.ingest({"source": "real", "real": {}, "frames": 4, "size": 16}, {"num_classes": 10}, {"seed": 0})
    real = {"dataset": "kinetics400", "root": str(tmp_path / "k400"), "splits": {"test": "val"}}
    with pytest.raises(MissingDatasetError, match="Kinetics-400"):
        nodes.ingest({"source": "real", "real": real, "frames": 4, "size": 16}, {"num_classes": 10}, {"seed": 0})
    with pytest.raises(ValueError, match="embedded' or 'real'"):
        nodes.ingest({"source": "web"}, {"num_classes": 10}, {"seed": 0})
