from __future__ import annotations

import numpy as np
import pytest

from cvpr24.core import metrics as M


def test_psnr_of_one_grey_level_offset_is_48_13_db():
    img = np.random.default_rng(0).integers(0, 200, (32, 32, 3)).astype(np.float32)
    assert M.psnr(img + 1, img) == pytest.approx(48.1308, abs=1e-3)


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(0)
    ramp = np.linspace(20, 230, 48, dtype=np.float32)
    img = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).astype(np.float32)
    assert M.ssim(img, img) == pytest.approx(1.0)
    assert M.ssim(img + rng.normal(0, 30, img.shape).astype(np.float32), img) < 0.6
    grey = img[..., :1]
    assert M.ssim(grey, grey) == pytest.approx(1.0)


def test_metric_inputs_are_checked():
    a = np.zeros((8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="shape"):
        M.psnr(a, np.zeros((8, 9, 1), np.float32))
    b = a.copy()
    b[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.psnr(b, a)


def test_lpips_is_reported_unavailable_without_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(M, "lpips_weights_path", lambda: tmp_path / "missing.pth")
    out = M.lpips_distance(np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32))
    assert isinstance(out, M.Unavailable)
    assert "cannot be downloaded" in str(out)
