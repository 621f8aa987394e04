"""CMS's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> raw images + labels of every configured dataset, and a validated manifest
preprocess  -> the held-out split and the GCD split (D_L / D_U, old classes first), validated
train       -> the self-supervised pre-training (DINO's stand-in, shared by all rows), then every
               fine-tuning run (CMS, its ablations, the GCD baseline); returns the trained weights
evaluate    -> clustering (IMS + Ward, K known / estimated, SSK, k-means) and All / Old / New per row
report      -> the paper's tables with our numbers beside, claims, figures, metrics.json

The one deliberate side effect is the train phase's checkpoint folder (`train.checkpoint_dir`): it
lets a killed run resume, keyed by data, parameters and code so it never serves a stale result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cvpr24.core.ingest import dispatch, missing_dataset
from cvpr24.core.parallel import map_jobs
from cvpr24.core.provenance import fingerprint_arrays, fingerprint_json
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import DataValidationError, manifest_from_arrays, validate_manifest
from cvpr24.pipelines.cms import cluster as C
from cvpr24.pipelines.cms import data as D
from cvpr24.pipelines.cms import expectations as E
from cvpr24.pipelines.cms import method as M
from cvpr24.pipelines.cms.model import build_net, knn_mean, mean_shift

log = logging.getLogger(__name__)

REAL_FIX = "see pipelines/cms/README.md (Real data) for where to get each dataset and where to put it"
EMBEDDED_KINDS = ("digits", "glyphs")


# ------------------------------------------------------------------------------------------- ingest
def _read_dataset(name: str, cfg: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(images uint8 N x H x W x C, labels, official-test mask, source) of one configured dataset."""
    kind = cfg["kind"]
    if kind == "digits":
        img, lab = D.digits_gcd(int(cfg["size"]))
        if cfg.get("max_images"):  # ci: a stratified subset, same for every run
            keep = np.sort(np.random.default_rng(0).permutation(len(lab))[: int(cfg["max_images"])])
            img, lab = img[keep], lab[keep]
        return img, lab, np.zeros(len(lab), bool), "sklearn.datasets.load_digits"
    if kind == "glyphs":
        img, lab = D.glyphs_gcd(derive_seed(seed, "glyphs"), int(cfg["n_per_class"]), int(cfg["size"]))
        return img, lab, np.zeros(len(lab), bool), "procedural glyphs (cms.data.glyphs_gcd)"
    root = cfg.get("root")
    if not root:
        raise missing_dataset(f"cms.data.datasets.{name} ({kind})", "<no root configured>", REAL_FIX)
    size = int(cfg["size"])
    if kind == "imagenet100":
        classes = D.imagenet100_classes(root)
        tr = D.read_imagenet_subset(root, classes, "train", size, cfg.get("max_per_class"))
        te = D.read_imagenet_subset(root, classes, "val", size, cfg.get("max_per_class"))
    elif kind in D.READERS:
        tr, te = D.READERS[kind](root, True, size), D.READERS[kind](root, False, size)
    else:
        raise ValueError(f"cms.data.datasets.{name}.kind {kind!r} is unknown "
                         "(digits, glyphs, cifar10, cifar100, imagenet100, cub, scars, aircraft)")
    img = np.concatenate([tr[0], te[0]])
    lab = np.concatenate([tr[1], te[1]])
    return img, lab, np.r_[np.zeros(len(tr[1]), bool), np.ones(len(te[1]), bool)], str(root)


def _read_all(data: dict[str, Any], seed: int) -> dict[str, tuple]:
    return {name: _read_dataset(name, cfg, seed) for name, cfg in data["datasets"].items()}


def ingest(data: dict[str, Any], runtime: dict[str, Any]):
    """Materialise every configured dataset (each read by its `kind`; core's dispatch checks the source)
    and validate its manifest (Great Expectations)."""
    seed = int(runtime["seed"])
    # core's dispatch looks for the real datasets under `real`; CMS configures them under `datasets`
    real = {n: c for n, c in data["datasets"].items() if c["kind"] not in EMBEDDED_KINDS}
    read, fix = dispatch({**data, "real": real}, slug="cms", embedded=lambda: _read_all(data, seed),
                         real=lambda: _read_all(data, seed), real_fix=REAL_FIX)
    raw, manifests = {}, []
    for name, cfg in data["datasets"].items():
        img, lab, official_test, source = read[name]
        ids = [f"{name}/{i:06d}" for i in range(len(lab))]
        extra = {sid: {"dataset": name, "label": int(lab[i]), "source": source} for i, sid in enumerate(ids)}
        m = manifest_from_arrays(dict(zip(ids, img, strict=True)), extra)
        validate_manifest(m, E.raw(int(cfg["n_classes"]), int(cfg["channels"]), int(cfg["size"])),
                          dataset=f"cms.raw.{name}", fix=fix)
        raw[f"{name}__images"], raw[f"{name}__labels"] = np.asarray(img, np.uint8), lab.astype(np.int64)
        raw[f"{name}__official_test"] = official_test
        manifests.append(m.assign(official_test=official_test))
    manifest = pd.concat(manifests, ignore_index=True)
    manifest["fingerprint"] = fingerprint_arrays(raw)
    return raw, manifest


# --------------------------------------------------------------------------------------- preprocess
def _old_classes(cfg: dict[str, Any]) -> list[int]:
    if cfg.get("old_classes") is not None:
        return [int(c) for c in cfg["old_classes"]]
    if cfg.get("split_file"):
        return D.read_ssb_split(cfg["split_file"])["old"]
    if cfg.get("n_old") is not None and cfg.get("random_old", False):
        return D.ssb_like_old_classes(int(cfg["n_classes"]), int(cfg["n_old"]), 0)
    return list(range(int(cfg.get("n_old", int(cfg["n_classes"]) // 2))))  # use_ssb_splits=False branch


def preprocess(raw: dict[str, np.ndarray], manifest: pd.DataFrame, data: dict[str, Any], prep: dict[str, Any]):
    """Held-out split (embedded: stratified 20 %, seed 0; real: the official test split) and the GCD split
    of the rest (old classes remapped to 0..|old|-1, D_L = int(0.5 n_old) random old-class images)."""
    out, rows, sizes = {}, [], []
    for name, cfg in data["datasets"].items():
        img, lab = raw[f"{name}__images"], raw[f"{name}__labels"]
        held = raw[f"{name}__official_test"].astype(bool)
        if not held.any():
            held = D.stratified_holdout(lab, float(prep["heldout_fraction"]), int(prep["split_seed"]))
        old = _old_classes(cfg)
        unknown = sorted(set(old) - set(np.unique(lab).tolist()))
        if unknown:
            raise DataValidationError(f"cms.data.datasets.{name}.old_classes lists classes {unknown} that no image "
                                      f"has; fix the old-class list (labels present: {np.unique(lab).tolist()[:20]}...)")
        tr = D.gcd_split(lab[~held], old, float(prep["prop_train_labels"]), int(prep["split_seed"]))
        order = {int(c): i for i, c in enumerate(tr["class_order"])}
        y_held = np.array([order.get(int(c), -1) for c in lab[held]], np.int64)
        out.update({f"{name}__x_train": img[~held], f"{name}__y_train": tr["y"], f"{name}__labelled": tr["labelled"],
                    f"{name}__x_heldout": img[held], f"{name}__y_heldout": y_held,
                    f"{name}__class_order": tr["class_order"], f"{name}__n_old": np.array(len(old))})
        ids = manifest.loc[manifest["dataset"] == name, "sample_id"].to_numpy()
        split = np.where(tr["labelled"], "labelled", "unlabelled")
        rows.append(pd.DataFrame({"sample_id": ids[~held], "dataset": name, "split": split, "y": tr["y"],
                                  "is_old": tr["is_old"], "labelled_new_class": tr["labelled"] & ~tr["is_old"]}))
        rows.append(pd.DataFrame({"sample_id": ids[held], "dataset": name, "split": "heldout", "y": y_held,
                                  "is_old": y_held < len(old), "labelled_new_class": False}))
        for s, mask in (("labelled", tr["labelled"]), ("unlabelled", ~tr["labelled"]),
                        ("heldout", np.ones(int(held.sum()), bool))):
            sizes.append({"sample_id": f"{name}/{s}", "dataset": name, "split": s, "n": int(mask.sum()),
                          "n_old_classes": int(len(np.unique(tr["y"][tr["labelled"]]))) if s == "labelled" else len(old)})
    split_manifest = pd.concat(rows, ignore_index=True)
    fix = "check cms.data.datasets (old classes) and cms.preprocess (fractions) in conf/<env>/parameters/cms.yml"
    validate_manifest(split_manifest, E.SPLIT, dataset="cms.split_manifest", fix=fix)
    validate_manifest(pd.DataFrame(sizes), E.SPLIT_SIZES, dataset="cms.split_sizes",
                      fix=fix + "; every dataset needs labelled, unlabelled and held-out images")
    return out, split_manifest


# -------------------------------------------------------------------------------------------- train
def _state_to_npz(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}::{k}": v.detach().cpu().numpy() for k, v in state.items()}


def _npz_to_state(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    p = f"{prefix}::"
    return {k[len(p):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(p)}


def _ssl_job(images: np.ndarray, p: dict, model: dict, aug: dict, seed: int, checkpoint_dir: str,
             progress: bool) -> dict:
    return M.pretrain_ssl(D.to_float(images), p, model, aug, seed, checkpoint_dir, progress)


def pretrain(model_input: dict[str, np.ndarray], data: dict[str, Any], pre: dict[str, Any], head: dict[str, Any],
             train: dict[str, Any], runtime: dict[str, Any]):
    """SimCLR pre-training of each dataset's encoder on all its training images, no labels (the DINO
    stand-in). One backbone per dataset, shared by every row. Cached and resumable."""
    jobs = []
    for name, cfg in data["datasets"].items():
        p = {**pre, "epochs": int(cfg.get("pretrain_epochs", pre["epochs"]))}
        jobs.append({"images": model_input[f"{name}__x_train"], "p": p, "model": {**cfg["model"], "head": head},
                     "aug": cfg["aug"], "seed": derive_seed(int(runtime["seed"]), "ssl", name),
                     "checkpoint_dir": str(train["checkpoint_dir"]), "progress": bool(runtime.get("progress", True))})
    res = map_jobs(_ssl_job, jobs, workers=int(train["workers"]), threads=int(runtime["threads"]),
                   desc="cms ssl pre-training", progress=bool(runtime.get("progress", True)))
    weights, hist = {}, []
    for name, r in zip(data["datasets"], res, strict=True):
        weights.update(_state_to_npz(name, r["backbone"]))
        hist += [{"job_id": f"ssl/{name}", **h} for h in r["history"]]
    log_history_to_active_run(hist, prefix="ssl_loss")
    return weights, pd.DataFrame(hist, columns=["job_id", "step", "loss"])


def _run_key(name: str, variant: str, seed: int) -> str:
    return f"{name}/{variant}/s{seed}"


def _train_job(spec: dict, world_size: int, threads: int) -> dict:
    return M.fit_cms_parallel(spec, world_size, threads)


def train(model_input: dict[str, np.ndarray], pretrained: dict[str, np.ndarray], data: dict[str, Any],
          tr: dict[str, Any], head: dict[str, Any], ev: dict[str, Any], runtime: dict[str, Any]):
    """Every fine-tuning run (dataset x variant x seed). With `cms.train.world_size` = N > 1 each run
    goes data-parallel on N workers (cvpr24.core.distributed); otherwise runs go to `workers` processes.
    Returns the trained weights (the selected `model_best` of each run), a log and the loss history."""
    world = int(tr.get("world_size", 1))
    jobs, keys = [], []
    for name, cfg in data["datasets"].items():
        backbone = _npz_to_state(pretrained, name)
        for variant in tr["variants"]:
            if variant.get("datasets") and name not in variant["datasets"]:
                continue
            for seed in tr["seeds"]:
                s = derive_seed(int(runtime["seed"]), "cms", int(seed))
                spec = {"images": D.to_float(model_input[f"{name}__x_train"]),
                        "labels": model_input[f"{name}__y_train"], "labelled": model_input[f"{name}__labelled"],
                        "heldout_x": D.to_float(model_input[f"{name}__x_heldout"]),
                        "heldout_y": model_input[f"{name}__y_heldout"],
                        "n_old": int(model_input[f"{name}__n_old"]), "n_classes": int(cfg["n_classes"]),
                        "variant": dict(variant),
                        "train": {**{k: v for k, v in tr.items() if k != "variants"}, **cfg.get("train", {}),
                                  "epochs": int(cfg.get("train_epochs", tr["epochs"]))},
                        "model": {**cfg["model"], "head": head}, "aug": cfg["aug"], "backbone": backbone,
                        "backbone_key": fingerprint_json({k: float(v.sum()) for k, v in backbone.items()}),
                        "seed": s, "checkpoint_dir": str(tr["checkpoint_dir"]),
                        "linkage_backend": ev["linkage_backend"], "max_exact_n": int(ev["max_exact_n"]),
                        "threads": 1 if world > 1 or int(tr["workers"]) > 1 else int(runtime["threads"]),
                        "progress": bool(runtime.get("progress", True))}
                jobs.append({"spec": spec, "world_size": world, "threads": max(1, int(runtime["threads"]) // max(world, 1))})
                keys.append((name, variant["name"], int(seed)))
    workers = 1 if world > 1 else int(tr["workers"])
    res = map_jobs(_train_job, jobs, workers=workers, threads=int(runtime["threads"]), desc="cms fine-tuning runs",
                   progress=bool(runtime.get("progress", True)))
    weights, logs, hist = {}, [], []
    for (name, variant, seed), r in zip(keys, res, strict=True):
        key = _run_key(name, variant, seed)
        weights.update(_state_to_npz(key, r["best_state"]))
        logs.append({"run": key, "dataset": name, "variant": variant, "seed": seed, "k_est": int(r["k_est"]),
                     "best_epoch": int(r["best_epoch"]), "refreshes": int(r["refreshes"]), "steps": int(r["steps"]),
                     "seconds": float(r["seconds"]), "cached": bool(r["cached"]), "world_size": world,
                     "k_curve": json.dumps(r["k_curve"]), "epochs": json.dumps(r["epochs"])})
        hist += [{"job_id": key, **h} for h in r["history"]]
    log_history_to_active_run(hist, prefix="loss")
    cols = ["job_id", "step", "loss", "l_cms", "l_sup"]
    return weights, pd.DataFrame(logs), pd.DataFrame(hist).reindex(columns=cols)


# ----------------------------------------------------------------------------------------- evaluate
ROWS = {
    "kmeans": "k-means (frozen SSL features)",
    "gcd": "GCD (SimCLR + SupCon, SSK)",
    "cms_gt": "CMS (GT K)",
    "cms_est": "CMS (estimated K)",
    "cms_alpha0": "CMS w/o mean shift in training (alpha=0)",
    "cms_no_ims": "CMS w/o IMS at inference (t=0)",
    "cms_ssk": "CMS features + SSK instead of agglomerative",
    "cms_backbone": "CMS, clustering on backbone features (not head)",
}


def _embed_head(model_input, weights, name, key, cfg, head) -> np.ndarray:
    x = D.to_float(model_input[f"{name}__x_train"])
    net = build_net(x.shape[1], cfg["model"]["widths"], head, cfg["model"].get("strides"))
    net.load_state_dict(_npz_to_state(weights, key))
    net.eval()
    return M.embed(net, x).numpy(), F.normalize(M.embed(net.backbone, x), dim=-1).numpy()


def _project_2d(x: np.ndarray, idx: np.ndarray, seed: int, method: str) -> np.ndarray:
    """2-D view of embeddings for the figures: t-SNE (default) or PCA (ci: fast)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x[idx]).astype(np.float32)
    from sklearn.manifold import TSNE

    return TSNE(2, init="pca", perplexity=30, random_state=seed, max_iter=300).fit_transform(x[idx]).astype(np.float32)


def evaluate(model_input: dict[str, np.ndarray], pretrained: dict[str, np.ndarray], weights: dict[str, np.ndarray],
             train_log: pd.DataFrame, data: dict[str, Any], head: dict[str, Any], ev: dict[str, Any],
             runtime: dict[str, Any]):
    """All / Old / New (x100, v2 protocol, on D_U) for every row; curves for the figures; 2-D embeddings."""
    torch.set_num_threads(int(runtime["threads"]))
    res, curves, emb = [], [], {}
    ims_kw = {"k": int(ev["k"]), "alpha": float(ev["alpha"]), "max_iter": int(ev["ims_max_iter"]),
              "patience": int(ev["ims_patience"]), "linkage_backend": ev["linkage_backend"],
              "max_exact_n": int(ev["max_exact_n"])}
    for name, cfg in data["datasets"].items():
        y, lab = model_input[f"{name}__y_train"], model_input[f"{name}__labelled"].astype(bool)
        n_old, k_gt = int(model_input[f"{name}__n_old"]), int(cfg["n_classes"])
        is_old, unl = y < n_old, ~lab
        logs = train_log[train_log["dataset"] == name]

        def add(row: str, seed: int, acc, k: int, extra: dict | None = None, name=name, unl=unl, y=y, is_old=is_old):
            a, o, nw = acc if isinstance(acc, tuple) else C.split_cluster_acc_v2(y[unl], acc[unl], is_old[unl])
            res.append({"dataset": name, "seed": seed, "row": row, "all": 100 * a, "old": 100 * o, "new": 100 * nw,
                        "k": k, **(extra or {})})

        # frozen SSL features (the "DINO" features): k-means with K_gt
        x = D.to_float(model_input[f"{name}__x_train"])
        base = build_net(x.shape[1], cfg["model"]["widths"], head, cfg["model"].get("strides")).backbone
        base.load_state_dict(_npz_to_state(pretrained, name))
        base.eval()
        f0 = F.normalize(M.embed(base, x), dim=-1).numpy()
        for seed in sorted(logs["seed"].unique()):
            add("kmeans", int(seed), C.kmeans(f0, k_gt, seed=int(seed), n_init=int(ev.get("kmeans_n_init", 10))), k_gt)
        for r in logs.itertuples():
            seed = int(r.seed)
            v, fb = _embed_head(model_input, weights, name, r.run, cfg, head)
            if r.variant == "gcd":  # GCD clusters the backbone ([CLS]) features with semi-supervised k-means
                add("gcd", seed, C.semi_supervised_kmeans(fb, lab, y[lab], k_gt, seed=seed), k_gt)
                continue
            if r.variant != "cms":
                out = C.iterative_mean_shift_clustering(v, y, lab, is_old, {"gt": k_gt}, **ims_kw)["gt"]
                add("cms_alpha0" if r.variant == "cms_alpha0" else r.variant, seed,
                    (out["all"], out["old"], out["new"]), k_gt, {"ims_t": out["t"]})
                continue
            out = C.iterative_mean_shift_clustering(v, y, lab, is_old, {"gt": k_gt, "est": int(r.k_est)}, **ims_kw)
            add("cms_gt", seed, (out["gt"]["all"], out["gt"]["old"], out["gt"]["new"]), k_gt,
                {"ims_t": out["gt"]["t"], "ims_iterations": out["gt"]["iterations"],
                 "ims_best_all": 100 * max(rec["all"] for rec in out["gt"]["trace"])})
            add("cms_est", seed, (out["est"]["all"], out["est"]["old"], out["est"]["new"]), int(r.k_est),
                {"ims_t": out["est"]["t"], "ims_iterations": out["est"]["iterations"]})
            t0 = out["gt"]["trace"][0]
            add("cms_no_ims", seed, (t0["all"], t0["old"], t0["new"]), k_gt)
            add("cms_ssk", seed, C.semi_supervised_kmeans(v, lab, y[lab], k_gt, seed=seed), k_gt)
            ob = C.iterative_mean_shift_clustering(fb, y, lab, is_old, {"gt": k_gt}, **ims_kw)["gt"]
            add("cms_backbone", seed, (ob["all"], ob["old"], ob["new"]), k_gt)
            # C3: kNN label purity of the one-step mean-shifted embeddings against the raw ones (on D_U)
            tv = torch.from_numpy(v)
            z = mean_shift(tv, knn_mean(tv, tv, int(ev["k"])), float(ev["alpha"])).numpy()
            pv, pz = C.knn_purity(v[unl], y[unl], int(ev["k"])), C.knn_purity(z[unl], y[unl], int(ev["k"]))
            curves += [{"dataset": name, "seed": seed, "curve": "purity", "x": 0, "y": 100 * pv, "label": "v"},
                       {"dataset": name, "seed": seed, "curve": "purity", "x": 1, "y": 100 * pz, "label": "z"}]
            # inference steps: every t up to the configured count, no early stop (K_gt)
            cur = torch.from_numpy(v)
            for t in range(int(ev["steps_curve"]) + 1):
                if t:
                    cur = torch.nn.functional.normalize(
                        (1 - float(ev["alpha"])) * cur + float(ev["alpha"]) * knn_mean(cur, cur, int(ev["k"])), dim=-1)
                pred = C.cut_to_k(C.ward_linkage(cur.numpy(), backend=ev["linkage_backend"],
                                                 max_exact_n=int(ev["max_exact_n"])), k_gt)
                a, o, nw = C.split_cluster_acc_v2(y[unl], pred[unl], is_old[unl])
                curves.append({"dataset": name, "seed": seed, "curve": "ims_steps", "x": t, "y": 100 * a,
                               "label": "all", "old": 100 * o, "new": 100 * nw,
                               "lab_acc": 100 * C.hungarian_acc(y[lab], pred[lab])})
            # k at inference (IMS with stopping, K_gt)
            for kk in ev["k_sweep"]:
                o2 = C.iterative_mean_shift_clustering(v, y, lab, is_old, {"gt": k_gt}, **{**ims_kw, "k": int(kk)})["gt"]
                curves.append({"dataset": name, "seed": seed, "curve": "k_inference", "x": int(kk), "y": 100 * o2["all"],
                               "label": "all", "old": 100 * o2["old"], "new": 100 * o2["new"]})
            for kk, old_acc in json.loads(r.k_curve):
                curves.append({"dataset": name, "seed": seed, "curve": "k_search", "x": int(kk), "y": 100 * old_acc,
                               "label": f"K_est={int(r.k_est)}"})
            if seed == int(logs["seed"].min()):
                rng = np.random.default_rng(derive_seed(seed, "tsne", name))
                idx = np.sort(rng.choice(len(y), min(len(y), int(ev["tsne_points"])), replace=False))
                proj = ev.get("projection_2d", "tsne")
                emb.update({f"{name}__before": _project_2d(f0, idx, seed, proj),
                            f"{name}__after": _project_2d(v, idx, seed, proj),
                            f"{name}__y": y[idx], f"{name}__is_old": is_old[idx], f"{name}__labelled": lab[idx]})
    results = pd.DataFrame(res)
    for col in ("ims_t", "ims_iterations", "ims_best_all"):
        if col not in results:
            results[col] = np.nan
    return results, pd.DataFrame(curves).reindex(columns=["dataset", "seed", "curve", "x", "y", "label", "old", "new",
                                                          "lab_acc"]), emb


DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet100": "ImageNet-100", "cub": "CUB",
                  "scars": "Stanford Cars", "aircraft": "FGVC-Aircraft", "herbarium19": "Herbarium19"}
EMBEDDED_LABELS = {"digits": "digits-gcd (embedded)", "glyphs": "glyphs-gcd (embedded)"}
NO_COUNTERPART = "no embedded counterpart of this dataset; the full profile reads it (pipelines/cms/README.md)"


def row_name(row: str) -> str:
    if row in ROWS:
        return ROWS[row]
    if row.startswith("cms_k"):
        return f"CMS, k={row.removeprefix('cms_k')} in training"
    return row


def dataset_label(cfg: dict[str, Any], name: str) -> str:
    """How our row of a per-dataset table is named: the dataset we ran, never the paper column it stands in
    for (a real dataset keeps the paper's name, so it lands beside the paper's row)."""
    return DATASET_LABELS.get(cfg["kind"]) or EMBEDDED_LABELS.get(cfg["kind"], f"{name} ({cfg['kind']})")


def table_rows(results: pd.DataFrame, train_log: pd.DataFrame, paper: dict[str, Any], data: dict[str, Any],
               ev: dict[str, Any], runtime: dict[str, Any], manifest: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ours from its per-seed values, in core's table-rows format."""
    rows, groups, tables = TableRows(), ev["column_datasets"], paper["tables"]

    def per_seed(ds: str, row: str, metric: str) -> pd.Series:
        sub = results[(results["dataset"] == ds) & (results["row"] == row)] if not results.empty else results
        return sub.set_index("seed")[metric] if not sub.empty else pd.Series(dtype=float)

    for tid in ("gcd", "ablation", "k_study"):
        t = tables.get(tid)
        if not t:
            continue
        for col in t["columns"]:
            ds = groups.get(col["dataset"])
            for row, shown in (t.get("our_rows") or {}).items():
                vals = per_seed(ds, row, col["metric"]) if ds else None
                if ds is None or vals.empty:
                    note = NO_COUNTERPART if ds is None else f"row {row} was not run on {ds} in this profile"
                    rows.add(tid, shown or row_name(row), col["key"], None, note=note)
                else:
                    rows.add(tid, shown or row_name(row), col["key"], vals, over="seeds", data=f"{ds} D_U")
            for shown, reason in (t.get("not_reproduced") or {}).items():
                rows.add(tid, shown, col["key"], None, note=reason)
    if tables.get("k_estimation"):  # estimated K against the true K, one row per dataset we ran
        ran = {dataset_label(cfg, name) for name, cfg in data["datasets"].items()}
        for prow in tables["k_estimation"]["rows"]:
            if prow["dataset"] not in ran:
                for col in tables["k_estimation"]["columns"]:
                    rows.add("k_estimation", prow["dataset"], col["key"], None,
                             note="this dataset is not run in this profile (the full profile reads CIFAR-100 and CUB)")
        for name, cfg in data["datasets"].items():
            lg = train_log[(train_log["dataset"] == name) & (train_log["variant"] == "cms")]
            if lg.empty:
                continue
            label, k = dataset_label(cfg, name), float(cfg["n_classes"])
            k_est = lg.set_index("seed")["k_est"].astype(float)
            rows.add("k_estimation", label, "k_gt", k, over="", data=name)
            rows.add("k_estimation", label, "k_est", k_est, over="seeds", data=f"{name} held-out split")
            rows.add("k_estimation", label, "k_err", 100 * (k_est - k).abs() / k, over="seeds", data=name)
    for tid in ("inductive", "clip"):
        t = tables.get(tid)
        for prow in (t or {}).get("rows", []):
            for col in t["columns"]:
                rows.add(tid, str(prow[t["index"][-1]]), col["key"], None, note=t.get("why_not_ours", "not run"))
    nseeds = results.groupby("dataset")["seed"].nunique().to_dict() if not results.empty else {}
    return rows.frame(profile=runtime.get("profile", ""),
                      data_fingerprint=str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else "",
                      params={"evaluate": {k: v for k, v in ev.items() if k != "column_datasets"},
                              "seeds": nseeds})
