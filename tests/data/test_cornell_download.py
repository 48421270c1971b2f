"""Downloading the Cornell release: extracted atomically, offline fails fast, nothing left over."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import requests

from dialoglab.data.corpora.cornell import CornellReader, download_cornell
from dialoglab.errors import DataError
from tests.data.test_corpora import GOOD_CONVS, GOOD_LINES


def make_zip(folder: str = "cornell movie-dialogs corpus") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{folder}/movie_lines.txt", "\n".join(GOOD_LINES).encode("latin-1"))
        zf.writestr(f"{folder}/movie_conversations.txt", "\n".join(GOOD_CONVS))
        zf.writestr(f"{folder}/README.txt", "readme")
        zf.writestr(f"__MACOSX/{folder}/._movie_lines.txt", "junk")
    return buf.getvalue()


class FakeResponse:
    def __init__(self, payload: bytes, fail_after: int | None = None) -> None:
        self.payload = payload
        self.fail_after = fail_after
        self.headers = {"content-length": str(len(payload))}

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def raise_for_status(self) -> None:
        return None

    def iter_content(self, chunk_size: int = 1):
        for start in range(0, len(self.payload), 100):
            if self.fail_after is not None and start >= self.fail_after:
                raise requests.exceptions.ChunkedEncodingError("connection reset")
            yield self.payload[start : start + 100]


def test_download_extracts_and_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_get(url: str, **kwargs: object) -> FakeResponse:
        calls.append((url, kwargs))
        return FakeResponse(make_zip())

    monkeypatch.setattr(requests, "get", fake_get)
    dest = tmp_path / "data" / "cornell"
    dialogues, _ = CornellReader(dest, url="http://example.test/c.zip").read()
    assert len(dialogues) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["movie_conversations.txt", "movie_lines.txt"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cornell"]  # zip and temp dir gone
    assert calls[0][0] == "http://example.test/c.zip" and calls[0][1]["stream"] is True


def test_download_offline_fails_fast_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, **kwargs: object) -> None:
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr(requests, "get", offline)
    dest = tmp_path / "cornell"
    with pytest.raises(DataError) as e:
        CornellReader(dest).read()
    message = str(e.value)
    assert "could not download the Cornell corpus" in message and "offline" in message
    assert str(dest.resolve()) in message and "data.path=" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("payload", "fail_after", "match"),
    [
        (make_zip(), 200, "could not download"),
        (b"<html>not a zip</html>", None, "not a valid zip"),
        (make_zip(folder="other"), None, "has no cornell movie-dialogs corpus/movie_lines.txt"),
    ],
)
def test_download_bad_payload_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes, fail_after: int | None,
    match: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(requests, "get", lambda url, **kw: FakeResponse(payload, fail_after))
    dest = tmp_path / "cornell"
    with pytest.raises(DataError, match=match):
        download_cornell(dest, "http://example.test/c.zip")
    assert list(tmp_path.iterdir()) == []
