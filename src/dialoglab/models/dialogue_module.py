"""What every dialogue LightningModule shares: metrics, sample tables, optimizer, checkpoint payload."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger
from torchmetrics import MinMetric

from dialoglab.metrics import GenerationMetrics, LikelihoodMetrics

CHECKPOINT_KEY = "dialoglab"
CHECKPOINT_VERSION = 1


class DialogueModule(LightningModule):
    """Base class: subclasses implement `nll`, `generate_replies`, `reference_texts`, `context_texts`.

    Logged metrics (names shared by every family): train/loss, val/loss, val/ppl (per token of the
    model's vocabulary), val/ppl_word (per reference word, comparable across tokenizers), val/bleu,
    val/rouge_l, val/distinct_1, val/distinct_2, val/ppl_best; the same under test/.
    """

    family = "base"

    def __init__(
        self,
        tokenizer: Any,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        val_generate: int = 256,
        n_samples: int = 8,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_generate = val_generate
        self.n_samples = n_samples
        self.likelihood = torch.nn.ModuleDict({s: LikelihoodMetrics() for s in ("val", "test")})
        self.generation = torch.nn.ModuleDict({s: GenerationMetrics() for s in ("val", "test")})
        self.val_ppl_best = MinMetric()
        self.samples: list[tuple[str, str, str]] = []
        self.run_config: dict[str, Any] = {}  # the resolved Hydra config, saved in checkpoints

    # -- to implement --------------------------------------------------------------------------
    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        """Summed negative log-likelihood of the batch's reply tokens."""
        raise NotImplementedError

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def generate_replies(self, batch: dict[str, torch.Tensor]) -> list[str]:
        raise NotImplementedError

    def reference_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        raise NotImplementedError

    def context_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        tokens = self.count_tokens(batch)
        loss = self.nll(batch, label_smoothing=self.label_smoothing) / tokens.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss

    @property
    def label_smoothing(self) -> float:
        return 0.0

    def on_train_start(self) -> None:
        self.val_ppl_best.reset()  # the sanity check must not count as a best epoch

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(self.device.type, enabled=False):
            nll = self.nll(batch).float()
        likelihood = self.likelihood[stage]
        likelihood["nll"].update(nll)
        likelihood["tokens"].update(self.count_tokens(batch).float())
        likelihood["words"].update(batch["n_words"].sum().float())

        chosen = (batch["index"] < self.val_generate).nonzero().flatten()
        if chosen.numel() == 0:
            return
        sub = {k: v[chosen] for k, v in batch.items()}
        replies = self.generate_replies(sub)
        references = self.reference_texts(sub)
        self.generation[stage].add(replies, references)
        if len(self.samples) < self.n_samples:
            contexts = self.context_texts(sub)
            room = self.n_samples - len(self.samples)
            self.samples.extend(list(zip(contexts, references, replies, strict=True))[:room])

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        metrics = self.likelihood[stage].summary()
        if self.generation[stage]["distinct_1"].ngrams:
            metrics.update(self.generation[stage].summary())
        self.likelihood[stage].reset()
        self.generation[stage].reset()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("ppl", "bleu"))
        self._log_samples(stage)
        return metrics

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_start(self) -> None:
        self.samples = []

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval_epoch_end("val")
        self.val_ppl_best.update(torch.tensor(metrics["ppl"]))
        self.log("val/ppl_best", self.val_ppl_best.compute())

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_start(self) -> None:
        self.samples = []

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_samples(self, stage: str) -> None:
        if not self.samples or self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key=f"{stage}/samples",
                    columns=["context", "reference", "reply"],
                    data=[list(row) for row in self.samples],
                    step=self.global_step,
                )

    # -- replies -------------------------------------------------------------------------------
    def reply(self, contexts: Sequence[Sequence[str]]) -> list[str]:
        """Greedy replies to raw-text contexts (each a list of turns, oldest first)."""
        raise NotImplementedError

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        lr = self.optimizer_factory.keywords.get("lr", 1e-3)  # type: ignore[attr-defined]
        optimizer = self.optimizer_factory(params=self.param_groups(lr))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }

    # -- checkpoint ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilds this model without the training command: config and tokenizer.

        Everything is plain Python types, so checkpoints load with torch.load(weights_only=True).
        """
        checkpoint[CHECKPOINT_KEY] = {
            "version": CHECKPOINT_VERSION,
            "family": self.family,
            "config": self.run_config,
            "tokenizer": self.tokenizer.state_dict(),
        }
