"""GPT-2 stepped token by token with a KV cache, for our own search (`dialoglab.generation`).

`GPT2Stepper` runs a Hugging Face `GPT2LMHeadModel`'s own layers (held in fp32, bf16 or int8 by
`quantize_model`: it calls each projection module, whatever it has become) through a plain
forward written out below, and gives it the interface `generation.generate` searches with:

    encode(prompt_ids, lengths) -> (memory, state, prompt_mask)
    decoder(token, state, memory, prompt_mask) -> (logits (N, 1, V), state, None)

so GPT-2 replies are decoded by the same greedy, beam and sampling code, with the same logit
processors, as gru_attn's. Why not `generate()`: at batch 1 a 4 x 256 GPT-2 spends more time
in Hugging Face's per-token Python (cache objects, mask building, processors, output records)
than in its layers; `python -m dialoglab.bench --only replies` times both.

The prompts follow `HFTokenizer`'s layout: left-padded, ending in the reply's start marker
(`<bot>`). `encode` runs all but that last token into the cache; the search then feeds the
marker as its start token (`config.sos_id`), as it feeds `<sos>` to gru_attn's decoder. Positions
and token types are what `generate()` gives GPT-2: positions count the row's real tokens (padding
at 0), and every fed token has the token type of the prompt's last token.
Inference only: dropout is off, whatever the module's mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Activations run as one fused op (the same tanh approximation as Hugging Face's modules).
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


@dataclass(frozen=True)
class StepperIds:
    """The ids the search needs (`net.config` in `generation`): <pad>, the start marker, <eot>."""

    pad_id: int
    sos_id: int
    eos_id: int
    vocab_size: int


class GPT2Stepper:
    """A `GPT2LMHeadModel` (any of `quantize_model`'s weight forms) as `generation` steps it.

    State, batch on dim 1 as the search reorders it: per layer its keys and values, each
    (1, N, heads, T, head_dim), then the next position (1, N) and the fed tokens' type (1, N).
    """

    def __init__(
        self,
        model: nn.Module,
        start_id: int,
        eos_id: int,
        pad_id: int,
        prompt_types: torch.Tensor | None = None,
    ) -> None:
        if not self.supports(model):
            raise ValueError(f"GPT2Stepper: unsupported model {type(model).__name__}")
        self.model = model
        c = model.config
        self.n_head = int(c.n_head)
        self.width = int(c.n_embd)
        self.eps = float(c.layer_norm_epsilon)
        self.tanh_gelu = c.activation_function in TANH_GELUS
        self.config = StepperIds(pad_id, start_id, eos_id, int(c.vocab_size))
        self.prompt_types = prompt_types  # (B, S) token types of the prompts, or None

    @staticmethod
    def supports(model: Any) -> bool:
        """A GPT-2 LM head model without cross-attention (the architecture written out here)."""
        from transformers import GPT2LMHeadModel

        return isinstance(model, GPT2LMHeadModel) and not model.config.add_cross_attention

    # -- the search's interface -----------------------------------------------------------------
    def encode(
        self, prompt_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """Run the left-padded prompts (B, S) of `lengths` real tokens, but their last token,
        into the cache.

        Returns the key mask of the cached part ((B, S - 1) bool, or (B, 0) when nothing is
        padded, which lets every step skip the mask), the state, and the prompts' mask (B, S).
        """
        S = prompt_ids.size(1)
        device = prompt_ids.device
        prompt_mask = torch.arange(S, device=device).unsqueeze(0) >= (S - lengths).unsqueeze(1)
        head_mask = prompt_mask[:, :-1]  # (B, S-1)
        padded = not bool(head_mask.all())
        positions = (head_mask.long().cumsum(-1) - 1).clamp(min=0)  # padding at 0, as generate
        types = self.prompt_types
        attn_mask = None
        if padded:  # causal over real keys; a padding row sees itself (finite, never attended)
            causal = torch.ones(S - 1, S - 1, dtype=torch.bool, device=device).tril()
            eye = torch.eye(S - 1, dtype=torch.bool, device=device)
            attn_mask = (causal & (head_mask.unsqueeze(1) | eye)).unsqueeze(1)  # (B, 1, S-1, S-1)
        _, caches = self._blocks(
            prompt_ids[:, :-1],
            positions,
            None if types is None else types[:, :-1],
            None,
            attn_mask,
        )
        next_pos = head_mask.sum(dim=1)  # (B,): the start marker's position
        fed_type = torch.zeros_like(next_pos) if types is None else types[:, -1].long()
        state = (*caches, next_pos.unsqueeze(0), fed_type.unsqueeze(0))
        memory = head_mask if padded else head_mask[:, :0]
        return memory, state, prompt_mask

    def decoder(
        self,
        token: torch.Tensor,
        state: tuple[torch.Tensor, ...],
        memory: torch.Tensor,
        prompt_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], None]:
        """One token per row (N, 1) in; next-token logits (N, 1, V) and the grown state out."""
        *caches, next_pos, fed_type = state
        N = token.size(0)
        attn_mask = None
        if memory.size(1):  # padded prompts: mask their padding among the cached keys
            fresh = caches[0].size(3) - memory.size(1) + 1  # fed tokens, this one included
            real = torch.ones(N, fresh, dtype=torch.bool, device=token.device)
            attn_mask = torch.cat([memory, real], dim=1)[:, None, None, :]  # (N, 1, 1, T+1)
        types = None if self.prompt_types is None else fed_type.view(N, 1)
        hidden, caches = self._blocks(token, next_pos.view(N, 1), types, caches, attn_mask)
        t = self.model.transformer
        hidden = F.layer_norm(hidden, (self.width,), t.ln_f.weight, t.ln_f.bias, self.eps)
        logits = self.model.lm_head(hidden)  # (N, 1, V)
        return logits, (*caches, next_pos + 1, fed_type), None

    # -- the model, written out -----------------------------------------------------------------
    def _blocks(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        types: torch.Tensor | None,
        caches: list[torch.Tensor] | None,
        attn_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states (N, T, C) after the last block for T new tokens, and every layer's keys
        and values with theirs appended. Without a mask, T > 1 tokens attend causally."""
        t = self.model.transformer
        N, T = ids.shape
        C, nh = self.width, self.n_head
        hd = C // nh
        x = t.wte(ids) + t.wpe(positions)  # (N, T, C)
        if types is not None:
            x = x + t.wte(types)
        grown: list[torch.Tensor] = []
        for i, block in enumerate(t.h):
            h = F.layer_norm(x, (C,), block.ln_1.weight, block.ln_1.bias, self.eps)
            q, k, v = block.attn.c_attn(h).split(C, dim=2)  # 3 x (N, T, C)
            q = q.view(N, T, nh, hd).transpose(1, 2)  # (N, nh, T, hd)
            k = k.view(N, T, nh, hd).transpose(1, 2).unsqueeze(0)  # (1, N, nh, T, hd)
            v = v.view(N, T, nh, hd).transpose(1, 2).unsqueeze(0)
            if caches is not None:
                k = torch.cat([caches[2 * i], k], dim=3)
                v = torch.cat([caches[2 * i + 1], v], dim=3)
            grown += [k, v]
            if T:
                a = F.scaled_dot_product_attention(
                    q,
                    k[0],
                    v[0],
                    attn_mask=attn_mask,
                    is_causal=attn_mask is None and T > 1,
                    scale=block.attn.scaling,
                )  # (N, nh, T, hd)
                x = x + block.attn.c_proj(a.transpose(1, 2).reshape(N, T, C))
                h = F.layer_norm(x, (C,), block.ln_2.weight, block.ln_2.bias, self.eps)
                h = block.mlp.c_fc(h)
                h = F.gelu(h, approximate="tanh") if self.tanh_gelu else block.mlp.act(h)
                x = x + block.mlp.c_proj(h)
        return x, grown
