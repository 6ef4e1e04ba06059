"""BiSeNetV2 baseline: the model contract and its layer layout."""

from __future__ import annotations

import torch

from search_client.models import build_model


def test_train_mode_returns_main_and_four_aux_logits_at_input_size() -> None:
    model = build_model("bisenetv2", num_classes=5).train()
    out = model(torch.randn(2, 3, 64, 128))
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 5, 64, 128)
    assert [a.shape for a in out["aux"]] == [(2, 5, 64, 128)] * 4


def test_eval_mode_returns_main_logits_without_running_aux_heads() -> None:
    model = build_model("bisenetv2", num_classes=5).eval()
    calls = []
    for head in model.aux_heads:
        head.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 128))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5, 64, 128)
    assert calls == []


def test_input_not_divisible_by_32_still_gives_input_sized_logits() -> None:
    model = build_model("bisenetv2", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 72, 100)).shape == (1, 3, 72, 100)


def test_layout_follows_the_reference() -> None:
    model = build_model("bisenetv2")
    detail = [(m[0].in_channels, m[0].out_channels, m[0].stride[0]) for m in model.detail]
    assert detail == [(3, 64, 2), (64, 64, 1), (64, 64, 2), (64, 64, 1), (64, 64, 1),
                      (64, 128, 2), (128, 128, 1), (128, 128, 1)]  # fmt: skip
    assert [len(s) for s in model.stages] == [2, 2, 4]
    assert model.stages[0][0].dw1[0].groups == 16 and model.stages[0][0].dw1[0].out_channels == 96
    assert model.head.conv[0].out_channels == 1024 and model.head.scale == 8
