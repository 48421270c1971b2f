"""Cornell Movie-Dialogs Corpus: the original release (`movie_lines.txt` +
`movie_conversations.txt`, fields separated by ' +++$+++ ', latin-1) or ConvoKit's
`utterances.jsonl`. Downloads the release when asked and it is missing."""

from __future__ import annotations

import ast
import gc
import json
import logging
import re
from pathlib import Path
from typing import Any

from dialoglab.data.corpora.base import MOSTLY_SKIPPED_HINT, file_info, finish, problem
from dialoglab.data.corpora.cornell_download import (
    CONVERSATIONS_FILE,
    CORNELL_URL,
    LINES_FILE,
    download_cornell,
)
from dialoglab.data.dialogue import Dialogue, ReadStats, Turn
from dialoglab.errors import DataError

__all__ = ["CONVERSATIONS_FILE", "LINES_FILE", "CornellReader", "download_cornell"]

CONVOKIT_FILE = "utterances.jsonl"
SEP = " +++$+++ "
FORMAT_HINT = f"does not look like the Cornell Movie-Dialogs format (fields separated by {SEP!r})"
SNIFF_ROWS = 5

_DIGITS = re.compile(r"\d+")
UNKNOWN_LINE = "conversation references a line id missing from movie_lines.txt"
MISMATCH_HINT = (
    f"this usually means {LINES_FILE} is truncated or does not belong with "
    f"{CONVERSATIONS_FILE} (another export or version of the corpus); check both come from "
    "the same release, and see the reasons above"
)
log = logging.getLogger(__name__)


class LineTable:
    """The lines of `movie_lines.txt` by (movie, line id).

    The release numbers lines across the whole corpus, but some re-packagings restart the ids
    in every movie; keyed by movie, both read alike. An id found in one movie only is also
    found from a conversation row whose movie field differs (`shared`: ids in several movies).
    """

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], Turn | None] = {}  # None: a line without text
        self.owner: dict[str, str] = {}
        self.shared: set[str] = set()

    def add(self, movie: str, line_id: str, turn: Turn | None) -> bool:
        """Record a line; False (nothing recorded) when the movie already has this id."""
        key = (movie, line_id)
        if key in self.lines:
            return False
        self.lines[key] = turn
        if self.owner.setdefault(line_id, movie) != movie:
            self.shared.add(line_id)
        return True

    def turns(self, movie: str, ids: list[str]) -> list[Turn] | str:
        """The turns of a conversation, or why it cannot be read."""
        lines = self.lines
        try:
            found = [lines[(movie, i)] for i in ids]
        except KeyError:
            keys = [self._key(movie, i) for i in ids]
            if any(key is None for key in keys):
                return UNKNOWN_LINE
            found = [lines[key] for key in keys]  # type: ignore[index]
        if any(t is None for t in found):
            return "empty text"
        return found  # type: ignore[return-value]

    def _key(self, movie: str, line_id: str) -> tuple[str, str] | None:
        if (movie, line_id) in self.lines:
            return (movie, line_id)
        owner = self.owner.get(line_id)
        if owner is None or line_id in self.shared:
            return None
        return (owner, line_id)


class CornellReader:
    """Reads the Cornell corpus found in `path` (default `data/cornell` under the cwd)."""

    group_by = "movie"  # data.split_by=movie keeps each movie in one split

    def __init__(
        self,
        path: str | Path | None = None,
        strict: bool = False,
        download: bool = True,
        url: str = CORNELL_URL,
    ) -> None:
        self.path = Path(path) if path is not None else Path("data/cornell")
        if (
            self.path.name in (LINES_FILE, CONVERSATIONS_FILE, CONVOKIT_FILE)
            and self.path.is_file()
        ):
            self.path = self.path.parent  # a file of the corpus was given: use its folder
        self.strict = strict
        self.download = download
        self.url = url

    def _layout(self) -> str | None:
        if (self.path / LINES_FILE).is_file() or (self.path / CONVERSATIONS_FILE).is_file():
            return "cornell"
        if (self.path / CONVOKIT_FILE).is_file():
            return "convokit"
        return None

    def fingerprint(self) -> dict[str, Any]:
        names = [LINES_FILE, CONVERSATIONS_FILE, CONVOKIT_FILE]
        return {
            "reader": "cornell",
            "path": str(self.path.resolve()),
            "files": file_info(self.path / name for name in names),
            "strict": self.strict,
        }

    def read(self) -> tuple[list[Dialogue], ReadStats]:
        """All dialogues with at least two turns, plus what was skipped and why."""
        layout = self._layout()
        if layout is None:
            if self.path.exists() and not self.path.is_dir():
                raise DataError(
                    f"expected a folder holding {LINES_FILE} and {CONVERSATIONS_FILE} "
                    f"(or ConvoKit's {CONVOKIT_FILE}); set data.path=<that folder>",
                    str(self.path),
                )
            if not self.download:
                raise DataError(
                    f"Cornell corpus not found: put {LINES_FILE} and {CONVERSATIONS_FILE} "
                    f"(from {self.url}) in {self.path.resolve()}, set data.path=<folder that "
                    "has them>, or allow the download"
                )
            download_cornell(self.path, self.url)
            layout = "cornell"
        stats = ReadStats()
        attempted: int | None = None  # conversation rows (ConvoKit: kept + skipped)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # about a million small acyclic objects: nothing for the collector
        try:
            if layout == "cornell":
                dialogues, attempted = self._read_cornell(stats)
            else:
                dialogues = self._read_convokit(stats)
        finally:
            if gc_was_enabled:
                gc.enable()
        source = f"Cornell corpus in {self.path}"
        hint = MISMATCH_HINT if layout == "cornell" else MOSTLY_SKIPPED_HINT
        finish(
            stats, self.strict, source=source, kept=len(dialogues), attempted=attempted, hint=hint
        )
        return dialogues, stats

    # -- original release -------------------------------------------------------------------

    def _rows(self, file: Path) -> list[str]:
        if not file.is_file():
            raise DataError(
                f"missing {file.name}: the Cornell corpus needs both {LINES_FILE} and "
                f"{CONVERSATIONS_FILE} in {self.path}",
                str(file),
            )
        raw = file.read_bytes()
        try:  # a re-saved copy may be UTF-8 (with BOM, CRLF); the release itself is latin-1
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        if not text or text.isspace():
            raise DataError("empty file; expected the Cornell Movie-Dialogs corpus", str(file))
        # split on "\n" only: str.splitlines() would also break at latin-1 "\x85" and "\x0c"
        rows = text.split("\n")
        sniff = [row for row in rows[:1000] if row.strip()][:SNIFF_ROWS]
        if not any(SEP in row for row in sniff):
            raise DataError(FORMAT_HINT + "; check data.path", str(file))
        return rows

    def _read_cornell(self, stats: ReadStats) -> tuple[list[Dialogue], int]:
        """Dialogues, and how many conversation rows there were (usable or not)."""
        line_rows = self._rows(self.path / LINES_FILE)  # both files checked before parsing
        conv_rows = self._rows(self.path / CONVERSATIONS_FILE)
        table = self._read_lines(stats, line_rows)
        if table.shared:
            log.info(
                "%s: %d line ids recur in several movies (ids restart per movie): lines are "
                "matched to conversations within their movie",
                self.path / LINES_FILE,
                len(table.shared),
            )
        return self._read_conversations(stats, conv_rows, table)

    def _read_lines(self, stats: ReadStats, rows: list[str]) -> LineTable:
        """`movie_lines.txt`: the turns of lines with text, and the ids of empty lines."""
        lines_file = self.path / LINES_FILE
        table = LineTable()
        for lineno, row in enumerate(rows, 1):
            parts = row.split(SEP, 4)
            if len(parts) != 5:
                if not row.strip():
                    continue
                if len(parts) == 4 and row.endswith(SEP.rstrip()):  # empty text, space stripped
                    parts = (row + " ").split(SEP, 4)
                else:
                    reason = "malformed line row (expected 5 fields)"
                    problem(stats, self.strict, reason, lines_file, lineno)
                    continue
            line_id, character, movie, _, text = parts
            line_id, text = line_id.strip(), text.strip()
            turn = Turn(character.strip(), text) if text else None
            if not table.add(movie.strip(), line_id, turn):
                reason = "duplicate line id (in the same movie)"
                problem(stats, self.strict, reason, lines_file, lineno, item=repr(line_id))
        if not table.lines:
            raise DataError(FORMAT_HINT + "; no row could be read", str(lines_file))
        return table

    def _read_conversations(
        self, stats: ReadStats, rows: list[str], table: LineTable
    ) -> tuple[list[Dialogue], int]:
        """`movie_conversations.txt`: one dialogue per row whose line ids all have text."""
        conv_file = self.path / CONVERSATIONS_FILE
        strict = self.strict
        dialogues: list[Dialogue] = []
        seen_ids: set[str] = set()
        parsed_rows = attempted = 0
        for lineno, row in enumerate(rows, 1):
            attempted += bool(row.strip())
            parts = row.split(SEP, 3)
            if len(parts) != 4:
                if row.strip():
                    reason = "malformed conversation row (expected 4 fields)"
                    problem(stats, strict, reason, conv_file, lineno)
                continue
            ids = _parse_id_list(parts[3])
            if ids is None:
                problem(stats, strict, "malformed utterance id list", conv_file, lineno)
                continue
            parsed_rows += 1
            movie = parts[2].strip()
            turns = table.turns(movie, ids)
            if isinstance(turns, str):
                problem(stats, strict, turns, conv_file, lineno)
                continue
            if len(turns) < 2:
                problem(stats, strict, "fewer than 2 turns", conv_file, lineno)
                continue
            dialogue_id = f"{movie}:{ids[0]}"
            if dialogue_id in seen_ids:
                dialogue_id = f"{dialogue_id}@{lineno}"
            seen_ids.add(dialogue_id)
            dialogues.append(Dialogue(id=dialogue_id, turns=turns, group=movie))
        if parsed_rows == 0:
            raise DataError(FORMAT_HINT + "; no conversation row could be read", str(conv_file))
        return dialogues, attempted

    # -- ConvoKit -----------------------------------------------------------------------------

    def _read_convokit(self, stats: ReadStats) -> list[Dialogue]:
        file = self.path / CONVOKIT_FILE
        text = file.read_bytes().decode("utf-8", errors="replace")
        if not text.strip():
            raise DataError(
                "empty file; expected ConvoKit utterances (one JSON object a line)", str(file)
            )
        strict = self.strict
        # conversation id -> list of (lineno, utterance id, speaker, text, reply-to, group)
        convs: dict[str, list[tuple[int, str, str, str, str | None, str | None]]] = {}
        for lineno, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as err:
                problem(stats, strict, f"invalid JSON ({err.msg})", file, lineno)
                continue
            utt = _convokit_utterance(obj)
            if isinstance(utt, str):
                problem(stats, strict, utt, file, lineno)
                continue
            convs.setdefault(utt[0], []).append((lineno, *utt[1:]))
        if not convs:
            raise DataError(
                "no utterance could be read; expected ConvoKit JSON lines with keys id, "
                "conversation_id, text, speaker, reply-to",
                str(file),
            )
        dialogues = []
        for conv_id, utts in convs.items():
            ordered = _order_utterances(utts)
            reason = None
            if any(not u[3].strip() for u in ordered):
                reason = "empty text"
            elif len(ordered) < 2:
                reason = "fewer than 2 turns"
            if reason is not None:
                problem(stats, strict, reason, file, min(u[0] for u in utts))
                continue
            group = next((u[5] for u in utts if u[5]), None) or conv_id
            turns = [Turn(u[2], u[3].strip()) for u in ordered]
            dialogues.append(Dialogue(id=f"{group}:{conv_id}", turns=turns, group=group))
        return dialogues


def _parse_id_list(field: str) -> list[str] | None:
    """`['L194', 'L195']` -> ['L194', 'L195'] without eval; None when it is not a str list."""
    field = field.strip()
    if field.startswith("['") and field.endswith("']") and "\\" not in field:
        ids = field[2:-2].split("', '")  # the release's own spelling: fast path
        if field.count("'") == 2 * len(ids):  # no quote inside an id
            return ids
    try:
        value = ast.literal_eval(field)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _convokit_utterance(obj: Any) -> tuple[str, str, str, str, str | None, str | None] | str:
    """(conversation id, id, speaker, text, reply-to, movie id) or the reason it is invalid."""
    if not isinstance(obj, dict):
        return f"not a JSON object (got {type(obj).__name__})"
    for key in ("id", "conversation_id", "text", "speaker"):
        if key not in obj:
            return f"missing key {key!r}"
        if not isinstance(obj[key], str):
            return f"key {key!r} is {type(obj[key]).__name__}, expected a string"
    reply_to = obj.get("reply-to")
    if reply_to is not None and not isinstance(reply_to, str):
        return f"key 'reply-to' is {type(reply_to).__name__}, expected a string or null"
    meta = obj.get("meta")
    movie = meta.get("movie_id") if isinstance(meta, dict) else None
    movie = movie if isinstance(movie, str) and movie else None
    return obj["conversation_id"], obj["id"], obj["speaker"], obj["text"], reply_to, movie


def _order_utterances(utts: list[tuple]) -> list[tuple]:
    """Follow reply-to from the root when the conversation is one chain, else sort by id number."""
    by_id = {u[1]: u for u in utts}
    roots = [u for u in utts if u[4] is None or u[4] not in by_id]
    children: dict[str, list[tuple]] = {}
    for u in utts:
        if u[4] in by_id:
            children.setdefault(u[4], []).append(u)
    if len(roots) == 1 and all(len(c) == 1 for c in children.values()):
        chain = [roots[0]]
        while chain[-1][1] in children and len(chain) <= len(utts):
            chain.append(children[chain[-1][1]][0])
        if len(chain) == len(utts):
            return chain

    def key(u: tuple) -> tuple[int, str]:
        digits = _DIGITS.findall(u[1])
        return (int(digits[-1]) if digits else -1, u[1])

    return sorted(utts, key=key)
