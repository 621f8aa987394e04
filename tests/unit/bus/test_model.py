"""BUS's components against hand computations (spec section 9's unit tests)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvpr24.pipelines.bus import model as M
from cvpr24.pipelines.bus.labels import IGNORE_ID, PRIVATE_ID


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------------- threshold rule (2.3)
def test_threshold_rule_is_less_or_equal_at_exactly_half():
    probs = torch.zeros(1, 14, 1, 3)
    probs[0, 2, 0, 0], probs[0, 3, 0, 0] = 0.5, 0.5          # max exactly 0.5 -> private
    probs[0, 4, 0, 1], probs[0, 5, 0, 1] = 0.5001, 0.4999    # just above -> keeps its class
    probs[0, 7, 0, 2] = 1.0
    y, w = M.open_set_pseudo_labels(probs, 0.5, 0.968)
    assert y[0, 0].tolist() == [PRIVATE_ID, 4, 7]
    assert w.item() == pytest.approx(1 / 3)                   # DACS weight: share of pixels with p >= 0.968


def test_dacs_weight_is_one_scalar_for_the_whole_batch():
    """As DACS/MIC and the released BUS code: the share of confident pixels over the whole batch, the same
    for every sample (a per-sample share would down-weight the images with the most unknown pixels)."""
    probs = torch.zeros(2, 14, 1, 4)
    probs[0, 0] = 1.0                                   # image 0: all 4 pixels confident
    probs[1, 0, 0, 0] = 1.0                             # image 1: 1 of 4 confident, 3 at 0.5/0.5 -> private
    probs[1, 1, 0, 1:], probs[1, 2, 0, 1:] = 0.5, 0.5
    y, w = M.open_set_pseudo_labels(probs, 0.5, 0.968)
    assert w.tolist() == pytest.approx([5 / 8, 5 / 8])
    assert (y[1, 0, 1:] == PRIVATE_ID).all() and (y[0] == 0).all()


def test_test_time_threshold_closed_set_never_predicts_private_without_the_rule():
    probs = torch.full((1, 14, 2, 2), 0.0)
    probs[:, 13] = 0.9
    probs[:, 0] = 0.1
    assert (M.threshold_predictions(probs, -1.0, closed_set=True) == 0).all()
    assert (M.threshold_predictions(probs, 0.5, closed_set=True) == PRIVATE_ID).all()


# ----------------------------------------------------------------- erosion / dilation / ring (2.5)
def _square():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, 2:8, 2:8] = PRIVATE_ID  # a 6x6 private square
    return lab


def test_erosion_dilation_and_ring_of_a_6x6_square():
    P, E, D, C = M.decon_masks(_square(), kernel=3, iterations=1)
    exp_p = np.zeros((10, 10), bool)
    exp_p[2:8, 2:8] = True
    exp_e = np.zeros((10, 10), bool)
    exp_e[3:7, 3:7] = True
    exp_d = np.zeros((10, 10), bool)
    exp_d[1:9, 1:9] = True
    assert (P[0].numpy() == exp_p).all()
    assert (E[0].numpy() == exp_e).all() and E.sum() == 16
    assert (D[0].numpy() == exp_d).all() and D.sum() == 64
    assert (C[0].numpy() == (exp_d & ~exp_p)).all() and C.sum() == 64 - 36


def test_two_iterations_erode_and_dilate_twice():
    _, E, D, _ = M.decon_masks(_square(), kernel=3, iterations=2)
    assert E.sum() == 4 and D.sum() == 100


# ----------------------------------------------------------------------------- DECON value (2.5)
def test_decon_equals_a_hand_computation_on_3_anchors_and_2_negatives():
    # 3x3 feature map; labels at the same resolution. The eroded region E is built directly by giving
    # the masks: private square so that E = 3 pixels is awkward with a 3x3 kernel, so use kernel 1
    # (E = P) and dilation by a 1x3 ring instead: check the formula on masks we set by hand.
    feats = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.2]])  # a1,a2,a3,n1,n2
    anchors, negatives = feats[:3], feats[3:]
    proto = anchors.mean(0)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    expected = 0.0
    for a in anchors:
        logits = [cos(a, proto)] + [cos(a, n) for n in negatives]
        expected += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    expected /= 3  # mean over anchors
    batch = 2
    expected /= batch

    # lay the 5 vectors on a 1x5 feature row; labels: anchors private, negatives common; kernel 1 -> E = P,
    # D = dilate(P, 1x1) = P, so build masks through a custom ring: monkeypatch decon_masks for clarity
    f = torch.zeros(batch, 2, 1, 5)
    f[0] = feats.T[:, None, :]
    f[1] = feats.T[:, None, :]  # the second sample holds nothing private: its features are unused
    lab = torch.zeros(batch, 1, 5, dtype=torch.long)
    lab[0, 0, :3] = PRIVATE_ID

    def masks(labels, kernel, iterations):
        P = labels == PRIVATE_ID
        C = torch.zeros_like(P)
        C[0, 0, 3:] = True
        return P, P.clone(), P | C, C

    orig = M.decon_masks
    M.decon_masks = masks
    try:
        got = M.decon_loss(f, lab, window=8, generator=_gen())
    finally:
        M.decon_masks = orig
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_decon_is_zero_when_the_ring_is_empty():
    lab = torch.full((1, 8, 8), PRIVATE_ID, dtype=torch.long)  # all private: no common ring
    f = torch.randn(1, 4, 8, 8, requires_grad=True)
    loss = M.decon_loss(f, lab, window=8, generator=_gen())
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph


def test_decon_pulls_anchors_together_and_pushes_the_ring():
    lab = _square()
    aligned = torch.zeros(1, 2, 10, 10)
    aligned[:, 0] = 1.0
    aligned[:, 1] = torch.where(lab[0] == PRIVATE_ID, 0.0, 1.0)  # private and ring differ
    mixed = torch.ones(1, 2, 10, 10)                               # all identical: no separation
    lo = M.decon_loss(aligned, lab, window=10, generator=_gen())
    hi = M.decon_loss(mixed, lab, window=10, generator=_gen())
    assert float(lo) < float(hi)


# ------------------------------------------------------------------------------ refinement (2.3)
def test_superpixel_majority_vote_on_a_toy_map():
    labels = torch.tensor([[[1, 1, 13, 2], [1, 255, 2, 2]]])
    segs = torch.tensor([[[0, 0, 0, 1], [0, 0, 1, 1]]])
    out = M.refine_with_masks(labels, segs)
    assert out.tolist() == [[[1, 1, 1, 2], [1, 1, 2, 2]]]


def test_refinement_windows_are_the_last_30_percent_of_each_quarter():
    steps = [s for s in range(40000) if M.in_refinement_window(s, 40000, 0.3)]
    assert len(steps) == 12000
    assert steps[0] == 7000 and 9999 in steps and 10000 not in steps and 17000 in steps and 39999 in steps


# -------------------------------------------------------------------------------- OpenReMix (2.4)
def test_resizing_object_pastes_only_the_chosen_thing_at_half_size():
    src_img = torch.zeros(1, 3, 16, 16)
    src_lab = torch.zeros(1, 16, 16, dtype=torch.long)            # road
    src_lab[0, 4:12, 4:12] = 9                                      # an 8x8 car
    src_img[0, :, 4:12, 4:12] = 1.0
    classmix = src_lab == 0                                         # ClassMix took road only
    mixed_img = torch.full((1, 3, 16, 16), 0.5)
    mixed_lab = torch.full((1, 16, 16), 7, dtype=torch.long)
    mixed_w = torch.full((1, 16, 16), 0.3)
    img, lab, w, pasted = M.resize_object(mixed_img, mixed_lab, mixed_w, src_img, src_lab, classmix, 0.5, _gen())
    assert pasted.sum() == 16                                       # 4x4 = the car at half size
    assert set(lab[pasted].tolist()) == {9} and (lab[~pasted] == 7).all()
    assert (w[pasted] == 1).all() and (w[~pasted] == 0.3).all()
    assert (img[0, :, pasted[0]] == 1.0).all() and (img[0, :, ~pasted[0]] == 0.5).all()


def test_resizing_object_skips_classes_chosen_by_classmix():
    src_lab = torch.zeros(1, 16, 16, dtype=torch.long)
    src_lab[0, 4:12, 4:12] = 9
    cm = src_lab == 9                                                # the car was already pasted by ClassMix
    *_, pasted = M.resize_object(torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long),
                                 torch.ones(1, 16, 16), torch.zeros(1, 3, 16, 16), src_lab, cm, 0.5, _gen())
    assert not pasted.any()


def test_attaching_private_pastes_private_target_pixels_with_the_pseudo_weight():
    src_img, tgt_img = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    src_lab = torch.full((1, 4, 4), 2, dtype=torch.long)
    src_lab[0, 0, 0] = IGNORE_ID
    pseudo = torch.zeros(1, 4, 4, dtype=torch.long)
    pseudo[0, 1:3, 1:3] = PRIVATE_ID
    img, lab, w = M.attach_private(src_img, src_lab, torch.ones(1, 4, 4), tgt_img, pseudo, torch.tensor([0.4]))
    m = pseudo == PRIVATE_ID
    assert (lab[m] == PRIVATE_ID).all() and (lab[~m] == src_lab[~m]).all()
    assert torch.allclose(w[m], torch.tensor(0.4)) and (w[~m] == 1).all()
    assert (img[0, :, m[0]] == 1).all() and (img[0, :, ~m[0]] == 0).all()


def test_attaching_private_only_inside_the_windows(monkeypatch):
    """The self-training step calls attach_private only inside the refinement windows."""
    from cvpr24.pipelines.bus import method as Me

    calls = []
    real = M.attach_private
    monkeypatch.setattr(M, "attach_private", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = _tiny_cfg(iterations=20)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    lab = rng.integers(0, 13, (4, 16, 16)).astype(np.uint8)
    net = Me.build_model(cfg["model"])
    Me.selftrain(net.state_dict(), img, lab, img, np.zeros((4, 16, 16), np.int32),
                 {"refine": False, "decon": False, "ro": False, "ap": True}, cfg, 0, None, "t", False)
    expected = sum(M.in_refinement_window(s, 20, 0.3) for s in range(20))
    assert len(calls) == expected == 4


def test_selftraining_logs_the_private_class_signals_and_decon_window_is_2p(monkeypatch):
    """Every logged step carries the private class's label-free signals; DECON's window side is 2p."""
    from cvpr24.pipelines.bus import method as Me

    sides = []
    real = M.decon_loss
    monkeypatch.setattr(M, "decon_loss", lambda f, lab, window, *a, **k: sides.append(window) or real(f, lab, window, *a, **k))
    cfg = _tiny_cfg(iterations=3)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    lab = rng.integers(0, 13, (4, 16, 16)).astype(np.uint8)
    net = Me.build_model(cfg["model"])
    out = Me.selftrain(net.state_dict(), img, lab, img, np.zeros((4, 16, 16), np.int32),
                       {"refine": False, "decon": True, "ro": False, "ap": True}, cfg, 0, None, "t", False)
    assert sides == [2 * cfg["selftrain"]["decon_window"]] * 3
    for rec in out["history"]:
        for k in ("pl_private", "pred_private", "sup_mix", "sup_mic", "sup_ap"):
            assert 0.0 <= rec[k] <= 1.0, (k, rec[k])


def test_private_signals_on_a_toy_batch():
    from cvpr24.pipelines.bus.method import private_signals

    pl = torch.tensor([[[PRIVATE_ID, 0], [0, 0]]])                  # 1 of 4 target pixels pseudo-labelled private
    pw = torch.tensor([0.5])
    cm = torch.tensor([[[False, False], [True, True]]])             # bottom row pasted from the source
    logits = torch.zeros(1, 14, 2, 2)
    logits[0, PRIVATE_ID, 0, 0] = logits[0, PRIVATE_ID, 1, 0] = 5.0  # predicted private at (0,0) and (1,0)
    mixed_lab = torch.where(cm, torch.zeros_like(pl), pl)
    mixed_w = torch.where(cm, torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5))
    src_lab = torch.tensor([[[PRIVATE_ID, PRIVATE_ID], [1, 1]]])
    src_w = torch.tensor([[[0.5, 0.5], [1.0, 1.0]]])
    s = private_signals(pl, pw, logits, cm, mixed_lab, mixed_w, src_lab, src_w)
    assert s == pytest.approx({"pl_private": 0.25, "pred_private": 0.5, "sup_mix": 0.125, "sup_mic": 0.125,
                               "sup_ap": 0.25})


def _tiny_cfg(iterations):
    return {"model": {"arch": "small_conv", "widths": [8, 8, 8, 8], "embed": 4}, "batch_size": 2, "jitter": 0.1,
            "optimizer": {"lr": 1e-3, "warmup": 1}, "checkpoint_every": 100, "log_every": 1,
            "selftrain": {"iterations": iterations, "warmup": 1, "ema": 0.9, "pseudo_thres": 0.5, "conf_thres": 0.968,
                          "refine_ratio": 0.3, "resize_scale": 0.5, "mic_block": 4, "mic_ratio": 0.7,
                          "mic_lambda": 1.0, "decon_window": 4, "decon_kernel": 3, "decon_iterations": 1,
                          "decon_weight": 1.0}}


# ----------------------------------------------------------------------------- DACS / MIC (2.2)
def test_classmix_takes_half_the_source_classes():
    lab = torch.tensor([[[0, 1, 2, 3], [0, 1, 255, 3]]])
    m = M.classmix_masks(lab, _gen())
    chosen = set(lab[m].tolist())
    assert len(chosen) == 2 and IGNORE_ID not in chosen
    assert (m == torch.isin(lab, torch.tensor(sorted(chosen)))).all()


def test_mic_mask_blocks():
    m = M.mic_mask((2, 3, 16, 16), 4, 0.7, _gen())
    assert m.shape == (2, 1, 16, 16)
    blocks = m.unfold(2, 4, 4).unfold(3, 4, 4)
    assert (blocks.amin((-1, -2)) == blocks.amax((-1, -2))).all()  # constant within each block


def test_ema_update():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    M.ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)


def test_network_shapes():
    net = M.SegNet((8, 8, 16, 16), 8)
    logits, feat = net(torch.zeros(2, 3, 32, 64))
    assert logits.shape == (2, 14, 8, 16) and feat.shape == (2, 8, 8, 16)
    assert M.full_res_logits(net, torch.zeros(1, 3, 32, 32))[0].shape == (1, 14, 32, 32)
    assert F.softmax(logits, 1).shape[1] == 14


def test_missing_user_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="conf/local/parameters/bus.yml"):
        M.load_user_weights(tmp_path / "mit_b5.pth", "MiT-B5", "put it at pretrained/mit_b5.pth")
