"""Length-bucketed batching: batches of similar lengths, so less padding is computed.

`BucketBatchSampler` takes the shuffled index stream of a sampler, cuts it into pools of
`pool_batches` batches, sorts each pool by length (stable, so ties keep the random order), cuts it
into batches, and shuffles the order of the batches within the pool. Every index appears exactly
once per epoch, and which examples share a pool is as random as the sampler, so batches still mix
the corpus; they are only grouped by length.

Reproducible from the seed: with a sampler that has `seed` and `epoch` (the datamodule's
`ResumableShuffleSampler`, torch's `DistributedSampler`) the batch order depends only on those;
with any other sampler one number per epoch is drawn from `generator` (default: torch's global
RNG, seeded by `seed_everything`), as `RandomSampler` does.

It subclasses `BatchSampler` and takes `sampler` first, so Lightning can swap in a distributed
sampler (each rank then buckets its own shard), and Lightning's `set_epoch` reaches the sampler
through `batch_sampler.sampler`. `BucketDataLoader` adds the `state_dict`/`load_state_dict` that
Lightning checkpoints, so a run restarted mid-epoch continues with the batches it had not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler


class BucketBatchSampler(BatchSampler):
    """Batches of indices from `sampler`, sorted by `lengths[i]` within pools of batches.

    `lengths` holds one integer sort key per dataset index. The number of batches equals
    `BatchSampler`'s for the same sampler: only the last pool can end in a partial batch, which
    `drop_last` drops.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        lengths: Sequence[int] | torch.Tensor,
        batch_size: int,
        drop_last: bool = False,
        pool_batches: int = 50,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(pool_batches, bool) or not isinstance(pool_batches, int) or pool_batches < 1:
            raise ValueError(f"pool_batches must be a positive integer, got {pool_batches!r}")
        super().__init__(sampler, batch_size, drop_last)  # type: ignore[arg-type]
        if isinstance(lengths, torch.Tensor):
            self.lengths: list[int] = lengths.tolist()
        else:
            self.lengths = [int(n) for n in lengths]
        self.pool_batches = pool_batches
        self.generator = generator
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip)

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def _epoch_seed(self) -> int:
        seed = getattr(self.sampler, "seed", None)
        if seed is not None and hasattr(self.sampler, "epoch"):
            return (int(seed) * 1_000_003 + self.epoch) * 2_654_435_761 % 2**63
        return int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())

    def _pool_batches(self, pool: list[int], seed: int) -> list[list[int]]:
        ordered = sorted(pool, key=self.lengths.__getitem__)
        size = self.batch_size
        batches = [ordered[k : k + size] for k in range(0, len(ordered), size)]
        partial = batches.pop() if batches and len(batches[-1]) < size else None
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
        batches = [batches[k] for k in order.tolist()]
        if partial is not None and not self.drop_last:
            batches.append(partial)  # as in BatchSampler, only the very last batch is short
        return batches

    def epoch_batches(self) -> list[list[int]]:
        """This epoch's batches, in order (draws the epoch's number when the sampler has no seed)."""
        seed = self._epoch_seed()
        pool_size = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        pool: list[int] = []
        for index in self.sampler:
            pool.append(int(index))
            if len(pool) == pool_size:
                batches += self._pool_batches(pool, (seed + len(batches)) % 2**63)
                pool = []
        if pool:
            batches += self._pool_batches(pool, (seed + len(batches)) % 2**63)
        return batches

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next iteration over `epoch` starts after its first `batches` batches."""
        self._resume = (int(epoch), max(0, int(batches)))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        start = 0
        if self._resume is not None:
            epoch, skip = self._resume
            self._resume = None
            if epoch == self.epoch:
                start = skip
        yield from batches[start:]


class BucketDataLoader(DataLoader):
    """A DataLoader over a `BucketBatchSampler` that Lightning can checkpoint and resume mid-epoch.

    `batches_done` tells how many batches of the current epoch were trained on (the loader cannot
    know: Lightning fetches ahead); the datamodule reads it from the trainer's progress.
    """

    def __init__(
        self,
        dataset: Any,
        batch_sampler: BucketBatchSampler,
        batches_done: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        if not isinstance(sampler, BucketBatchSampler):
            return {}
        state = {
            "epoch": sampler.epoch,
            "batches": int(self.batches_done()) if self.batches_done is not None else 0,
        }
        if getattr(sampler.sampler, "seed", None) is not None:
            state["seed"] = int(sampler.sampler.seed)  # type: ignore[attr-defined]
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        if not isinstance(sampler, BucketBatchSampler) or not state:
            return
        if "seed" in state and getattr(sampler.sampler, "seed", None) is not None:
            sampler.sampler.seed = int(state["seed"])  # type: ignore[attr-defined]
        sampler.resume_at(state["epoch"], state["batches"])


def padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded positions when each batch is padded to its longest member."""
    real = padded = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        real += sum(sizes)
        padded += max(sizes) * len(sizes)
    return 1.0 - real / padded if padded else 0.0
