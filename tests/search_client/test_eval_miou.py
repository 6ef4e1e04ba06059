"""mIoU from a confusion matrix, against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from search_client.eval import EvalResult, confusion_matrix, evaluate, iou_from_confusion


def test_hand_computed_case() -> None:
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    conf = confusion_matrix(pred, label, 3)
    # rows = truth: class 0 -> (0, 1); class 1 -> (1, 1, 2); class 2 -> (2, 0); the 255 pixel is skipped
    assert conf.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(3+3-2) = 1/2, IoU2 = 1/(2+2-1) = 1/3
    assert iou_from_confusion(conf) == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    result = EvalResult(conf.numpy(), ("a", "b", "c"))
    assert result.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert result.pixel_accuracy == pytest.approx(4 / 7)
    assert "mIoU" in result.table() and "50.0" in result.table()


def test_absent_class_is_left_out_of_the_mean() -> None:
    conf = np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]])
    result = EvalResult(conf, ("a", "b", "c"))
    assert np.isnan(result.ious[2])
    assert result.miou == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert result.as_dict()["iou"]["c"] is None


class _Fixed(nn.Module):
    """Eval-mode model predicting class 1 on the left half and 0 on the right, at half resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = torch.zeros(b, 2, h // 2, w // 2)
        logits[:, 1, :, : w // 4] = 1.0
        logits[:, 0, :, w // 4 :] = 1.0
        return logits


def test_evaluate_resizes_logits_to_the_label() -> None:
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[:, :, :4] = 1
    label[:, 0, 0] = 255
    result = evaluate(_Fixed(), [(torch.zeros(1, 3, 8, 8), label)], ("x", "y"))
    assert result.miou == pytest.approx(1.0)
    assert result.confusion.sum() == 63
