"""Claims as data: what a paper claims lives in `pipelines/<slug>/paper.yaml`; the verdict comes from here.

A paper's `report.py` only *measures*: for each claim it returns a `Measurement`, the claim's quantity
once per independent unit (per seed, or per image / sample where a run has one seed), e.g. the PSNR
difference tau 0.2 − tau 0.8 on each i.i.d.-noise image. Everything else (what the claim says, where in
the paper, what we check, its kind, direction, threshold and units) is read from `paper.yaml`:

    claims:
      - id: C1
        kind: paper                 # paper: the paper's own claim | sanity: a check of our pipeline
        statement: low tau is best for i.i.d. noise
        where: Sec. 3.1, Fig. 2
        check: PSNR(tau 0.2) − PSNR(tau 0.8) on each beta=0 image
        direction: ">="             # the value must be >= threshold (one of >, >=, <, <=)
        threshold: 0.3
        units: dB
        over: images                # what one value is: seeds | images | samples | ...
        note: optional text shown beside the verdict

The one verdict rule, the same for every paper
------------------------------------------------
Each value gives a *margin*: `value − threshold` for `>`/`>=`, `threshold − value` for `<`/`<=`. A margin
*clears* when it is `> 0` (strict directions) or `>= 0` (`>=`, `<=`). With the mean of the values:

- **N/A** when there is no value, or any value (hence the mean) is missing or NaN. A NaN is never
  dropped: one missing seed makes the claim N/A, not a claim decided on the others.
- **PASS** when the margin clears on the mean *and* on every value;
- **FAIL** when it misses on the mean *and* on every value;
- **INCONCLUSIVE** otherwise: the seeds (images) disagree, so the data cannot decide.

With a single value the mean is that value, so the verdict is PASS or FAIL (or N/A). Tallies count
`paper` claims and `sanity` checks apart (`tally`): a sanity check says our pipeline behaves, not that
the paper's claim holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

PASS, FAIL, INCONCLUSIVE, NA = "PASS", "FAIL", "INCONCLUSIVE", "N/A"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NA)
KINDS = ("paper", "sanity")
DIRECTIONS = (">", ">=", "<", "<=")
COLUMNS = ["id", "kind", "statement", "where", "check", "direction", "threshold", "units", "over", "n",
           "values", "mean", "std", "margin", "min_margin", "max_margin", "verdict", "passed", "measured", "note"]


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    kind: str
    statement: str
    where: str
    check: str
    direction: str
    threshold: float
    units: str = ""
    over: str = "seeds"
    note: str = ""

    def margin(self, value: float) -> float:
        return value - self.threshold if self.direction in (">", ">=") else self.threshold - value

    def clears(self, margin: float) -> bool:
        return margin > 0 if self.direction in (">", "<") else margin >= 0

    @property
    def rule(self) -> str:
        units = f" {self.units}" if self.units else ""
        return f"{self.direction} {self.threshold:g}{units}"


@dataclass
class Measurement:
    """A claim's quantity once per unit (`{seed or image id: value}`, or a plain sequence), and an
    optional human-readable `detail` (e.g. the two means the difference comes from)."""

    values: Mapping[str, float] | Iterable[float]
    detail: str = ""
    note: str = ""
    units: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        vals = self.values
        if isinstance(vals, pd.Series):
            vals = vals.to_dict()
        if not isinstance(vals, Mapping):
            vals = {str(i): v for i, v in enumerate(vals)}
        self.units = {str(k): _float(v) for k, v in vals.items()}


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def claim_specs(paper: Mapping[str, Any]) -> dict[str, ClaimSpec]:
    """Parse and validate `paper.yaml`'s `claims:` list (a clear error names the bad entry)."""
    specs: dict[str, ClaimSpec] = {}
    for i, c in enumerate(paper.get("claims") or []):
        cid = str(c.get("id", f"#{i + 1}"))
        missing = [k for k in ("id", "kind", "statement", "where", "check", "direction", "threshold") if k not in c]
        if missing:
            raise ValueError(f"paper.yaml claim {cid} lacks {missing} (see cvpr24/core/claims.py for the schema)")
        if c["kind"] not in KINDS:
            raise ValueError(f"paper.yaml claim {cid}: kind must be one of {KINDS}, got {c['kind']!r}")
        if c["direction"] not in DIRECTIONS:
            raise ValueError(f"paper.yaml claim {cid}: direction must be one of {DIRECTIONS}, got {c['direction']!r}")
        if cid in specs:
            raise ValueError(f"paper.yaml claim id {cid} appears twice")
        specs[cid] = ClaimSpec(id=cid, kind=c["kind"], statement=str(c["statement"]), where=str(c["where"]),
                               check=str(c["check"]), direction=c["direction"], threshold=float(c["threshold"]),
                               units=str(c.get("units", "")), over=str(c.get("over", "seeds")),
                               note=str(c.get("note", "")))
    return specs


def verdict(spec: ClaimSpec, values: Iterable[float]) -> dict[str, Any]:
    """The rule in the module docstring, on one claim's per-unit values."""
    vals = [_float(v) for v in values]
    n = len(vals)
    out: dict[str, Any] = {"n": n, "mean": float("nan"), "std": float("nan"), "margin": float("nan"),
                           "min_margin": float("nan"), "max_margin": float("nan")}
    if n == 0 or any(math.isnan(v) for v in vals):
        return {**out, "verdict": NA}
    mean = sum(vals) / n
    margins = [spec.margin(v) for v in vals]
    out.update(mean=mean, margin=spec.margin(mean), min_margin=min(margins), max_margin=max(margins),
               std=float(pd.Series(vals).std(ddof=1)) if n > 1 else float("nan"))
    on_mean = spec.clears(out["margin"])
    if on_mean and all(spec.clears(m) for m in margins):
        return {**out, "verdict": PASS}
    if not on_mean and not any(spec.clears(m) for m in margins):
        return {**out, "verdict": FAIL}
    return {**out, "verdict": INCONCLUSIVE}


def evaluate_claims(paper: Mapping[str, Any], measurements: Mapping[str, Measurement]) -> pd.DataFrame:
    """One row per claim of `paper.yaml` (in its order) with the verdict; a claim nobody measured is N/A.

    A measurement for a claim `paper.yaml` does not declare is an error: every claim is data."""
    specs = claim_specs(paper)
    unknown = sorted(set(measurements) - set(specs))
    if unknown:
        raise ValueError(f"measurements for claims {unknown} that paper.yaml does not declare under claims:")
    rows = []
    for cid, spec in specs.items():
        m = measurements.get(cid)
        units = m.units if m is not None else {}
        v = verdict(spec, units.values())
        note = spec.note
        if m is None:
            note = "; ".join(filter(None, [note, "not measured in this profile"]))
        elif m.note:
            note = "; ".join(filter(None, [note, m.note]))
        if v["verdict"] == NA and units:
            missing = [k for k, x in units.items() if math.isnan(x)]
            note = "; ".join(filter(None, [note, f"missing value for {', '.join(missing)}"]))
        elif v["verdict"] == NA and m is not None and not m.note:   # a measurement's own reason stands alone
            note = "; ".join(filter(None, [note, f"no {spec.over or 'value'} to measure on in this profile"]))
        rows.append({
            "id": cid, "kind": spec.kind, "statement": spec.statement, "where": spec.where, "check": spec.check,
            "direction": spec.direction, "threshold": spec.threshold, "units": spec.units, "over": spec.over,
            "values": "; ".join(f"{k}: {x:.4g}" for k, x in units.items()), **v,
            "passed": {PASS: True, FAIL: False}.get(v["verdict"]),
            "measured": m.detail if m is not None else "", "note": note,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def tally(claims: pd.DataFrame, kind: str = "paper") -> dict[str, int]:
    """Counts of each verdict among the claims of one kind (`paper` or `sanity`)."""
    counts = dict.fromkeys(VERDICTS, 0)
    if claims is None or claims.empty:
        return counts
    sub = claims[claims["kind"] == kind] if "kind" in claims.columns else claims
    col = sub["verdict"] if "verdict" in sub.columns else sub["passed"].map(_legacy_verdict)
    for v in col:
        counts[v if v in counts else NA] += 1
    return counts


def _legacy_verdict(passed: Any) -> str:
    """claims.csv written before this module: `passed` True/False/empty."""
    s = str(passed)
    return PASS if s == "True" else FAIL if s == "False" else NA


def tally_text(counts: Mapping[str, int]) -> str:
    return (f"{counts[PASS]} pass / {counts[FAIL]} fail / {counts[INCONCLUSIVE]} inconclusive / "
            f"{counts[NA]} n/a")
