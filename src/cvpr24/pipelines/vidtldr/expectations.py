"""What vid-TLDR's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation

SPLITS = ["train", "val", "test", "clutter"]
METHODS = ["none", "vidtldr", "tome", "random", "evit"]


def clips(frames: int, size: int, num_classes: int, required_splits: list[str]) -> list[Expectation]:
    """One manifest row per clip: its shape, value range, label and split."""
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 1}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_distinct_values_to_contain_set", {"column": "split", "value_set": required_splits}),
        ("expect_column_values_to_be_between", {"column": "label", "min_value": 0, "max_value": num_classes - 1}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_in_set", {"column": "dtype", "value_set": ["uint8"]}),
        ("expect_column_values_to_be_between", {"column": "min", "min_value": 0}),
        ("expect_column_values_to_be_between", {"column": "max", "max_value": 255}),
        ("expect_column_values_to_be_in_set", {"column": "frames", "value_set": [frames]}),
        ("expect_column_values_to_be_in_set", {"column": "height", "value_set": [size]}),
        ("expect_column_values_to_be_in_set", {"column": "width", "value_set": [size]}),
        ("expect_column_values_to_be_in_set", {"column": "channels", "value_set": [3]}),
        ("expect_column_values_to_be_between", {"column": "mask_fraction", "min_value": 0.0, "max_value": 1.0}),
    ]


def model_input(tubelet: int, patch: int) -> list[Expectation]:
    """Clips ready for the tubelet embedding: frames and sides divisible by the tubelet / patch."""
    return [
        ("expect_column_values_to_be_in_set", {"column": "frames_mod", "value_set": [0]}),
        ("expect_column_values_to_be_in_set", {"column": "side_mod", "value_set": [0]}),
        ("expect_column_values_to_be_between", {"column": "n_clips", "min_value": 1}),
        ("expect_column_values_to_be_between", {"column": "n_classes_seen", "min_value": 2}),
        ("expect_column_values_to_be_between", {"column": "std_min", "min_value": 1e-6}),
    ]


def settings(num_tokens: int) -> list[Expectation]:
    """The reduction settings to evaluate: known methods, schedules that leave at least one token."""
    return [
        ("expect_column_values_to_be_unique", {"column": "setting_id"}),
        ("expect_column_values_to_be_unique", {"column": "row"}),
        ("expect_column_values_to_be_in_set", {"column": "method", "value_set": METHODS}),
        ("expect_column_values_to_be_in_set", {"column": "metric", "value_set": ["hidden", "keys"]}),
        ("expect_column_values_to_be_between", {"column": "tokens_out", "min_value": 1, "max_value": num_tokens}),
    ]
