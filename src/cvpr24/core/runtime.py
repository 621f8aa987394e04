"""Numbers that do not depend on the machine: pinned CPU kernels, fixed threads, an environment fingerprint.

Why. PyTorch's CPU build picks its float kernels by the processor it finds: MKL (matrix products) runs an
AVX-512 code path on Intel and another on AMD, oneDNN (convolutions) JIT-compiles kernels for the widest
instruction set and blocks them by the cache sizes, and ATen's own vector kernels (reductions,
element-wise maths, softmax, norms) are compiled once per instruction set. Each choice sums in a different
order, the results differ in the last bits, and training amplifies the bits: on a fresh machine of our kind
the CMS ci run gave All/Old/New 29.9 / 44.9 / 22.9 for one row against the committed 29.1 / 26.9 / 30.1.

What. `pin_numerics()` runs when the `cvpr24` package is imported, before any torch kernel runs, and sets

- `ATEN_CPU_CAPABILITY=default`: ATen's portable kernels instead of the AVX2 / AVX-512 ones;
- `MKL_CBWR=COMPATIBLE`: MKL's conditional numerical reproducibility, one code path on every x86-64 CPU;
- `ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN kernels no wider than AVX2 (every machine of our kind has it);
- `OMP_NUM_THREADS` / `MKL_NUM_THREADS` to the project's thread count (reductions split by thread).

Measured (`benchmarks/README.md`, "Same numbers on any machine"): a small CNN's weights after 30 SGD steps
(conv, group norm, linear), a matrix product, multi-head attention, softmax, FFT, group norm's backward and
grid sampling were bit-identical between an AMD EPYC (AVX-512, torch 2.14.1) and an Intel Xeon (AVX-512 +
AMX, torch 2.11) with these pins, and differed without them (the matrix product and the CNN already
differed; `MKL_CBWR=AVX2` alone was not enough). The cost: one MASH U-Net training step takes about 10 %
more CPU time (6.8 -> 7.4 s for 40 steps at 128 x 128, one thread); the ci runs show no measurable change.

A user who wants the fastest kernels and accepts machine-dependent last bits sets `CVPR24_NUMERICS=native`
(e.g. on a GPU node, where these CPU pins do not matter). Every report records `fingerprint()`, so a
number that moved between machines is explained rather than silent.
"""

from __future__ import annotations

import hashlib
import os
import platform

PINNED = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
DEFAULT_THREADS = 2


def numerics_mode() -> str:
    return "native" if os.environ.get("CVPR24_NUMERICS", "pinned").lower() == "native" else "pinned"


def pin_numerics(threads: int | None = None) -> None:
    """Set the kernel pins and thread counts in the environment (a value the user set explicitly wins)."""
    if numerics_mode() == "pinned":
        for key, value in PINNED.items():
            os.environ.setdefault(key, value)
    n = str(int(threads or os.environ.get("CVPR24_THREADS", DEFAULT_THREADS)))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, n)


def apply_torch_runtime(threads: int, deterministic: bool = True) -> None:
    """Fix torch's intra-op threads and ask for deterministic algorithms (Kedro's RuntimeHooks call this)."""
    import torch

    torch.set_num_threads(int(threads))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _cpu() -> tuple[str, str, list[str]]:
    model, vendor, flags = platform.processor() or "unknown", "unknown", []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("unknown", "", platform.processor()):
                    model = value.strip()
                elif key == "vendor_id":
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, vendor, flags


def fingerprint() -> dict[str, object]:
    """What produced a set of numbers: CPU, instruction sets, library builds, pins and threads."""
    import numpy as np
    import torch

    model, vendor, flags = _cpu()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    config = torch.__config__.show()
    mkl = next((ln.strip(" -") for ln in config.splitlines() if "Math Kernel Library" in ln), "none")
    dnn = next((ln.strip(" -") for ln in config.splitlines() if "MKL-DNN" in ln or "oneDNN" in ln), "none")
    return {
        "cpu": model,
        "cpu_vendor": vendor,
        "cpu_isa": " ".join(isa),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mkl": mkl,
        "onednn": dnn,
        "numerics": numerics_mode(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "pins": {k: os.environ.get(k, "") for k in PINNED},
        "threads": torch.get_num_threads(),
    }


def numerics_key(fp: dict[str, object] | None = None) -> str:
    """A short key of what decides the float results: equal keys should give bit-equal results."""
    fp = fp or fingerprint()
    parts = [fp["machine"], fp["torch"], fp["numerics"], fp["aten_capability"], fp["threads"], sorted(fp["pins"].items())]
    if fp["numerics"] != "pinned":
        parts += [fp["cpu"], fp["cpu_isa"]]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def check_pinned() -> str | None:
    """A warning text when the pins could not take effect (torch ran a kernel before cvpr24 was imported)."""
    if numerics_mode() != "pinned":
        return None
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    if cap.upper() != "DEFAULT":
        return (f"ATen runs its {cap} kernels although CVPR24_NUMERICS=pinned: torch ran a kernel before the "
                "cvpr24 package was imported, so results may differ from other machines in the last bits. "
                "Import cvpr24 first, or set ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE "
                "ONEDNN_MAX_CPU_ISA=AVX2 in the environment.")
    return None
