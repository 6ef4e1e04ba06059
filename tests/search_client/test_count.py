"""Counting the way the paper's Table 1 does: eval-mode inference graph, aux heads excluded."""

from __future__ import annotations

import json

import pytest
import torch

from search_client.count import count_main, count_model, count_module
from search_client.models import build_model


def test_bisenetv2_matches_reference_counts_at_512x1024() -> None:
    counts = count_model("bisenetv2", 512, 1024)
    assert counts["gmacs"] == pytest.approx(24.60, rel=0.03)
    assert counts["params_m"] == pytest.approx(3.36, rel=0.03)


def test_supernet_matches_paper_size_at_512x1024() -> None:
    counts = count_model("supernet", 512, 1024)
    assert counts["gmacs"] == pytest.approx(136.0, rel=0.05)
    assert counts["params_m"] == pytest.approx(24.43, rel=0.05)


def test_meta_device_count_equals_a_real_forward_count() -> None:
    torch.manual_seed(0)
    real = count_module(build_model("bisenetv2"), 64, 128)
    assert count_model("bisenetv2", 64, 128) == pytest.approx(real)


def test_aux_heads_are_not_counted() -> None:
    model = build_model("bisenetv2")
    aux = sum(p.numel() for p in model.aux_heads.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert count_model("bisenetv2", 64, 128)["params_m"] * 1e6 == total - aux


def test_count_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert count_main(["--arch", "bisenetv2", "--height", "256", "--width", "512", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arch"] == "bisenetv2" and out["gmacs"] == pytest.approx(24.60 / 4, rel=0.01)


def test_count_main_names_the_known_archs_on_a_typo(capsys: pytest.CaptureFixture[str]) -> None:
    assert count_main(["--arch", "bisenet"]) == 2
    err = capsys.readouterr().err
    assert "bisenetv2" in err and "supernet" in err and len(err.strip().splitlines()) == 1
