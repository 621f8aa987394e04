"""BUS's training: source-only pretraining and the self-training runs (DACS/MIC base, open-set pseudo-labels,
refinement, OpenReMix, DECON), each a cached, resumable *job*.

- `pretrain` jobs: one per seed, supervised cross-entropy on the labelled source (private pixels ignored).
  The closed-set "source only" rows and the "+ threshold" row use this network; every self-training job of
  the same seed starts from it (student and teacher), so the source-only phase is paid once per seed.
- `selftrain` jobs: one per (variant, seed). A variant switches BUS's parts on or off: `refine`
  (label-free mask refinement), `decon`, `ro` (resizing object), `ap` (attaching private).

`run_job` executes in a worker process. A job's result is cached under the checkpoint root, keyed by the
job, its parameters, the data and this package's training code; a killed run resumes from its newest
checkpoint and finished jobs are read back (core.training.cached_job).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvpr24.core.provenance import fingerprint_arrays, fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, cached_job, job_key, train_loop
from cvpr24.pipelines.bus import model as M
from cvpr24.pipelines.bus.labels import IGNORE_ID, PRIVATE_ID

PACKAGE_DIR = Path(__file__).parent


def code_fingerprint() -> str:
    files = [PACKAGE_DIR / f for f in ("model.py", "method.py", "labels.py")]
    files.append(PACKAGE_DIR.parent.parent / "core" / "training.py")
    return fingerprint_files(files)


def to_input(images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    x = torch.as_tensor(images_u8)
    return x.permute(0, 3, 1, 2).float() / 255.0


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25


def build_model(cfg: dict[str, Any]) -> torch.nn.Module:
    arch = cfg.get("arch", "small_conv")
    if arch == "small_conv":
        return M.SegNet(widths=tuple(cfg["widths"]), embed=int(cfg["embed"]), dropout=float(cfg.get("dropout", 0.1)))
    if arch == "mit_b5":
        from cvpr24.pipelines.bus.segformer import segformer_mit_b5

        return segformer_mit_b5(cfg.get("pretrained"))
    raise ValueError(f"bus.train.model.arch must be 'small_conv' or 'mit_b5', got {arch!r}")


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy (ignore 255) times a per-pixel weight, averaged over the non-ignored pixels."""
    ce = F.cross_entropy(logits, target.long(), ignore_index=IGNORE_ID, reduction="none")
    valid = (target != IGNORE_ID).float()
    return (ce * weight * valid).sum() / valid.sum().clamp_min(1.0)


def _optimizer(net: torch.nn.Module, opt: dict[str, Any], n_steps: int):
    head = [p for n, p in net.named_parameters() if n.startswith(("classifier", "fuse", "proj", "decode"))]
    head_ids = {id(p) for p in head}
    body = [p for p in net.parameters() if id(p) not in head_ids]
    lr = float(opt["lr"])
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr},
                                   {"params": head, "lr": lr * float(opt.get("head_lr_mult", 10.0))}],
                                  lr=lr, weight_decay=float(opt.get("weight_decay", 0.01)))
    warm = max(1, int(opt.get("warmup", 0)))

    def schedule(step: int) -> float:  # linear warmup, then poly decay (power 1), as MIC's config
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 1.0 - (step - warm) / max(1, n_steps - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def pretrain(src_img: np.ndarray, src_lab: np.ndarray, cfg: dict[str, Any], seed: int,
             checkpointer: Checkpointer | None, desc: str, progress: bool) -> dict[str, Any]:
    """Source-only training (closed set): cross-entropy on source labels, private pixels (255) ignored."""
    torch.manual_seed(derive_seed(seed, "init"))
    net = build_model(cfg["model"])
    n_steps, B = int(cfg["pretrain"]["iterations"]), int(cfg["batch_size"])
    optimizer, scheduler = _optimizer(net, cfg["optimizer"], n_steps)
    gen = torch_generator(derive_seed(seed, "pretrain"))
    imgs, labs = torch.from_numpy(src_img), torch.from_numpy(src_lab)

    def step_fn(step: int) -> dict[str, float]:
        idx = torch.randint(0, imgs.shape[0], (B,), generator=gen)
        x = M.colour_jitter(to_input(imgs[idx]), gen, float(cfg["jitter"]))
        y = labs[idx]
        net.train()
        logits, _ = M.full_res_logits(net, normalise(x))
        loss = weighted_ce(logits, y, torch.ones_like(y, dtype=torch.float32))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss_src": float(loss.detach())}

    history = train_loop(model=net, optimizer=optimizer, scheduler=scheduler, step_fn=step_fn, n_steps=n_steps,
                         state=TrainState(generators={"g": gen}), checkpointer=checkpointer,
                         every=int(cfg["checkpoint_every"]), log_every=int(cfg["log_every"]), desc=desc,
                         progress=progress)
    return {"student": net.state_dict(), "teacher": net.state_dict(), "history": history, "diag": {}}


def selftrain(init: dict[str, torch.Tensor], src_img: np.ndarray, src_lab: np.ndarray, tgt_img: np.ndarray,
              tgt_segments: np.ndarray, variant: dict[str, bool], cfg: dict[str, Any], seed: int,
              checkpointer: Checkpointer | None, desc: str, progress: bool) -> dict[str, Any]:
    """DACS/MIC-style self-training with open-set pseudo-labels and BUS's switchable parts (see module doc)."""
    st = cfg["selftrain"]
    torch.manual_seed(derive_seed(seed, "selftrain-init"))
    student = build_model(cfg["model"])
    student.load_state_dict(init)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    n_steps, B = int(st["iterations"]), int(cfg["batch_size"])
    optimizer, scheduler = _optimizer(student, {**cfg["optimizer"], "warmup": st["warmup"]}, n_steps)
    gen = torch_generator(derive_seed(seed, "selftrain"))
    s_imgs, s_labs = torch.from_numpy(src_img), torch.from_numpy(src_lab)
    t_imgs, t_segs = torch.from_numpy(tgt_img), torch.from_numpy(tgt_segments)
    extra: dict[str, Any] = {"decon_active": 0, "ap_pixels": 0, "ro_pixels": 0, "refined_changed": 0.0}

    def step_fn(step: int) -> dict[str, float]:
        i_s = torch.randint(0, s_imgs.shape[0], (B,), generator=gen)
        i_t = torch.randint(0, t_imgs.shape[0], (B,), generator=gen)
        xs, ys = to_input(s_imgs[i_s]), s_labs[i_s].long()
        xt = to_input(t_imgs[i_t])
        window = M.in_refinement_window(step, n_steps, float(st["refine_ratio"]))
        with torch.no_grad():
            teacher.eval()
            probs = torch.softmax(M.full_res_logits(teacher, normalise(xt))[0], 1)
            pl, pw = M.open_set_pseudo_labels(probs, float(st["pseudo_thres"]), float(st["conf_thres"]))
            if variant["refine"] and window:
                refined = M.refine_with_masks(pl, t_segs[i_t])
                extra["refined_changed"] += float((refined != pl).float().mean())
                pl = refined
        # ClassMix: half the source classes pasted onto the target (source GT there, pseudo-labels elsewhere)
        cm = M.classmix_masks(ys, gen)
        mixed = torch.where(cm[:, None], xs, xt)
        mixed_lab = torch.where(cm, ys, pl)
        mixed_w = torch.where(cm, torch.ones_like(pw[:, None, None].expand_as(cm)), pw[:, None, None].expand_as(cm))
        if variant["ro"]:
            mixed, mixed_lab, mixed_w, pasted = M.resize_object(mixed, mixed_lab, mixed_w, xs, ys, cm,
                                                                float(st["resize_scale"]), gen)
            extra["ro_pixels"] += int(pasted.sum())
        mixed = M.colour_jitter(mixed, gen, float(cfg["jitter"]))
        # source batch (with attaching-private inside the refinement windows)
        src_w = torch.ones_like(ys, dtype=torch.float32)
        if variant["ap"] and window:
            xs, ys, src_w = M.attach_private(xs, ys, src_w, xt, pl, pw)
            extra["ap_pixels"] += int((ys == 13).sum())
        # MIC: masked target must match the teacher's pseudo-labels
        masked = xt * M.mic_mask(tuple(xt.shape), int(st["mic_block"]), float(st["mic_ratio"]), gen)
        student.train()
        logits, feats = student(normalise(torch.cat([xs, mixed, masked])))
        up = F.interpolate(logits, size=xs.shape[-2:], mode="bilinear", align_corners=False)
        loss_src = weighted_ce(up[:B], ys, src_w)
        loss_mix = weighted_ce(up[B:2 * B], mixed_lab, mixed_w)
        loss_mic = weighted_ce(up[2 * B:], pl, pw[:, None, None].expand_as(pl).float())
        loss = loss_src + loss_mix + float(st["mic_lambda"]) * loss_mic
        metrics = {"loss_src": float(loss_src.detach()), "loss_mix": float(loss_mix.detach()),
                   "loss_mic": float(loss_mic.detach()), "pseudo_weight": float(pw.mean()),
                   **private_signals(pl, pw, up[B:2 * B].detach(), cm, mixed_lab, mixed_w, ys, src_w)}
        if variant["decon"]:
            # `decon_window` is the paper's p (`crop_size`): the window's side is 2p, clipped to the feature map
            ld = M.decon_loss(feats[B:2 * B], mixed_lab, 2 * int(st["decon_window"]), gen,
                              int(st["decon_kernel"]), int(st["decon_iterations"]))
            loss = loss + float(st["decon_weight"]) * ld
            extra["decon_active"] += int(float(ld.detach()) > 0)
            metrics["loss_decon"] = float(ld.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        M.ema_update(teacher, student, float(st["ema"]))
        return metrics

    state = TrainState(generators={"g": gen},
                       get_extra=lambda: {**extra, "teacher": teacher.state_dict()},
                       set_extra=lambda saved: (teacher.load_state_dict(saved["teacher"]),
                                                extra.update({k: v for k, v in saved.items() if k != "teacher"})))
    history = train_loop(model=student, optimizer=optimizer, scheduler=scheduler, step_fn=step_fn,
                         n_steps=n_steps, state=state, checkpointer=checkpointer,
                         every=int(cfg["checkpoint_every"]), log_every=int(cfg["log_every"]), desc=desc,
                         progress=progress)
    return {"student": student.state_dict(), "teacher": teacher.state_dict(), "history": history,
            "diag": {k: float(v) for k, v in extra.items()}}


def private_signals(pl: torch.Tensor, pw: torch.Tensor, mixed_logits: torch.Tensor, classmix: torch.Tensor,
                    mixed_lab: torch.Tensor, mixed_w: torch.Tensor, src_lab: torch.Tensor, src_w: torch.Tensor
                    ) -> dict[str, float]:
    """Label-free training signals of the private class, logged per step (issue 13's measurements):
    `pl_private` share of the target batch's pixels the teacher pseudo-labels private; `pred_private` share
    of the target-derived pixels of the mixed images (ClassMix's non-source part) the student predicts
    private; `sup_mix`, `sup_mic`, `sup_ap`: private supervision reaching the student per pixel of the mixed,
    masked-target and source (attaching private) images, i.e. the mean of weight x [label == private]."""
    tgt = ~classmix
    pred = (mixed_logits.argmax(1) == PRIVATE_ID) & tgt
    return {"pl_private": float((pl == PRIVATE_ID).float().mean()),
            "pred_private": float(pred.float().sum() / tgt.float().sum().clamp_min(1.0)),
            "sup_mix": float(((mixed_lab == PRIVATE_ID) * mixed_w).mean()),
            "sup_mic": float(((pl == PRIVATE_ID) * pw[:, None, None]).mean()),
            "sup_ap": float(((src_lab == PRIVATE_ID) * src_w).mean())}


def _relevant(job: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The training parameters that change this job's result (so unrelated edits keep the cache)."""
    relevant = {k: cfg[k] for k in ("model", "optimizer", "batch_size", "jitter", "pretrain")}
    if job["kind"] == "selftrain":
        relevant["selftrain"] = cfg["selftrain"]
    return relevant


def run_job(*, job: dict[str, Any], arrays: dict[str, np.ndarray], init: dict[str, torch.Tensor] | None,
            cfg: dict[str, Any], seed: int, checkpoint_root: str, code: str, progress: bool = False,
            threads: int = 1) -> dict[str, Any]:
    """Run (or read back from its cache, core.training.cached_job) one job; executed in a worker process."""
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    key = job_key(job=job, cfg=_relevant(job, cfg), data=fingerprint_arrays(dict(arrays)), seed=seed, code=code)
    job_seed = derive_seed(seed, int(job["seed"]))  # the init of a seed's pretrain and its self-training runs

    def fit(ckpt: Checkpointer) -> dict[str, Any]:
        start = time.perf_counter()
        if job["kind"] == "pretrain":
            out = pretrain(arrays["src_img"], arrays["src_lab"], cfg, job_seed, ckpt, job["job_id"], progress)
        elif job["kind"] == "selftrain":
            if init is None:
                raise ValueError(f"{job['job_id']}: a self-training job needs its seed's source-only weights")
            variant = {k: bool(job[k]) for k in ("refine", "decon", "ro", "ap")}
            out = selftrain(init, arrays["src_img"], arrays["src_lab"], arrays["tgt_img"], arrays["tgt_segments"],
                            variant, cfg, derive_seed(job_seed, job["variant"]), ckpt, job["job_id"], progress)
        else:
            raise ValueError(f"unknown job kind {job['kind']!r}")
        out["seconds"] = time.perf_counter() - start
        return out

    out, cached = cached_job(checkpoint_root, job["job_id"], key, fit)
    return {**out, "cached": cached, "job_id": job["job_id"]}
