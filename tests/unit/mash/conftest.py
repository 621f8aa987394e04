"""Fixtures shared by MASH's unit tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    """A 32x32 RGB horizontal ramp with i.i.d. Gaussian noise (sigma 25), 0-255 float32."""
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(40, 200, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    return (clean + rng.normal(0, 25, clean.shape)).astype(np.float32)
