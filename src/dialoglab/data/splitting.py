"""Train/val/test splits that measure generalisation: by group, and without repeated pairs.

`split_dialogues` assigns whole groups (a movie, a persona, or one conversation with
`data.split_by=conversation`) to one split. `deduplicate` then keeps every (context, reply)
pair that is identical after normalisation on one side of the split: a copy found in a later
split (val after train, test after train or val) moves to the earliest split that holds the
pair, so no validation or test example is one the model was trained on word for word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dialoglab.data.dialogue import Dialogue, Example, split_by_group
from dialoglab.data.word_splitting import split_many
from dialoglab.errors import ConfigError

SPLITS = ("train", "val", "test")
CONVERSATION = "conversation"


def split_ratios(split: Sequence[float] | str) -> tuple[float, float, float]:
    """`data.split`: three ratios (train, val, test), or `all` (every dialogue in test, for
    scoring a checkpoint on another corpus: eval needs no training split)."""
    if isinstance(split, str):
        if split.strip().lower() == "all":
            return (0.0, 0.0, 1.0)
        raise ConfigError(f"data.split must be 3 ratios (train, val, test) or 'all', got {split!r}")
    if len(split) != 3:
        raise ConfigError(f"data.split must have 3 ratios (train, val, test), got {list(split)}")
    ratios = tuple(float(r) for r in split)
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"data.split ratios must be non-negative and sum > 0, got {list(split)}")
    return ratios  # type: ignore[return-value]


def split_dialogues(
    dialogues: Sequence[Dialogue],
    ratios: Sequence[float],
    seed: int,
    split_by: str | None = None,
    group_by: str = "group",
) -> list[list[Dialogue]]:
    """Split by the reader's groups (`group_by`: movie, persona, ...), or by conversation.

    `split_by` is None or the reader's `group_by` (its own groups), or "conversation" (each
    dialogue is a group: a corpus with few usable movies still gets every split).
    """
    if split_by in (None, group_by):
        return split_by_group(dialogues, ratios, seed)
    if split_by != CONVERSATION:
        raise ConfigError(
            f"data.split_by={split_by!r}: this corpus groups dialogues by {group_by}; use "
            f"data.split_by={group_by} or data.split_by={CONVERSATION}"
        )
    regrouped = [Dialogue(d.id, d.turns, f"{CONVERSATION}:{d.id}", d.persona) for d in dialogues]
    return split_by_group(regrouped, ratios, seed)


def pair_keys(examples: Sequence[Example]) -> list[tuple[str, ...]]:
    """What makes two examples the same: persona, context turns and reply, each lowercased,
    accents folded, split into words with . ! ? , kept (so "Hi!" and "hi !" are one pair)."""
    texts = sorted({t for e in examples for t in (*e.persona, *e.context, e.response)})
    words = split_many(texts, lowercase=True, ascii_fold=True, keep_punctuation=True)
    norm = {text: " ".join(w) for text, w in zip(texts, words, strict=True)}
    return [
        (
            *(norm[p] for p in e.persona),
            "\x1f",
            *(norm[c] for c in e.context),
            "\x1e",
            norm[e.response],
        )
        for e in examples
    ]


@dataclass
class DedupStats:
    """How many examples repeat a pair seen before, and which moved where (`test->train`: n)."""

    repeated: int = 0
    moved: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.repeated:
            return "no repeated (context, reply) pair"
        text = f"{self.repeated} examples repeat an earlier (context, reply) pair"
        if self.moved:
            moves = ", ".join(
                f"{n} {route.replace('->', ' -> ')}" for route, n in sorted(self.moved.items())
            )
            text += f"; moved so each pair is in one split: {moves}"
        else:
            text += ", each within one split"
        return text

    def to_dict(self) -> dict[str, object]:
        return {"repeated": self.repeated, "moved": dict(self.moved)}


def deduplicate(
    examples: dict[str, list[Example]],
) -> tuple[dict[str, list[Example]], DedupStats]:
    """Move each example whose pair an earlier split holds into that split (train < val < test).

    Copies within one split stay (a corpus may repeat a pair on purpose); order is kept.
    """
    order = [name for name in SPLITS if name in examples]
    everything = [e for name in order for e in examples[name]]
    keys = pair_keys(everything)
    home: dict[tuple[str, ...], str] = {}
    seen: set[tuple[str, ...]] = set()
    stats = DedupStats()
    out: dict[str, list[Example]] = {name: [] for name in order}
    position = 0
    for name in order:
        for example in examples[name]:
            key = keys[position]
            position += 1
            if key in seen:
                stats.repeated += 1
            seen.add(key)
            target = home.setdefault(key, name)
            out[target].append(example)
            if target != name:
                route = f"{name}->{target}"
                stats.moved[route] = stats.moved.get(route, 0) + 1
    return out, stats
