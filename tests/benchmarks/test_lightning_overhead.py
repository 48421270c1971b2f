"""benchmarks/lightning_overhead: the Trainer and the plain loop alternate step by step."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from benchmarks.lightning_overhead import make_batches, make_module, paired_steps, scratch_size


def test_paired_steps_times_every_step_of_both_sides_on_the_same_batches() -> None:
    size = scratch_size(quick=True)
    batches = make_batches(5, 2, 16, size["vocab_size"])
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    torch.manual_seed(0)
    trainer_side = make_module(size, 16, dropout=0.0)
    plain_side = make_module(size, 16, dropout=0.0)
    plain_side.load_state_dict(trainer_side.state_dict())
    initial = {k: v.clone() for k, v in plain_side.state_dict().items()}

    trainer_times, plain_times = paired_steps(trainer_side, plain_side, loader, clip=50.0)

    assert len(trainer_times) == len(plain_times) == len(batches)
    assert all(t > 0 for t in trainer_times + plain_times)
    assert trainer_side.trainer.global_step == len(batches)  # every batch through the Trainer
    for side in (trainer_side, plain_side):  # and every side trained from the same weights
        moved = [not torch.equal(v, initial[k]) for k, v in side.state_dict().items()]
        assert any(moved)
    # Without dropout the two sides made the same updates from the same batches.
    for key, value in trainer_side.state_dict().items():
        torch.testing.assert_close(value, plain_side.state_dict()[key])
