"""DDPS's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> scenes in the official on-disk layout (embedded generator, or the real dataset read from its
               layout) + the geometry the test renderer needs + a validated manifest
preprocess  -> eroded object-pixel lists, reference-plane points, the simplified-image-formation basis,
               the plan of pattern-learning runs; validated again
train       -> every pattern-learning run (learned patterns per initialisation, number of patterns, colour
               channels, image formation), checkpointed and cached
evaluate    -> test captures under every heuristic and learned pattern set and condition (full render with
               polarization separation, mixed input, calibration error, basis relighting), photometric
               stereo, angular errors per scene; then one row per paper-table cell
report      -> the tables in the paper's layout (paper numbers "not found"), claims, figures, metrics.json

The one deliberate side effect is the train phase's run cache (`train.checkpoint_dir`), keyed by code,
parameters and data, so a killed run resumes and a stale result is never served.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cvpr24.core.ingest import dispatch, missing_dataset
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import DataValidationError, manifest_from_arrays, validate_manifest
from cvpr24.pipelines.ddps import data as D
from cvpr24.pipelines.ddps import expectations as E
from cvpr24.pipelines.ddps import method as F
from cvpr24.pipelines.ddps import model as M

log = logging.getLogger(__name__)
REAL_FIX = "see pipelines/ddps/README.md (Real data) for where to get the dataset and where to put it"


# ------------------------------------------------------------------------------------------- ingest
def lights_from(data: dict[str, Any]) -> np.ndarray:
    """Superpixel centres: the user's calibration file (real data) or the procedural panel."""
    disp = data["display"]
    path = (data.get("real") or {}).get("light_positions") if data["source"] == "real" else None
    if path:
        if not Path(path).is_file():
            raise missing_dataset("light-position calibration (ddps.data.real.light_positions)", path,
                                  "it is the (rows, cols, 3) npy of superpixel centres in metres (official "
                                  "calibration/monitor_pixels_h9w16.npy)")
        grid = np.load(path, allow_pickle=False).astype(np.float64)
        if grid.shape != (disp["rows"], disp["cols"], 3):
            raise DataValidationError(f"{path} has shape {grid.shape}, expected ({disp['rows']}, {disp['cols']}, 3)")
        return grid
    return D.display_grid(disp["rows"], disp["cols"], disp["x_range"], disp["y_range"], disp["z_range"])


def _embedded(data: dict[str, Any], train: dict[str, Any], seed: int):
    img = data["image"]
    h, w, f, depth = int(img["height"]), int(img["width"]), float(img["focal"]), float(img["depth"])
    lights = lights_from(data)
    energy = D.light_energy(lights, M.exposure(4, train["rendering_scalar"], train["static_interval"]), depth,
                            float(data["peak"]))
    fams = list(data["families"])
    layout: dict[str, Any] = {"train": [], "test": [], "scenes": {}}
    truth: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, Any]] = {}
    plan = [("train", i) for i in range(int(data["n_train"]))] + [("test", i) for i in range(int(data["n_test"]))]
    for split, i in tqdm(plan, desc="ddps: render basis images", disable=not data.get("progress", True),
                         mininterval=1.0, leave=False):
        family = fams[(i + (2 if split == "test" else 0)) % len(fams)]
        name = f"{split}_{i:03d}_{family}"
        sc = D.make_scene(family, derive_seed(seed, "scene", name), h, w, f, depth)
        diff, spec = D.scene_components(sc, lights, energy, depth=depth)
        rng = np.random.default_rng(derive_seed(seed, "capture", name))
        basis = D.scatter(D.capture_basis(diff, spec, rng, noise_sigma=float(data["basis_noise_sigma"]),
                                          phi_deg=float(data["polarizer_phi_deg"])), sc["mask"])
        layout[split].append(name)
        layout["scenes"][name] = {"basis": basis, "normals": sc["normals"].astype(np.float32), "mask": sc["mask"]}
        for key in ("points", "albedo"):
            truth[f"{name}/{key}"] = sc[key].astype(np.float32)
        truth[f"{name}/rho_s"] = np.float32(sc["rho_s"])
        truth[f"{name}/rough"] = np.float32(sc["rough"])
        meta[name] = {"split": split, "family": family, "rho_s": sc["rho_s"], "rough": sc["rough"],
                      "source": f"embedded:{family}"}
    truth["lights"] = lights.astype(np.float32)
    truth["energy"] = np.float32(energy)
    return layout, truth, meta


def _real(data: dict[str, Any]):
    real = data.get("real") or {}
    if not real.get("root"):
        raise missing_dataset("the DDPS dataset (ddps.data.real.root is not set)", "<unset>", REAL_FIX)
    layout = D.read_layout(real["root"], int(data["display"]["rows"]) * int(data["display"]["cols"]),
                           real.get("max_scenes"))
    factor = int(real.get("resizing_factor", 1))
    layout["scenes"] = {k: D.resize_scene(v, factor) for k, v in layout["scenes"].items()}
    meta = {}
    for split in ("train", "test"):
        for name in layout[split]:
            meta[name] = {"split": split, "family": "real", "rho_s": float("nan"), "rough": float("nan"),
                          "source": str(Path(real["root"]) / name)}
    truth = {"lights": lights_from(data).astype(np.float32)}
    return layout, truth, meta


def layout_manifest(layout: dict[str, Any], meta: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per scene: normal-map stats (shape, NaN count), basis count/dtype/shape/max, mask size,
    deviation of the decoded normals from unit length, split and label."""
    normals = {k: v["normals"] for k, v in layout["scenes"].items()}
    extra = {}
    for name, sc in layout["scenes"].items():
        b, n, m = sc["basis"], sc["normals"], sc["mask"]
        nn_ = np.linalg.norm(np.nan_to_num(n[m]), axis=-1) if m.any() else np.ones(1)
        extra[name] = {**meta.get(name, {}), "n_basis": int(b.shape[0]), "basis_dtype": str(b.dtype),
                       "basis_shape_ok": bool(b.ndim == 4 and b.shape[1:] == n.shape),
                       "basis_max": float(b.max()) if b.size else 0.0, "mask_pixels": int(m.sum()),
                       "normal_norm_err": float(np.abs(nn_ - 1).max())}
    out = manifest_from_arrays(normals, extra)
    for col, default in (("split", "unknown"), ("family", "unknown"), ("source", "")):
        if col not in out:
            out[col] = default
    return out


def ingest(data: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any]):
    """Materialise the scenes in the official layout (embedded generator or the real dataset) and validate
    their manifest before anything is written."""
    (layout, truth, meta), fix = dispatch(
        data, slug="ddps", real_fix=REAL_FIX, real=lambda: _real(data),
        embedded=lambda: _embedded({**data, "progress": runtime.get("progress", True)}, train, int(runtime["seed"])))
    manifest = layout_manifest(layout, meta)
    n_lights = int(data["display"]["rows"]) * int(data["display"]["cols"])
    validate_manifest(manifest, E.raw(n_lights), dataset="ddps.raw_layout", fix=fix)
    manifest["fingerprint"] = fingerprint_arrays({k: v["basis"] for k, v in layout["scenes"].items()})
    return layout, truth, manifest


# --------------------------------------------------------------------------------------- preprocess
def _gather(idx: np.ndarray, pmax: int, arr: np.ndarray, fill=0) -> np.ndarray:
    out = np.full((pmax, *arr.shape[1:]), fill, arr.dtype)
    out[: len(idx)] = arr[idx]
    return out


def preprocess(layout: dict[str, Any], truth: dict[str, np.ndarray], manifest: pd.DataFrame,
               prep: dict[str, Any], data: dict[str, Any], train: dict[str, Any]):
    """Eroded masks, padded object-pixel lists, reference-plane points; the simplified basis for the
    image-formation ablation; the run plan. Validated before training."""
    names = {s: list(layout[s]) for s in ("train", "test")}
    first = layout["scenes"][names["train"][0]]
    h, w = first["mask"].shape
    img = data["image"] if data["source"] == "embedded" else data["real"]
    factor = 1 if data["source"] == "embedded" else int(data["real"].get("resizing_factor", 1))
    focal, ref_depth = float(img["focal"]) / factor, float(train["pt_ref_z"])
    ref_all = M.reference_points(h, w, focal, ref_depth).numpy()
    pixels = {}
    for name, sc in layout["scenes"].items():
        if sc["mask"].shape != (h, w):
            raise DataValidationError(f"scene {name} is {sc['mask'].shape}, the others {(h, w)}: all scenes of a "
                                      f"dataset must share one image size. {REAL_FIX}")
        pixels[name] = np.flatnonzero(D.erode(sc["mask"], int(prep["mask_erosion"])).reshape(-1))
    pmax = max(1, max(len(p) for p in pixels.values()))
    out: dict[str, np.ndarray] = {}
    rows = []
    lights = truth["lights"]
    have_truth = any(k.endswith("/points") for k in truth)
    for split in ("train", "test"):
        basis, normals, valid, ref, pix = [], [], [], [], []
        for name in names[split]:
            sc, idx = layout["scenes"][name], pixels[name]
            b = D.median3(sc["basis"]) if prep.get("median_blur") else sc["basis"]
            basis.append(_gather(idx, pmax, b.reshape(b.shape[0], -1, 3).transpose(1, 0, 2)).transpose(1, 0, 2))
            n = sc["normals"].reshape(-1, 3)
            normals.append(_gather(idx, pmax, n))
            valid.append(np.arange(pmax) < len(idx))
            ref.append(_gather(idx, pmax, ref_all))
            pix.append(_gather(idx, pmax, np.arange(h * w), fill=-1))
            nz = n[idx][:, 2] if len(idx) else np.zeros(1)
            rows.append({"sample_id": name, "split": split, "valid_pixels": int(len(idx)),
                         "n_nonfinite": int((~np.isfinite(n[idx])).sum()),
                         "basis_mean": float(b.reshape(b.shape[0], -1, 3)[:, idx].mean()) if len(idx) else 0.0,
                         "normal_z_max": float(nz.max())})
        out[f"{split}_basis"] = np.stack(basis).astype(np.uint8)
        out[f"{split}_normals"] = np.stack(normals).astype(np.float32)
        out[f"{split}_valid"] = np.stack(valid)
        out[f"{split}_ref_points"] = np.stack(ref).astype(np.float32)
        out[f"{split}_pix"] = np.stack(pix).astype(np.int64)
        out[f"{split}_names"] = np.array(names[split])
        if have_truth:
            for key in ("points", "albedo"):
                out[f"{split}_{key}"] = np.stack([_gather(pixels[nm], pmax, truth[f"{nm}/{key}"].reshape(-1, 3))
                                                  for nm in names[split]]).astype(np.float32)
            for key in ("rho_s", "rough"):
                out[f"{split}_{key}"] = np.array([float(truth[f"{nm}/{key}"]) for nm in names[split]], np.float32)
    out["test_mask_full"] = np.stack([layout["scenes"][n]["mask"] for n in names["test"]])
    out["test_normals_full"] = np.stack([layout["scenes"][n]["normals"] for n in names["test"]]).astype(np.float32)
    out["lights"] = lights.astype(np.float32)
    if have_truth:
        out["energy"] = np.float32(truth["energy"])
        out["object_depth"] = np.float32(data["image"]["depth"])
    out["basis_column_flip"] = np.array(bool(data["source"] == "real" and data["real"].get("basis_column_flip", True)))
    out["image_shape"] = np.array([h, w])
    runs = pd.DataFrame(train["runs"])
    if "basis" not in runs:
        runs["basis"] = "realistic"
    runs["basis"] = runs["basis"].fillna("realistic")
    if (runs["basis"] == "simplified").any():
        if not have_truth:
            raise ValueError("a run with basis 'simplified' needs the embedded geometry (data.source: embedded); "
                             "remove it from ddps.train.runs for real data")
        out["train_basis_simplified"] = _simplified_basis(out, truth["energy"], lights, data)
    fix = "check ddps.preprocess (mask_erosion) and the data; every scene needs object pixels after erosion"
    man = pd.DataFrame(rows)
    validate_manifest(man, E.model_input(int(prep["min_pixels"])), dataset="ddps.model_input", fix=fix)
    validate_manifest(runs, E.runs(M.HEURISTICS), dataset="ddps.runs", id_column="run_id",
                      fix="check ddps.train.runs in conf/<env>/parameters/ddps.yml")
    return out, runs


def _simplified_basis(mi: dict[str, np.ndarray], energy, lights: np.ndarray, data: dict[str, Any]) -> np.ndarray:
    """Train basis images under the simplified image formation: distant lights (direction and distance from
    the object centre), Lambertian only, no polarization capture, noise-free (8-bit)."""
    depth = float(data["image"]["depth"])
    out = []
    for s in range(mi["train_points"].shape[0]):
        valid = mi["train_valid"][s]
        sc = {"points": mi["train_points"][s][valid][None], "normals": mi["train_normals"][s][valid][None],
              "albedo": mi["train_albedo"][s][valid][None], "mask": np.ones((1, int(valid.sum())), bool),
              "rho_s": 0.0, "rough": 0.3}
        diff, _ = D.scene_components(sc, lights, float(energy), distant=True, specular=False, depth=depth)
        b = np.zeros((diff.shape[0], valid.size, 3), np.uint8)
        b[:, valid] = D.capture_basis(diff, diff * 0, np.random.default_rng(0), noise_sigma=0, phi_deg=0,
                                      polarized=False)
        out.append(b)
    return np.stack(out)


# -------------------------------------------------------------------------------------------- train
def train(runs: pd.DataFrame, model_input: dict[str, np.ndarray], train: dict[str, Any], runtime: dict[str, Any]):
    """Every pattern-learning run of the plan (cached and resumable); patterns, a run log, the loss history."""
    torch.set_num_threads(int(runtime.get("threads", 2)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed = int(runtime["seed"])
    tr = {**train, "basis_column_flip": bool(model_input["basis_column_flip"])}
    val = F.split_tensors(model_input, "test")
    code = F.code_fingerprint()
    patterns, log_rows, history = {}, [], []
    for run in tqdm(runs.to_dict("records"), desc="ddps: pattern learning runs",
                    disable=not runtime.get("progress", True), leave=False):
        key = "basis_simplified" if run["basis"] == "simplified" else "basis"
        data = F.split_tensors(model_input, "train", key)
        fp = fingerprint_arrays({"basis": model_input[f"train_{key}"], "normals": model_input["train_normals"]})
        out = F.train_run(run={k: (v.item() if hasattr(v, "item") else v) for k, v in run.items()}, data=data,
                          val=val, lights=model_input["lights"], train=tr, seed=seed, data_fp=fp, code=code,
                          progress=bool(runtime.get("progress", True)))
        patterns[run["run_id"]] = out["patterns"]
        last = out["history"][-1] if out["history"] else {}
        vals = [h["val_loss"] for h in out["history"] if "val_loss" in h]
        log_rows.append({"run_id": run["run_id"], "seconds": out["seconds"], "cached": out["cached"],
                         "final_loss": float(last.get("loss", np.nan)),
                         "first_val_loss": float(vals[0]) if vals else np.nan,
                         "last_val_loss": float(vals[-1]) if vals else np.nan})
        history += [{"job_id": run["run_id"], **h} for h in out["history"]]
    log.info("ddps train: %d runs (%d from the cache)", len(log_rows), sum(r["cached"] for r in log_rows))
    log_history_to_active_run([{k: v for k, v in h.items() if k in ("job_id", "step", "loss", "val_loss")}
                               for h in history], prefix="loss")
    hist = pd.DataFrame(history)
    for col in ("job_id", "step", "loss", "lr", "epoch", "val_loss"):
        if col not in hist:
            hist[col] = np.nan
    return patterns, pd.DataFrame(log_rows), hist[["job_id", "step", "loss", "lr", "epoch", "val_loss"]]


# ----------------------------------------------------------------------------------------- evaluate
def pattern_sets(runs: pd.DataFrame, patterns: dict[str, np.ndarray], n_list: list[int]) -> list[dict[str, Any]]:
    """Every pattern set the tables need: heuristic families at each N (all nine at N = 4; at other N the
    random families and, for N < 4, the first N patterns of the others) and every learned run."""
    sets = []
    for n in n_list:
        fams = M.HEURISTICS if n <= 4 else [f for f in M.HEURISTICS if f in M.ANY_N]
        for fam in fams:
            sets.append({"pattern": f"heuristic:{fam}:N{n}", "kind": "heuristic", "family": fam, "n_patterns": n,
                         "run_id": "", "channels": "rgb", "basis": ""})
    for run in runs.to_dict("records"):
        sets.append({"pattern": f"learned:{run['run_id']}", "kind": "learned", "family": run["init"],
                     "n_patterns": int(run["n_patterns"]), "run_id": run["run_id"], "channels": run["channels"],
                     "basis": run["basis"]})
    return sets


def _p_for(ps: dict[str, Any], patterns: dict[str, np.ndarray], seed: int) -> np.ndarray:
    if ps["kind"] == "learned":
        return patterns[ps["run_id"]]
    return M.initial_pattern(ps["family"], ps["n_patterns"], seed=derive_seed(seed, "pattern", ps["family"]))


def evaluate(runs: pd.DataFrame, patterns: dict[str, np.ndarray], model_input: dict[str, np.ndarray],
             params: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any]):
    """Angular errors per test scene for every pattern set and test condition; predicted normal maps of the
    figure rows. Ground-truth normals are used here only, to score."""
    torch.set_num_threads(int(runtime.get("threads", 2)))
    seed = int(runtime["seed"])
    mi = model_input
    test = F.split_tensors(mi, "test")
    names = [str(n) for n in mi["test_names"]]
    flip = bool(mi["basis_column_flip"])
    gamma = float(train["monitor_gamma"])
    lights = mi["lights"].astype(np.float64)
    have_truth = "test_points" in mi
    dirs = {"true": F.directions(test["ref_points"], lights)}
    rng = np.random.default_rng(derive_seed(seed, "calibration"))
    perturbed = lights + rng.normal(0, float(params["calib_sigma_m"]), lights.shape)
    dirs["calib"] = F.directions(test["ref_points"], perturbed)
    comps = None
    if have_truth:
        energy = float(mi["energy"])
        dl, sl = [], []
        for s in range(len(names)):
            d, sp = M.render_components(mi["test_points"][s], mi["test_normals"][s], mi["test_albedo"][s],
                                        lights.reshape(-1, 3), energy, rho_s=float(mi["test_rho_s"][s]),
                                        rough=float(mi["test_rough"][s]))
            v = mi["test_valid"][s][None, :, None]
            dl.append(d * v)
            sl.append(sp * v)
        comps = (M.channel_first(torch.from_numpy(np.stack(dl).astype(np.float32))),
                 M.channel_first(torch.from_numpy(np.stack(sl).astype(np.float32))))
    conditions = (["full", "mixed", "calib", "relit", "full_noisefree", "mixed_noisefree"] if have_truth
                  else ["relit"])
    sets = pattern_sets(runs, patterns, list(params["n_list"]))
    figure_rows = set(params.get("figure_patterns", []))
    rows, maps = [], {}
    for ps in tqdm(sets, desc="ddps: evaluate pattern sets", disable=not runtime.get("progress", True), leave=False):
        p = torch.from_numpy(_p_for(ps, patterns, seed).astype(np.float32))
        light = M.radiance(p, gamma)
        scale = M.exposure(int(p.shape[0]), train["rendering_scalar"], train["static_interval"])
        for cond in conditions:
            gen = torch_generator(derive_seed(seed, "test", ps["pattern"], cond))
            with torch.no_grad():
                if cond == "relit":
                    img = M.capture(M.relight(test["basis"], light, scale, flip), float(train["noise_sigma"]), gen,
                                    train["noise_model"])
                else:
                    sigma = 0.0 if cond.endswith("_noisefree") else float(params["test_noise_sigma"])
                    img = F.capture_full(comps[0], comps[1], light, scale, noise_sigma=sigma,
                                         phi_deg=float(params["polarizer_phi_deg"]), generator=gen,
                                         separate=not cond.startswith("mixed"))
                normal, _ = M.photometric_stereo(img, light, dirs["calib" if cond == "calib" else "true"], scale,
                                                 albedo=False, packed=True)
            stats = F.error_stats(normal, test["normals"], test["valid"])
            for s, st in enumerate(stats):
                rows.append({**ps, "condition": cond, "scene": names[s],
                             "rho_s": float(mi["test_rho_s"][s]) if have_truth else float("nan"), **st})
            if ps["pattern"] in figure_rows and cond == ("full" if have_truth else "relit"):
                maps[ps["pattern"].replace(":", "__")] = normal.numpy().astype(np.float32)
    per_scene = pd.DataFrame(rows)
    if have_truth:
        per_scene = pd.concat([per_scene, _references(mi, test, names, comps, dirs, params, train, seed)],
                              ignore_index=True)
    return per_scene, maps


def _references(mi, test, names, comps, dirs, params, train, seed) -> pd.DataFrame:
    """Woodham least squares with all 144 OLAT images (each at the 4-pattern exposure), on the full test
    render; and the K7 sanity check: noise-free, shadow-free, distant-light Lambertian, all 144 OLAT."""
    rows = []
    j = int(mi["lights"].shape[0] * mi["lights"].shape[1])
    olat = torch.eye(j, dtype=torch.float32).reshape(j, *mi["lights"].shape[:2], 1).expand(-1, -1, -1, 3)
    scale4 = M.exposure(4, train["rendering_scalar"], train["static_interval"])
    gen = torch_generator(derive_seed(seed, "test", "olat144"))
    with torch.no_grad():
        img = F.capture_full(comps[0], comps[1], olat, scale4, noise_sigma=float(params["test_noise_sigma"]),
                             phi_deg=float(params["polarizer_phi_deg"]), generator=gen)
        normal, _ = M.photometric_stereo(img, olat, dirs["true"], scale4, albedo=False, packed=True)
    base = {"kind": "reference", "family": "OLAT-144", "n_patterns": j, "run_id": "", "channels": "rgb", "basis": "",
            "condition": "full"}
    for s, st in enumerate(F.error_stats(normal, test["normals"], test["valid"])):
        rows.append({**base, "pattern": "reference:woodham_olat144", "scene": names[s],
                     "rho_s": float(mi["test_rho_s"][s]), **st})
    # sanity: linear Lambertian model with distant lights (no clamp), exact inversion expected
    centre = torch.tensor([0.0, 0.0, float(mi["object_depth"])])
    ldir = torch.from_numpy(mi["lights"].reshape(-1, 3).astype(np.float32)) - centre
    ldir = ldir / ldir.norm(dim=-1, keepdim=True)
    shade = torch.einsum("spk,jk->sjp", test["normals"], ldir)
    alb = torch.from_numpy(mi["test_albedo"].astype(np.float32))
    img = (shade[..., None] * alb[:, None]) * test["valid"][:, None, :, None]
    dist_dirs = ldir[None, None].expand(len(names), test["normals"].shape[1], -1, -1)
    with torch.no_grad():
        normal, _ = M.photometric_stereo(img.to(torch.float64), olat.to(torch.float64),
                                         dist_dirs.to(torch.float64), albedo=False, delta=1e-12)
    for s, st in enumerate(F.error_stats(normal.float(), test["normals"], test["valid"])):
        rows.append({**base, "pattern": "reference:sanity_olat144", "condition": "sanity", "scene": names[s],
                     "rho_s": float(mi["test_rho_s"][s]), **st})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- table rows
FAMILY_LABELS = {"OLAT": "OLAT", "grouped_OLAT": "grouped OLAT", "mono_gradient": "mono gradient",
                 "tri_gradient": "tri gradient", "mono_complementary": "mono complementary",
                 "tri_complementary": "tri complementary", "mono_random": "mono random",
                 "tri_random": "tri random", "gray_noise": "flat gray"}
METRICS = ["mean_err", "median_err", "acc10", "acc20", "acc30"]


def summarize(per_scene: pd.DataFrame) -> pd.DataFrame:
    """Mean over test scenes of each per-scene metric, per pattern set and condition (figures, all_results)."""
    keys = ["pattern", "kind", "family", "n_patterns", "run_id", "channels", "basis", "condition"]
    out = per_scene.groupby(keys, dropna=False)[METRICS].mean().reset_index()
    return out.merge(per_scene.groupby(keys, dropna=False).size().rename("n_scenes").reset_index(), on=keys)


def main_condition(per_scene: pd.DataFrame) -> str:
    """The test the tables lead with: the rendered capture (embedded) or basis relighting (real data)."""
    return "full" if (per_scene["condition"] == "full").any() else "relit"


def best_heuristic(summary: pd.DataFrame, n: int, condition: str) -> pd.Series | None:
    """The heuristic family with the lowest mean error at `n` patterns under `condition` (the table's pick)."""
    sub = summary[(summary["kind"] == "heuristic") & (summary["n_patterns"] == n) & (summary["condition"] == condition)]
    return None if sub.empty or sub["mean_err"].isna().any() else sub.loc[sub["mean_err"].idxmin()]


def scene_values(per_scene: pd.DataFrame, pattern: str | None, condition: str, metric: str = "mean_err",
                 scenes: list[str] | None = None) -> pd.Series | None:
    """`metric` per test scene (indexed by scene) of one pattern set under one condition; with `scenes`,
    reindexed to them (a scene the set was not evaluated on is NaN); None when nothing was evaluated."""
    sub = per_scene[(per_scene["pattern"] == pattern) & (per_scene["condition"] == condition)] if pattern else None
    if sub is None or sub.empty:
        return None if scenes is None else pd.Series(float("nan"), index=scenes)
    vals = sub.set_index("scene")[metric].astype(float)
    return vals if scenes is None else vals.reindex(scenes)


def init_runs(runs: pd.DataFrame, main_run: str) -> dict[int, str]:
    """{N: run_id} of the runs that vary only the number of patterns (the main run's init, RGB, realistic)."""
    rb = runs.set_index("run_id")
    init = rb.loc[main_run, "init"] if main_run in rb.index else None
    sel = rb[(rb["init"] == init) & (rb["channels"] == "rgb") & (rb["basis"] == "realistic")]
    return {int(n): str(rid) for rid, n in sel["n_patterns"].items()}


def n4_runs(runs: pd.DataFrame) -> dict[str, str]:
    """{run_id: init} of the runs that vary only the initialisation (N = 4, RGB, realistic basis)."""
    sel = runs[(runs["n_patterns"] == 4) & (runs["channels"] == "rgb") & (runs["basis"] == "realistic")]
    return dict(zip(sel["run_id"].astype(str), sel["init"].astype(str), strict=True))


def table_rows(per_scene: pd.DataFrame, runs: pd.DataFrame, train_log: pd.DataFrame, paper: dict[str, Any],
               params: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any],
               manifest: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ours from its per-test-scene values, in core's table-rows format."""
    summary, cond = summarize(per_scene), main_condition(per_scene)
    n_test = int(per_scene["scene"].nunique())
    data_main = {"full": f"embedded test render ({n_test} held-out procedural objects, polarization-separated)",
                 "relit": f"basis relighting of {n_test} test scenes"}[cond]
    main_run = params["main_run"]
    rb, rows = runs.set_index("run_id"), TableRows()
    main = f"learned:{main_run}" if main_run in rb.index else None

    def cell(table, row, key, pattern, condition, data, why="not computed in this profile"):
        vals = scene_values(per_scene, pattern, condition, key if key in METRICS else "mean_err")
        rows.add(table, row, key, vals, over="scenes", data=data, note="" if vals is not None else why)

    def best(n, condition, data):  # the best heuristic family's pattern set and its data note
        bh = best_heuristic(summary, n, condition)
        return ((None, condition, data) if bh is None else
                (f"heuristic:{bh['family']}:N{n}", condition, f"{data}; best family: {FAMILY_LABELS[bh['family']]}"))

    for fam in M.HEURISTICS:  # Table 1: heuristic families and the learned patterns at N = 4
        for m in METRICS:
            cell("table_1", FAMILY_LABELS[fam], m, f"heuristic:{fam}:N4", cond, data_main)
    for m in METRICS:
        cell("table_1", "DDPS (learned)", m, main, cond,
             data_main + (f"; init {rb.loc[main_run, 'init']}" if main else ""),
             f"the main run {main_run} (ddps.evaluate.main_run) is not in ddps.train.runs")
    for rid, init in n4_runs(runs).items():  # Table 2: initialisation
        cell("table_2", FAMILY_LABELS[init], "init_err", f"heuristic:{init}:N4", cond, data_main)
        cell("table_2", FAMILY_LABELS[init], "learned_err", f"learned:{rid}", cond, data_main)
    tri = init_runs(runs, main_run)
    for n in params["n_list"]:  # Table 3: number of patterns
        cell("table_3", str(n), "learned_err", f"learned:{tri[n]}" if n in tri else None, cond, data_main,
             f"no learning run with {n} patterns in ddps.train.runs")
        cell("table_3", str(n), "best_heuristic_err", *best(n, cond, data_main))
    mono = rb[(rb["channels"] == "mono") & (rb["n_patterns"] == 4)].index
    simp = rb[(rb["basis"] == "simplified") & (rb["n_patterns"] == 4)].index
    abl = [("full model (polarization-separated diffuse input)", main, cond),
           ("without polarization separation (mixed diffuse + specular input)", main, "mixed"),
           ("calibration error (light positions + N(0, 1 cm) in the reconstructor)", main, "calib"),
           ("trained with the simplified image formation", f"learned:{simp[0]}" if len(simp) else None, cond),
           ("monochrome patterns (one colour channel)", f"learned:{mono[0]}" if len(mono) else None, cond),
           ("basis-relit test (the training image formation)", main, "relit")]
    why = "not computed in this profile (needs the embedded geometry or a run in ddps.train.runs)"
    for label, pattern, c in abl:  # Table 4: robustness and ablations
        data = f"{data_main}; condition {c}"
        cell("table_4", label, "learned_err", pattern, c, data, why)
        cell("table_4", label, "best_heuristic_err", *best(4, c, data), why)
    for name, reason in (paper["tables"]["table_5"].get("not_reproduced") or {}).items():  # Table 5
        rows.add("table_5", name, "mean_err", None, note=reason)
    cell("table_5", "Woodham least squares, 144 OLAT images", "mean_err", "reference:woodham_olat144", "full",
         data_main + "; each OLAT image at the 4-pattern exposure (36x the capture time)",
         "needs the embedded geometry to render 144 OLAT captures")
    cell("table_5", "DDPS (learned, 4 patterns)", "mean_err", main, cond, data_main)
    return rows.frame(profile=runtime.get("profile", ""),
                      data_fingerprint=str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else "",
                      params={"train": {k: v for k, v in train.items() if k != "runs"},
                              "evaluate": {k: v for k, v in params.items() if k != "figure_patterns"}})
