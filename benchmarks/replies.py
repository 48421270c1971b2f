"""Replies: latency of one reply (p50/p95) and batched throughput, gru_attn and GPT-2 scratch.

Each model is held as the chat front ends hold it (`accel.for_inference`): fp32 and int8
(chat's default on the CPU). The weights are untrained and every reply is held to its full
length: the same work on every call.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import CHAT_PROMPTS, Figure, percentile, time_calls
from benchmarks.lightning_overhead import StubTokenizer, make_module, scratch_size

REPLY_TOKENS = 20


def _decoding(strategy: str = "greedy") -> Any:
    from dialoglab.generation import DecodingConfig

    return DecodingConfig(
        strategy=strategy, num_beams=5, max_length=REPLY_TOKENS, min_length=REPLY_TOKENS - 1
    )


def _variants(module: Any) -> dict[str, Any]:
    """The module held as chat holds it: fp32 (`quantize=none`), and int8 (chat's default on
    the CPU) where quantized kernels exist."""
    from dialoglab import accel
    from dialoglab.models.quantize import int8_available

    variants = {"fp32": accel.for_inference(copy.deepcopy(module), "none")}
    if int8_available():
        variants["int8, chat default"] = accel.for_inference(copy.deepcopy(module), "int8")
    return variants


def _seq2seq(quick: bool) -> Any:
    from dialoglab.data.tokenization import WordTokenizer
    from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
    from dialoglab.models.seq2seq import Seq2SeqModule
    from tests.helpers.workloads import GRUSize

    tok = WordTokenizer(min_count=1)  # every prompt word known, padded to the corpus's vocabulary
    tok.fit(CHAT_PROMPTS)
    vocab = 300 if quick else 8000
    tok = tok.load_state_dict(
        {"itos": list(tok.itos) + [f"xw{k}" for k in range(vocab - len(tok))]}
    )
    torch.manual_seed(0)
    net = functools.partial(GRUAttnSeq2Seq, **GRUSize.for_run(quick).net_settings())
    optimizer = functools.partial(torch.optim.Adam, lr=1e-4)
    return Seq2SeqModule(tok, net, optimizer, max_reply_length=REPLY_TOKENS).eval()


def _rows(label: str, replies: Callable[[int, int], Any], batch: int, n: int, target: float,
          note: str) -> list[Figure]:  # fmt: skip
    """p50/p95 of `n` single replies and tokens/s of a batch of them (`replies(k, count)`:
    replies to `count` prompts from the k-th on)."""
    count = iter(range(10**9))
    ms = [t * 1e3 for t in time_calls(lambda: replies(next(count), 1), n, warmup=3)]
    seconds = min(time_calls(lambda: replies(0, batch), 2, warmup=0))
    return [
        Figure(f"{label} reply p50", round(percentile(ms, 50), 1), "ms", note=note),
        Figure(f"{label} reply p95", round(percentile(ms, 95), 1), "ms",
               target=("<=", target), note=f"{n} replies"),
        Figure(f"{label}, batch throughput", round(batch * REPLY_TOKENS / seconds), "tokens/s",
               note=f"batch of {batch}"),
    ]  # fmt: skip


def _gru_figures(quick: bool, n: int, batch: int) -> list[Figure]:
    figures: list[Figure] = []
    prompts = list(CHAT_PROMPTS)
    for weights, module in _variants(_seq2seq(quick)).items():
        size = f"H={module.config.hidden_size}, V={module.config.vocab_size}"
        for strategy, target in (("greedy", 15.0), ("beam", 60.0)):
            decoding = _decoding(strategy)

            def replies(k: int, count: int, m: Any = module, d: Any = decoding) -> Any:
                contexts = [[prompts[(k + i) % len(prompts)]] for i in range(count)]
                return m.reply(contexts, decoding=d)

            label = f"gru_attn {'greedy' if strategy == 'greedy' else 'beam 5'} ({weights})"
            note = f"Seq2SeqModule.reply, {size}, {REPLY_TOKENS} tokens"
            figures += _rows(label, replies, batch, n, target, note)
    return figures


def _gpt2_figures(quick: bool, n: int, batch: int) -> list[Figure]:
    size = scratch_size(quick)
    prompt_len = 8 if quick else 32
    torch.manual_seed(0)
    module = make_module(size, prompt_len, max_reply_length=REPLY_TOKENS).eval()
    tok = StubTokenizer
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(6, size["vocab_size"], (max(n, batch) + 3, prompt_len), generator=g)
    prompts[:, -1] = tok.bot_id  # prompts end with the reply's marker, as HFTokenizer's do
    types = torch.full_like(prompts, tok.user_id)
    types[:, -1] = tok.bot_id
    note = f"CausalLMModule.generate_ids, {size['n_layer']} x {size['n_embd']}, {prompt_len}-token prompt"
    figures: list[Figure] = []
    decodings = {strategy: _decoding(strategy) for strategy in ("greedy", "beam")}
    for (weights, held), strategy in itertools.product(_variants(module).items(), decodings):

        def replies(k: int, count: int, m: Any = held, d: Any = decodings[strategy]) -> Any:
            rows = [(k + i) % len(prompts) for i in range(count)]
            ids = prompts[rows]
            return m.generate_ids(ids, torch.ones_like(ids), types[rows], d)

        label = f"GPT-2 scratch {'greedy' if strategy == 'greedy' else 'beam 5'} ({weights})"
        figures += _rows(label, replies, batch, n, 100.0, note)
    return figures


def run(quick: bool = False) -> list[Figure]:
    n, batch = (5, 8) if quick else (40, 64)
    with torch.inference_mode():
        return _gru_figures(quick, n, batch) + _gpt2_figures(quick, n, 4 if quick else 16)
