"""The core training loop: checkpoints, resume equivalence, corrupt-checkpoint fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from cvpr24.core.training import Checkpointer, TrainState, train_loop


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    gen = torch.Generator().manual_seed(123)

    def step_fn(step: int) -> dict[str, float]:
        x = torch.randn(16, 4, generator=gen)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    return model, opt, sched, gen, step_fn


def _run(ckpt: Checkpointer | None, n_steps: int = 30, stop_at: int | None = None):
    model, opt, sched, gen, step_fn = _setup()

    def maybe_stop(step: int) -> dict[str, float]:
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt  # simulated kill
        return step_fn(step)

    hist = train_loop(model=model, optimizer=opt, scheduler=sched, step_fn=maybe_stop, n_steps=n_steps,
                      state=TrainState(generators={"g": gen}), checkpointer=ckpt, every=5, log_every=1,
                      progress=False)
    return model, hist


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    ref_model, ref_hist = _run(None)
    ckpt = Checkpointer(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, stop_at=17)
    assert [p.name for p in ckpt.checkpoints()] == ["step_00000010.pt", "step_00000015.pt"]  # keep=2
    model, hist = _run(ckpt)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_pause_writes_a_checkpoint_there_and_the_next_call_continues_exactly(tmp_path):
    ref_model, ref_hist = _run(None)
    ckpt = Checkpointer(tmp_path / "c")
    model, opt, sched, gen, step_fn = _setup()
    hist = train_loop(model=model, optimizer=opt, scheduler=sched, step_fn=step_fn, n_steps=30, stop_at=12,
                      state=TrainState(generators={"g": gen}), checkpointer=ckpt, every=5, log_every=1,
                      progress=False)
    assert hist[-1]["step"] == 11 and ckpt.checkpoints()[-1].name == "step_00000012.pt"  # off the every-5 grid
    assert sched.last_epoch == 12 and sched.T_max == 30  # the schedule still spans the whole run
    model, hist = _run(ckpt)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, stop_at=17)
    newest = ckpt.checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        state = ckpt.latest()
    assert state is not None and state["step"] == 10
    assert "fails its sha256 check" in caplog.text
    ref_model, _ = _run(None)
    model, _ = _run(ckpt)  # resumes from step 10 and still reaches the same weights
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_final_result_supersedes_checkpoints(tmp_path):
    ckpt = Checkpointer(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, stop_at=12)
    assert ckpt.checkpoints()
    ckpt.save_final({"x": torch.ones(2), "v": 1.5})
    assert ckpt.checkpoints() == []
    assert ckpt.load_final()["v"] == 1.5
    ckpt.final_path.write_bytes(b"garbage")
    assert ckpt.load_final() is None


def test_step_metrics_go_to_the_active_mlflow_run(tmp_path):
    import mlflow

    from cvpr24.core.training import mlflow_step_logger

    assert mlflow_step_logger("x") is None  # no active run: the caller logs the returned history
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    with mlflow.start_run() as run:
        log_fn = mlflow_step_logger("job")
        log_fn(3, {"loss": 0.5})
    hist = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "job/loss")
    assert [(m.step, m.value) for m in hist] == [(3, 0.5)]
