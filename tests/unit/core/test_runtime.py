"""Machine-independent numerics: the pins take effect on import, the opt-out works, the fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cvpr24.core import runtime

PROBE = ("import json, cvpr24, torch; x = torch.ones(3) @ torch.ones(3); "
         "print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(), "
         "'env': {k: __import__('os').environ.get(k) for k in ('ATEN_CPU_CAPABILITY', 'MKL_CBWR', "
         "'ONEDNN_MAX_CPU_ISA', 'OMP_NUM_THREADS')}}))")


def _run(extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in (*runtime.PINNED, "CVPR24_NUMERICS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_cvpr24_pins_the_portable_cpu_kernels_before_torch_runs_any():
    got = _run({})
    assert got["cap"] == "DEFAULT"
    assert got["env"] == {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
                          "OMP_NUM_THREADS": "2"}


def test_native_numerics_opt_out_leaves_the_kernels_alone():
    got = _run({"CVPR24_NUMERICS": "native"})
    assert got["env"]["MKL_CBWR"] is None and got["env"]["ATEN_CPU_CAPABILITY"] is None


def test_fingerprint_and_key():
    fp = runtime.fingerprint()
    for key in ("cpu", "cpu_vendor", "cpu_isa", "torch", "mkl", "onednn", "numerics", "aten_capability", "pins",
                "threads"):
        assert key in fp
    assert runtime.numerics_key(fp) == runtime.numerics_key(dict(fp))
    # with pinned numerics the CPU model does not enter the key; with native numerics it does
    other_cpu = {**fp, "cpu": "some other CPU"}
    assert (runtime.numerics_key(other_cpu) == runtime.numerics_key(fp)) == (fp["numerics"] == "pinned")
    assert runtime.numerics_key({**fp, "torch": "0.0"}) != runtime.numerics_key(fp)


def test_the_pins_are_active_in_this_test_process():
    assert runtime.check_pinned() is None
