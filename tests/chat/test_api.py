"""`python serve.py`: a real uvicorn server on localhost, real HTTP, concurrent sessions."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port, running_server

MAX_CHARS = 300


@pytest.fixture(scope="module")
def server(chat_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """serve.py on a free port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO_ROOT / "serve.py"),
        f"ckpt_path={chat_checkpoint}",
        f"port={port}",
        "decoding=greedy",
        f"max_message_chars={MAX_CHARS}",
        "max_body_bytes=4096",
        "log_level=warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, f"{url}/health", log, log.parent, env, timeout=180):
        yield url


def chat(url: str, session_id: str, message: str, **extra) -> httpx.Response:
    body = {"session_id": session_id, "message": message, **extra}
    return httpx.post(f"{url}/v1/chat", json=body, timeout=120)


def test_health_and_openapi(server: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok"
    assert health["model"]["family"] == "seq2seq"
    assert health["model"]["decoding"]["strategy"] == "greedy"
    assert health["model"]["quantize"] == "int8"  # serve.yaml's quantize: auto, on the CPU
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/v1/chat", "/v1/sessions/{session_id}", "/health"} <= set(paths)
    assert httpx.get(f"{server}/docs").status_code == 200


def test_a_conversation_with_memory(server: str) -> None:
    first = chat(server, "conv", "hi, my name is Ana and I love jazz")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["session_id"] == "conv" and body["turn"] == 1 and body["source"] == "model"
    assert body["learnt"] == {"name": "Ana", "likes": ["jazz"]}
    assert body["memory"]["name"] == "Ana"
    second = chat(server, "conv", "what's my name?").json()
    assert (second["reply"], second["source"], second["turn"]) == ("Your name is Ana.", "memory", 2)
    other = chat(server, "someone-else", "what's my name?").json()
    assert other["reply"].startswith("I don't know your name")
    state = httpx.get(f"{server}/v1/sessions/conv").json()
    assert (
        state["history"][0] == "hi, my name is Ana and I love jazz" and len(state["history"]) == 4
    )
    assert httpx.delete(f"{server}/v1/sessions/conv").json() == {"deleted": "conv"}
    assert httpx.delete(f"{server}/v1/sessions/conv").status_code == 404
    assert httpx.get(f"{server}/v1/sessions/conv").status_code == 404
    fresh = chat(server, "conv", "what's my name?").json()
    assert fresh["turn"] == 1 and fresh["reply"].startswith("I don't know your name")


def test_per_request_decoding(server: str) -> None:
    a = chat(server, "dec", "how are you?", decoding={"strategy": "sample", "seed": 3}).json()
    b = chat(server, "dec2", "how are you?", decoding={"strategy": "sample", "seed": 3}).json()
    assert a["reply"] == b["reply"]
    bad = chat(server, "dec", "hi", decoding={"num_beams": 0})
    assert bad.status_code == 422 and "decoding.num_beams" in bad.json()["detail"]
    unknown = chat(server, "dec", "hi", decoding={"beams": 3})
    assert unknown.status_code == 422 and "decoding.beams" in unknown.json()["detail"]


def test_bad_requests_get_clear_4xx(server: str) -> None:
    too_long = chat(server, "limits", "a" * (MAX_CHARS + 1))
    assert too_long.status_code == 413
    assert f"the limit is {MAX_CHARS}" in too_long.json()["detail"]
    assert chat(server, "limits", "a" * MAX_CHARS).status_code == 200
    huge = httpx.post(
        f"{server}/v1/chat",
        content=json.dumps({"session_id": "limits", "message": "a" * 10_000}),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and "4096 bytes" in huge.json()["detail"]

    def streamed():  # no Content-Length: the limit holds while the body streams in
        yield b'{"session_id": "limits", "message": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    chunked = httpx.post(
        f"{server}/v1/chat", content=streamed(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413

    assert chat(server, "bad id!", "hi").status_code == 422
    assert chat(server, "", "hi").status_code == 422
    missing = httpx.post(f"{server}/v1/chat", json={"session_id": "x"})
    assert missing.status_code == 422 and "message" in missing.text
    not_json = httpx.post(
        f"{server}/v1/chat", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert 400 <= not_json.status_code < 500
    not_utf8 = httpx.post(
        f"{server}/v1/chat",
        content=b'{"session_id": "x", "message": "caf\xe9"}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= not_utf8.status_code < 500
    empty = chat(server, "limits", "   ").json()
    assert empty["source"] == "system" and empty["reply"].startswith("Say something")


def test_binds_localhost_by_default() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / "conf" / "serve.yaml")
    assert cfg.host == "127.0.0.1"


def test_50_concurrent_requests_across_10_sessions_do_not_cross_talk(server: str) -> None:
    sessions = [f"user{i}" for i in range(10)]
    names = {sid: f"Name{chr(65 + i)}" for i, sid in enumerate(sessions)}
    for sid in sessions:
        assert chat(server, sid, f"my name is {names[sid]}").status_code == 200

    # 50 requests at once, 5 per session: each states a like unique to its session.
    jobs = [(sid, f"I like thing{sid}x{k}") for k in range(5) for sid in sessions]
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda job: chat(server, *job), jobs))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:3]
    for (sid, message), response in zip(jobs, responses, strict=True):
        body = response.json()
        assert body["session_id"] == sid
        assert body["learnt"] == {"likes": [message.removeprefix("I like ").lower()]}
        assert body["memory"]["name"] == names[sid]
        assert all(like.startswith(f"thing{sid}x") for like in body["memory"]["likes"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda sid: chat(server, sid, "what's my name?").json(), sessions))
    for sid, answer in zip(sessions, answers, strict=True):
        assert answer["reply"] == f"Your name is {names[sid]}."
        assert answer["turn"] == 7  # 1 name + 5 likes + this question, nothing from others
        state = httpx.get(f"{server}/v1/sessions/{sid}").json()
        assert sorted(state["likes"]) == sorted(f"thing{sid.lower()}x{k}" for k in range(5))
        user_turns = state["history"][0::2]
        assert len(user_turns) == 7
        assert all(sid in t or "name" in t for t in user_turns), user_turns
