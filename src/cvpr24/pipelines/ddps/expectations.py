"""What DDPS's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation
from cvpr24.pipelines.ddps.data import FAMILIES

SPLITS = ["train", "test"]
LABELS = [*FAMILIES, "real"]


def raw(n_lights: int) -> list[Expectation]:
    """One row per scene of the official layout (embedded or real)."""
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 2}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_distinct_values_to_contain_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_values_to_be_in_set", {"column": "family", "value_set": LABELS}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_in_set", {"column": "channels", "value_set": [3]}),
        ("expect_column_values_to_be_in_set", {"column": "ndim", "value_set": [3]}),
        ("expect_column_values_to_be_in_set", {"column": "n_basis", "value_set": [n_lights]}),
        ("expect_column_values_to_be_in_set", {"column": "basis_dtype", "value_set": ["uint8"]}),
        ("expect_column_values_to_be_in_set", {"column": "basis_shape_ok", "value_set": [True]}),
        ("expect_column_values_to_be_between", {"column": "mask_pixels", "min_value": 1}),
        ("expect_column_values_to_be_between", {"column": "basis_max", "min_value": 1}),
        ("expect_column_values_to_be_between", {"column": "normal_norm_err", "min_value": 0, "max_value": 0.02}),
    ]


def model_input(min_pixels: int) -> list[Expectation]:
    """One row per scene after erosion and gathering of the object pixels."""
    return [
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_distinct_values_to_contain_set", {"column": "split", "value_set": SPLITS}),
        ("expect_column_values_to_be_between", {"column": "valid_pixels", "min_value": min_pixels}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_between", {"column": "basis_mean", "min_value": 0.0, "max_value": 255.0}),
        ("expect_column_values_to_be_between", {"column": "normal_z_max", "max_value": 0.2}),
    ]


def runs(heuristics: list[str]) -> list[Expectation]:
    return [
        ("expect_table_row_count_to_be_between", {"min_value": 1}),
        ("expect_column_values_to_be_unique", {"column": "run_id"}),
        ("expect_column_values_to_be_in_set", {"column": "init", "value_set": heuristics}),
        ("expect_column_values_to_be_in_set", {"column": "channels", "value_set": ["rgb", "mono"]}),
        ("expect_column_values_to_be_in_set", {"column": "basis", "value_set": ["realistic", "simplified"]}),
        ("expect_column_values_to_be_between", {"column": "n_patterns", "min_value": 1, "max_value": 144}),
    ]
