"""Reply latency of a trained checkpoint through `Chatbot.reply`, greedy and beam 5: p50/p95.

Each reply is one `Chatbot.reply` in a fresh session (tokenization, memory rules, the model and
decoding: what a user waits for). The weights are held as chat holds them by default
(`quantize=auto`: int8 on the CPU); then the share of replies equal to the fp32 model's is
reported too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import CHAT_PROMPTS as PROMPTS
from benchmarks.common import REPO_ROOT, Figure, percentile, time_calls
from dialoglab.chat.bot import Chatbot
from dialoglab.experiment.runner import find_checkpoints
from dialoglab.generation import DecodingConfig


def default_decodings() -> dict[str, DecodingConfig]:
    """Greedy, and beam search with 5 beams (the `beam` preset)."""
    return {"greedy": DecodingConfig.from_any("greedy"), "beam5": DecodingConfig.from_any("beam")}


def measure(bot: Chatbot, decoding: DecodingConfig, repeats: int, warmup: int) -> dict[str, Any]:
    """Latency statistics of `repeats` rounds over the prompts, in milliseconds."""
    prompts = itertools.cycle(PROMPTS)

    def reply() -> None:
        bot.reply(next(prompts), bot.new_session(), decoding=decoding)

    times = [t * 1000 for t in time_calls(reply, repeats * len(PROMPTS), warmup)]
    stats = {f"p{q}_ms": round(percentile(times, q), 3) for q in (50, 95)}
    return {
        **stats,
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        "n": len(times),
    }


def same_as_fp32(bot: Chatbot, reference: Chatbot, decoding: DecodingConfig) -> float:
    """The share of prompts whose reply equals the fp32 model's word for word."""
    same = sum(
        bot.reply(p, bot.new_session(), decoding=decoding).text
        == reference.reply(p, reference.new_session(), decoding=decoding).text
        for p in PROMPTS
    )
    return round(same / len(PROMPTS), 3)


def report(
    ckpt_path: str | Path, repeats: int = 3, warmup: int = 3, quantize: str = "auto"
) -> dict[str, Any]:
    """Load the checkpoint and measure; a JSON-ready dict."""
    bot = Chatbot.from_checkpoint(ckpt_path, device="cpu", quantize=quantize)
    decodings = default_decodings()
    result = {
        "quantize": bot.weights,
        "torch_threads": torch.get_num_threads(),
        "decodings": {name: d.to_dict() for name, d in decodings.items()},
        "results": {name: measure(bot, d, repeats, warmup) for name, d in decodings.items()},
    }
    if bot.weights != "none":
        reference = Chatbot.from_checkpoint(ckpt_path, device="cpu", quantize="none")
        result["same_reply_as_fp32"] = {
            name: same_as_fp32(bot, reference, d) for name, d in decodings.items()
        }
    return result


def checkpoint(ckpt_path: str | None) -> Path | None:
    """`ckpt_path`, else the newest checkpoint under outputs/; None where there is none."""
    path = Path(ckpt_path) if ckpt_path else next(iter(find_checkpoints(REPO_ROOT)), None)
    return path if path is not None and path.is_file() else None


def run(quick: bool = False, ckpt_path: str | None = None) -> list[Figure]:
    """Rows for `python -m benchmarks --only chat`: p50/p95 reply latency, greedy and beam 5."""
    path = checkpoint(ckpt_path)
    if path is None:
        note = "no checkpoint: pass --ckpt PATH or train one (make quickstart)"
        return [Figure(f"chat reply {q}", None, "ms", note=note) for q in ("p50", "p95")]
    result = report(path, repeats=1 if quick else 3, warmup=2 if quick else 3)
    what = f"{path.name}, quantize={result['quantize']}"
    figures = [
        Figure(f"chat reply {q} ({name})", stats[f"{q}_ms"], "ms",
               note=f"{stats['n']} replies, {result['torch_threads']} threads, {what}")
        for name, stats in result["results"].items()
        for q in ("p50", "p95")
    ]  # fmt: skip
    return figures + [
        Figure(f"chat replies equal to fp32 ({name})", round(100 * share, 1), "%", note=what)
        for name, share in result.get("same_reply_as_fp32", {}).items()
    ]
