"""BucketBatchSampler: every index once, less padding, reproducible from the seed, resumable."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler

from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.resumable import ResumableShuffleSampler
from dialoglab.data.sampling import BucketBatchSampler, BucketDataLoader, padding_fraction
from dialoglab.data.tokenization import WordTokenizer


def lengths_of(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 30) for _ in range(n)]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "batch_size", "pool"), [(1000, 32, 4), (97, 10, 3), (5, 8, 2)])
def test_every_index_once_and_batch_count(n, batch_size, pool, drop_last) -> None:
    lengths = lengths_of(n)
    sampler = BucketBatchSampler(
        RandomSampler(range(n)), lengths, batch_size, drop_last=drop_last, pool_batches=pool
    )
    batches = list(sampler)
    reference = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)
    assert len(batches) == len(sampler) == len(reference)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    if not drop_last:
        assert sorted(flat) == list(range(n))
    assert all(len(b) == batch_size for b in batches[:-1])
    assert all(len(b) <= batch_size for b in batches)


def test_batches_are_sorted_within_pools_and_pad_less() -> None:
    n, batch_size = 4000, 64
    lengths = lengths_of(n, seed=1)
    torch.manual_seed(0)
    bucketed = list(BucketBatchSampler(RandomSampler(range(n)), lengths, batch_size))
    torch.manual_seed(0)
    plain = list(BatchSampler(RandomSampler(range(n)), batch_size, False))
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bucketed]
    assert sum(spans) / len(spans) <= 1.0  # a batch spans a narrow range of lengths
    assert padding_fraction(bucketed, lengths) < 0.1 < padding_fraction(plain, lengths)


def test_reproducible_from_the_global_seed_and_new_order_each_epoch() -> None:
    lengths = lengths_of(500)

    def epochs(seed: int) -> list[list[list[int]]]:
        torch.manual_seed(seed)
        sampler = BucketBatchSampler(RandomSampler(range(500)), lengths, 16, pool_batches=5)
        return [list(sampler), list(sampler)]

    first, again, other = epochs(3), epochs(3), epochs(4)
    assert first == again
    assert first[0] != first[1]  # the next epoch is shuffled anew
    assert first != other


def test_seeded_sampler_drives_the_order_and_resume_skips_seen_batches() -> None:
    lengths = lengths_of(300)
    sampler = ResumableShuffleSampler(range(300), seed=7)
    bucket = BucketBatchSampler(sampler, lengths, 16, pool_batches=4)
    sampler.set_epoch(2)
    epoch2 = list(bucket)
    twin_sampler = ResumableShuffleSampler(range(300), seed=7)
    twin = BucketBatchSampler(twin_sampler, lengths, 16, pool_batches=4)
    twin_sampler.set_epoch(2)
    assert list(twin) == epoch2  # no global RNG involved
    twin.resume_at(2, 5)
    assert list(twin) == epoch2[5:]
    assert list(twin) == epoch2  # resuming applies once
    twin.resume_at(1, 5)  # another epoch's position is ignored
    assert list(twin) == epoch2


def test_loader_state_round_trip() -> None:
    lengths = lengths_of(200)
    done = {"n": 0}

    def loader() -> BucketDataLoader:
        sampler = BucketBatchSampler(ResumableShuffleSampler(range(200), seed=1), lengths, 8)
        return BucketDataLoader(range(200), sampler, batches_done=lambda: done["n"])

    full = [b.tolist() for b in loader()]
    done["n"] = 6
    state = loader().state_dict()
    assert state == {"epoch": 0, "batches": 6, "seed": 1}
    resumed = loader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == full[6:]


def test_distributed_shards_are_disjoint_and_even() -> None:
    lengths = lengths_of(103)
    shards = []
    for rank in range(2):
        dist = DistributedSampler(range(103), num_replicas=2, rank=rank, shuffle=True, seed=5)
        shards.append(list(BucketBatchSampler(dist, lengths, 8, pool_batches=2)))
    assert len(shards[0]) == len(shards[1])
    flat = [sorted(i for b in s for i in b) for s in shards]
    assert len(set(flat[0]) | set(flat[1])) == 103  # every index (DistributedSampler pads one)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pool_batches"):
        BucketBatchSampler(range(4), [1, 2, 3, 4], 2, pool_batches=0)
    with pytest.raises(ValueError):
        BucketBatchSampler(range(4), [1, 2, 3, 4], 0)


# -- through the DataModule ----------------------------------------------------------------------

SEP = " +++$+++ "


def write_corpus(folder: Path, n_convs: int = 120) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines, convs, lid = [], [], 0
    for c in range(n_convs):
        ids = []
        for _ in range(3):
            lid += 1
            text = " ".join(
                rng.choice(["ab", "cd", "ef", "gh", "ij", "kl"]) for _ in range(rng.randint(1, 8))
            )
            lines.append(SEP.join([f"L{lid}", "u0", f"m{c % 12}", "A", text]))
            ids.append(f"L{lid}")
        convs.append(SEP.join(["u0", "u1", f"m{c % 12}", repr(ids)]))
    (folder / "movie_lines.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "movie_conversations.txt").write_text("\n".join(convs) + "\n", encoding="latin-1")
    return folder


def make_dm(path: Path, bucket: bool) -> DialogueDataModule:
    return DialogueDataModule(
        functools.partial(CornellReader, download=False),
        WordTokenizer(),
        path=str(path),
        cache_dir=None,
        batch_size=16,
        bucket_by_length=bucket,
    )


def test_datamodule_buckets_training_batches_only(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    plain, bucketed = make_dm(corpus, False), make_dm(corpus, True)
    plain.setup()
    bucketed.setup()
    assert isinstance(bucketed.train_dataloader(), BucketDataLoader)
    assert not isinstance(plain.train_dataloader(), BucketDataLoader)

    def batches(dm: DialogueDataModule) -> list[dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        return list(dm.train_dataloader())

    b_plain, b_bucket = batches(plain), batches(bucketed)
    seen = sorted(int(i) for b in b_bucket for i in b["index"])
    assert seen == list(range(len(bucketed.splits["train"])))
    assert len(b_bucket) == len(b_plain)

    def padded(bs: list[dict[str, torch.Tensor]]) -> int:
        return sum(b["target"].numel() + b["src"].numel() for b in bs)

    assert padded(b_bucket) < padded(b_plain)
    assert batches(bucketed)[0]["index"].tolist() == b_bucket[0]["index"].tolist()  # same seed
    # evaluation loaders are unchanged
    val_a = [b["index"].tolist() for b in plain.val_dataloader()]
    val_b = [b["index"].tolist() for b in bucketed.val_dataloader()]
    assert val_a == val_b
