"""CMS's measurements and figures; core renders the tables, the claims' verdicts and the report.
`measure_claims` gives each claim of pipelines/cms/paper.yaml once per dataset and seed (`digits/s0`; C2b per
comparison); a value missing on one side stays NaN, so the claim is N/A (`cvpr24.core.claims`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report, figure_png


def _seeds(results: pd.DataFrame, ds: str, row: str, metric: str) -> pd.Series:
    sub = results[(results["dataset"] == ds) & (results["row"] == row)]
    return sub.set_index("seed")[metric].astype(float) if metric in sub else pd.Series(dtype=float)


def _pairs(a: dict[str, pd.Series], b: dict[str, pd.Series] | None = None) -> pd.Series:
    """a (− b) per dataset and seed (`digits/s0`), over every seed either side has (a lone side gives NaN)."""
    diff = {d: a[d] if b is None else a[d].sub(b[d]) for d in a}
    return pd.Series({f"{d}/s{s}": float(v) for d, ser in diff.items() for s, v in ser.items()}, dtype=float)


def _diff(results: pd.DataFrame, dss: list[str], a: str, b: str, ma: str = "all", mb: str | None = None):
    """(row a's metric − row b's metric per dataset and seed, "digits: 32.4 vs 29.1; ..." from the means)."""
    x, y = ({d: _seeds(results, d, r, met) for d in dss} for r, met in ((a, ma), (b, mb or ma)))
    return _pairs(x, y), "; ".join(f"{d}: {x[d].mean():.1f} vs {y[d].mean():.1f}" for d in dss)


def measure_claims(results: pd.DataFrame, curves: pd.DataFrame, train_log: pd.DataFrame, data: dict[str, Any],
                   column_datasets: dict[str, str | None]) -> dict[str, Measurement]:
    """Each claim's quantity per dataset and seed; the claims themselves are in paper.yaml."""
    dss = [d for d in data["datasets"] if d in set(results["dataset"])]
    m: dict[str, Measurement] = {}
    for cid, role in (("C1", "generic"), ("C1b", "fine")):
        ds = [d for d in dss if d == column_datasets.get(role)]
        m[cid] = Measurement(*_diff(results, ds, "cms_gt", "cms_alpha0"))
    m["C2"] = Measurement(*_diff(results, dss, "cms_gt", "kmeans"))
    c2b = pd.concat([_diff(results, dss, "cms_gt", b, met)[0].rename(lambda k, p=f"{b}/{met}": f"{k}/{p}")
                     for b in ("kmeans", "gcd") for met in ("all", "new")])
    worst = c2b.idxmin() if c2b.notna().all() and len(c2b) else "–"
    m["C2b"] = Measurement(c2b, f"tightest: {worst}")
    pur = curves[curves["curve"] == "purity"]
    z, v = ({d: pur[(pur["dataset"] == d) & (pur["label"] == lab)].set_index("seed")["y"] for d in dss}
            for lab in ("z", "v"))
    m["C3"] = Measurement(_pairs(z, v), "; ".join(f"{d}: {z[d].mean():.1f} vs {v[d].mean():.1f} %" for d in dss))
    m["C4"] = Measurement(*_diff(results, dss, "cms_gt", "cms_no_ims"))
    k_est = {d: train_log[(train_log["dataset"] == d) & (train_log["variant"] == "cms")].set_index("seed")["k_est"]
             .astype(float) for d in dss}
    k_gt = {d: float(data["datasets"][d]["n_classes"]) for d in dss}
    m["C5"] = Measurement(_pairs({d: 100 * (k_est[d] - k_gt[d]).abs() / k_gt[d] for d in dss}),
                          "; ".join(f"{d}: K_est {k_est[d].mean():.1f} vs K {k_gt[d]:.0f}" for d in dss))
    m["C5b"] = Measurement(*_diff(results, dss, "cms_est", "cms_gt"))
    m["C6"] = Measurement(*_diff(results, dss, "cms_gt", "cms_ssk"))
    m["C7"] = Measurement(*_diff(results, dss, "cms_gt", "cms_gt", "old", "new"))
    c8, _ = _diff(results, dss, "cms_gt", "cms_gt", "all", "ims_best_all")
    gt = results[results["row"] == "cms_gt"].dropna(subset=["ims_t", "ims_iterations"])
    m["C8"] = Measurement(c8, "selected t / steps run: " + ", ".join(
        f"{t:.0f}/{i:.0f}" for t, i in gt[["ims_t", "ims_iterations"]].to_numpy()))
    return m


def _axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def figure_embeddings(emb: dict[str, np.ndarray], datasets: list[str], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    ds = [d for d in datasets if f"{d}__before" in emb]
    fig, axes = plt.subplots(len(ds), 2, figsize=(10, 4.6 * len(ds)), squeeze=False)
    for r, d in enumerate(ds):
        y, old, n_cls = emb[f"{d}__y"], emb[f"{d}__is_old"].astype(bool), int(emb[f"{d}__y"].max()) + 1
        cmap = plt.get_cmap("tab10" if n_cls <= 10 else "tab20" if n_cls <= 20 else "gist_ncar")
        col = cmap((y % 20) / max(n_cls - 1, 1) if n_cls > 20 else y % 20)
        for c, (key, title) in enumerate((("before", "before CMS (frozen SSL features)"),
                                          ("after", "after CMS fine-tuning (head output)"))):
            ax, xy = axes[r, c], emb[f"{d}__{key}"]
            ax.scatter(xy[old, 0], xy[old, 1], c=col[old], s=9, marker="o", linewidths=0, label="old classes (o)")
            ax.scatter(xy[~old, 0], xy[~old, 1], c=col[~old], s=14, marker="^", linewidths=0, label="new classes (^)")
            _axes(ax, "component 1 (a.u.)", "component 2 (a.u.)", f"{d}: {title}")
    return figure_png(fig, dpi)


def figure_accuracy_vs_k(curves: pd.DataFrame, results: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for d, sub in curves[curves["curve"] == "k_inference"].groupby("dataset"):
        g = sub.groupby("x")["y"].mean()
        ax.plot(g.index, g.values, marker="o", label=f"{d}: k at inference (IMS), model trained with k=8")
        res = results[(results["dataset"] == d) & results["row"].str.fullmatch(r"cms_gt|cms_k\d+")]
        tr = res.groupby("row")["all"].mean().rename(lambda r: 8 if r == "cms_gt" else int(r[5:])).sort_index()
        if len(tr) > 1:
            ax.plot(tr.index, tr.values, marker="s", linestyle="--", label=f"{d}: k in training (inference k=8)")
    ax.set_xscale("log", base=2)
    _axes(ax, "number of neighbours k", "All accuracy on D_U (%)", "Accuracy against k (ours; mean over seeds)")
    return figure_png(fig, dpi)


def figure_k_estimate(curves: pd.DataFrame, data: dict[str, Any], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for d, sub in curves[curves["curve"] == "k_search"].groupby("dataset"):
        s0 = sub[sub["seed"] == sub["seed"].min()]
        line, = ax.plot(s0["x"], s0["y"], label=f"{d} ({s0['label'].iloc[0]})")
        ax.axvline(k := data["datasets"][d]["n_classes"], color=line.get_color(), linestyle=":", label=f"{d}: true K = {k}")
        best = s0.loc[s0["y"].idxmax()]
        ax.plot([best["x"]], [best["y"]], marker="*", markersize=12, color=line.get_color())
    _axes(ax, "number of clusters (Ward cut on the held-out split)", "Old-class accuracy (%)",
          "Class-count estimation: Old accuracy against the cut (star = K_est)")
    return figure_png(fig, dpi)


def figure_ims_steps(curves: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for d, sub in curves[curves["curve"] == "ims_steps"].groupby("dataset"):
        g = sub.groupby("x")[["y", "lab_acc"]].mean()
        line, = ax.plot(g.index, g["y"], marker="o", label=f"{d}: All on D_U")
        ax.plot(g.index, g["lab_acc"], linestyle="--", color=line.get_color(), label=f"{d}: accuracy on D_L (stopping signal)")
    _axes(ax, "inference mean-shift steps t", "accuracy (%)", "Iterative mean shift at inference (K known)")
    return figure_png(fig, dpi)


def render(results: pd.DataFrame, curves: pd.DataFrame, emb: dict[str, np.ndarray], train_log: pd.DataFrame,
           rows: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any], data: dict[str, Any],
           column_datasets: dict[str, str | None], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi, dss = int(params.get("figure_dpi", 110)), list(data["datasets"])
    column_notes = {tid: {c["key"]: f"{column_datasets[c['dataset']]} (D_U)" for c in t["columns"]
                          if column_datasets.get(c.get("dataset"))}
                    for tid, t in paper["tables"].items() if t.get("our_rows")}
    ours = " The paper's numbers for this study were not found: ours only."
    figures = [Figure("embeddings_2d", "2-D projection (t-SNE; PCA in the ci profile) of the embeddings before and "
                      "after CMS fine-tuning, by true class; circles old classes, triangles new.",
                      figure_embeddings(emb, dss, dpi)),
               Figure("accuracy_vs_k", "All against the number of neighbours k, at inference and in training." + ours,
                      figure_accuracy_vs_k(curves, results, dpi)),
               Figure("k_estimate", "Held-out Old accuracy against the Ward cut (first seed; star = K_est)." + ours,
                      figure_k_estimate(curves, data, dpi)),
               Figure("ims_steps", "All on D_U and the D_L accuracy that stops IMS, against the steps." + ours,
                      figure_ims_steps(curves, dpi))]
    per_row = results.groupby(["dataset", "row"]).agg(seeds=("seed", "nunique"), **{
        c: (c, "mean") for c in ("all", "old", "new", "k")}).reset_index()
    kin = curves[curves["curve"] == "k_inference"].groupby(["dataset", "x"], as_index=False)["y"].mean()
    claims = evaluate_claims(paper, measure_claims(results, curves, train_log, data, column_datasets))
    return build_report("cms", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        column_notes=column_notes,
                        sections=[("Every row we ran (mean over seeds)", per_row.round(2).to_markdown(index=False))],
                        files={"results.csv": per_row.to_csv(index=False), "plots/accuracy_vs_k.csv":
                               kin.rename(columns={"x": "k", "y": "all_acc"}).to_csv(index=False)})
