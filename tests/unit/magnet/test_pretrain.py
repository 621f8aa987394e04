"""The backbone pretraining (the stand-in for an ImageNet-pretrained encoder): labels, learning, the hand-over of
its weights to every referring job, resumption, and the encoders it pretrains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.magnet import data as D
from cvpr24.pipelines.magnet import method as F
from cvpr24.pipelines.magnet import model as M
from cvpr24.pipelines.magnet import pretrain as P

pytestmark = pytest.mark.usefixtures("one_thread")

PCFG = {"steps": 6, "batch": 4, "lr": 3e-3, "n_images": 12, "n_eval": 8, "checkpoint_every": 2, "log_every": 1}


def _mcfg(encoder: str = "resnet") -> M.MagNetConfig:
    return M.MagNetConfig(vocab_size=20, max_tokens=6, image_size=32, encoder=encoder, dims=(8, 8, 16, 16),
                          stem_width=8, text_dim=16, text_heads=2, mask_dim=16, dec_heads=2, dec_ffn=32)


def test_dense_labels_follow_every_object():
    scenes = P.scenes_for(6, 64, seed=4)
    images, shape, colour = P.dense_labels(scenes)
    assert images.shape == (6, 64, 64, 3) and shape.shape == colour.shape == (6, 64, 64)
    for k, s in enumerate(scenes):
        covered = np.zeros((64, 64), bool)
        for obj, m in zip(s.objects, s.masks, strict=True):
            inside = m > 0
            assert (shape[k][inside] == 1 + D.SHAPES.index(obj.shape)).all()
            assert (colour[k][inside] == 1 + D.COLOURS.index(obj.colour)).all()
            covered |= inside
        assert (shape[k][~covered] == 0).all() and (colour[k][~covered] == 0).all()


def test_pretraining_images_are_not_the_referring_images():
    """Its own seed: no pretraining image is one of ShapeRef's train / val / test images."""
    refer = D.generate_shaperef(image_size=64, n_train=40, n_val=10, n_testA=10, n_testB=10, seed=0)
    from cvpr24.core.seeding import derive_seed

    pre = P.scenes_for(40, 64, derive_seed(0, "pretrain-data"))
    seen = {s.image.tobytes() for s in refer}
    assert not any(s.image.tobytes() in seen for s in pre)


@pytest.mark.parametrize("encoder", ["resnet", "convnext"])
def test_encoders_have_the_four_strides(encoder):
    enc = M.ImageEncoder((8, 16, 32, 64), (1, 1, 1, 1), 3, encoder, stem_width=8)
    outs = enc(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    with pytest.raises(ValueError, match="convnext or resnet"):
        M.ImageEncoder((8, 16, 32, 64), (1, 1, 1, 1), 3, "vit")
    with pytest.raises(ValueError, match="encoder"):
        _mcfg("vit")


def test_pretraining_learns_and_its_weights_reach_every_job(tmp_path):
    out = P.pretrain_encoder(_mcfg(), {**PCFG, "steps": 40, "n_images": 32, "batch": 8}, seed=1)
    losses = [h["total"] for h in out["history"]]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert set(out["accuracy"]) == {"pretrain_shape_acc", "pretrain_colour_acc", "pretrain_n_eval"}
    assert all(k.startswith(P.PREFIX) for k in out["state"])
    path = tmp_path / "encoder.pt"
    torch.save(out["state"], path)
    model = M.MagNet(_mcfg())
    info = F.init_from_checkpoint(model, str(path))
    assert sorted(info["loaded"]) == sorted(out["state"]) and not info["skipped"]
    for k, v in out["state"].items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_killed_pretraining_resumes_exactly(tmp_path, monkeypatch):
    full = P.pretrain_encoder(_mcfg(), PCFG, seed=2)
    real, calls = P._loss, {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 5:            # killed during step 4; checkpoints at 2 and 4
            raise KeyboardInterrupt
        return real(*args)

    ck = Checkpointer(tmp_path / "pretrain")
    monkeypatch.setattr(P, "_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain_encoder(_mcfg(), PCFG, seed=2, checkpointer=ck)
    monkeypatch.setattr(P, "_loss", real)
    assert ck.latest()["step"] == 4
    resumed = P.pretrain_encoder(_mcfg(), PCFG, seed=2, checkpointer=ck)
    for k, v in full["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=0, atol=0, msg=k)


def test_pretrained_backbone_is_cached_and_keyed(tmp_path):
    path, info = F.pretrained_backbone(_mcfg(), PCFG, 0, str(tmp_path))
    assert not info["cached"] and info["seconds"] > 0
    again, info2 = F.pretrained_backbone(_mcfg(), PCFG, 0, str(tmp_path))
    assert again == path and info2["cached"]
    other, _ = F.pretrained_backbone(_mcfg(), {**PCFG, "steps": 4}, 0, str(tmp_path))
    assert other != path          # a job keyed by the path re-runs when the pretraining changes
