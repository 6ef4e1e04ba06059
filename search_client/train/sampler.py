"""A DistributedSampler that can start mid-epoch and hands each sample its own augmentation seed."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler

from search_client.data.base import sample_seed


class ResumableSampler(DistributedSampler):
    """Shuffled shard of the dataset per epoch (same permutation on every rank, as DistributedSampler),
    skipping the first ``start`` indices of the shard, yielding ``(index, seed)`` keys.

    The position (epoch, start) is all a checkpoint needs to continue the data stream exactly.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start
