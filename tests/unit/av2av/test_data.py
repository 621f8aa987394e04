"""Tests of the AV2AV on-disk layer (real AV-HuBERT/MuAViC layout + embedded .npy corpus) on the tiny fixture."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av import data as D


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("av2av_fixture")
    D.write_fixture(folder)
    return folder


@pytest.fixture
def fx(fixture_dir, tmp_path):
    """A private copy of the fixture that a test may break."""
    dst = tmp_path / "fx"
    shutil.copytree(fixture_dir, dst)
    # the root line is absolute: point it at the copy
    tsv = dst / "test.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([str(dst)] + lines[1:]) + "\n")
    return dst


# ----------------------------------------------------------------------------------------- manifest
def test_fixture_layout_is_the_real_format(fixture_dir):
    names = sorted(p.name for p in (fixture_dir / "spk0").iterdir())
    for stem in ("00001", "00002"):
        for ext in (".mp4", ".lip.mp4", ".bbox.pkl", ".wav", ".txt"):
            assert stem + ext in names
    for f in ("test.tsv", "test.en", "test.es", "test.km"):
        assert (fixture_dir / f).exists()
    faces = D.read_video(fixture_dir / "spk0/00001.mp4")
    lip = D.read_video(fixture_dir / "spk0/00001.lip.mp4", gray=True)
    assert faces.shape == (25, 160, 160, 3) and lip.shape == (25, 96, 96)
    assert D.read_audio(fixture_dir / "spk0/00001.wav").shape == (16000,)
    with open(fixture_dir / "spk0/00001.bbox.pkl", "rb") as f:
        raw = pickle.load(f)
    assert len(raw) == 25 and sum(b is None for b in raw) == 1


def test_tsv_root_line_skipped(fixture_dir):
    root, df = D.read_manifest(fixture_dir / "test.tsv")
    assert root == str(fixture_dir.resolve())
    assert list(df.columns) == ["id", "video", "audio", "n_frames", "n_samples"]
    assert df["id"].tolist() == ["spk0/00001", "spk0/00002"]  # the root line is not a row
    assert df["n_frames"].tolist() == [25, 25] and df["n_samples"].tolist() == [16000, 16000]


def test_manifest_errors_name_file_and_line(tmp_path):
    tsv = tmp_path / "test.tsv"
    tsv.write_text("a\ta.mp4\ta.wav\t25\t16000\n")  # root line forgotten
    with pytest.raises(DataValidationError, match=r"test\.tsv:1.*root"):
        D.read_manifest(tsv)
    tsv.write_text("/data\na\ta.mp4\ta.wav\t25\n")
    with pytest.raises(DataValidationError, match=r"test\.tsv:2: expected 5"):
        D.read_manifest(tsv)
    tsv.write_text("/data\na\ta.mp4\ta.wav\t25\t16000\nb\tb.mp4\tb.wav\tx\t16000\n")
    with pytest.raises(DataValidationError, match=r"test\.tsv:3"):
        D.read_manifest(tsv)
    with pytest.raises(MissingDatasetError, match="nope.tsv"):
        D.read_manifest(tmp_path / "nope.tsv")


def test_manifest_round_trip_relative_root(tmp_path):
    rows = [{"id": "u1", "video": "v/u1.npy", "audio": "a/u1.wav", "n_frames": 3, "n_samples": 1920}]
    tsv = D.write_manifest(tmp_path / "c", "train", rows, root_line=".")
    assert tsv.read_text().splitlines()[0] == "."
    root, df = D.read_manifest(tsv)
    assert root == str(tmp_path / "c" / ".") or root == str(tmp_path / "c")
    assert df.to_dict("records") == rows


# ------------------------------------------------------------------------------------ labels, units
def test_labels_aligned_by_row(fixture_dir):
    utts = D.load_split(fixture_dir, "test", ["en", "es"])
    by_id = {u["id"]: u["text"] for u in utts}
    assert by_id["spk0/00001"] == {"en": "the cat eats fish", "es": "el gato come pescado"}
    assert by_id["spk0/00002"] == {"en": "my friend reads a book today", "es": "mi amigo lee un libro hoy"}
    km = D.read_units(fixture_dir / "test.km", 2)
    assert all(np.array_equal(u["units"], k) for u, k in zip(utts, km, strict=True))


def test_label_count_mismatch_names_both_files(fx):
    (fx / "test.es").write_text("el gato come pescado\n")
    with pytest.raises(DataValidationError, match=r"test\.es.*1 lines.*test\.tsv.*2 rows"):
        D.load_split(fx, "test", ["en", "es"])


def test_labels_keep_empty_lines_and_units_validate(tmp_path):
    D.write_labels(tmp_path / "x.en", ["a", "", "c"])
    assert D.read_labels(tmp_path / "x.en", 3) == ["a", "", "c"]
    D.write_units(tmp_path / "x.km", [[1, 2, 3], np.array([7, 7])])
    u = D.read_units(tmp_path / "x.km")
    assert [a.tolist() for a in u] == [[1, 2, 3], [7, 7]] and u[0].dtype == np.int64
    with pytest.raises(DataValidationError, match=r"x\.km:1.*\[0, 3\)"):
        D.read_units(tmp_path / "x.km", n_units=3)
    (tmp_path / "bad.km").write_text("1 2 x\n")
    with pytest.raises(DataValidationError, match=r"bad\.km:1"):
        D.read_units(tmp_path / "bad.km")


def test_unit_length_checked_against_frames(fx):
    lines = (fx / "test.km").read_text().splitlines()
    (fx / "test.km").write_text(lines[0] + "\n" + " ".join(lines[1].split()[:20]) + "\n")
    with pytest.raises(DataValidationError, match=r"spk0/00002.*20 units"):
        D.load_split(fx, "test", ["en"])
    assert len(D.load_split(fx, "test", ["en"], unit_hz=None)[1]["units"]) == 20  # de-duplicated units
    assert "units" not in D.load_split(fx, "test", ["en"], units=False)[0]


def test_lrs3_text(fixture_dir, tmp_path):
    assert D.read_lrs3_text(fixture_dir / "spk0/00001.txt") == "THE CAT EATS FISH"
    (tmp_path / "bad.txt").write_text("THE CAT\n")
    with pytest.raises(DataValidationError, match="bad.txt.*Text:"):
        D.read_lrs3_text(tmp_path / "bad.txt")


# -------------------------------------------------------------------------------------------- bboxes
def test_bbox_none_filled_forward(fixture_dir, tmp_path):
    with open(fixture_dir / "spk0/00001.bbox.pkl", "rb") as f:
        raw = pickle.load(f)
    i = raw.index(None)
    boxes = D.read_bboxes(fixture_dir / "spk0/00001.bbox.pkl")
    assert boxes.shape == (25, 4) and boxes.dtype == np.float32
    assert np.array_equal(boxes[i], boxes[i - 1]) and not np.array_equal(boxes[i], raw[i + 1])
    D.write_bboxes(tmp_path / "b.pkl", [None, None, [1, 2, 3, 4], None, [5, 6, 7, 8]])
    assert D.read_bboxes(tmp_path / "b.pkl").tolist() == [[1, 2, 3, 4]] * 4 + [[5, 6, 7, 8]]
    D.write_bboxes(tmp_path / "n.pkl", [None, None])
    with pytest.raises(DataValidationError, match=r"n\.pkl.*None"):
        D.read_bboxes(tmp_path / "n.pkl")
    D.write_bboxes(tmp_path / "w.pkl", [[5, 2, 3, 4]])
    with pytest.raises(DataValidationError, match=r"w\.pkl: box 0"):
        D.read_bboxes(tmp_path / "w.pkl")


# --------------------------------------------------------------------------------------------- audio
def test_wrong_sample_rate_names_file_rate_and_fix(tmp_path):
    D.write_audio(tmp_path / "x22.wav", np.zeros(2205, np.float32), sr=22050)
    with pytest.raises(DataValidationError, match=r"x22\.wav.*22050 Hz.*16000.*ffmpeg -i .* -ar 16000 -ac 1"):
        D.read_audio(tmp_path / "x22.wav")


def test_stereo_mixed_down_or_refused(tmp_path):
    left = np.full(640, 0.5, np.float32)
    D.write_audio(tmp_path / "st.wav", np.stack([left, -0.25 * np.ones(640, np.float32)], 1))
    mono = D.read_audio(tmp_path / "st.wav")
    assert mono.shape == (640,) and abs(float(mono.mean()) - 0.125) < 1e-3
    with pytest.raises(DataValidationError, match=r"st\.wav.*2 channels"):
        D.read_audio(tmp_path / "st.wav", stereo="error")


def test_audio_int16_values(tmp_path):
    D.write_audio(tmp_path / "a.wav", np.array([0, 1000, -32768, 32767], np.int16))
    assert D.read_audio(tmp_path / "a.wav", dtype="int16").tolist() == [0, 1000, -32768, 32767]
    f = D.read_audio(tmp_path / "a.wav")
    assert f.dtype == np.float32 and abs(f[1] - 1000 / 32768) < 1e-6


# --------------------------------------------------------------------------------------- length check
def test_check_utterance_length_mismatch():
    D.check_utterance(16000 + 600, 25, name="u")  # < 1 frame apart: fine
    D.check_utterance(np.zeros(16000 - 640, np.float32), np.zeros((25, 4, 4), np.uint8), name="u")
    with pytest.raises(DataValidationError, match=r"spk9/00003.*25 frames.*ffmpeg"):
        D.check_utterance(np.zeros(16000 + 3 * 640), np.zeros((25, 4, 4)), name="spk9/00003")
    with pytest.raises(DataValidationError, match="u"):
        D.check_utterance(16000, 27, tol_frames=1, name="u")


def test_load_split_rejects_length_mismatch(fx):
    D.write_audio(fx / "spk0/00002.wav", np.zeros(24000, np.float32))  # 1.5 s audio vs 1 s video
    with pytest.raises(DataValidationError, match=r"(?s)nothing was loaded.*spk0/00002.*1\.500 s"):
        D.load_split(fx, "test", ["en"])


def test_load_split_aligns_streams_within_tolerance(fx):
    D.write_audio(fx / "spk0/00001.wav", np.full(16000 + 300, 0.1, np.float32))
    utts = D.load_split(fx, "test", ["en"])
    for u in utts:
        t = len(u["lip"])
        assert t == 25 and u["audio"].shape == (640 * t,) and u["faces"].shape[0] == t
        assert u["bboxes"].shape == (t, 4)


# ------------------------------------------------------------------------------ language, missing files
def test_unknown_language_names_known_ones(fixture_dir):
    assert D.check_language("es") == "es"
    with pytest.raises(ValueError, match="'de'.*en, es, fr, it, pt"):
        D.check_language("de")
    with pytest.raises(ValueError, match="'de'.*en, es, fr, it, pt"):
        D.load_split(fixture_dir, "test", ["en", "de"])


def test_missing_files_named(fx):
    (fx / "spk0/00002.lip.mp4").unlink()
    with pytest.raises(MissingDatasetError, match=r"00002\.lip\.mp4.*preprocessing"):
        D.load_split(fx, "test", ["en"])
    with pytest.raises(MissingDatasetError, match=r"test\.fr"):
        D.load_split(fx, "test", ["fr"])
    with pytest.raises(FileNotFoundError, match=r"valid\.tsv"):
        D.load_split(fx, "valid", ["en"])


def test_corrupt_video_named(fx):
    p = fx / "spk0/00001.mp4"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataValidationError, match=r"00001\.mp4"):
        D.load_split(fx, "test", ["en"])


# --------------------------------------------------------------------------------------------- video
def test_mp4_round_trip_frame_count(tmp_path):
    rgb = np.stack([np.full((32, 48, 3), (10 * k, 100, 250 - 10 * k), np.uint8) for k in range(25)])
    D.write_video(tmp_path / "v.mp4", rgb)
    back = D.read_video(tmp_path / "v.mp4")
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 6
    gray = np.stack([np.full((96, 96), 8 * k, np.uint8) for k in range(25)])
    D.write_video(tmp_path / "g.lip.mp4", gray)
    g = D.read_video(tmp_path / "g.lip.mp4", gray=True)
    assert g.shape == (25, 96, 96) and np.abs(g.astype(int) - gray.astype(int)).mean() < 4


def test_read_lip_resizes_96_crop(fixture_dir):
    lip96 = D.read_video(fixture_dir / "spk0/00001.lip.mp4", gray=True)
    lip = D.read_lip(fixture_dir / "spk0/00001.lip.mp4")
    assert lip.shape == (25, 32, 32) and lip.dtype == np.uint8
    # the mouth opening (dark rows) is preserved by the resize: fraction of dark pixels matches
    assert abs((lip < 100).mean() - (lip96 < 100).mean()) < 0.03
    assert D.read_lip(fixture_dir / "spk0/00001.lip.mp4", size=96).shape == (25, 96, 96)


def test_embedded_npy_corpus(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "corpus"
    (src / "u").mkdir(parents=True)
    rows, texts, units, ref = [], {"en": [], "fr": []}, [], {}
    for k, t in enumerate((5, 8)):
        uid = f"u/{k}"
        faces = rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8)
        lip = rng.integers(0, 256, (t, 32, 32), dtype=np.uint8)
        audio = (rng.standard_normal(640 * t) * 0.1).astype(np.float32)
        D.write_video(src / f"{uid}.npy", faces)
        D.write_video(src / f"{uid}.lip.npy", lip)
        D.write_bboxes(src / f"{uid}.bbox.pkl", [[0, 0, 64, 64]] * t)
        D.write_audio(src / f"{uid}.wav", audio)
        rows.append({"id": uid, "video": f"{uid}.npy", "audio": f"{uid}.wav", "n_frames": t,
                     "n_samples": 640 * t})
        texts["en"].append(f"sentence {k}")
        texts["fr"].append(f"phrase {k}")
        units.append(rng.integers(0, 100, 2 * t))
        ref[uid] = (faces, lip, audio)
    D.write_manifest(src, "train", rows, root_line=".")
    for lang, lines in texts.items():
        D.write_labels(src / f"train.{lang}", lines)
    D.write_units(src / "train.km", units)
    moved = tmp_path / "moved"
    shutil.move(src, moved)  # relative root: the corpus can move
    utts = D.load_split(moved / "train.tsv", "train", ["en", "fr"], n_units=100)
    assert [u["id"] for u in utts] == ["u/0", "u/1"]
    for u, km in zip(utts, units, strict=True):
        faces, lip, audio = ref[u["id"]]
        assert np.array_equal(u["faces"], faces) and np.array_equal(u["lip"], lip)  # exact: no codec
        assert np.abs(u["audio"] - audio).max() < 1e-4 and u["audio"].shape == audio.shape
        assert np.array_equal(u["units"], km)
    assert utts[1]["text"] == {"en": "sentence 1", "fr": "phrase 1"}


def test_lip_only_manifest_without_faces(fx):
    """AV-HuBERT/MuAViC style: the tsv points at the lip mp4; faces are optional then."""
    tsv = fx / "test.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([lines[0]] + [ln.replace(".mp4", ".lip.mp4") for ln in lines[1:]]) + "\n")
    for s in ("00001", "00002"):
        (fx / f"spk0/{s}.mp4").unlink()
    with pytest.raises(MissingDatasetError, match=r"00001\.mp4"):
        D.load_split(fx, "test", ["en"])
    utts = D.load_split(fx, "test", ["en"], require_faces=False)
    assert utts[0]["faces"] is None and utts[0]["bboxes"] is None and utts[0]["lip"].shape == (25, 32, 32)
