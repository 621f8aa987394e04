from __future__ import annotations

import numpy as np
import pytest

from cvpr24.core.validation import (
    DataValidationError,
    add_divisibility,
    manifest_from_arrays,
    standard_image_expectations,
    validate_manifest,
)

EXPS = standard_image_expectations(value_range=(0, 255), dtypes=["float32"], channels=[1, 3], multiple_of=32)


def _arrays():
    rng = np.random.default_rng(0)
    return {f"img{i}": rng.uniform(0, 255, (64, 64, 3)).astype(np.float32) for i in range(3)}


def test_good_manifest_passes():
    m = add_divisibility(manifest_from_arrays(_arrays(), {"img0": {"source": "a.png"}}), 32)
    assert validate_manifest(m, EXPS, dataset="t.good") is m


def test_nan_image_is_named_in_the_error():
    arrays = _arrays()
    arrays["img1"][3, 3, 0] = np.nan
    m = add_divisibility(manifest_from_arrays(arrays), 32)
    with pytest.raises(DataValidationError) as err:
        validate_manifest(m, EXPS, dataset="t.nan", fix="replace the file")
    text = str(err.value)
    assert "t.nan" in text and "n_nonfinite" in text and "img1" in text and "replace the file" in text
    assert "img0" not in text


def test_wrong_shape_and_range_fail():
    arrays = _arrays()
    arrays["img2"] = np.full((48, 64, 3), 300, np.float32)
    m = add_divisibility(manifest_from_arrays(arrays), 32)
    with pytest.raises(DataValidationError) as err:
        validate_manifest(m, EXPS, dataset="t.shape")
    assert "height_mod" in str(err.value) and "max" in str(err.value) and "img2" in str(err.value)


def test_empty_manifest_fails():
    import pandas as pd

    with pytest.raises(DataValidationError, match="empty"):
        validate_manifest(pd.DataFrame(), EXPS, dataset="t.empty")
