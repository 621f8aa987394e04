"""What CMS's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation, standard_image_expectations


def raw(n_classes: int, channels: int, size: int, min_rows: int = 2) -> list[Expectation]:
    """Raw images of one dataset: uint8 in [0, 255], finite, one known shape, labels 0..n_classes-1."""
    return standard_image_expectations(value_range=(0, 255), dtypes=["uint8"], channels=[channels],
                                       min_rows=min_rows) + [
        ("expect_column_values_to_be_in_set", {"column": "height", "value_set": [size]}),
        ("expect_column_values_to_be_in_set", {"column": "width", "value_set": [size]}),
        ("expect_column_values_to_be_between", {"column": "label", "min_value": 0, "max_value": n_classes - 1}),
        ("expect_column_values_to_not_be_null", {"column": "label"}),
        ("expect_column_values_to_not_be_null", {"column": "source"}),
    ]


SPLIT: list[Expectation] = [
    ("expect_column_values_to_be_unique", {"column": "sample_id"}),
    ("expect_column_values_to_be_in_set", {"column": "split", "value_set": ["labelled", "unlabelled", "heldout"]}),
    # the GCD setting: no new-class image is ever labelled
    ("expect_column_values_to_be_in_set", {"column": "labelled_new_class", "value_set": [False]}),
    ("expect_column_values_to_be_between", {"column": "y", "min_value": 0}),
]

# one row per (dataset, split): every split of every dataset must hold images
SPLIT_SIZES: list[Expectation] = [
    ("expect_column_values_to_be_between", {"column": "n", "min_value": 1}),
    ("expect_column_values_to_be_between", {"column": "n_old_classes", "min_value": 1}),
]
