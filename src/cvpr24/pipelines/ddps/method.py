"""DDPS training and test-time simulation on pixel lists.

Only the object pixels (eroded mask) take part in the loss and the metric, and photometric stereo is per
pixel, so every scene is stored as a padded list of its object pixels (`valid` marks the real ones): the
chain runs on ~600 pixels per scene instead of 64 x 76, which is what makes 13 pattern trainings fit the
CPU budget. Padding pixels have all-zero images and get a zero normal; they never reach the loss.

- `fit_patterns`: the official schedule (Adam on the logits, lr 0.3, StepLR x0.3 every 5 epochs, 30
  epochs, batch 2), basis relighting with fresh capture noise every step, reference-plane reconstructor,
  cosine loss; checkpointed through core.training (resumes after a kill), cached by a key of its inputs.
- `capture_full`: a test capture rendered from the geometry under a pattern (diffuse + specular at the
  true depth, four polarizer angles, noise, 8-bit), then separated (or not: the mixed input).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.provenance import fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, cached_job, job_key, train_loop
from cvpr24.pipelines.ddps import model as M

PACKAGE_DIR = Path(__file__).parent


def code_fingerprint() -> str:
    files = [PACKAGE_DIR / "model.py", PACKAGE_DIR / "method.py", PACKAGE_DIR.parent.parent / "core" / "training.py"]
    return fingerprint_files(files)


def split_tensors(mi: dict[str, np.ndarray], split: str, basis_key: str = "basis") -> dict[str, torch.Tensor]:
    """Tensors of one split from the model-input arrays: basis (S, 3, J, P) in [0, 1], normals, valid,
    reference-plane points (S, P, 3)."""
    return {
        "basis": M.channel_first(torch.from_numpy(mi[f"{split}_{basis_key}"].astype(np.float32) / 255.0)),
        "normals": torch.from_numpy(mi[f"{split}_normals"].astype(np.float32)),
        "valid": torch.from_numpy(mi[f"{split}_valid"].astype(bool)),
        "ref_points": torch.from_numpy(mi[f"{split}_ref_points"].astype(np.float32)),
    }


def directions(ref_points: torch.Tensor, lights: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Unit vectors from each pixel's reference-plane point to each superpixel, packed (S, J, P, 3)."""
    return M.pack_directions(
        M.light_directions(ref_points, torch.as_tensor(np.asarray(lights), dtype=torch.float32).reshape(-1, 3)))


def fit_patterns(
    *,
    data: dict[str, torch.Tensor],
    val: dict[str, torch.Tensor] | None,
    lights: np.ndarray,
    p0: np.ndarray,
    channels: str,
    train: dict[str, Any],
    seed: int,
    checkpointer: Checkpointer | None = None,
    desc: str = "ddps",
    progress: bool = False,
    log_fn=None,
) -> dict[str, Any]:
    """Learn display patterns end to end (spec Sec. 2.5-2.6 and 8.5). Returns P (N, rows, cols, 3) and the
    per-step history (loss, lr, and the validation loss at the start of every epoch)."""
    n_scenes = data["basis"].shape[0]
    bs = int(train["batch_size"])
    steps_per_epoch = max(1, n_scenes // bs)
    n_steps = steps_per_epoch * int(train["n_epoch"])
    n = int(p0.shape[0])
    scale = M.exposure(n, train["rendering_scalar"], train["static_interval"])
    gamma, sigma, noise_model = float(train["monitor_gamma"]), float(train["noise_sigma"]), train["noise_model"]
    flip = bool(train.get("basis_column_flip", False))
    dirs = directions(data["ref_points"], lights)
    vdirs = directions(val["ref_points"], lights) if val is not None else None
    torch.manual_seed(derive_seed(seed, "init"))
    patterns = M.DisplayPatterns(p0.astype(np.float32), channels)
    opt = torch.optim.Adam(patterns.parameters(), lr=float(train["lr_light"]))
    sched = M.step_lr_schedule(opt, int(train["step_size_light"]), float(train["lr_decay_light"]), steps_per_epoch)
    order_gen, noise_gen = torch_generator(derive_seed(seed, "order")), torch_generator(derive_seed(seed, "noise"))
    extra: dict[str, Any] = {"perm": torch.randperm(n_scenes, generator=order_gen)}

    def loss_on(d: dict[str, torch.Tensor], dr: torch.Tensor, idx, gen) -> torch.Tensor:
        light = M.radiance(patterns(), gamma)
        img = M.capture(M.relight(d["basis"][idx], light, scale, flip), sigma, gen, noise_model)
        normal, _ = M.photometric_stereo(img, light, dr[idx], albedo=False, packed=True)
        return M.cosine_loss(normal, d["normals"][idx], d["valid"][idx])

    def step_fn(step: int) -> dict[str, float]:
        epoch, b = divmod(step, steps_per_epoch)
        metrics: dict[str, float] = {}
        if b == 0:
            if step > 0:
                extra["perm"] = torch.randperm(n_scenes, generator=order_gen)
            if val is not None:  # the official loop validates on the first valid_N batches before every epoch
                with torch.no_grad():
                    vg = torch_generator(derive_seed(seed, "val"))
                    k = min(val["basis"].shape[0], int(train["valid_N"]) * int(train["batch_size_valid"]))
                    metrics["val_loss"] = float(loss_on(val, vdirs, torch.arange(k), vg))
        idx = extra["perm"][b * bs:(b + 1) * bs]
        loss = loss_on(data, dirs, idx, noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics.update(loss=float(loss.detach()), lr=float(opt.param_groups[0]["lr"]), epoch=float(epoch))
        return metrics

    state = TrainState(generators={"order": order_gen, "noise": noise_gen},
                       get_extra=lambda: {"perm": extra["perm"]}, set_extra=lambda s: extra.update(s))
    history = train_loop(model=patterns, optimizer=opt, scheduler=sched, step_fn=step_fn, n_steps=n_steps,
                         state=state, checkpointer=checkpointer, every=int(train["checkpoint_every"]),
                         log_every=int(train.get("log_every", 1)), log_fn=log_fn, desc=desc, progress=progress)
    with torch.no_grad():
        p = patterns().detach().numpy().astype(np.float32)
    return {"patterns": p, "history": history}


def train_run(*, run: dict[str, Any], data: dict, val: dict | None, lights: np.ndarray, train: dict[str, Any],
              seed: int, data_fp: str, code: str, progress: bool, log_fn=None) -> dict[str, Any]:
    """One pattern-learning run through core's job cache: read back when its inputs are unchanged, else
    trained (resuming from the run's newest checkpoint after a kill) and saved."""
    key = job_key(run=run, train={k: v for k, v in train.items() if k not in ("checkpoint_dir", "runs")},
                  data=data_fp, seed=seed, code=code)

    def fit(checkpointer: Checkpointer) -> dict[str, Any]:
        p0 = M.initial_pattern(run["init"], int(run["n_patterns"]), seed=derive_seed(seed, "pattern", run["init"]))
        start = time.perf_counter()
        out = fit_patterns(data=data, val=val, lights=lights, p0=p0, channels=run["channels"], train=train,
                           seed=derive_seed(seed, run["run_id"]), checkpointer=checkpointer, desc=run["run_id"],
                           progress=progress, log_fn=log_fn)
        return {**out, "seconds": time.perf_counter() - start}

    out, cached = cached_job(
        train["checkpoint_dir"], run["run_id"], key, fit,
        to_cache=lambda o: {"patterns": torch.from_numpy(o["patterns"]), "history": o["history"],
                            "seconds": o["seconds"]},
        from_cache=lambda c: {"patterns": c["patterns"].numpy(), "history": list(c["history"]),
                              "seconds": float(c["seconds"])})
    return {**out, "cached": cached}


# ------------------------------------------------------------------------------------- test capture
def capture_full(diffuse: torch.Tensor, specular: torch.Tensor, light: torch.Tensor, scale: float, *,
                 noise_sigma: float, phi_deg: float, generator: torch.Generator, separate: bool = True,
                 quantize: bool = True) -> torch.Tensor:
    """A capture under `light` (N, rows, cols, 3) rendered from the per-superpixel diffuse and specular
    images (S, 3, J, P) (channel-first, see `model.relight`): four polarizer shots with noise, clip and 8-bit quantisation, then Stokes
    separation (`separate=True`, the diffuse image DDPS uses) or the unpolarized sum s0 = diffuse + specular
    (`separate=False`, the mixed input). Returns (S, N, P, 3)."""
    lin_d = M.relight(diffuse, light, scale)
    lin_s = M.relight(specular, light, scale)
    shots = []
    for shot in M.polarizer_images(lin_d, lin_s, phi_deg):
        shot = shot + noise_sigma * torch.randn(shot.shape, generator=generator, dtype=shot.dtype)
        shot = shot.clamp(0, 1)
        shots.append(torch.round(shot * 255) / 255 if quantize else shot)
    diff, _ = M.separate_polarization(*shots)
    s0 = (shots[0] + shots[1] + shots[2] + shots[3]) / 2
    return (diff if separate else s0).clamp(1e-8, 1.0)


def error_stats(normal: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> list[dict[str, float]]:
    """Per scene: mean / median angular error (deg) and % of pixels under 10/20/30 deg over valid pixels."""
    err = M.angular_error_deg(normal, target)
    out = []
    for s in range(err.shape[0]):
        e = err[s][valid[s]].numpy().astype(np.float64)
        out.append({"mean_err": float(e.mean()), "median_err": float(np.median(e)),
                    "acc10": float((e < 10).mean() * 100), "acc20": float((e < 20).mean() * 100),
                    "acc30": float((e < 30).mean() * 100), "n_pixels": int(e.size)})
    return out
