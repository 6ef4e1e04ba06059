"""Pretrain and fine-tune phases, and the shared wrapper around the training helper's Trainer."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from search_client.config import SearchConfig
from search_client.pipeline.context import PipelineContext
from search_client.pipeline.distillation import KLDirection, KLReduction, distill_loss
from search_client.train import StepInputs, Trainer, TrainParts, seed_everything
from search_client.train.ddp import broadcast_object
from search_client.train.metrics_log import read_metrics

log = logging.getLogger(__name__)

# How the search's loss terms are written in the objective L + β·Lreg + γ·Laux + λ·Ld.
TERM_LABELS = {"task": "L", "latency": "β·Lreg", "aux": "γ·Laux", "distill": "λ·Ld"}


class PhaseInterrupted(RuntimeError):
    """A training phase stopped before its budget (``max_steps``); rerun to resume it."""


@dataclass
class TeacherDistill:
    """Ld term: the frozen teacher's main output constrains the student's main and aux outputs
    (KL direction and pixel reduction as in :mod:`search_client.pipeline.distillation`)."""

    teacher: nn.Module
    temperature: float = 1.0
    direction: KLDirection = "student-teacher"
    reduction: KLReduction = "sum"

    @classmethod
    def from_config(cls, teacher: nn.Module, search: SearchConfig) -> TeacherDistill:
        return cls(teacher, direction=search.distill_direction, reduction=search.distill_reduction)

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(inputs.images)  # eval mode: (B, K, H, W)
        return distill_loss(inputs.outputs["out"], inputs.outputs["aux"], target, self.temperature,
                            self.direction, self.reduction)


def train_phase(ctx: PipelineContext, phase: str, model: nn.Module, parts: TrainParts | None = None) -> dict:
    """Train ``model`` for the phase's budget in ``<run>/<phase>/``, resuming from its checkpoints.

    Returns ``{"model": model.pt path, "miou": float | None, "terms": {...}}``; raises
    :class:`PhaseInterrupted` when ``ctx.max_steps`` stopped it early.
    """
    folder = ctx.state.phase_dir(phase)
    total = ctx.iterations(phase)
    if total == 0:
        return _untrained(ctx, folder, model)
    train_set, val_set = ctx.datasets()
    trainer = Trainer(ctx.cfg, folder, model, train_set, val_set=val_set, class_names=ctx.class_names(),
                      parts=parts, dist=ctx.dist, iterations=total, progress=ctx.settings.progress)
    ctx.cache.setdefault("trained", {})[phase] = trainer.model  # this process's copy, for callers that look
    if trainer.resume():
        ctx.say(f"[{phase}] resuming at iteration {trainer.iteration}/{total}")
    result = trainer.fit(max_steps=ctx.max_steps)
    if trainer.iteration < total:
        raise PhaseInterrupted(f"{phase} stopped at iteration {trainer.iteration}/{total}; rerun to resume")
    evaluation = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").exists() else {}
    shares = phase_loss_shares(folder) if ctx.dist.is_main else {}
    shares = broadcast_object(ctx.dist, shares)
    if shares:
        shown = ", ".join(f"{TERM_LABELS.get(k, k)} {v:.3f}" for k, v in shares.items())
        ctx.say(f"[{phase}] share of the total loss, mean over the phase: {shown}")
    return {"model": str(folder / "model.pt"), "miou": evaluation.get("miou"), "terms": result["terms"],
            "iterations": total, "loss_shares": shares}


def phase_loss_shares(folder: Path) -> dict[str, float]:
    """Mean over the logged train rows of ``<phase>/metrics.jsonl`` of each term's share of the loss."""
    rows = read_metrics(folder)
    names = {k.removeprefix("share_") for r in rows for k in r if k.startswith("share_")}
    order = [n for n in TERM_LABELS if n in names] + sorted(names - set(TERM_LABELS))  # as the objective reads
    return {n: sum(r.get(f"share_{n}", 0.0) for r in rows) / len(rows) for n in order}


def _untrained(ctx: PipelineContext, folder: Path, model: nn.Module) -> dict:
    """A zero budget: keep the weights as they are (still evaluated, so the report has a number).
    Rank 0 writes and evaluates; every rank returns its result."""
    from torch.utils.data import DataLoader

    from search_client.eval import evaluate

    miou = None
    if ctx.dist.is_main:
        torch.save({"state_dict": model.state_dict()}, folder / "model.pt")
        _, val_set = ctx.datasets()
        miou = evaluate(model.to(ctx.device), DataLoader(val_set, batch_size=1), ctx.class_names(), ctx.device).miou
    miou = broadcast_object(ctx.dist, miou)
    return {"model": str(folder / "model.pt"), "miou": miou, "terms": {}, "iterations": 0}


def run_pretrain(ctx: PipelineContext) -> dict:
    """Train the supernet in its full mode (every mixed block runs LIR and MHSA): the teacher."""
    seed_everything(ctx.cfg.train.seed, ctx.cfg.train.deterministic)
    return train_phase(ctx, "pretrain", ctx.build_supernet())


def run_finetune(ctx: PipelineContext) -> dict:
    """Fine-tune the derived compact network with the boosters: aux heads (γ) and self-distillation
    (λ) from the pretrained supernet."""
    seed_everything(ctx.cfg.train.seed + 2, ctx.cfg.train.deterministic)
    compact = ctx.compact("derive").train()
    teacher = ctx.pretrained_supernet()
    parts = TrainParts(extra_terms={"distill": TeacherDistill.from_config(teacher, ctx.cfg.search)},
                       term_weights={"distill": ctx.cfg.search.distill_weight})
    return train_phase(ctx, "finetune", compact, parts)
