"""The run's device (--device auto|cpu|cuda) and the resolution its latency is targeted at."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_client.cli import build_parser, main
from search_client.pipeline.commands import COMMANDS, settings_from_args
from search_client.train.ddp import resolve_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")


def _settings(*argv: str):
    return settings_from_args(build_parser(COMMANDS).parse_args(["run", *argv]))[0]


def test_the_paper_preset_targets_latency_at_512x1024_unless_told_otherwise():
    assert _settings("--preset", "cityscapes-paper").latency_size == (512, 1024)
    assert _settings("--preset", "synthetic-cpu").latency_size == (256, 512)
    told = _settings("--preset", "cityscapes-paper", "--latency-size", "256x512")
    assert told.latency_size == (256, 512)


def test_device_defaults_to_auto_which_takes_cuda_when_there_is_one():
    assert _settings().device == "auto"
    assert _settings("--device", "cpu").device == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@NO_CUDA
@pytest.mark.parametrize("command", ["run", "search", "pretrain", "eval"])
def test_cuda_without_a_gpu_exits_2_with_one_line_and_writes_nothing(command, tmp_path: Path, capsys):
    where = ["--run-dir", str(tmp_path / "r")] if command in ("pretrain", "eval") else ["--runs", str(tmp_path)]
    assert main([command, "--device", "cuda", *where]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA device is available" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "search").exists()
