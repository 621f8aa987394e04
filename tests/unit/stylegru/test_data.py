"""StyleGRU data: the embedded layout writer (round trip, atomic), the FF++ / Celeb-DF / DFD / FaceShifter /
DeeperForensics readers on tiny fixtures in the real formats, frame readers (npy, mp4, PNG folders), clip
splitting with ping-pong padding, the restricted latent-pickle reader, and the clear errors bad input gets."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.stylegru import data as D


# ------------------------------------------------------------------------------------------- helpers
def _frames(seed: int, t: int = 4, s: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, s, s, 3), dtype=np.uint8)


def _rec(dataset, method, name, label, split, seed, target="", source=""):
    return {"dataset": dataset, "method": method, "name": name, "label": label, "split": split,
            "target": target or name, "source": source, "frames": _frames(seed),
            "latents": np.random.default_rng(seed).normal(size=(4, 9, 8)).astype(np.float32)}


def tiny_synth(seed: int = 0) -> dict:
    """3 FF++ pairs (one per split), reals + Deepfakes/FaceSwap fakes, and a 2-video Celeb-DF-like set."""
    splits = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}
    videos, k = [], seed * 1000
    for split, pairs in splits.items():
        for a, b in pairs:
            for i in (a, b):
                videos.append(_rec("ffpp", "Origin", i, 0, split, k))
                k += 1
            for m in ("Deepfakes", "FaceSwap"):
                for t, s in ((a, b), (b, a)):
                    videos.append(_rec("ffpp", m, f"{t}_{s}", 1, split, k, t, s))
                    k += 1
    videos.append(_rec("cdf", "Origin", "r000", 0, "test", k))
    videos.append(_rec("cdf", "X-CDF", "f000_001", 1, "test", k + 1, "f000", "001"))
    return {"videos": videos, "splits": splits}


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def write_ffpp(root, ids=("071", "054", "003", "000", "010", "005"), methods=("Deepfakes",), comp="c23",
               form="frames"):
    """Official FF++ layout: split JSONs with one pair each, every video as frames/<name>.npy."""
    pairs = [list(ids[i:i + 2]) for i in range(0, len(ids), 2)]
    (root / "splits").mkdir(parents=True)
    for split, pair in zip(("train", "val", "test"), pairs, strict=True):
        (root / "splits" / f"{split}.json").write_text(json.dumps([pair]))
    for k, i in enumerate(ids):
        _save(root / "original_sequences" / "youtube" / comp / form / f"{i}.npy", _frames(k))
    for m in methods:
        for a, b in pairs:
            for t, s in ((a, b), (b, a)):
                _save(root / "manipulated_sequences" / m / comp / form / f"{t}_{s}.npy", _frames(7))
    return pairs


# ------------------------------------------------------------------------------- embedded layout
def test_write_layout_round_trip(tmp_path):
    synth = tiny_synth()
    root = tmp_path / "layout"
    index = D.write_layout(root, synth)
    again = D.read_index(root)
    pd.testing.assert_frame_equal(index, again)
    assert list(again.columns) == D.INDEX_COLUMNS
    assert len(again) == len(synth["videos"])
    by_id = again.set_index("video_id")
    truth = D.read_truth(root)
    for rec in synth["videos"]:
        vid = f"{rec['dataset']}/{rec['method']}/{rec['name']}"
        row = by_id.loc[vid]
        assert (row["label"], row["split"], row["n_frames"]) == (rec["label"], rec["split"], 4)
        assert (row["target"], row["source"]) == (rec["target"], rec["source"])
        assert not os.path.isabs(row["path"])
        assert D.read_frames(D.resolve(root, row["path"])).tobytes() == rec["frames"].tobytes()
        np.testing.assert_array_equal(truth[vid], rec["latents"])
    assert by_id.loc["ffpp/Origin/000", "path"] == \
        "FaceForensics++/original_sequences/youtube/raw/frames/000.npy"
    assert by_id.loc["ffpp/Deepfakes/001_000", "path"] == \
        "FaceForensics++/manipulated_sequences/Deepfakes/raw/frames/001_000.npy"
    # Celeb-DF list format: 1 = real in the file
    lines = (root / "Celeb-DF-v2-synth" / D.TESTLIST).read_text().splitlines()
    assert lines == ["1 real/r000.npy", "0 fake/f000_001.npy"]
    assert json.loads((root / "FaceForensics++/splits/val.json").read_text()) == [["002", "003"]]
    D.validate_index(again, clip_size=4, root=root)
    with pytest.raises(DataValidationError, match="fewer than 5 frames"):
        D.validate_index(again, clip_size=5, root=root)
    # deterministic bytes: writing again gives the same files
    root2 = tmp_path / "layout2"
    D.write_layout(root2, tiny_synth())
    for rel in again["path"]:
        assert (root / rel).read_bytes() == (root2 / rel).read_bytes()


def test_write_layout_is_atomic(tmp_path, monkeypatch):
    root = tmp_path / "layout"
    D.write_layout(root, tiny_synth(0))
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_save, calls = np.save, {"n": 0}

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        D.write_layout(root, tiny_synth(1))
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]  # no temporary folder left
    calls["n"] = 0
    with pytest.raises(OSError):
        D.write_layout(tmp_path / "fresh", tiny_synth(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]


def test_write_layout_rejects_inconsistent_synth(tmp_path):
    synth = tiny_synth()
    synth["videos"] = [v for v in synth["videos"] if v["name"] != "005"]  # a split pair without its real
    with pytest.raises(MissingDatasetError, match="005"):
        D.write_layout(tmp_path / "a", synth)
    synth = tiny_synth()
    synth["videos"][0]["frames"] = synth["videos"][0]["frames"].astype(np.float32)
    with pytest.raises(DataValidationError, match="ffpp/Origin/000.*uint8"):
        D.write_layout(tmp_path / "b", synth)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_layout_dataset_embedded_and_real(tmp_path):
    ds = D.SynthTalkLayoutDataset(str(tmp_path / "layout"))
    assert not ds.exists()
    ds.save(tiny_synth())
    out = ds.load()
    assert out["root"] == str(tmp_path / "layout") and len(out["index"]) == 20
    # real data: only the index is written, absolute paths kept
    ffpp = tmp_path / "ffpp"
    write_ffpp(ffpp)
    real_index = D.index_ffpp(ffpp, methods=("Deepfakes",))
    real_ds = D.SynthTalkLayoutDataset(str(tmp_path / "real"))
    real_ds.save({"index": real_index})
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["index.parquet"]
    loaded = real_ds.load()["index"]
    pd.testing.assert_frame_equal(loaded, real_index)
    assert D.resolve(tmp_path / "real", loaded["path"][0]) == ffpp / loaded["path"][0]
    D.validate_index(loaded, clip_size=4)
    rel = real_index.assign(path="x/y.npy")
    with pytest.raises(DatasetError, match="absolute") as err:  # Kedro wraps errors raised in save
        real_ds.save({"index": rel})
    assert isinstance(err.value.__cause__, DataValidationError)
    with pytest.raises(MissingDatasetError, match="index.parquet"):
        D.read_index(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------- FF++
def test_index_ffpp_pairs(tmp_path):
    write_ffpp(tmp_path)
    idx = D.index_ffpp(tmp_path, methods=("Deepfakes",), compression="c23")
    tr = idx[idx["split"] == "train"]
    assert set(tr[tr["label"] == 0]["video_id"]) == {"ffpp/Origin/071", "ffpp/Origin/054"}
    fakes = tr[tr["label"] == 1]
    assert set(fakes["video_id"]) == {"ffpp/Deepfakes/071_054", "ffpp/Deepfakes/054_071"}
    row = fakes.set_index("video_id").loc["ffpp/Deepfakes/054_071"]
    assert (row["target"], row["source"], row["n_frames"]) == ("054", "071", 4)
    assert row["path"].endswith("manipulated_sequences/Deepfakes/c23/frames/054_071.npy")
    assert idx.groupby("split").size().to_dict() == {"test": 4, "train": 4, "val": 4}
    D.validate_index(idx, clip_size=4)


def test_index_ffpp_errors(tmp_path):
    write_ffpp(tmp_path)
    (tmp_path / "splits" / "val.json").unlink()
    with pytest.raises(MissingDatasetError, match=r"val\.json"):
        D.index_ffpp(tmp_path, methods=("Deepfakes",))
    (tmp_path / "splits" / "val.json").write_text(json.dumps([["003", "000"]]))
    (tmp_path / "manipulated_sequences/Deepfakes/c23/frames/000_003.npy").unlink()
    with pytest.raises(MissingDatasetError, match=r"000_003") as err:
        D.index_ffpp(tmp_path, methods=("Deepfakes",))
    assert "FaceForensics" in str(err.value)  # the fix names where to get it
    (tmp_path / "splits" / "val.json").write_text(json.dumps([["071", "000"]]))
    with pytest.raises(DataValidationError, match="disjoint"):
        D.index_ffpp(tmp_path, methods=())
    (tmp_path / "splits" / "val.json").write_text(json.dumps([[3, 0]]))
    with pytest.raises(DataValidationError, match="string pairs"):
        D.index_ffpp(tmp_path, methods=())


def test_index_ffpp_crop_folders_take_priority(tmp_path):
    from PIL import Image

    write_ffpp(tmp_path)
    crop = tmp_path / "original_sequences/youtube/c23/crop_images/071"
    crop.mkdir(parents=True)
    for j in range(5):
        Image.fromarray(_frames(j, t=1)[0]).save(crop / f"00_{j:04d}.png")
    idx = D.index_ffpp(tmp_path, methods=()).set_index("video_id")
    assert idx.loc["ffpp/Origin/071", "path"] == str(crop)
    assert idx.loc["ffpp/Origin/071", "n_frames"] == 5
    idx = D.index_ffpp(tmp_path, methods=(), form="frames").set_index("video_id")
    assert idx.loc["ffpp/Origin/071", "path"].endswith("frames/071.npy")


# ------------------------------------------------------------------------------------ cross sets
def test_index_testlist_label_inversion(tmp_path):
    for rel in ("Celeb-real/id0_0000", "YouTube-real/00170", "Celeb-synthesis/id0_id1_0000"):
        _save(tmp_path / f"{rel}.npy", _frames(1))
    (tmp_path / D.TESTLIST).write_text(
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n\n1 Celeb-real/id0_0000.mp4")
    idx = D.index_testlist(tmp_path).set_index("video_id")
    assert idx["label"].to_dict() == {"cdf/Origin/00170": 0, "cdf/Celeb-synthesis/id0_id1_0000": 1,
                                      "cdf/Origin/id0_0000": 0}
    assert set(idx["split"]) == {"test"}
    (tmp_path / D.TESTLIST).write_text("1 YouTube-real/00170.mp4\nreal Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DataValidationError, match=r"List_of_testing_videos.txt:2"):
        D.index_testlist(tmp_path)
    (tmp_path / D.TESTLIST).write_text("1 YouTube-real/missing.mp4\n")
    with pytest.raises(MissingDatasetError, match="missing.mp4"):
        D.index_testlist(tmp_path)


def test_index_dfd(tmp_path):
    _save(tmp_path / "original_sequences/actors/c23/frames/01__walking.npy", _frames(0))
    _save(tmp_path / "original_sequences/actors/c23/frames/02__talking.npy", _frames(1))
    _save(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/frames/01_02__walking__ABCD1234.npy",
          _frames(2))
    idx = D.index_dfd(tmp_path, "c23").set_index("video_id")
    assert idx["label"].to_dict() == {"dfd/Origin/01__walking": 0, "dfd/Origin/02__talking": 0,
                                      "dfd/DeepFakeDetection/01_02__walking__ABCD1234": 1}
    fake = idx.loc["dfd/DeepFakeDetection/01_02__walking__ABCD1234"]
    assert (fake["target"], fake["source"], fake["split"]) == ("01", "02", "test")
    with pytest.raises(MissingDatasetError, match="actors/c40"):
        D.index_dfd(tmp_path, "c40")


def test_index_faceshifter_and_deeperforensics(tmp_path):
    ffpp = tmp_path / "ffpp"
    write_ffpp(ffpp, methods=("FaceShifter",))
    fsh = D.index_faceshifter(ffpp, "c23")
    assert set(fsh["video_id"]) == {"fsh/Origin/010", "fsh/Origin/005", "fsh/FaceShifter/010_005",
                                    "fsh/FaceShifter/005_010"}
    assert set(fsh["split"]) == {"test"}
    dfo = tmp_path / "dfo" / "manipulated_videos" / "end_to_end"
    _save(dfo / "010_M101.npy", _frames(3))  # target 010 is an FF++ test id
    _save(dfo / "071_W010.npy", _frames(4))  # train id: excluded
    (dfo / "readme.txt").write_text("not a video")
    idx = D.index_deeperforensics(tmp_path / "dfo", ffpp, "c23")
    assert set(idx["video_id"]) == {"dfo/Origin/010", "dfo/Origin/005", "dfo/DeeperForensics/010_M101"}
    row = idx.set_index("video_id").loc["dfo/DeeperForensics/010_M101"]
    assert (row["label"], row["target"], row["source"]) == (1, "010", "M101")
    D.validate_index(idx, clip_size=4)
    (dfo / "010_M101.npy").unlink()
    with pytest.raises(DataValidationError, match="test id"):
        D.index_deeperforensics(tmp_path / "dfo", ffpp, "c23")


# ----------------------------------------------------------------------------------- frame readers
def test_mp4_round_trip(tmp_path):
    import imageio_ffmpeg as iio  # pinned in pyproject.toml: a missing package is a failure, not a skip
    frames = np.stack([np.full((16, 16, 3), (20 * k + 30, 120, 200 - 20 * k), np.uint8) for k in range(6)])
    path = tmp_path / "v.mp4"
    writer = iio.write_frames(str(path), (16, 16), fps=25, macro_block_size=1, output_params=["-crf", "10"])
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    back = D.read_frames(path)
    assert back.shape == (6, 16, 16, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6
    assert D.count_frames(path) == 6
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataValidationError, match="v.mp4"):
        D.read_frames(path)


def test_png_folder_numeric_order_and_tracks(tmp_path):
    from PIL import Image

    folder = tmp_path / "crop"
    folder.mkdir()
    for j in (0, 2, 9, 10, 11):  # "10" sorts before "9" as text
        Image.fromarray(np.full((6, 6, 3), j, np.uint8)).save(folder / f"00_{j}.png")
    for j in range(3):
        Image.fromarray(np.full((6, 6, 3), 100 + j, np.uint8)).save(folder / f"01_{j:04d}.png")
    frames = D.read_frames(folder)  # the longest track (00)
    assert frames[:, 0, 0, 0].tolist() == [0, 2, 9, 10, 11]
    assert D.read_frames(folder, track=1)[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert D.count_frames(folder) == 5
    bad = folder / "00_0012.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataValidationError, match="00_0012.png"):
        D.read_frames(folder)


def test_npy_frame_errors(tmp_path):
    cases = {"corrupt.npy": None, "float.npy": np.zeros((2, 4, 4, 3), np.float32),
             "nan.npy": np.full((2, 4, 4, 3), np.nan, np.float32), "gray.npy": np.zeros((2, 4, 4), np.uint8)}
    for name, arr in cases.items():
        if arr is None:
            (tmp_path / name).write_bytes(b"\x93NUMPY garbage")
        else:
            np.save(tmp_path / name, arr)
    for name, msg in (("corrupt.npy", "not a readable"), ("float.npy", "uint8"), ("nan.npy", "NaN"),
                      ("gray.npy", r"\(T, H, W, 3\)")):
        with pytest.raises(DataValidationError, match=rf"{name}.*{msg}"):
            D.read_frames(tmp_path / name)
    with pytest.raises(MissingDatasetError):
        D.read_frames(tmp_path / "absent.npy")


# ----------------------------------------------------------------------------------------- clips
def test_clips_of():
    assert D.clips_of(70, 32) == [(0, 32), (32, 64)]
    assert D.clips_of(70, 32, max_clips=1) == [(0, 32)]
    assert D.clips_of(32, 32) == [(0, 32)]
    with pytest.raises(DataValidationError, match="ffpp/Origin/071"):
        D.clips_of(20, 32, name="ffpp/Origin/071")
    assert D.clips_of(20, 32, pad_short="pingpong") == [(0, 32)]
    with pytest.raises(DataValidationError, match="too short"):
        D.clips_of(15, 32, pad_short="pingpong")
    frames = np.arange(20)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    clip = D.take_clip(frames, 0, 32)
    assert clip.shape == (32, 2, 2, 3)
    assert clip[:, 0, 0, 0].tolist() == list(range(20)) + list(range(18, 6, -1))
    assert D.pingpong_indices(3, 7).tolist() == [0, 1, 2, 1, 0, 1, 2]
    assert D.take_clip(frames, 4, 8)[:, 0, 0, 0].tolist() == [4, 5, 6, 7]


# ---------------------------------------------------------------------------------- latent pickles
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_read_latent_clips_numeric_order(tmp_path):
    clips = [np.full((32, 12), k, np.float32) for k in range(11)]
    D.write_latent_clips(tmp_path, "Origin", "071", clips)
    out = D.read_latent_clips(tmp_path, "Origin", "071")
    assert [float(c[0, 0]) for c in out] == list(range(11))
    # other pickle protocols of plain arrays are accepted
    for proto in (2, 5):
        (tmp_path / "Origin/071/clipnum_3.p").write_bytes(pickle.dumps(np.ones((32, 12)), protocol=proto))
        assert D.read_latent_clips(tmp_path, "Origin", "071")[3].shape == (32, 12)
    (tmp_path / "Origin/071/clipnum_4.p").unlink()
    with pytest.raises(DataValidationError, match="clipnum_4.p is missing"):
        D.read_latent_clips(tmp_path, "Origin", "071")
    with pytest.raises(MissingDatasetError, match="Deepfakes"):
        D.read_latent_clips(tmp_path, "Deepfakes", "071_054")


def test_latent_pickle_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "Origin" / "000"
    folder.mkdir(parents=True)
    (folder / "clipnum_0.p").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DataValidationError, match=r"clipnum_0.p.*(refused|not allowed)"):
        D.read_latent_clips(tmp_path, "Origin", "000")
    assert not (tmp_path / "pwned.txt").exists()
    (folder / "clipnum_0.p").write_bytes(pickle.dumps({"latents": [1.0, 2.0]}))
    with pytest.raises(DataValidationError, match="holds dict"):
        D.read_latent_clips(tmp_path, "Origin", "000")
    (folder / "clipnum_0.p").write_bytes(pickle.dumps(np.full((4, 3), np.nan, np.float32)))
    with pytest.raises(DataValidationError, match="NaN"):
        D.read_latent_clips(tmp_path, "Origin", "000")


# -------------------------------------------------------------------------------- index validation
def test_validate_index_errors(tmp_path):
    write_ffpp(tmp_path)
    idx = D.index_ffpp(tmp_path, methods=("Deepfakes",))
    D.validate_index(idx, clip_size=4)
    no_fake = idx[~((idx["split"] == "val") & (idx["label"] == 1))]
    with pytest.raises(DataValidationError, match="'val' has no fake"):
        D.validate_index(no_fake, clip_size=4)
    with pytest.raises(DataValidationError, match="unknown method 'Magic'"):
        D.validate_index(idx.assign(method="Magic"), clip_size=4)
    with pytest.raises(DataValidationError, match="label 2"):
        D.validate_index(idx.assign(label=2), clip_size=4)
    gone = tmp_path / "original_sequences/youtube/c23/frames/071.npy"
    gone.unlink()
    with pytest.raises(MissingDatasetError, match="071.npy"):
        D.validate_index(idx, clip_size=4)
    D.validate_index(idx.drop(index=idx.index[idx["path"] == str(gone)]), clip_size=3, min_frames=3)
