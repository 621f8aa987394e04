"""What BUS's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation

SPLITS = ["source_train", "target_train", "target_val"]


def raw(min_per_split: int) -> list[Expectation]:
    """One manifest row per (image, label-id map) pair as read or generated in ingest."""
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 3 * min_per_split}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_values_to_be_in_set", {"column": "has_label", "value_set": [True]}),
        ("expect_column_values_to_be_in_set", {"column": "dtype", "value_set": ["uint8"]}),
        ("expect_column_values_to_be_in_set", {"column": "channels", "value_set": [3]}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_between", {"column": "min", "min_value": 0}),
        ("expect_column_values_to_be_between", {"column": "max", "max_value": 255}),
        # label maps: same size as their image, only known Cityscapes/GTA5 label ids
        ("expect_column_pair_values_to_be_equal", {"column_A": "height", "column_B": "label_height"}),
        ("expect_column_pair_values_to_be_equal", {"column_A": "width", "column_B": "label_width"}),
        ("expect_column_values_to_be_between", {"column": "n_unknown_ids", "min_value": 0, "max_value": 0}),
    ]


def split_sizes(min_per_split: int) -> list[Expectation]:
    """The per-split counts table: every split present and non-empty."""
    return [
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_distinct_values_to_equal_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_values_to_be_between", {"column": "n", "min_value": min_per_split}),
    ]


def model_input(height: int, width: int) -> list[Expectation]:
    """After the open-set label conversion: train ids 0-12, private 13 (target eval only), ignore 255."""
    return [
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "height", "value_set": [height]}),
        ("expect_column_values_to_be_in_set", {"column": "width", "value_set": [width]}),
        ("expect_column_values_to_be_between", {"column": "n_bad_train_ids", "min_value": 0, "max_value": 0}),
        # the source never shows a `private` label (its private pixels are 255); the target val split has them
        ("expect_column_values_to_be_between", {"column": "n_private_in_source", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_between", {"column": "ignore_fraction", "min_value": 0.0, "max_value": 0.95}),
    ]


JOBS: list[Expectation] = [
    ("expect_column_values_to_be_unique", {"column": "job_id"}),
    ("expect_column_values_to_be_in_set", {"column": "kind", "value_set": ["pretrain", "selftrain"]}),
    ("expect_column_values_to_be_between", {"column": "seed", "min_value": 0}),
]
