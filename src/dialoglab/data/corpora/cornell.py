"""Cornell Movie-Dialogs Corpus: the original release (`movie_lines.txt` +
`movie_conversations.txt`, fields separated by ' +++$+++ ', latin-1) or ConvoKit's
`utterances.jsonl`. Downloads the release when asked and it is missing."""

from __future__ import annotations

import ast
import gc
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import requests

from dialoglab.data.corpora.base import file_info, finish, problem
from dialoglab.data.dialogue import Dialogue, ReadStats, Turn
from dialoglab.errors import DataError

CORNELL_URL = "https://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
ZIP_FOLDER = "cornell movie-dialogs corpus"
LINES_FILE = "movie_lines.txt"
CONVERSATIONS_FILE = "movie_conversations.txt"
CONVOKIT_FILE = "utterances.jsonl"
SEP = " +++$+++ "
FORMAT_HINT = f"does not look like the Cornell Movie-Dialogs format (fields separated by {SEP!r})"
SNIFF_ROWS = 5

_DIGITS = re.compile(r"\d+")


class CornellReader:
    """Reads the Cornell corpus found in `path` (default `data/cornell` under the cwd)."""

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
        read = self._read_cornell if layout == "cornell" else self._read_convokit
        gc_was_enabled = gc.isenabled()
        gc.disable()  # about a million small acyclic objects: nothing for the collector
        try:
            dialogues = read(stats)
        finally:
            if gc_was_enabled:
                gc.enable()
        finish(stats, self.strict, source=f"Cornell corpus in {self.path}")
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

    def _read_cornell(self, stats: ReadStats) -> list[Dialogue]:
        line_rows = self._rows(self.path / LINES_FILE)  # both files checked before parsing
        conv_rows = self._rows(self.path / CONVERSATIONS_FILE)
        lines, empty = self._read_lines(stats, line_rows)
        return self._read_conversations(stats, conv_rows, lines, empty)

    def _read_lines(self, stats: ReadStats, rows: list[str]) -> tuple[dict[str, Turn], set[str]]:
        """`movie_lines.txt`: line id -> turn for lines with text, and the ids of empty lines."""
        lines_file = self.path / LINES_FILE
        lines: dict[str, Turn] = {}
        empty: set[str] = set()
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
            line_id, character, _, _, text = parts
            line_id = line_id.strip()
            if line_id in lines or line_id in empty:
                problem(stats, self.strict, f"duplicate line id {line_id!r}", lines_file, lineno)
                continue
            text = text.strip()
            if text:
                lines[line_id] = Turn(character.strip(), text)
            else:
                empty.add(line_id)
        if not lines:
            raise DataError(FORMAT_HINT + "; no row could be read", str(lines_file))
        return lines, empty

    def _read_conversations(
        self, stats: ReadStats, rows: list[str], lines: dict[str, Turn], empty: set[str]
    ) -> list[Dialogue]:
        """`movie_conversations.txt`: one dialogue per row whose line ids all have text."""
        conv_file = self.path / CONVERSATIONS_FILE
        strict = self.strict
        dialogues: list[Dialogue] = []
        seen_ids: set[str] = set()
        parsed_rows = 0
        for lineno, row in enumerate(rows, 1):
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
            try:
                turns = list(map(lines.__getitem__, ids))
            except KeyError:
                unknown = any(i not in lines and i not in empty for i in ids)
                reason = "conversation references unknown line id" if unknown else "empty text"
                problem(stats, strict, reason, conv_file, lineno)
                continue
            if len(turns) < 2:
                problem(stats, strict, "fewer than 2 turns", conv_file, lineno)
                continue
            movie = parts[2].strip()
            dialogue_id = f"{movie}:{ids[0]}"
            if dialogue_id in seen_ids:
                dialogue_id = f"{dialogue_id}@{lineno}"
            seen_ids.add(dialogue_id)
            dialogues.append(Dialogue(id=dialogue_id, turns=turns, group=movie))
        if parsed_rows == 0:
            raise DataError(FORMAT_HINT + "; no conversation row could be read", str(conv_file))
        return dialogues

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


def download_cornell(dest: str | Path, url: str = CORNELL_URL, timeout: float = 10) -> Path:
    """Download the release zip, check it, and put its two dialogue files in `dest`.

    Atomic: the zip goes to a temporary file beside `dest` and files are extracted into a
    temporary folder, then moved; nothing half-written is left behind on failure.
    """
    dest = Path(dest)
    parent = dest.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    hint = (
        f"download cornell_movie_dialogs_corpus.zip yourself and put {LINES_FILE} and "
        f"{CONVERSATIONS_FILE} in {dest.resolve()}, or set data.path=<folder that has them>"
    )
    fd, tmp_name = tempfile.mkstemp(prefix=".cornell-", suffix=".zip.part", dir=parent)
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        _fetch(url, fd, timeout, hint)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".cornell-", dir=parent))
        _extract_dialogue_files(tmp_zip, tmp_dir, url, hint)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (LINES_FILE, CONVERSATIONS_FILE):
            os.replace(tmp_dir / name, dest / name)
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest


def _fetch(url: str, fd: int, timeout: float, hint: str) -> None:
    """Stream `url` into the open file descriptor `fd` (closed afterwards), with a progress bar."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    try:
        with (
            os.fdopen(fd, "wb") as out,
            requests.get(url, stream=True, timeout=timeout) as resp,
        ):
            resp.raise_for_status()
            total = int(resp.headers.get("content-length") or 0) or None
            columns = (
                TextColumn("downloading Cornell corpus"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("download", total=total)
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    progress.update(task, advance=len(chunk))
    except requests.exceptions.RequestException as err:
        raise DataError(
            f"could not download the Cornell corpus from {url} ({err}). "
            f"You seem to be offline: {hint}."
        ) from err


def _extract_dialogue_files(zip_path: Path, into: Path, url: str, hint: str) -> None:
    """Check the downloaded zip and copy its lines and conversations files into `into`."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"downloaded zip is corrupt at {bad!r}; {hint}", url)
            names = set(zf.namelist())
            members = {}
            for name in (LINES_FILE, CONVERSATIONS_FILE):
                member = next((m for m in (f"{ZIP_FOLDER}/{name}", name) if m in names), None)
                if member is None:
                    raise DataError(f"downloaded zip has no {ZIP_FOLDER}/{name}; {hint}", url)
                members[name] = member
            for name, member in members.items():
                with zf.open(member) as src, open(into / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise DataError(f"downloaded file is not a valid zip ({err}); {hint}", url) from err
