"""Safe by default: the web app and the API face this machine only unless told otherwise, an
exposed API needs a key, and a bad checkpoint never brings advice to load it unsafely."""

from __future__ import annotations

import os
import pickle
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import torch

from dialoglab.chat.api import is_loopback
from dialoglab.errors import CheckpointError
from dialoglab.experiment.checkpoint import load_checkpoint
from tests.conftest import REPO_ROOT, free_port, running_server


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port`."""
    return {
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }


def test_streamlit_settings_bind_loopback_and_collect_nothing(tmp_path: Path) -> None:
    """`streamlit run app.py -- OVERRIDES` from the repository root, with no address flag:
    127.0.0.1 only (the overrides after `--` are the app's, not Streamlit's)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}  # no user config
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--",
        f"paths.root_dir={tmp_path}",
        "quantize=int8",
    ]
    log = tmp_path / "streamlit.log"
    url = f"http://127.0.0.1:{port}/_stcore/health"
    with running_server(command, url, log, REPO_ROOT, env, timeout=120):
        assert listening_addresses(port) == {"127.0.0.1"}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from streamlit import config as c; "
            "print(c.get_option('server.address'), c.get_option('browser.gatherUsageStats'))",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["127.0.0.1", "False"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def serve(*overrides: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "serve.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_serve_refuses_other_hosts_without_a_key(chat_checkpoint: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DIALOGLAB_API_KEY"}
    env["OMP_NUM_THREADS"] = "1"
    done = serve(
        f"ckpt_path={chat_checkpoint}", "host=0.0.0.0", f"port={free_port()}", env=env, cwd=tmp_path
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "host=0.0.0.0" in lines[0] and "DIALOGLAB_API_KEY" in lines[0]
    assert "api_key" in lines[0]


def test_serve_with_a_key_answers_only_requests_that_carry_it(
    chat_checkpoint: Path, tmp_path: Path
) -> None:
    key = secrets.token_urlsafe(24)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIALOGLAB_API_KEY": key}
    command = [
        sys.executable,
        str(REPO_ROOT / "serve.py"),
        f"ckpt_path={chat_checkpoint}",
        f"port={port}",
        "decoding=greedy",
    ]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    body = {"session_id": "s1", "message": "hi, my name is Ana"}
    with running_server(command, f"{url}/health", log, tmp_path, env, timeout=180):
        assert httpx.get(f"{url}/health").status_code == 200  # open: a load balancer's probe
        refused = [
            httpx.post(f"{url}/v1/chat", json=body),
            httpx.post(f"{url}/v1/chat", json=body, headers={"Authorization": "Bearer nope"}),
            httpx.post(f"{url}/v1/chat", json=body, headers={"Authorization": key}),
            httpx.post(f"{url}/v1/chat", json=body, headers={"X-API-Key": key[:-1]}),
            httpx.get(f"{url}/v1/sessions/s1"),
            httpx.get(f"{url}/openapi.json"),
        ]
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert "Authorization: Bearer" in refused[0].json()["detail"]
        assert refused[0].headers["www-authenticate"] == "Bearer"
        bearer = {"Authorization": f"Bearer {key}"}
        answered = httpx.post(f"{url}/v1/chat", json=body, headers=bearer, timeout=120)
        assert answered.status_code == 200, answered.text
        by_header = httpx.get(f"{url}/v1/sessions/s1", headers={"X-API-Key": key})
        assert by_header.status_code == 200 and by_header.json()["turn"] == 1
    assert key not in log.read_text(errors="replace")


# -----------------------------------------------------------------------------
# A file that is not a checkpoint


class NotAllowed:
    """A class torch's weights-only loader refuses (it could run code when unpickled)."""


@pytest.mark.parametrize("kind", ["garbage", "pickle", "object"])
def test_bad_checkpoints_bring_no_advice_to_load_them_unsafely(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    else:
        torch.save({"state_dict": {}, "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"ckpt_path={path}: not a readable PyTorch checkpoint (")
    for advice in ("weights_only", "trusted source", "add_safe_globals", "\x1b["):
        assert advice not in message, message


def test_chat_with_a_garbage_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x00garbage" * 100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "chat.py"), f"ckpt_path={path}", "--once", "hi"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "not a readable PyTorch checkpoint" in done.stderr
    assert "weights_only" not in done.stderr and "Traceback" not in done.stderr
