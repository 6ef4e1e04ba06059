"""Training: one loop for pretraining, search and fine-tuning.

Pieces
  * ``losses``: :class:`OhemCrossEntropy` (keep pixels with loss > -log 0.7, at least 1/16 of the valid
    ones, 255 ignored) and ``segmentation_terms`` (``task`` on the main output, ``aux`` summed over the
    aux heads).
  * ``schedule``: linear warm-up then poly 0.9 (``warmup_poly``), a ``LambdaLR`` so it checkpoints.
  * ``sampler``: ``ResumableSampler``, a DistributedSampler that restarts mid-epoch and gives each sample
    its own augmentation seed; data order and crops are identical after a resume.
  * ``checkpoint``: atomic ``<run>/checkpoints/iter_*.pt`` with model, optimizers, schedulers, scaler,
    RNG of every rank, data position, hook states and the run config.
  * ``ddp``: torchrun environment -> process group (nccl on GPU, gloo on CPU). The model is wrapped with
    ``find_unused_parameters=True``: the supernet's architecture logits (and any path a sampled step
    skips) get no gradient. Keep the per-process batch >= 2 (BatchNorm after global pooling).
    ``torchrun --nproc-per-node N -m search_client.cli pretrain --preset cityscapes-paper ...``
  * ``metrics``: ``<run>/metrics.jsonl`` rows, TensorBoard when installed, tqdm or log lines.
  * ``loop``: :class:`Trainer`.

Extension points (how the search and fine-tune phases reuse the loop)
  * ``TrainParts.optimizers`` / ``schedulers``: named; e.g. ``{"model": SGD, "arch": Adam}``. Every
    optimizer steps once per iteration on the same total loss (override ``Trainer.train_step`` in a
    subclass to alternate). All of them are checkpointed under their names. When ``"model"`` is given
    without a scheduler the warm-up poly schedule is attached to it.
  * ``TrainParts.extra_terms``: ``{"distill": fn, "latency": fn}``, each ``fn(StepInputs) -> scalar``;
    ``StepInputs`` has the batch, the train-mode outputs and the iteration. ``term_weights`` gives each
    its weight (λ, β; missing = 1.0). ``task`` has weight 1 and ``aux`` weight γ = ``cfg.search.aux_weight``.
    A step returns every term by name plus ``loss`` and each weighted term's share of it
    (``share_<name>``); metrics log them all without code changes.
  * ``TrainParts.synced_outside_ddp``: names of parameters that a term computed outside the model's
    forward also reaches (the search's gates and path logits, through the latency regularizer). DDP
    ignores them (it refuses a gradient it did not see coming from the forward) and the trainer
    broadcasts rank 0's values once and averages their gradients over the ranks after each backward.
  * ``TrainParts.hooks``: objects with optional ``before_step(trainer)`` / ``after_step(trainer, terms)``
    (e.g. Gumbel temperature annealing, sampling the active subnet); a hook with ``name``,
    ``state_dict()`` and ``load_state_dict()`` is saved in every checkpoint.
  * ``Trainer(iterations=...)`` sets the phase's budget; ``Trainer.fit(max_steps)`` stops early
    without a checkpoint (what a kill does); ``Trainer.resume()`` continues from ``run_dir`` alone.
"""

from search_client.train.ddp import DistInfo, cleanup_distributed, init_distributed
from search_client.train.loop import StepInputs, Trainer, TrainParts, seed_everything
from search_client.train.losses import OhemCrossEntropy

__all__ = [
    "DistInfo", "OhemCrossEntropy", "StepInputs", "TrainParts", "Trainer", "cleanup_distributed",
    "init_distributed", "seed_everything",
]
