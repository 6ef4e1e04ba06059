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


def test_smallest_derivable_network_reaches_below_the_paper_s_smallest(capsys: pytest.CaptureFixture[str]) -> None:
    """Every mixed block skipped, every gate at its floor: <= 4.5 GMACs at 512x1024 (RTSeg-S is 5.7)."""
    assert count_main(["--arch", "supernet", "--smallest", "--height", "512", "--width", "1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["smallest"] is True and 0.1 < out["gmacs"] <= 4.5
    assert out["params_m"] < 0.05 * count_model("supernet", 512, 1024)["params_m"]


def test_smallest_spec_skips_every_block_and_keeps_each_gate_floor() -> None:
    from search_client.count import smallest_spec

    tiny = dict(detail_widths=(40, 40, 40), stem=40, stage_widths=(40, 40, 40), depths=(1, 1, 1), heads=(2, 2, 4),
                mhsa_mid=(16, 16, 32), head_mid=80, aux_mid=8)  # fmt: skip
    spec = smallest_spec(5, tiny)
    assert all(st["blocks"] == [] for st in spec["stages"])
    assert [c["cout"] for c in spec["detail"]] == [4] * 8  # max(4, 10 % of 40)
    assert spec["head_mid"] == 8 and spec["stem"] == 4


def test_smallest_needs_the_supernet(capsys: pytest.CaptureFixture[str]) -> None:
    assert count_main(["--arch", "bisenetv2", "--smallest"]) == 2
    assert "--arch supernet" in capsys.readouterr().err
