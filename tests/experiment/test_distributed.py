"""Data parallelism without a GPU: shards that never pad, metrics exact across 2 gloo processes."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from dialoglab.data.corpora.chatterbot import ChatterbotReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.samplers import UnpaddedDistributedSampler
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.experiment.distributed import config_digest
from dialoglab.metrics import GenerationMetrics, LikelihoodMetrics

REPLIES = [
    "i am fine thank you very much",
    "yes i like movies a lot",
    "no",
    "where are you going tonight my friend",
    "hello there how are you",
    "i do not know what you mean",
    "the cat is on the mat again",
]
REFERENCES = [
    "i am fine thank you",
    "yes i like movies a lot too",
    "no way",
    "where are you going my friend",
    "hello how are you today",
    "i do not know",
    "the cat is on the mat",
]
NLL = [3.0, 1.5, 2.25, 0.5, 4.0, 1.0, 2.0]


@pytest.mark.parametrize(("n", "world"), [(7, 2), (5, 3), (2, 2), (1, 2)])
def test_unpadded_shards_cover_every_example_once(n: int, world: int) -> None:
    shards = [list(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)] == [
        len(s) for s in shards
    ]


class FakeTrainer:
    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank


def test_datamodule_shards_by_rank(tmp_path: Path) -> None:
    dm = DialogueDataModule(
        functools.partial(ChatterbotReader, categories=["greetings", "food"]),
        WordTokenizer(min_count=1),
        max_length=20,
        batch_size=4,
        eval_batch_size=8,
        cache_dir=str(tmp_path),
    )
    dm.setup()
    single = [i for b in dm.val_dataloader() for i in b["index"].tolist()]
    assert not isinstance(dm.val_dataloader().sampler, DistributedSampler)

    seen: list[int] = []
    for rank in range(2):
        dm.trainer = FakeTrainer(2, rank)  # type: ignore[assignment]
        assert isinstance(dm.train_dataloader().sampler, DistributedSampler)
        val = dm.val_dataloader()
        assert isinstance(val.sampler, UnpaddedDistributedSampler)
        seen += [i for b in val for i in b["index"].tolist()]
    assert sorted(seen) == sorted(single)  # each val example exactly once over both ranks


def _summary(indices: list[int]) -> dict[str, float]:
    """What DialogueModule does over a split: sums per batch of 2, then the epoch-end sync."""
    likelihood, generation = LikelihoodMetrics(), GenerationMetrics()
    for start in range(0, len(indices), 2):
        batch = indices[start : start + 2]
        for i in batch:
            likelihood["nll"].update(torch.tensor(NLL[i]))
            likelihood["tokens"].update(torch.tensor(float(len(REFERENCES[i].split()) + 1)))
            likelihood["words"].update(torch.tensor(float(len(REFERENCES[i].split()))))
        generation.add([REPLIES[i] for i in batch], [REFERENCES[i] for i in batch])
    generation.add([], [])  # as in DialogueModule._eval_epoch_end
    return {**likelihood.summary(), **generation.summary()}


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        uneven = _summary(list(UnpaddedDistributedSampler(range(len(REPLIES)), world, rank)))
        # a rank that got no example at all (a split smaller than the number of processes)
        empty = _summary(list(range(len(REPLIES))) if rank == 0 else [])
        if rank == 0:
            torch.save({"uneven": uneven, "empty": empty}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_metrics_over_two_processes_equal_one_process(tmp_path: Path) -> None:
    """BLEU, distinct-n, ROUGE-L and perplexity over uneven shards (4 + 3 examples) of 2 gloo
    processes equal the single-process values: the states are sums and concatenations."""
    expected = _summary(list(range(len(REPLIES))))
    assert expected["bleu"] > 10  # a real BLEU, not a 0 == 0 comparison

    out = tmp_path / "rank0.pt"
    mp.spawn(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    results = torch.load(out)
    for case, got in results.items():
        assert set(got) == set(expected), case
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-6), f"{case}: {name}"


def test_config_digest_ignores_key_order() -> None:
    assert config_digest({"a": 1, "b": {"c": 2}}) == config_digest({"b": {"c": 2}, "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})


def test_ddp_wraps_the_model_on_the_current_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """No side stream for DDP's construction (Lightning's makes AccumulateGrad stream warnings on
    GPUs); on a GPU the wrapper still gets the device ids."""
    from dialoglab.experiment import distributed

    built: list[dict] = []

    def side_stream(*args, **kwargs):
        raise AssertionError("DDP built under a side stream")

    monkeypatch.setattr(torch.cuda, "Stream", side_stream)
    monkeypatch.setattr(torch.cuda, "stream", side_stream)
    monkeypatch.setattr(distributed, "DistributedDataParallel", lambda **kw: built.append(kw) or kw)
    strategy = distributed.ResolvedConfigDDPStrategy(find_unused_parameters=False)
    monkeypatch.setattr(strategy, "determine_ddp_device_ids", lambda: [0])
    model = torch.nn.Linear(2, 2)
    strategy._setup_model(model)
    assert built == [{"module": model, "device_ids": [0], "find_unused_parameters": False}]
