"""CMS training: the self-supervised pre-training that stands in for DINO, then the CMS fine-tuning
(spec sections 2.3-2.6), both on `core.training.train_loop` with a resumable `Checkpointer`.

Fine-tuning, one epoch = `N // B` steps:
1. at the epoch's first step, the memory bank: every training image embedded twice with the training
   augmentation, no gradient, eval mode (2N rows); it stays fixed for the epoch (`refreshes` counts it);
2. each step: a global batch of B images from the weighted sampler (labelled weight 1, unlabelled
   |D_L|/|D_U|, with replacement), two augmented views, v = the normalised head output, z = one kNN mean
   shift of v against the bank (k, top-1 dropped, alpha, detached norm), L = (1-lam) L_cms(z) + lam L_sup(v);
3. at the epoch's last step, Ward on the held-out split, the K search, and `model_best` kept when the
   "agglo score" (best Old accuracy) improves.

Data-parallel (`world_size > 1`, `cvpr24.core.distributed`): every rank draws the SAME global batch and the
SAME augmentations from identically seeded generators and forwards only its shard; the 2B embeddings are
all-gathered (own shard live, others detached) so each rank evaluates the full-batch contrastive loss,
scaled by the world size so that DDP's gradient average equals the single-process gradient. The memory
bank is computed sharded (same augmentation draws on every rank) and all-gathered, so it is identical
on every rank; the per-epoch selection runs identically on every rank. GroupNorm (no BatchNorm) keeps an
embedding independent of how the batch is split.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvpr24.core import distributed as D
from cvpr24.core.provenance import fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, cached_job, job_key, train_loop
from cvpr24.pipelines.cms import cluster as C
from cvpr24.pipelines.cms.data import augment
from cvpr24.pipelines.cms.model import (
    CMSNet,
    build_net,
    cms_total_loss,
    freeze_all_but_last_block,
    info_nce_loss,
)

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).parent


def code_fingerprint() -> str:
    files = [PACKAGE_DIR / f for f in ("model.py", "method.py", "data.py")]
    files.append(PACKAGE_DIR.parent.parent / "core" / "training.py")
    return fingerprint_files(files)


def _aug_kwargs(aug: dict[str, Any]) -> dict[str, Any]:
    return {"max_shift": float(aug["max_shift"]), "max_rot_deg": float(aug["max_rot_deg"]),
            "scale": tuple(float(s) for s in aug["scale"]), "noise": float(aug["noise"]),
            "cutout": int(aug["cutout"]), "cutout_p": float(aug["cutout_p"]), "hflip": bool(aug.get("hflip", False)),
            "colour": bool(aug.get("colour", False)), "grayscale_p": float(aug.get("grayscale_p", 0.2))}


def run_cached(checkpoint_dir: str | None, name: str, key: str, fit) -> dict[str, Any]:
    """`fit(checkpointer)` at most once per key through core's `cached_job`, with `cached` in the result.
    No folder: no cache. Data-parallel ranks other than 0 read the cache and resume from its checkpoints
    but never write it (rank 0 does; `train_loop` already saves on rank 0 only)."""
    if not checkpoint_dir:
        return {**fit(None), "cached": False}
    if not D.is_main():
        ckpt = Checkpointer(Path(checkpoint_dir) / f"{name}-{key}")
        done = ckpt.load_final()
        return {**done, "cached": True} if done is not None else {**fit(ckpt), "cached": False}
    out, cached = cached_job(checkpoint_dir, name, key, fit)
    return {**out, "cached": cached}


@torch.no_grad()
def embed(fn, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    return torch.cat([fn(x[i: i + chunk]) for i in range(0, len(x), chunk)]) if len(x) else torch.empty(0)


# ------------------------------------------------------------------------------ SSL pre-training
class SimCLRNet(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, proj_dim: int = 64):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.proj = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, proj_dim))

    def forward(self, x):
        return F.normalize(self.proj(self.backbone(x)), dim=-1)


def pretrain_ssl(images: torch.Tensor, p: dict[str, Any], model: dict[str, Any], aug: dict[str, Any],
                 seed: int, checkpoint_dir: str | None, progress: bool = True,
                 log_fn=None) -> dict[str, Any]:
    """SimCLR (NT-Xent, tau) on all training images without labels -> the backbone's state dict."""
    key = job_key(job={"p": p, "model": model, "aug": aug}, seed=seed, code=code_fingerprint(),
                  data={"n": len(images), "sum": float(images.sum())})
    return run_cached(checkpoint_dir, "ssl", key,
                      lambda ckpt: _fit_ssl(images, p, model, aug, seed, ckpt, progress, log_fn))


def _fit_ssl(images: torch.Tensor, p: dict[str, Any], model: dict[str, Any], aug: dict[str, Any], seed: int,
             ckpt: Checkpointer | None, progress: bool, log_fn) -> dict[str, Any]:
    torch.manual_seed(derive_seed(seed, "ssl_init"))
    net = SimCLRNet(build_net(images.shape[1], model["widths"], model["head"], model.get("strides")).backbone)
    opt = torch.optim.Adam(net.parameters(), lr=float(p["lr"]))
    gen = torch_generator(derive_seed(seed, "ssl_batches"))
    b = min(int(p["batch_size"]), len(images))
    spe = max(1, len(images) // b)
    kw = _aug_kwargs(aug)
    start = time.perf_counter()

    def step_fn(step: int) -> dict[str, float]:
        idx = torch.randint(0, len(images), (b,), generator=gen)
        x = images[idx]
        z = net(torch.cat([augment(x, gen, **kw), augment(x, gen, **kw)]))
        loss = info_nce_loss(z, float(p["tau"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    history = train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=int(p["epochs"]) * spe,
                         state=TrainState(generators={"batches": gen}), checkpointer=ckpt,
                         every=int(p.get("checkpoint_every", 50)), log_every=5, log_fn=log_fn,
                         desc="cms ssl pre-training", progress=progress)
    net.backbone.eval()
    net.backbone.set_standardisation(images)
    return {"backbone": {k: v.detach().clone() for k, v in net.backbone.state_dict().items()},
            "history": history, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------ CMS fine-tuning
def _gather_rows(local: torch.Tensor) -> torch.Tensor:
    """All ranks' rows in rank order; this rank's rows keep their gradient, the others are constants."""
    if D.world_size() == 1:
        return local
    import torch.distributed as dist

    parts = [torch.empty_like(local) for _ in range(D.world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[D.rank()] = local
    return torch.cat(parts)


@torch.no_grad()
def build_bank(net: CMSNet, images: torch.Tensor, gen: torch.Generator, kw: dict[str, Any],
               chunk: int = 512) -> torch.Tensor:
    """2N rows: every image under two fresh training augmentations, eval mode, no gradient. The
    augmentations are drawn for the full set on every rank; each rank embeds its share of every chunk."""
    net.eval()
    out = []
    for view in range(2):
        del view
        for i in range(0, len(images), chunk):
            xa = augment(images[i: i + chunk], gen, **kw)
            if D.world_size() == 1:
                out.append(net(xa))
                continue
            import torch.distributed as dist

            w, r = D.world_size(), D.rank()
            per = -(-len(xa) // w)
            mine = xa[r * per: (r + 1) * per]
            d = int(net.head.last_layer.weight.shape[0])
            pad = torch.zeros(per, d)
            if len(mine):
                pad[: len(mine)] = net(mine)
            parts = [torch.empty_like(pad) for _ in range(w)]
            dist.all_gather(parts, pad)
            out.append(torch.cat(parts)[: len(xa)])
    net.train()
    return torch.cat(out)


def select_on_heldout(net: CMSNet, x: torch.Tensor, y: np.ndarray, n_old: int, n_classes: int,
                      patience: int, backend: str, max_exact_n: int) -> dict[str, Any]:
    """Per-epoch selection (spec 2.6): Ward on the held-out split, accuracy at K_gt, the K search."""
    net.eval()
    v = embed(net, x).numpy()
    net.train()
    linked = C.ward_linkage(v, backend=backend, max_exact_n=max_exact_n)
    mask_old = y < n_old
    a, o, nw = C.split_cluster_acc_v2(y, C.cut_to_k(linked, n_classes), mask_old)
    ks = C.estimate_k(linked, y, mask_old, n_old, patience=patience)
    return {"all": a, "old": o, "new": nw, "k_est": ks["k_est"], "score": ks["score"], "curve": ks["curve"]}


def sampler_weights(labelled: torch.Tensor) -> torch.Tensor:
    """The official WeightedRandomSampler weights: 1 for labelled images, |D_L|/|D_U| for unlabelled ones
    (so a batch drawn with replacement holds about as many labelled as unlabelled images)."""
    labelled = torch.as_tensor(labelled, dtype=torch.bool)
    n_l, n_u = int(labelled.sum()), int((~labelled).sum())
    return torch.where(labelled, 1.0, n_l / max(n_u, 1)).double()


def fit_cms(spec: dict[str, Any]) -> dict[str, Any]:
    """One CMS (or ablation / GCD-baseline) fine-tuning run. Module-level so data-parallel workers can
    run it. `spec`: images, labels, labelled, heldout_x, heldout_y, n_old, n_classes, variant, train,
    model, aug, backbone (pre-trained state), seed, checkpoint_dir, progress."""
    tr, variant = spec["train"], spec["variant"]
    torch.set_num_threads(int(spec.get("threads", 1)))
    images, y = spec["images"], torch.as_tensor(spec["labels"])
    labelled = torch.as_tensor(spec["labelled"])
    seed = int(spec["seed"])
    torch.manual_seed(derive_seed(seed, "cms_head_init"))
    net = build_net(images.shape[1], spec["model"]["widths"], spec["model"]["head"], spec["model"].get("strides"))
    net.backbone.load_state_dict(spec["backbone"])
    params = freeze_all_but_last_block(net)
    ddp = D.wrap(net)
    opt = torch.optim.SGD(params, lr=float(tr["lr"]), momentum=float(tr["momentum"]),
                          weight_decay=float(tr["weight_decay"]))
    b = int(tr["batch_size"])
    spe = max(1, len(images) // b)  # drop_last
    epochs = int(tr["epochs"])
    n_steps = epochs * spe
    eta = float(tr["eta_min_factor"])

    def cosine(step: int) -> float:  # CosineAnnealingLR(T_max = epochs, eta_min = lr * eta), stepped per epoch
        return eta + (1.0 - eta) * 0.5 * (1.0 + float(np.cos(np.pi * (step // spe) / epochs)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    weights = sampler_weights(labelled) if tr.get("weighted_sampler", True) else torch.ones(len(images), dtype=torch.float64)
    gen_batch = torch_generator(derive_seed(seed, "cms_batches", variant["name"]))
    gen_aug = torch_generator(derive_seed(seed, "cms_aug", variant["name"]))
    kw = _aug_kwargs(spec["aug"])
    alpha, k = float(variant["alpha"]), int(variant["k"])
    st: dict[str, Any] = {"bank": None, "refreshes": 0, "best_score": -1.0, "best_epoch": -1, "best_k": -1,
                          "best_state": None, "best_curve": [], "epochs": []}
    sel = tr["selection"]

    def step_fn(step: int) -> dict[str, float]:
        epoch = step // spe
        if step % spe == 0 and alpha > 0:
            st["bank"] = build_bank(net, images, gen_aug, kw)
            st["refreshes"] += 1
        idx = torch.multinomial(weights, b, replacement=True, generator=gen_batch)
        x1, x2 = augment(images[idx], gen_aug, **kw), augment(images[idx], gen_aug, **kw)
        mine = D.shard(torch.arange(b))
        v_local = ddp(torch.cat([x1[mine], x2[mine]]))
        nl = len(mine)
        v1 = _gather_rows(v_local[:nl])
        v2 = _gather_rows(v_local[nl:])
        loss, metrics = cms_total_loss(
            torch.cat([v1, v2]), st["bank"], y[idx], labelled[idx], k=k, alpha=alpha, tau=float(tr["tau"]),
            tau_sup=float(tr["tau_sup"]), lam=float(tr["sup_weight"]),
            positive_in_denominator=bool(variant.get("positive_in_denominator", False)))
        opt.zero_grad()
        (loss * D.world_size()).backward()
        opt.step()
        if (step + 1) % spe == 0:
            ev = select_on_heldout(net, spec["heldout_x"], spec["heldout_y"], spec["n_old"], spec["n_classes"],
                                   int(sel["k_patience"]), spec["linkage_backend"], int(spec["max_exact_n"]))
            st["epochs"].append({"epoch": epoch, "all": ev["all"], "old": ev["old"], "new": ev["new"],
                                 "k_est": ev["k_est"], "score": ev["score"]})
            if ev["score"] > st["best_score"]:
                st.update(best_score=ev["score"], best_epoch=epoch, best_k=ev["k_est"], best_curve=[list(c) for c in ev["curve"]],
                          best_state={kk: vv.detach().clone() for kk, vv in net.state_dict().items()})
        return metrics

    def get_extra():
        return {kk: vv for kk, vv in st.items()}

    def set_extra(extra):
        st.update(extra)

    key = job_key(job={"variant": variant, "train": tr, "model": spec["model"], "aug": spec["aug"],
                       "world": D.world_size()}, seed=seed, code=code_fingerprint(),
                  data={"n": len(images), "sum": float(images.sum()), "labelled": int(labelled.sum()),
                        "backbone": spec["backbone_key"]})

    def fit(ckpt: Checkpointer | None) -> dict[str, Any]:
        start = time.perf_counter()
        history = train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=n_steps, scheduler=sched,
                             state=TrainState(generators={"batch": gen_batch, "aug": gen_aug}, get_extra=get_extra,
                                              set_extra=set_extra),
                             checkpointer=ckpt, every=int(tr["checkpoint_every"]), log_every=int(tr.get("log_every", 5)),
                             log_fn=spec.get("log_fn"), desc=f"cms train {variant['name']}",
                             progress=bool(spec.get("progress", True)) and D.is_main())
        final = {kk: vv.detach().clone() for kk, vv in net.state_dict().items()}
        return {"best_state": st["best_state"] or final, "final_state": final, "best_epoch": st["best_epoch"],
                "k_est": st["best_k"], "k_curve": [list(map(float, c)) for c in st["best_curve"]],
                "epochs": st["epochs"], "refreshes": st["refreshes"], "history": history,
                "seconds": time.perf_counter() - start, "steps": n_steps}

    return run_cached(spec.get("checkpoint_dir"), variant["name"], key, fit)


def fit_cms_parallel(spec: dict[str, Any], world_size: int = 1, threads: int = 1) -> dict[str, Any]:
    """Run `fit_cms` single-process (world_size 1) or on `world_size` data-parallel workers (gloo on
    CPU); returns rank 0's result (the trained weights)."""
    if int(world_size) <= 1:
        return fit_cms(spec)
    spec = {k: v for k, v in spec.items() if k != "log_fn"}  # an MLflow logger cannot cross processes
    return D.launch(fit_cms, (spec,), nprocs=int(world_size), backend="gloo" if not torch.cuda.is_available() else None,
                    threads_per_worker=threads)
