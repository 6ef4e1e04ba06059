"""Search and fine-tune as one DDP job of 2 CPU processes (gloo, launched by torchrun): after steps on
different data, every rank holds the same architecture parameters, gates and weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_pipeline_worker.py")


@pytest.fixture(scope="module")
def ranks(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("ddp-pipeline")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(tiny_data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["phases"] == r1["phases"] and r0["phases"]["finetune"] and not r0["phases"]["eval"]
    return r0, r1


def _arch(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: p for n, p in params.items() if "arch_logits" in n or "gate" in n}


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes starting the 2-process job (about 70 s alone on 2 cores)
def test_search_keeps_architecture_parameters_and_gates_identical_across_ranks(ranks):
    r0, r1 = ranks
    a0, a1 = _arch(r0["search"]), _arch(r1["search"])
    assert any("arch_logits" in n for n in a0) and any("gate" in n for n in a0)
    assert a0.keys() == a1.keys() == r0["search_start"].keys()
    for name, p0 in a0.items():
        assert torch.equal(p0, a1[name]), name
    moved = [n for n, p in a0.items() if not torch.equal(p, r0["search_start"][n])]
    assert len(moved) == len(a0), f"unchanged by 3 steps: {sorted(set(a0) - set(moved))[:5]}"
    for name, p0 in r0["search"].items():  # and the weights DDP averages
        assert torch.equal(p0, r1["search"][name]), name


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_finetune_keeps_the_derived_network_identical_across_ranks(ranks):
    r0, r1 = ranks
    assert r0["finetune"].keys() == r0["derived"].keys() and len(r0["finetune"]) > 20
    for name, p0 in r0["finetune"].items():
        assert torch.equal(p0, r1["finetune"][name]), name
    changed = [n for n, p in r0["finetune"].items() if not torch.equal(p, r0["derived"][n])]
    assert len(changed) > len(r0["finetune"]) // 2
