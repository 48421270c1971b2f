"""CausalLMModule: GPT-2 (pretrained or from scratch) fine-tuned on replies, as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf

from dialoglab.data.hf_tokenization import IGNORE_INDEX, HFTokenizer
from dialoglab.errors import ConfigError
from dialoglab.generation import seeded, to_hf_generate_kwargs
from dialoglab.models.components.gpt2 import (
    FAST_ACTIVATION,
    SpecialIds,
    architecture,
    enable_activation_checkpointing,
    gpt2_from_config,
    gpt2_from_scratch,
    gpt2_pretrained,
)
from dialoglab.models.dialogue_module import DialogueModule, Personas, persona_lines

# Batch keys with one entry per example (the others have one per row, several examples per row
# when the tokenizer packs them).
EXAMPLE_KEYS = ("prompt_ids", "prompt_mask", "prompt_types", "reply_ids", "n_words", "index")
NO_DECAY = ("bias", "ln_", "layernorm", "layer_norm")


def plain(value: Any) -> Any:
    """Hydra hands nested config nodes over as DictConfig / ListConfig: make them dicts and lists."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class CausalLMModule(DialogueModule):
    """GPT-2 trained with the loss on reply tokens only (layout: `HFTokenizer`).

    `pretrained` (hub name or local directory) fine-tunes those weights; null builds a new model
    from `n_layer`, `n_head`, `n_embd`, `n_positions`. `activation` is the MLP's (a transformers
    ACT2FN name; null keeps a pretrained model's own): `gelu_pytorch_tanh`, the default, is
    GPT-2's `gelu_new` formula as one fused op. `gpt2_config` is set when a checkpoint is
    restored: the recorded architecture is built and the checkpoint's weights loaded into it,
    so neither the hub nor the pretrained directory is needed again.

    Replies are decoded by Hugging Face `generate()` with the KV cache, from the same
    `DecodingConfig` every family uses (`to_hf_generate_kwargs`); `generation` adds further
    `generate()` keywords.
    """

    family = "causal_lm"

    def __init__(
        self,
        tokenizer: HFTokenizer,
        optimizer: Callable[..., torch.optim.Optimizer],
        pretrained: str | None = None,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 256,
        n_positions: int = 256,
        dropout: float = 0.1,
        activation: str | None = FAST_ACTIVATION,
        weight_decay: float = 0.01,
        label_smoothing: float = 0.0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        max_reply_length: int = 40,
        generation: Mapping[str, Any] | None = None,
        scheduler: Callable[..., Any] | None = None,
        val_generate: int = 256,
        n_samples: int = 8,
        gpt2_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            tokenizer, optimizer, scheduler, val_generate, n_samples, label_smoothing,
            max_reply_length,
        )  # fmt: skip
        generation = plain(generation) or {}  # hparams go into weights_only checkpoints
        self.save_hyperparameters(ignore=["tokenizer", "optimizer", "scheduler", "gpt2_config"])
        if not tokenizer.fitted:
            raise ConfigError(
                "the GPT-2 tokenizer must be fitted (or loaded) before the model is built"
            )
        ids = SpecialIds(len(tokenizer), tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
        if gpt2_config is not None:
            self.net = gpt2_from_config(plain(gpt2_config), ids)
        elif pretrained:
            self.net = gpt2_pretrained(str(pretrained), ids, activation)
        else:
            self.net = gpt2_from_scratch(
                ids, n_layer, n_head, n_embd, n_positions, dropout, activation or FAST_ACTIVATION
            )
        if tokenizer.max_length and tokenizer.max_length > self.n_positions:
            raise ConfigError(
                f"model.tokenizer.max_length={tokenizer.max_length} exceeds the model's "
                f"{self.n_positions} positions: lower it or raise model.n_positions"
            )
        self.pretrained = pretrained
        self.weight_decay = weight_decay
        self.generation_kwargs = dict(generation)
        self.use_compile = compile
        if gradient_checkpointing:
            enable_activation_checkpointing(self.net)

    @property
    def n_positions(self) -> int:
        return int(self.net.config.n_positions)

    def on_fit_start(self) -> None:
        if self.use_compile and not getattr(self, "_compiled", False):
            # In place (parameter names and checkpoints unchanged): the transformer, which the
            # loss (`nll`) and generate() call, not the LM wrapper that `nll` goes around.
            self.net.transformer.compile(dynamic=True)
            self._compiled = True

    # -- likelihood ----------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (rows, length, vocab) of the batch's rows."""
        out = self.net(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch["token_type_ids"],
            position_ids=batch.get("position_ids"),
            use_cache=False,
        )
        return out.logits

    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        """Summed cross-entropy of the labelled (reply) tokens. The output layer runs on the
        positions that predict them only: with history and persona in the prompt most positions
        carry no label, and the (d -> vocab) product is a large share of a small GPT-2's work."""
        hidden = self.net.transformer(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch["token_type_ids"],
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state  # (rows, T, d)
        labels = batch["labels"][:, 1:]  # position t predicts token t + 1
        scored = labels != IGNORE_INDEX  # (rows, T - 1)
        predicting = F.pad(scored, (0, 1))  # (rows, T): the last position predicts nothing
        logits = self.net.lm_head(hidden[predicting])  # (N, vocab), N labelled tokens
        return F.cross_entropy(
            logits.float(), labels[scored], reduction="sum", label_smoothing=label_smoothing
        )

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def select_examples(
        self, batch: dict[str, torch.Tensor], chosen: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {k: batch[k][chosen] for k in EXAMPLE_KEYS if k in batch}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Weight decay on matrices only: biases, layer norms (and nothing else) are not decayed."""
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if any(k in name.lower() for k in NO_DECAY) else decay).append(p)
        return [
            {"params": decay, "lr": lr, "weight_decay": self.weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    # -- replies -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        prompt_types: torch.Tensor,
        decoding: Any = None,
    ) -> torch.Tensor:
        """Reply ids (B, T) after left-padded prompts (ending in `<bot>`), with a KV cache.

        `decoding` (a DecodingConfig, preset name or dict; default `self.decoding`) is mapped
        onto Hugging Face `generate` kwargs; special tokens other than `<eot>` are never
        generated.
        """
        config = self.resolve_decoding(decoding)
        room = self.n_positions - prompt_ids.shape[1]
        max_new = min(config.resolved_max_length(self.max_reply_length), room)
        if max_new < 1:
            return prompt_ids.new_full((prompt_ids.shape[0], 1), self.tokenizer.eos_id)
        config = config.replace(max_length=max_new, min_length=min(config.min_length, max_new - 1))
        tok = self.tokenizer
        kwargs = {
            **self.generation_kwargs,
            **to_hf_generate_kwargs(
                config, prompt_length=prompt_ids.shape[1], ignore_ids=[tok.pad_id]
            ),
        }
        kwargs.setdefault("suppress_tokens", self.never_generated())
        with seeded(config):
            out = self.net.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                token_type_ids=prompt_types,
                eos_token_id=tok.eos_id,
                # Finished rows are filled with <eot> (replies are cut there anyway): with <pad>,
                # a batch without left padding (its mask dropped by generate) trips transformers'
                # "pass an attention_mask" warning.
                pad_token_id=tok.eos_id,
                use_cache=True,
                **kwargs,
            )
        return out[:, prompt_ids.shape[1] :]

    def never_generated(self) -> list[int]:
        """The special tokens a reply never holds: padding and the segment markers."""
        tok = self.tokenizer
        return sorted(
            {tok.pad_id, tok.bos_id, tok.persona_id, tok.user_id, tok.bot_id} - {tok.eos_id}
        )

    reference_key = "reply_ids"

    def reply_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return batch["prompt_ids"], batch["prompt_mask"], batch["prompt_types"]

    def prompt_inputs(
        self,
        contexts: Sequence[Sequence[str]],
        personas: Personas = None,
        max_source_length: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """GPT-2's prompt budget is the tokenizer's `max_length` within the positions a reply
        leaves; `max_source_length` (a word-level model's setting) does not apply."""
        return self.reply_inputs(self.encode_prompts(contexts, personas))

    def context_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        rows = zip(batch["prompt_ids"].tolist(), batch["prompt_mask"].tolist(), strict=True)
        return [
            self.tokenizer.describe_prompt([i for i, m in zip(ids, mask, strict=True) if m])
            for ids, mask in rows
        ]

    def encode_prompts(
        self, contexts: Sequence[Sequence[str]], personas: Personas
    ) -> dict[str, torch.Tensor]:
        """Left-padded prompt ids, mask and types (B, P) of raw-text contexts, within the
        positions a reply leaves."""
        budget = max(1, self.n_positions - self.max_reply_length)
        if self.tokenizer.max_length:
            budget = min(budget, self.tokenizer.max_length)
        rows = []
        for k, context in enumerate(contexts):
            persona = persona_lines(personas, k)
            rows.append(self.tokenizer.encode_prompt(persona, list(context), budget))
        return {k: v.to(self.device) for k, v in self.tokenizer.left_pad(rows).items()}

    # -- checkpoint and export -----------------------------------------------------------------
    def checkpoint_init_kwargs(self) -> dict[str, Any]:
        return {"gpt2_config": architecture(self.net)}

    def export_pretrained(self, out: str | Path) -> Path:
        """A Hugging Face directory (model + tokenizer) that `GPT2LMHeadModel.from_pretrained` loads."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.net.save_pretrained(out)
        self.tokenizer.to_transformers().save_pretrained(out)
        return out
