"""MASH per image: blind-spot training at a masking ratio, with or without local pixel shuffling.

Everything MASH computes is a set of independent *jobs*, one network trained on one noisy image:

- `bsd` jobs: the U-Net trained with random masking at ratio tau (Eq. 4); with `lps` the target switches
  once, at iteration N1, to the noisy image shuffled inside flat tiles of the pseudo-clean estimate
  (Eq. 5-6); the output is the K-mask ensemble (Eq. 11). The probes of the adaptive masking (tau 0.8 and
  0.2) are the fixed-ratio runs themselves: sigma_hat (Eq. 8) is the std of their ensemble residual.
- baseline jobs: BM3D (estimated white sigma, or the oracle noise PSD), NL-means calibrated by
  J-invariance, and Zero-Shot Noise2Noise.

`run_job` is what a worker process executes. A job's result is cached in its own folder under the
checkpoint root, keyed by the job, its parameters, the input image and this package's code, so a killed
train phase resumes: finished jobs are read back, the interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.provenance import fingerprint_arrays, fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, cached_job, job_key, train_loop
from cvpr24.pipelines.mash.model import (
    UNetN2N,
    bernoulli_mask,
    ensemble_predict,
    lps_target,
    masked_loss,
    noise_std_255,
)

PACKAGE_DIR = Path(__file__).parent
_INIT_LOCK = threading.Lock()


def code_fingerprint() -> str:
    """Fingerprint of the code a job result depends on: the model, this file, the baselines and the core
    training loop (not the evaluation or report code, whose edits must not invalidate trained results)."""
    files = [PACKAGE_DIR / f for f in ("model.py", "method.py", "baselines.py")]
    files.append(PACKAGE_DIR.parent.parent / "core" / "training.py")
    return fingerprint_files(files)


def to_tensor(image_255: np.ndarray) -> torch.Tensor:
    """H x W x C array in 0-255 -> (1, C, H, W) float32 tensor in [0, 1] (noise may leave that range)."""
    return torch.from_numpy(np.ascontiguousarray(image_255, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> H x W x C float32 in 0-255 (unclipped)."""
    return (tensor[0].permute(1, 2, 0).numpy() * 255.0).astype(np.float32)


def fit_bsd(
    noisy_255: np.ndarray,
    *,
    tau: float,
    iterations: int,
    lr: float,
    width: int,
    loss: str,
    num_predictions: int,
    seed: int,
    lps: bool = False,
    lps_iteration: int = 50,
    tile_size: int = 4,
    std_block: int = 2,
    rel_threshold: float = 0.5,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 100,
    desc: str = "bsd",
    progress: bool = False,
    device: str = "cpu",
    sigma_every: int = 0,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train one blind-spot U-Net on one noisy image; return its ensemble prediction and diagnostics.

    Returns `denoised` (H x W x C, 0-255, clipped), `residual_std` (sigma_hat of Eq. 8: std of the
    unclipped ensemble minus the noisy input, 0-255 units), `shuffled_fraction` and the loss `history`.

    `sigma_every` > 0 also records sigma_hat every that many steps (`sigma_trace`), each from its own
    K-mask ensemble whose masks are seeded by the step, so the trace changes neither the training nor the
    final prediction. `stop_at` pauses training after that many steps (the cosine schedule still spans
    `iterations`) and returns sigma_hat there instead of a prediction (`denoised` is None): a probe of
    MASH's fast path, which the same call without `stop_at` and the same `checkpointer` continues.
    """
    dev = torch.device(device if device != "cuda" or torch.cuda.is_available() else "cpu")
    y = to_tensor(noisy_255).to(dev)
    with _INIT_LOCK:  # the global RNG seeds the weights: one initialisation at a time across threads
        torch.manual_seed(derive_seed(seed, "init"))
        net = UNetN2N(in_channels=y.shape[1], width=width).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations)
    masks = torch_generator(derive_seed(seed, "masks"))
    shuffle = torch_generator(derive_seed(seed, "shuffle"))
    extra: dict[str, Any] = {"target": y.clone(), "shuffled_fraction": 0.0, "switched": False, "sigma_trace": []}

    @torch.no_grad()
    def sigma_at(step: int) -> float:
        trace_masks = torch_generator(derive_seed(seed, f"sigma_hat@{step}"))
        return noise_std_255(ensemble_predict(net, y, tau, num_predictions, trace_masks), y)

    def step_fn(step: int) -> dict[str, float]:
        mask = bernoulli_mask(tuple(y.shape), tau, masks).to(dev)
        value = masked_loss(net(mask * y), extra["target"], mask, kind=loss)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if lps and step == lps_iteration and not extra["switched"]:
            pseudo_clean = ensemble_predict(net, y, tau, num_predictions, masks) * 255.0
            target, fraction = lps_target(
                y[0].cpu(), pseudo_clean[0].cpu(), tile=tile_size, block=std_block,
                rel_threshold=rel_threshold, generator=shuffle,
            )
            extra.update(target=target[None].to(dev), shuffled_fraction=float(fraction), switched=True)
        if sigma_every > 0 and (step + 1) % sigma_every == 0:
            extra["sigma_trace"].append({"step": step + 1, "residual_std": sigma_at(step + 1)})
        return {"loss": float(value.detach())}

    state = TrainState(
        generators={"masks": masks, "shuffle": shuffle},
        get_extra=lambda: {**extra, "target": extra["target"].cpu()},
        set_extra=lambda saved: extra.update({**saved, "target": saved["target"].to(dev)}),
    )
    history = train_loop(
        model=net, optimizer=optimizer, scheduler=scheduler, step_fn=step_fn, n_steps=iterations,
        state=state, checkpointer=checkpointer, every=checkpoint_every, log_every=10,
        desc=desc, progress=progress, stop_at=stop_at,
    )
    if stop_at is not None and stop_at < iterations:
        return {"denoised": None, "residual_std": sigma_at(stop_at), "stopped_at": int(stop_at),
                "shuffled_fraction": float(extra["shuffled_fraction"]), "history": history,
                "sigma_trace": list(extra["sigma_trace"])}
    prediction = ensemble_predict(net, y, tau, num_predictions, masks)
    unclipped = to_image(prediction.cpu())
    return {
        "denoised": np.clip(unclipped, 0.0, 255.0),
        "residual_std": float(np.std(unclipped.astype(np.float64) - noisy_255.astype(np.float64))),
        "shuffled_fraction": float(extra["shuffled_fraction"]),
        "history": history,
        "sigma_trace": list(extra["sigma_trace"]),
    }


def job_cache_key(job: dict[str, Any], train: dict[str, Any], noisy: np.ndarray, seed: int, code: str) -> str:
    return job_key(job=job, train=train, seed=seed, code=code, image=fingerprint_arrays({"y": noisy}))


def run_job(
    *,
    job: dict[str, Any],
    noisy: np.ndarray,
    train: dict[str, Any],
    seed: int,
    checkpoint_root: str,
    code: str,
    psd: np.ndarray | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run (or read back from its cache) one job. Executed in a worker process."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    key = job_cache_key(job, _job_relevant(train, job), noisy, seed, code)
    job_seed = derive_seed(seed, job["job_id"])

    def fit(ckpt: Checkpointer) -> dict[str, Any]:
        start = time.perf_counter()
        if job["kind"] == "bsd":
            kw = {**_bsd_kwargs(train, noisy.shape[2]), "tile_size": int(job["tile_size"])}
            out = fit_bsd(
                noisy, tau=float(job["tau"]), lps=bool(job["lps"]), seed=job_seed, checkpointer=ckpt,
                checkpoint_every=int(train["checkpoint_every"]), desc=job["job_id"], device=device,
                sigma_every=0 if job["lps"] else int(train.get("sigma_every", 0)), **kw,
            )
        else:
            out = _run_baseline(job["kind"], noisy, train, job_seed, psd)
        out["seconds"] = time.perf_counter() - start
        return out

    out, cached = cached_job(checkpoint_root, job["job_id"], key, fit, to_cache=_to_cache, from_cache=_from_cache)
    return {**out, "cached": cached, "job_id": job["job_id"]}


def _job_relevant(train: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The training parameters that change this job's result (so unrelated edits keep the cache)."""
    if job["kind"] == "bsd":
        keys = ["width", "iterations", "lr", "loss", "num_predictions", "lps_iteration", "std_block",
                "rel_threshold", "sigma_every"]
        return {k: train.get(k) for k in keys}
    return {"baselines": train.get("baselines", {})}


def _run_baseline(kind: str, noisy: np.ndarray, train: dict[str, Any], seed: int, psd) -> dict[str, Any]:
    from cvpr24.pipelines.mash import baselines

    cfg = train.get("baselines", {})
    if kind == "bm3d_white":
        sigma = baselines.estimate_sigma_flat(noisy)
        den = baselines.bm3d_denoise(noisy, sigma)
        extra = {"sigma_estimate": float(sigma)}
    elif kind == "bm3d_psd":
        if psd is None:
            raise ValueError("bm3d_psd job needs the oracle noise PSD")
        den = baselines.bm3d_denoise(noisy, psd)
        extra = {}
    elif kind == "nlmeans":
        den = baselines.nlmeans_calibrated(noisy, seed=seed)
        extra = {}
    elif kind == "zs_n2n":
        z = cfg.get("zs_n2n", {})
        den = baselines.zs_n2n_denoise(
            noisy, iterations=int(z.get("iterations", 2000)), lr=float(z.get("lr", 1e-3)), seed=seed
        )
        extra = {}
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    den = np.clip(np.asarray(den, dtype=np.float32).reshape(noisy.shape), 0, 255)
    return {"denoised": den, "residual_std": float(np.std(den.astype(np.float64) - noisy)),
            "shuffled_fraction": 0.0, "history": [], **extra}


def _to_cache(out: dict[str, Any]) -> dict[str, Any]:
    cache = {k: v for k, v in out.items() if k != "denoised"}
    cache["denoised"] = torch.from_numpy(np.ascontiguousarray(out["denoised"]))
    return cache


def _from_cache(cached: dict[str, Any]) -> dict[str, Any]:
    return {**cached, "denoised": cached["denoised"].numpy()}


# ------------------------------------------------------------------------------------ MASH's fast path
def bsd_job_name(tau: float, lps: bool) -> str:
    """The method name of a blind-spot run (`bsd_t0.8_lps`), as the pipeline's job ids use it."""
    return f"bsd_t{tau:g}" + ("_lps" if lps else "")


def _bsd_kwargs(train: dict[str, Any], channels: int) -> dict[str, Any]:
    rel = train["rel_threshold"]["rgb" if channels == 3 else "grey"]
    return {"iterations": int(train["iterations"]), "lr": float(train["lr"]), "width": int(train["width"]),
            "loss": train["loss"], "num_predictions": int(train["num_predictions"]),
            "lps_iteration": int(train["lps_iteration"]), "tile_size": int(train.get("tile_size", 4)),
            "std_block": int(train["std_block"]), "rel_threshold": float(rel)}


def run_probe(*, noisy: np.ndarray, tau: float, train: dict[str, Any], seed: int, directory: str,
              stop_at: int) -> dict[str, Any]:
    """One probe of the fast path: the run at `tau` trained for `stop_at` steps of its full schedule and
    paused there with a checkpoint in `directory` (or, when `stop_at` covers the schedule, finished: then
    its `denoised` is the run's output)."""
    kw = _bsd_kwargs(train, noisy.shape[2])
    return fit_bsd(noisy, tau=tau, seed=seed, checkpointer=Checkpointer(directory), stop_at=stop_at,
                   checkpoint_every=kw["iterations"], desc=f"probe {tau:g}", **kw)


def mash_fast(noisy: np.ndarray, *, image_id: str, train: dict[str, Any], rule, seed: int, directory: str | Path,
              probe_steps: int, probe_high: float = 0.8, probe_low: float = 0.2,
              threads: int = 2) -> dict[str, Any]:
    """MASH on one image, faster than its three sequential trainings; the same output whenever its probes
    lead to the same choice (always, when `probe_steps` covers the budget).

    1. The two probes run at once, one per core (two threads of this process, one kernel thread each: no
       worker start-up), and stop after `probe_steps` of their schedule: epsilon
       needs only their sigma_hat (the report's epsilon-against-budget analysis measures how early it
       settles).
    2. The rule picks tau and LPS from epsilon.
    3. If it picks a probe's own setting (a probe ratio without LPS), that probe continues from its pause to
       the full budget; otherwise the chosen run trains from scratch. Either way on all `threads` cores.

    Each run keeps the seed of the pipeline's job of the same name (`<image>__bsd_t0.8`, ...), so the final
    output is the pipeline's (up to the thread count's rounding). Returns the output, the choice and timing.
    """
    start = time.perf_counter()
    directory = Path(directory)
    seeds = {tau: derive_seed(seed, f"{image_id}__{bsd_job_name(tau, False)}") for tau in (probe_high, probe_low)}
    specs = [{"noisy": noisy, "tau": tau, "train": train, "seed": seeds[tau],
              "directory": str(directory / f"probe_{tau:g}"), "stop_at": int(probe_steps)}
             for tau in (probe_high, probe_low)]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            high, low = pool.map(lambda spec: run_probe(**spec), specs)
    finally:
        torch.set_num_threads(previous)
    probes_done = time.perf_counter()
    sigma_high, sigma_low = float(high["residual_std"]), float(low["residual_std"])
    epsilon = abs(sigma_high - sigma_low)
    tau, lps = rule.select(epsilon)
    reuse = (not lps) and any(np.isclose(tau, p) for p in (probe_high, probe_low))
    torch.set_num_threads(int(threads))
    try:
        kw = _bsd_kwargs(train, noisy.shape[2])
        finished = {probe_high: high, probe_low: low}
        if reuse and finished[probe_high if np.isclose(tau, probe_high) else probe_low]["denoised"] is not None:
            out = finished[probe_high if np.isclose(tau, probe_high) else probe_low]  # a full-length probe
        elif reuse:
            p = probe_high if np.isclose(tau, probe_high) else probe_low
            out = fit_bsd(noisy, tau=p, seed=seeds[p], checkpointer=Checkpointer(directory / f"probe_{p:g}"),
                          checkpoint_every=kw["iterations"], desc="final (continued probe)", **kw)
        else:
            out = fit_bsd(noisy, tau=tau, lps=lps, seed=derive_seed(seed, f"{image_id}__{bsd_job_name(tau, lps)}"),
                          desc="final", **kw)
    finally:
        torch.set_num_threads(previous)
    end = time.perf_counter()
    return {"denoised": out["denoised"], "epsilon": epsilon, "sigma_hat_high": sigma_high,
            "sigma_hat_low": sigma_low, "tau": tau, "lps": lps, "reused_probe": reuse,
            "seconds": end - start, "probe_seconds": probes_done - start, "final_seconds": end - probes_done}
