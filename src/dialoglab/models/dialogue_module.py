"""What every dialogue LightningModule shares: metrics, sample tables, optimizer, checkpoint payload."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.loggers import WandbLogger
from torchmetrics import MinMetric

from dialoglab.errors import ConfigError, TrainingError
from dialoglab.generation import DecodingConfig
from dialoglab.metrics import GenerationMetrics, LikelihoodMetrics
from dialoglab.models.token_mean import global_token_mean

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "dialoglab"
# Epoch metrics are torchmetrics computed over every rank's examples, so each rank already holds
# the global value; a max over those identical copies is exact (a mean may round) and tells
# Lightning the value is synced across processes.
_GLOBAL: dict[str, Any] = {"sync_dist": True, "reduce_fx": "max"}
CHECKPOINT_VERSION = 1
Personas = Sequence[Sequence[str] | str] | None  # per context: persona lines (or one line)


def persona_lines(personas: Personas, k: int) -> list[str]:
    """The k-th context's persona as a list of lines (none when `personas` is empty)."""
    persona = personas[k] if personas else ()
    return [persona] if isinstance(persona, str) else list(persona)


def summed_nll(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Summed cross-entropy of (N, V) logits (upcast to fp32) against (N,) targets."""
    return torch.nn.functional.cross_entropy(
        logits.float(), targets, reduction="sum", label_smoothing=label_smoothing
    )


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Dropout off inside, the training mode back afterwards (also on error). A module already in
    eval mode is left alone: switching walks every submodule (~1 ms per chat reply here)."""
    if not module.training:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


class DialogueModule(LightningModule):
    """Base class: subclasses implement `nll`, `count_tokens`, `generate_ids`, `reply_inputs`,
    `prompt_inputs` and `context_texts`; training, evaluation, replies to raw text, optimizers
    and the checkpoint payload are shared.

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
        label_smoothing: float = 0.0,
        max_reply_length: int = 20,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.label_smoothing = label_smoothing  # training loss only; evaluation never smooths
        self.max_reply_length = max_reply_length  # decoding's default `max_length`
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_generate = val_generate
        self.n_samples = n_samples
        self.likelihood = torch.nn.ModuleDict({s: LikelihoodMetrics() for s in ("val", "test")})
        self.generation = torch.nn.ModuleDict({s: GenerationMetrics() for s in ("val", "test")})
        self.val_ppl_best = MinMetric()
        self.val_ppl_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best
        self.samples: list[tuple[str, str, str]] = []
        self.run_config: dict[str, Any] = {}  # the resolved Hydra config, saved in checkpoints
        # How generate_replies/reply decode (eval.py and the chat front ends set it).
        self.decoding = DecodingConfig()

    # -- to implement --------------------------------------------------------------------------
    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        """Summed negative log-likelihood of the batch's reply tokens."""
        raise NotImplementedError

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    reference_key = ""  # the batch entry holding the reference replies' ids

    def generate_ids(self, *inputs: torch.Tensor, decoding: Any = None) -> torch.Tensor:
        """Reply ids (B, L) for the model inputs `reply_inputs` / `prompt_inputs` give."""
        raise NotImplementedError

    def reply_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """`generate_ids`'s inputs for the examples of a batch."""
        raise NotImplementedError

    def prompt_inputs(
        self,
        contexts: Sequence[Sequence[str]],
        personas: Personas = None,
        max_source_length: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """`generate_ids`'s inputs for raw-text contexts (turns oldest first) and personas,
        keeping at most `max_source_length` context tokens (None: the model's own limit)."""
        raise NotImplementedError

    def context_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def select_examples(
        self, batch: dict[str, torch.Tensor], chosen: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The part of a batch that belongs to examples `chosen` (for generation and samples)."""
        return {k: v[chosen] for k, v in batch.items()}

    def checkpoint_init_kwargs(self) -> dict[str, Any]:
        """Extra constructor arguments (plain types) that `restore_model` passes when rebuilding."""
        return {}

    @staticmethod
    def batch_size_of(batch: dict[str, torch.Tensor]) -> int:
        """Examples in a batch (every family's batch has one `n_words` entry per example)."""
        return int(batch["n_words"].shape[0])

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Per-token mean over the global batch (all ranks' tokens), see models/token_mean.py.
        nll = self.nll(batch, label_smoothing=self.label_smoothing)
        loss, mean = global_token_mean(nll, self.count_tokens(batch))
        if not torch.isfinite(mean):
            return self.on_nonfinite_loss(mean, batch_idx)
        self.log("train/loss", mean, prog_bar=True, batch_size=self.batch_size_of(batch))
        if self.skipped_nonfinite:
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), reduce_fx="max")
        return loss

    # set by the NonFiniteLoss callback (callbacks.nonfinite.skip=true)
    skip_nonfinite: bool = False
    skipped_nonfinite: int = 0

    def on_nonfinite_loss(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Skip the batch (no backward, no step; counted and logged) or stop, naming the step."""
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.skip_nonfinite:
            self.skipped_nonfinite += 1
            log.warning("train/loss is %s at %s: batch skipped", loss.item(), where)
            self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), reduce_fx="max")
            return None
        kept = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none yet"
        raise TrainingError(
            f"train/loss is {loss.item()} at {where}; training stopped. Last good checkpoint: "
            f"{kept} (continue with resume=auto). Lower model.optimizer.lr, keep "
            "trainer.gradient_clip_val, or set callbacks.nonfinite.skip=true to skip such batches"
        )

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
        sub = self.select_examples(batch, chosen)
        replies = self.generate_replies(sub)
        references = self.reference_texts(sub)
        self.generation[stage].add(replies, references)
        if len(self.samples) < self.n_samples:
            contexts = self.context_texts(sub)
            room = self.n_samples - len(self.samples)
            self.samples.extend(list(zip(contexts, references, replies, strict=True))[:room])

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        metrics = self.likelihood[stage].summary()
        if self.val_generate > 0:
            # Decided alike on every rank (computing syncs the states across processes); a rank
            # that generated nothing adds an empty batch so that it holds every state too.
            self.generation[stage].add([], [])
            metrics.update(self.generation[stage].summary())
        self.likelihood[stage].reset()
        self.generation[stage].reset()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("ppl", "bleu"), **_GLOBAL)
        self._log_samples(stage)
        return metrics

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_start(self) -> None:
        self.samples = []

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval_epoch_end("val")
        if self.trainer.sanity_checking:  # the sanity check must not count as a best epoch
            return
        self.val_ppl_best.update(torch.tensor(metrics["ppl"]))
        self.log("val/ppl_best", self.val_ppl_best.compute(), **_GLOBAL)

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
    def resolve_decoding(self, decoding: Any = None) -> DecodingConfig:
        """A DecodingConfig from a config, preset name or dict; None means `self.decoding`."""
        return self.decoding if decoding is None else DecodingConfig.from_any(decoding)

    def decode_rows(self, ids: torch.Tensor) -> list[str]:
        """Text of each row of token ids (special tokens and padding dropped)."""
        return [self.tokenizer.decode(row) for row in ids.tolist()]

    def generate_replies(self, batch: dict[str, torch.Tensor]) -> list[str]:
        return self.decode_rows(self.generate_ids(*self.reply_inputs(batch)))

    def reference_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        return self.decode_rows(batch[self.reference_key])

    @torch.no_grad()
    def reply(
        self,
        contexts: Sequence[Sequence[str]],
        personas: Personas = None,
        decoding: Any = None,
        max_source_length: int | None = None,
    ) -> list[str]:
        """Replies to raw-text contexts (each a list of turns, oldest first), decoded with
        `decoding` (default: `self.decoding`), optionally as the given persona lines; the
        context is cut to its last `max_source_length` tokens (None: the model's own limit)."""
        with eval_mode(self):
            inputs = self.prompt_inputs(contexts, personas, max_source_length)
            return self.decode_rows(self.generate_ids(*inputs, decoding=decoding))

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Optimizer over `param_groups`, plus the scheduler the config's `scheduler` partial builds.

        Lightning's scheduler options may sit in that partial beside the scheduler's own
        arguments: `interval` (epoch | step, default epoch), `frequency` (1) and `monitor`
        (val/loss, used by ReduceLROnPlateau). A scheduler function with a `num_training_steps`
        parameter gets the run's total optimizer steps (warm-up + decay schedules).
        """
        lr = self.optimizer_factory.keywords.get("lr", 1e-3)  # type: ignore[attr-defined]
        optimizer = self.optimizer_factory(params=self.param_groups(lr))
        if self.scheduler_factory is None:
            return optimizer
        factory = self.scheduler_factory
        func = getattr(factory, "func", factory)
        args = getattr(factory, "args", ())
        keywords = dict(getattr(factory, "keywords", None) or {})
        interval = keywords.pop("interval", "epoch")
        frequency = keywords.pop("frequency", 1)
        monitor = keywords.pop("monitor", "val/loss")
        if interval not in ("epoch", "step"):
            raise ConfigError(f"model.scheduler.interval must be epoch or step, got {interval!r}")
        try:
            wants_steps = "num_training_steps" in inspect.signature(func).parameters
        except (TypeError, ValueError):
            wants_steps = False
        if wants_steps and "num_training_steps" not in keywords:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigError(
                    "model.scheduler needs the number of training steps: set trainer.max_epochs "
                    "or trainer.max_steps"
                )
            keywords["num_training_steps"] = max(1, int(total))
        scheduler = func(*args, optimizer=optimizer, **keywords)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": monitor,
                "interval": interval,
                "frequency": frequency,
            },
        }

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as Lightning does, also for fused optimizers under bf16-mixed.

        Lightning refuses to clip gradients for an optimizer that unscales them itself (fused
        Adam) under any mixed precision, though only 16-mixed has a grad scaler; with no scaler
        the gradients are true gradients, so they are clipped here directly.
        """
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        if gradient_clip_val and fused and scaler is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)) == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

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
            "init_kwargs": self.checkpoint_init_kwargs(),
        }
