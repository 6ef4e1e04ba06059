"""OHEM cross-entropy on a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from search_client.train.losses import OhemCrossEntropy, segmentation_terms

# Two classes, four pixels: A (label 0, logits 2,0), B (label 0, logits 0,0), C (label 1, logits 0,3),
# D ignored (255) with a loss that would dominate if it were counted.
LOGITS = torch.tensor([[2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 5.0]]).reshape(1, 2, 1, 4)
LABELS = torch.tensor([[[0, 0, 1, 255]]])
LOSS_A, LOSS_B, LOSS_C = math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(-3))


def test_keeps_only_pixels_above_the_threshold() -> None:
    # -log(0.7) = 0.357: only B is hard; 1/16 of 3 valid pixels asks for at least 1 pixel
    assert OhemCrossEntropy(0.7, 1 / 16)(LOGITS, LABELS).item() == pytest.approx(LOSS_B, abs=1e-6)


def test_falls_back_to_the_largest_losses_when_too_few_are_hard() -> None:
    # at least 2 of 3 pixels: B and A (the two largest), never the ignored D
    assert OhemCrossEntropy(0.7, 2 / 3)(LOGITS, LABELS).item() == pytest.approx((LOSS_A + LOSS_B) / 2, abs=1e-6)
    assert OhemCrossEntropy(0.7, 1.0)(LOGITS, LABELS).item() == pytest.approx((LOSS_A + LOSS_B + LOSS_C) / 3, abs=1e-6)


def test_all_ignored_gives_zero_with_a_graph() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    loss = OhemCrossEntropy()(logits, torch.full((1, 1, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_low_resolution_logits_are_upsampled_and_aux_terms_summed() -> None:
    crit = OhemCrossEntropy(0.7, 1.0)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    out = torch.zeros(1, 3, 8, 8)
    aux = [torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2)]
    terms = segmentation_terms(crit, out, aux, labels)
    assert terms["task"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert terms["aux"].item() == pytest.approx(2 * math.log(3), abs=1e-6)
