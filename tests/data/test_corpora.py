"""Corpus readers: Cornell (release + ConvoKit + download), chatterbot-corpus, persona jsonl."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dialoglab.data.corpora import cornell
from dialoglab.data.corpora.base import CorpusReader
from dialoglab.data.corpora.chatterbot import ChatterbotReader
from dialoglab.data.corpora.cornell import CornellReader
from dialoglab.data.corpora.persona_jsonl import PersonaJsonlReader
from dialoglab.errors import DataError

SHARED_CORNELL = Path(__file__).parents[2].parent / "shared/data/cornell-subset"
S = " +++$+++ "


def line_row(lid: str, char: str, movie: str, text: str) -> str:
    return S.join([lid, char, movie, char.upper(), text])


def conv_row(movie: str, ids: list[str]) -> str:
    return S.join(["u0", "u1", movie, repr(ids)])


def write_cornell(folder: Path, lines: list[str], convs: list[str], newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movie_lines.txt").write_bytes(newline.join(lines).encode("latin-1") + b"\n")
    (folder / "movie_conversations.txt").write_bytes(newline.join(convs).encode("latin-1") + b"\n")
    return folder


GOOD_LINES = [
    line_row("L1", "u0", "m0", "Caf\xe9?"),
    line_row("L2", "u1", "m0", "  Sure.  "),
    line_row("L3", "u0", "m0", "Then go."),
    line_row("L4", "u1", "m1", "Hi"),
    line_row("L5", "u0", "m1", "Hello"),
]
GOOD_CONVS = [conv_row("m0", ["L1", "L2", "L3"]), conv_row("m1", ["L4", "L5"])]


# -- Cornell release ------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_cornell_reads_latin1_and_line_endings(tmp_path: Path, newline: str) -> None:
    folder = write_cornell(tmp_path / "c", GOOD_LINES, GOOD_CONVS, newline)
    reader = CornellReader(folder, download=False)
    assert isinstance(reader, CorpusReader)
    dialogues, stats = reader.read()
    assert stats.total_skipped == 0
    assert [d.id for d in dialogues] == ["m0:L1", "m1:L4"]
    first = dialogues[0]
    assert first.group == "m0"
    assert [t.speaker for t in first.turns] == ["u0", "u1", "u0"]
    assert [t.text for t in first.turns] == ["Café?", "Sure.", "Then go."]


def test_cornell_keeps_separator_inside_text_and_x85(tmp_path: Path) -> None:
    lines = [line_row("L1", "u0", "m0", f"a{S}b"), line_row("L2", "u1", "m0", "wait\x85 what")]
    folder = write_cornell(tmp_path, lines, [conv_row("m0", ["L1", "L2"])])
    dialogues, _ = CornellReader(folder, download=False).read()
    assert [t.text for t in dialogues[0].turns] == [f"a{S}b", "wait\x85 what"]


def test_cornell_skips_and_counts_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [
        *GOOD_LINES,
        "L6 +++$+++ u0 +++$+++ m2",  # malformed: 3 fields
        line_row("L7", "u0", "m2", ""),  # empty text (trailing space kept)
        "L8 +++$+++ u1 +++$+++ m2 +++$+++ U1 +++$+++",  # empty text, trailing space stripped
        line_row("L9", "u0", "m2", "ok"),
    ]
    convs = [
        *GOOD_CONVS,
        conv_row("m2", ["L9", "L404"]),  # unknown line id
        conv_row("m2", ["L7", "L9"]),  # empty text
        conv_row("m2", ["L9", "L8"]),  # empty text
        conv_row("m2", ["L9"]),  # too short
        S.join(["u0", "u1", "m2", "__import__('os')"]),  # bad id list, never evaluated
        S.join(["u0", "u1", "m2", "[1, 2]"]),  # not strings
        "u0 +++$+++ u1",  # malformed
    ]
    folder = write_cornell(tmp_path, lines, convs)
    with caplog.at_level(logging.WARNING):
        dialogues, stats = CornellReader(folder, download=False).read()
    assert len(dialogues) == 2
    assert stats.skipped == {
        "malformed line row (expected 5 fields)": 1,
        "conversation references a line id missing from movie_lines.txt": 1,
        "empty text": 2,
        "fewer than 2 turns": 1,
        "malformed utterance id list": 2,
        "malformed conversation row (expected 4 fields)": 1,
    }
    assert stats.examples["malformed line row (expected 5 fields)"] == ["movie_lines.txt:6"]
    assert stats.examples["empty text"] == [
        "movie_conversations.txt:4",
        "movie_conversations.txt:5",
    ]
    assert (
        "  1 conversation references a line id missing from movie_lines.txt (e.g. "
        "movie_conversations.txt:3)" in stats.summary().splitlines()
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 8" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("lines", "convs", "file", "line", "reason"),
    [
        ([*GOOD_LINES, "L9 junk"], GOOD_CONVS, "movie_lines.txt", 6, "malformed line row"),
        (GOOD_LINES, [*GOOD_CONVS, conv_row("m0", ["L1", "L99"])], "movie_conversations.txt", 3,
         "line id missing from movie_lines.txt"),
        ([line_row("L0", "u0", "m0", ""), *GOOD_LINES], [conv_row("m0", ["L0", "L1"])],
         "movie_conversations.txt", 1, "empty text"),
        (GOOD_LINES, [GOOD_CONVS[0], S.join(["u0", "u1", "m0", "L1, L2"])],
         "movie_conversations.txt", 2, "malformed utterance id list"),
    ],
)  # fmt: skip
def test_cornell_strict_names_file_and_line(
    tmp_path: Path, lines: list[str], convs: list[str], file: str, line: int, reason: str
) -> None:
    folder = write_cornell(tmp_path, lines, convs)
    with pytest.raises(DataError) as info:
        CornellReader(folder, strict=True, download=False).read()
    message = str(info.value)
    assert f"{file}:{line}:" in message
    assert reason in message and "data.strict=false" in message
    assert info.value.line == line


def test_cornell_rejects_non_cornell_file(tmp_path: Path) -> None:
    lines = ["id\tcharacter\ttext"] + [f"L{i}\tu0\thello" for i in range(10)]
    folder = write_cornell(tmp_path, lines, GOOD_CONVS)
    with pytest.raises(DataError, match="does not look like the Cornell Movie-Dialogs format") as e:
        CornellReader(folder, download=False).read()
    assert "movie_lines.txt" in str(e.value)
    # separators present but no row parses -> still one format error
    write_cornell(tmp_path, GOOD_LINES, ["a +++$+++ b"])
    with pytest.raises(DataError, match="does not look like the Cornell"):
        CornellReader(folder, download=False).read()


def test_cornell_empty_file(tmp_path: Path) -> None:
    folder = write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    (folder / "movie_lines.txt").write_bytes(b"\n\r\n")
    with pytest.raises(DataError, match="empty file") as e:
        CornellReader(folder, download=False).read()
    assert "movie_lines.txt" in str(e.value)


def test_cornell_accepts_a_corpus_file_as_path(tmp_path: Path) -> None:
    folder = write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    dialogues, _ = CornellReader(folder / "movie_lines.txt", download=False).read()
    assert len(dialogues) == 2


def test_cornell_missing_companion_file(tmp_path: Path) -> None:
    folder = write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    (folder / "movie_conversations.txt").unlink()
    with pytest.raises(DataError, match=r"missing movie_conversations\.txt"):
        CornellReader(folder, download=False).read()


def test_cornell_missing_corpus_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        CornellReader(tmp_path / "nowhere", download=False).read()
    message = str(e.value)
    assert "movie_lines.txt" in message and "movie_conversations.txt" in message
    assert cornell.CORNELL_URL in message and str(tmp_path / "nowhere") in message


def test_cornell_fingerprint_tracks_files(tmp_path: Path) -> None:
    folder = write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    reader = CornellReader(folder, download=False)
    before = reader.fingerprint()
    assert before["reader"] == "cornell" and before["path"] == str(folder.resolve())
    assert {f[0] for f in before["files"]} == {"movie_lines.txt", "movie_conversations.txt"}
    json.dumps(before)
    with (folder / "movie_lines.txt").open("a", encoding="latin-1") as f:
        f.write(line_row("L10", "u0", "m3", "more") + "\n")
    assert reader.fingerprint() != before


# -- ConvoKit -------------------------------------------------------------------------------


def utt(uid: str, conv: str, speaker: str, text: str, reply: str | None, movie: str = "m7") -> str:
    obj = {"id": uid, "conversation_id": conv, "text": text, "speaker": speaker}
    obj.update({"reply-to": reply, "timestamp": None, "meta": {"movie_id": movie}})
    return json.dumps(obj)


def test_convokit_orders_by_reply_chain(tmp_path: Path) -> None:
    rows = [
        utt("L12", "L10", "u1", "third", "L11"),
        utt("L11", "L10", "u0", "second", "L10"),
        utt("L10", "L10", "u1", "first", None),
        "",
        "{not json",
        "[1, 2]",
        json.dumps({"id": "L30", "conversation_id": "L30", "speaker": "u0"}),  # no text
        utt("L21", "L20", "u3", "b", "L20", movie=""),
        utt("L20", "L20", "u2", "a", None, movie=""),
        utt("L40", "L40", "u2", "alone", None),
    ]
    (tmp_path / "utterances.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dialogues, stats = CornellReader(tmp_path, download=False).read()
    by_id = {d.id: d for d in dialogues}
    assert set(by_id) == {"m7:L10", "L20:L20"}
    assert [t.text for t in by_id["m7:L10"].turns] == ["first", "second", "third"]
    assert by_id["m7:L10"].group == "m7" and by_id["L20:L20"].group == "L20"
    assert stats.total_skipped == 4
    assert "missing key 'text'" in stats.skipped
    assert "utterances.jsonl:5" in stats.summary()
    with pytest.raises(DataError, match=r"utterances.jsonl:5: invalid JSON"):
        CornellReader(tmp_path, strict=True, download=False).read()


def test_convokit_falls_back_to_id_order(tmp_path: Path) -> None:
    rows = [
        utt("L3", "c", "a", "z", "L9"),
        utt("L1", "c", "a", "x", None),
        utt("L2", "c", "b", "y", None),
    ]
    (tmp_path / "utterances.jsonl").write_text("\n".join(rows), encoding="utf-8")
    dialogues, _ = CornellReader(tmp_path, download=False).read()
    assert [t.text for t in dialogues[0].turns] == ["x", "y", "z"]


# -- chatterbot-corpus -----------------------------------------------------------------------


def test_chatterbot_english() -> None:
    reader = ChatterbotReader("english")
    assert isinstance(reader, CorpusReader)
    dialogues, _ = reader.read()
    assert len(dialogues) > 100
    assert len({d.id for d in dialogues}) == len(dialogues)
    for d in dialogues:
        assert len(d.turns) >= 2 and d.group == d.id
        assert [t.speaker for t in d.turns] == ["user", "bot"] * (len(d.turns) // 2) + ["user"] * (
            len(d.turns) % 2
        )
    assert reader.fingerprint()["version"]
    json.dumps(reader.fingerprint())


def test_chatterbot_categories_and_errors() -> None:
    dialogues, _ = ChatterbotReader(categories=["AI"]).read()
    assert dialogues and all(d.id.startswith("ai:") for d in dialogues)
    with pytest.raises(DataError, match=r"available: .*english"):
        ChatterbotReader("klingon").read()
    with pytest.raises(DataError, match="unknown chatterbot categories"):
        ChatterbotReader(categories=["nope"]).read()


# -- persona jsonl ---------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_persona_form_a_and_b(tmp_path: Path) -> None:
    rows = [
        json.dumps({"input persona": "A chef.", "synthesized text": "Line 1\nLine 2", "x": 1}),
        "",
        json.dumps(
            {"persona": ["I like cats.", "I run."], "turns": ["hi", "hello", "how?", "fine"]}
        ),
        json.dumps({"persona": "I sing.", "turns": ["q", "a", "b"]}),
    ]
    reader = PersonaJsonlReader(write_jsonl(tmp_path / "p.jsonl", rows))
    assert isinstance(reader, CorpusReader) and reader.fingerprint()["files"][0][0] == "p.jsonl"
    dialogues, stats = reader.read()
    assert stats.total_skipped == 0
    a, b, c = dialogues
    assert a.persona == ["A chef."] and a.turns == [a.turns[0]] and a.turns[0].speaker == "bot"
    assert a.turns[0].text == "Line 1\nLine 2" and a.group == "A chef."
    assert [t.speaker for t in b.turns] == ["user", "bot", "user", "bot"]
    assert b.group == "I like cats.\nI run." and b.id == "p:3"
    assert [t.speaker for t in c.turns] == ["bot", "user", "bot"] and c.persona == ["I sing."]


GOOD = json.dumps({"persona": "p", "turns": ["a", "b"]})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ('{"persona": "p", "turns": [', "invalid JSON"),
        ('["p", "a"]', "line is a list, expected a JSON object"),
        (json.dumps({"persona": "p"}), "missing key 'turns'; accepted forms"),
        (json.dumps({"input persona": "p"}), "missing key 'synthesized text'"),
        (json.dumps({"foo": 1}), "no known keys"),
        (json.dumps({"persona": 3, "turns": ["a"]}), "key 'persona' is int"),
        (
            json.dumps({"input persona": "p", "synthesized text": None}),
            "'synthesized text' is NoneType",
        ),
        (json.dumps({"persona": "p", "turns": ["a", 2]}), "'turns' item 1 is int"),
        (json.dumps({"persona": "p", "turns": []}), "'turns' is an empty list"),
    ],
)
def test_persona_errors_name_line(tmp_path: Path, bad: str, match: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, "", "  ", bad, GOOD])
    with pytest.raises(DataError, match=match) as e:
        PersonaJsonlReader(path).read()
    assert e.value.line == 4 and "p.jsonl:4: " in str(e.value)
    dialogues, stats = PersonaJsonlReader(path, strict=False).read()
    assert len(dialogues) == 2 and stats.total_skipped == 1
    assert "(e.g. p.jsonl:4)" in stats.summary()


def test_persona_empty_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty file"):
        PersonaJsonlReader(write_jsonl(tmp_path / "e.jsonl", ["", "   "])).read()
    with pytest.raises(DataError, match=r"set data.path=FILE.jsonl"):
        PersonaJsonlReader(tmp_path / "missing.jsonl").read()
    with pytest.raises(DataError, match="no usable line"):
        PersonaJsonlReader(write_jsonl(tmp_path / "b.jsonl", ["[]"]), strict=False).read()


def test_persona_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(GOOD.encode() + b'\n{"persona": "\xff", "turns": ["a"]}\n')
    with pytest.raises(DataError, match="not UTF-8") as e:
        PersonaJsonlReader(path).read()
    assert e.value.line == 2


# -- real data -------------------------------------------------------------------------------


@pytest.mark.skipif(
    not SHARED_CORNELL.is_dir(), reason=f"real Cornell slice absent: {SHARED_CORNELL}"
)
def test_real_cornell_subset() -> None:
    dialogues, stats = CornellReader(SHARED_CORNELL, download=False).read()
    print(
        f"{len(dialogues)} dialogues; {stats.summary() if stats.total_skipped else 'none skipped'}"
    )
    assert len(dialogues) > 5000
    assert {d.group for d in dialogues} == {f"m{i}" for i in range(50)}
    assert len({d.id for d in dialogues}) == len(dialogues)
    assert all(len(d.turns) >= 2 and all(t.text for t in d.turns) for d in dialogues)
