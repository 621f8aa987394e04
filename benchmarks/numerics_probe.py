"""Do two machines compute the same floats? Run this on each and compare the printed hashes.

Each variant runs in a fresh process with its own kernel pins (they must be set before torch runs a
kernel): the default kernels, and the project's pins (`cvpr24.core.runtime.PINNED`). Printed per variant:
short sha256 hashes of a small CNN's weights after 30 SGD steps (conv, group norm, linear), of one matrix
product, of multi-head attention (output and weight gradient), softmax, FFT, group norm's backward and
grid sampling, plus the CPU seconds of the CNN steps. Equal hashes on two machines = bit-identical results.

    python benchmarks/numerics_probe.py            # prints one JSON line per variant
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

PINNED = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
VARIANTS = {"native": {"CVPR24_NUMERICS": "native"}, "pinned": PINNED}


def _h(t) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:12]


def probe() -> dict[str, object]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)

    def r(*shape):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    x, y = r(64, 3, 32, 32), torch.from_numpy(rng.integers(0, 10, 64))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(r(*p.shape) * 0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    start = time.process_time()
    for _ in range(30):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out: dict[str, object] = {"cnn_sgd": _h(torch.cat([p.flatten() for p in net.parameters()])),
                              "cnn_cpu_s": round(time.process_time() - start, 2)}
    a = r(300, 517)
    out["matmul"] = _h(a @ a.T)
    tok = r(4, 64, 48)
    attn = torch.nn.MultiheadAttention(48, 4, batch_first=True)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(r(*p.shape) * 0.1)
    o, _ = attn(tok, tok, tok)
    o.sum().backward()
    out["attention"] = _h(o) + _h(attn.in_proj_weight.grad)
    out["softmax"] = _h(torch.log_softmax(r(64, 1000), 1))
    out["fft"] = _h(torch.fft.rfft2(r(4, 64, 64)).abs())
    g = r(4, 32, 16, 16).requires_grad_()
    F.group_norm(g, 8).pow(2).sum().backward()
    out["groupnorm_grad"] = _h(g.grad)
    out["grid_sample"] = _h(F.grid_sample(r(2, 3, 32, 32), r(2, 16, 16, 2).tanh(), align_corners=False))
    out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    out["torch"] = torch.__version__
    return out


def main() -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(json.dumps({"cpu": cpu}))
    for name, env in VARIANTS.items():
        base = {k: v for k, v in os.environ.items() if k not in PINNED}
        proc = subprocess.run([sys.executable, __file__, "--child"], env={**base, "OMP_NUM_THREADS": "2", **env},
                              capture_output=True, text=True, check=True)
        print(json.dumps({"variant": name, **json.loads(proc.stdout)}))


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(probe()))
    else:
        main()
