"""What MagNet's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation

SPLITS = ["train", "val", "testA", "testB", "test"]


def raw() -> list[Expectation]:
    """One row per expression (embedded or real); the length limit is checked by `data.encode` at ingest."""
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 4}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_distinct_values_to_contain_set", {"column": "split", "value_set": ["train"]}),
        ("expect_column_values_to_not_be_null", {"column": "sentence"}),
        ("expect_column_values_to_be_between", {"column": "n_words", "min_value": 1}),
    ]


def model_input(size: int) -> list[Expectation]:
    """One row per expression after resizing and encoding: every ground-truth mask keeps some pixels."""
    return [
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_between", {"column": "area", "min_value": 1, "max_value": size * size}),
        ("expect_column_values_to_be_between", {"column": "n_unk", "min_value": 0}),
    ]
