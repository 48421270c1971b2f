"""Reply latency of a trained checkpoint, greedy and beam 5: p50/p95.

`python -m benchmarks --only chat [--ckpt PATH]` (else the newest checkpoint under outputs/). Each measurement is one
`Chatbot.reply` in a fresh session (tokenization, memory rules, the model and decoding: what a
user waits for) over prompts that memory does not answer. The weights are held as chat holds them
by default (`quantize=auto`: int8 on the CPU); then the share of replies equal to the fp32
model's is reported too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import CHAT_PROMPTS as PROMPTS
from benchmarks.common import REPO_ROOT, Figure, percentile
from dialoglab.chat.bot import Chatbot
from dialoglab.generation import DecodingConfig


def default_decodings() -> dict[str, DecodingConfig]:
    """Greedy, and beam search with 5 beams (the `beam` preset)."""
    return {"greedy": DecodingConfig.from_any("greedy"), "beam5": DecodingConfig.from_any("beam")}


def measure(bot: Chatbot, repeats: int = 3, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Latency statistics in milliseconds per decoding name."""
    results = {}
    for name, decoding in default_decodings().items():
        for prompt in PROMPTS[:warmup]:
            bot.reply(prompt, bot.new_session(), decoding=decoding)
        times = []
        for _ in range(repeats):
            for prompt in PROMPTS:
                start = time.perf_counter()
                bot.reply(prompt, bot.new_session(), decoding=decoding)
                times.append((time.perf_counter() - start) * 1000)
        results[name] = {
            "p50_ms": round(percentile(times, 50), 3),
            "p95_ms": round(percentile(times, 95), 3),
            "min_ms": round(min(times), 3),
            "max_ms": round(max(times), 3),
            "n": len(times),
        }
    return results


def agreement_with_fp32(bot: Chatbot, ckpt_path: str | Path, device: str) -> dict[str, float]:
    """Per decoding, the share of prompts whose reply equals the fp32 model's word for word."""
    reference = Chatbot.from_checkpoint(ckpt_path, device=device, quantize="none")
    shares = {}
    for name, decoding in default_decodings().items():
        same = sum(
            bot.reply(p, bot.new_session(), decoding=decoding).text
            == reference.reply(p, reference.new_session(), decoding=decoding).text
            for p in PROMPTS
        )
        shares[name] = round(same / len(PROMPTS), 3)
    return shares


def report(
    ckpt_path: str | Path,
    repeats: int = 3,
    warmup: int = 3,
    device: str = "cpu",
    quantize: str = "auto",
) -> dict[str, Any]:
    """Load the checkpoint and measure; a JSON-ready dict."""
    bot = Chatbot.from_checkpoint(ckpt_path, device=device, quantize=quantize)
    result = {
        "benchmark": "chat_latency",
        "ckpt_path": str(ckpt_path),
        "family": bot.family,
        "device": device,
        "quantize": bot.weights,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "decodings": {name: d.to_dict() for name, d in default_decodings().items()},
        "results": measure(bot, repeats, warmup),
    }
    if bot.weights != "none":
        result["same_reply_as_fp32"] = agreement_with_fp32(bot, ckpt_path, device)
    return result


def newest_checkpoint(root: Path = REPO_ROOT) -> Path | None:
    """The newest outputs/**/checkpoints/*.ckpt under root."""
    found = sorted(root.glob("outputs/**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run(quick: bool = False, ckpt_path: str | None = None) -> list[Figure]:
    """Rows for `python -m benchmarks --only chat`: p50/p95 reply latency, greedy and beam 5."""
    path = Path(ckpt_path) if ckpt_path else newest_checkpoint()
    if path is None or not path.is_file():
        note = "no checkpoint: pass --ckpt PATH or train one (make quickstart)"
        return [Figure(f"chat reply {q}", None, "ms", note=note) for q in ("p50", "p95")]
    result = report(path, repeats=1 if quick else 3, warmup=2 if quick else 3)
    figures = []
    what = f"{path.name}, quantize={result['quantize']}"
    for name, stats in result["results"].items():
        note = f"{stats['n']} replies, {result['torch_threads']} threads, {what}"
        for q in ("p50", "p95"):
            figures.append(Figure(f"chat reply {q} ({name})", stats[f"{q}_ms"], "ms", note=note))
    for name, share in result.get("same_reply_as_fp32", {}).items():
        figures.append(
            Figure(f"chat replies equal to fp32 ({name})", round(100 * share, 1), "%", note=what)
        )
    return figures
