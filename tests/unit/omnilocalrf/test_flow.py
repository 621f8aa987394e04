"""OmniLocalRF's offline ERP optical flow (OpenCV DIS with wrap padding): a horizontally rolled ERP frame gives the
roll everywhere, including the columns whose content crossed the seam, while the same flow on the bare frame is
wrong exactly there; determinism; the seam-aware forward-backward check; the clear error without OpenCV."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cvpr24.pipelines.omnilocalrf import flow as FL

H, W = 128, 256


def erp_texture(seed: int = 1) -> np.ndarray:
    """Smooth random RGB texture that is periodic horizontally (a valid ERP frame), uint8."""
    rng = np.random.default_rng(seed)
    noise = rng.random((H, W, 3))
    img = gaussian_filter(noise, sigma=(2.0, 2.0, 0.0), mode=("nearest", "wrap", "nearest"))
    img = (img - img.min()) / (img.max() - img.min())
    return np.rint(img * 255).astype(np.uint8)


def crossing_columns(k: int) -> np.ndarray:
    """Columns of frame 0 whose content leaves through one edge and re-enters at the other after a roll by k."""
    return np.arange(W - k, W) if k > 0 else np.arange(0, -k)


@pytest.mark.parametrize("k", [10, -10])
def test_padded_dis_recovers_a_roll_everywhere_including_the_seam(k):
    f0 = erp_texture()
    f1 = np.roll(f0, k, axis=1)
    flow = FL.dis_flow(f0, f1)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    err = np.abs(flow - np.array([k, 0.0], np.float32))
    assert err.max() < 0.05
    assert err[:, crossing_columns(k)].max() < 0.05


@pytest.mark.parametrize("k", [10, -10])
def test_unpadded_dis_fails_at_the_seam(k):
    f0 = erp_texture()
    f1 = np.roll(f0, k, axis=1)
    bare = FL.dis_flow(f0, f1, pad=0)
    err = np.abs(bare[..., 0] - k)
    cols = crossing_columns(k)
    interior = np.arange(W // 4, 3 * W // 4)
    assert err[:, interior].max() < 0.05  # the method itself is fine away from the seam ...
    assert err[:, cols].mean() > 0.3  # ... but the content that crossed the seam has no match in the bare frame


def test_dis_flow_is_deterministic_and_accepts_float_frames():
    f0 = erp_texture(seed=3)
    f1 = np.roll(f0, 4, axis=1)
    a = FL.dis_flow(f0, f1)
    assert np.array_equal(a, FL.dis_flow(f0, f1))
    b = FL.dis_flow(f0.astype(np.float64) / 255, f1.astype(np.float64) / 255)  # same grey frames
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="preset"):
        FL.dis_flow(f0, f1, preset="slow")
    with pytest.raises(ValueError, match="differ in size"):
        FL.dis_flow(f0, f1[:, :-1])


def test_gray_conversion_and_wrap_padding():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    assert FL.to_gray_u8(rgb).tolist() == [[76, 150, 29, 255]]
    assert np.array_equal(FL.to_gray_u8(rgb.astype(np.float32) / 255), FL.to_gray_u8(rgb))
    row = np.arange(8)[None]
    assert FL.pad_wrap(row, 2).tolist() == [[6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1]]


def test_fwd_bwd_consistency_is_seam_aware():
    h, w = 16, 32
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = -4.0  # everything moves left: columns 0..3 leave through the seam
    bwd = -fwd
    fwd_ok, bwd_ok = FL.fwd_bwd_consistency(fwd, bwd)
    assert fwd_ok.all() and bwd_ok.all()
    fwd_ok, _ = FL.fwd_bwd_consistency(fwd, np.zeros_like(bwd))  # inconsistent pair: |error| 4 > 0.05 * 4 + 0.5
    assert not fwd_ok.any()
    # a moving block, fwd +4 on columns 8..15 and its exact inverse: consistent (the official script, which warps
    # the backward flow by itself, rejects the block's first 4 columns)
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[:, 8:16, 0] = 4
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[:, 12:20, 0] = -4
    fwd_ok, _ = FL.fwd_bwd_consistency(fwd, bwd)
    assert fwd_ok[:, 8:16].all()
    # the same block straddling the seam (columns 28..31 and 0..3 move to 0..7): the look-up must wrap
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[:, 28:, 0] = 4
    fwd[:, :4, 0] = 4
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[:, :8, 0] = -4
    fwd_ok, bwd_ok = FL.fwd_bwd_consistency(fwd, bwd)
    assert fwd_ok[:, 28:].all() and fwd_ok[:, :4].all() and bwd_ok[:, :8].all()
    # flows given the long way round (e.g. from a seam-blind method) are compared the short way
    fwd = np.full((h, w, 2), 0.0, np.float32)
    fwd[..., 0] = w - 4.0
    bwd = np.zeros_like(fwd)
    bwd[..., 0] = 4.0
    assert FL.fwd_bwd_consistency(fwd, bwd)[0].all()


def test_dis_flow_crops_the_padding_and_wraps_the_result(monkeypatch):
    import cv2

    seen = {}

    class FakeDIS:
        def calc(self, a, b, _):
            seen["shape"] = a.shape
            out = np.zeros((*a.shape, 2), np.float32)
            out[..., 0] = np.arange(a.shape[1])[None, :] + (W - 3.0)  # long-way flows, distinct per column
            return out

    monkeypatch.setattr(cv2, "DISOpticalFlow_create", lambda preset: FakeDIS())
    f0 = erp_texture()
    flow = FL.dis_flow(f0, f0, pad=8)
    assert seen["shape"] == (H, W + 16)
    raw = np.arange(8, 8 + W) + W - 3.0  # the fake flow of the cropped columns
    np.testing.assert_allclose(flow[0, :, 0], raw - W * np.round(raw / W))
    assert np.abs(flow[..., 0]).max() <= W / 2


def test_missing_opencv_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    f0 = erp_texture()
    with pytest.raises(ImportError, match="opencv-python-headless"):
        FL.dis_flow(f0, f0)
