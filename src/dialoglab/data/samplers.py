"""Samplers for data-parallel runs: training shards may pad, evaluation shards never do."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r of W takes examples r, r+W, r+2W, ... in order: every example exactly once overall.

    torch's `DistributedSampler` pads the last shard with repeated examples so every rank has the
    same number of batches; for validation and test that counts some examples twice, so metrics of
    a 2-process run would differ from a 1-process run. Evaluation needs no equal shard sizes (no
    gradient all-reduce), so this sampler does not pad. It subclasses `DistributedSampler` so that
    Lightning leaves it in place even when `use_distributed_sampler=True`.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def world(trainer: object | None = None) -> tuple[int, int]:
    """(world size, global rank) from the attached Lightning trainer, else torch.distributed."""
    if trainer is not None:
        return int(getattr(trainer, "world_size", 1)), int(getattr(trainer, "global_rank", 0))
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
