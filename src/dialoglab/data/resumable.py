"""A training loader that can resume mid-epoch: seeded shuffling whose state is (epoch, position).

Lightning saves `state_dict()` of every train loader that has one in each checkpoint and, when a
run restarts in the middle of an epoch, hands it back through `load_state_dict()` before the first
batch is drawn. The shuffled order depends only on (seed, epoch), so skipping the batches already
trained on yields exactly the batches an uninterrupted run would have seen next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class SkipsOnce:
    """`resume_at(epoch, position)`: the next pass over that epoch starts after its first
    `position` items (the sampler's `epoch` says which epoch a pass is)."""

    epoch: int
    _resume: tuple[int, int] | None = None  # (epoch, items to skip)

    def resume_at(self, epoch: int, position: int) -> None:
        self._resume = (int(epoch), max(0, int(position)))

    def skip_resumed(self, order: list[int]) -> Iterator[int]:
        """`order`, without the items a pending `resume_at` of this epoch skips (once)."""
        start = 0
        if self._resume is not None:
            epoch, position = self._resume
            self._resume = None
            if epoch == self.epoch:
                start = position
        yield from order[start:]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of range(n) that epoch `epoch` of a run seeded `seed` trains in."""
    generator = torch.Generator()
    generator.manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)
    return torch.randperm(n, generator=generator).tolist()


class ResumableShuffleSampler(SkipsOnce, Sampler[int]):
    """A permutation of range(n) drawn from (seed, epoch); `resume_at` skips its first items once."""

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.n = len(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch (also after the iterator exists, before use)."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        return epoch_order(self.n, self.seed, epoch)

    def __iter__(self) -> Iterator[int]:
        return self.skip_resumed(self.order(self.epoch))

    def __len__(self) -> int:
        return self.n


class ResumableDistributedSampler(SkipsOnce, DistributedSampler):
    """Rank r of W takes items r, r+W, r+2W, ... of the one-process (seed, epoch) order, and can
    skip the first items of an epoch once (each rank of a resumed DDP run continues its shard).

    With `batch_size` B per rank, step k's batches of all ranks together are exactly batch k of
    one process with batch size B*W (the last one too), so a W-rank run trains on what one
    process does. Ranks must draw equally many batches, so the order is padded (with its first
    items, as `DistributedSampler` pads) only when the last global batch has fewer than W items.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int = 1,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        n, world = len(dataset), num_replicas
        tail = n % (batch_size * world)
        self.total_size = n + (world - tail if 0 < tail < world else 0)
        self.num_samples = len(range(rank, self.total_size, world))

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        order = epoch_order(n, self.seed, self.epoch) if self.shuffle else list(range(n))
        while len(order) < self.total_size:  # pad: the last global batch is too short to split
            order += order[: self.total_size - len(order)]
        return self.skip_resumed(order[self.rank : self.total_size : self.num_replicas])


RESUMABLE_SAMPLERS = (ResumableShuffleSampler, ResumableDistributedSampler)


class ResumableDataLoader(DataLoader):
    """A DataLoader with `state_dict`/`load_state_dict`, which Lightning's fit loop checkpoints.

    `batches_done` tells how many batches of the current epoch were trained on (the loader itself
    cannot know: Lightning fetches ahead); the datamodule reads it from the trainer's progress.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        seed: int = 0,
        batches_done: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("shuffle", None)
        # Lightning re-creates loaders with a sampler of its own (overfit_batches, DDP): honour it.
        sampler = kwargs.pop("sampler", None)
        if sampler is None:
            sampler = ResumableShuffleSampler(dataset, seed)
        # The loader's own generator: creating an iterator then draws no number from the global
        # RNG, so dropout masks after a resume match those of an uninterrupted run.
        generator = torch.Generator()
        generator.manual_seed(int(seed) % 2**63)
        kwargs.setdefault("generator", generator)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            **kwargs,
        )
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        if not isinstance(sampler, RESUMABLE_SAMPLERS):
            return {}
        done = int(self.batches_done()) if self.batches_done is not None else 0
        return {
            "seed": sampler.seed,
            "epoch": sampler.epoch,
            "batches": done,
            "batch_size": int(self.batch_size or 1),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if not isinstance(sampler, RESUMABLE_SAMPLERS) or not state:
            return
        batch_size = int(state.get("batch_size", self.batch_size or 1))
        sampler.seed = int(state.get("seed", sampler.seed))  # the order the interrupted run used
        sampler.resume_at(state["epoch"], int(state["batches"]) * batch_size)


def train_batches_done(trainer: Any) -> int:
    """Batches of the current epoch a Lightning trainer has trained on (0 without a trainer)."""
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
