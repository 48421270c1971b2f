"""Persona-conditioned dialogues, one JSON object a line, in either of two forms:

A. `{"input persona": str, "synthesized text": str}` (PersonaHub style; other keys ignored):
   one bot turn conditioned on the persona.
B. `{"persona": str | [str, ...], "turns": [str, ...]}`: speakers alternate user/bot so that
   the last turn is the bot's.

The group of a dialogue (either form) is its persona text, so one persona never lands in two
splits: the validation and test personas are unseen in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dialoglab.data.corpora.base import file_info, finish, problem
from dialoglab.data.dialogue import Dialogue, ReadStats, Turn
from dialoglab.errors import DataError

FORMS = (
    'accepted forms: {"input persona": str, "synthesized text": str} or '
    '{"persona": str | [str, ...], "turns": [str, ...]}'
)
_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
_KINDS[type(None)] = "null"


class PersonaJsonlReader:
    """Reads a persona jsonl file; strict (the default) raises at the first bad line."""

    group_by = "persona"  # one persona text never lands in two splits

    def __init__(self, path: str | Path, strict: bool = True) -> None:
        self.path = Path(path)
        self.strict = strict

    def fingerprint(self) -> dict[str, Any]:
        return {
            "reader": "persona_jsonl",
            "path": str(self.path.resolve()),
            "files": file_info([self.path]),
            "strict": self.strict,
        }

    def read(self) -> tuple[list[Dialogue], ReadStats]:
        if not self.path.is_file():
            what = "is a folder, not a file" if self.path.is_dir() else "not found"
            raise DataError(f"persona file {what}; set data.path=FILE.jsonl", str(self.path))
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise DataError(f"not UTF-8 text ({err.reason})", str(self.path), line) from err
        stats = ReadStats()
        dialogues: list[Dialogue] = []
        nonblank = 0
        for lineno, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            nonblank += 1
            result = _parse(row, lineno, self.path.stem)
            if isinstance(result, str):
                problem(stats, self.strict, result, self.path, lineno)
            else:
                dialogues.append(result)
        if nonblank == 0:
            raise DataError(f"empty file: expected one JSON object a line; {FORMS}", str(self.path))
        if not dialogues:
            raise DataError(f"no usable line ({stats.summary()}); {FORMS}", str(self.path))
        finish(stats, self.strict, source=str(self.path), kept=len(dialogues))
        return dialogues, stats


def _text(obj: dict, key: str) -> str:
    """obj[key] as a non-empty string; raises ValueError with the reason otherwise."""
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"key {key!r} is {type(value).__name__}, expected a string")
    if not value.strip():
        raise ValueError(f"key {key!r} is empty")
    return value.strip()


def _parse(row: str, lineno: int, stem: str) -> Dialogue | str:
    """The dialogue on one line, or why the line is unusable."""
    try:
        obj = json.loads(row)
    except json.JSONDecodeError as err:
        return f"invalid JSON ({err.msg} at column {err.colno})"
    if not isinstance(obj, dict):
        kind = _KINDS.get(type(obj), type(obj).__name__)
        return f"line is {kind}, expected a JSON object; {FORMS}"
    dialogue_id = f"{stem}:{lineno}"
    try:
        if "persona" in obj or "turns" in obj:
            return _form_b(obj, dialogue_id)
        if "input persona" in obj or "synthesized text" in obj:
            persona = [_text(obj, "input persona")]
            turns = [Turn("bot", _text(obj, "synthesized text"))]
            return Dialogue(id=dialogue_id, turns=turns, group=persona[0], persona=persona)
        return f"no known keys (got {sorted(obj)[:5]}); {FORMS}"
    except KeyError as err:
        return f"missing key {err.args[0]!r}; {FORMS}"
    except ValueError as err:
        return str(err)


def _form_b(obj: dict, dialogue_id: str) -> Dialogue:
    persona_value = obj["persona"]
    if isinstance(persona_value, str):
        persona = [_text(obj, "persona")]
    elif isinstance(persona_value, list):
        if not all(isinstance(p, str) for p in persona_value):
            bad = next(p for p in persona_value if not isinstance(p, str))
            raise ValueError(f"key 'persona' holds a {type(bad).__name__}, expected strings")
        persona = [p.strip() for p in persona_value if p.strip()]
        if not persona:
            raise ValueError("key 'persona' is empty")
    else:
        kind = type(persona_value).__name__
        raise ValueError(f"key 'persona' is {kind}, expected a string or a list of strings")
    turns_value = obj["turns"]
    if not isinstance(turns_value, list):
        raise ValueError(f"key 'turns' is {type(turns_value).__name__}, expected a list of strings")
    if not turns_value:
        raise ValueError("key 'turns' is an empty list")
    for i, turn in enumerate(turns_value):
        if not isinstance(turn, str):
            raise ValueError(f"key 'turns' item {i} is {type(turn).__name__}, expected a string")
        if not turn.strip():
            raise ValueError(f"key 'turns' item {i} is empty")
    n = len(turns_value)
    turns = [
        Turn("bot" if (n - 1 - i) % 2 == 0 else "user", t.strip())
        for i, t in enumerate(turns_value)
    ]
    return Dialogue(id=dialogue_id, turns=turns, group="\n".join(persona), persona=persona)
