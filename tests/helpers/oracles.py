"""Reference implementations the tests hold faster code to: short, obvious, slow."""

from __future__ import annotations

import torch

from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq


@torch.no_grad()
def greedy_decode(
    net: GRUAttnSeq2Seq, src: torch.Tensor, lengths: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched greedy decoding -> tokens (B, L) with pad after eos, attention (B, L, S).

    Starts every sequence from sos; a sequence that has produced eos then emits pad (and zero
    attention). L <= max_len is the length of the longest output, eos included. Call
    net.eval() first if dropout should be off.
    """
    B, S = src.shape
    config = net.config
    pad_id, eos_id = config.pad_id, config.eos_id
    encoder_outputs, state, src_mask = net.encode(src, lengths)
    token = torch.full((B, 1), config.sos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
    step_tokens, step_attention = [], []
    for _ in range(max_len):
        logits, state, weights = net.decoder(token, state, encoder_outputs, src_mask)
        next_token = logits[:, -1].argmax(dim=-1).masked_fill(finished, pad_id)  # (B,)
        step_tokens.append(next_token)
        step_attention.append(weights[:, -1].masked_fill(finished.unsqueeze(1), 0.0))
        finished = finished | (next_token == eos_id)
        token = next_token.unsqueeze(1)  # (B, 1)
        if bool(finished.all()):
            break
    if not step_tokens:  # max_len <= 0
        return src.new_empty(B, 0), encoder_outputs.new_zeros(B, 0, S)
    tokens = torch.stack(step_tokens, dim=1)  # (B, L)
    attention = torch.stack(step_attention, dim=1)  # (B, L, S)
    return tokens, attention
