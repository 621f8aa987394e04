"""DDP step time against one process: the same training step (a small CNN, one global batch) run by one
process and by N data-parallel workers (gloo on CPU, torch's elastic launcher via cvpr24.core.distributed).

    python benchmarks/ddp_step_time.py [--workers 2] [--batch 32] [--steps 30] [--size 32]

Prints seconds per optimisation step (median after warm-up) for each configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cvpr24.core import distributed as D


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))


def bench(batch: int, steps: int, size: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _net()
    net = D.wrap(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    times = []
    for _ in range(steps):
        idx = D.shard(torch.arange(batch))
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    warm = 5
    results = {}
    for name, nprocs, threads in (("1 process, 2 threads", 1, 2), ("1 process, 1 thread", 1, 1),
                                  (f"{a.workers} DDP workers (gloo), 1 thread each", a.workers, 1)):
        t = time.perf_counter()
        times = D.launch(bench, (a.batch, a.steps, a.size, threads), nprocs=nprocs, backend="gloo",
                         threads_per_worker=threads if nprocs > 1 else None)
        wall = time.perf_counter() - t
        results[name] = {"step_s": statistics.median(times[warm:]), "wall_s_incl_start": wall}
        print(f"{name:40s} {results[name]['step_s'] * 1000:7.1f} ms/step   (wall incl. start {wall:.1f} s)")
    print(json.dumps({"batch": a.batch, "size": a.size, "steps": a.steps, **results}, indent=1))


if __name__ == "__main__":
    main()
