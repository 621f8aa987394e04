"""What MASH's data must look like at each phase boundary (Great Expectations, via core.validation)."""

from __future__ import annotations

from cvpr24.core.validation import Expectation, standard_image_expectations

UNET_MULTIPLE = 32  # five 2x2 poolings

GROUPS = ["gauss_b0", "gauss_b05", "gauss_b1", "cam_iid", "cam_rgb", "cam_grey", "cam_demosaic",
          "sidd_val", "sidd_bench", "fmdd", "polyu"]


def clean(multiple_of: int) -> list[Expectation]:
    """Raw clean images; `multiple_of` = 32 for embedded crops, 1 for real data (cropped in preprocess)."""
    return standard_image_expectations(value_range=(0, 255), dtypes=["uint8"], channels=[1, 3],
                                       multiple_of=multiple_of)


def noisy(multiple_of: int) -> list[Expectation]:
    """Raw noisy images. Unclipped additive noise can leave [0, 255]; anything beyond 12 sigma of the
    strongest noise used here (sigma 25) signals a wrong scale (e.g. an image already in [0, 1])."""
    return standard_image_expectations(
        value_range=(-300, 555), dtypes=["float32"], channels=[1, 3], multiple_of=multiple_of
    ) + [
        ("expect_column_values_to_be_in_set", {"column": "group", "value_set": GROUPS}),
        ("expect_column_values_to_not_be_null", {"column": "source"}),
    ]

# The U-Net's inputs: noisy images cropped to multiples of 32, still in 0-255 (scaled to [0, 1] per job).
MODEL_INPUT = standard_image_expectations(
    value_range=(-300, 555), dtypes=["float32"], channels=[1, 3], multiple_of=UNET_MULTIPLE
)
JOBS: list[Expectation] = [
    ("expect_column_values_to_be_unique", {"column": "job_id"}),
    ("expect_column_values_to_be_in_set",
     {"column": "kind", "value_set": ["bsd", "bm3d_white", "bm3d_psd", "nlmeans", "zs_n2n"]}),
    ("expect_column_values_to_be_between", {"column": "tau", "min_value": 0.0, "max_value": 0.99}),
    ("expect_column_values_to_be_between", {"column": "tile_size", "min_value": 1, "max_value": 16}),
]
