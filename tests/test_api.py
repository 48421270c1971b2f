"""`import dialoglab` as a library: cheap to import, a Chatbot with one conversation per session
id, and the README's Python example run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import REPO_ROOT


def test_import_dialoglab_loads_no_framework() -> None:
    """The public names are imported on first use, so `import dialoglab` stays cheap."""
    code = (
        "import sys, dialoglab; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules)); "
        "print(sorted(n for n in dialoglab.__all__ if n in dir(dialoglab)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["[]", "['Chatbot', '__version__', 'compose', 'evaluate', 'train']"]


def test_compose_gives_the_configs_the_cli_would_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dialoglab import compose

    monkeypatch.chdir(tmp_path)
    try:
        cfg = compose(["experiment=quickstart", "trainer.max_epochs=2"])
        chat = compose(["ckpt_path=last", "decoding=sample"], config_name="chat")
    finally:
        GlobalHydra.instance().clear()
    assert list(cfg.tags) == ["quickstart"] and cfg.trainer.max_epochs == 2
    run_dir = Path(cfg.paths.output_dir)
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "outputs" / "train" / "runs"
    assert chat.ckpt_path == "last" and chat.decoding.strategy == "sample"
    assert "hydra" not in cfg and "paths" not in chat


def test_chatbot_keeps_one_conversation_per_session(chat_checkpoint: Path) -> None:
    from dialoglab import Chatbot

    bot = Chatbot.from_checkpoint(chat_checkpoint, strategy="beam", num_beams=2, quantize="none")
    assert bot.engine.decoding.strategy == "beam" and bot.engine.decoding.num_beams == 2
    first = bot.reply("hi, my name is Ana", session="ana")
    assert isinstance(first, str) and first.strip()
    assert bot.reply("what's my name?", session="ana") == "Your name is Ana."
    assert "Ana" not in bot.reply("what's my name?", session="bob")
    assert bot.history("ana")[0] == "hi, my name is Ana" and len(bot.history("ana")) == 4
    bot.forget("ana")
    assert bot.history("ana") == []


def test_chatbot_preset_and_bad_field(chat_checkpoint: Path) -> None:
    from dialoglab import Chatbot
    from dialoglab.errors import ConfigError

    bot = Chatbot.from_checkpoint(chat_checkpoint, preset="sample", temperature=0.5)
    assert bot.engine.decoding.strategy == "sample" and bot.engine.decoding.temperature == 0.5
    with pytest.raises(ConfigError, match="num_beam"):
        Chatbot.from_checkpoint(chat_checkpoint, num_beam=3)


def readme_python_example() -> str:
    """The ```python block of the README's **Python** paragraph."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"\*\*Python\*\*.*?```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no **Python** example"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example, executed as written in a fresh directory: it trains the quickstart
    model for one epoch, chats in a session that remembers the user, and evaluates."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    finally:
        GlobalHydra.instance().clear()
    assert namespace["metrics"]["val/ppl"] > 1
    assert namespace["bot"].history("ana")[-1] == "Your name is Ana."
    assert "test/ppl" in namespace["scores"]
    assert list((tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt"))
    assert list((tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json"))
