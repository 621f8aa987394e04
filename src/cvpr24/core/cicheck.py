"""`python -m cvpr24.core.cicheck [--update] [slug ...]`: regenerate the ci-profile tables of each
pipeline and compare its `reports/ci/<slug>/metrics.json` with the committed one.

A metric that moved by more than `atol + rtol * |committed|`, or a claim whose verdict changed, fails the
check (timings are ignored: they measure the machine, not the method; so is `environment`, the fingerprint
of the machine that produced the file). `--update` accepts the new values (commit them with the change
that moved them).

Why a tight tolerance holds on any machine: the package pins the CPU float kernels (`cvpr24.core.runtime`),
so a fresh x86-64 machine reproduces the committed ci numbers bit for bit; at ci sizes a last-bit
difference would otherwise move accuracies by several points (a one-image change in a 244-image split is
0.4 points), and no tolerance could both pass such noise and catch a broken component. When a check fails,
the committed and the current fingerprints are printed side by side, so a difference of machine or library
build is visible at once. `tests/integration/test_cicheck_gate.py` breaks a component on purpose and shows
that the gate fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from cvpr24.core.tracking import flatten

RTOL, ATOL = 1e-3, 1e-3
IGNORED_SUBSTRINGS = ("time", "seconds")
IGNORED_PREFIXES = ("environment/",)


def _flatten(d: dict) -> dict[str, float | bool | str | None]:
    """Comparable leaves of a metrics.json document, keyed `table/row/metric` (numbers, flags and verdicts)."""
    out: dict[str, float | bool | str | None] = {}
    for key, v in flatten(d, sep="/").items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        if isinstance(v, str):
            if key.endswith("/verdict"):
                out[key] = v
        elif isinstance(v, bool) or v is None:
            out[key] = v
        elif isinstance(v, int | float):
            out[key] = float(v)
    return out


def compare(old: dict, new: dict, rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    """Differences beyond tolerance between two metrics.json documents (messages, empty when equal)."""
    a, b = _flatten(old), _flatten(new)
    problems = []
    for key in sorted(set(a) | set(b)):
        if any(s in key for s in IGNORED_SUBSTRINGS):
            continue
        if key not in a:
            problems.append(f"{key}: new metric {b[key]} (not in the committed values)")
        elif key not in b:
            problems.append(f"{key}: committed {a[key]} but no longer produced")
        elif isinstance(a[key], float) and isinstance(b[key], float):
            if not (math.isclose(a[key], b[key], rel_tol=rtol, abs_tol=atol)):
                problems.append(f"{key}: committed {a[key]:.6g}, now {b[key]:.6g}")
        elif a[key] != b[key]:
            problems.append(f"{key}: committed {a[key]}, now {b[key]}")
    return problems


def ci_slugs() -> list[str]:
    return sorted(p.stem for p in Path("conf/ci/parameters").glob("*.yml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slugs", nargs="*")
    parser.add_argument("--update", action="store_true", help="accept the regenerated values")
    args = parser.parse_args(argv)
    failures = 0
    for slug in args.slugs or ci_slugs():
        path = Path("reports/ci") / slug / "metrics.json"
        committed = json.loads(path.read_text()) if path.is_file() else None
        start = time.perf_counter()
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
        proc = subprocess.run([sys.executable, "-m", "kedro", "run", f"--pipeline={slug}", "--env=ci"], env=env)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"[{slug}] ci run FAILED (exit {proc.returncode}) after {took:.0f} s")
            failures += 1
            continue
        print(f"[{slug}] ci run took {took:.1f} s")
        new = json.loads(path.read_text())
        if args.update or committed is None:
            print(f"[{slug}] {'accepted' if args.update else 'no committed values yet; wrote'} {path}")
            if committed is None and not args.update:
                failures += 1
            continue
        problems = compare(committed, new)
        if problems:
            failures += 1
            print(f"[{slug}] {len(problems)} metric(s) moved beyond tolerance (rtol {RTOL}, atol {ATOL}):")
            print("\n".join(f"  {p}" for p in problems))
            path.write_text(json.dumps(committed, indent=2, sort_keys=True) + "\n")  # keep the committed file
            explain_environment(committed.get("environment"), new.get("environment"))
        else:
            print(f"[{slug}] metrics match the committed reports/ci values")
    return 1 if failures else 0


def explain_environment(committed: dict | None, current: dict | None) -> None:
    """Print what differs between the machine that made the committed values and this one."""
    if not committed:
        print("  (the committed file records no environment fingerprint: it predates cvpr24.core.runtime)")
        return
    current = current or {}
    keys = [k for k in sorted(set(committed) | set(current)) if committed.get(k) != current.get(k)]
    if not keys:
        print("  same environment fingerprint as the committed values: the change is in the code or data")
        return
    print("  environment differs from the one that made the committed values:")
    for k in keys:
        print(f"    {k}: committed {committed.get(k)!r}, now {current.get(k)!r}")


if __name__ == "__main__":
    raise SystemExit(main())
