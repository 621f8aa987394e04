"""What StyleGRU's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation
from cvpr24.pipelines.stylegru.data import KNOWN_METHODS

DATASETS = ["ffpp", "cdf", "dfd", "fsh", "dfo"]
SPLITS = ["train", "val", "test"]
METHODS = sorted(KNOWN_METHODS)


def raw(clip_size: int) -> list[Expectation]:
    """One row per video of the layout (embedded or real)."""
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 4}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "dataset", "value_set": DATASETS}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_values_to_be_in_set", {"column": "method", "value_set": METHODS}),
        ("expect_column_values_to_be_in_set", {"column": "label", "value_set": [0, 1]}),
        ("expect_column_distinct_values_to_contain_set", {"column": "label", "value_set": [0, 1]}),
        ("expect_column_values_to_be_between", {"column": "n_frames", "min_value": clip_size}),
    ]


def model_input() -> list[Expectation]:
    """One row per clip after encoding."""
    return [
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_distinct_values_to_contain_set", {"column": "split", "value_set": ["train", "val", "test"]}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_between", {"column": "latent_abs_max", "min_value": 0.0, "max_value": 1e3}),
    ]
