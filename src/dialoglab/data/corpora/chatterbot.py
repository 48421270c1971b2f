"""The YAML conversations shipped by the `chatterbot-corpus` package (user/bot exchanges)."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from dialoglab.data.corpora.base import finish, problem
from dialoglab.data.dialogue import Dialogue, ReadStats, Turn
from dialoglab.errors import DataError

SPEAKERS = ("user", "bot")


def _data_root() -> Path:
    try:
        return Path(str(importlib.resources.files("chatterbot_corpus") / "data"))
    except ModuleNotFoundError as err:
        raise DataError(
            "the chatterbot-corpus package is not installed: pip install chatterbot-corpus"
        ) from err


def available_languages() -> list[str]:
    """Languages (folder names) the installed chatterbot-corpus ships."""
    return sorted(
        p.name for p in _data_root().iterdir() if p.is_dir() and not p.name.startswith("_")
    )


class ChatterbotReader:
    """Reads one language of chatterbot-corpus; `categories` limits it to some files.

    A category matches a file's stem (e.g. "ai") or one of the categories the file declares
    (case-insensitive). Each conversation is its own group, so splits are fine-grained.
    """

    group_by = "conversation"

    def __init__(
        self, language: str = "english", categories: list[str] | None = None, strict: bool = False
    ) -> None:
        self.language = language
        self.categories = list(categories) if categories else None
        self.strict = strict

    def _files(self) -> list[Path]:
        folder = _data_root() / self.language
        if not folder.is_dir():
            raise DataError(
                f"chatterbot-corpus has no language {self.language!r}; available: "
                + ", ".join(available_languages())
            )
        files = sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml"))
        if not files:
            raise DataError(f"no YAML files for language {self.language!r}", str(folder))
        return files

    def fingerprint(self) -> dict[str, Any]:
        try:
            version = importlib.metadata.version("chatterbot-corpus")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return {
            "reader": "chatterbot",
            "version": version,
            "language": self.language,
            "categories": self.categories,
            "strict": self.strict,
        }

    def read(self) -> tuple[list[Dialogue], ReadStats]:
        stats = ReadStats()
        wanted = {c.lower() for c in self.categories} if self.categories else None
        matched: set[str] = set()
        known: set[str] = set()
        dialogues: list[Dialogue] = []
        for file in self._files():
            try:
                doc = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                problem(stats, self.strict, f"unreadable YAML ({err})", file)
                continue
            if not isinstance(doc, dict):
                problem(stats, self.strict, "not a mapping with 'conversations'", file)
                continue
            names = {file.stem.lower()} | {str(c).lower() for c in doc.get("categories") or []}
            known |= names
            if wanted is not None:
                if not names & wanted:
                    continue
                matched |= names & wanted
            dialogues.extend(self._conversations(file, doc.get("conversations") or [], stats))
        if wanted is not None and wanted - matched:
            raise DataError(
                f"unknown chatterbot categories {sorted(wanted - matched)} for language "
                f"{self.language!r}; available: {', '.join(sorted(known))}"
            )
        finish(stats, self.strict, source=f"chatterbot-corpus/{self.language}", kept=len(dialogues))
        return dialogues, stats

    def _conversations(self, file: Path, conversations: Any, stats: ReadStats) -> list[Dialogue]:
        if not isinstance(conversations, list):
            problem(stats, self.strict, "'conversations' is not a list", file)
            return []
        dialogues = []
        for index, conversation in enumerate(conversations):
            where = f"conversation {index}"
            if not isinstance(conversation, list):
                reason = "conversation is not a list of turns"
                problem(stats, self.strict, reason, file, item=where)
                continue
            if not all(isinstance(t, (str, int, float, bool)) for t in conversation):
                problem(stats, self.strict, "turn is not text", file, item=where)
                continue
            texts = [str(t).strip() for t in conversation]
            if any(not t for t in texts):
                problem(stats, self.strict, "empty text", file, item=where)
                continue
            if len(texts) < 2:
                problem(stats, self.strict, "fewer than 2 turns", file, item=where)
                continue
            turns = [Turn(SPEAKERS[i % 2], text) for i, text in enumerate(texts)]
            dialogue_id = f"{file.stem}:{index}"
            dialogues.append(Dialogue(id=dialogue_id, turns=turns, group=dialogue_id))
        return dialogues
