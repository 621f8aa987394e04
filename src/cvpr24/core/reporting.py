"""Reports: each paper table in the paper's layout, the paper's number beside ours.

`pipelines/<slug>/paper.yaml` describes every table (`tables.<table_id>`): its title, the columns that
identify a row (`index`, the last one naming the method), the metric columns (`columns`: key, label,
number format, and `ours`: which of our data fills the column), and the paper's rows with its numbers
(`null` = blank in the paper, `"not found"` = the number could not be found in any public source).

The evaluate phase produces *table rows* (see `cvpr24.core.tracking`): `table, row, source, metric, value,
data, note`. `compose_table` joins the two: every paper row keeps its place; rows we ran that the paper
does not have are appended, marked as ours only; a cell we could not fill shows a footnote with the
reason instead of a number. Tables are written as Markdown (for people) and CSV (for tools).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

NOT_FOUND = "not found"


@dataclass
class TableSpec:
    table_id: str
    title: str
    index: list[str]
    columns: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    caption: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def row_key(self) -> str:
        return self.index[-1]


def table_specs(paper: dict[str, Any]) -> dict[str, TableSpec]:
    """Parse `paper.yaml`'s `tables` section."""
    specs = {}
    for table_id, t in paper["tables"].items():
        specs[table_id] = TableSpec(
            table_id=table_id,
            title=t["title"],
            index=list(t["index"]),
            columns=list(t["columns"]),
            rows=list(t.get("rows") or []),
            caption=t.get("caption", ""),
            extra={k: v for k, v in t.items() if k not in {"title", "index", "columns", "rows", "caption"}},
        )
    return specs


def paper_rows(paper: dict[str, Any]) -> pd.DataFrame:
    """The paper's numbers in the long table-rows format (`source = paper`), for MLflow."""
    records = []
    for spec in table_specs(paper).values():
        for row in spec.rows:
            for col in spec.columns:
                value = row.get(col["key"])
                records.append(
                    {
                        "table": spec.table_id,
                        "row": str(row[spec.row_key]),
                        "source": "paper",
                        "metric": col["key"],
                        "value": float(value) if _is_number(value) else float("nan"),
                        "data": col.get("paper_data", ""),
                        "note": NOT_FOUND if value == NOT_FOUND else "",
                    }
                )
    return pd.DataFrame(records)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(float(value))


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if value == NOT_FOUND:
        return NOT_FOUND
    if _is_number(value):
        return format(float(value), fmt)
    return str(value)


def compose_table(spec: TableSpec, ours: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table in the paper's layout with `<label> (paper)` and `<label> (ours)` columns.

    Returns the display DataFrame (strings) and the footnotes its cells refer to.
    """
    ours = ours[ours["table"] == spec.table_id] if not ours.empty else ours
    footnotes: list[str] = []

    def note_ref(text: str) -> str:
        if text not in footnotes:
            footnotes.append(text)
        return f"[{footnotes.index(text) + 1}]"

    def ours_cell(row_name: str, col: dict[str, Any]) -> str:
        if ours.empty:
            return "not run " + note_ref("this profile did not produce the row")
        hit = ours[(ours["row"] == row_name) & (ours["metric"] == col["key"])]
        if hit.empty:
            if col.get("ours") is None:
                return "n/a " + note_ref(col.get("ours_reason", "no embedded counterpart of this column"))
            return "not run " + note_ref("this row is not computed in this profile")
        rec = hit.iloc[-1]
        if _is_number(rec["value"]):
            return _fmt(rec["value"], col.get("fmt", ".2f"))
        return "— " + note_ref(str(rec.get("note") or "not computed"))

    out_rows = []
    paper_names = [str(r[spec.row_key]) for r in spec.rows]
    for prow in spec.rows:
        name = str(prow[spec.row_key])
        rec = {c: prow.get(c, "") for c in spec.index}
        for col in spec.columns:
            rec[f"{col['label']} (paper)"] = _fmt(prow.get(col["key"]), col.get("fmt", ".2f"))
            rec[f"{col['label']} (ours)"] = ours_cell(name, col)
        out_rows.append(rec)
    extra_names = [] if ours.empty else [r for r in dict.fromkeys(ours["row"]) if r not in paper_names]
    for name in extra_names:
        rec = {c: "" for c in spec.index}
        rec[spec.row_key] = f"{name} (ours only)"
        for col in spec.columns:
            rec[f"{col['label']} (paper)"] = "–"
            rec[f"{col['label']} (ours)"] = ours_cell(name, col)
        out_rows.append(rec)
    return pd.DataFrame(out_rows), footnotes


def table_markdown(spec: TableSpec, display: pd.DataFrame, footnotes: list[str], data_note: str = "") -> str:
    lines = [f"## {spec.table_id.replace('_', ' ').title()}: {spec.title}", ""]
    if spec.caption:
        lines += [spec.caption, ""]
    if data_note:
        lines += [data_note, ""]
    lines.append(display.to_markdown(index=False))
    if footnotes:
        lines += ["", *[f"[{i + 1}] {text}  " for i, text in enumerate(footnotes)]]
    col_notes = [f"- **{c['label']}**: ours on {c['ours']}" for c in spec.columns if c.get("ours")]
    if col_notes:
        lines += ["", "Data behind our columns:", *col_notes]
    return "\n".join(lines) + "\n"


def table_csv(spec: TableSpec, ours: pd.DataFrame) -> str:
    """Machine-readable table: index columns, then `<key>_paper`, `<key>_ours`, `<key>_note` per column."""
    sub = ours[ours["table"] == spec.table_id] if not ours.empty else ours
    names = [str(r[spec.row_key]) for r in spec.rows]
    if not sub.empty:
        names += [r for r in dict.fromkeys(sub["row"]) if r not in names]
    paper_by_name = {str(r[spec.row_key]): r for r in spec.rows}
    records = []
    for name in names:
        prow = paper_by_name.get(name, {})
        rec = {c: prow.get(c, "") for c in spec.index}
        rec[spec.row_key] = name
        rec["in_paper"] = name in paper_by_name
        for col in spec.columns:
            pv = prow.get(col["key"])
            rec[f"{col['key']}_paper"] = pv if _is_number(pv) else ("" if pv is None else pv)
            hit = sub[(sub["row"] == name) & (sub["metric"] == col["key"])] if not sub.empty else sub
            if not hit.empty and _is_number(hit.iloc[-1]["value"]):
                rec[f"{col['key']}_ours"] = float(hit.iloc[-1]["value"])
                rec[f"{col['key']}_note"] = ""
            else:
                rec[f"{col['key']}_ours"] = ""
                rec[f"{col['key']}_note"] = "" if hit.empty else str(hit.iloc[-1].get("note", ""))
        records.append(rec)
    return pd.DataFrame(records).to_csv(index=False)


def claims_markdown(claims: pd.DataFrame, title: str = "Key claims checked on the embedded data") -> str:
    """claims: id, claim, check, measured, margin, passed (bool), note."""
    lines = [f"## {title}", ""]
    if claims.empty:
        return "\n".join(lines + ["No claims were checked in this profile.", ""])
    show = claims.copy()
    show["result"] = show["passed"].map(lambda p: "PASS" if p is True else ("FAIL" if p is False else "n/a"))
    show["margin"] = show["margin"].map(lambda m: f"{m:+.3f}" if _is_number(m) else "–")
    cols = ["id", "claim", "check", "measured", "margin", "result"]
    if "note" in show.columns:
        cols.append("note")
    lines.append(show[cols].to_markdown(index=False))
    n_pass = int((claims["passed"] == True).sum())  # noqa: E712
    lines += ["", f"{n_pass} of {len(claims)} claims hold on this data. A positive margin is by how much "
              "the check holds; a negative one by how much it fails.", ""]
    return "\n".join(lines)


def metrics_json(ours: pd.DataFrame, claims: pd.DataFrame | None = None) -> str:
    """`metrics.json` for `dvc metrics show/diff`: {table: {row: {metric: value}}, claims: {id: margin}}."""
    out: dict[str, Any] = {}
    for rec in ours.itertuples():
        if rec.source != "ours" or not _is_number(rec.value):
            continue
        out.setdefault(rec.table, {}).setdefault(rec.row, {})[rec.metric] = round(float(rec.value), 6)
    if claims is not None and not claims.empty:
        out["claims"] = {
            str(c.id): {"margin": round(float(c.margin), 6) if _is_number(c.margin) else None,
                        "passed": bool(c.passed) if c.passed in (True, False) else None}
            for c in claims.itertuples()
        }
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (nodes return bytes; the catalog writes)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
