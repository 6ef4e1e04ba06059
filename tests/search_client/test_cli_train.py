"""rtseg-search: make-synthetic -> pretrain (stopped, resumed) -> eval, count, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_client.cli import all_commands, main
from search_client.train.metrics_log import read_metrics

TINY = ["--preset", "synthetic-cpu", "--arch", "bisenetv2", "--iterations", "4", "--batch-size", "2",
        "--set", "data.crop=[32,64]", "--set", "data.eval_size=null", "--set", "train.checkpoint_every=2",
        "--set", "train.log_every=1", "--set", "train.deterministic=true", "--set", "train.warmup_iters=1", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synthetic"
    assert main(["make-synthetic", "--out", str(out), "--train", "4", "--val", "2", "--height", "48",
                 "--width", "96", "--seed", "5"]) == 0
    return out


def _pretrain(args: list[str]) -> int:
    sub, rest = args[0], args[1:]
    return main([sub, *rest])


def test_make_synthetic_writes_the_cityscapes_layout(dataset: Path) -> None:
    assert len(list((dataset / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))) == 4
    assert len(list((dataset / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))) == 2
    assert json.loads((dataset / "synthetic.json").read_text())["height"] == 48


def test_pretrain_stop_resume_eval(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _pretrain(["pretrain", *TINY, "--data-root", str(dataset), "--run-dir", str(straight)]) == 0
    assert _pretrain(["pretrain", *TINY, "--data-root", str(dataset), "--run-dir", str(killed), "--max-steps", "3"]) == 0
    assert not (killed / "model.pt").exists()
    # a second start without --resume would clobber the run: refused
    assert _pretrain(["pretrain", *TINY, "--data-root", str(dataset), "--run-dir", str(killed)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # the run folder alone is enough to continue
    assert main(["pretrain", "--resume", "--run-dir", str(killed), "-q"]) == 0
    losses = [(r["iter"], r["loss"]) for r in read_metrics(killed)]
    assert losses == [(r["iter"], r["loss"]) for r in read_metrics(straight)] and len(losses) == 4

    capsys.readouterr()
    assert main(["eval", "--run-dir", str(killed), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved = json.loads((killed / "eval.json").read_text())
    assert result["miou"] == pytest.approx(saved["miou"]) and set(result["iou"]) >= {"road", "sky", "car"}
    assert main(["eval", "--run-dir", str(killed), "-q"]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_eval_refuses_weights_of_another_architecture(dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    import torch

    from search_client.config import build_config

    cfg = build_config("synthetic-cpu", {"arch": "bisenetv2", "data": {"root": str(dataset)}})
    bad = tmp_path / "model.pt"
    torch.save({"config": cfg.model_dump(mode="json"), "state_dict": {"nonsense.weight": torch.zeros(1)}}, bad)
    assert main(["eval", "--checkpoint", str(bad), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit arch 'bisenetv2'" in err and len(err.splitlines()) == 1


def test_count_prints_params_and_gmacs(capsys: pytest.CaptureFixture) -> None:
    assert main(["count", "--arch", "bisenetv2", "--height", "512", "--width", "1024", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["params_m"] == pytest.approx(3.36, rel=0.03) and figures["gmacs"] == pytest.approx(24.6, rel=0.03)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--preset", "synthetic-cpu", "--data-root", "/nonexistent/x", "--run-dir", "/tmp/unused-run"],
         "Cityscapes root not found: /nonexistent/x"),
        (["pretrain", "--resume"], "--resume needs --run-dir"),
        (["pretrain", "--preset", "synthetic-cpu", "--set", "train.lr=-1"], "train.lr"),
        (["pretrain", "--preset", "synthetic-cpu", "--set", "lr"], "--set wants KEY=VALUE"),
        (["eval", "--run-dir", "/nonexistent/run"], "has neither model.pt nor checkpoints"),
        (["count", "--arch", "nope"], "unknown arch 'nope'"),
        (["make-synthetic", "--out", "/tmp/unused-syn", "--height", "8"], "at least 32"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_every_subcommand_answers_help(capsys: pytest.CaptureFixture) -> None:
    for name in all_commands():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"rtseg-search {name}" in capsys.readouterr().out


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("rtseg-search")
    proc = subprocess.run([str(exe), "count", "--arch", "bisenetv2", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["gmacs"] > 20
