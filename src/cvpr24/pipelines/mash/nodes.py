"""MASH's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> clean and noisy images + a validated manifest (embedded generator or real datasets)
preprocess  -> crops to the U-Net's multiple of 32, the oracle noise PSD, and the job plan
train       -> every job (one network per image and setting, plus the baselines), then MASH's selection
evaluate    -> PSNR/SSIM(/LPIPS) per image and method, then one row per paper-table cell
report      -> the paper's tables with our numbers beside, claims C1-C8, figures, metrics.json

The one deliberate side effect is the train phase's job cache (`train.checkpoint_dir`): checkpoints that
let a killed run resume. It is keyed by code, parameters and data, so it can never serve a stale result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core import metrics as M
from cvpr24.core.ingest import dispatch
from cvpr24.core.parallel import map_jobs
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import add_divisibility, manifest_from_arrays, validate_manifest
from cvpr24.pipelines.mash import data as D
from cvpr24.pipelines.mash import expectations as E
from cvpr24.pipelines.mash.method import bsd_job_name, code_fingerprint, run_job
from cvpr24.pipelines.mash.model import SelectionRule, UNetN2N, conv_macs, count_parameters

log = logging.getLogger(__name__)

REAL_FIX = "see pipelines/mash/README.md (Real data) for where to get each dataset and where to put it"


# ------------------------------------------------------------------------------------------- ingest
def _embedded(data: dict[str, Any], seed: int):
    size = int(data["crop_size"])
    clean, noisy, meta = {}, {}, {}
    g = data["gauss"]
    for crop in g["crops"]:
        img = D.load_clean_crop(crop["name"], crop["top"], crop["left"], size)
        for beta in g["betas"]:
            tag = {0.0: "b0", 0.5: "b05", 1.0: "b1"}.get(float(beta), f"b{beta}")
            sid = f"gauss_{tag}_{crop['name']}"
            rng = np.random.default_rng(derive_seed(seed, sid))
            noisy[sid] = D.add_correlated_noise(img, float(g["sigma"]), float(beta), int(g["k"]), rng,
                                                clip=bool(data["clip"])).astype(np.float32)
            clean[sid] = img
            meta[sid] = {"group": f"gauss_{tag}", "source": f"skimage:{crop['name']}[{crop['top']}:,{crop['left']}:]",
                         "noise": "correlated_gaussian", "beta": float(beta), "sigma": float(g["sigma"])}
    c = data["camera"]
    for crop in c["crops"]:
        img = D.load_clean_crop(crop["name"], crop["top"], crop["left"], size)
        for preset in crop["presets"]:
            sid = f"{preset.replace('pipeline_', 'cam_')}_{crop['name']}"
            rng = np.random.default_rng(derive_seed(seed, sid))
            noisy[sid] = D.camera_pipeline_noise(img, preset, rng).astype(np.float32)
            clean[sid] = img
            grey = img.shape[2] == 1
            group = {"pipeline_iid": "cam_iid", "pipeline_demosaic": "cam_demosaic"}.get(
                preset, "cam_grey" if grey else "cam_rgb")
            meta[sid] = {"group": group, "source": f"skimage:{crop['name']}[{crop['top']}:,{crop['left']}:]",
                         "noise": preset, "beta": float("nan"), "sigma": float("nan")}
    return clean, noisy, meta


def _real(real: dict[str, Any]):
    readers = {"sidd_val": D.read_sidd_validation, "sidd_bench": D.read_sidd_benchmark,
               "fmdd": D.read_fmdd, "polyu": D.read_polyu}
    clean, noisy, meta = {}, {}, {}
    for name, cfg in real.items():
        if name not in readers:
            raise ValueError(f"unknown real dataset {name!r} in mash.data.real (known: {sorted(readers)})")
        for sid, y, x in readers[name](cfg["root"], max_images=cfg.get("max_images")):
            y = y if y.ndim == 3 else y[..., None]
            noisy[sid] = y.astype(np.float32)
            if x is not None:
                clean[sid] = x if x.ndim == 3 else x[..., None]
            meta[sid] = {"group": name, "source": str(cfg["root"]), "noise": "real",
                         "beta": float("nan"), "sigma": float("nan")}
    return clean, noisy, meta


def ingest(data: dict[str, Any], runtime: dict[str, Any]):
    """Materialise the raw images (embedded generator or real datasets) and validate their manifest."""
    (clean, noisy, meta), fix = dispatch(data, slug="mash", embedded=lambda: _embedded(data, int(runtime["seed"])),
                                         real=lambda: _real(data["real"]), real_fix=REAL_FIX)
    multiple = 32 if data["source"] == "embedded" else 1  # real images are cropped to 32s in preprocess
    noisy_m = manifest_from_arrays(noisy, meta).assign(kind="noisy")
    clean_m = manifest_from_arrays(clean, meta).assign(kind="clean")
    validate_manifest(add_divisibility(noisy_m, 32), E.noisy(multiple), dataset="mash.noisy", fix=fix)
    if not clean_m.empty:
        validate_manifest(add_divisibility(clean_m, 32), E.clean(multiple), dataset="mash.clean", fix=fix)
    manifest = pd.concat([noisy_m, clean_m], ignore_index=True)
    manifest["fingerprint"] = fingerprint_arrays(noisy)
    return clean, noisy, manifest


# --------------------------------------------------------------------------------------- preprocess
def _center_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    h, w = (img.shape[0] // multiple) * multiple, (img.shape[1] // multiple) * multiple
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {img.shape} is smaller than the U-Net's minimum {multiple}x{multiple}")
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[top: top + h, left: left + w]


def _job_name(tau: float, lps: bool, tile: int, default_tile: int) -> str:
    return bsd_job_name(tau, lps) + (f"_s{tile}" if lps and tile != default_tile else "")


def preprocess(clean: dict, noisy: dict, manifest: pd.DataFrame, prep: dict[str, Any], train: dict[str, Any]):
    """Crop to multiples of 32, compute each image's oracle noise PSD, and plan every training job."""
    model_input = {k: _center_crop(v, 32).astype(np.float32) for k, v in noisy.items()}
    reference = {k: _center_crop(v, 32) for k, v in clean.items()}
    meta = manifest[manifest["kind"] == "noisy"].set_index("sample_id")
    oracle_psd = {k: D.noise_psd(model_input[k] - reference[k].astype(np.float32)) for k in reference}
    tile = int(prep["tile_size"])
    jobs = []
    for sid in model_input:
        group = meta.loc[sid, "group"]
        plan = [(float(t), False, tile) for t in prep["taus"]]
        plan += [(float(t), True, tile) for t in prep["lps_taus"]]
        t3 = prep.get("table3_lps") or {}
        if group in t3.get("groups", []) and float(t3["tau"]) not in map(float, prep["lps_taus"]):
            plan.append((float(t3["tau"]), True, tile))
        if sid in prep.get("tile_size_images", []):
            plan += [(max(map(float, prep["lps_taus"])), True, int(s)) for s in prep["tile_sizes"]]
        for tau, lps, s in plan:
            method = _job_name(tau, lps, s, tile)
            jobs.append({"job_id": f"{sid}__{method}", "image_id": sid, "group": group, "kind": "bsd",
                         "method": method, "tau": tau, "lps": lps, "tile_size": s})
        for kind, on in (("bm3d_white", train["baselines"].get("bm3d")),
                         ("bm3d_psd", train["baselines"].get("bm3d") and sid in oracle_psd),
                         ("nlmeans", train["baselines"].get("nlmeans")),
                         ("zs_n2n", bool(train["baselines"].get("zs_n2n")))):
            if on:
                jobs.append({"job_id": f"{sid}__{kind}", "image_id": sid, "group": group, "kind": kind,
                             "method": kind, "tau": 0.0, "lps": False, "tile_size": tile})
    jobs = pd.DataFrame(jobs)
    fix = "check mash.preprocess and the crop size in conf/<env>/parameters/mash.yml"
    validate_manifest(add_divisibility(manifest_from_arrays(model_input), 32), E.MODEL_INPUT,
                      dataset="mash.model_input", fix=fix)
    validate_manifest(jobs, E.JOBS, dataset="mash.jobs", id_column="job_id", fix=fix)
    return model_input, reference, oracle_psd, jobs


# -------------------------------------------------------------------------------------------- train
def _run(jobs: pd.DataFrame, model_input: dict, oracle_psd: dict, train: dict[str, Any],
         runtime: dict[str, Any], desc: str) -> list[dict[str, Any]]:
    code = code_fingerprint()
    specs = [
        {"job": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
         "noisy": model_input[row["image_id"]], "train": train, "seed": int(runtime["seed"]),
         "checkpoint_root": str(train["checkpoint_dir"]), "code": code,
         "psd": oracle_psd.get(row["image_id"]) if row["kind"] == "bm3d_psd" else None,
         "device": str(runtime.get("device", "cpu"))}
        for row in jobs.to_dict("records")
    ]
    return map_jobs(run_job, specs, workers=int(train["workers"]), threads=int(runtime["threads"]),
                    desc=desc, progress=bool(runtime.get("progress", True)))


def _log_rows(results: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"job_id": r["job_id"], "seconds": float(r["seconds"]), "cached": bool(r["cached"]),
                          "residual_std": float(r["residual_std"]),
                          "shuffled_fraction": float(r["shuffled_fraction"]),
                          "sigma_estimate": float(r.get("sigma_estimate", float("nan")))} for r in results])


def rules(selection: dict[str, Any]) -> dict[str, SelectionRule]:
    """MASH's selection presets (Eq. 10), by name: `paper` (Sec. 4.1) and `released` (the official configs)."""
    return {name: SelectionRule(**{k: float(v) for k, v in preset.items()})
            for name, preset in selection["presets"].items()}


def _final_jobs(jobs: pd.DataFrame, job_log: pd.DataFrame, selection: dict[str, Any]) -> pd.DataFrame:
    """The final runs MASH's presets choose that the plan does not already hold (MASH's third training:
    after the probes, only the ratio the rule picks is trained, as the method does per image)."""
    merged = jobs.merge(job_log, on="job_id")
    bsd = merged[merged["kind"] == "bsd"]
    if bsd.empty:
        return jobs.iloc[0:0]
    tile = int(bsd["tile_size"].mode().iloc[0])
    have = set(jobs["job_id"])
    extra = []
    for sid, grp in bsd.groupby("image_id", sort=False):
        _, _, eps = _probes(grp, sid, selection, tile)
        for rule in rules(selection).values():
            tau, lps = rule.select(eps)
            job_id = f"{sid}__{_job_name(tau, lps, tile, tile)}"
            if job_id not in have:
                have.add(job_id)
                extra.append({"job_id": job_id, "image_id": sid, "group": grp["group"].iloc[0], "kind": "bsd",
                              "method": _job_name(tau, lps, tile, tile), "tau": tau, "lps": lps, "tile_size": tile})
    return pd.DataFrame(extra, columns=jobs.columns)


def train(jobs: pd.DataFrame, model_input: dict, oracle_psd: dict, train: dict[str, Any],
          runtime: dict[str, Any]):
    """Run every planned job (cached and resumable), then the final runs the selection presets pick that the
    plan lacks. Returns the outputs, every job run (planned + final), a per-job log, the loss history and
    the probes' sigma_hat over training."""
    results = _run(jobs, model_input, oracle_psd, train, runtime, "mash train jobs")
    finals = _final_jobs(jobs, _log_rows(results), train["selection"])
    if not finals.empty:
        log.info("mash train: %d final runs chosen by the selection presets: %s", len(finals),
                 ", ".join(finals["job_id"]))
        results += _run(finals, model_input, oracle_psd, train, runtime, "mash final runs")
    all_jobs = pd.concat([jobs, finals], ignore_index=True)
    outputs = {r["job_id"]: r["denoised"].astype(np.float32) for r in results}
    history = [{"job_id": r["job_id"], **h} for r in results for h in r["history"]]
    trace = [{"job_id": r["job_id"], **t} for r in results for t in r.get("sigma_trace", [])]
    n_cached = sum(r["cached"] for r in results)
    log.info("mash train: %d jobs (%d read back from the job cache)", len(results), n_cached)
    log_history_to_active_run(history, prefix="loss")
    return (outputs, _log_rows(results), pd.DataFrame(history, columns=["job_id", "step", "loss"]),
            pd.DataFrame(trace, columns=["job_id", "step", "residual_std"]), all_jobs)


def _probes(grp: pd.DataFrame, sid: str, selection: dict[str, Any], tile: int) -> tuple[pd.Series, pd.Series, float]:
    """One image's two probe jobs (with their logs) and epsilon = |sigma_hat(high) - sigma_hat(low)| (Eq. 9)."""
    hi = _find_job(grp, sid, float(selection["probe_high"]), False, tile)
    lo = _find_job(grp, sid, float(selection["probe_low"]), False, tile)
    return hi, lo, abs(hi["residual_std"] - lo["residual_std"])


def _find_job(grp: pd.DataFrame, sid: str, tau: float, lps: bool, tile: int) -> pd.Series:
    hit = grp[(np.isclose(grp["tau"], tau)) & (grp["lps"] == lps) & (grp["tile_size"] == tile)]
    if hit.empty:
        raise ValueError(
            f"MASH needs a job at tau={tau}, lps={lps} for {sid} but none was planned: add the ratio "
            "to mash.preprocess.taus / lps_taus so it matches mash.train.selection")
    return hit.iloc[0]


def select(jobs: pd.DataFrame, job_log: pd.DataFrame, selection: dict[str, Any]) -> pd.DataFrame:
    """MASH's adaptive masking (Eq. 8-10): epsilon from the two probes, then tau and LPS per image, by the
    preset `selection.preset` (the `mash` rows); every other preset's choice in `<preset>_tau`,
    `<preset>_lps` and `<preset>_job`."""
    presets = rules(selection)
    default = str(selection["preset"])
    if default not in presets:
        raise ValueError(f"mash.train.selection.preset is {default!r}; known presets: {sorted(presets)}")
    merged = jobs.merge(job_log, on="job_id")
    bsd = merged[merged["kind"] == "bsd"]
    default_tile = int(bsd["tile_size"].mode().iloc[0]) if not bsd.empty else 4
    rows = []
    for sid, grp in bsd.groupby("image_id", sort=False):
        def find(tau: float, lps: bool, grp=grp, sid=sid) -> pd.Series:
            return _find_job(grp, sid, tau, lps, default_tile)

        hi, lo, eps = _probes(grp, sid, selection, default_tile)
        tau, lps = presets[default].select(eps)
        final, nolps = find(tau, lps), find(tau, False)
        row = {"image_id": sid, "group": grp["group"].iloc[0], "sigma_hat_high": hi["residual_std"],
               "sigma_hat_low": lo["residual_std"], "epsilon": eps, "tau": tau, "lps": lps,
               "mash_job": final["job_id"], "mash_nolps_job": nolps["job_id"],
               "shuffled_fraction": final["shuffled_fraction"],
               "mash_seconds": hi["seconds"] + lo["seconds"] + final["seconds"]}
        for name, rule in presets.items():
            if name != default:
                t, use = rule.select(eps)
                row.update({f"{name}_tau": t, f"{name}_lps": use, f"{name}_job": find(t, use)["job_id"]})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- evaluate
def evaluate(jobs: pd.DataFrame, outputs: dict, selection: pd.DataFrame, model_input: dict,
             reference: dict, params: dict[str, Any]) -> pd.DataFrame:
    """PSNR / SSIM (and LPIPS when its weights are cached) per image and method, clean images used here only."""
    lp_missing = M.lpips_available() if params.get("lpips", True) else M.Unavailable("disabled in parameters")
    rows = []

    def score(sid: str, group: str, method: str, job_id: str, pred: np.ndarray) -> None:
        ref = reference[sid].astype(np.float32)
        lp = M.lpips_distance(pred, ref) if lp_missing is None else lp_missing
        rows.append({"image_id": sid, "group": group, "method": method, "job_id": job_id,
                     "psnr": M.psnr(pred, ref), "ssim": M.ssim(pred, ref),
                     "lpips": lp if isinstance(lp, float) else float("nan"),
                     "lpips_note": "" if isinstance(lp, float) else str(lp)})

    groups = jobs.groupby("image_id")["group"].first().to_dict()
    for sid, group in groups.items():
        if sid not in reference:
            continue  # predict-only data (SIDD Benchmark): no ground truth here
        score(sid, group, "noisy", "", np.clip(model_input[sid], 0, 255))
    for job in jobs.itertuples():
        if job.image_id in reference:
            score(job.image_id, job.group, job.method, job.job_id, outputs[job.job_id])
    for sel in selection.itertuples():
        if sel.image_id in reference:
            score(sel.image_id, sel.group, "mash", sel.mash_job, outputs[sel.mash_job])
            score(sel.image_id, sel.group, "mash_nolps", sel.mash_nolps_job, outputs[sel.mash_nolps_job])
            for col in selection.columns:
                if col.endswith("_job") and col not in ("mash_job", "mash_nolps_job"):
                    job = getattr(sel, col)
                    score(sel.image_id, sel.group, f"mash_{col.removesuffix('_job')}", job, outputs[job])
    return pd.DataFrame(rows)


LABELS = {
    "noisy": "Noisy input", "bm3d_white": "BM3D", "bm3d_psd": "BM3D (oracle noise PSD)",
    "nlmeans": "NL-means (J-invariant calibration)", "zs_n2n": "ZS-N2N",
    "bsd_t0.5": "Baseline (BSD tau=0.5)", "bsd_t0.2": "BSD tau=0.2", "bsd_t0.8": "BSD tau=0.8",
    "bsd_t0.8_lps": "BSD tau=0.8 + LPS", "mash_nolps": "MASH w/o LPS", "mash": "MASH",
    "mash_released": "MASH, released settings (tau 0.9/0.5/0.1, eps 1.0/2.0)",
}
TABLE1_METHODS = ["noisy", "bm3d_white", "bm3d_psd", "nlmeans", "zs_n2n", "bsd_t0.2", "bsd_t0.5", "bsd_t0.8",
                  "bsd_t0.8_lps", "mash_nolps", "mash", "mash_released"]
TABLE3_VARIANTS = {"fixed tau=0.5": "bsd_t0.5", "fixed tau=0.5 + LPS": "bsd_t0.5_lps",
                   "adaptive tau": "mash_nolps", "adaptive tau + LPS (MASH)": "mash",
                   "adaptive tau + LPS, released settings (tau 0.9/0.5/0.1, eps 1.0/2.0)": "mash_released",
                   "probe tau=0.2 alone (no selection)": "bsd_t0.2",
                   "probe tau=0.8 alone (no selection)": "bsd_t0.8"}


def _psnr(per_image: pd.DataFrame, method: str, group: str | None, metric: str = "psnr") -> pd.Series:
    """`metric` per image (indexed by image id) for one method on one image group."""
    sub = per_image[(per_image["method"] == method) & (per_image["group"] == group)]
    return sub.set_index("image_id")[metric]


def table_rows(per_image: pd.DataFrame, selection: pd.DataFrame, jobs: pd.DataFrame, job_log: pd.DataFrame,
               paper: dict[str, Any], params: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any], manifest: pd.DataFrame, speed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every cell of ours, each from its per-image (per-job) values, in core's table-rows format."""
    tables, rows = paper["tables"], TableRows()
    groups = params["column_groups"]

    def why(group_key: str) -> str:
        if group_key == "sidd_bench":
            return "SIDD Benchmark ground truth is withheld (scored by the SIDD server); no embedded counterpart"
        return f"no embedded counterpart of {group_key}; the full profile reads it (pipelines/mash/README.md)"

    def add_group(table: str, row: str, key: str, method: str, group_key: str, metric: str = "psnr") -> None:
        g = groups.get(group_key)
        vals = _psnr(per_image, method, g, metric) if g else None
        if vals is None or vals.empty:
            rows.add(table, row, key, None, note=why(group_key) if g is None else f"no {g} images with {method}")
        else:
            rows.add(table, row, key, vals, over="images", data=str(g))

    not_reproduced = tables["table_1"].get("not_reproduced", {})
    for col in tables["table_1"]["columns"]:  # Table 1: every method on each dataset column's stand-in
        for method in TABLE1_METHODS:
            add_group("table_1", LABELS[method], col["key"], method, col["group"], col["metric"])
        for name, reason in not_reproduced.items():
            rows.add("table_1", name, col["key"], None, note=reason)
    acc = selection_accuracy(per_image, selection)  # Table 2: selection accuracy, one 0/100 per image
    for col in tables["table_2"]["columns"]:
        g = groups.get(col["group"]) if col["group"] != "all" else "all images"
        sub = acc if col["group"] == "all" else acc[acc["group"] == g]
        note = why(col["group"]) if g is None else f"no {g} images"
        rows.add("table_2", "adaptive masking accuracy", col["key"],
                 100.0 * sub.set_index("image_id")["correct"].astype(float) if not sub.empty else None,
                 over="images", data=str(g), note="" if not sub.empty else note)
    for col in tables["table_3"]["columns"]:  # Table 3: the ablation
        for variant, method in TABLE3_VARIANTS.items():
            add_group("table_3", variant, col["key"], method, col["group"])
    # Table 4: LPS tile size at tau_high, every size on the same images (those planned with extra sizes)
    col, tile = tables["table_4"]["columns"][0], int(jobs["tile_size"].mode().iloc[0])
    sel = train["selection"]
    stem = f"bsd_t{float(sel['presets'][sel['preset']]['tau_high']):g}_lps"
    g = groups.get(col["group"])
    images = sorted(set(jobs[jobs["method"].str.startswith(stem + "_s") & (jobs["group"] == g)]["image_id"]))
    for prow in tables["table_4"]["rows"]:
        s = int(prow["neighborhood_size_s"])
        method = stem + ("" if s == tile else f"_s{s}")
        if not images or not (jobs["method"] == method).any():
            rows.add("table_4", str(s), col["key"], None,
                     note=f"tile size {s} is not run in this profile (mash.preprocess.tile_sizes)")
            continue
        vals = _psnr(per_image, method, g).reindex(images)
        rows.add("table_4", str(s), col["key"], vals, over="images", data=f"{g}: {', '.join(images)}")
    _cost_rows(rows, jobs, job_log, selection, train, manifest, not_reproduced)
    _speed_rows(rows, speed)
    return rows.frame(profile=runtime.get("profile", ""),
                      data_fingerprint=str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else "",
                      params={"train": train, "evaluate": {"column_groups": groups}})


def _cost_rows(rows: TableRows, jobs, job_log, selection, train, manifest, not_reproduced) -> None:
    """Table 5: time per image (per job, freshly trained ones only), parameters and FLOPs (counted)."""
    log_ = jobs.merge(job_log, on="job_id")
    fresh = log_[~log_["cached"]] if (~log_["cached"]).any() else log_
    width = int(train["width"])
    size = int(manifest["height"].iloc[0]) if not manifest.empty else 0
    timing = f"CPU, 1 thread per job, {size}x{size} crops, {train['iterations']} iterations, width {width}"
    rows.add("table_5", "Baseline", "inference_time_s", fresh[fresh["method"] == "bsd_t0.5"]["seconds"],
             over="jobs", data=timing)
    rows.add("table_5", "MASH", "inference_time_s", selection.set_index("image_id")["mash_seconds"],
             over="images", data=timing + "; 2 probes + final run")
    for row in ("Baseline", "MASH"):
        rows.add("table_5", row, "params_M", count_parameters(UNetN2N(3, width)) / 1e6, over="",
                 data=f"U-Net width {width}")
        rows.add("table_5", row, "flops_G", conv_macs(UNetN2N(3, width), 256, 256) / 1e9, over="",
                 data=f"U-Net width {width}, 256x256x3, 1 MAC = 1 FLOP")
    wide = "U-Net at the paper's width 48 (counted)"
    rows.add("table_5", wide, "params_M", count_parameters(UNetN2N(3, 48)) / 1e6, over="")
    rows.add("table_5", wide, "flops_G", conv_macs(UNetN2N(3, 48), 256, 256) / 1e9, over="",
             data="256x256x3, 1 MAC = 1 FLOP")
    for method in ("bm3d_white", "zs_n2n", "nlmeans"):
        t = fresh[fresh["method"] == method]["seconds"]
        if not t.empty:
            rows.add("table_5", LABELS[method], "inference_time_s", t, over="jobs", data=f"CPU, {size}x{size} crops")
    for name in ("DIP", "Self2Self", "NN+denoiser", "APBSN-single", "ScoreDVI"):
        if name in not_reproduced:
            rows.add("table_5", name, "inference_time_s", None, note=not_reproduced[name])


def _speed_rows(rows: TableRows, speed: pd.DataFrame | None) -> None:
    """Table 5: MASH per image at the paper's budget, the straightforward three runs against the fast path's
    variants, from the committed measurement `pipelines/mash/speed.csv` (one run of
    `python -m cvpr24.pipelines.mash.speed`, every variant on the same images)."""
    if speed is None or speed.empty:
        return
    first = speed.iloc[0]
    images = ", ".join(dict.fromkeys(speed["image_id"]))
    where = (f"pipelines/mash/speed.csv ({first['date']}): {first['iterations']} steps, width {first['width']}, "
             f"{first['size']} crops {images}, 2 CPU cores")
    for variant, sub in speed.groupby("variant", sort=False):
        s = sub.set_index("image_id")
        share = (f"; {s['time_share'].mean():.0%} of the one-thread straightforward time on average "
                 f"({s['time_share'].min():.0%} to {s['time_share'].max():.0%} per image)")
        if variant == "straightforward":
            label, extra = "MASH, straightforward: probe, probe, final in sequence, 1 thread each (paper budget)", ""
        elif variant.startswith("straightforward"):
            label = "MASH, straightforward: probe, probe, final in sequence, 2 threads each (paper budget)"
            extra = share
        else:
            label = (f"MASH, {variant}: in parallel, final on 2 cores, probe continued when chosen "
                     "(paper budget)")
            extra = (f"{share}; same choice on {int(s['same_choice'].sum())} of {len(s)} images; PSNR difference "
                     f"{s['psnr_difference_db'].min():+.2f} to {s['psnr_difference_db'].max():+.2f} dB")
        rows.add("table_5", label, "inference_time_s", s["seconds"], over="images", data=where + extra)


def selection_accuracy(per_image: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Per image: the best of the fixed ratios by PSNR (the oracle) and whether MASH's rule chose it."""
    fixed = per_image[per_image["method"].str.fullmatch(r"bsd_t[0-9.]+")]
    rows = []
    for sel in selection.itertuples():
        sub = fixed[fixed["image_id"] == sel.image_id]
        if sub.empty:
            continue
        best = sub.loc[sub["psnr"].idxmax(), "method"]
        best_tau = float(best.removeprefix("bsd_t"))
        rows.append({"image_id": sel.image_id, "group": sel.group, "selected_tau": sel.tau, "best_tau": best_tau,
                     "correct": bool(np.isclose(best_tau, sel.tau)), "epsilon": sel.epsilon})
    return pd.DataFrame(rows, columns=["image_id", "group", "selected_tau", "best_tau", "correct", "epsilon"])
