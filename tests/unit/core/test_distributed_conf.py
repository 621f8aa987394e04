"""The topology of data-parallel runs comes from conf (`runtime.distributed`): its parsing and checks, and
a real two-node job on loopback: two separate "node" processes, one worker each, meet at the rendezvous
endpoint the conf names and train to the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cvpr24.core import distributed as D
from tests.unit.core.test_distributed import fit_linear

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _reset():
    D.configure(None)
    yield
    D.configure(None)


def test_base_conf_block_parses_to_single_node_defaults():
    params = yaml.safe_load((REPO / "conf" / "base" / "parameters.yml").read_text())
    s = D.settings_from_params(params["runtime"])
    assert s == D.DistributedSettings()  # one node, loopback, backend chosen by the hardware
    assert s.nnodes == 1 and s.rdzv_endpoint is None


def test_settings_reject_what_would_hang_or_misroute():
    with pytest.raises(ValueError, match="no rdzv_endpoint"):
        D.settings_from_params({"distributed": {"nnodes": 2}})
    with pytest.raises(ValueError, match="host:port"):
        D.settings_from_params({"nnodes": 2, "rdzv_endpoint": "node0"})
    with pytest.raises(ValueError, match="unknown keys"):
        D.settings_from_params({"nodes": 2})
    with pytest.raises(ValueError, match="gloo, nccl"):
        D.settings_from_params({"backend": "mpi"})


def test_every_node_derives_the_same_job_id():
    a = D.settings_from_params({"nnodes": 2, "rdzv_endpoint": "node0.lab:29400"})
    b = D.settings_from_params({"nnodes": 2, "rdzv_endpoint": "node0.lab:29400"})
    assert D._run_id(a, 2) == D._run_id(b, 2)
    assert D._run_id(D.DistributedSettings(), 1) != D._run_id(D.DistributedSettings(), 1)
    assert D._run_id(D.settings_from_params({"rdzv_id": "exp7"}), 1) == "exp7"


def test_hook_configures_launch_from_the_run_conf():
    from cvpr24.hooks import DistributedHooks

    class Ctx:
        params = {"runtime": {"distributed": {"nnodes": 2, "rdzv_endpoint": "10.0.0.1:29400",
                                              "timeout_s": 30}}}

    DistributedHooks().after_context_created(Ctx())
    assert D.configured().nnodes == 2 and D.configured().rdzv_endpoint == "10.0.0.1:29400"
    assert D.configured().timeout_s == 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE = """
import sys, torch
from cvpr24.core import distributed as D
from tests.unit.core.test_distributed import fit_linear
runtime = {{"distributed": {{"nnodes": 2, "rdzv_endpoint": "127.0.0.1:{port}", "local_addr": "127.0.0.1",
                           "backend": "gloo", "timeout_s": 60}}}}
out = D.launch_from_params(fit_linear, nprocs=1, runtime=runtime, threads_per_worker=1)
if out is not None:
    torch.save(out, sys.argv[1])
"""


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"node{i}.pt" for i in range(2)]
    nodes = [subprocess.Popen([sys.executable, "-c", NODE.format(port=port), str(o)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for o in outs]
    logs = [p.communicate(timeout=180)[0] for p in nodes]
    for p, text in zip(nodes, logs, strict=True):
        assert p.returncode == 0, text[-3000:]
    written = [o for o in outs if o.exists()]
    assert len(written) == 1, "exactly one node (the one holding rank 0) returns the weights"
    parallel = torch.load(written[0], weights_only=True)
    single = D.launch(fit_linear, nprocs=1)
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-5, atol=1e-6)
