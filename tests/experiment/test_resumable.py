"""Resumable shuffling, atomic checkpoint writes and run discovery for resume=auto."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dialoglab.data.resumable import ResumableDataLoader, ResumableShuffleSampler
from dialoglab.errors import CheckpointError
from dialoglab.experiment.resume import (
    FINISHED_FILE,
    RESUME_KEY_FILE,
    AtomicCheckpointIO,
    collect_rng_states,
    find_unfinished_run,
    set_rng_states,
)
from dialoglab.models.dialogue_module import CHECKPOINT_KEY


def test_sampler_order_depends_on_seed_and_epoch_only() -> None:
    a, b = ResumableShuffleSampler(range(50), seed=3), ResumableShuffleSampler(range(50), seed=3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    a.set_epoch(1)
    assert list(a) != list(b)


def test_loader_resumes_mid_epoch_with_the_remaining_batches() -> None:
    done = {"n": 0}
    full = ResumableDataLoader(range(23), batch_size=4, seed=7, batches_done=lambda: done["n"])
    full.sampler.set_epoch(2)
    batches = [b.tolist() for b in full]
    done["n"] = 3
    state = full.state_dict()
    assert state == {"seed": 7, "epoch": 2, "batches": 3, "batch_size": 4}

    resumed = ResumableDataLoader(range(23), batch_size=4, seed=999)  # seed comes from the state
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # as Lightning does after creating the iterator
    assert [b.tolist() for b in resumed] == batches[3:]
    assert [b.tolist() for b in resumed] == batches  # only the first iteration skips


def test_saved_position_of_another_epoch_is_ignored() -> None:
    loader = ResumableDataLoader(range(10), batch_size=2, seed=1)
    loader.load_state_dict({"seed": 1, "epoch": 0, "batches": 5, "batch_size": 2})
    loader.sampler.set_epoch(1)  # the saved epoch was complete: Lightning moved on
    assert len(list(loader)) == 5


def test_rng_states_round_trip_and_load_weights_only(tmp_path: Path) -> None:
    states = collect_rng_states()
    expected = torch.rand(3)
    torch.save(states, tmp_path / "rng.pt")
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected)


def test_atomic_checkpoint_io(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 4}, path)
    io.save_checkpoint({"global_step": 8}, path)
    assert io.load_checkpoint(path, weights_only=True)["global_step"] == 8
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"last\.ckpt: not a readable PyTorch checkpoint"):
        io.load_checkpoint(path, weights_only=True)


def make_run(root: Path, name: str, key: str, *, finished: bool = False, good: bool = True) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / RESUME_KEY_FILE).write_text(key + "\n")
    if finished:
        (run / FINISHED_FILE).write_text("")
    payload = {CHECKPOINT_KEY: {"family": "seq2seq"}, "global_step": 1}
    torch.save(payload, run / "checkpoints" / "step_0000001.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(
        b"torn" if not good else (run / "checkpoints" / "step_0000001.ckpt").read_bytes()
    )
    return run


def test_find_unfinished_run(tmp_path: Path) -> None:
    make_run(tmp_path, "a", "k1")
    make_run(tmp_path, "b", "k1", finished=True)
    make_run(tmp_path, "c", "k2")
    torn = make_run(tmp_path, "d", "k1", good=False)  # newest: last.ckpt is corrupt
    run, ckpt, content, _ = find_unfinished_run(tmp_path, "k1", exclude=tmp_path / "new")
    assert run == torn and ckpt.name == "step_0000001.ckpt" and content["global_step"] == 1
    assert find_unfinished_run(tmp_path, "k3", exclude=tmp_path / "new") is None
