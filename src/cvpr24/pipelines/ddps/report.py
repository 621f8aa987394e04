"""DDPS's claim measurements; core renders the tables, the claims' verdicts and the report.

`measure_claims` returns each claim of `pipelines/ddps/paper.yaml` once per held-out test object (scene), or
per (scene, number of patterns / initialisation / test) where the claim ranges over those: what a claim says,
its threshold and its verdict are data and core's (`cvpr24.core.claims`). A heuristic family named "best" is
the one with the lowest mean error (the tables' pick); its per-scene errors then enter the claim. Everything
is measured on held-out test objects; nothing here feeds back into training.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report
from cvpr24.pipelines.ddps import figures as G
from cvpr24.pipelines.ddps.nodes import (
    FAMILY_LABELS,
    best_heuristic,
    init_runs,
    main_condition,
    n4_runs,
    scene_values,
    summarize,
)


def _keyed(values: pd.Series, prefix: str) -> dict[str, float]:
    return {f"{prefix}: {k}": float(v) for k, v in values.items()}


def measure_claims(per_scene: pd.DataFrame, runs: pd.DataFrame, evaluate: dict[str, Any],
                   params: dict[str, Any]) -> dict[str, Measurement]:
    """Each claim's quantity per test scene (a NaN where a pattern set was not evaluated: never dropped)."""
    summary, cond = summarize(per_scene), main_condition(per_scene)
    scenes = sorted(per_scene["scene"].unique())
    main_run = evaluate["main_run"]

    def err(pattern: str | None, condition: str = cond) -> pd.Series:
        return scene_values(per_scene, pattern, condition, scenes=scenes)

    def best(n: int, condition: str = cond) -> tuple[pd.Series, str]:
        bh = best_heuristic(summary, n, condition)
        return (err(None), "none") if bh is None else (err(f"heuristic:{bh['family']}:N{n}", condition),
                                                       FAMILY_LABELS[bh["family"]])

    main = err(f"learned:{main_run}")
    m: dict[str, Measurement] = {}
    tri, k1, parts = init_runs(runs, main_run), {}, []
    for n in evaluate["n_list"]:
        (h, fam), lr = best(n), err(f"learned:{tri[n]}" if n in tri else None)
        k1.update(_keyed(h - lr, f"N={n}"))
        parts.append(f"N={n}: {lr.mean():.2f} vs {h.mean():.2f}° ({fam})")
    m["K1"] = Measurement(k1, "; ".join(parts))
    inits = n4_runs(runs)
    init_e = pd.DataFrame({r: err(f"heuristic:{i}:N4") for r, i in inits.items()}, index=scenes)
    learned_e = pd.DataFrame({r: err(f"learned:{r}") for r in inits}, index=scenes)
    k1b = {}
    for r, i in inits.items():
        k1b.update(_keyed(init_e[r] - learned_e[r], i))
    m["K1b"] = Measurement(k1b, f"{len(inits)} inits: initial {init_e.mean().mean():.2f}° → learned "
                                f"{learned_e.mean().mean():.2f}° (mean over inits)",
                           note="" if inits else "no N = 4 RGB learning run in ddps.train.runs")
    h4, fam4 = best(4)
    if inits:
        top = learned_e.mean().fillna(float("inf")).idxmin()
        m["K1c"] = Measurement(100 * (1 - learned_e[top] / h4),
                               f"best learned ({inits[top]} init) {learned_e[top].mean():.2f}° vs best heuristic "
                               f"({fam4}) {h4.mean():.2f}°")
    else:
        m["K1c"] = Measurement({}, note="no N = 4 RGB learning run in ddps.train.runs")
    few = "" if len(inits) >= 2 else "needs at least 2 initialisations (N = 4 runs in ddps.train.runs)"
    spread = (init_e.std(axis=1, ddof=0, skipna=False) - learned_e.std(axis=1, ddof=0, skipna=False)) if not few \
        else pd.Series(dtype=float)
    m["K2"] = Measurement(spread, f"std over inits: initial {init_e.std(axis=1, ddof=0).mean():.2f}° → learned "
                                  f"{learned_e.std(axis=1, ddof=0).mean():.2f}° (mean over scenes)", note=few)
    worst = (init_e.median(axis=1, skipna=False) - learned_e.max(axis=1, skipna=False)) if not few \
        else pd.Series(dtype=float)
    m["K2b"] = Measurement(worst, f"worst learned {learned_e.max(axis=1).mean():.2f}° vs median initial "
                                  f"{init_e.median(axis=1).mean():.2f}° (mean over scenes)", note=few)
    hc, famc = best(4, "calib")
    calib = err(f"learned:{main_run}", "calib")
    m["K3"] = Measurement(hc - calib, f"learned {calib.mean():.2f}° vs best heuristic ({famc}) {hc.mean():.2f}°")
    k4, parts = {}, []
    for c in ("full", "relit"):
        (h, fam), lr = best(4, c), err(f"learned:{main_run}", c)
        k4.update(_keyed(h - lr, c))
        parts.append(f"{c}: {lr.mean():.2f} vs {h.mean():.2f}° ({fam})")
    m["K4"] = Measurement(k4, "; ".join(parts))
    thr = float(params["specular_rho_s"])
    rho = per_scene.groupby("scene")["rho_s"].first().reindex(scenes)
    spec = [s for s in scenes if rho[s] > thr]
    sep, mix = err(f"learned:{main_run}", "full")[spec], err(f"learned:{main_run}", "mixed")[spec]
    clean = [err(f"learned:{main_run}", c)[spec].mean() for c in ("full_noisefree", "mixed_noisefree")]
    m["K5"] = Measurement(mix - sep, f"{sep.mean():.2f}° separated vs {mix.mean():.2f}° mixed on {len(spec)} "
                                     f"specular objects; without capture noise {clean[0]:.2f}° vs {clean[1]:.2f}° "
                                     "(diagnostic)", note="" if spec else f"no test object with rho_s > {thr}")
    simp = runs[(runs["basis"] == "simplified") & (runs["n_patterns"] == 4)]["run_id"].tolist()
    es = err(f"learned:{simp[0]}") if simp else pd.Series(dtype=float)
    m["K6"] = Measurement(es - main if simp else es, f"{main.mean():.2f}° realistic vs {es.mean():.2f}° simplified",
                          note="" if simp else "no run with basis: simplified in ddps.train.runs")
    san = scene_values(per_scene, "reference:sanity_olat144", "sanity")
    m["K7"] = Measurement(san if san is not None else {}, f"{san.mean():.2e}°" if san is not None else "",
                          note="" if san is not None else "needs the embedded geometry")
    ns = sorted(n for n in evaluate["n_list"] if n in tri)
    k8 = {}
    for a, b in zip(ns[:-1], ns[1:], strict=True):
        k8.update(_keyed(err(f"learned:{tri[a]}") - err(f"learned:{tri[b]}"), f"N={a}→{b}"))
    noisefree = ", ".join(f"N={n}: {err(f'learned:{tri[n]}', 'full_noisefree').mean():.2f}°" for n in ns)
    m["K8"] = Measurement(k8, ", ".join(f"N={n}: {err(f'learned:{tri[n]}').mean():.2f}°" for n in ns)
                          + f"; noise-free captures (diagnostic): {noisefree}",
                          note="" if len(ns) >= 2 else "needs learning runs at 2 or more N")
    return m


def render(per_scene: pd.DataFrame, rows: pd.DataFrame, patterns: dict, runs: pd.DataFrame, maps: dict,
           mi: dict, history: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any],
           evaluate: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(per_scene, runs, evaluate, params))
    curve = G.error_vs_n(per_scene, runs, evaluate)
    figures = [
        Figure("patterns", "Display patterns of every N = 4 learning run: initial → learned (9 x 16 superpixels).",
               G.figure_patterns(patterns, runs, dpi, int(runtime.get("seed", 0)))),
        Figure("normals", "Normal maps and angular-error maps on held-out test objects.",
               G.figure_normals(maps, per_scene, mi, evaluate, int(params.get("figure_scenes", 2)), dpi)),
        Figure("error_vs_n", "Mean angular error against the number of patterns (total capture time fixed).",
               G.figure_error_vs_n(curve, dpi)),
        Figure("training", "Training loss of the pattern-learning runs (N = 4).", G.figure_training(history, dpi)),
    ]
    sections = [("All results", "`all_results.csv` holds every pattern set under every test condition (mean over "
                                "the test objects, `n_scenes` of them); `plots/error_vs_n.csv` the curve above.")]
    return build_report("ddps", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files={"all_results.csv": summarize(per_scene).to_csv(index=False),
                                                  "plots/error_vs_n.csv": curve.to_csv(index=False)})
