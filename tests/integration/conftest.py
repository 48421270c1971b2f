"""Integration fixtures: one tiny trained gru_attn checkpoint for the whole test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import TINY_GRU, compose_config

# One epoch of a few batches on chatterbot-corpus: the model is poor, but real and quick to make.
TINY_CHAT_MODEL = [
    "data=chatterbot",
    "data.context_turns=2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=1",
    "test=false",
    *TINY_GRU,
    "sample_replies=0",
]


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny gru_attn checkpoint (hidden 16, context_turns 2), trained once per session."""
    from dialoglab.experiment.train import train

    root = tmp_path_factory.mktemp("chat_model")
    cfg = compose_config("train", TINY_CHAT_MODEL, root, output_dir=root / "outputs" / "run")
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    summary = json.loads((root / "outputs" / "run" / "metrics.json").read_text())
    path = Path(
        summary["best_checkpoint"] or root / "outputs" / "run" / "checkpoints" / "last.ckpt"
    )
    assert path.is_file(), path
    return path
