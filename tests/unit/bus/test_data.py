"""Real-data readers on tiny fixtures written in the original formats, the embedded generator, and bad input
stopping ingest with a clear error before anything downstream runs."""

import json
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.bus import data as D
from cvpr24.pipelines.bus import nodes
from cvpr24.pipelines.bus.labels import IGNORE_ID, PRIVATE_ID, SOURCE_LUT, TARGET_LUT

H, W = 6, 8


def write_png16(path: Path, arr: np.ndarray, filters=(0, 2)) -> None:
    """A 16-bit grey/RGB PNG written byte by byte (Pillow cannot write 16-bit RGB), rows alternating the
    given filter types (0 None, 2 Up) so the reader's unfiltering is exercised."""
    arr = np.asarray(arr, np.uint16)
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    raw = arr.astype(">u2").reshape(arr.shape[0], -1).view(np.uint8)
    lines, prior = [], np.zeros(raw.shape[1], np.uint8)
    for y, row in enumerate(raw):
        f = filters[y % len(filters)]
        data = row if f == 0 else (row.astype(np.int32) - prior).astype(np.uint8)
        lines.append(bytes([f]) + data.tobytes())
        prior = row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 16, {1: 0, 3: 2}[ch], 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(lines)))
                     + chunk(b"IEND", b""))


def _img(seed):
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def write_gta5(root: Path, labels: list[np.ndarray], drop_label: int | None = None) -> Path:
    for i, lab in enumerate(labels):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / "images" / f"{i:05d}.png", _img(i))
        if i != drop_label:
            iio.imwrite(root / "labels" / f"{i:05d}.png", lab.astype(np.uint8))
    return root


def gta_label(private=True):
    lab = np.full((H, W), 7, np.uint8)   # road
    lab[:2] = 23                          # sky
    if private:
        lab[3:5, 2:4] = 24                # a person
    lab[5, 6:] = 26                       # car
    return lab


def write_cityscapes(root: Path, split: str, labels: list[np.ndarray], polygons: bool = False) -> Path:
    for i, lab in enumerate(labels):
        stem = f"aachen_{i:06d}_000019"
        img_p = root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"
        img_p.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(img_p, _img(100 + i))
        gt = root / "gtFine" / split / "aachen"
        gt.mkdir(parents=True, exist_ok=True)
        iio.imwrite(gt / f"{stem}_gtFine_labelIds.png", lab.astype(np.uint8))
        if polygons:
            doc = {"imgHeight": H, "imgWidth": W, "objects": [
                {"label": "road", "polygon": [[0, 0], [7, 0], [7, 4], [0, 4]]},
                {"label": "person", "polygon": [[2, 2], [4, 2], [4, 4], [2, 4]]},
            ]}
            (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps(doc))
    return root


# ------------------------------------------------------------------------------------------ readers
def test_gta5_reader_and_source_protocol(tmp_path):
    root = write_gta5(tmp_path / "gta", [gta_label(), gta_label(False)])
    out = D.read_gta5(root)
    assert [s[0] for s in out] == ["gta5_00000", "gta5_00001"]
    sid, img, lab, src = out[0]
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and src.endswith("00000.png")
    assert (lab == gta_label()).all()
    train = SOURCE_LUT[lab]
    assert (train[3:5, 2:4] == IGNORE_ID).all() and (train[:2] == 8).all() and (train[5, 6:] == 9).all()


def test_synthia_reader_decodes_16bit_labels(tmp_path):
    ids = np.full((H, W), 3, np.uint16)   # SYNTHIA road
    ids[:2] = 1                           # sky
    ids[3:5, 2:4] = 10                    # pedestrian -> person (private)
    ids[5, 6:] = 8                        # car
    lab16 = np.stack([ids, np.zeros_like(ids), np.full_like(ids, 777)], -1)  # class id in channel 0
    write_png16(tmp_path / "syn" / "GT" / "LABELS" / "0000000.png", lab16)
    (tmp_path / "syn" / "RGB").mkdir(parents=True)
    iio.imwrite(tmp_path / "syn" / "RGB" / "0000000.png", _img(0))
    [(sid, img, lab, _)] = D.read_synthia(tmp_path / "syn")
    assert sid == "synthia_0000000" and img.shape == (H, W, 3)
    assert (TARGET_LUT[lab][:2] == 8).all() and (TARGET_LUT[lab][3:5, 2:4] == PRIVATE_ID).all()
    assert (TARGET_LUT[lab][5, 6:] == 9).all() and (TARGET_LUT[lab][2] == 0).all()


def test_png16_reader_matches_pillow_on_8bit_and_rejects_garbage(tmp_path):
    a = np.random.default_rng(0).integers(0, 60000, (5, 7), dtype=np.uint16)
    write_png16(tmp_path / "g.png", a, filters=(2, 0))
    assert (D.read_png16(tmp_path / "g.png") == a).all()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        D.read_png16(tmp_path / "bad.png")


def test_cityscapes_label_ids_and_polygons(tmp_path):
    lab = np.full((H, W), 7, np.uint8)
    lab[2:5, 2:5] = 24
    root = write_cityscapes(tmp_path / "cs", "val", [lab, lab], polygons=True)
    from_png = D.read_cityscapes(root, "val")
    assert len(from_png) == 2 and (from_png[0][2] == lab).all()
    [(sid, img, poly, _), _] = D.read_cityscapes(root, "val", use_polygons=True)
    assert sid.startswith("cs_val_aachen") and img.shape == (H, W, 3)
    assert (poly[3, 3] == 24) and (poly[0, 0] == 7) and (poly[5, 0] == 0)   # later polygons drawn on top
    assert TARGET_LUT[poly][3, 3] == PRIVATE_ID


def test_unknown_polygon_label_is_rejected():
    with pytest.raises(ValueError, match="unknown Cityscapes label"):
        D.rasterize_cityscapes_polygons({"imgHeight": 2, "imgWidth": 2,
                                         "objects": [{"label": "dragon", "polygon": [[0, 0], [1, 0], [1, 1]]}]})


def test_missing_dataset_says_where_to_get_it(tmp_path):
    with pytest.raises(D.MissingDatasetError, match="download.visinf.tu-darmstadt.de"):
        D.read_gta5(tmp_path / "nowhere")
    with pytest.raises(D.MissingDatasetError, match="cityscapes-dataset.com"):
        D.read_cityscapes(tmp_path / "nowhere", "val")


# ------------------------------------------------------------------------- bad input stops ingest
def _real_params(gta_root, cs_root):
    return {"source": "real", "height": H, "width": W, "min_per_split": 1,
            "real": {"source": {"dataset": "gta5", "root": str(gta_root)},
                     "target": {"root": str(cs_root)}}}


def _cs(tmp_path):
    root = tmp_path / "cs"
    lab = np.full((H, W), 7, np.uint8)
    lab[2:4, 2:4] = 24
    write_cityscapes(root, "train", [lab])
    write_cityscapes(root, "val", [lab])
    return root


def test_real_ingest_works_on_good_fixtures(tmp_path):
    arrays, manifest = nodes.ingest(_real_params(write_gta5(tmp_path / "gta", [gta_label()]), _cs(tmp_path)),
                                    {"seed": 0})
    assert arrays["source_train_images"].shape == (1, H, W, 3)
    assert set(manifest["split"]) == {"source_train", "target_train", "target_val"}


def test_label_id_outside_the_map_is_rejected_before_training(tmp_path):
    bad = gta_label()
    bad[0, 0] = 200
    params = _real_params(write_gta5(tmp_path / "gta", [gta_label(), bad]), _cs(tmp_path))
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(params, {"seed": 0})
    text = str(err.value)
    assert "n_unknown_ids" in text and "gta5_00001" in text and "00001.png" in text


def test_image_without_its_label_is_rejected(tmp_path):
    params = _real_params(write_gta5(tmp_path / "gta", [gta_label(), gta_label()], drop_label=1), _cs(tmp_path))
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(params, {"seed": 0})
    assert "has_label" in str(err.value) and "gta5_00001" in str(err.value)


def test_mismatched_image_and_label_sizes_are_rejected(tmp_path):
    params = _real_params(write_gta5(tmp_path / "gta", [gta_label(), np.full((H + 2, W), 7, np.uint8)]),
                          _cs(tmp_path))
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(params, {"seed": 0})
    assert "label_height" in str(err.value) and "gta5_00001" in str(err.value)


def test_empty_split_is_rejected(tmp_path):
    cs = tmp_path / "cs"
    lab = np.full((H, W), 7, np.uint8)
    write_cityscapes(cs, "train", [lab])
    (cs / "leftImg8bit" / "val").mkdir(parents=True)
    (cs / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(D.MissingDatasetError, match="leftImg8bit/val"):
        nodes.ingest(_real_params(write_gta5(tmp_path / "gta", [gta_label()]), cs), {"seed": 0})


# ------------------------------------------------------------------------------ embedded generator
CFG = {"source": "embedded", "height": 32, "width": 32, "n_source": 6, "n_target_train": 6, "n_target_val": 6,
       "min_per_split": 1, "things_per_image": [2, 3],
       "domains": {"source": {"private_prob": 1.0, "private_scale": [0.8, 1.2]},
                   "target": {"private_prob": 1.0, "private_scale": [0.5, 1.5], "hue_shift": 25,
                              "saturation": 0.6, "texture": 0.08, "illumination": 0.4, "blur": 0.7,
                              "sensor_noise": 0.03}}}


def test_embedded_is_deterministic_and_follows_the_open_set_protocol():
    a, man = nodes.ingest(CFG, {"seed": 3})
    b, _ = nodes.ingest(CFG, {"seed": 3})
    assert all((a[k] == b[k]).all() for k in a)
    prep = {"seeds": [0], "rows": ["source_only", "st_thr"], "masks": {"method": "slic", "n_segments": 10,
                                                                     "compactness": 10.0}}
    mi, hidden, jobs = nodes.preprocess(a, man, prep, CFG)
    assert not (mi["source_labels"] == PRIVATE_ID).any() and (mi["source_labels"] == IGNORE_ID).any()
    assert (mi["val_labels"] == PRIVATE_ID).any()
    assert (hidden["target_train_labels"] == PRIVATE_ID).any() and "target_train_labels" not in mi
    assert mi["target_segments"].shape == (6, 32, 32)
    assert list(jobs["job_id"]) == ["pretrain_s0", "st_thr_s0"]


def test_source_and_target_styles_differ():
    s_img, s_lab = D.generate_split(20, "source", 0, CFG)
    t_img, t_lab = D.generate_split(20, "target", 0, CFG)
    for cid in (D.ROAD, D.SKY, D.CAR):  # the same class has a different colour in the two domains
        gap = np.abs(s_img[s_lab == cid].mean(0) - t_img[t_lab == cid].mean(0)).max()
        assert gap > 10, (cid, gap)


def test_random_hue_private_objects_take_one_random_colour_each():
    cfg = {**CFG, "domains": {"source": {**CFG["domains"]["source"], "private_style": "random_hue"},
                              "target": {**CFG["domains"]["target"], "private_style": "random_hue",
                                         "private_count": [3, 3]}}}
    img, lab = D.generate_split(12, "source", 0, cfg)       # the source has no noise: colours are exact
    again, _ = D.generate_split(12, "source", 0, cfg)
    assert (img == again).all()
    from scipy import ndimage
    colours = set()
    for i in range(len(img)):
        comps, n = ndimage.label(np.isin(lab[i], D.PRIVATE_IDS))
        for k in range(1, n + 1):
            colours.add(tuple(np.unique(img[i][comps == k], axis=0)[0]))
            assert len(np.unique(img[i][comps == k], axis=0)) == 1    # one colour per object
    assert len(colours) > 5                                              # and a different one per object
    _, t_lab = D.generate_split(12, "target", 0, cfg)
    assert all(len(np.unique(D.ndimage.label(np.isin(t, D.PRIVATE_IDS))[0])) > 1 for t in t_lab)
    with pytest.raises(ValueError, match="private_style"):
        D.render(lab[0], "source", np.random.default_rng(0), cfg["domains"]["target"], "plaid")
