"""Data validation with Great Expectations at every phase boundary.

A pipeline describes its data as a *manifest*: a DataFrame with one row per sample (id, split, shape,
dtype, value range, count of non-finite values, label, source file, ...). `manifest_from_arrays` builds
the common columns from the arrays themselves, so a NaN pixel or a wrong shape is visible to the
expectations. `validate_manifest` runs an expectation suite on it through an ephemeral Great Expectations
context and raises `DataValidationError` naming the dataset, each failed expectation and the offending
rows (with their source file when the manifest has one) before anything downstream runs.

Expectations are written as plain data in each pipeline's `expectations.py`:
`("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0})`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

Expectation = tuple[str, dict[str, Any]]


class DataValidationError(ValueError):
    """Input data failed its expectations; the message says which, where, and how to fix it."""


def array_stats(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype and value statistics of one sample, for a manifest row."""
    arr = np.asarray(array)
    finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.ones(arr.shape, bool)
    vals = arr[finite]
    shape = arr.shape
    return {
        "height": int(shape[0]) if arr.ndim >= 2 else -1,
        "width": int(shape[1]) if arr.ndim >= 2 else -1,
        "channels": int(shape[2]) if arr.ndim >= 3 else 1,
        "ndim": int(arr.ndim),
        "dtype": str(arr.dtype),
        "n_nonfinite": int(arr.size - int(finite.sum())),
        "min": float(vals.min()) if vals.size else float("nan"),
        "max": float(vals.max()) if vals.size else float("nan"),
        "mean": float(vals.mean()) if vals.size else float("nan"),
    }


def manifest_from_arrays(
    arrays: Mapping[str, np.ndarray], extra: Mapping[str, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """One row per array: `sample_id`, the `array_stats` columns, and any extra per-sample columns."""
    rows = []
    for key in arrays:
        row = {"sample_id": key, **array_stats(arrays[key])}
        if extra and key in extra:
            row.update(extra[key])
        rows.append(row)
    return pd.DataFrame(rows)


def _context_batch(df: pd.DataFrame, dataset: str):
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    try:  # no per-metric progress bars in logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # pragma: no cover - older/newer GX layouts
        pass
    source = ctx.data_sources.add_pandas(f"{dataset}_source")
    asset = source.add_dataframe_asset(dataset)
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    return gx, batch_def.get_batch(batch_parameters={"dataframe": df})


def _expectation(gx, name: str, kwargs: dict[str, Any]):
    class_name = "".join(part.capitalize() for part in name.split("_"))
    cls = getattr(gx.expectations, class_name, None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation {name!r}")
    return cls(**kwargs)


def validate_manifest(
    manifest: pd.DataFrame,
    expectations: Sequence[Expectation],
    *,
    dataset: str,
    fix: str = "",
    id_column: str = "sample_id",
    source_column: str = "source",
) -> pd.DataFrame:
    """Validate `manifest` against `expectations`; return it unchanged or raise `DataValidationError`.

    `dataset` names the data in messages (e.g. `mash.raw_manifest`); `fix` tells the user what to do.
    """
    if manifest.empty:
        raise DataValidationError(f"{dataset}: the manifest is empty (no samples were read). {fix}".strip())
    gx, batch = _context_batch(manifest, dataset.replace(".", "_"))
    suite = gx.ExpectationSuite(name=f"{dataset}_suite")
    for name, kwargs in expectations:
        suite.add_expectation(_expectation(gx, name, dict(kwargs)))
    index_cols = [c for c in (id_column, source_column) if c in manifest.columns]
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_cols},
    )
    if result.success:
        log.info("%s: %d samples pass %d expectations", dataset, len(manifest), len(expectations))
        return manifest
    problems = []
    for res in result.results:
        if res.success:
            continue
        cfg = res.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
        where = res.result.get("unexpected_index_list") or []
        rows = ", ".join(
            "/".join(str(r.get(c)) for c in index_cols if c in r) if isinstance(r, dict) else str(r)
            for r in where[:8]
        )
        more = f" (+{len(where) - 8} more)" if len(where) > 8 else ""
        observed = res.result.get("observed_value")
        detail = f"offending rows: {rows}{more}" if rows else f"observed: {observed}"
        problems.append(f"  - {cfg.type} {kwargs}: {detail}")
    raise DataValidationError(
        f"{dataset}: {len(problems)} expectation(s) failed; nothing downstream was run.\n"
        + "\n".join(problems)
        + (f"\nFix: {fix}" if fix else "")
    )


def standard_image_expectations(
    *,
    value_range: tuple[float, float],
    dtypes: Sequence[str],
    channels: Sequence[int],
    multiple_of: int = 1,
    min_rows: int = 1,
) -> list[Expectation]:
    """Expectations every image manifest shares: unique ids, finite values in range, known dtypes and
    channel counts, and (optionally) height and width divisible by `multiple_of`."""
    exps: list[Expectation] = [
        ("expect_table_row_count_to_be_between", {"min_value": min_rows}),
        ("expect_column_values_to_be_unique", {"column": "sample_id"}),
        ("expect_column_values_to_be_between", {"column": "n_nonfinite", "min_value": 0, "max_value": 0}),
        ("expect_column_values_to_be_between", {"column": "min", "min_value": value_range[0]}),
        ("expect_column_values_to_be_between", {"column": "max", "max_value": value_range[1]}),
        ("expect_column_values_to_be_in_set", {"column": "dtype", "value_set": list(dtypes)}),
        ("expect_column_values_to_be_in_set", {"column": "channels", "value_set": list(channels)}),
        ("expect_column_values_to_be_in_set", {"column": "ndim", "value_set": [3]}),
    ]
    if multiple_of > 1:
        exps += [
            ("expect_column_values_to_be_in_set", {"column": "height_mod", "value_set": [0]}),
            ("expect_column_values_to_be_in_set", {"column": "width_mod", "value_set": [0]}),
        ]
    return exps


def add_divisibility(manifest: pd.DataFrame, multiple_of: int) -> pd.DataFrame:
    """Add `height_mod` / `width_mod` columns (remainders) for `standard_image_expectations`."""
    out = manifest.copy()
    out["height_mod"] = out["height"] % multiple_of
    out["width_mod"] = out["width"] % multiple_of
    return out
