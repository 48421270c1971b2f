"""Logit processors: tensors in, tensors out, no host syncs.

Applied in this order to the raw next-token logits (as Hugging Face does): `repetition_penalty`
(CTRL: a logit of a token already generated is divided by the penalty when positive, multiplied
when negative), `no_repeat_ngram_size` (a token that would repeat an n-gram of the reply is
banned), `block_context_ngram_size` (a token that would repeat an n-gram of the source context is
banned: the bot does not parrot the user), `min_length` (`<eos>` banned before that many tokens).
Sampling then applies `temperature`, `top_k` and `top_p` (`top_k_top_p_filter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dialoglab.generation.config import DecodingConfig

# A finite "minus infinity" for banned tokens: softmax gives them 0 and a row where everything is
# banned stays finite (no NaN), and sums of a few of them do not overflow float32.
BANNED = -1.0e9


def not_ignored(ids: torch.Tensor, ignore_ids: Sequence[int]) -> torch.Tensor:
    """True where `ids` holds none of `ignore_ids`."""
    valid = torch.ones_like(ids, dtype=torch.bool)
    for i in ignore_ids:
        valid &= ids != i
    return valid


def ngram_bans(history: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(N, V) True where the next token would repeat an n-gram already in `history` (N, t)."""
    N, t = history.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=history.device)
    if n < 1 or t < n:
        return banned
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n)
    prefix = history[:, t - n + 1 :]  # (N, n - 1): the last n-1 tokens
    match = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=-1)  # (N, W)
    return _scatter_bans(banned, windows[:, :, n - 1], match)


def context_ngram_bans(
    history: torch.Tensor, context: torch.Tensor, valid: torch.Tensor, n: int, vocab_size: int
) -> torch.Tensor:
    """(N, V) True where the next token would repeat an n-gram of `context` (N, S).

    `valid` (N, S) is False on padding and special tokens: no banned n-gram contains them.
    """
    N, t = history.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=history.device)
    if n < 1 or t < n - 1 or context.size(1) < n:
        return banned
    windows = context.unfold(1, n, 1)  # (N, W, n)
    ok = valid.unfold(1, n, 1).all(dim=-1)  # (N, W)
    if n > 1:
        prefix = history[:, t - n + 1 :]  # (N, n - 1)
        ok = ok & (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=-1)
    return _scatter_bans(banned, windows[:, :, n - 1], ok)


def _scatter_bans(banned: torch.Tensor, tokens: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    # scatter_add counts, so a token named by a matching and a non-matching window stays banned.
    counts = torch.zeros(banned.shape, dtype=torch.int32, device=banned.device)
    counts.scatter_add_(1, tokens, match.int())
    return banned | (counts > 0)


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL repetition penalty on the tokens marked in `seen` (N, V)."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def top_k_top_p_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the k most likely tokens and the smallest set holding probability top_p."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already hold top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class PromptNGramBlocker:
    """Hugging Face logits processor: ban tokens that repeat an n-gram of the prompt.

    `input_ids[:, :prompt_length]` is the prompt (context), the rest the reply so far; only the
    reply's last n-1 tokens are matched, so an n-gram spanning prompt and reply is not banned.
    """

    def __init__(self, n: int, prompt_length: int, ignore_ids: Sequence[int] = ()) -> None:
        self.n = n
        self.prompt_length = prompt_length
        self.ignore_ids = tuple(ignore_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        context = input_ids[:, : self.prompt_length]
        history = input_ids[:, self.prompt_length :]
        valid = not_ignored(context, self.ignore_ids)
        banned = context_ngram_bans(history, context, valid, self.n, scores.size(-1))
        return scores.masked_fill(banned, float("-inf"))


@dataclass
class LogitProcessors:
    """The logit processors of one decoding run, over N = batch x beams rows."""

    config: DecodingConfig
    vocab_size: int
    eos_id: int
    context: torch.Tensor  # (N, S)
    context_valid: torch.Tensor  # (N, S)
    never_ids: tuple[int, ...] = ()  # tokens no reply contains (<pad>, <sos>)
    blocked_masks: dict[bool, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __call__(
        self, logits: torch.Tensor, history: torch.Tensor, seen: torch.Tensor | None
    ) -> torch.Tensor:
        config, step = self.config, history.size(1)
        if seen is not None and config.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
        banned = None
        if config.no_repeat_ngram_size:
            banned = ngram_bans(history, config.no_repeat_ngram_size, self.vocab_size)
        if config.block_context_ngram_size:
            ctx = context_ngram_bans(
                history,
                self.context,
                self.context_valid,
                config.block_context_ngram_size,
                self.vocab_size,
            )
            banned = ctx if banned is None else banned | ctx
        if banned is not None:
            logits = logits.masked_fill(banned, BANNED)
        # <pad> and <sos> never belong in a reply; <eos> waits for min_length.
        blocked = self._blocked(step < config.min_length, logits.device)
        return logits if blocked is None else logits.masked_fill(blocked, BANNED)

    def _blocked(self, before_min_length: bool, device: torch.device) -> torch.Tensor | None:
        """(V,) bool mask of the always-blocked ids (+ <eos> before min_length), built once."""
        ids = (*self.never_ids, self.eos_id) if before_min_length else self.never_ids
        if not ids:
            return None
        cache = self.blocked_masks
        if before_min_length not in cache:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
            mask[list(ids)] = True
            cache[before_min_length] = mask
        return cache[before_min_length]
