"""Reports: each paper table in the paper's layout, with the paper's number beside ours where it has one.

This module is the one tail every paper shares (the contract: `src/cvpr24/core/CONTRACT.md`). A paper's
code measures; everything a reader and MLflow see about tables and claims is rendered here from
`pipelines/<slug>/paper.yaml` and the measurements.

`paper.yaml` describes every table (`tables.<table_id>`): how the paper names it (`label`, e.g. "Table 1"),
its `title` and `caption`, the columns that identify a row (`index`, the last one naming the method), the
metric columns (`columns`: key, label, number format) and the paper's rows with its numbers (`null` = blank
in the paper, `"not found"` = the number could not be found in any public source). A row whose numbers come
from another paper or a leaderboard carries `quoted_from: <where>`: it is shown as quoted, never as the
paper's, and goes to MLflow as `source=quoted`.

Our side is the long *table-rows* frame built with `TableRows` (see also `cvpr24.core.tracking`):
`table, row, source, metric, value, n, std, over, data, note` - `value` is the mean of `n` per-seed (or
per-image) values, `std` their spread when `over == "seeds"`. `compose_table` joins the two: every paper row
keeps its place; rows we ran that the paper does not have are appended, marked as ours only; a cell we could
not fill shows a footnote with the reason instead of a number; every number of ours shows its `n`.

`build_report` writes a paper's whole report folder in one fixed shape: `README.md` (sections in
`SECTIONS` order), `table_<name>.md/.csv` per table, `claims.md/.csv`, `metrics.json`, figures.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core import runtime
from cvpr24.core.claims import NA, tally, tally_text

NOT_FOUND = "not found"
SECTIONS = ("What differs from the paper", "Tables", "Claims", "Figures", "Reading the results",
            "How to regenerate")


@dataclass
class TableSpec:
    table_id: str
    title: str
    index: list[str]
    columns: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    caption: str = ""
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def row_key(self) -> str:
        return self.index[-1]

    @property
    def file_stem(self) -> str:
        """One file-name scheme for every paper: `table_<name>` (`table_1`, `table_gcd`, ...)."""
        return "table_" + self.table_id.removeprefix("table_")


_SPEC_KEYS = {"title", "index", "columns", "rows", "caption", "label"}


def table_specs(paper: Mapping[str, Any]) -> dict[str, TableSpec]:
    """Parse `paper.yaml`'s `tables` section."""
    specs = {}
    for table_id, t in paper["tables"].items():
        label = t.get("label")
        if not label:  # papers not yet on the contract; CONTRACT.md requires `label`
            label = table_id.replace("_", " ").title()
        specs[table_id] = TableSpec(
            table_id=table_id, title=t["title"], index=list(t["index"]), columns=list(t["columns"]),
            rows=list(t.get("rows") or []), caption=t.get("caption", ""), label=str(label),
            extra={k: v for k, v in t.items() if k not in _SPEC_KEYS},
        )
    return specs


def _row_source(row: Mapping[str, Any]) -> str:
    return "quoted" if row.get("quoted_from") else "paper"


def paper_rows(paper: Mapping[str, Any]) -> pd.DataFrame:
    """The published numbers in the long table-rows format (`source` = `paper` or `quoted`), for MLflow."""
    records = []
    for spec in table_specs(paper).values():
        for row in spec.rows:
            for col in spec.columns:
                value = row.get(col["key"])
                records.append({
                    "table": spec.table_id, "row": str(row[spec.row_key]), "source": _row_source(row),
                    "metric": col["key"], "value": float(value) if _is_number(value) else float("nan"),
                    "data": str(row.get("quoted_from") or col.get("paper_data", "")),
                    "note": NOT_FOUND if value == NOT_FOUND else "",
                })
    return pd.DataFrame(records)


def _is_number(value: Any) -> bool:
    """A real, non-NaN number: Python or NumPy ints and floats (not bools)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            and not math.isnan(float(value)))


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if value == NOT_FOUND:
        return NOT_FOUND
    if _is_number(value):
        return format(float(value), fmt)
    return str(value)


# --------------------------------------------------------------------------------- our table rows
class TableRows:
    """The one builder of a paper's table rows. `add` one cell from its per-seed (or per-image) values;
    `frame` returns the long frame the report, metrics.json and MLflow read.

        rows = TableRows()
        rows.add("table_1", "MASH", "sidd_val_psnr", per_image_psnr, over="images", data="cam_rgb")
        rows.add("table_1", "DIP", "sidd_val_psnr", None, note="needs 1000s of iterations per image")
        return rows.frame(profile=runtime["profile"], data_fingerprint=fp, params={"train": train})
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, table: str, row: str, metric: str, values: Any, *, over: str = "seeds", data: str = "",
            note: str = "") -> None:
        """`values`: one number, a sequence / Series / {unit: value} of per-unit numbers, or None (with a
        `note` saying why the cell is empty). A NaN among the values makes the cell empty, never dropped."""
        if values is None:
            vals: list[float] = []
            over = ""
        elif isinstance(values, Mapping):
            vals = [float(v) for v in values.values()]
        elif isinstance(values, pd.Series | list | tuple) or hasattr(values, "__array__"):
            vals = [float(v) for v in list(values)]
        else:
            vals = [float(values)]
        n = len(vals)
        bad = [v for v in vals if math.isnan(v)]
        if n == 0 or bad:
            value, std = float("nan"), float("nan")
            if not note:
                note = f"{len(bad)} of {n} {over} have no value" if bad else "not computed in this profile"
        else:
            value = sum(vals) / n
            std = float(pd.Series(vals).std(ddof=1)) if n > 1 else float("nan")
        self.records.append({"table": table, "row": str(row), "source": "ours", "metric": metric,
                             "value": value, "n": n, "std": std, "over": over, "data": data, "note": note})

    def frame(self, *, profile: str = "", data_fingerprint: str = "", params: Mapping[str, Any] | None = None,
              ) -> pd.DataFrame:
        from cvpr24.core.tracking import flatten

        out = pd.DataFrame(self.records, columns=["table", "row", "source", "metric", "value", "n", "std",
                                                  "over", "data", "note"])
        out["profile"] = profile
        out["data_fingerprint"] = data_fingerprint
        out["params"] = json.dumps(flatten(dict(params or {})), default=str)
        return out


def mlflow_rows(rows: pd.DataFrame, paper: Mapping[str, Any]) -> pd.DataFrame:
    """Our table rows plus the published numbers (`source=paper` / `source=quoted`), one MLflow run per row."""
    return pd.concat([rows, paper_rows(paper)], ignore_index=True)


# Units whose values are right/wrong outcomes (0 or 100 %): their standard deviation says nothing a reader can
# use (7.5 % accuracy over 600 clips shows as 7.5 ± 26.7), so only n is shown; the CSV keeps the std.
BINARY_UNITS = frozenset({"clips"})


def _evidence(rec: Mapping[str, Any], fmt: str) -> str:
    """`28.12 ± 0.31 (n=3)`: the mean, the standard deviation over its units (seeds, images, scenes) and how
    many there are; `28.12 (n=1)` for one unit, plain when `n` is unknown."""
    text = _fmt(rec["value"], fmt)
    n = rec.get("n")
    if not rec.get("over") or n is None or (isinstance(n, float) and math.isnan(n)):
        return text
    std = rec.get("std")
    if int(n) > 1 and _is_number(std) and rec.get("over") not in BINARY_UNITS:
        text += f" ± {format(float(std), fmt)}"
    return text + f" (n={int(n)})"


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
            return _evidence(rec, col.get("fmt", ".2f"))
        return "— " + note_ref(str(rec.get("note") or "not computed"))

    out_rows = []
    paper_names = [str(r[spec.row_key]) for r in spec.rows]
    for prow in spec.rows:
        name = str(prow[spec.row_key])
        rec = {c: prow.get(c, "") for c in spec.index}
        quoted = prow.get("quoted_from")
        for col in spec.columns:
            cell = _fmt(prow.get(col["key"]), col.get("fmt", ".2f"))
            if quoted and cell not in ("–", NOT_FOUND):
                cell += " " + note_ref(f"quoted from {quoted}; not a number of this paper")
            rec[f"{col['label']} (paper)"] = cell
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


def table_markdown(spec: TableSpec, display: pd.DataFrame, footnotes: list[str], data_note: str = "",
                   column_notes: Mapping[str, str] | None = None, ours: pd.DataFrame | None = None) -> str:
    lines = [f"### {spec.label}: {spec.title}" if spec.label else f"### {spec.title}", ""]
    if spec.caption:
        lines += [spec.caption, ""]
    if data_note:
        lines += [data_note, ""]
    lines.append(display.to_markdown(index=False))
    if footnotes:
        lines += ["", *[f"[{i + 1}] {text}  " for i, text in enumerate(footnotes)]]
    if ours is not None and "n" in ours.columns:
        sub = ours[ours["table"] == spec.table_id]
        # .astype(bool): on a table with no rows of ours the map gives an empty float Series, which [] would
        # read as column labels
        shown = sub[sub["value"].map(_is_number).astype(bool)] if "over" in sub else sub.iloc[0:0]
        overs = sorted({str(o) for o in shown["over"].dropna() if o})
        if overs:
            lines += ["", f"(n=…) after each of our numbers: how many {' / '.join(overs)} it averages; "
                      "± is the standard deviation over them."]
    notes = dict(column_notes or {})
    col_notes = [f"- **{c['label']}**: ours on {notes.get(c['key']) or c['ours']}" for c in spec.columns
                 if notes.get(c["key"]) or c.get("ours")]
    if col_notes:
        lines += ["", "Data behind our columns:", *col_notes]
    return "\n".join(lines) + "\n"


def table_csv(spec: TableSpec, ours: pd.DataFrame) -> str:
    """Machine-readable table: index columns, `source` of the published row (paper / quoted / empty), then
    per metric column `<key>_paper`, `<key>_ours`, `<key>_n`, `<key>_std`, `<key>_data`, `<key>_note`."""
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
        rec["source"] = _row_source(prow) if prow else ""
        rec["quoted_from"] = prow.get("quoted_from", "") if prow else ""
        for col in spec.columns:
            k = col["key"]
            pv = prow.get(k)
            rec[f"{k}_paper"] = pv if _is_number(pv) else ("" if pv is None else pv)
            hit = sub[(sub["row"] == name) & (sub["metric"] == k)] if not sub.empty else sub
            last = hit.iloc[-1] if not hit.empty else {}
            ok = not hit.empty and _is_number(last["value"])
            rec[f"{k}_ours"] = float(last["value"]) if ok else ""
            rec[f"{k}_n"] = int(last["n"]) if not hit.empty and _is_number(last.get("n")) else ""
            rec[f"{k}_std"] = float(last["std"]) if ok and _is_number(last.get("std")) else ""
            rec[f"{k}_data"] = str(last.get("data", "") or "") if not hit.empty else ""
            rec[f"{k}_note"] = "" if ok or hit.empty else str(last.get("note", ""))
        records.append(rec)
    return pd.DataFrame(records).to_csv(index=False)


# ------------------------------------------------------------------------------------------- claims
def claims_markdown(claims: pd.DataFrame, title: str = "Claims checked on our data") -> str:
    """The claims table. Frames from `core.claims.evaluate_claims` (with `verdict`) show the verdict,
    the per-unit evidence and the paper / sanity tallies apart; older frames (`passed`) still render."""
    lines = [f"## {title}", ""]
    if claims.empty:
        return "\n".join(lines + ["No claims were checked in this profile.", ""])
    if "verdict" not in claims.columns:
        warnings.warn("claims without `verdict`: move the paper onto core.claims (CONTRACT.md)",
                      DeprecationWarning, stacklevel=2)
        return _legacy_claims_markdown(claims, lines)
    show = claims.copy()

    def fmt(x: Any, units: str) -> str:
        return f"{x:+.3g}{(' ' + units) if units else ''}" if _is_number(x) else "–"

    show["rule"] = [f"{r.direction} {r.threshold:g} {r.units}".strip() for r in show.itertuples()]
    show["mean"] = [fmt(r.mean, r.units) for r in show.itertuples()]
    show["margin (mean; worst – best)"] = [
        f"{fmt(r.margin, '')} ({fmt(r.min_margin, '')} – {fmt(r.max_margin, '')})" if _is_number(r.margin) else "–"
        for r in show.itertuples()]
    show["n"] = [f"{int(r.n)} {r.over}" for r in show.itertuples()]
    parts = []
    for kind, heading in (("paper", "The paper's claims"), ("sanity", "Sanity checks of our pipeline")):
        sub = show[show["kind"] == kind]
        if sub.empty:
            continue
        cols = ["id", "statement", "where", "check", "rule", "n", "mean", "margin (mean; worst – best)",
                "verdict", "measured", "note"]
        parts += [f"### {heading}", "", sub[cols].to_markdown(index=False), "",
                  f"{heading}: {tally_text(tally(claims, kind))}.", ""]
    rule = ("Verdict rule (one for every paper, `cvpr24.core.claims`): PASS when the margin clears the threshold "
            "on the mean and on every unit it aggregates (each seed, image or scene: the claim's `over`); FAIL when "
            "it misses on the mean and on every one; "
            "INCONCLUSIVE when they disagree; N/A when a value is missing. The margin is how far the value "
            "is past the threshold in the claim's direction (negative: short of it).")
    return "\n".join(lines + parts + [rule, ""])


def _legacy_claims_markdown(claims: pd.DataFrame, lines: list[str]) -> str:
    show = claims.copy()
    show["result"] = show["passed"].map(lambda p: "PASS" if p is True else ("FAIL" if p is False else "n/a"))
    show["margin"] = show["margin"].map(lambda m: f"{m:+.3f}" if _is_number(m) else "–")
    cols = ["id", "claim", "check", "measured", "margin", "result"] + (["note"] if "note" in show.columns else [])
    lines.append(show[cols].to_markdown(index=False))
    n_pass = int((claims["passed"] == True).sum())  # noqa: E712
    lines += ["", f"{n_pass} of {len(claims)} claims hold on this data. A positive margin is by how much "
              "the check holds; a negative one by how much it fails.", ""]
    return "\n".join(lines)


def metrics_json(ours: pd.DataFrame, claims: pd.DataFrame | None = None,
                 environment: Mapping[str, Any] | None = None) -> str:
    """`metrics.json` for `dvc metrics show/diff`: {table: {row: {metric: value, metric_n, metric_std}},
    claims: {id: {margin, min_margin, passed, verdict, n}}, environment: what produced it}."""
    out: dict[str, Any] = {}
    if environment is not None:
        out["environment"] = dict(environment)
    for rec in ours.to_dict("records"):
        if rec.get("source") != "ours" or not _is_number(rec.get("value")):
            continue
        cell = out.setdefault(rec["table"], {}).setdefault(rec["row"], {})
        cell[rec["metric"]] = round(float(rec["value"]), 6)
        if _is_number(rec.get("n")):
            cell[f"{rec['metric']}_n"] = int(rec["n"])
        if _is_number(rec.get("n")) and int(rec["n"]) > 1 and _is_number(rec.get("std")):
            cell[f"{rec['metric']}_std"] = round(float(rec["std"]), 6)
    if claims is not None and not claims.empty:
        def num(x: Any) -> float | None:
            return round(float(x), 6) if _is_number(x) else None

        out["claims"] = {}
        for c in claims.to_dict("records"):
            entry = {"margin": num(c.get("margin")),
                     "passed": bool(c["passed"]) if c.get("passed") in (True, False) else None}
            if "verdict" in c:
                entry.update(verdict=c["verdict"], kind=c["kind"], n=int(c["n"]), min_margin=num(c["min_margin"]))
            out["claims"][str(c["id"])] = entry
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (nodes return bytes; the catalog writes)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ the one report
@dataclass
class Figure:
    """A figure of the report: `figures/<name>.png` with its caption."""

    name: str
    caption: str
    png: bytes


def build_report(
    slug: str,
    paper: Mapping[str, Any],
    rows: pd.DataFrame,
    claims: pd.DataFrame,
    *,
    profile: str,
    figures: Iterable[Figure] = (),
    column_notes: Mapping[str, Mapping[str, str]] | None = None,
    sections: Iterable[tuple[str, str]] = (),
    files: Mapping[str, str | bytes] | None = None,
) -> dict[str, str | bytes]:
    """Every report file of one paper as {relative path: content}, for `ReportDataset`.

    README.md sections, always in this order: title + citation; what differs from the paper
    (`paper.yaml: differences`); the tables; the claims with verdicts; the figures; reading the results
    (`paper.yaml: reading`, then the paper's own `sections`, e.g. a per-image table); how to regenerate.
    `column_notes[table_id][column key]` names the data behind one of our columns; `files` adds the
    paper's own extra files (plots CSVs, per-image CSVs)."""
    out: dict[str, str | bytes] = {}
    name = paper.get("name") or slug
    readme = [f"# {name}: regenerated tables ({profile} profile)", "", f"Paper: {paper['citation']}", ""]
    if paper.get("code"):
        readme += [f"Official code: {paper['code']}", ""]
    readme += [f"## {SECTIONS[0]}", ""]
    differences = list(paper.get("differences") or [])
    readme += [f"- {d}" for d in differences] or ["- (paper.yaml lists no differences)"]
    has_paper = paper_numbers_available(paper, rows)
    readme += ["", f"## {SECTIONS[1]}", "",
               "Each table keeps the paper's layout: `(paper)` columns hold the paper's numbers (quoted numbers "
               "from other sources are footnoted as such), `(ours)` columns this run's, with the number of "
               f"seeds or images each averages. Paper numbers available beside ours: {has_paper[0]} of "
               f"{has_paper[1]} cells.", ""]
    for table_id, spec in table_specs(paper).items():
        display, notes = compose_table(spec, rows)
        md = table_markdown(spec, display, notes, column_notes=(column_notes or {}).get(table_id), ours=rows)
        out[f"{spec.file_stem}.md"] = md
        out[f"{spec.file_stem}.csv"] = table_csv(spec, rows)
        readme += [md, ""]
    claims_md = claims_markdown(claims, title=SECTIONS[2])
    out["claims.md"] = claims_md
    out["claims.csv"] = claims.to_csv(index=False)
    readme += [claims_md, f"## {SECTIONS[3]}", ""]
    for fig in figures:
        out[f"figures/{fig.name}.png"] = fig.png
        readme += [f"![{fig.caption}](figures/{fig.name}.png)", "", fig.caption, ""]
    readme += [f"## {SECTIONS[4]}", ""]
    if paper.get("reading"):
        readme += [str(paper["reading"]).strip(), ""]
    for title, body in sections:
        readme += [f"### {title}", "", body.strip(), ""]
    readme += [f"## {SECTIONS[5]}", "",
               f"- this paper, the tracked default profile: `dvc repro pipelines/{slug}/dvc.yaml` "
               f"(or `kedro run --pipeline={slug}`)",
               f"- the seconds-long CI profile: `kedro run --pipeline={slug} --env=ci` (writes reports/ci/{slug})",
               "- everything and the index: `make repro`", ""]
    env = runtime.fingerprint()
    readme += [f"Produced on {env['cpu']} ({env['cpu_vendor']}; {env['cpu_isa']}), torch {env['torch']}, "
               f"{env['threads']} threads, {env['numerics']} CPU numerics (ATen kernels: {env['aten_capability']}; "
               f"numerics key `{runtime.numerics_key(env)}`). With pinned numerics another x86-64 machine gives "
               "the same numbers (`cvpr24.core.runtime`); `metrics.json: environment` holds the whole fingerprint.",
               ""]
    out.update(files or {})
    out["README.md"] = "\n".join(readme)
    out["metrics.json"] = metrics_json(rows, claims, environment={**env, "numerics_key": runtime.numerics_key(env)})
    return out


def paper_numbers_available(paper: Mapping[str, Any], rows: pd.DataFrame) -> tuple[int, int]:
    """(cells of ours that have a published number beside them, cells of ours with a number)."""
    have, total = 0, 0
    ours = rows[rows["source"] == "ours"] if not rows.empty else rows
    for spec in table_specs(paper).values():
        published = {(str(r[spec.row_key]), c["key"]): r.get(c["key"]) for r in spec.rows for c in spec.columns}
        sub = ours[ours["table"] == spec.table_id] if not ours.empty else ours
        for rec in sub.to_dict("records"):
            if _is_number(rec["value"]):
                total += 1
                have += _is_number(published.get((rec["row"], rec["metric"])))
    return have, total


__all__ = ["NA", "NOT_FOUND", "SECTIONS", "Figure", "TableRows", "TableSpec", "build_report", "claims_markdown",
           "compose_table", "figure_png", "metrics_json", "mlflow_rows", "paper_numbers_available", "paper_rows",
           "table_csv", "table_markdown", "table_specs"]
