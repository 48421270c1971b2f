"""DialogueDataModule: read a corpus, build examples, split by group, tokenize, cache, batch."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from dialoglab.data.cache import CACHE_FORMAT, atomic_torch_save, cache_key, load_cache
from dialoglab.data.dialogue import Example, build_examples
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.resumable import (
    ResumableDataLoader,
    ResumableDistributedSampler,
    ResumableShuffleSampler,
    train_batches_done,
)
from dialoglab.data.samplers import UnpaddedDistributedSampler, world
from dialoglab.data.sampling import BucketBatchSampler, BucketDataLoader
from dialoglab.data.splitting import SPLITS, DedupStats, deduplicate, split_dialogues, split_ratios
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.data.tokenizer_protocol import Tokenizer
from dialoglab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (restored afterwards, even on errors)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


LENGTH_POLICIES = ("filter", "truncate")


class DialogueDataModule(LightningDataModule):
    """One DataModule for every corpus: the reader decides the format, the tokenizer the ids.

    `reader` is a factory (Hydra `_partial_`) called with `path` and `strict`; the tokenizer is
    fitted on the training split only, unless it arrives already fitted (from a checkpoint).
    The tokenizer also owns the model family's example layout: `encode_examples` turns examples
    into `EncodedPairs` and `collate` pads a batch of them (see `Tokenizer`).
    """

    def __init__(
        self,
        reader: Callable[..., Any],
        tokenizer: Tokenizer | None = None,
        path: str | None = None,
        strict: bool = False,
        context_turns: int = 0,
        max_length: int = 10,
        length_policy: str = "filter",
        split: tuple[float, float, float] | str = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        split_by: str | None = None,
        deduplicate: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | None = "data/cache",
        bucket_by_length: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        if length_policy not in LENGTH_POLICIES:
            raise ConfigError(
                f"data.length_policy must be one of {LENGTH_POLICIES}, got {length_policy!r}"
            )
        if max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2 (words + <eos>), got {max_length}")
        self.reader_factory = reader
        self.tokenizer: Tokenizer = tokenizer if tokenizer is not None else WordTokenizer()
        self.vocab_given = self.tokenizer.fitted  # a checkpoint's vocabulary: never refitted
        self.path = path
        self.strict = strict
        self.context_turns = context_turns
        self.max_length = max_length
        self.length_policy = length_policy
        self.split = split_ratios(split)
        self.split_seed = split_seed
        self.split_by = split_by
        self.deduplicate = deduplicate
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.bucket_by_length = bucket_by_length
        self.splits: dict[str, EncodedPairs] = {}
        self.read_stats: dict[str, Any] = {}

    # -- reading and encoding ------------------------------------------------------------------
    def make_reader(self) -> Any:
        kwargs: dict[str, Any] = {"strict": self.strict}
        if self.path is not None:
            kwargs["path"] = self.path
        return self.reader_factory(**kwargs)

    def examples_by_split(self, reader: Any) -> dict[str, list[Example]]:
        """Dialogues split by group (or conversation), as examples without cross-split repeats."""
        dialogues, stats = reader.read()
        self.read_stats = {"dialogues": len(dialogues), "skipped": dict(stats.skipped)}
        if not dialogues:
            raise DataError("the corpus holds no usable dialogue", str(self.path or reader))
        group_by = getattr(reader, "group_by", "group")
        parts = split_dialogues(dialogues, self.split, self.split_seed, self.split_by, group_by)
        self._warn_empty_splits(parts, group_by)
        examples = {
            name: build_examples(part, self.context_turns)
            for name, part in zip(SPLITS, parts, strict=True)
        }
        if self.deduplicate:
            examples, dedup = deduplicate(examples)
            self.read_stats["duplicates"] = dedup.to_dict()  # told in the data summary line
        return examples

    def _warn_empty_splits(self, parts: list[list[Any]], group_by: str) -> None:
        """Say which split got no dialogue, and how to split a corpus with few groups."""
        empty = [n for n, p, r in zip(SPLITS, parts, self.split, strict=True) if r > 0 and not p]
        if empty:
            groups = len({d.group for p in parts for d in p})
            log.warning(
                "the %s split%s no dialogue: only %d %s group%s usable dialogues for "
                "data.split=%s; set data.split_by=conversation to split by conversation",
                " and ".join(empty), " gets" if len(empty) == 1 else "s get", groups,
                "conversation" if self.split_by == "conversation" else group_by,
                " holds" if groups == 1 else "s hold", list(self.split),
            )  # fmt: skip

    def encode(self, examples: list[Example]) -> EncodedPairs:
        return self.tokenizer.encode_examples(examples, self.max_length, self.length_policy)

    def cache_description(self, reader: Any) -> dict[str, Any]:
        return {
            "reader": reader.fingerprint(),
            "tokenizer": self.tokenizer.config(),
            "context_turns": self.context_turns,
            "max_length": self.max_length,
            "length_policy": self.length_policy,
            "split": list(self.split),
            "split_seed": self.split_seed,
            "split_by": self.split_by,
            "deduplicate": self.deduplicate,
        }

    def build(self) -> dict[str, Any]:
        """Read, split, fit the tokenizer (unless fitted), encode: the object that gets cached."""
        # a word tokenizer tokenizes each distinct text once, for fitting and all three splits
        reusing_tokens = getattr(self.tokenizer, "reusing_tokens", nullcontext)
        # millions of small acyclic objects: the cyclic collector would only scan them
        with gc_paused(), reusing_tokens():
            return self._build()

    def _build(self) -> dict[str, Any]:
        reader = self.make_reader()
        examples = self.examples_by_split(reader)
        counts = {name: len(exs) for name, exs in examples.items()}
        training = not self.vocab_given  # scoring a checkpoint (eval) needs no training split
        if training and counts["train"] == 0:
            raise DataError(
                f"the training split holds no example (data.split={list(self.split)}): give "
                "training a positive share, or data.split_by=conversation for a corpus with "
                "few groups",
                str(self.path or "corpus"),
            )
        if not self.tokenizer.fitted:
            self.tokenizer.fit_examples(examples["train"])
        splits = {name: self.encode(exs) for name, exs in examples.items()}
        if training and len(splits["train"]) == 0:
            raise DataError(
                f"all {counts['train']} training examples were dropped by "
                f"data.max_length={self.max_length}: raise data.max_length or set "
                "data.length_policy=truncate",
                str(self.path or "corpus"),
            )
        return {
            "format": CACHE_FORMAT,
            "tokenizer": self.tokenizer.state_dict(),
            "splits": {name: s.state_dict() for name, s in splits.items()},
            "stats": {**self.read_stats, "examples": counts},
        }

    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        description = self.cache_description(self.make_reader())
        if self.vocab_given:  # encoded with a checkpoint's vocabulary: its own cache entry
            description["vocab"] = self.tokenizer.fingerprint()
        return self.cache_dir / cache_key(description) / "data.pt"

    # -- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build the cache once (rank 0); downloads the corpus when its reader is told to."""
        path = self.cache_path()
        if path is not None and load_cache(path) is None:
            atomic_torch_save(self.build(), path)
            log.info("cached processed data at %s", path)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.cache_path()
        data = load_cache(path) if path is not None else None
        if data is None:
            data = self.build()
            if path is not None:
                atomic_torch_save(data, path)
        elif not self.tokenizer.fitted:
            self.tokenizer.load_state_dict(data["tokenizer"])
        self.read_stats = data["stats"]
        self.splits = {name: EncodedPairs.from_state_dict(s) for name, s in data["splits"].items()}
        log.info("data: %s", self.describe())

    def describe(self) -> str:
        sizes = ", ".join(f"{name} {len(s)}" for name, s in self.splits.items())
        skipped = sum(self.read_stats.get("skipped", {}).values())
        text = f"{sizes} examples; vocabulary {len(self.tokenizer)}; {skipped} corpus rows skipped"
        duplicates = self.read_stats.get("duplicates")
        if duplicates is not None:
            text += "; " + DedupStats(duplicates["repeated"], duplicates["moved"]).describe()
        return text

    # -- batches -------------------------------------------------------------------------------
    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            self.setup()
        split = self.splits[name]
        if len(split) == 0:
            raise DataError(
                f"the {name} split is empty: the corpus has too few groups for data.split="
                f"{list(self.split)}; set data.split_by=conversation (a corpus with few "
                "movies), use a bigger corpus or other ratios",
                str(self.path or "corpus"),
            )
        indices = range(len(split))
        # Data-parallel runs shard here (Lightning keeps a DistributedSampler it is given): training
        # shards shuffle alike on every rank; val/test shards are never padded, so each example is
        # scored once and a 2-process run measures exactly what a 1-process run does.
        sampler: DistributedSampler | None = None
        world_size, rank = world(self.trainer)
        if world_size > 1:
            if name == "train":  # resumable: each rank continues its shard mid-epoch
                seed = int(os.environ.get("PL_GLOBAL_SEED", self.split_seed))
                sampler = ResumableDistributedSampler(
                    indices,  # type: ignore[arg-type]
                    num_replicas=world_size,
                    rank=rank,
                    shuffle=shuffle,
                    seed=seed,
                    batch_size=self.batch_size,
                )
            else:
                sampler = UnpaddedDistributedSampler(indices, world_size, rank)
        if name == "train" and self.bucket_by_length:
            return self._bucket_loader(split, sampler, shuffle)
        if name == "train" and shuffle:
            # Seeded shuffling that resumes mid-epoch (see data/resumable.py); DDP: its shard.
            return ResumableDataLoader(
                indices,
                batch_size=self.batch_size,
                sampler=sampler,
                seed=int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed())),
                batches_done=lambda: train_batches_done(self.trainer),
                collate_fn=partial(self.tokenizer.collate, split),
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
            )
        return DataLoader(
            indices,  # type: ignore[arg-type]
            batch_size=self.batch_size if name == "train" else self.eval_batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            collate_fn=partial(self.tokenizer.collate, split),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _bucket_loader(
        self, split: EncodedPairs, sampler: DistributedSampler | None, shuffle: bool
    ) -> DataLoader:
        """Training batches of similar lengths (data.bucket_by_length=true), see data/sampling.py.

        Sorted by reply length, then context length. One process: the same seeded, resumable
        order as the default loader, bucketed; DDP: each rank buckets its shard.
        """
        indices = range(len(split))
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        if sampler is None:
            sampler = ResumableShuffleSampler(indices, seed) if shuffle else None
        source_lengths = split.source_lengths()
        lengths = split.target_lengths() * (int(source_lengths.max()) + 1) + source_lengths
        batch_sampler = BucketBatchSampler(
            sampler if sampler is not None else indices, lengths, self.batch_size
        )
        return BucketDataLoader(
            indices,
            batch_sampler,
            batches_done=lambda: train_batches_done(self.trainer),
            collate_fn=partial(self.tokenizer.collate, split),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(seed % 2**63),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
