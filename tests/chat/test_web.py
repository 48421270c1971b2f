"""`streamlit run app.py -- OVERRIDES`: its settings, the app under Streamlit's AppTest, and the
real server in a headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, free_port, running_server
from tests.helpers.run_if import run_if

if TYPE_CHECKING:
    from playwright.sync_api import Page

APP = REPO_ROOT / "app.py"
TIMEOUT = 120  # model imports are slow on a loaded machine


def app_args(*overrides: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `streamlit run app.py -- OVERRIDES` gives the script (AppTest runs it in-process)."""
    monkeypatch.setattr(sys, "argv", [str(APP), *overrides])


def root_of(checkpoint: Path) -> Path:
    return checkpoint.parents[3]  # <root>/outputs/run/checkpoints/<name>.ckpt


@pytest.fixture
def app_env(chat_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = root_of(chat_checkpoint)
    app_args(f"ckpt_path={chat_checkpoint}", f"paths.root_dir={root}", monkeypatch=monkeypatch)
    return chat_checkpoint


# -----------------------------------------------------------------------------
# Settings from the script's arguments


def test_settings_come_from_overrides_of_chat_yaml(tmp_path: Path) -> None:
    from dialoglab.chat.web_settings import web_settings

    settings = web_settings(
        [
            "ckpt_path=best",
            "quantize=INT8",
            f"paths.root_dir={tmp_path}",
            "decoding=beam",
            "decoding.num_beams=3",
            "accel=none",
        ]
    )
    assert settings.root_dir == tmp_path
    assert (settings.ckpt_path, settings.quantize) == ("best", "int8")
    assert settings.decoding_preset == "beam"
    assert (settings.decoding["strategy"], settings.decoding["num_beams"]) == ("beam", 3)
    assert settings.accel and not any(settings.accel.values())


def test_settings_default_to_chat_yaml_and_read_sys_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dialoglab.chat.web_settings import web_settings

    monkeypatch.delenv("DIALOGLAB_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    app_args(monkeypatch=monkeypatch)
    settings = web_settings()
    assert settings.root_dir == tmp_path  # paths.root_dir: the working directory
    assert (settings.ckpt_path, settings.quantize, settings.device) == (None, "auto", "cpu")
    assert settings.decoding_preset == "default" and settings.decoding["strategy"] == "sample"
    app_args("quantize=bf16", monkeypatch=monkeypatch)
    assert web_settings().quantize == "bf16"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("quantise=int8", "'quantise'"),
        ("quantize=int9", "quantize=int9"),
        ("decoding=nope", "decoding/nope"),
        ("decoding.temprature=1", "'decoding.temprature'"),
        ("--foo", "LexerNoViableAltException: --foo"),
        ("ckpt_path", "Error parsing override 'ckpt_path'"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_it(override: str, named: str) -> None:
    from dialoglab.chat.web_settings import web_settings
    from dialoglab.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        web_settings(["ckpt_path=x.ckpt", override])
    assert named in str(caught.value)
    assert "Config search path" not in str(caught.value)


def test_app_shows_a_bad_setting_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    app_args("quantise=int8", monkeypatch=monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert "Could not override 'quantise'" in at.error[0].value
    assert "streamlit run app.py --" in at.error[0].value
    assert not at.chat_input


# -----------------------------------------------------------------------------
# The app


def test_app_chats_remembers_and_draws_attention(app_env: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="ckpt_choice").value == str(app_env)
    assert at.sidebar.selectbox(key="quantize").value == "auto"
    assert at.title[0].value == "dialoglab chat"

    at.chat_input[0].set_value("hi, my name is Ana and I love jazz").run()
    assert not at.exception, at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.chat_message[0].markdown[0].value == "hi, my name is Ana and I love jazz"
    assert at.chat_message[1].markdown[0].value.strip()
    assert "remembered name: Ana; likes: jazz" in [c.value for c in at.chat_message[1].caption]
    memory = at.sidebar.table[0].value
    assert memory.to_dict("records") == [
        {"fact": "name", "value": "Ana"},
        {"fact": "likes", "value": "jazz"},
    ]
    assert any("Attention of the last reply" in m.value for m in at.markdown)

    at.chat_input[0].set_value("what's my name?").run()
    assert at.chat_message[3].markdown[0].value == "Your name is Ana."

    at.sidebar.button(key="forget").click().run()
    assert not at.sidebar.table
    at.chat_input[0].set_value("what's my name?").run()
    assert at.chat_message[5].markdown[0].value.startswith("I don't know your name")

    at.sidebar.button(key="reset").click().run()
    assert len(at.chat_message) == 0


def test_app_decoding_controls(app_env: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    decoding = next(s for s in at.sidebar.selectbox if s.label == "Decoding preset")
    assert decoding.value == "default"  # conf/decoding/default.yaml, as chat.py and serve.py
    decoding.set_value("beam").run()
    early = next(c for c in at.sidebar.checkbox if c.label == "Stop at the first finished beams")
    assert early.value is False
    early.check().run()
    at.chat_input[0].set_value("hi").run()
    assert not at.exception, at.exception
    assert at.chat_message[1].markdown[0].value.strip()
    decoding = next(s for s in at.sidebar.selectbox if s.label == "Decoding preset")
    decoding.set_value("sample").run()
    assert not at.exception, at.exception
    labels = [s.label for s in at.sidebar.slider]
    assert "Temperature" in labels and "Beams" not in labels
    at.chat_input[0].set_value("hello there").run()
    assert not at.exception, at.exception
    assert at.chat_message[3].markdown[0].value.strip()


def test_app_overrides_preselect_weights_and_decoding(
    chat_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    overrides = ["ckpt_path=last", "quantize=none", "decoding=beam", "decoding.num_beams=3"]
    app_args(*overrides, f"paths.root_dir={root_of(chat_checkpoint)}", monkeypatch=monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.sidebar.selectbox(key="ckpt_choice").value == "last"
    assert at.session_state.ckpt == str(chat_checkpoint.parent / "last.ckpt")
    assert at.sidebar.selectbox(key="quantize").value == "none"
    assert any("fp32 weights" in c.value for c in at.sidebar.caption)
    decoding = next(s for s in at.sidebar.selectbox if s.label == "Decoding preset")
    assert decoding.value == "beam"
    assert next(s for s in at.sidebar.slider if s.label == "Beams").value == 3
    decoding.set_value("greedy").run()  # the sidebar still picks freely
    assert not at.exception, at.exception
    assert "Beams" not in [s.label for s in at.sidebar.slider]


def test_app_without_checkpoints_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    app_args(f"paths.root_dir={tmp_path}", monkeypatch=monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert "experiment=quickstart" in at.info[0].value
    assert str(tmp_path / "outputs") in at.info[0].value
    at.sidebar.text_input(key="ckpt_typed").set_value(str(tmp_path / "missing.ckpt")).run()
    assert "no such file" in at.error[0].value
    at.sidebar.text_input(key="ckpt_typed").set_value("best").run()
    assert at.error[0].value.startswith("ckpt_path=best: no run under")


def test_app_takes_last_for_the_newest_runs_checkpoint(app_env: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.sidebar.text_input(key="ckpt_typed").set_value("last").run()
    assert not at.exception and not at.error, at.error
    assert at.session_state.ckpt == str(app_env.parent / "last.ckpt")


# -----------------------------------------------------------------------------
# A real browser


@pytest.fixture
def streamlit_server(chat_checkpoint: Path, tmp_path: Path) -> Iterator[str]:
    """`streamlit run app.py ... -- OVERRIDES`: quantize=none shows as "fp32 weights" (the
    default, auto, holds int8 weights on the CPU), so the page proves the overrides got through."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--",
        f"ckpt_path={chat_checkpoint}",
        f"paths.root_dir={root_of(chat_checkpoint)}",
        "quantize=none",
    ]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    with running_server(command, f"{url}/_stcore/health", log, tmp_path, env, timeout=TIMEOUT):
        yield url


def chromium_path() -> str:
    """The system Chromium (Playwright's own browser download is not reachable here)."""
    found = (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))
    path = next((p for p in found if p), None)
    assert path is not None, "run_if(chromium=True) should have skipped this test"
    return path


@pytest.fixture
def page() -> Iterator[Page]:
    """A page of a real headless Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


@run_if(chromium=True)  # without it, the AppTest tests above cover the app
def test_real_browser_types_a_message_and_sees_the_reply(
    streamlit_server: str, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    wait = {"timeout": TIMEOUT * 1000}  # ms; the first reply loads the model
    page.set_default_timeout(TIMEOUT * 1000)
    page.goto(streamlit_server)
    messages = page.get_by_test_id("stChatMessage")
    chat_input = page.get_by_test_id("stChatInputTextArea")
    turns = [("hi, my name is Ana and I love jazz", None), ("what's my name?", "Your name is Ana.")]
    for i, (text, expected) in enumerate(turns):
        chat_input.fill(text)
        chat_input.press("Enter")
        expect(messages).to_have_count(2 * i + 2, **wait)
        # a message box (with its avatar) appears before its text: expect() waits for both
        said = messages.nth(2 * i).get_by_test_id("stChatMessageContent")
        reply = messages.nth(2 * i + 1).get_by_test_id("stChatMessageContent")
        expect(said).to_contain_text(text, **wait)
        expect(reply).to_have_text(re.compile(r"\S"), **wait)
        if expected:
            expect(reply).to_contain_text(expected, **wait)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text("Ana", **wait)
    expect(sidebar).to_contain_text("jazz", **wait)
    expect(sidebar).to_contain_text("fp32 weights", **wait)  # quantize=none, after `--`
    screenshot = page.screenshot(path=tmp_path / "web_ui.png", full_page=True)
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("DIALOGLAB_SCREENSHOT")
    if target:
        Path(target).write_bytes(screenshot)
