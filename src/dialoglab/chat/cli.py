"""`python chat.py ckpt_path=...`: a terminal chat (rich) with /reset /memory /forget /help /quit.

`ckpt_path` is a checkpoint's path, or `best` / `last`: that checkpoint of the newest run under
./outputs/. `quantize=auto|none|int8|bf16` says how the model holds its weights (conf/chat.yaml:
auto, which is int8 dynamic quantization on the CPU, fp32 on GPUs; see dialoglab.models.quantize).

`--once "text"` (or `once="text"`) prints the reply to one message and exits, for scripts. Input
that is not valid UTF-8 is read with replacement characters instead of failing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from dialoglab.chat.bot import BotReply, Chatbot, bot_from_config
from dialoglab.experiment.runner import CONFIG_DIR, run_task

QUIT = ("/quit", "/exit", "/q")
_argv_once: str | None = None  # the text of `--once TEXT`, kept away from Hydra's parser


def translate_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Take `--once TEXT` / `--once=TEXT` out of argv (Hydra would parse the text as an override)."""
    rest, once = [], None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--once":
            if i + 1 >= len(args):
                raise SystemExit('error: --once needs a message, e.g. --once "hello"')
            once = args[i + 1]
            i += 2
            continue
        if arg.startswith("--once="):
            once = arg[len("--once=") :]
        else:
            rest.append(arg)
        i += 1
    return rest, once


def describe_weights(bot: Chatbot) -> str:
    return {"none": "fp32", "int8": "int8 (quantized)", "bf16": "bf16"}.get(
        bot.weights, bot.weights
    )


def describe_decoding(bot: Chatbot) -> str:
    d = bot.decoding
    strategy = d.effective_strategy
    if strategy == "beam":
        mmi = f", MMI reranking (lambda {d.mmi_lambda:g})" if d.mmi_lambda else ""
        return f"beam search, {d.num_beams} beams{mmi}"
    if strategy == "sample":
        return f"sampling, temperature {d.temperature}, top-k {d.top_k}, top-p {d.top_p}"
    return "greedy"


def print_reply(console: Console, reply: BotReply) -> None:
    for notice in reply.notices:
        console.print(f"[yellow]note:[/] {escape(notice)}", soft_wrap=True)
    console.print(f"[bold green]bot>[/] {escape(reply.text)}", soft_wrap=True)
    if reply.learnt:
        facts = "; ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in reply.learnt.items()
        )
        console.print(f"[dim](remembered {escape(facts)})[/]", soft_wrap=True)


def repl(bot: Chatbot, session_id: str = "cli", console: Console | None = None) -> int:
    """Read messages until /quit or end of input; returns the number of messages answered."""
    console = console or Console()
    session = bot.new_session(session_id)
    console.print(
        f"[bold]dialoglab chat[/] - {bot.family} model, {describe_decoding(bot)}, "
        f"reads the last {bot.window} turn(s), {describe_weights(bot)} weights. "
        "/help for commands, /quit to leave.",
        soft_wrap=True,
    )
    answered = 0
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        if text.strip().lower() in QUIT:
            break
        print_reply(console, bot.reply(text, session))
        answered += 1
    console.print("[dim]bye[/]")
    return answered


def chat(cfg: DictConfig) -> dict[str, Any]:
    bot = bot_from_config(cfg, cfg.max_input_chars)
    once = _argv_once if _argv_once is not None else cfg.get("once")
    if once is not None:
        reply = bot.reply(str(once), bot.new_session(cfg.session_id))
        for notice in reply.notices:
            print(f"note: {notice}", file=sys.stderr)
        print(reply.text, flush=True)
        return {"replies": 1}
    return {"replies": repl(bot, cfg.session_id)}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="chat")
def _hydra_main(cfg: DictConfig) -> None:
    run_task(chat, cfg)


def _reconfigure_stdio() -> None:
    """Undecodable input becomes U+FFFD; output never fails on unusual characters."""
    for stream, errors in (
        (sys.stdin, "replace"),
        (sys.stdout, "replace"),
        (sys.stderr, "replace"),
    ):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a closed or odd stream
                reconfigure(encoding="utf-8", errors=errors)


def main() -> None:
    global _argv_once
    _reconfigure_stdio()
    rest, _argv_once = translate_argv(sys.argv[1:])
    sys.argv = [sys.argv[0], *rest]
    _hydra_main()
