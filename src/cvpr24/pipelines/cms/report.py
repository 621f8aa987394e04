"""CMS's report phase: the paper's tables with our numbers beside, the claims checked on our data,
figures (2-D embeddings before/after training, accuracy against k, the class-count estimate curve,
accuracy against inference steps), metrics.json and a README."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.reporting import (
    claims_markdown,
    compose_table,
    figure_png,
    metrics_json,
    table_csv,
    table_markdown,
    table_specs,
)

DATA_DESC = {
    "digits": "digits-gcd: scikit-learn's bundled 8x8 digits upsampled to 16x16, old classes 0-4, half of their "
              "training images labelled, 20 % stratified held-out split for checkpoint / K selection",
    "glyphs": "glyphs-gcd: procedural 24-class glyphs (8 shapes x 3 fills, 32x32 RGB, nuisance position/size/"
              "rotation/colour/background/clutter), 12 random old classes, half of their images labelled",
}


def _acc(results: pd.DataFrame, ds: str, row: str, metric: str = "all") -> float:
    sub = results[(results["dataset"] == ds) & (results["row"] == row)]
    return float(sub[metric].mean()) if not sub.empty else float("nan")


def _claim(cid, claim, check, measured, margin, note="", inclusive=True) -> dict[str, Any]:
    ok = None if margin is None or not np.isfinite(margin) else bool(margin >= 0 if inclusive else margin > 0)
    return {"id": cid, "claim": claim, "check": check, "measured": measured,
            "margin": float("nan") if margin is None else float(margin), "passed": ok, "note": note}


def check_claims(results: pd.DataFrame, curves: pd.DataFrame, train_log: pd.DataFrame, data: dict[str, Any],
                 params: dict[str, Any]) -> pd.DataFrame:
    """The issue's key claims and the spec's checks C1-C8 (accuracies in percentage points)."""
    dss = [d for d in data["datasets"] if d in set(results["dataset"])]
    out = []
    fine = params.get("fine_grained_dataset", "glyphs")
    # C1: mean shift in training helps (ablation alpha = 0, same schedule)
    diffs = {d: _acc(results, d, "cms_gt") - _acc(results, d, "cms_alpha0") for d in dss}
    need = {d: float(params["c1_margin_fine"]) if d == fine else 0.0 for d in dss}
    m = min((diffs[d] - need[d] for d in dss), default=np.nan)
    out.append(_claim("C1", "contrastive learning with mean shift clusters better than without (alpha = 0)",
                      "All(CMS) − All(alpha=0) ≥ " + ", ".join(f"{need[d]:g} pt on {d}" for d in dss),
                      "; ".join(f"{d}: {_acc(results, d, 'cms_gt'):.1f} vs {_acc(results, d, 'cms_alpha0'):.1f}" for d in dss), m))
    # C2: fine-tuning beats frozen SSL features + k-means
    c2 = float(params["c2_margin"])
    m = min((_acc(results, d, "cms_gt") - _acc(results, d, "kmeans") - c2 for d in dss), default=np.nan)
    out.append(_claim("C2", "CMS fine-tuning improves over k-means on the frozen pre-trained features",
                      f"All(CMS) − All(k-means) ≥ {c2:g} pt on every dataset",
                      "; ".join(f"{d}: {_acc(results, d, 'cms_gt'):.1f} vs {_acc(results, d, 'kmeans'):.1f}" for d in dss), m))
    # issue claim: CMS beats k-means and the GCD baseline on All and New
    pairs = [(d, b, met) for d in dss for b in ("kmeans", "gcd") for met in ("all", "new")]
    m = min((_acc(results, d, "cms_gt", met) - _acc(results, d, b, met) for d, b, met in pairs), default=np.nan)
    worst = min(pairs, key=lambda p: _acc(results, p[0], "cms_gt", p[2]) - _acc(results, p[0], p[1], p[2])) if pairs else None
    out.append(_claim("C2b", "CMS beats k-means and the GCD baseline on All and New accuracy",
                      "min over datasets, baselines and {All, New} of CMS − baseline > 0",
                      f"tightest: {worst[0]} {worst[2]} vs {worst[1]}" if worst else "–", m, inclusive=False))
    # C3: kNN purity of mean-shifted embeddings
    pur = curves[curves["curve"] == "purity"]
    gaps = {d: float(pur[(pur["dataset"] == d) & (pur["label"] == "z")]["y"].mean()
                     - pur[(pur["dataset"] == d) & (pur["label"] == "v")]["y"].mean()) for d in dss}
    out.append(_claim("C3", "mean-shifted embeddings have purer neighbourhoods (and so cluster better)",
                      "kNN (k=8) label purity on D_U of z (one mean-shift step) − of v > 0 on every dataset",
                      "; ".join(f"{d}: {g:+.2f} pt" for d, g in gaps.items()), min(gaps.values(), default=np.nan),
                      inclusive=False))
    # C4: IMS at inference
    d4 = {d: _acc(results, d, "cms_gt") - _acc(results, d, "cms_no_ims") for d in dss}
    m = min(min(v + 0.5 for v in d4.values()), max(d4.values())) if d4 else np.nan
    out.append(_claim("C4", "iterative mean shift at inference improves the final clustering",
                      "All(IMS) ≥ All(t=0) − 0.5 pt on every dataset and > on at least one",
                      "; ".join(f"{d}: {v:+.2f} pt" for d, v in d4.items()), m,
                      inclusive=False))
    # C5: K estimation
    kdev, kacc = [], []
    for d in dss:
        kgt = float(data["datasets"][d]["n_classes"])
        ke = float(train_log[(train_log["dataset"] == d) & (train_log["variant"] == "cms")]["k_est"].mean())
        kdev.append((d, ke, kgt))
        kacc.append(_acc(results, d, "cms_est") - _acc(results, d, "cms_gt") + 5)
    tol = float(params["c5_k_tolerance"])
    m = min([tol - abs(ke - kgt) / kgt for _, ke, kgt in kdev] + [a / 100 for a in kacc], default=np.nan)
    out.append(_claim("C5", "the estimated class count lands near the true one, at little accuracy cost",
                      f"|K_est − K|/K ≤ {tol:g} and All(K_est) ≥ All(K_gt) − 5 pt (margin: the tighter, as a fraction)",
                      "; ".join(f"{d}: K_est {ke:.1f} vs K {kgt:.0f}" for d, ke, kgt in kdev), m))
    # C6: agglomerative vs SSK on the same CMS features
    m = min((_acc(results, d, "cms_gt") - _acc(results, d, "cms_ssk") + 2 for d in dss), default=np.nan)
    out.append(_claim("C6", "agglomerative clustering after CMS is competitive with semi-supervised k-means",
                      "All(agglomerative) ≥ All(SSK) − 2 pt",
                      "; ".join(f"{d}: {_acc(results, d, 'cms_gt'):.1f} vs {_acc(results, d, 'cms_ssk'):.1f}" for d in dss), m))
    # C7: Old > New
    m = min((_acc(results, d, "cms_gt", "old") - _acc(results, d, "cms_gt", "new") for d in dss), default=np.nan)
    out.append(_claim("C7", "old-class accuracy exceeds new-class accuracy (every README row)", "Old − New > 0",
                      "; ".join(f"{d}: {_acc(results, d, 'cms_gt', 'old'):.1f} vs {_acc(results, d, 'cms_gt', 'new'):.1f}"
                                for d in dss), m, inclusive=False))
    # C8: IMS stopping terminates
    its = results[results["row"] == "cms_gt"]["ims_iterations"]
    mx = float(its.max()) if len(its) else np.nan
    out.append(_claim("C8", "labelled-accuracy IMS stopping terminates", "iterations ≤ 21 (t = 0..20)",
                      f"at most {mx:.0f} iterations; selected t = "
                      + ", ".join(str(int(t)) for t in results[results['row'] == 'cms_gt']['ims_t']), 21 - mx))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ figures
def figure_embeddings(emb: dict[str, np.ndarray], datasets: list[str], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    ds = [d for d in datasets if f"{d}__before" in emb]
    fig, axes = plt.subplots(len(ds), 2, figsize=(10, 4.6 * len(ds)), squeeze=False)
    for r, d in enumerate(ds):
        y, old = emb[f"{d}__y"], emb[f"{d}__is_old"].astype(bool)
        n_cls = int(y.max()) + 1
        cmap = plt.get_cmap("tab10" if n_cls <= 10 else "tab20" if n_cls <= 20 else "gist_ncar")
        for c, (key, title) in enumerate((("before", "before CMS (frozen SSL features)"),
                                          ("after", "after CMS fine-tuning (head output)"))):
            ax = axes[r, c]
            xy = emb[f"{d}__{key}"]
            col = cmap((y % 20) / max(n_cls - 1, 1) if n_cls > 20 else y % 20)
            ax.scatter(xy[old, 0], xy[old, 1], c=col[old], s=9, marker="o", linewidths=0, label="old classes (o)")
            ax.scatter(xy[~old, 0], xy[~old, 1], c=col[~old], s=14, marker="^", linewidths=0, label="new classes (^)")
            ax.set_title(f"{d}: {title}", fontsize=9)
            ax.set_xlabel("component 1 (a.u.)")
            ax.set_ylabel("component 2 (a.u.)")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("2-D projection (t-SNE; PCA in the ci profile) of the embeddings, coloured by true class; circles = old classes, triangles = new",
                 fontsize=10)
    return figure_png(fig, dpi)


def figure_accuracy_vs_k(curves: pd.DataFrame, results: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    kin = curves[curves["curve"] == "k_inference"]
    for d, sub in kin.groupby("dataset"):
        g = sub.groupby("x")["y"].mean()
        ax.plot(g.index, g.values, marker="o", label=f"{d}: k at inference (IMS), model trained with k=8")
        tr = {8: _acc(results, d, "cms_gt")}
        for row in results[(results["dataset"] == d) & results["row"].str.match(r"cms_k\d+")]["row"].unique():
            tr[int(row.removeprefix("cms_k"))] = _acc(results, d, row)
        if len(tr) > 1:
            ks = sorted(tr)
            ax.plot(ks, [tr[k] for k in ks], marker="s", linestyle="--", label=f"{d}: k in training (inference k=8)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of neighbours k")
    ax.set_ylabel("All accuracy on D_U (%)")
    ax.set_title("Accuracy against k (paper's numbers for this study not found)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig, dpi)


def figure_k_estimate(curves: pd.DataFrame, data: dict[str, Any], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    ks = curves[curves["curve"] == "k_search"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for d, sub in ks.groupby("dataset"):
        s0 = sub[sub["seed"] == sub["seed"].min()]
        line, = ax.plot(s0["x"], s0["y"], label=f"{d} ({s0['label'].iloc[0]})")
        ax.axvline(float(data["datasets"][d]["n_classes"]), color=line.get_color(), linestyle=":",
                   label=f"{d}: true K = {data['datasets'][d]['n_classes']}")
        best = s0.loc[s0["y"].idxmax()]
        ax.plot([best["x"]], [best["y"]], marker="*", markersize=12, color=line.get_color())
    ax.set_xlabel("number of clusters (Ward cut on the held-out split)")
    ax.set_ylabel("Old-class accuracy (%)")
    ax.set_title("Class-count estimation: Old accuracy against the cut (star = K_est)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig, dpi)


def figure_ims_steps(curves: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    st = curves[curves["curve"] == "ims_steps"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for d, sub in st.groupby("dataset"):
        g = sub.groupby("x")[["y", "lab_acc"]].mean()
        line, = ax.plot(g.index, g["y"], marker="o", label=f"{d}: All on D_U")
        ax.plot(g.index, g["lab_acc"], linestyle="--", color=line.get_color(), label=f"{d}: accuracy on D_L (stopping signal)")
    ax.set_xlabel("inference mean-shift steps t")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Iterative mean shift at inference (K known)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig, dpi)


# ------------------------------------------------------------------------------------------- render
def render(results: pd.DataFrame, curves: pd.DataFrame, emb: dict[str, np.ndarray], train_log: pd.DataFrame,
           rows: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any], data: dict[str, Any],
           column_datasets: dict[str, str | None], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    dpi = int(params.get("figure_dpi", 110))
    claims = check_claims(results, curves, train_log, data, params)
    profile = runtime.get("profile", "base")
    dss = list(data["datasets"])
    nseeds = int(results["seed"].nunique()) if not results.empty else 0
    summary = [f"# CMS: regenerated tables ({profile} profile)", "", f"Paper: {paper['citation']}", "",
               "Each table keeps the paper's layout as far as public sources give it; `(paper)` columns are the "
               "paper's numbers (only the official README's CMS rows were found; every other paper cell says "
               "`not found`), `(ours)` columns this run's. Our numbers come from the embedded data named under each "
               "table with a small CNN pre-trained self-supervised on that data (DINO's stand-in), so compare "
               "directions and gaps, not absolute values. All / Old / New: clustering accuracy (%) on the "
               f"unlabelled training images D_U, one Hungarian assignment (v2 protocol); {nseeds} seed(s). "
               "Regenerate with `make repro` (or `kedro run --pipeline=cms`).", "", "## Data", ""]
    summary += [f"- **{d}**: {DATA_DESC.get(d, data['datasets'][d].get('kind', d))}" for d in dss] + [""]
    for table_id, spec in table_specs(paper).items():
        display, notes = compose_table(spec, rows)
        for col in spec.columns:
            ds = column_datasets.get(col.get("dataset"))
            if ds:
                col["ours"] = DATA_DESC.get(ds, ds).split(":")[0]
        md = table_markdown(spec, display, notes)
        files[f"table_{table_id}.md"] = md
        files[f"table_{table_id}.csv"] = table_csv(spec, rows)
        summary += [md, ""]
    files["claims.md"] = claims_markdown(claims)
    files["claims.csv"] = claims.to_csv(index=False)
    summary += [claims_markdown(claims)]
    per_row = results.groupby(["dataset", "row"], as_index=False)[["all", "old", "new", "k"]].mean()
    files["results.csv"] = per_row.to_csv(index=False)
    summary += ["## Every row we ran (mean over seeds)", "", per_row.round(2).to_markdown(index=False), ""]
    kin = curves[curves["curve"] == "k_inference"].groupby(["dataset", "x"], as_index=False)["y"].mean()
    files["plots/accuracy_vs_k.csv"] = kin.rename(columns={"x": "k", "y": "all_acc"}).to_csv(index=False)
    files["figures/embeddings_2d.png"] = figure_embeddings(emb, dss, dpi)
    files["figures/accuracy_vs_k.png"] = figure_accuracy_vs_k(curves, results, dpi)
    files["figures/k_estimate.png"] = figure_k_estimate(curves, data, dpi)
    files["figures/ims_steps.png"] = figure_ims_steps(curves, dpi)
    summary += ["## Figures", "", "The paper's numbers for these studies were not found, so the figures show ours only.", "",
                "![2-D embeddings before and after training](figures/embeddings_2d.png)", "",
                "![accuracy against k](figures/accuracy_vs_k.png)", "",
                "![class-count estimate](figures/k_estimate.png)", "",
                "![accuracy against inference steps](figures/ims_steps.png)", "",
                "## What differs from the paper", "",
                "- Data: embedded stand-ins (above) instead of CIFAR-100 / ImageNet-100 / CUB / Stanford Cars / "
                "FGVC-Aircraft / Herbarium19 (the full profile reads those).",
                "- Backbone: a small GroupNorm CNN pre-trained with SimCLR on the training images (no labels) instead of "
                "DINO ViT-B/16; only its last stage is fine-tuned (as ViT block 11), and a frozen feature "
                "standardisation replaces the ViT's final LayerNorm.",
                "- Schedule: far fewer epochs than the paper's 200 (see conf/base/parameters/cms.yml).",
                "- Inductive GCD and the CLIP backbone are not run (rows say why).",
                "- K estimation and checkpoint selection follow the official code: Ward on the held-out split and "
                "the cut with the best Old accuracy, where the Hungarian match uses all held-out labels (old and "
                "new), as the official code does.",
                "- Why CMS trails k-means on this data: no implementation defect was found; at this scale (about "
                "130 SGD steps instead of ~78k, one seed) the freshly initialised head is under-trained, the "
                "held-out Old accuracy that selects `model_best` and K saturates at 0.99-1.00 within a few epochs "
                "(so an early checkpoint and K = K_old + 1 are kept), and the head's random initialisation alone "
                "moves All by about 12 points. The diagnosis and its numbers are in pipelines/cms/README.md.", ""]
    files["README.md"] = "\n".join(summary)
    files["metrics.json"] = metrics_json(rows, claims)
    return files
