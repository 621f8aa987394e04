"""Benchmark: seconds per MASH training step (U-Net, Adam, one masked image) at the embedded size,
one process with 2 threads against 2 processes with 1 thread each (what `mash.train.workers` chooses).

    python benchmarks/mash_step_speed.py [--size 96] [--width 32] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch


def _steps(size: int, width: int, steps: int, threads: int) -> float:
    from cvpr24.pipelines.mash.model import UNetN2N, bernoulli_mask, masked_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNetN2N(3, width)
    opt = torch.optim.Adam(net.parameters(), lr=4e-4)
    y, g = torch.rand(1, 3, size, size), torch.Generator().manual_seed(0)
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        m = bernoulli_mask(tuple(y.shape), 0.5, g)
        loss = masked_loss(net(m * y), y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    one = _steps(a.size, a.width, a.steps, 2)
    with mp.get_context("spawn").Pool(2) as pool:
        two = pool.starmap(_steps, [(a.size, a.width, a.steps, 1)] * 2)
    result = {"size": a.size, "width": a.width, "one_process_2_threads_s_per_step": round(one, 4),
              "two_processes_1_thread_s_per_step_each": [round(t, 4) for t in two],
              "effective_s_per_step_two_processes": round(max(two) / 2, 4)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
