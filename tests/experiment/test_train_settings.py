"""train.py's run-wide settings: fp32 matmul precision, the device of the sample replies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dialoglab.errors import ConfigError
from dialoglab.experiment.train import set_matmul_precision, to_trainer_device


@pytest.fixture
def restore_precision():
    previous = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(previous)


def test_matmul_precision_is_set_and_null_restores_the_default(restore_precision) -> None:
    set_matmul_precision("high")
    assert torch.get_float32_matmul_precision() == "high"
    set_matmul_precision(None)  # the next job of a multirun, back on torch's default
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_bad_matmul_precision_names_the_key_and_the_choices(restore_precision) -> None:
    with pytest.raises(ConfigError, match="float32_matmul_precision='fast'.*highest, high, medium"):
        set_matmul_precision("fast")


def test_sample_replies_run_on_the_trainer_device() -> None:
    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    to_trainer_device(model, trainer)
    assert model.weight.device.type == "meta"
