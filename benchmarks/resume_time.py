"""How long a resume takes: a training run (core.training.train_loop, checkpoint every N steps) is killed
with SIGKILL part-way, then started again with the same command. Measures the time from the restart to the
first resumed step (process start, imports, checkpoint verification and load), the steps redone since the
last checkpoint, and the total time against an uninterrupted run; checks the final weights are identical.

    python benchmarks/resume_time.py [--steps 300] [--every 50] [--kill-at 180]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r'''
import sys, time, torch
t0 = time.perf_counter()
from cvpr24.core.training import Checkpointer, TrainState, train_loop
torch.set_num_threads(2)
out, steps, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.Conv2d(32, 3, 3, padding=1))
opt = torch.optim.Adam(net.parameters(), 1e-3)
g = torch.Generator().manual_seed(1)
x = torch.randn(4, 3, 64, 64)
first = []
def step(i):
    if not first:
        first.append(i)
        print(f"FIRST {i} {time.perf_counter() - t0:.3f}", flush=True)
    noise = torch.randn(x.shape, generator=g)
    loss = ((net(x + 0.1 * noise) - x) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    print(f"STEP {i}", flush=True)
    return {"loss": float(loss.detach())}
train_loop(model=net, optimizer=opt, step_fn=step, n_steps=steps, state=TrainState(generators={"g": g}),
           checkpointer=Checkpointer(out + "/ck"), every=every, progress=False)
torch.save(net.state_dict(), out + "/final.pt")
print(f"DONE {time.perf_counter() - t0:.3f}", flush=True)
'''


def run(out: Path, steps: int, every: int, kill_at: int | None = None) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(out), str(steps), str(every)], stdout=subprocess.PIPE,
                         text=True, env=env)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if kill_at is not None and line.startswith(f"STEP {kill_at}"):
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait()
    return time.perf_counter() - t, "".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--kill-at", type=int, default=180)
    a = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        ref, killed = Path(tmp) / "ref", Path(tmp) / "killed"
        ref.mkdir(), killed.mkdir()
        full_s, _ = run(ref, a.steps, a.every)
        before_s, _ = run(killed, a.steps, a.every, kill_at=a.kill_at)
        after_s, log = run(killed, a.steps, a.every)
        first = next(line.split() for line in log.splitlines() if line.startswith("FIRST"))
        same = all(torch.equal(u, v) for u, v in zip(torch.load(ref / "final.pt", weights_only=True).values(),
                                                     torch.load(killed / "final.pt", weights_only=True).values(),
                                                     strict=True))
        result = {"steps": a.steps, "checkpoint_every": a.every, "killed_after_step": a.kill_at,
                  "uninterrupted_s": round(full_s, 2), "killed_run_s": round(before_s, 2),
                  "resumed_run_s": round(after_s, 2), "resumed_at_step": int(first[1]),
                  "restart_to_first_resumed_step_s": float(first[2]),
                  "steps_redone": a.kill_at + 1 - int(first[1]), "identical_weights": same}
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
