"""MMI-antiLM reranking of beam candidates (Li et al., 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models").

A seq2seq model trained by likelihood favours replies that are likely after any message ("i
don't know."). MMI-antiLM ranks a reply T to a source S by log p(T|S) - lambda * log p(T): a
reply that is just as likely without the message loses. p(T) here is the same network's
likelihood of T after an empty source (only `<eos>`), so no separate language model is needed.
Both terms are divided by length ** length_penalty, as beam search ranks its replies.
"""

from __future__ import annotations

from typing import Any

import torch

ROWS_PER_CHUNK = 64  # teacher-forced rows scored at once: (rows, L, V) logits live at a time


def reply_lengths(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(...,) tokens of each reply up to and including its first `<eos>` (all if none)."""
    is_eos = tokens == eos_id
    first = is_eos.int().argmax(dim=-1) + 1
    return torch.where(is_eos.any(dim=-1), first, tokens.size(-1))


def _expand(value: Any, n: int) -> Any:
    """A one-row decoder state (rows on dim 1, tuples nested or not) repeated to n rows."""
    if isinstance(value, tuple):
        return tuple(_expand(v, n) for v in value)
    return value.expand(value.size(0), n, *value.shape[2:]).contiguous()


def unconditioned_logprob(net: Any, tokens: torch.Tensor) -> torch.Tensor:
    """(N,) sum of log p(token) of each reply row of `tokens` (N, L) after an empty source
    (`<eos>` alone), teacher-forced, up to and including its first `<eos>`.

    `net` has the interface `search.generate` reads (`config`, `encode`, `decoder` taking
    (N, T) tokens).
    """
    c = net.config
    N, L = tokens.shape
    device = tokens.device
    empty = torch.full((1, 1), c.eos_id, dtype=torch.long, device=device)
    memory, state, src_mask = net.encode(empty, torch.ones(1, dtype=torch.long))
    lengths = reply_lengths(tokens, c.eos_id)
    keep = torch.arange(L, device=device).unsqueeze(0) < lengths.unsqueeze(1)  # (N, L)
    sos = torch.full((N, 1), c.sos_id, dtype=torch.long, device=device)
    inputs = torch.cat([sos, tokens[:, :-1]], dim=1)
    totals = []
    for start in range(0, N, ROWS_PER_CHUNK):
        rows = slice(start, min(start + ROWS_PER_CHUNK, N))
        n = rows.stop - rows.start
        logits, _, _ = net.decoder(
            inputs[rows],
            _expand(state, n),
            memory.expand(n, *memory.shape[1:]),
            src_mask.expand(n, -1),
        )
        logp = logits.float().log_softmax(dim=-1).gather(2, tokens[rows].unsqueeze(-1))
        totals.append((logp.squeeze(-1) * keep[rows]).sum(dim=1))
    return torch.cat(totals)


def mmi_scores(
    net: Any, scores: torch.Tensor, tokens: torch.Tensor, mmi_lambda: float, length_penalty: float
) -> torch.Tensor:
    """(B, K) MMI-antiLM scores of K finished beam replies per example.

    `scores` (B, K) are the beam's own normalised scores, sum log p(T|S) / length ** lp (-inf
    for an empty slot); `tokens` (B, K, L) the replies. lambda 0 gives `scores` back.
    """
    B, K, L = tokens.shape
    if mmi_lambda == 0:
        return scores
    flat = tokens.reshape(B * K, L)
    lm = unconditioned_logprob(net, flat).view(B, K)
    lengths = reply_lengths(flat, net.config.eos_id).view(B, K).float()
    return scores - mmi_lambda * lm / lengths**length_penalty


def mmi_pick(net: Any, scores: torch.Tensor, tokens: torch.Tensor, config: Any) -> torch.Tensor:
    """(B,) index of the best of each example's K finished replies under MMI-antiLM."""
    return mmi_scores(net, scores, tokens, config.mmi_lambda, config.length_penalty).argmax(dim=1)
