"""Seq2SeqModule: the GRU/LSTM encoder + Luong-attention decoder trained as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dialoglab.data.tokenization import WordTokenizer
from dialoglab.generation import DecodingConfig, generate
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq
from dialoglab.models.components.linear_cross_entropy import summed_nll
from dialoglab.models.dialogue_module import DialogueModule, eval_mode


class Seq2SeqModule(DialogueModule):
    """Teacher-forced training of `GRUAttnSeq2Seq` (whole target in one decoder call when the
    teacher-forcing ratio is 1; the step-by-step scheduled-sampling path when it is below 1)."""

    family = "seq2seq"

    def __init__(
        self,
        tokenizer: WordTokenizer,
        optimizer: Callable[..., torch.optim.Optimizer],
        hidden_size: int = 500,
        encoder_n_layers: int = 2,
        decoder_n_layers: int = 2,
        dropout: float = 0.1,
        attention: str = "dot",
        rnn_type: str = "gru",
        teacher_forcing_ratio: float = 1.0,
        label_smoothing: float = 0.0,
        decoder_lr_ratio: float = 5.0,
        max_reply_length: int = 20,
        scheduler: Callable[..., Any] | None = None,
        val_generate: int = 256,
        n_samples: int = 8,
        fused_rnn: bool = True,
    ) -> None:
        super().__init__(tokenizer, optimizer, scheduler, val_generate, n_samples)
        self.save_hyperparameters(ignore=["tokenizer", "optimizer", "scheduler"])
        self.config = GRUAttnConfig(
            vocab_size=len(tokenizer),
            pad_id=tokenizer.pad_id,
            sos_id=tokenizer.sos_id,
            eos_id=tokenizer.eos_id,
            hidden_size=hidden_size,
            encoder_n_layers=encoder_n_layers,
            decoder_n_layers=decoder_n_layers,
            dropout=dropout,
            attention=attention,
            rnn_type=rnn_type,
        )
        self.net = GRUAttnSeq2Seq(self.config)
        self.net.fused_rnn = fused_rnn
        self.teacher_forcing_ratio = teacher_forcing_ratio
        self._label_smoothing = label_smoothing
        self.decoder_lr_ratio = decoder_lr_ratio
        self.max_reply_length = max_reply_length

    @property
    def label_smoothing(self) -> float:
        return self._label_smoothing

    @property
    def _stepwise(self) -> bool:
        """Whether training decodes step by step (scheduled sampling) rather than teacher-forced
        in one call."""
        return self.training and self.teacher_forcing_ratio < 1.0

    def forward(
        self, batch: dict[str, torch.Tensor], keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V) of the reply tokens; (N, V) at the positions where `keep` is True."""
        if self._stepwise:
            logits = self.net.forward_stepwise(
                batch["src"],
                batch["src_lengths"],
                batch["decoder_input"],
                self.teacher_forcing_ratio,
            )
            return logits if keep is None else logits[keep]
        return self.net(batch["src"], batch["src_lengths"], batch["decoder_input"], keep)

    def nll(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
        if self._stepwise:  # scheduled sampling: step by step, logits then the loss
            keep = batch["target"] != self.config.pad_id  # (B, T): no output layers on padding
            return summed_nll(self(batch, keep), batch["target"][keep], label_smoothing)
        return reply_nll(self.net, batch, label_smoothing)

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
    def _decoding(self, decoding: DecodingConfig | Any | None) -> DecodingConfig:
        return self.decoding if decoding is None else DecodingConfig.from_any(decoding)

    @torch.no_grad()
    def generate_ids(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        decoding: DecodingConfig | None = None,
    ) -> torch.Tensor:
        """Reply ids (B, L), `<pad>` after `<eos>`, decoded with `decoding` (default: self.decoding;
        `max_length: null` means `max_reply_length`)."""
        tok = self.tokenizer
        return generate(
            self.net,
            src,
            src_lengths,
            self._decoding(decoding),
            default_max_length=self.max_reply_length,
            ignore_ids=(tok.sep_id, tok.unk_id),
        )

    def generate_replies(self, batch: dict[str, torch.Tensor]) -> list[str]:
        tokens = self.generate_ids(batch["src"], batch["src_lengths"]).tolist()
        return [self.tokenizer.decode(row) for row in tokens]

    def reference_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        return [self.tokenizer.decode(row) for row in batch["target"].tolist()]

    def context_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        tok = self.tokenizer
        return [tok.decode(row).replace(" <sep> ", " | ") for row in batch["src"].tolist()]

    def encode_contexts(
        self,
        contexts: Sequence[Sequence[str]],
        max_source_length: int = 100,
        personas: Sequence[Sequence[str] | str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-text contexts -> padded source ids (B, S) ending in <eos>, and their lengths.

        Persona lines come first (as in training on persona data); a source longer than
        `max_source_length` keeps its end.
        """
        tok = self.tokenizer
        rows = []
        for k, ctx in enumerate(contexts):
            persona = personas[k] if personas else ()
            persona = [persona] if isinstance(persona, str) else list(persona)
            ids = tok.encode_context(persona, ctx)[-(max_source_length - 1) :]
            rows.append([*ids, tok.eos_id])
        src = torch.full((len(rows), max(map(len, rows))), tok.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            src[i, : len(row)] = torch.tensor(row)
        return src.to(self.device), torch.tensor([len(r) for r in rows])

    @torch.no_grad()
    def reply(
        self,
        contexts: Sequence[Sequence[str]],
        personas: Sequence[Sequence[str] | str] | None = None,
        decoding: DecodingConfig | None = None,
        max_source_length: int = 100,
    ) -> list[str]:
        with eval_mode(self):
            src, lengths = self.encode_contexts(contexts, max_source_length, personas)
            ids = self.generate_ids(src, lengths, decoding).tolist()
        return [self.tokenizer.decode(row) for row in ids]

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


def reply_nll(
    net: GRUAttnSeq2Seq, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0
) -> torch.Tensor:
    """Seq2SeqModule.nll for a plain network: teacher-forced, output layers and loss on the real
    reply tokens only, none on padding."""
    return net.nll(
        batch["src"], batch["src_lengths"], batch["decoder_input"], batch["target"], label_smoothing
    )
