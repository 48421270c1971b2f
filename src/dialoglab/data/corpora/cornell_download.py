"""Download the Cornell Movie-Dialogs release and put its two dialogue files in a folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import requests

from dialoglab.errors import DataError

CORNELL_URL = "https://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
ZIP_FOLDER = "cornell movie-dialogs corpus"
LINES_FILE = "movie_lines.txt"
CONVERSATIONS_FILE = "movie_conversations.txt"


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
