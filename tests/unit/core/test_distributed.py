"""Data-parallel training on 2 CPU processes (gloo, elastic launcher) equals single-process training
with the same global batch; a dying worker fails the launch with a clear error instead of hanging."""

from __future__ import annotations

import os
import time

import pytest
import torch

from cvpr24.core import distributed as D
from cvpr24.core.training import train_loop

GLOBAL_BATCH, STEPS = 8, 6


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH * STEPS, 5, generator=g)
    return x, x @ torch.arange(1.0, 6.0)[:, None] + 0.1 * torch.randn(len(x), 1, generator=g)


def fit_linear() -> dict[str, torch.Tensor]:
    """Module-level so spawned workers can import it; runs in 1 or N processes unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    net = D.wrap(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = _data()

    def step_fn(step: int) -> dict[str, float]:
        idx = D.shard(torch.arange(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH))
        loss = ((net(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=STEPS, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def die_on_rank_one() -> None:
    import torch.distributed as dist

    if dist.get_rank() == 1:
        os._exit(3)
    dist.barrier()  # rank 0 would wait here forever without failure detection


@pytest.mark.slow  # two worker processes under the elastic launcher: not in make test-fast
def test_two_workers_match_one_process():
    single = D.launch(fit_linear, nprocs=1)
    parallel = D.launch(fit_linear, nprocs=2, backend="gloo", timeout_s=60, threads_per_worker=1)
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(single["weight"], torch.nn.Linear(5, 1).weight)  # it did train


@pytest.mark.slow  # two worker processes under the elastic launcher: not in make test-fast
def test_dead_worker_fails_fast_with_a_clear_error():
    start = time.perf_counter()
    with pytest.raises(D.DistributedWorkerError, match=r"failed on [12] of 2 workers \(rank [01]: ") as err:
        D.launch(die_on_rank_one, nprocs=2, backend="gloo", timeout_s=30, threads_per_worker=1)
    # whichever the agent records first: rank 1's exit, or rank 0's broken connection to it
    assert "exit code 3" in str(err.value) or "Connection reset" in str(err.value) or "rank 1" in str(err.value)
    assert time.perf_counter() - start < 60
