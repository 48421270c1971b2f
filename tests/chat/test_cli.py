"""`python chat.py`: a real subprocess driven through stdin, as a user at a terminal would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialoglab.chat.cli import translate_argv
from tests.conftest import REPO_ROOT


def run_chat(*args: str, stdin: bytes = b"", cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "chat.py"), *args],
        input=stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
    )


def bot_lines(stdout: bytes) -> list[str]:
    """What the bot said, one entry per reply (prompts and replies share lines without a tty)."""
    text = stdout.decode("utf-8")
    return [part.split("\n")[0].strip() for part in text.split("bot> ")[1:]]


def test_translate_argv() -> None:
    assert translate_argv(["ckpt_path=x", "--once", "hi, there=1"]) == (
        ["ckpt_path=x"],
        "hi, there=1",
    )
    assert translate_argv(["--once=a b", "decoding=beam"]) == (["decoding=beam"], "a b")
    assert translate_argv(["ckpt_path=x"]) == (["ckpt_path=x"], None)
    with pytest.raises(SystemExit, match="--once needs a message"):
        translate_argv(["--once"])


def test_interactive_session_with_memory_and_commands(
    chat_checkpoint: Path, tmp_path: Path
) -> None:
    messages = [
        "hi, my name is Ana",
        "I love jazz and I hate mondays",
        "how are you?",
        "what's my name?",
        "what do I like?",
        "   ",
        "/memory",
        "/forget",
        "what is my name?",
        "/reset",
        "/help",
        "/quit",
        "this is never read",
    ]
    stdin = ("\n".join(messages) + "\n").encode()
    result = run_chat(f"ckpt_path={chat_checkpoint}", "decoding=greedy", stdin=stdin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out = result.stdout.decode()
    assert "dialoglab chat - seq2seq model, greedy, reads the last 2 turn(s)" in out
    replies = bot_lines(result.stdout)
    assert len(replies) == 11  # every message before /quit
    assert "(remembered name: Ana)" in out
    assert "(remembered likes: jazz; dislikes: mondays)" in out
    assert replies[3] == "Your name is Ana."
    assert replies[4] == "You told me you like jazz."
    assert replies[5].startswith("Say something")
    assert replies[6] == "I remember that your name is Ana; you like jazz; you don't like mondays."
    assert replies[7].startswith("Done: I forgot everything")
    assert replies[8].startswith("I don't know your name yet")
    assert replies[9].startswith("New conversation started")
    assert replies[10].startswith("Commands:")
    assert out.rstrip().endswith("bye")
    assert not (tmp_path / "outputs").exists()  # a chat leaves no run directory


def test_end_of_input_and_bad_bytes(chat_checkpoint: Path, tmp_path: Path) -> None:
    stdin = b"caf\xe9 \xff\xfe hello\n" + b"x" * 5000 + b"\n"  # no /quit: stdin just ends
    result = run_chat(f"ckpt_path={chat_checkpoint}", stdin=stdin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert len(bot_lines(result.stdout)) == 2
    assert "note: Your message was 5,000 characters long" in result.stdout.decode()
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize("form", ["--once", "once="])
def test_once_prints_one_reply(chat_checkpoint: Path, tmp_path: Path, form: str) -> None:
    text = "hello, how are you? it's 'great' = ${oops}"
    # --once takes any text as it is; once= is a Hydra override (quote what Hydra would parse).
    args = ["--once", text] if form == "--once" else ["once='hello how are you'"]
    result = run_chat(f"ckpt_path={chat_checkpoint}", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = result.stdout.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].strip()
    assert "dialoglab chat" not in result.stdout.decode()


def test_once_answers_from_memory_in_one_message(chat_checkpoint: Path, tmp_path: Path) -> None:
    result = run_chat(f"ckpt_path={chat_checkpoint}", "--once", "what's my name?", cwd=tmp_path)
    assert (
        result.stdout.decode().strip()
        == 'I don\'t know your name yet. Tell me with "my name is ...".'
    )


def test_errors_are_one_line(chat_checkpoint: Path, tmp_path: Path) -> None:
    missing = run_chat(cwd=tmp_path)
    assert missing.returncode == 2
    assert "ckpt_path is required" in missing.stderr.decode()
    assert "Traceback" not in missing.stderr.decode()
    bad = run_chat(f"ckpt_path={tmp_path / 'nope.ckpt'}", "--once", "hi", cwd=tmp_path)
    assert bad.returncode == 2 and "no such file" in bad.stderr.decode()
    preset = run_chat(f"ckpt_path={chat_checkpoint}", "decoding=nope", "--once", "hi", cwd=tmp_path)
    assert preset.returncode != 0 and "nope" in preset.stderr.decode()


def test_default_weights_are_int8_for_gru_attn(chat_checkpoint: Path, tmp_path: Path) -> None:
    stdin = b"how are you?\n/quit\n"
    result = run_chat(f"ckpt_path={chat_checkpoint}", "decoding=greedy", stdin=stdin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out = result.stdout.decode()
    assert "reads the last 2 turn(s), int8 (quantized) weights." in out  # quantize: auto
    assert len(bot_lines(result.stdout)) == 1 and bot_lines(result.stdout)[0]
    assert "Warning" not in result.stderr.decode()  # torch.ao's deprecation warning is silenced


@pytest.mark.parametrize("mode", ["none", "int8", "bf16"])
def test_quantize_setting_answers(chat_checkpoint: Path, tmp_path: Path, mode: str) -> None:
    result = run_chat(
        f"ckpt_path={chat_checkpoint}", f"quantize={mode}", "--once", "how are you?", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = result.stdout.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].strip()


def test_bad_quantize_value_is_a_one_line_error(chat_checkpoint: Path, tmp_path: Path) -> None:
    bad = run_chat(f"ckpt_path={chat_checkpoint}", "quantize=int4", "--once", "hi", cwd=tmp_path)
    err = bad.stderr.decode()
    assert bad.returncode == 2, err[-3000:]
    assert "quantize must be one of auto, none, int8, bf16" in err and "'int4'" in err
    assert "Traceback" not in err
