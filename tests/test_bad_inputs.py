"""The bad-input catalogue: each user mistake, the exact message the user sees, and no traceback.

Most cases call the library in-process and expect a `DialoglabError` whose text contains the
message; a few run the real CLI (`train.py`, `eval.py`) and check exit code and stderr. Property
tests (hypothesis) feed random bytes and near-Cornell rows to the readers: they parse or raise
`DataError`, never anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialoglab.data.cache import load_cache
from dialoglab.data.corpora.chatterbot import ChatterbotReader
from dialoglab.data.corpora.cornell import CONVERSATIONS_FILE, LINES_FILE, SEP, CornellReader
from dialoglab.data.corpora.persona_jsonl import PersonaJsonlReader
from dialoglab.data.datamodule import DialogueDataModule
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.errors import CheckpointError, DataError, DialoglabError, TrainingError
from dialoglab.experiment.checkpoint import load_checkpoint, restore_model
from dialoglab.experiment.resume import prepare_resume
from dialoglab.models.dialogue_module import CHECKPOINT_KEY
from tests.conftest import TINY_GRU, run_script

LINES = [
    "L1 +++$+++ u0 +++$+++ m0 +++$+++ BIANCA +++$+++ Can we make this quick?",
    "L2 +++$+++ u2 +++$+++ m0 +++$+++ CAMERON +++$+++ Well, I thought we'd start with pronunciation.",
    "L3 +++$+++ u0 +++$+++ m0 +++$+++ BIANCA +++$+++ Not the hacking and gagging and spitting part.",
]
CONVERSATIONS = ["u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L1', 'L2', 'L3']"]


def cornell(
    tmp: Path,
    lines: list[str] | str = LINES,
    convs: list[str] | str = CONVERSATIONS,
    encoding: str = "latin-1",
    newline: str = "\n",
) -> Path:
    folder = tmp / "cornell"
    folder.mkdir(exist_ok=True)
    for name, rows in ((LINES_FILE, lines), (CONVERSATIONS_FILE, convs)):
        text = rows if isinstance(rows, str) else newline.join(rows) + newline
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def jsonl(tmp: Path, *rows: str) -> Path:
    path = tmp / "data.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def read_cornell(folder: Path, strict: bool = False) -> None:
    CornellReader(folder, strict=strict, download=False).read()


def read_persona(path: Path, strict: bool = True) -> None:
    PersonaJsonlReader(path, strict=strict).read()


def persona_corpus(tmp: Path, n: int = 30) -> Path:
    rows = [
        json.dumps({"persona": f"I like thing {i}.", "turns": ["hi", f"hello {i}"]})
        for i in range(n)
    ]
    return jsonl(tmp, *rows)


def datamodule(tmp: Path, **kwargs) -> DialogueDataModule:
    settings_ = {"path": str(persona_corpus(tmp)), "cache_dir": None, **kwargs}
    dm = DialogueDataModule(reader=partial(PersonaJsonlReader), **settings_)
    dm.setup("fit")
    return dm


# -- checkpoints made by hand (no training needed) ------------------------------------------------
def seq2seq_checkpoint(make_cfg: Callable, tmp: Path, **payload_changes) -> Path:
    """A dialoglab checkpoint of a tiny GRU model, as train.py writes it (weights + payload)."""
    import hydra
    from omegaconf import OmegaConf

    cfg = make_cfg("train", ["data=chatterbot", *TINY_GRU], output_dir=tmp / "made")
    tokenizer = WordTokenizer().fit(["hello there", "how are you", "fine thanks"])
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer)
    payload = {
        "version": 1,
        "family": model.family,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "tokenizer": tokenizer.state_dict(),
        **payload_changes,
    }
    path = tmp / "made.ckpt"
    torch.save({"state_dict": model.state_dict(), CHECKPOINT_KEY: payload, "global_step": 0}, path)
    return path


# -- the catalogue ----------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    run: Callable[[Path], object]  # gets a fresh tmp dir; must raise
    message: str  # what the user reads (a substring of the error)
    error: type[DialoglabError] = DataError


CATALOGUE = [
    Case(
        "missing corpus dir",
        lambda t: read_cornell(t / "nowhere"),
        f"Cornell corpus not found: put {LINES_FILE} and {CONVERSATIONS_FILE}",
    ),
    Case(
        "empty Cornell file",
        lambda t: read_cornell(cornell(t, lines="")),
        f"{LINES_FILE}: empty file; expected the Cornell Movie-Dialogs corpus",
    ),
    Case(
        "empty persona file",
        lambda t: read_persona(jsonl(t, "", "  ")),
        "data.jsonl: empty file: expected one JSON object a line",
    ),
    Case(
        "non-Cornell text file",
        lambda t: read_cornell(cornell(t, lines=["Call me Ishmael.", "Some years ago..."])),
        f"{LINES_FILE}: does not look like the Cornell Movie-Dialogs format "
        "(fields separated by ' +++$+++ '); check data.path",
    ),
    Case(
        "malformed conversation row (strict)",
        lambda t: read_cornell(cornell(t, convs=[*CONVERSATIONS, "u0 +++$+++ m0"]), strict=True),
        f"{CONVERSATIONS_FILE}:2: malformed conversation row (expected 4 fields); fix or delete "
        "this row, or set data.strict=false to skip such rows",
    ),
    Case(
        "malformed line row (strict)",
        lambda t: read_cornell(cornell(t, lines=[*LINES, "L9 +++$+++ only two"]), strict=True),
        f"{LINES_FILE}:4: malformed line row (expected 5 fields)",
    ),
    Case(
        "conversation with unknown line id (strict)",
        lambda t: read_cornell(
            cornell(t, convs=[*CONVERSATIONS, "u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L1', 'L77']"]),
            strict=True,
        ),
        f"{CONVERSATIONS_FILE}:2: conversation references a line id missing from movie_lines.txt",
    ),
    Case(
        "JSONL invalid JSON at line N",
        lambda t: read_persona(
            jsonl(t, '{"persona": "a", "turns": ["x"]}', "", '{"persona": "b" "turns"}')
        ),
        "data.jsonl:3: invalid JSON (Expecting ',' delimiter at column 17)",
    ),
    Case(
        "JSONL line that is a list",
        lambda t: read_persona(jsonl(t, '["I like dogs.", "hi"]')),
        "data.jsonl:1: line is a list, expected a JSON object",
    ),
    Case(
        "missing 'synthesized text'",
        lambda t: read_persona(jsonl(t, '{"input persona": "I am a pilot."}')),
        "data.jsonl:1: missing key 'synthesized text'",
    ),
    Case(
        "non-string persona",
        lambda t: read_persona(jsonl(t, '{"input persona": 42, "synthesized text": "hi"}')),
        "data.jsonl:1: key 'input persona' is int, expected a string",
    ),
    Case(
        "persona list holding a number",
        lambda t: read_persona(jsonl(t, '{"persona": ["a", 3], "turns": ["hi"]}')),
        "data.jsonl:1: key 'persona' holds a int, expected strings",
    ),
    Case(
        "persona file not UTF-8",
        lambda t: read_persona(
            (t / "data.jsonl").write_bytes(b'{"persona": "a", "turns": ["hi"]}\n\xff\xfe')
            and t / "data.jsonl"
        ),
        "data.jsonl:2: not UTF-8 text (invalid start byte)",
    ),
    Case(
        "persona path is missing",
        lambda t: read_persona(t / "nope.jsonl"),
        "nope.jsonl: persona file not found; set data.path=FILE.jsonl",
    ),
    Case(
        "all examples filtered out by max_length",
        lambda t: datamodule(t, max_length=2),
        "training examples were dropped by data.max_length=2: raise data.max_length or set "
        "data.length_policy=truncate",
    ),
    Case(
        "data.batch_size=0",
        lambda t: datamodule(t, batch_size=0),
        "data.batch_size must be a positive integer, got 0",
        DialoglabError,
    ),
    Case(
        "data.length_policy unknown",
        lambda t: datamodule(t, length_policy="chop"),
        "data.length_policy must be one of ('filter', 'truncate'), got 'chop'",
        DialoglabError,
    ),
    Case(
        "unknown chatterbot category",
        lambda t: ChatterbotReader(categories=["klingon"]).read(),
        "unknown chatterbot categories ['klingon'] for language 'english'; available:",
    ),
    Case(
        "corrupt data cache",
        lambda t: load_cache(
            (t / "data.pt").write_bytes(b"PK\x03\x04 half a zip") and t / "data.pt"
        ),
        "data.pt: the data cache is corrupt",
    ),
    Case(
        "ckpt_path missing",
        lambda t: load_checkpoint(t / "missing.ckpt"),
        "missing.ckpt: no such file. Training writes checkpoints to outputs/train/runs/<run>/checkpoints/",
        CheckpointError,
    ),
    Case(
        "ckpt_path is not a checkpoint",
        lambda t: load_checkpoint((t / "notes.ckpt").write_text("hello") and t / "notes.ckpt"),
        "notes.ckpt: not a readable PyTorch checkpoint",
        CheckpointError,
    ),
    Case(
        "ckpt_path is a torch file but not dialoglab's",
        lambda t: load_checkpoint(torch.save({"w": torch.ones(1)}, t / "w.pt") or t / "w.pt"),
        "w.pt: a PyTorch file, but not a dialoglab checkpoint (it has no 'dialoglab' entry",
        CheckpointError,
    ),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_catalogue(case: Case, tmp_path: Path) -> None:
    with pytest.raises(case.error) as info:
        case.run(tmp_path)
    assert case.message in str(info.value)


# -- cases that need a composed config or a checkpoint ------------------------------------------------
def test_cornell_utf8_with_crlf_parses(tmp_path: Path) -> None:
    lines = [
        *LINES[:2],
        "L3 +++$+++ u0 +++$+++ m0 +++$+++ BIANCA +++$+++ Un café, s'il vous plaît.",
    ]
    folder = cornell(tmp_path, lines, encoding="utf-8-sig", newline="\r\n")
    dialogues, stats = CornellReader(folder, strict=True, download=False).read()
    assert [t.text for t in dialogues[0].turns][-1] == "Un café, s'il vous plaît."
    assert stats.total_skipped == 0


def test_truncated_checkpoint_names_the_file(make_cfg, tmp_path: Path) -> None:
    good = seq2seq_checkpoint(make_cfg, tmp_path)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"last\.ckpt: not a readable PyTorch checkpoint"):
        restore_model(bad)


def test_checkpoint_from_another_model_family(make_cfg, tmp_path: Path) -> None:
    ckpt = seq2seq_checkpoint(make_cfg, tmp_path, family="causal_lm")
    cfg = make_cfg("train", ["data=chatterbot", *TINY_GRU, f"ckpt_path={ckpt}"])
    plan = prepare_resume(cfg)
    import hydra

    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    plan.restore_tokenizer(tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer)
    with pytest.raises(
        CheckpointError, match="a causal_lm checkpoint cannot resume a seq2seq model"
    ):
        plan.check_model(model)


def test_vocabulary_and_weights_disagree(make_cfg, tmp_path: Path) -> None:
    """The checkpoint's vocabulary is what a model uses on any data; a checkpoint whose tokenizer
    state does not match its embedding (files mixed from two runs) is refused by name."""
    tokenizer = WordTokenizer().fit(["hello there", "how are you", "fine thanks", "one more word"])
    ckpt = seq2seq_checkpoint(make_cfg, tmp_path, tokenizer=tokenizer.state_dict())
    with pytest.raises(CheckpointError) as info:
        restore_model(ckpt)
    message = str(info.value)
    assert (
        "made.ckpt: its weights do not fit the model that its config and its vocabulary (15 tokens)"
        in message
    )
    assert "is [12, 16] in the checkpoint but [15, 16] here" in message


def test_resume_mode_unknown(make_cfg) -> None:
    cfg = make_cfg("train", ["data=chatterbot", *TINY_GRU, "resume=sometimes"])
    with pytest.raises(DialoglabError, match="resume must be one of null, auto; got 'sometimes'"):
        prepare_resume(cfg)


LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=1",
    "test=false",
    "sample_replies=0",
    "callbacks.early_stopping=null",
]


def test_nonfinite_loss_stops_naming_the_step(make_cfg) -> None:
    from dialoglab.experiment.train import train

    nan = ["+callbacks.nan._target_=tests.helpers.crash.NanAtStep", "+callbacks.nan.step=3"]
    cfg = make_cfg("train", ["data=chatterbot", *TINY_GRU, *LIMITS, *nan])
    with pytest.raises(TrainingError) as info:
        train(cfg)
    assert "train/loss is nan at step 3 (epoch 0, batch 3); training stopped." in str(info.value)
    assert "set callbacks.nonfinite.skip=true" in str(info.value)


def test_nonfinite_loss_skipped_and_counted(make_cfg) -> None:
    from dialoglab.experiment.train import train

    nan = ["+callbacks.nan._target_=tests.helpers.crash.NanAtStep", "+callbacks.nan.step=2"]
    cfg = make_cfg(
        "train", ["data=chatterbot", *TINY_GRU, *LIMITS, *nan, "callbacks.nonfinite.skip=true"]
    )
    metrics = train(cfg)
    assert metrics["train/skipped_nonfinite"] == 1.0
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


# -- chat and API input (through their public API) ------------------------------------------------
@pytest.fixture
def bot(make_cfg, tmp_path: Path):
    from dialoglab.chat.bot import Chatbot

    return Chatbot.from_checkpoint(seq2seq_checkpoint(make_cfg, tmp_path))


def test_chat_empty_input(bot) -> None:
    from dialoglab.chat.bot import EMPTY_PROMPT

    reply = bot.reply("   \n\t ")
    assert (reply.text, reply.source) == (EMPTY_PROMPT, "system")


def test_chat_100k_characters(bot) -> None:
    reply = bot.reply("ab" * 50_000)
    assert "Your message was 100,000 characters long; I read only the last 1,000." in reply.notices
    assert reply.source == "model"


def test_chat_non_utf8_bytes(bot) -> None:
    reply = bot.reply(b"hello \xff\xfe there")
    assert reply.source == "model" and isinstance(reply.text, str)


def test_api_body_not_json_and_too_large(bot) -> None:
    from fastapi.testclient import TestClient

    from dialoglab.chat.api import create_app

    client = TestClient(create_app(bot, max_body_bytes=1000))
    headers = {"content-type": "application/json"}
    bad = client.post("/v1/chat", content=b"{not json", headers=headers)
    assert bad.status_code == 422 and "JSON decode error" in bad.text
    big = client.post("/v1/chat", content=b"{" + b" " * 2000 + b"}", headers=headers)
    assert big.status_code == 413 and "request body too large: the limit is 1000 bytes" in big.text


# -- through the real command line: exit code, one clear line, no traceback ------------------------------
def cli(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(cwd)}
    return run_script(script, *overrides, cwd=cwd, env=env)


CLI_CASES = [
    # (name, script, overrides, exit code, message in stderr)
    ("unknown model=", "train.py", ["model=nosuch"], 1, "Could not find 'model/nosuch'"),
    (
        "misspelled config key",
        "train.py",
        ["trainer.max_epoch=3"],
        1,
        "Could not override 'trainer.max_epoch'",
    ),
    (
        "data.batch_size=0",
        "train.py",
        ["data=chatterbot", "data.batch_size=0"],
        2,
        "error: data.batch_size must be a positive integer, got 0",
    ),
    (
        "eval ckpt_path missing",
        "eval.py",
        ["ckpt_path=gone.ckpt"],
        2,
        "error: ckpt_path=gone.ckpt: no such file.",
    ),
    (
        "train ckpt_path not a checkpoint",
        "train.py",
        ["data=chatterbot", "ckpt_path=train.py"],
        2,
        "not a readable PyTorch checkpoint",
    ),
]


@pytest.mark.parametrize(
    "name,script,overrides,code,message", CLI_CASES, ids=[c[0] for c in CLI_CASES]
)
def test_cli_catalogue(name, script, overrides, code, message, tmp_path: Path) -> None:
    if "ckpt_path=train.py" in overrides:
        (tmp_path / "train.py").write_text("print('not a checkpoint')\n")
    result = cli(script, *overrides, cwd=tmp_path)
    assert result.returncode == code, result.stderr[-2000:]
    assert message in " ".join(result.stderr.split()), result.stderr[-2000:]
    if code == 2:  # our own errors: one line, no traceback (Hydra prints its own for config errors)
        assert "Traceback" not in result.stderr


# -- property-based: the readers parse or raise DataError, nothing else ----------------------------------
EXAMPLES = {"count": 0}
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def parses_or_data_error(read: Callable[[], object]) -> None:
    EXAMPLES["count"] += 1
    with contextlib.suppress(DataError):
        read()


@PROPERTY
@given(lines=st.binary(max_size=400), convs=st.binary(max_size=400))
def test_cornell_random_bytes(tmp_path_factory, lines: bytes, convs: bytes) -> None:
    folder = tmp_path_factory.mktemp("c")
    (folder / LINES_FILE).write_bytes(lines)
    (folder / CONVERSATIONS_FILE).write_bytes(convs)
    for strict in (False, True):
        parses_or_data_error(lambda s=strict: read_cornell(folder, strict=s))


field = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
line_row = st.lists(field, min_size=0, max_size=6).map(SEP.join)
conv_row = st.one_of(
    st.tuples(
        field,
        field,
        field,
        st.lists(st.sampled_from(["L1", "L2", "L3", "L9", "'", "]"]), max_size=4),
    ).map(lambda t: SEP.join([*t[:3], repr(t[3])])),
    st.lists(field, max_size=5).map(SEP.join),
)


@PROPERTY
@given(
    lines=st.lists(st.one_of(st.sampled_from(LINES), line_row), max_size=8),
    convs=st.lists(st.one_of(st.sampled_from(CONVERSATIONS), conv_row), max_size=6),
    newline=st.sampled_from(["\n", "\r\n"]),
    encoding=st.sampled_from(["utf-8", "latin-1"]),
)
def test_cornell_near_miss_rows(tmp_path_factory, lines, convs, newline, encoding) -> None:
    folder = tmp_path_factory.mktemp("c")
    for name, rows in ((LINES_FILE, lines), (CONVERSATIONS_FILE, convs)):
        (folder / name).write_bytes(newline.join(rows).encode(encoding, errors="replace"))
    for strict in (False, True):
        parses_or_data_error(lambda s=strict: read_cornell(folder, strict=s))


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | field,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field, inner, max_size=3),
    max_leaves=6,
)
persona_row = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"input persona": json_value, "synthesized text": json_value}
    ),
    st.fixed_dictionaries({}, optional={"persona": json_value, "turns": json_value}),
    json_value,
).map(json.dumps)


@PROPERTY
@given(rows=st.lists(st.one_of(persona_row, field), max_size=6), noise=st.binary(max_size=20))
def test_persona_near_miss_rows(tmp_path_factory, rows: list[str], noise: bytes) -> None:
    path = tmp_path_factory.mktemp("p") / "data.jsonl"
    path.write_bytes("\n".join(rows).encode() + noise)
    for strict in (False, True):
        parses_or_data_error(lambda s=strict: read_persona(path, strict=s))


def test_report_hypothesis_examples() -> None:
    """Runs last in this file: how many reader calls the property tests made."""
    print(f"\nhypothesis reader calls: {EXAMPLES['count']}")
