"""Run configs: presets hold the paper's settings; files override them; bad values are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search_client.config import ConfigError, RunConfig, build_config, load_config, save_config


def test_paper_preset() -> None:
    cfg = build_config("cityscapes-paper")
    assert (cfg.train.lr, cfg.train.iterations, cfg.train.batch_size, cfg.train.momentum) == (0.1, 160_000, 8, 0.9)
    assert cfg.data.crop == (512, 1024) and cfg.data.scales == (0.5, 0.75, 1.0, 2.0)
    assert (cfg.search.latency_weight, cfg.search.aux_weight, cfg.search.distill_weight) == (0.01, 1.0, 0.001)
    assert cfg.search.iterations == cfg.search.finetune_iterations == 40_000
    assert cfg.num_classes == 19 and cfg.train.poly_power == 0.9
    assert cfg.search.latency_size == (512, 1024)  # the paper measures and targets latency at 512x1024
    assert (cfg.search.distill_direction, cfg.search.distill_reduction) == ("student-teacher", "sum")


def test_synthetic_preset_is_small() -> None:
    cfg = build_config("synthetic-cpu")
    assert cfg.data.crop == (64, 128) and cfg.train.batch_size == 4 and cfg.train.iterations <= 500


def test_json_and_yaml_files_override_a_preset(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"preset": "cityscapes-paper", "train": {"lr": 0.01}}))
    (tmp_path / "b.yaml").write_text("preset: synthetic-cpu\ndata:\n  kind: voc\n  crop: [513, 513]\n")
    a, b = load_config(tmp_path / "a.json"), load_config(tmp_path / "b.yaml")
    assert a.train.lr == 0.01 and a.train.iterations == 160_000
    assert b.data.kind == "voc" and b.data.crop == (513, 513) and b.num_classes == 21


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = build_config("synthetic-cpu", {"model": {"head_mid": 64}})
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg


def test_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr"):
        build_config(None, {"train": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"data\.nonsense"):
        build_config(None, {"data": {"nonsense": 1}})
    with pytest.raises(ConfigError, match="unknown preset 'x'"):
        build_config("x")


def test_configs_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        RunConfig().train.lr = 1.0  # type: ignore[misc]
