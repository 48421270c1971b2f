"""The causal-LM example layout: how the GPT-2 family sees one dialogue example.

One example is one sequence:

    <persona> persona text  <user> turn <eot>  <bot> turn <eot> ... <user> turn <eot>  <bot> reply <eot>
    └─────── persona ──────┘└───────────────── history (left-truncated) ─────────────┘└──── reply ────┘

- The speakers alternate backwards from the reply: the turn just before the reply is `<user>`,
  the one before that `<bot>`, and so on, so the labels do not depend on the history length.
- `token_type_ids` of every token is the marker of its segment (`<persona>`, `<user>` or `<bot>`;
  `<pad>` for padding): GPT-2 adds the embedding of that marker to the token's, as in
  TransferTransfo. The reply, its `<eot>` and the tokens generated after `<bot>` are `<bot>`.
- The reply is kept whole (or filtered / cut by `length_policy`), the persona gets up to
  `max_persona_tokens`, and the history fills what is left of the token budget, dropping its
  oldest tokens first (a cut turn keeps its speaker marker).
- Labels are -100 everywhere except the reply tokens and its `<eot>`: loss on the reply only.
- `<eot>` ends every turn and is the model's `eos_token_id` (generation stops there);
  `<pad>` is a separate token (pad != eos), and `<|endoftext|>` is the bos token.

These functions work on token ids only; `HFTokenizer` turns text into ids and calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class LayoutIds:
    """The ids of the special tokens the layout is written with."""

    pad: int
    eot: int
    persona: int
    user: int
    bot: int

    @property
    def markers(self) -> frozenset[int]:
        """The segment markers: `<persona>`, `<user>`, `<bot>`."""
        return frozenset((self.persona, self.user, self.bot))


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins whose summed lengths stay within `capacity` (items never split)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return [sorted(b) for b in bins]


def token_types(ids: Sequence[int], layout: LayoutIds) -> list[int]:
    """Each token's segment marker (the last marker at or before it); padding is `<pad>`."""
    markers = layout.markers
    types = []
    current = layout.bot
    for i in ids:
        if i in markers:
            current = i
        types.append(layout.pad if i == layout.pad else current)
    return types


def prompt_ids(
    persona: Sequence[int] | None,
    turns: Sequence[Sequence[int]],
    budget: int,
    max_persona_tokens: int,
    layout: LayoutIds,
) -> list[int]:
    """`<persona> ... <user> ... <eot> ... <bot>` within `budget` tokens (history cut on the left).

    `persona` holds the ids of the persona text (None: no persona), `turns` those of each turn.
    """
    if budget < 1:
        raise ValueError(f"prompt budget must be >= 1, got {budget}")
    persona_part: list[int] = []
    room = min(max_persona_tokens, budget - 1)
    if persona is not None and room >= 2:
        persona_part = [layout.persona, *persona[: room - 1]]
    history: list[int] = []
    owner: list[int] = []  # speaker marker of each history token
    n = len(turns)
    for k, turn in enumerate(turns):
        speaker = layout.user if (n - 1 - k) % 2 == 0 else layout.bot
        segment = [speaker, *turn, layout.eot]
        history.extend(segment)
        owner.extend([speaker] * len(segment))
    room = budget - 1 - len(persona_part)
    if len(history) > room:
        cut = len(history) - max(room, 0)
        history, owner = history[cut:], owner[cut:]
        if history and history[0] == layout.eot:  # only the end of a turn was left
            history, owner = history[1:], owner[1:]
        if history and history[0] not in layout.markers:
            history[0] = owner[0]  # a cut turn keeps its speaker marker
    return [*persona_part, *history, layout.bot]


def left_pad(prompts: Sequence[Sequence[int]], layout: LayoutIds) -> dict[str, torch.Tensor]:
    """Prompts left-padded for batched generation: ids, attention mask and token types."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), layout.pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    types = torch.full((len(prompts), width), layout.pad, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
            types[row, width - len(prompt) :] = torch.tensor(token_types(prompt, layout))
    return {"prompt_ids": ids, "prompt_mask": mask, "prompt_types": types}


def right_pad(sequences: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """Sequences right-padded with `pad` into one (N, longest) long tensor."""
    out = torch.full((len(sequences), max(map(len, sequences))), pad, dtype=torch.long)
    for k, seq in enumerate(sequences):
        out[k, : len(seq)] = torch.tensor(seq)
    return out


def training_rows(
    prompts: Sequence[list[int]],
    replies: Sequence[list[int]],
    pack_to: int | None,
    layout: LayoutIds,
) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, labels (-100 outside replies), and attention_mask (right
    padding) or, when `pack_to` packs several examples into a row, position_ids restarting at 0
    for each example (padding tokens: position 0, label -100)."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, replies, strict=True)]
    if pack_to:
        rows = first_fit_decreasing(lengths, max(pack_to, *lengths))
    else:
        rows = [[k] for k in range(len(prompts))]
    shape = (len(rows), max(sum(lengths[k] for k in row) for row in rows))
    input_ids = torch.full(shape, layout.pad, dtype=torch.long)
    types = torch.full(shape, layout.pad, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for k in row:
            seq = prompts[k] + replies[k]
            end = start + len(seq)
            input_ids[r, start:end] = torch.tensor(seq)
            types[r, start:end] = torch.tensor(token_types(seq, layout))
            labels[r, start + len(prompts[k]) : end] = torch.tensor(replies[k])
            attention_mask[r, start:end] = 1
            position_ids[r, start:end] = torch.arange(len(seq))
            start = end
        if pack_to:
            # Padding of a packed row: position 0 makes each pad its own one-token segment,
            # and `<eot>` instead of `<pad>` spares transformers' "pass an attention_mask"
            # warning (packed rows have none: positions tell the examples apart).
            input_ids[r, start:] = layout.eot
    batch = {"input_ids": input_ids, "token_type_ids": types, "labels": labels}
    if pack_to:
        batch["position_ids"] = position_ids
    else:
        batch["attention_mask"] = attention_mask
    return batch
