"""GCD split, augmentation, sampler, embedded generators, and the real-format readers on tiny fixtures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.pipelines.cms import data as D
from cvpr24.pipelines.cms.method import sampler_weights


def test_gcd_split_conventions():
    labels = np.repeat(np.arange(10), 30)
    s = D.gcd_split(labels, [0, 1, 2, 3, 4], 0.5, seed=0)
    old_idx = np.flatnonzero(labels < 5)
    assert s["labelled"].sum() == int(0.5 * len(old_idx))
    assert np.all(labels[s["labelled"]] < 5)  # no new-class image is labelled
    assert np.all(s["is_old"][s["labelled"]])
    unl = ~s["labelled"]
    assert (s["labelled"] & unl).sum() == 0 and (s["labelled"] | unl).all()
    assert np.array_equal(s["labelled"], D.gcd_split(labels, [0, 1, 2, 3, 4], 0.5, seed=0)["labelled"])
    # remapping: old classes become 0..|old|-1, new classes follow
    s2 = D.gcd_split(labels, [7, 2], 0.5)
    assert set(s2["y"][labels == 7]) == {0} and set(s2["y"][labels == 2]) == {1}
    assert set(s2["y"][labels == 0]) == {2} and np.all(s2["labelled"] <= np.isin(labels, [7, 2]))


def test_heldout_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), 50)
    h = D.stratified_holdout(labels, 0.2, 0)
    assert all(h[labels == c].sum() == 10 for c in range(4))
    assert np.array_equal(h, D.stratified_holdout(labels, 0.2, 0))


def test_two_views_differ_and_the_test_transform_is_identity():
    x = torch.rand(4, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    a, b = D.augment(x, g), D.augment(x, g)
    assert a.shape == x.shape and not torch.allclose(a, b)
    assert torch.equal(D.test_transform(x), x)
    # the same generator state gives the same views (what data-parallel sharding relies on)
    assert torch.equal(D.augment(x, torch.Generator().manual_seed(5)), D.augment(x, torch.Generator().manual_seed(5)))


def test_weighted_sampler_draws_half_labelled():
    labelled = torch.zeros(1000, dtype=torch.bool)
    labelled[:200] = True
    draws = torch.multinomial(sampler_weights(labelled), 10000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    frac = float(labelled[draws].float().mean())
    assert abs(frac - 0.5) < 0.03


def test_embedded_generators():
    img, lab = D.digits_gcd(16)
    assert img.shape == (1797, 16, 16, 1) and img.dtype == np.uint8 and set(lab) == set(range(10))
    g1, l1 = D.glyphs_gcd(0, 4)
    g2, l2 = D.glyphs_gcd(0, 4)
    assert g1.shape == (96, 32, 32, 3) and np.array_equal(g1, g2) and np.array_equal(l1, l2)
    assert np.bincount(l1).tolist() == [4] * 24
    assert len(D.glyph_class_names()) == 24


# ----------------------------------------------------------------------------- real-format fixtures
def _cifar_pickle(path, n=10, key="labels"):
    rng = np.random.default_rng(0)
    entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(range(n))}
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return entry


def test_cifar10_reader(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    entries = [_cifar_pickle(base / f"data_batch_{i}") for i in range(1, 6)]
    _cifar_pickle(base / "test_batch")
    x, y = D.read_cifar(tmp_path, "cifar10", train=True)
    assert x.shape == (50, 32, 32, 3) and len(y) == 50
    # row-major RGB planes: pixel (0, 0) red = data[0], green = data[1024], blue = data[2048]
    d = entries[0]["data"][0]
    assert tuple(x[0, 0, 0]) == (d[0], d[1024], d[2048])


def test_cifar100_reader_and_refuses_code_in_pickles(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    _cifar_pickle(base / "train", key="fine_labels")
    x, y = D.read_cifar(tmp_path, "cifar100", train=True)
    assert x.shape == (10, 32, 32, 3) and y.tolist() == list(range(10))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (base / "test").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        D.read_cifar(tmp_path, "cifar100", train=False)


def test_missing_cifar_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingDatasetError, match="cs.toronto.edu"):
        D.read_cifar(tmp_path / "nope", "cifar100")


def _jpeg(path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def test_cub_reader(tmp_path):
    base = tmp_path / "CUB_200_2011"
    rows, labels, split = [], [], []
    for i in range(1, 7):
        cls = 1 if i <= 3 else 2
        rel = f"{cls:03d}.Bird/img_{i}.jpg"
        _jpeg(base / "images" / rel, (10 * i, 0, 0))
        rows.append(f"{i} {rel}")
        labels.append(f"{i} {cls}")
        split.append(f"{i} {1 if i % 3 else 0}")
    (base / "images.txt").write_text("\n".join(rows) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    x, y = D.read_cub(tmp_path, train=True, size=16)
    assert x.shape == (4, 16, 16, 3) and y.tolist() == [0, 0, 1, 1]
    xt, yt = D.read_cub(tmp_path, train=False, size=16)
    assert yt.tolist() == [0, 1]


def test_aircraft_reader(tmp_path):
    base = tmp_path / "fgvc-aircraft-2013b" / "data"
    lines = ["0000001 Boeing 737-200", "0000002 A320", "0000003 Boeing 737-200", "0000004 DC-3",
             "0000005 A320", "0000006 DC-3"]
    base.mkdir(parents=True)
    (base / "images_variant_trainval.txt").write_text("\n".join(lines) + "\n")
    for ln in lines:
        _jpeg(base / "images" / f"{ln.split()[0]}.jpg", (0, 50, 0))
    x, y = D.read_aircraft(tmp_path, train=True, size=8)
    assert x.shape == (6, 8, 8, 3)
    assert y.tolist() == [1, 0, 1, 2, 0, 2]  # sorted variants: A320, Boeing 737-200, DC-3


def test_stanford_cars_reader(tmp_path):
    import scipy.io

    (tmp_path / "devkit").mkdir()
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    ann = np.array([(1, 1, 20, 20, 3, "00001.jpg"), (2, 2, 30, 30, 1, "00002.jpg")], dtype=dtype)
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": ann[None]})
    for f in ("00001.jpg", "00002.jpg"):
        _jpeg(tmp_path / "cars_train" / f, (0, 0, 90))
    x, y = D.read_stanford_cars(tmp_path, train=True, size=8)
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [2, 0]


def test_imagenet_subset_reader(tmp_path):
    for wnid in ("n01", "n02", "n03"):
        for split in ("train", "val"):
            for j in range(2):
                _jpeg(tmp_path / split / wnid / f"{wnid}_{j}.JPEG", (5, 5, 5))
    classes = D.imagenet100_classes(tmp_path, n=2)
    assert len(classes) == 2 and set(classes) <= {"n01", "n02", "n03"}
    x, y = D.read_imagenet_subset(tmp_path, classes, "train", size=8)
    assert x.shape == (4, 8, 8, 3) and y.tolist() == [0, 0, 1, 1]


def test_ssb_split_file(tmp_path):
    f = tmp_path / "cub_osr_splits.pkl"
    f.write_bytes(pickle.dumps({"known_classes": [1, 3], "unknown_classes": {"Easy": [0], "Medium": [2], "Hard": [4]}}))
    assert D.read_ssb_split(f) == {"old": [1, 3], "new": [4, 2, 0]}


def test_dino_weights_load_weights_only(tmp_path):
    f = tmp_path / "dino_vitbase16_pretrain.pth"
    torch.save({"blocks.11.mlp.fc1.weight": torch.zeros(2, 2), "cls_token": torch.zeros(1, 1, 4)}, f)
    assert "cls_token" in D.load_dino_weights(f)
    with pytest.raises(MissingDatasetError, match="dino"):
        D.load_dino_weights(tmp_path / "missing.pth")
    bad = tmp_path / "not_vit.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="blocks.11"):
        D.load_dino_weights(bad)
