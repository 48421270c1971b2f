"""Chatbot: a checkpoint, a decoding config and per-session history + memory, behind `reply()`.

    bot = Chatbot.from_checkpoint("outputs/train/runs/<run>/checkpoints/last.ckpt", decoding="beam")
    session = bot.new_session()
    bot.reply("hi, my name is Ana", session).text

Every front end (CLI, web, HTTP API) goes through this class, and the CLI and the API build it
from their config with `bot_from_config`, so they behave alike:

- `ckpt_path=best` / `ckpt_path=last` name that checkpoint of the newest run under outputs/;
- the weights are held as `quantize` says, by default `auto` (int8 on the CPU, fp32 on GPUs);

- the context given to the model is the session's last `context_turns` turns (the model's own
  `data.context_turns` from its checkpoint; 0 means the single last turn, as in training);
- words outside the vocabulary become `<unk>` (never an error);
- empty or whitespace-only input gets a friendly prompt, not a model call;
- input longer than `max_input_chars` is cut to its end, and a message longer than the model's
  token budget is read from its end (as in training); either way the reply carries a notice;
- questions about the user ("what's my name?") are answered from the session's `Memory`; facts
  the user states are remembered and, for persona-conditioned models (GPT-2), given to the model
  as persona lines;
- `/reset`, `/memory`, `/forget [name|likes|dislikes|origin]` and `/help` are commands.

`reply()` is safe to call from several threads (the model runs under a lock); one `Session` must
not be used by two threads at once (the HTTP API holds a lock per session).
"""

from __future__ import annotations

import inspect
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dialoglab.chat.memory import Memory
from dialoglab.errors import ConfigError
from dialoglab.experiment.runner import CONFIG_DIR, find_checkpoints, resolve_ckpt_path
from dialoglab.generation import DecodingConfig

MAX_INPUT_CHARS = 1000
DEFAULT_QUANTIZE = "auto"  # as conf/chat.yaml and conf/serve.yaml: int8 on the CPU
PRESETS_DIR = CONFIG_DIR / "decoding"  # decoding presets by name ("beam") come from here
DEFAULT_DECODING = "default"  # conf/decoding/default.yaml: chosen by benchmarks/decoding.py
MAX_HISTORY_TURNS = 100  # turns kept per session (the model reads only the last context_turns)
EMPTY_PROMPT = "Say something and I'll reply. Type /help for commands."

HELP = """Commands:
  /reset                 start a new conversation (memory is kept)
  /memory                show what I remember about you
  /forget [what]         forget everything, or one of: name, likes, dislikes, origin
  /help                  this help
  /quit                  leave (CLI)
Tell me about yourself ("my name is ...", "I like ...", "I'm from ...") and ask
"what's my name?", "what do I like?" or "where am I from?"."""


@dataclass
class Attention:
    """Decoder attention of one reply: weights[t][s] of reply token t over source token s."""

    source_tokens: list[str]
    reply_tokens: list[str]
    weights: list[list[float]]


@dataclass
class BotReply:
    """What the bot says and why: `source` is model, memory, command or system."""

    text: str
    source: str = "model"
    notices: list[str] = field(default_factory=list)
    learnt: dict[str, Any] = field(default_factory=dict)
    unknown_words: list[str] = field(default_factory=list)
    attention: Attention | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reply": self.text,
            "source": self.source,
            "notices": list(self.notices),
            "learnt": dict(self.learnt),
            "unknown_words": list(self.unknown_words),
            "seconds": round(self.seconds, 4),
        }


@dataclass
class Session:
    """One conversation: its turns (user and bot alternating, oldest first) and its memory."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    history: list[str] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)

    def reset(self) -> None:
        """Start the conversation over; what the bot remembers about the user stays."""
        self.history.clear()

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.id, "history": list(self.history), **self.memory.to_dict()}


def decoding_config(value: Any = None, **overrides: Any) -> DecodingConfig:
    """A DecodingConfig from a preset name of conf/decoding/, a mapping or a config; None is
    the `default` preset, the one chat.py, serve.py and the web app start with."""
    value = DEFAULT_DECODING if value is None else value
    return DecodingConfig.from_any(value, presets_dir=PRESETS_DIR, **overrides)


def clean_text(text: str | bytes) -> str:
    """Valid, printable text: bytes decoded as UTF-8 (bad bytes replaced), lone surrogates and
    control characters (other than newlines and tabs) dropped."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return "".join(
        c if c in "\n\t" or unicodedata.category(c)[0] != "C" else " " for c in text
    ).strip()


class Chatbot:
    """A dialogue model restored from a checkpoint, answering in sessions (see module doc)."""

    def __init__(
        self,
        model: Any,
        run_config: dict[str, Any] | None = None,
        decoding: Any = None,
        ckpt_path: str | Path | None = None,
        max_input_chars: int = MAX_INPUT_CHARS,
    ) -> None:
        self.model = model.eval()
        self.run_config = run_config or getattr(model, "run_config", {}) or {}
        self.decoding = decoding_config(decoding)
        self.ckpt_path = str(ckpt_path) if ckpt_path else None
        self.max_input_chars = max_input_chars
        self._lock = threading.Lock()
        data = self.run_config.get("data", {}) or {}
        self.context_turns = int(data.get("context_turns", 0) or 0)
        reader = str((data.get("reader") or {}).get("_target_", ""))
        # Persona lines from memory go to models that were trained to read personas.
        self.uses_persona = self.family != "seq2seq" or "persona" in reader.lower()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        decoding: Any = None,
        device: str | torch.device = "cpu",
        quantize: str | None = DEFAULT_QUANTIZE,
        accel: Any = None,
        **kwargs: Any,
    ) -> Chatbot:
        """Rebuild model and tokenizer from a dialoglab checkpoint alone.

        `path` may be `best` or `last` (that checkpoint of the newest run under ./outputs/).
        `quantize` (auto | none | int8 | bf16) is how the weights are held for inference; see
        `dialoglab.models.quantize` (auto: int8 on the CPU, fp32 on GPUs). `accel` picks the
        speed paths (`dialoglab.accel`; None: all on, as `accel=auto`).
        """
        from dialoglab import accel as speed
        from dialoglab.experiment.checkpoint import restore_model

        path = resolve_ckpt_path(path)
        restored = restore_model(path)
        model = speed.for_inference(restored.model.to(device), quantize, accel)
        return cls(model, restored.checkpoint["dialoglab"]["config"], decoding, path, **kwargs)

    # -- facts about the model -----------------------------------------------------------------
    @property
    def family(self) -> str:
        return str(getattr(self.model, "family", "unknown"))

    @property
    def weights(self) -> str:
        """How the model holds its weights: none (fp32 as trained), int8 or bf16."""
        from dialoglab.models.quantize import weights_of

        return weights_of(self.model)

    @property
    def window(self) -> int:
        """Turns of history the model reads (context_turns, at least the current message)."""
        return max(1, self.context_turns)

    @property
    def supports_attention(self) -> bool:
        return hasattr(self.model, "attention_map")

    def message_budget(self) -> int:
        """Tokens of the user's message the model can read (the rest is cut from the start)."""
        data = self.run_config.get("data", {}) or {}
        if self.family == "seq2seq":
            return max(1, int(data.get("max_length", 100)) - 1)  # room for <eos>
        tok_max = getattr(self.model.tokenizer, "max_length", None) or data.get("max_length", 256)
        n_positions = getattr(self.model, "n_positions", tok_max)
        reply = int(getattr(self.model, "max_reply_length", 0))
        return max(1, min(int(tok_max), int(n_positions) - reply) - 4)  # 4: special tokens

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "ckpt_path": self.ckpt_path,
            "context_turns": self.context_turns,
            "decoding": self.decoding.to_dict(),
            "quantize": self.weights,
            "vocab_size": len(self.model.tokenizer),
        }

    # -- sessions and commands -----------------------------------------------------------------
    def new_session(self, session_id: str | None = None) -> Session:
        return Session(id=session_id) if session_id else Session()

    def command(self, text: str, session: Session) -> BotReply | None:
        """Run a /command; None when `text` is not one."""
        parts = text.strip().split()
        if not parts or not parts[0].startswith("/"):
            return None
        name, args = parts[0].lower(), parts[1:]
        if name == "/help":
            return BotReply(HELP, source="command")
        if name == "/reset":
            session.reset()
            return BotReply("New conversation started (I still remember you).", source="command")
        if name == "/memory":
            return BotReply(session.memory.summary(), source="command")
        if name == "/forget":
            key = args[0].lower() if args else None
            try:
                session.memory.forget(key)
            except ValueError as err:
                return BotReply(str(err), source="command")
            what = f"your {key}" if key else "everything you told me about yourself"
            return BotReply(f"Done: I forgot {what}.", source="command")
        return BotReply(f"Unknown command {parts[0]}. {HELP}", source="command")

    # -- replying ------------------------------------------------------------------------------
    def reply(
        self,
        text: str | bytes,
        session: Session | None = None,
        decoding: Any = None,
        with_attention: bool = False,
    ) -> BotReply:
        """Answer `text` in `session` (a throwaway one when None) and record the exchange."""
        start = time.perf_counter()
        session = session if session is not None else self.new_session()
        text = clean_text(text)
        if not text:
            return BotReply(EMPTY_PROMPT, source="system", seconds=time.perf_counter() - start)
        command = self.command(text, session)
        if command is not None:
            command.seconds = time.perf_counter() - start
            return command

        notices = []
        if len(text) > self.max_input_chars:
            notices.append(
                f"Your message was {len(text):,} characters long; I read only the last "
                f"{self.max_input_chars:,}."
            )
            text = text[-self.max_input_chars :].lstrip()
        n_tokens = len(self.model.tokenizer.encode(text))
        budget = self.message_budget()
        if n_tokens > budget:
            notices.append(
                f"Your message was {n_tokens} tokens long; the model reads only the last {budget}."
            )

        learnt = session.memory.observe(text)
        answer = session.memory.answer(text)
        unknown = self.unknown_words(text)
        attention = None
        if answer is not None:
            reply_text, source = answer, "memory"
        else:
            context = [*session.history, text][-self.window :]
            persona = session.memory.as_persona_lines() if self.uses_persona else None
            config = self.decoding if decoding is None else decoding_config(decoding)
            if with_attention and self.supports_attention:
                reply_text, attention = self._reply_with_attention(context, persona, config)
            else:
                reply_text = self._model_reply(context, persona, config)
            source = "model"
            if not reply_text.strip():
                reply_text = "..."
        session.history.extend([text, reply_text])
        del session.history[:-MAX_HISTORY_TURNS]
        return BotReply(
            reply_text,
            source=source,
            notices=notices,
            learnt=learnt,
            unknown_words=unknown,
            attention=attention,
            seconds=time.perf_counter() - start,
        )

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` outside a word-level vocabulary (they are read as <unk>)."""
        tok = self.model.tokenizer
        if not hasattr(tok, "split") or not hasattr(tok, "stoi"):
            return []
        return [w for w in dict.fromkeys(tok.split(text)) if w not in tok.stoi]

    def _source_budget(self) -> int:
        data = self.run_config.get("data", {}) or {}
        return int(data.get("max_length", 100))

    def _model_reply(
        self, context: list[str], persona: list[str] | None, config: DecodingConfig
    ) -> str:
        model = self.model
        params = inspect.signature(model.reply).parameters
        kwargs: dict[str, Any] = {}
        if persona is not None and "personas" in params:
            kwargs["personas"] = [persona]
        if "max_source_length" in params:
            kwargs["max_source_length"] = self._source_budget()
        with self._lock:
            if "decoding" in params:
                return model.reply([context], decoding=config, **kwargs)[0]
            # A module whose reply() takes no decoding argument reads model.decoding.
            previous = getattr(model, "decoding", None)
            model.decoding = config
            try:
                return model.reply([context], **kwargs)[0]
            finally:
                model.decoding = previous

    @torch.no_grad()
    def _reply_with_attention(
        self, context: list[str], persona: list[str] | None, config: DecodingConfig
    ) -> tuple[str, Attention]:
        model, tok = self.model, self.model.tokenizer
        with self._lock:
            personas = [persona] if persona is not None else None
            src, lengths = model.encode_contexts([context], self._source_budget(), personas)
            ids = model.generate_ids(src, lengths, config)
            weights = model.attention_map(src, lengths, ids) if ids.size(1) else None
        row = ids[0].tolist()
        n = row.index(tok.eos_id) + 1 if tok.eos_id in row else len(row)
        reply_tokens = [tok.itos[i] for i in row[:n]]
        source_tokens = [tok.itos[i] for i in src[0, : int(lengths[0])].tolist()]
        matrix = [] if weights is None else weights[0, :n, : len(source_tokens)].tolist()
        return tok.decode(row), Attention(source_tokens, reply_tokens, matrix)


# -----------------------------------------------------------------------------
# Built from a front end's config


def require_checkpoint(cfg: DictConfig) -> str:
    """`cfg.ckpt_path`, with a hint at the checkpoints under ./outputs/ when it is not set."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        found = find_checkpoints()
        hint = (
            f"e.g. ckpt_path={found[0]}, or ckpt_path=best / ckpt_path=last (the newest run's)"
            if found
            else "train one with: make quickstart"
        )
        raise ConfigError(f"ckpt_path is required (the checkpoint to talk to); {hint}")
    return str(cfg.ckpt_path)


def bot_from_config(cfg: DictConfig, max_input_chars: int = MAX_INPUT_CHARS) -> Chatbot:
    """The Chatbot a front end's config describes: `ckpt_path` (a path, `best` or `last`),
    `decoding`, `device` and `quantize` (auto | none | int8 | bf16, default auto)."""
    path = require_checkpoint(cfg)
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True) if cfg.get("decoding") else None
    return Chatbot.from_checkpoint(
        path,
        decoding=decoding,
        device=cfg.get("device", "cpu"),
        quantize=cfg.get("quantize", DEFAULT_QUANTIZE),
        accel=cfg.get("accel"),
        max_input_chars=max_input_chars,
    )
