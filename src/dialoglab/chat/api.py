"""`python serve.py ckpt_path=...`: the chatbot over HTTP (FastAPI + uvicorn); docs at /docs.

    POST   /v1/chat                {"session_id": "abc", "message": "hi", "decoding": {...}?}
                                   -> {"session_id", "reply", "source", "notices", "learnt",
                                       "unknown_words", "memory", "turn", "seconds"}
    GET    /v1/sessions/{id}       -> the session's history and memory (404 when unknown)
    DELETE /v1/sessions/{id}       -> forget the session (404 when unknown)
    GET    /health                 -> {"status": "ok", "model": {..., "quantize"}, "sessions": n}

`quantize` (conf/serve.yaml, default auto: int8 dynamic quantization on the CPU)
says how the model holds its weights; see dialoglab.models.quantize.

Sessions are isolated: each has its own history, memory and lock, so concurrent requests to one
session are answered one after another and never see another session's state. A message over
`max_message_chars` gets 413, a body over `max_body_bytes` gets 413, a malformed body 400/422,
each with a `detail` saying what to fix.

The server binds 127.0.0.1 unless told otherwise. Any other host needs an API key (`api_key`, or
the environment variable DIALOGLAB_API_KEY for a secret kept out of configs and shell history);
without one the server refuses to start. With a key, every request but `GET /health` must send
`Authorization: Bearer <key>` or `X-API-Key: <key>`, else 401. The key is never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
from collections import OrderedDict
from typing import Any

import hydra
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from omegaconf import DictConfig
from pydantic import BaseModel, Field

from dialoglab.chat.bot import Chatbot, Session, bot_from_config
from dialoglab.errors import ConfigError
from dialoglab.experiment.runner import CONFIG_DIR, run_task

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
API_KEY_ENV = "DIALOGLAB_API_KEY"
OPEN_PATHS = frozenset({"/health"})  # answered without the API key


class ChatRequest(BaseModel):
    session_id: str = Field(
        ...,
        pattern=SESSION_ID_PATTERN,
        description="Any id of 1-128 letters, digits or _.:- chosen by the client",
        examples=["alice-1"],
    )
    message: str = Field(..., description="What the user says", examples=["hi, my name is Ana"])
    decoding: dict[str, Any] | None = Field(
        None,
        description="Fields of the server's decoding config to change for this reply",
        examples=[{"strategy": "sample", "temperature": 0.7, "seed": 0}],
    )


class ChatResponse(BaseModel):
    session_id: str
    reply: str
    source: str = Field(description="model, memory, command or system")
    notices: list[str]
    learnt: dict[str, Any]
    unknown_words: list[str]
    memory: dict[str, Any]
    turn: int = Field(description="Messages answered in this session so far")
    seconds: float


class SessionStore:
    """Sessions by id, each with its own lock; the least recently used goes beyond `max_sessions`."""

    def __init__(self, bot: Chatbot, max_sessions: int = 10_000) -> None:
        self.bot = bot
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[Session, threading.Lock, list[int]]] = OrderedDict()

    def get(
        self, session_id: str, create: bool = True
    ) -> tuple[Session, threading.Lock, list[int]] | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None:
                if not create:
                    return None
                entry = (self.bot.new_session(session_id), threading.Lock(), [0])
                self._sessions[session_id] = entry
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(session_id)
            return entry

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"request body too large: the limit is {self.max_bytes} bytes")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large().detail}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyAuth:
    """ASGI middleware: 401 for HTTP requests (but `OPEN_PATHS`) without the right API key, sent
    as `Authorization: Bearer <key>` or `X-API-Key: <key>`; compared in constant time."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        offered = [token.strip()] if scheme.lower() == b"bearer" else []
        if b"x-api-key" in headers:
            offered.append(headers[b"x-api-key"].strip())
        return any(hmac.compare_digest(key, self._key) for key in offered)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self._authorised(dict(scope.get("headers") or [])):
            response = JSONResponse(
                {
                    "detail": "missing or wrong API key: send 'Authorization: Bearer <key>' "
                    "or 'X-API-Key: <key>'"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a hostname or "": it may face the network
        return False


def api_key_of(cfg: DictConfig) -> str | None:
    """The API key: `api_key` of the config, else the environment's DIALOGLAB_API_KEY."""
    key = cfg.get("api_key") or os.environ.get(API_KEY_ENV) or None
    return str(key) if key is not None else None


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key (one line saying how to set one)."""
    if api_key is None and not is_loopback(host):
        raise ConfigError(
            f"host={host} makes the API reachable from other machines, so it needs an API key: "
            f"set the environment variable {API_KEY_ENV} (or api_key in conf/serve.yaml); "
            "clients then send 'Authorization: Bearer <key>'"
        )


def create_app(
    bot: Chatbot,
    max_message_chars: int = 1000,
    max_body_bytes: int = 16_384,
    max_sessions: int = 10_000,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI app around one Chatbot; with `api_key`, requests must carry it (see module)."""
    app = FastAPI(
        title="dialoglab chat API",
        version="1",
        description="Talk to a dialoglab checkpoint; sessions keep history and memory.",
    )
    store = SessionStore(bot, max_sessions)
    app.state.bot = bot
    app.state.sessions = store
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyAuth, api_key=api_key)  # outermost: checked before the body

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": bot.describe(), "sessions": len(store)}

    _add_chat_route(app, bot, store, max_message_chars)
    _add_session_routes(app, store)
    return app


def _add_chat_route(app: FastAPI, bot: Chatbot, store: SessionStore, max_chars: int) -> None:
    @app.post("/v1/chat", response_model=ChatResponse)
    def chat(request: ChatRequest) -> ChatResponse:
        if len(request.message) > max_chars:
            raise HTTPException(
                413,
                f"message is {len(request.message)} characters long; the limit is {max_chars}",
            )
        decoding = None
        if request.decoding:
            try:
                decoding = bot.decoding.replace(**request.decoding)
            except (ConfigError, TypeError) as err:
                raise HTTPException(422, f"decoding: {err}") from err
        entry = store.get(request.session_id)
        assert entry is not None
        session, lock, turns = entry
        with lock:  # one reply at a time per session; other sessions go on in parallel
            reply = bot.reply(request.message, session, decoding=decoding)
            turns[0] += 1
            return ChatResponse(
                session_id=session.id,
                memory=session.memory.to_dict(),
                turn=turns[0],
                **reply.to_dict(),
            )


def _add_session_routes(app: FastAPI, store: SessionStore) -> None:
    @app.get("/v1/sessions/{session_id}")
    def get_session(session_id: str) -> dict[str, Any]:
        entry = store.get(session_id, create=False)
        if entry is None:
            raise HTTPException(404, f"no session {session_id!r}")
        session, lock, turns = entry
        with lock:
            return {**session.to_dict(), "turn": turns[0]}

    @app.delete("/v1/sessions/{session_id}")
    def delete_session(session_id: str) -> dict[str, Any]:
        if not store.delete(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return {"deleted": session_id}


def serve(cfg: DictConfig) -> dict[str, Any]:
    import uvicorn

    api_key = api_key_of(cfg)
    check_exposure(str(cfg.host), api_key)  # before the model loads: fail fast
    bot = bot_from_config(cfg, cfg.max_message_chars)
    app = create_app(
        bot, cfg.max_message_chars, cfg.max_body_bytes, cfg.max_sessions, api_key=api_key
    )
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level))
    return {}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="serve")
def main(cfg: DictConfig) -> None:
    run_task(serve, cfg)
