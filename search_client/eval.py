"""Single-scale evaluation: confusion matrix over the valid pixels (255 skipped), per-class IoU, mIoU.

The image is fed at the configured inference resolution; the logits are resized back to the label's
size before the argmax, so the score is at the labels' own resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_client.config import IGNORE_INDEX

log = logging.getLogger(__name__)


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; pixels labelled 255 (or >= K) skipped."""
    valid = (label != IGNORE_INDEX) & (label >= 0) & (label < num_classes)
    idx = label[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def iou_from_confusion(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both labels and predictions."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


@dataclass(frozen=True)
class EvalResult:
    confusion: np.ndarray
    class_names: tuple[str, ...]

    @property
    def ious(self) -> np.ndarray:
        return iou_from_confusion(self.confusion)

    @property
    def miou(self) -> float:
        """Mean over the classes that occur (in labels or predictions); 0 when none does."""
        ious = self.ious
        return float(np.nanmean(ious)) if np.isfinite(ious).any() else 0.0

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0

    def as_dict(self) -> dict:
        ious = {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(self.class_names, self.ious, strict=True)}
        return {"miou": round(self.miou, 6), "pixel_accuracy": round(self.pixel_accuracy, 6), "iou": ious}

    def table(self) -> str:
        """Per-class IoU table (percent) with the mean on the last line."""
        width = max(len(n) for n in self.class_names)
        lines = [f"{'class':<{width}}  IoU %"]
        for name, iou in zip(self.class_names, self.ious, strict=True):
            lines.append(f"{name:<{width}}  {'  n/a' if np.isnan(iou) else f'{100 * iou:5.1f}'}")
        lines.append(f"{'mIoU':<{width}}  {100 * self.miou:5.1f}")
        return "\n".join(lines)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) class ids at ``out_size`` from eval-mode logits."""
    logits = model(images)
    if isinstance(logits, dict):
        logits = logits["out"]
    if logits.shape[-2:] != tuple(out_size):
        logits = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> EvalResult:
    """mIoU of ``model`` (put in eval mode, restored afterwards) over ``(image, label)`` batches."""
    k = len(class_names)
    conf = torch.zeros(k, k, dtype=torch.int64)
    was_training = model.training
    model.eval()
    try:
        for i, (images, labels) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            pred = predict(model, images.to(device), tuple(labels.shape[-2:]))
            conf += confusion_matrix(pred, labels.to(pred.device), k)
    finally:
        model.train(was_training)
    return EvalResult(conf.numpy(), tuple(class_names))
