"""MASH's measurements and figures; core renders the tables, the claims' verdicts and the report.

`measure_claims` returns each claim of `pipelines/mash/paper.yaml` once per image (or crop / image pair,
or seed): what a claim says, its threshold and its verdict are data and core's (`cvpr24.core.claims`).
Embedded image ids are `<group>_<crop>` (`gauss_b0_astronaut`, `cam_full_coffee`), so the same crop under
two noises pairs by its crop name; a pair exists where the profile shows the crop under both noises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report, figure_png
from cvpr24.pipelines.mash.nodes import LABELS, selection_accuracy

CORRELATED = ("gauss_b1", "cam_rgb", "cam_grey")
FIXED = r"bsd_t[0-9.]+"


def _by(per_image: pd.DataFrame, method: str, groups: tuple[str, ...], value: str = "psnr") -> pd.Series:
    sub = per_image[(per_image["method"] == method) & per_image["group"].isin(groups)]
    return sub.set_index("image_id")[value]


def _crop(series: pd.Series) -> pd.Series:
    """Re-key per-image values by crop name (`gauss_b1_astronaut` -> `astronaut`)."""
    return series.rename(index=lambda sid: str(sid).split("_", 2)[-1])


def _pair(a: pd.Series, b: pd.Series) -> pd.Series:
    """a − b on the crops shown under both noises (a NaN on either side stays NaN)."""
    a, b = _crop(a), _crop(b)
    common = [k for k in a.index if k in b.index]
    return a[common] - b[common]


def _best_fixed(per_image: pd.DataFrame, group: str) -> pd.Series:
    sub = per_image[per_image["method"].str.fullmatch(FIXED) & (per_image["group"] == group)]
    return sub.groupby("image_id")["psnr"].max()


def _diff(per_image: pd.DataFrame, a: str, b: str, groups: tuple[str, ...]) -> tuple[pd.Series, str]:
    """Per image PSNR(a) − PSNR(b) over the images of `groups` that ran either (a missing one is NaN)."""
    x, y = _by(per_image, a, groups), _by(per_image, b, groups)
    idx = list(dict.fromkeys([*x.index, *y.index]))
    x, y = x.reindex(idx), y.reindex(idx)
    return x - y, f"{x.mean():.2f} vs {y.mean():.2f} dB"


def measure_claims(per_image: pd.DataFrame, selection: pd.DataFrame, seed: int) -> dict[str, Measurement]:
    """Each claim's quantity per unit; the claims themselves are in paper.yaml."""
    m: dict[str, Measurement] = {}
    d, txt = _diff(per_image, "bsd_t0.2", "bsd_t0.8", ("gauss_b0",))
    m["C1"] = Measurement(d, txt + " (tau 0.2 vs 0.8, beta=0)")
    gap = {b: _by(per_image, "bsd_t0.8", (b,)) - _by(per_image, "bsd_t0.2", (b,)) for b in ("gauss_b0", "gauss_b1")}
    m["C2"] = Measurement(_pair(gap["gauss_b1"], gap["gauss_b0"]),
                          f"gap tau 0.8 − 0.2: {gap['gauss_b0'].mean():+.2f} dB (beta 0) → "
                          f"{gap['gauss_b1'].mean():+.2f} dB (beta 1)")
    eps = selection.set_index("image_id")["epsilon"]
    by_group = {g: eps[selection.set_index("image_id")["group"] == g] for g in selection["group"].unique()}
    empty = pd.Series(dtype=float)
    gauss = _pair(by_group.get("gauss_b1", empty), by_group.get("gauss_b0", empty))
    full = pd.concat([by_group.get("cam_rgb", empty), by_group.get("cam_grey", empty)])
    camera = _pair(full, by_group.get("cam_iid", empty))
    m["C3"] = Measurement(pd.concat([gauss.add_prefix("gauss:"), camera.add_prefix("camera:")]),
                          f"epsilon {gauss.mean():+.2f} (Gaussian), {camera.mean():+.2f} (camera), grey levels")
    b0, b1 = _best_fixed(per_image, "gauss_b0"), _best_fixed(per_image, "gauss_b1")
    m["C4"] = Measurement(_pair(b0, b1), f"{b0.mean():.2f} vs {b1.mean():.2f} dB")
    d, txt = _diff(per_image, "bsd_t0.8_lps", "bsd_t0.8", CORRELATED)
    m["C5"] = Measurement(d, txt)
    d, txt = _diff(per_image, "mash_nolps", "bsd_t0.5", tuple(per_image["group"].unique()))
    m["C6"] = Measurement(d, txt)
    d, txt = _diff(per_image, "mash_nolps", "bsd_t0.5", CORRELATED)
    m["C7"] = Measurement(d, txt + f" (full MASH {_by(per_image, 'mash', CORRELATED).mean():.2f} dB)")
    acc = selection_accuracy(per_image, selection)
    a = float(acc["correct"].mean()) if not acc.empty else float("nan")
    m["C8"] = Measurement({f"seed {seed}": a}, f"{int(acc['correct'].sum())} of {len(acc)} images")
    return m


def figure_examples(per_image: pd.DataFrame, outputs: dict, model_input: dict, reference: dict,
                    selection: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    methods = ["noisy", "bm3d_white", "zs_n2n", "bsd_t0.5", "mash"]
    picks = []
    for group in ("gauss_b1", "cam_rgb", "cam_grey", "gauss_b0"):
        ids = selection[selection["group"] == group]["image_id"]
        if len(ids):
            picks.append(ids.iloc[0])
    fig, axes = plt.subplots(len(picks), len(methods) + 1, figsize=(2.2 * (len(methods) + 1), 2.4 * len(picks)),
                             squeeze=False)
    sel = selection.set_index("image_id")
    for r, sid in enumerate(picks):
        for c, method in enumerate([*methods, "clean"]):
            ax = axes[r, c]
            if method == "clean":
                img, title = reference[sid], "clean (reference)"
            elif method == "noisy":
                img, title = np.clip(model_input[sid], 0, 255), "noisy"
            else:
                job = sel.loc[sid, "mash_job"] if method == "mash" else f"{sid}__{method}"
                if job not in outputs:
                    ax.axis("off")
                    continue
                img, title = outputs[job], LABELS.get(method, method)
            hit = per_image[(per_image["image_id"] == sid) & (per_image["method"] == method)]
            if not hit.empty:
                title += f"\n{hit['psnr'].iloc[0]:.2f} dB"
            shown = np.asarray(img, dtype=np.float32) / 255.0
            ax.imshow(shown[..., 0] if shown.shape[2] == 1 else np.clip(shown, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(sid, fontsize=7)
    fig.suptitle("MASH: noisy / denoised / clean crops (PSNR against the clean crop)", fontsize=10)
    return figure_png(fig, dpi)


def psnr_vs_tau(per_image: pd.DataFrame) -> pd.DataFrame:
    fixed = per_image[per_image["method"].str.fullmatch(r"bsd_t[0-9.]+")].copy()
    fixed["tau"] = fixed["method"].str.removeprefix("bsd_t").astype(float)
    return (fixed.groupby(["group", "tau"], as_index=False)["psnr"].mean()
            .rename(columns={"psnr": "psnr_db"}).sort_values(["group", "tau"]))


def figure_psnr_vs_tau(curve: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    names = {"gauss_b0": "Gaussian, beta=0 (i.i.d.)", "gauss_b05": "Gaussian, beta=0.5", "gauss_b1": "Gaussian, beta=1",
             "cam_iid": "camera, i.i.d.", "cam_rgb": "camera pipeline, sRGB", "cam_grey": "camera pipeline, grey"}
    for group, sub in curve.groupby("group"):
        ax.plot(sub["tau"], sub["psnr_db"], marker="o", label=names.get(group, group))
    ax.set_xlabel("masking ratio tau (fraction of pixels hidden)")
    ax.set_ylabel("PSNR (dB), mean over images")
    ax.set_title("Blind-spot denoising: PSNR against masking ratio\n(paper Fig. 2: higher tau wins as correlation grows)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig, dpi)


GROUP_NAMES = {"gauss_b0": "Gaussian, beta=0 (i.i.d.)", "gauss_b05": "Gaussian, beta=0.5",
               "gauss_b1": "Gaussian, beta=1 (correlated)", "cam_iid": "camera, i.i.d.",
               "cam_rgb": "camera pipeline, sRGB", "cam_grey": "camera pipeline, grey"}


def choice_label(tau: float, lps: bool) -> str:
    return f"tau {tau:g}" + (" + LPS" if lps else "")


def epsilon_trace(trace: pd.DataFrame, selection: pd.DataFrame, sel_params: dict[str, Any]) -> pd.DataFrame:
    """Per image and traced step: sigma_hat of both probes, epsilon and each preset's choice at that step
    (what MASH would pick with probes trained only that long)."""
    from cvpr24.pipelines.mash.nodes import rules

    if trace.empty:
        return pd.DataFrame(columns=["image_id", "group", "step", "epsilon"])
    t = trace.copy()
    t["image_id"] = t["job_id"].str.split("__").str[0]
    t["method"] = t["job_id"].str.split("__").str[1]
    hi, lo = f"bsd_t{float(sel_params['probe_high']):g}", f"bsd_t{float(sel_params['probe_low']):g}"
    wide = t[t["method"].isin([hi, lo])].pivot_table(index=["image_id", "step"], columns="method",
                                                    values="residual_std").dropna().reset_index()
    if wide.empty:
        return pd.DataFrame(columns=["image_id", "group", "step", "epsilon"])
    wide = wide.rename(columns={hi: "sigma_hat_high", lo: "sigma_hat_low"})
    wide["epsilon"] = (wide["sigma_hat_high"] - wide["sigma_hat_low"]).abs()
    for name, rule in rules(sel_params).items():
        wide[f"{name}_choice"] = [choice_label(*rule.select(e)) for e in wide["epsilon"]]
    wide["group"] = wide["image_id"].map(selection.set_index("image_id")["group"])
    return wide[["image_id", "group", "step", "sigma_hat_high", "sigma_hat_low", "epsilon",
                 *[c for c in wide.columns if c.endswith("_choice")]]]


def figure_epsilon(selection: pd.DataFrame, eps_trace: pd.DataFrame, sel_params: dict[str, Any], dpi: int) -> bytes:
    """Left: epsilon per image at the end of the probes, coloured by noise type, with both presets'
    thresholds. Right: epsilon against the probes' training steps."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6))
    groups = list(dict.fromkeys(selection["group"]))
    colours = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    order = selection.sort_values(["group", "epsilon"])
    ax.bar(range(len(order)), order["epsilon"], color=[colours[g] for g in order["group"]])
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(list(order["image_id"]), rotation=60, fontsize=6, ha="right")
    styles = {"paper": ("k", "--"), "released": ("tab:red", ":")}
    handles = [Patch(color=colours[g], label=GROUP_NAMES.get(g, g)) for g in groups]
    for name, preset in sel_params["presets"].items():
        c, ls = styles.get(name, ("grey", "-."))
        for key in ("eps_low", "eps_high"):
            for a in (ax, bx):
                a.axhline(float(preset[key]), color=c, ls=ls, lw=1)
        handles.append(Line2D([], [], color=c, ls=ls, label=f"{name} preset: eps_low, eps_high"))
    ax.set_ylabel("epsilon = |sigma_hat(0.8) - sigma_hat(0.2)| (grey levels)")
    ax.set_title("epsilon per image (probes at the full budget)", fontsize=9)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(handles=handles, fontsize=6, loc="upper left")
    for _, sub in eps_trace.groupby("image_id", sort=False):
        g = sub["group"].iloc[0]
        bx.plot(sub["step"], sub["epsilon"], marker=".", color=colours.get(g, "grey"), lw=1)
    bx.set_xlabel("probe training steps")
    bx.set_ylabel("epsilon (grey levels)")
    bx.set_yscale("symlog", linthresh=1.0)
    bx.set_title("epsilon against the probes' training budget (one line per image)", fontsize=9)
    bx.grid(alpha=0.3)
    return figure_png(fig, dpi)


def preset_table(per_image: pd.DataFrame, selection: pd.DataFrame, sel_params: dict[str, Any]) -> pd.DataFrame:
    """Per image: epsilon, each preset's choice and PSNR, both probes' PSNR and the best fixed ratio."""
    psnr = per_image.pivot_table(index="image_id", columns="method", values="psnr")
    hi, lo = f"bsd_t{float(sel_params['probe_high']):g}", f"bsd_t{float(sel_params['probe_low']):g}"
    out = []
    for sel in selection.itertuples():
        if sel.image_id not in psnr.index:
            continue
        p = psnr.loc[sel.image_id]
        rec = {"image": sel.image_id, "noise": GROUP_NAMES.get(sel.group, sel.group), "epsilon": sel.epsilon,
               f"{sel_params['preset']}: choice": choice_label(sel.tau, sel.lps),
               f"{sel_params['preset']}: PSNR": p.get("mash")}
        for name in sel_params["presets"]:
            if name != sel_params["preset"]:
                t, use = getattr(sel, f"{name}_tau"), getattr(sel, f"{name}_lps")
                rec[f"{name}: choice"] = choice_label(t, use)
                rec[f"{name}: PSNR"] = p.get(f"mash_{name}")
        rec[f"probe {hi.removeprefix('bsd_t')}: PSNR"] = p.get(hi)
        rec[f"probe {lo.removeprefix('bsd_t')}: PSNR"] = p.get(lo)
        fixed = p[[c for c in p.index if c.startswith("bsd_t") and c.removeprefix("bsd_t").replace(".", "").isdigit()]]
        rec["best fixed tau (oracle)"] = f"{fixed.idxmax().removeprefix('bsd_t')} ({fixed.max():.2f})"
        out.append(rec)
    return pd.DataFrame(out)


def budget_summary(eps_trace: pd.DataFrame, selection: pd.DataFrame, preset: str) -> pd.DataFrame:
    """Per traced step: on how many images the preset's choice already equals its choice at the end."""
    if eps_trace.empty:
        return pd.DataFrame()
    last = eps_trace.sort_values("step").groupby("image_id").tail(1).set_index("image_id")[f"{preset}_choice"]
    t = eps_trace.assign(final=eps_trace["image_id"].map(last))
    t["same"] = t[f"{preset}_choice"] == t["final"]
    return (t.groupby("step").agg(images=("same", "size"), same_choice=("same", "sum"),
                                  median_epsilon=("epsilon", "median")).reset_index())


def render(per_image: pd.DataFrame, rows: pd.DataFrame, selection: pd.DataFrame, sigma_trace: pd.DataFrame,
           outputs: dict, model_input: dict, reference: dict, paper: dict[str, Any], params: dict[str, Any],
           evaluate: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any],
           speed: pd.DataFrame | None = None, epsilon_size: pd.DataFrame | None = None) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(per_image, selection, int(runtime.get("seed", 0))))
    labels, groups = evaluate["group_labels"], evaluate["column_groups"]
    column_notes = {tid: {c["key"]: labels.get(groups.get(c.get("group")), groups.get(c.get("group")))
                          for c in t["columns"] if groups.get(c.get("group"))} for tid, t in paper["tables"].items()}
    acc = selection_accuracy(per_image, selection)
    sel = selection.merge(acc[["image_id", "best_tau", "correct"]], on="image_id", how="left")
    curve = psnr_vs_tau(per_image)
    figures = [Figure("psnr_vs_tau", "PSNR against the masking ratio tau, per noise group (mean over images).",
                      figure_psnr_vs_tau(curve, dpi)),
               Figure("examples", "Noisy, denoised and clean crops (PSNR against the clean crop).",
                      figure_examples(per_image, outputs, model_input, reference, selection, dpi))]
    sel_params = train["selection"]
    eps_trace = epsilon_trace(sigma_trace, selection, sel_params)
    figures.append(Figure("epsilon", "epsilon per image by noise type with both presets' thresholds (left), and "
                          "against the probes' training steps (right).",
                          figure_epsilon(selection, eps_trace, sel_params, dpi)))
    presets = preset_table(per_image, selection, sel_params)
    budget = budget_summary(eps_trace, selection, str(sel_params["preset"]))
    per_image_md = sel[["image_id", "group", "sigma_hat_high", "sigma_hat_low", "epsilon", "tau", "lps",
                        "shuffled_fraction", "best_tau", "correct"]].round(3).to_markdown(index=False)
    sections = [("Adaptive masking per image",
                 "epsilon = |sigma_hat(tau 0.8) − sigma_hat(tau 0.2)| in grey levels; thresholds 1.5 / 2.5 "
                 "(paper). `best_tau` is the best fixed ratio by PSNR (oracle, uses the clean image).\n\n"
                 + per_image_md)]
    sections.append(("Selection presets: paper against released settings", _preset_text(presets, budget, train)))
    crop = int(next(iter(model_input.values())).shape[0]) if model_input else 0
    sizes = epsilon_by_size(selection, eps_trace, epsilon_size, train, crop)
    if not sizes.empty:
        figures.append(Figure("epsilon_size", "epsilon against the crop size, one line per image, coloured by noise "
                              "type, with both presets' thresholds (probes at the pipeline's budget).",
                              figure_epsilon_size(sizes, sel_params, dpi)))
        sections.append(("epsilon against the image size", _size_text(sizes, train)))
    replay = adaptive_replay(sizes, sel_params, int(train["iterations"]))
    if not replay.empty:
        sections.append(("Adaptive probes replayed on the recorded traces", _replay_text(replay, sel_params)))
    if speed is not None and not speed.empty:
        sections.append(("MASH per image at the paper's budget: straightforward against the fast path",
                         _speed_text(speed)))
    lp = per_image["lpips_note"].dropna().unique() if "lpips_note" in per_image else []
    if len(lp) and lp[0]:
        sections.append(("LPIPS", f"{lp[0]}."))
    return build_report("mash", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        column_notes=column_notes, sections=sections,
                        files={"selection.csv": sel.to_csv(index=False),
                               "presets.csv": presets.to_csv(index=False),
                               "plots/epsilon_trace.csv": eps_trace.to_csv(index=False),
                               "plots/epsilon_size.csv": sizes.to_csv(index=False),
                               "plots/adaptive_replay.csv": replay.to_csv(index=False),
                               "plots/psnr_vs_tau.csv": curve.to_csv(index=False)})


def _preset_text(presets: pd.DataFrame, budget: pd.DataFrame, train: dict[str, Any]) -> str:
    """The per-image preset table and what epsilon does with the probes' budget, in words and numbers."""
    sel = train["selection"]
    described = "; ".join(f"`{n}`: tau {p['tau_high']:g} / {p['tau_medium']:g} / {p['tau_low']:g}, "
                          f"eps {p['eps_low']:g} / {p['eps_high']:g}" for n, p in sel["presets"].items())
    head = (f"Both presets read the same epsilon from the same two probes (tau {sel['probe_high']:g} and "
            f"{sel['probe_low']:g}); they differ in the ratios and thresholds ({described}). The `MASH` rows use "
            f"`{sel['preset']}`; every preset has its own row in Tables 1 and 3. The probes' PSNR is shown to "
            "see where the rule mis-routes (a probe beating the chosen run). Best fixed tau: the oracle over the "
            "fixed ratios run for this image (uses the clean image).\n\n")
    body = presets.round(2).to_markdown(index=False) if not presets.empty else "(no images with a reference)"
    if budget.empty:
        return head + body
    steps = ", ".join(f"{int(r.step)}: {int(r.same_choice)}/{int(r.images)} (median eps {r.median_epsilon:.2f})"
                      for r in budget.itertuples())
    return (head + body + "\n\n**epsilon against the training budget.** sigma_hat of both probes was recorded "
            f"every {train.get('sigma_every')} steps (its own mask ensemble, so the runs are unchanged); per step, "
            f"the images on which the `{sel['preset']}` rule already makes its final choice: {steps} "
            f"(of {train['iterations']} steps, width {train['width']}, crops as in the tables). "
            "`plots/epsilon_trace.csv` has every value; the right panel of the epsilon figure plots them.")


def epsilon_by_size(selection: pd.DataFrame, eps_trace: pd.DataFrame, epsilon_size: pd.DataFrame | None,
                    train: dict[str, Any], size: int) -> pd.DataFrame:
    """The probes' epsilon trace per image and crop size, long form (image_id, group, size, step, epsilon,
    epsilon_final): this run's crops (`sigma_trace`, final epsilon from `selection`) and the committed
    measurement at other sizes (`pipelines/mash/epsilon_size.csv`), where its budget matches this run's."""
    cols = ["image_id", "group", "size", "step", "epsilon", "epsilon_final", "source"]
    parts = []
    if not eps_trace.empty and not selection.empty:
        own = eps_trace.merge(selection[["image_id", "epsilon"]].rename(columns={"epsilon": "epsilon_final"}),
                              on="image_id")
        parts.append(own.assign(size=int(size), source="this run"))
    if epsilon_size is not None and not epsilon_size.empty:
        same = epsilon_size[(epsilon_size["iterations"] == int(train["iterations"]))
                            & (epsilon_size["width"] == int(train["width"]))]
        parts.append(same.assign(source="pipelines/mash/epsilon_size.csv"))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat([p[[c for c in cols if c in p]] for p in parts], ignore_index=True)
    return out.dropna(subset=["size"]).astype({"size": int, "step": int})


def figure_epsilon_size(sizes: pd.DataFrame, sel_params: dict[str, Any], dpi: int) -> bytes:
    """Final epsilon against the crop side, one line per image coloured by noise type, thresholds drawn."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    final = sizes.drop_duplicates(["image_id", "size"]).sort_values("size")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = list(dict.fromkeys(final["group"]))
    colours = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    for _, sub in final.groupby("image_id", sort=False):
        ax.plot(sub["size"], sub["epsilon_final"], marker="o", color=colours[sub["group"].iloc[0]], lw=1)
    styles = {"paper": ("k", "--"), "released": ("tab:red", ":")}
    handles = [Line2D([], [], color=colours[g], marker="o", label=GROUP_NAMES.get(g, g)) for g in groups]
    for name, preset in sel_params["presets"].items():
        c, ls = styles.get(name, ("grey", "-."))
        for key in ("eps_low", "eps_high"):
            ax.axhline(float(preset[key]), color=c, ls=ls, lw=1)
        handles.append(Line2D([], [], color=c, ls=ls, label=f"{name} preset: eps_low, eps_high"))
    ax.set_xticks(sorted(final["size"].unique()))
    ax.set_xlabel("crop side (pixels; square crops)")
    ax.set_ylabel("epsilon at the end of the probes (grey levels)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=6, loc="upper left")
    return figure_png(fig, dpi)


def _size_text(sizes: pd.DataFrame, train: dict[str, Any]) -> str:
    """epsilon and the `paper` preset's choice per image and crop size."""
    from cvpr24.pipelines.mash.nodes import rules

    sel = train["selection"]
    rule = rules(sel)[sel["preset"]]
    final = sizes.drop_duplicates(["image_id", "size"])
    eps = final.pivot_table(index=["group", "image_id"], columns="size", values="epsilon_final")
    table = pd.DataFrame(index=eps.index)
    for size in eps.columns:
        table[f"{size}px epsilon"] = eps[size].round(2)
        table[f"{size}px {sel['preset']}"] = [choice_label(*rule.select(e)) if pd.notna(e) else "" for e in eps[size]]
    flips = int(sum(len({rule.select(e) for e in row.dropna()}) > 1 for _, row in eps.iterrows()))
    spearman = final.groupby("image_id").apply(
        lambda g: g["size"].corr(g["epsilon_final"], method="spearman") if len(g) > 2 else float("nan"),
        include_groups=False)
    return ("epsilon from the two probes trained at this run's budget "
            f"({train['iterations']} steps, width {train['width']}) on the same images cut at other crop sizes "
            "(the same top-left corner; a fresh noise draw per size): this run's crops, and the others measured "
            "by `python -m cvpr24.pipelines.mash.epsilon_size` (committed, `pipelines/mash/epsilon_size.csv`). "
            f"The `{sel['preset']}` rule changes its choice with the size on {flips} of {len(eps)} images; "
            f"epsilon rises with the size (Spearman > 0) on {int((spearman > 0).sum())} and falls on "
            f"{int((spearman < 0).sum())} of {int(spearman.notna().sum())} images measured at three sizes. "
            "The figure `epsilon_size` draws it; `plots/epsilon_size.csv` has every traced step.\n\n"
            + table.reset_index().to_markdown(index=False))


def adaptive_replay(sizes: pd.DataFrame, sel_params: dict[str, Any], iterations: int) -> pd.DataFrame:
    """Where `fast.mash_adaptive`'s probes would have stopped on each recorded trace (image x size), the
    choice there, and whether it is the choice at the end of the probes (the straightforward one)."""
    from cvpr24.pipelines.mash.fast import ADAPTIVE, adaptive_stop
    from cvpr24.pipelines.mash.nodes import rules

    if sizes.empty:
        return pd.DataFrame()
    rule = rules(sel_params)[sel_params["preset"]]
    out = []
    for (image_id, size), sub in sizes.groupby(["image_id", "size"], sort=False):
        trace = list(zip(sub["step"], sub["epsilon"], strict=True))
        stop = adaptive_stop(trace, rule, iterations=iterations, **ADAPTIVE)
        at = dict(trace).get(stop) if stop < iterations else float(sub["epsilon_final"].iloc[0])
        final = float(sub["epsilon_final"].iloc[0])
        out.append({"image_id": image_id, "group": sub["group"].iloc[0], "size": int(size), "stopped_at": stop,
                    "probe_share": stop / iterations, "epsilon_at_stop": at, "epsilon_final": final,
                    "choice_at_stop": choice_label(*rule.select(at)),
                    "choice_at_end": choice_label(*rule.select(final)),
                    "same_choice": rule.select(at) == rule.select(final)})
    return pd.DataFrame(out)


def _replay_text(replay: pd.DataFrame, sel_params: dict[str, Any]) -> str:
    from cvpr24.pipelines.mash.fast import ADAPTIVE

    stopped = replay[replay["probe_share"] < 1]
    opts = ", ".join(f"{k} {v:g}" for k, v in ADAPTIVE.items())
    return (f"`fast.mash_adaptive` stops both probes once the last {ADAPTIVE['patience']} epsilons (checked every "
            f"{ADAPTIVE['check_every']} steps, from {ADAPTIVE['min_fraction']:.0%} of the budget on) give one "
            f"choice, each at least {ADAPTIVE['margin']:g} grey levels from the thresholds ({opts}). Replayed "
            "on every recorded trace (this run's crops and the other sizes, same budget), with the "
            f"`{sel_params['preset']}` rule: the probes stop early on {len(stopped)} of {len(replay)} "
            f"image-size pairs (mean probe share {replay['probe_share'].mean():.0%}), and the choice equals the "
            f"one at the end of the probes on {int(replay['same_choice'].sum())} of {len(replay)} "
            f"({int(stopped['same_choice'].sum())} of {len(stopped)} early stops). A pair that never settles "
            "costs nothing extra: its probes run to the end and epsilon is the straightforward one. "
            "`plots/adaptive_replay.csv` has every pair.\n\n"
            + replay.drop(columns=["group"]).round(3).to_markdown(index=False))


def _speed_text(speed: pd.DataFrame) -> str:
    """The committed speed measurement (`pipelines/mash/speed.csv`) per image and variant."""
    first = speed.iloc[0]
    cols = {"image_id": "image", "variant": "variant", "seconds": "seconds", "time_share": "share of straightforward",
            "probe_steps": "probe steps", "probe_s": "probes (s)", "final_s": "final run (s)", "epsilon": "epsilon",
            "choice": "choice", "psnr": "PSNR (dB)", "psnr_difference_db": "PSNR difference (dB)"}
    table = speed[[c for c in cols if c in speed]].rename(columns=cols).round(3).to_markdown(index=False)
    sizes = ", ".join(dict.fromkeys(speed["size"].astype(str)))
    return (f"Measured by `python -m cvpr24.pipelines.mash.speed` on {first['date']} ({first['iterations']} steps, "
            f"width {first['width']}, crops {sizes}, 2 CPU cores, every variant in one run, same seeds). "
            "Straightforward: probe, probe, final run in sequence, one thread each (as the pipeline's jobs run), and "
            "on some images two threads each. Fast: both probes at once (two threads of one process, one kernel "
            "thread each), paused after the probe steps shown, then the chosen run on both cores, or the chosen probe "
            "continued (or taken as it is, for full-length probes). Adaptive: the probes stop once epsilon has "
            "settled (`fast.py`, the section above), or run to the end. Shares and PSNR differences are against "
            "the one-thread straightforward run of the same image. Table 5 averages the seconds.\n\n" + table)
