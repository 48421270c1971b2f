"""experiment/console.py and the compact model summary: what reaches the console, and how."""

from __future__ import annotations

import io
import logging

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_summary import summarize
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from rich import get_console
from torchmetrics import MeanMetric

from dialoglab.experiment.callbacks import ModelSummary
from dialoglab.experiment.console import log_to_files, print_error, quiet_third_party


def test_print_error_prints_brackets_as_text() -> None:
    stream = io.StringIO()
    print_error('accepted: {"persona": str | [str, ...]} [bold]x[/]', stream=stream)
    assert stream.getvalue() == 'error: accepted: {"persona": str | [str, ...]} [bold]x[/]\n'


def test_lightning_noise_is_dropped_and_the_rest_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_third_party()
    quiet_third_party()  # twice: still one filter
    name = "pytorch_lightning.utilities.rank_zero"
    assert len(logging.getLogger(name).filters) == 1
    with caplog.at_level(logging.INFO, logger=name):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](...)")
        rank_zero_info("Trainer already configured with model summary callbacks: [...]")
        rank_zero_info("Restoring states from the checkpoint path at x.ckpt")
        rank_zero_info("Loaded model weights from the checkpoint at x.ckpt")
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == [
        "Loaded model weights from the checkpoint at x.ckpt",
        "GPU available: False, used: False",
    ]


def test_log_to_files_reaches_file_handlers_only(tmp_path, capsys) -> None:
    root = logging.getLogger()
    file_handler = logging.FileHandler(tmp_path / "run.log")
    console_handler = logging.StreamHandler()  # stderr
    root.addHandler(file_handler)
    root.addHandler(console_handler)
    try:
        log_to_files(logging.getLogger("dialoglab.test"), logging.ERROR, "bad [row]")
    finally:
        root.removeHandler(file_handler)
        root.removeHandler(console_handler)
        file_handler.close()
    assert (tmp_path / "run.log").read_text() == "bad [row]\n"
    assert "bad [row]" not in capsys.readouterr().err


class WithMetrics(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.metrics = torch.nn.ModuleDict({"val": MeanMetric()})
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )


def test_model_summary_lists_modules_with_parameters_only() -> None:
    summary = summarize(WithMetrics(), max_depth=2)
    console = get_console()
    with console.capture() as captured:
        ModelSummary.summarize(
            summary._get_summary_data(),
            summary.total_parameters,
            summary.trainable_parameters,
            summary.model_size,
            summary.total_training_modes,
            total_flops=summary.total_flops,
        )
    text = captured.get()
    assert "net.0" in text and "net.2" in text and "Linear" in text
    for absent in ("metrics", "MeanMetric", "ReLU", "FLOPs", "Mode"):
        assert absent not in text, text
    assert "params: 58 trainable, 0 frozen, 0.000 MB" in text
