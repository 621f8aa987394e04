"""The shared training loop: seeded, checkpointed, resumable, with a progress bar and step metrics.

A paper's model code supplies one function, `step_fn(step) -> {metric: value}`, that performs one
optimisation step. `train_loop` calls it `n_steps` times and, every `every` steps, writes a checkpoint that
holds everything needed to continue bit-for-bit: model, optimiser and scheduler states, every random
generator the step draws from, any extra state the step keeps (e.g. MASH's shuffled target), and the
metric history so far. A run that is killed and started again resumes from its newest valid checkpoint
and ends with the same weights as a run that was never interrupted.

Checkpoints are written atomically (temporary file, fsync, rename) with a sha256 sidecar; a corrupt or
truncated checkpoint is detected on load, reported with a warning, and the one before it is used.
Checkpoints load with `torch.load(weights_only=True)`: they hold only tensors and plain containers.

The loop is the same single-process or data-parallel (`cvpr24.core.distributed`): wrap the model with
`distributed.wrap`, let `step_fn` use this rank's share of the global batch, and DDP averages the
gradients; only rank 0 writes checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cvpr24.core.safety import load_weights

log = logging.getLogger(__name__)

StepFn = Callable[[int], dict[str, float]]
LogFn = Callable[[int, dict[str, float]], None]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Checkpointer:
    """Numbered checkpoints `step_XXXXXXXX.pt` (+ `.sha256`) in one folder, newest `keep` retained,
    and an optional `final.pt` holding a finished job's result."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = max(1, int(keep))

    # -- numbered training checkpoints -------------------------------------------------------------
    def _path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        path = self._path(step)
        atomic_torch_save(state, path)
        sidecar = path.with_suffix(".sha256")
        sidecar.write_text(_sha256(path) + "\n")
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)
        return path

    def checkpoints(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("step_*.pt"))

    def _load_verified(self, path: Path) -> dict[str, Any] | None:
        sidecar = path.with_suffix(".sha256")
        if not sidecar.is_file():
            log.warning("checkpoint %s has no checksum file; skipping it", path)
            return None
        if sidecar.read_text().strip() != _sha256(path):
            log.warning("checkpoint %s fails its sha256 check (corrupt or truncated); skipping it", path)
            return None
        try:
            return load_weights(path)
        except Exception as exc:  # a file that passes the checksum but still cannot be read
            log.warning("checkpoint %s cannot be loaded (%s); skipping it", path, exc)
            return None

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that passes its checksum, falling back to older ones with a warning."""
        for path in reversed(self.checkpoints()):
            state = self._load_verified(path)
            if state is not None:
                return state
        return None

    # -- a finished job's result -------------------------------------------------------------------
    @property
    def final_path(self) -> Path:
        return self.directory / "final.pt"

    def save_final(self, result: dict[str, Any]) -> None:
        atomic_torch_save(result, self.final_path)
        self.final_path.with_suffix(".sha256").write_text(_sha256(self.final_path) + "\n")
        for old in self.checkpoints():  # the result supersedes the training checkpoints
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)

    def load_final(self) -> dict[str, Any] | None:
        if not self.final_path.is_file():
            return None
        return self._load_verified(self.final_path)


@dataclass
class TrainState:
    """What `train_loop` saves and restores besides the model, optimiser and scheduler."""

    generators: dict[str, torch.Generator] = field(default_factory=dict)
    get_extra: Callable[[], dict[str, Any]] = dict
    set_extra: Callable[[dict[str, Any]], None] = lambda extra: None


def train_loop(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    n_steps: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    state: TrainState | None = None,
    checkpointer: Checkpointer | None = None,
    every: int = 100,
    log_every: int = 10,
    log_fn: LogFn | None = None,
    desc: str = "train",
    progress: bool = True,
    stop_at: int | None = None,
) -> list[dict[str, float]]:
    """Run `step_fn(step)` for step in [start, n_steps), checkpointing every `every` steps.

    `stop_at` pauses the run after that many steps (the schedule still spans `n_steps`) and writes a
    checkpoint there, so a later call with the same checkpointer continues it exactly where it stopped.

    Returns the history: one dict per logged step (`step` plus the metrics `step_fn` returned), the
    steps before a resume included. `scheduler.step()` is called after every `step_fn`.
    """
    state = state or TrainState()
    start, history = 0, []
    if checkpointer is not None:
        saved = checkpointer.latest()
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None and saved.get("scheduler") is not None:
                scheduler.load_state_dict(saved["scheduler"])
            for name, gen in state.generators.items():
                gen.set_state(saved["generators"][name])
            torch.set_rng_state(saved["torch_rng"])
            state.set_extra(saved.get("extra", {}))
            start, history = int(saved["step"]), list(saved["history"])
            log.info("%s: resumed from checkpoint at step %d/%d", desc, start, n_steps)

    def snapshot(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "generators": {name: gen.get_state() for name, gen in state.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "extra": state.get_extra(),
            "history": history,
        }

    bar = tqdm(total=n_steps, initial=start, desc=desc, disable=not progress, mininterval=1.0, leave=False)
    try:
        stop = n_steps if stop_at is None else min(int(stop_at), n_steps)
        for step in range(start, stop):
            metrics = step_fn(step)
            if scheduler is not None:
                scheduler.step()
            if step % log_every == 0 or step == n_steps - 1:
                record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
                history.append(record)
                if log_fn is not None:
                    log_fn(step, metrics)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            bar.update(1)
            done = step + 1
            # in data-parallel runs every rank holds the same state: rank 0 alone writes it
            pause = done == stop < n_steps
            if checkpointer is not None and done < n_steps and (done % every == 0 or pause) and _is_main():
                checkpointer.save(done, snapshot(done))
    finally:
        bar.close()
    return history


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def mlflow_step_logger(prefix: str) -> LogFn | None:
    """A `log_fn` that logs step metrics to the active MLflow run (None when no run is active, e.g. in a
    worker process; the history returned by `train_loop` is logged by the caller instead)."""
    import mlflow

    if mlflow.active_run() is None:
        return None

    def _log(step: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({f"{prefix}/{k}": float(v) for k, v in metrics.items()}, step=step)

    return _log


def job_key(**parts: Any) -> str:
    """The fingerprint a cached job is stored under: everything that changes its result (the job's
    parameters, seed, code fingerprint, a fingerprint of its input data), as JSON-able values."""
    from cvpr24.core.provenance import fingerprint_json

    return fingerprint_json(parts)


def cached_job(
    directory: str | Path,
    name: str,
    key: str,
    fit: Callable[[Checkpointer], dict[str, Any]],
    *,
    to_cache: Callable[[dict[str, Any]], dict[str, Any]] = lambda out: out,
    from_cache: Callable[[dict[str, Any]], dict[str, Any]] = lambda cached: cached,
    keep: int = 2,
) -> tuple[dict[str, Any], bool]:
    """Run one job at most once: `<directory>/<name>-<key>/final.pt` holds a finished result.

    A finished result is read back (`from_cache`, returned with `True`); otherwise `fit(checkpointer)`
    runs (resuming from the folder's newest good checkpoint if it passes the checkpointer to
    `train_loop`), its result is saved (`to_cache`: tensors and plain containers only) and returned
    with `False`. The key comes from `job_key`, so a changed job never reads a stale result."""
    ckpt = Checkpointer(Path(directory) / f"{name}-{key}", keep=keep)
    cached = ckpt.load_final()
    if cached is not None:
        return from_cache(cached), True
    out = fit(ckpt)
    ckpt.save_final(to_cache(out))
    return out, False
