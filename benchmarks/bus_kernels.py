"""Speed of BUS's batched kernels on CPU: DECON (masks + loss, forward and backward) and the label-free mask
refinement vote, at the embedded size (batch 8, 64x64, 48-channel 16x16 features) and at the paper's
(batch 2, 512x512, 768-channel 128x128 features; DECON window 64).

    python benchmarks/bus_kernels.py
"""

from __future__ import annotations

import time

import torch

from cvpr24.pipelines.bus import model as M


def _time(fn, repeat: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    for name, B, H, C, win in (("embedded", 8, 64, 48, 8), ("paper", 2, 512, 768, 32)):
        labels = torch.randint(0, 13, (B, H, H), generator=g)
        labels[:, H // 4: H // 2, H // 4: H // 2] = 13
        feats = torch.randn(B, C, H // 4, H // 4, requires_grad=True, generator=g)
        segs = torch.randint(0, 200, (B, H, H), generator=g)

        def decon(feats=feats, labels=labels, win=win):
            M.decon_loss(feats, labels, win, g).backward()

        def vote(labels=labels, segs=segs):
            M.refine_with_masks(labels, segs)

        print(f"{name:9s} DECON fwd+bwd {_time(decon):8.2f} ms | refinement vote "
              f"{_time(vote):8.2f} ms  (B={B}, {H}x{H}, C={C})")


if __name__ == "__main__":
    main()
