"""Seq2SeqModule: the GRU/LSTM encoder + Luong-attention decoder trained as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dialoglab.data.tokenization import WordTokenizer
from dialoglab.generation import DecodingConfig, generate
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from dialoglab.models.dialogue_module import (
    DialogueModule,
    Personas,
    persona_lines,
    summed_nll,
)


class Seq2SeqModule(DialogueModule):
    """Teacher-forced training of a `GRUAttnSeq2Seq` (whole target in one decoder call when the
    teacher-forcing ratio is 1; the step-by-step scheduled-sampling path when it is below 1).

    `net` builds the network (Hydra's `model.net`, a partial): this module completes it with the
    tokenizer's vocabulary size and special ids, so each hyperparameter is written once.
    """

    family = "seq2seq"

    def __init__(
        self,
        tokenizer: WordTokenizer,
        net: Callable[..., GRUAttnSeq2Seq],
        optimizer: Callable[..., torch.optim.Optimizer],
        teacher_forcing_ratio: float = 1.0,
        label_smoothing: float = 0.0,
        decoder_lr_ratio: float = 5.0,
        max_reply_length: int = 20,
        scheduler: Callable[..., Any] | None = None,
        val_generate: int = 256,
        n_samples: int = 8,
    ) -> None:
        super().__init__(
            tokenizer, optimizer, scheduler, val_generate, n_samples, label_smoothing,
            max_reply_length,
        )  # fmt: skip
        self.save_hyperparameters(ignore=["tokenizer", "net", "optimizer", "scheduler"])
        self.net = net(
            vocab_size=len(tokenizer),
            pad_id=tokenizer.pad_id,
            sos_id=tokenizer.sos_id,
            eos_id=tokenizer.eos_id,
        )
        self.config = self.net.config
        self.teacher_forcing_ratio = teacher_forcing_ratio
        self.decoder_lr_ratio = decoder_lr_ratio

    @property
    def _stepwise(self) -> bool:
        """Whether training decodes step by step (scheduled sampling) rather than teacher-forced
        in one call."""
        return self.training and self.teacher_forcing_ratio < 1.0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, T, V) of the reply tokens (step by step under scheduled sampling)."""
        src, lengths, decoder_input = batch["src"], batch["src_lengths"], batch["decoder_input"]
        if self._stepwise:
            ratio = self.teacher_forcing_ratio
            return scheduled_sampling_logits(self.net, src, lengths, decoder_input, ratio)
        return self.net(src, lengths, decoder_input)

    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        if self._stepwise:  # scheduled sampling: step by step, logits then the loss
            keep = batch["target"] != self.config.pad_id  # (B, T)
            return summed_nll(self(batch)[keep], batch["target"][keep], label_smoothing)
        return self.net.nll(
            batch["src"],
            batch["src_lengths"],
            batch["decoder_input"],
            batch["target"],
            label_smoothing,
        )

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["target"] != self.config.pad_id).sum()

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Embedding + encoder at `lr`, decoder at `lr * decoder_lr_ratio` (as in the tutorial)."""
        decoder = list(self.net.decoder.parameters())
        decoder_ids = {id(p) for p in decoder}
        others = [p for p in self.net.parameters() if id(p) not in decoder_ids]
        return [
            {"params": others, "lr": lr},
            {"params": decoder, "lr": lr * self.decoder_lr_ratio},
        ]

    # -- replies -------------------------------------------------------------------------------
    reference_key = "target"

    @torch.no_grad()
    def generate_ids(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoding: DecodingConfig | Any | None = None,
    ) -> torch.Tensor:
        """Reply ids (B, L), `<pad>` after `<eos>`, decoded with `decoding` (default: self.decoding;
        `max_length: null` means `max_reply_length`)."""
        tok = self.tokenizer
        return generate(
            self.net,
            src,
            src_lengths,
            self.resolve_decoding(decoding),
            default_max_length=self.max_reply_length,
            ignore_ids=(tok.sep_id, tok.unk_id),
            unk_id=tok.unk_id,  # generated only with `decoding.allow_unk`
        )

    def reply_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return batch["src"], batch["src_lengths"]

    def prompt_inputs(
        self,
        contexts: Sequence[Sequence[str]],
        personas: Personas = None,
        max_source_length: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        return self.encode_contexts(contexts, max_source_length or 100, personas)

    def context_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        tok = self.tokenizer
        return [tok.decode(row).replace(" <sep> ", " | ") for row in batch["src"].tolist()]

    def encode_contexts(
        self,
        contexts: Sequence[Sequence[str]],
        max_source_length: int = 100,
        personas: Personas = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-text contexts -> padded source ids (B, S) ending in <eos>, and their lengths.

        Persona lines come first (as in training on persona data); a source longer than
        `max_source_length` keeps its end.
        """
        tok = self.tokenizer
        rows = []
        for k, ctx in enumerate(contexts):
            ids = tok.encode_context(persona_lines(personas, k), ctx)[-(max_source_length - 1) :]
            rows.append([*ids, tok.eos_id])
        src = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            src[i, : len(row)] = torch.tensor(row)
        return src.to(self.device), torch.tensor([len(r) for r in rows])

    @torch.no_grad()
    def attention_map(
        self, src: torch.Tensor, src_lengths: torch.Tensor, reply_ids: torch.Tensor
    ) -> torch.Tensor:
        """Attention (B, T, S) over the source while producing `reply_ids` (B, T).

        Teacher-forced over [<sos>, reply_ids[:-1]]: the same weights the decoder had when it
        generated those tokens (there is no input feeding).
        """
        net = self.net
        sos = reply_ids.new_full((reply_ids.size(0), 1), self.config.sos_id)
        decoder_input = torch.cat([sos, reply_ids[:, :-1]], dim=1)
        encoder_outputs, state, src_mask = net.encode(src, src_lengths)
        _, _, weights = net.decoder(decoder_input, state, encoder_outputs, src_mask)
        return weights


def scheduled_sampling_logits(
    net: GRUAttnSeq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    decoder_input: torch.Tensor,
    teacher_forcing_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Step-by-step logits (B, T, V) with per-example, per-step teacher forcing.

    Step 0 reads decoder_input[:, 0] (sos). At step t > 0 each example reads the gold
    decoder_input[:, t] with probability teacher_forcing_ratio, else the argmax of its own
    step t-1 logits. With ratio 1.0 (and no dropout) this equals forward().
    """
    B, T = decoder_input.shape
    encoder_outputs, state, src_mask = net.encode(src, src_lengths)
    token = decoder_input[:, :1]  # (B, 1)
    step_logits: list[torch.Tensor] = []
    for t in range(T):
        if t > 0:
            draw = torch.rand(B, generator=generator, device=decoder_input.device)  # (B,)
            use_gold = draw < teacher_forcing_ratio  # always True at 1.0, never at 0.0
            predicted = step_logits[-1].argmax(dim=-1)  # (B, 1)
            token = torch.where(use_gold.unsqueeze(1), decoder_input[:, t : t + 1], predicted)
        logits, state, _ = net.decoder(token, state, encoder_outputs, src_mask)  # (B, 1, V)
        step_logits.append(logits)
    return torch.cat(step_logits, dim=1)  # (B, T, V)
