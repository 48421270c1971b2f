"""Search over a network that encodes once and steps a decoder: `GRUAttnSeq2Seq` (or any
network with the same encode / one-token decoder interface).

Batched greedy, beam search and sampling that encode once, step the decoder with its state, stop
at `<eos>`, and never copy a value to the host per token (whether every sequence has finished is
checked every `check_every` steps, one sync each time).

Lengths count generated tokens, `<eos>` included: `max_length=20` gives at most 19 words and
`<eos>`. Beam hypotheses are ranked by `sum log p / length ** length_penalty`; an example's search
ends when no live beam can still beat its `num_beams` finished ones (Hugging Face's
`early_stopping="never"`), or with `early_stopping=True` as soon as it has them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from dialoglab.generation.config import DecodingConfig
from dialoglab.generation.mmi import mmi_pick
from dialoglab.generation.processors import (
    BANNED,
    LogitProcessors,
    not_ignored,
    top_k_top_p_filter,
)


def generate(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig | None = None,
    *,
    default_max_length: int = 20,
    ignore_ids: Sequence[int] = (),
    unk_id: int | None = None,
) -> torch.Tensor:
    """Replies (B, L) of a `GRUAttnSeq2Seq` (or a network like it), `<pad>` after each `<eos>`;
    L <= max_length.

    `net` has `config` (pad_id, sos_id, eos_id, vocab_size), `encode(src, src_lengths) ->
    (memory, state, src_mask)` and `decoder(token, state, memory, src_mask) -> (logits, state,
    _)`; every tensor of the state (a tuple, nested or not) has the batch on dim 1, the memory on
    dim 0. The first token fed is `sos_id`.
    `ignore_ids` are tokens besides pad/sos/eos that start no context n-gram and that no reply
    holds (e.g. `<sep>`, `<unk>`), except `unk_id` with `config.allow_unk`. Beam search with
    `config.mmi_lambda > 0` reranks its finished replies (`mmi.py`). Call `net.eval()` first if
    dropout should be off.
    """
    config = config or DecodingConfig()
    max_length = config.resolved_max_length(default_max_length)
    strategy = config.effective_strategy
    never = tuple(i for i in ignore_ids if not (config.allow_unk and i == unk_id))
    with torch.no_grad():
        if strategy == "beam":
            return beam_search(net, src, src_lengths, config, max_length, ignore_ids, never)
        return greedy_or_sample(net, src, src_lengths, config, max_length, ignore_ids, never)


def _special_ids(net: Any, ignore_ids: Sequence[int]) -> tuple[int, ...]:
    c = net.config
    return (c.pad_id, c.sos_id, c.eos_id, *ignore_ids)


def _repeat_state(state: Any, k: int) -> Any:
    if isinstance(state, tuple):
        return tuple(_repeat_state(s, k) for s in state)
    return state.repeat_interleave(k, dim=1)  # (L, B*k, H)


def _select_state(state: Any, index: torch.Tensor) -> Any:
    if isinstance(state, tuple):
        return tuple(_select_state(s, index) for s in state)
    return state.index_select(1, index)


def _trim(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Cut (B, L) tokens to the longest reply (one host sync)."""
    if tokens.size(1) == 0:
        return tokens
    is_eos = tokens == eos_id
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, tokens.size(1))
    return tokens[:, : int(lengths.max())]


def _start(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig,
    ignore_ids: Sequence[int],
    never_ids: Sequence[int],
    repeats: int = 1,
) -> tuple[Callable[..., tuple[torch.Tensor, Any]], Any]:
    """Encode once, each example's rows `repeats` times (beams): the step both searches take,
    `(token, state, history, seen) -> (processed fp32 logits, state)`, and the decoder's first
    state. No reply holds `<pad>`, `<sos>` or `never_ids`."""
    c = net.config
    memory, state, mask = net.encode(src, src_lengths)
    valid = mask & not_ignored(src, _special_ids(net, ignore_ids))
    if repeats > 1:
        src, valid, memory, mask = (
            t.repeat_interleave(repeats, dim=0) for t in (src, valid, memory, mask)
        )
        state = _repeat_state(state, repeats)
    never = tuple(dict.fromkeys((c.pad_id, c.sos_id, *never_ids)))
    processors = LogitProcessors(config, c.vocab_size, c.eos_id, src, valid, never)

    def step(
        token: torch.Tensor, state: Any, history: torch.Tensor, seen: torch.Tensor | None
    ) -> tuple[torch.Tensor, Any]:
        logits, state, _ = net.decoder(token, state, memory, mask)
        return processors(logits[:, -1].float(), history, seen), state

    return step, state


def greedy_or_sample(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig,
    max_length: int,
    ignore_ids: Sequence[int] = (),
    never_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Batched greedy (argmax) or sampled decoding with the logit processors; (B, L) tokens;
    no reply holds `never_ids`."""
    B = src.size(0)
    device = src.device
    pad_id, sos_id, eos_id = net.config.pad_id, net.config.sos_id, net.config.eos_id
    V = net.config.vocab_size
    sample = config.effective_strategy == "sample"
    generator = None
    if sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    step_fn, state = _start(net, src, src_lengths, config, ignore_ids, never_ids)
    track_seen = config.repetition_penalty != 1.0
    seen = torch.zeros(B, V, dtype=torch.bool, device=device) if track_seen else None
    token = torch.full((B, 1), sos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    history = torch.empty(B, 0, dtype=torch.long, device=device)
    for step in range(max_length):
        logits, state = step_fn(token, state, history, seen)  # (B, V)
        if sample:
            logits = top_k_top_p_filter(logits / config.temperature, config.top_k, config.top_p)
            probs = logits.softmax(dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_token = logits.argmax(dim=-1)  # (B,)
        next_token = next_token.masked_fill(finished, pad_id)
        history = torch.cat([history, next_token.unsqueeze(1)], dim=1)
        if seen is not None:
            seen.scatter_(1, next_token.unsqueeze(1), True)
        finished = finished | (next_token == eos_id)
        token = next_token.unsqueeze(1)
        if (step + 1) % config.check_every == 0 and bool(finished.all()):
            break
    return _trim(history, eos_id)


# -----------------------------------------------------------------------------
# Beam search


@dataclass
class _Pool:
    """Each example's K best finished hypotheses: normalised scores (B, K), tokens (B, K, L)."""

    scores: torch.Tensor
    tokens: torch.Tensor
    pad_id: int

    @classmethod
    def empty(cls, B: int, K: int, max_length: int, pad_id: int, device: torch.device) -> _Pool:
        scores = torch.full((B, K), float("-inf"), device=device)
        tokens = torch.full((B, K, max_length), pad_id, dtype=torch.long, device=device)
        return cls(scores, tokens, pad_id)

    @property
    def full(self) -> torch.Tensor:
        """(B,) True where the pool holds K hypotheses."""
        return self.scores[:, -1] > -torch.inf

    def join(self, cand_scores: torch.Tensor, cand_tokens: torch.Tensor) -> None:
        """Merge (B, C) normalised scores and (B, C, t <= max_length) tokens into the pool."""
        K, max_length = self.tokens.size(1), self.tokens.size(2)
        missing = max_length - cand_tokens.size(-1)
        if missing > 0:
            cand_tokens = F.pad(cand_tokens, (0, missing), value=self.pad_id)
        all_scores = torch.cat([self.scores, cand_scores], dim=1)
        all_tokens = torch.cat([self.tokens, cand_tokens], dim=1)
        self.scores, index = torch.topk(all_scores, K, dim=1)
        self.tokens = all_tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, max_length))


@dataclass
class _Beams:
    """The K live beams of each example, N = B x K rows."""

    scores: torch.Tensor  # (B, K) sums of log-probs
    history: torch.Tensor  # (N, t) tokens so far
    state: Any  # the decoder's state, rows on dim 1
    seen: torch.Tensor | None  # (N, V) tokens generated (repetition penalty only)
    closed: torch.Tensor  # (B, 1) early stopping: the example's pool is final
    base: torch.Tensor  # (B, 1) first row of each example
    rank: torch.Tensor  # (1, 2K) candidate ranks

    @classmethod
    def start(cls, B: int, K: int, V: int, state: Any, track_seen: bool, device: Any) -> _Beams:
        # Only the first beam is live at the start, so the K beams do not all pick the same token.
        scores = torch.full((B, K), BANNED, device=device)
        scores[:, 0] = 0.0
        N = B * K
        return cls(
            scores=scores,
            history=torch.empty(N, 0, dtype=torch.long, device=device),
            state=state,
            seen=torch.zeros(N, V, dtype=torch.bool, device=device) if track_seen else None,
            closed=torch.zeros(B, 1, dtype=torch.bool, device=device),
            base=(torch.arange(B, device=device) * K).unsqueeze(1),
            rank=torch.arange(2 * K, device=device).unsqueeze(0),
        )


def _beam_step(
    beams: _Beams, pool: _Pool, logprobs: torch.Tensor, eos_id: int, config: DecodingConfig
) -> torch.Tensor:
    """One step: finished candidates join the pool, the K best others live on; (N, 1) tokens."""
    B, K = beams.scores.shape
    N, V = logprobs.shape
    step = beams.history.size(1)
    total = (beams.scores.view(N, 1) + logprobs).view(B, K * V)
    cand_scores, cand_index = torch.topk(total, 2 * K, dim=1)  # (B, 2K)
    cand_beam = cand_index // V  # parent beam in 0..K-1
    cand_token = cand_index % V
    parent = (beams.base + cand_beam).view(-1)  # (B*2K,) rows of history

    # Finished: <eos> among the first K candidates.
    is_eos = cand_token == eos_id
    not_finished = ~is_eos | (beams.rank >= K) | beams.closed
    length = step + 1
    finished_scores = (cand_scores / length**config.length_penalty).masked_fill(
        not_finished, -torch.inf
    )
    finished_tokens = torch.cat(
        [beams.history.index_select(0, parent).view(B, 2 * K, step), cand_token.unsqueeze(-1)],
        dim=-1,
    )
    pool.join(finished_scores, finished_tokens)
    if config.early_stopping:
        beams.closed = pool.full.unsqueeze(1)

    # Live on: the K best candidates that are not <eos> (there are always K of them).
    live_scores, live_pick = torch.topk(cand_scores.masked_fill(is_eos, -torch.inf), K, dim=1)
    live_beam = (beams.base + cand_beam.gather(1, live_pick)).view(-1)  # (N,)
    live_token = cand_token.gather(1, live_pick).view(N, 1)
    beams.scores = live_scores
    beams.history = torch.cat([beams.history.index_select(0, live_beam), live_token], dim=1)
    beams.state = _select_state(beams.state, live_beam)
    if beams.seen is not None:
        beams.seen = beams.seen.index_select(0, live_beam).scatter_(1, live_token, True)
    return live_token


def _all_done(beams: _Beams, pool: _Pool, length_penalty: float, max_length: int) -> bool:
    """Whether no example's live beams can still beat its full pool (one host sync)."""
    # Best score a live beam could still reach: log-probs only fall as it grows, and with
    # length_penalty > 0 the longest length divides most.
    bound_length = max_length if length_penalty > 0 else beams.history.size(1)
    bound = beams.scores[:, 0] / bound_length**length_penalty
    done = pool.full & (bound <= pool.scores[:, -1])
    return bool((done | beams.closed[:, 0]).all())


def beam_search(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig,
    max_length: int,
    ignore_ids: Sequence[int] = (),
    never_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Batched beam search; returns the best finished hypothesis per example, (B, L) tokens;
    no reply holds `never_ids`.

    Each step the K live beams of an example propose their 2K best continuations; those ending in
    `<eos>` among the first K go to the example's pool of K finished hypotheses (ranked by
    `score / length ** length_penalty`), the K best others live on. An example is done when its
    pool is full and no live beam can still beat the pool's worst entry (with
    `config.early_stopping`: as soon as its pool is full, which then takes no more entries); at
    `max_length` the live beams of examples not done join the pool. This is Hugging Face's beam
    search (`early_stopping="never"`, or `True`), except that banned tokens are removed before
    the log-softmax, so scores stay normalised over the tokens that may follow. Everything stays
    on the device except one check every `check_every` steps and the final trim.
    """
    B, K = src.size(0), config.num_beams
    c, lp = net.config, config.length_penalty
    step_fn, state = _start(net, src, src_lengths, config, ignore_ids, never_ids, K)
    track_seen = config.repetition_penalty != 1.0
    beams = _Beams.start(B, K, c.vocab_size, state, track_seen, src.device)
    pool = _Pool.empty(B, K, max_length, c.pad_id, src.device)
    token = torch.full((B * K, 1), c.sos_id, dtype=torch.long, device=src.device)
    for step in range(max_length):
        logits, beams.state = step_fn(token, beams.state, beams.history, beams.seen)
        token = _beam_step(beams, pool, logits.log_softmax(dim=-1), c.eos_id, config)
        check = (step + 1) % config.check_every == 0 and step + 1 < max_length
        if check and _all_done(beams, pool, lp, max_length):
            break

    # Live beams that reached the end (or the early stop) join the pool, unless it is closed.
    length = beams.history.size(1)
    live_normalised = (beams.scores / max(length, 1) ** lp).masked_fill(beams.closed, -torch.inf)
    pool.join(live_normalised, beams.history.view(B, K, length))
    if config.mmi_lambda > 0:
        best = mmi_pick(net, pool.scores, pool.tokens, config)
        return _trim(pool.tokens[torch.arange(B, device=src.device), best], c.eos_id)
    return _trim(pool.tokens[:, 0], c.eos_id)
