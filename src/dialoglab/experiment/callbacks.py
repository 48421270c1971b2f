"""Callbacks dialoglab adds to Lightning's: what to do with a non-finite loss; a model summary
that lists only what holds parameters."""

from __future__ import annotations

from typing import Any

from pytorch_lightning import Callback
from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary import get_formatted_model_size
from pytorch_lightning.utilities.model_summary import get_human_readable_count as count
from rich import get_console
from rich.markup import escape
from rich.table import Table


class NonFiniteLoss(Callback):
    """`skip=false` (default): a NaN/inf training loss stops the run with a message naming the step
    (checkpoints saved before it are kept). `skip=true`: such batches are skipped (no backward, no
    optimizer step), counted and logged as `train/skipped_nonfinite`."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        pl_module.skip_nonfinite = self.skip


# Columns shown when they say something: FLOPs are measured only with `example_input_array`
# (all zero otherwise); Mode only when some module is in eval mode.
OPTIONAL_COLUMNS = ("Params per Device", "Mode", "FLOPs", "In sizes", "Out sizes")


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without the modules that hold no parameters (metric
    containers, activations), without columns that say nothing, and with a one-line total."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = dict(summary_data)
        rows = [i for i, params in enumerate(columns["Params"]) if params.strip() != "0"]
        shown = ["Name", "Type", "Params"]
        for name in OPTIONAL_COLUMNS:
            values = [columns[name][i] for i in rows] if name in columns else []
            if name == "FLOPs" and not total_flops:
                continue
            if name == "Mode" and set(values) <= {"train", "n/a"}:
                continue
            if values:
                shown.append(name)
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name in shown:
            table.add_column(name, justify="left" if name in ("Name", "Type") else "right")
        for i in rows:
            table.add_row(*(escape(columns[name][i]) for name in shown))
        trainable, frozen = (
            count(trainable_parameters),
            count(total_parameters - trainable_parameters),
        )
        flops = f", {count(total_flops).strip()} FLOPs" if total_flops else ""
        console = get_console()
        console.print(table)
        console.print(
            f"params: {trainable.strip()} trainable, {frozen.strip()} frozen, "
            f"{get_formatted_model_size(model_size)} MB{flops}",
            highlight=False,
        )
