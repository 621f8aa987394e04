from __future__ import annotations

import json

import pandas as pd

from cvpr24.core.cicheck import compare
from cvpr24.core.reporting import compose_table, metrics_json, paper_rows, table_csv, table_specs

PAPER = {"tables": {"table_1": {
    "title": "t", "index": ["method"],
    "columns": [{"key": "psnr", "label": "PSNR", "fmt": ".2f"}, {"key": "ssim", "label": "SSIM", "fmt": ".3f"}],
    "rows": [{"method": "A", "psnr": 30.0, "ssim": 0.9}, {"method": "B", "psnr": None, "ssim": "not found"}],
}}}


def _ours():
    return pd.DataFrame([
        {"table": "table_1", "row": "A", "source": "ours", "metric": "psnr", "value": 28.123, "data": "d", "note": ""},
        {"table": "table_1", "row": "A", "source": "ours", "metric": "ssim", "value": float("nan"), "data": "",
         "note": "needs weights"},
        {"table": "table_1", "row": "C", "source": "ours", "metric": "psnr", "value": 27.0, "data": "d", "note": ""},
    ])


def test_compose_keeps_paper_layout_and_explains_missing_cells():
    spec = table_specs(PAPER)["table_1"]
    display, notes = compose_table(spec, _ours())
    assert list(display["method"]) == ["A", "B", "C (ours only)"]
    a = display.iloc[0]
    assert a["PSNR (paper)"] == "30.00" and a["PSNR (ours)"] == "28.12"
    assert a["SSIM (ours)"].startswith("—") and "needs weights" in notes
    b = display.iloc[1]
    assert b["PSNR (paper)"] == "–" and b["SSIM (paper)"] == "not found"
    assert display.iloc[2]["PSNR (paper)"] == "–" and display.iloc[2]["PSNR (ours)"] == "27.00"


def test_csv_and_metrics_json_carry_measured_values_only():
    spec = table_specs(PAPER)["table_1"]
    csv = pd.read_csv(pd.io.common.StringIO(table_csv(spec, _ours())))
    assert csv.loc[csv["method"] == "A", "psnr_ours"].iloc[0] == 28.123
    assert csv.loc[csv["method"] == "A", "ssim_note"].iloc[0] == "needs weights"
    doc = json.loads(metrics_json(_ours()))
    assert doc["table_1"]["A"] == {"psnr": 28.123}
    assert paper_rows(PAPER).query("row == 'A' and metric == 'psnr'")["value"].iloc[0] == 30.0


def test_ci_compare_tolerance_and_ignored_timings():
    old = {"t": {"A": {"psnr": 30.0, "inference_time_s": 1.0}}}
    assert compare(old, {"t": {"A": {"psnr": 30.0001, "inference_time_s": 9.0}}}) == []
    problems = compare(old, {"t": {"A": {"psnr": 29.5}}})
    assert len(problems) == 1 and "29.5" in problems[0]
    assert compare(old, {"t": {"A": {"psnr": 30.0}, "B": {"psnr": 1.0}}})[0].startswith("t/B/psnr: new")


def test_numpy_counts_are_numbers_so_n_reaches_the_csv():
    import numpy as np

    from cvpr24.core.reporting import _is_number

    assert _is_number(np.int64(3)) and _is_number(np.float32(0.5)) and _is_number(2)
    assert not _is_number(True) and not _is_number(np.bool_(True)) and not _is_number(float("nan"))
    assert not _is_number(None) and not _is_number("3")


def test_table_with_no_rows_of_ours_renders_paper_only():
    from cvpr24.core.reporting import table_markdown

    spec = table_specs(PAPER)["table_1"]
    ours = _ours().assign(n=1, over="seeds")
    empty = ours[ours["table"] == "other"]   # this profile measured nothing for table_1
    display, notes = compose_table(spec, empty)
    md = table_markdown(spec, display, notes, ours=empty)
    assert "30.00" in md and "(n=…)" not in md
    assert "(n=…) after each of our numbers: how many seeds" in table_markdown(spec, *compose_table(spec, ours),
                                                                               ours=ours)
