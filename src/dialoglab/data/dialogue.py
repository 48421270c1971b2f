"""Dialogue records shared by every reader, and how they become training examples and splits."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Turn:
    """One utterance: who said it and what they said."""

    speaker: str
    text: str


@dataclass
class Dialogue:
    """An ordered conversation. `group` is the unit of splitting (a movie for Cornell)."""

    id: str
    turns: list[Turn]
    group: str
    persona: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Example:
    """What a model learns from: reply to `context` (oldest turn first), optionally as `persona`."""

    context: tuple[str, ...]
    response: str
    persona: tuple[str, ...] = ()
    dialogue_id: str = ""


@dataclass
class ReadStats:
    """What a reader skipped, by kind, with the first few places of each kind, so a user can see
    how much of the corpus was lost, why, and where to look. A kind never names an id or a line
    (those go in its examples), so a million skipped rows still summarise in a few lines."""

    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        places = self.examples.setdefault(reason, [])
        if len(places) < self.max_examples:
            places.append(where)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """`skipped N rows`, then one line per kind, most frequent first, with a few places."""
        lines = [f"skipped {self.total_skipped} rows"]
        for reason, n in sorted(self.skipped.items(), key=lambda item: (-item[1], item[0])):
            places = ", ".join(self.examples.get(reason, []))
            lines.append(f"  {n} {reason}" + (f" (e.g. {places})" if places else ""))
        return "\n".join(lines)


def build_examples(dialogues: Iterable[Dialogue], context_turns: int) -> list[Example]:
    """Every turn after the first becomes a response to the `context_turns` turns before it.

    `context_turns=0` gives single-turn pairs (previous turn -> reply), as in the PyTorch
    chatbot tutorial; `context_turns=k > 0` keeps up to k previous turns, so speakers alternate
    within the context exactly as they did in the dialogue.
    """
    if context_turns < 0:
        raise ValueError(f"data.context_turns must be >= 0, got {context_turns}")
    window = max(1, context_turns)
    examples = []
    for dialogue in dialogues:
        texts = [turn.text for turn in dialogue.turns]
        persona, dialogue_id = tuple(dialogue.persona), dialogue.id
        examples += [
            Example(tuple(texts[max(0, i - window) : i]), texts[i], persona, dialogue_id)
            for i in range(1, len(texts))
        ]
        if persona and len(texts) == 1:  # persona data: a single reply conditioned on the persona
            examples.append(Example((), texts[0], persona, dialogue.id))
    return examples


def split_by_group(
    dialogues: Sequence[Dialogue], ratios: Sequence[float], seed: int
) -> list[list[Dialogue]]:
    """Split dialogues into len(ratios) parts so that no group (movie) lands in two parts.

    Deterministic for a given seed: groups are sorted, shuffled with their own RNG, and each
    goes to the part that is furthest below its share of dialogues, so every part with a
    positive ratio gets a group as long as there are enough groups.
    """
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"data.split ratios must be non-negative and sum > 0, got {list(ratios)}")
    by_group: dict[str, list[Dialogue]] = {}
    for dialogue in dialogues:
        by_group.setdefault(dialogue.group, []).append(dialogue)
    groups = sorted(by_group)
    random.Random(seed).shuffle(groups)

    share = [r / sum(ratios) for r in ratios]
    active = [i for i, s in enumerate(share) if s > 0]
    parts: list[list[Dialogue]] = [[] for _ in ratios]
    for group in groups:
        target = min(active, key=lambda i: (len(parts[i]) / share[i], i))
        parts[target].extend(by_group[group])
    return parts
