"""DDP with 2 CPU processes (gloo) launched by torchrun: ranks stay in lockstep on disjoint data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_client.train.checkpoint import list_checkpoints, load_checkpoint
from search_client.train.metrics_log import read_metrics

HERE = Path(__file__).parent


@pytest.mark.slow
def test_two_cpu_processes_keep_identical_parameters(synthetic_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "ddp_worker.py"), str(synthetic_root), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    assert set(r0["shard"]).isdisjoint(r1["shard"]) and len(r0["shard"]) == len(r1["shard"]) == 4
    # the ranks started from different weights (seeded per rank); DDP broadcast rank 0's and averaged
    # gradients, so after 3 steps both hold exactly the same, changed, parameters
    assert not torch.equal(r0["init"]["head.weight"], r1["init"]["head.weight"])
    for name, p0 in r0["params"].items():
        assert torch.equal(p0, r1["params"][name]), name
    assert not torch.equal(r0["params"]["head.weight"], r0["init"]["head.weight"])

    run = tmp_path / "run"
    assert [i for i, _ in list_checkpoints(run)] == [2, 3]
    assert len(load_checkpoint(list_checkpoints(run)[-1][1])["rng"]) == 2  # every rank's RNG state
    assert [r["iter"] for r in read_metrics(run)] == [1, 2, 3]  # rank 0 alone writes metrics
