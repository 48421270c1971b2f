"""5. Replies: latency of one chat reply (p50/p95) and batched generation throughput.

gru_attn (hidden 500, 2+2 layers, vocabulary 8,000: the slice's min_count-3 vocabulary padded
with extra entries to the full corpus's size) through `Seq2SeqModule.reply`, which tokenizes the
prompt, decodes with `dialoglab.generation` and detokenizes: greedy and beam 5. GPT-2 scratch
(`conf/model/gpt2_scratch.yaml`'s size, vocabulary 8,000) greedy from a 32-token prompt through
our search stepping `GPT2Stepper`'s KV cache (what `CausalLMModule` does by default), and in
int8 also through Hugging Face `generate()` with its KV cache (`model.search=hf`), interleaved.
The weights are untrained, so every reply is held
to its full length (`min_length`: exactly 20 tokens): the worst case of a 20-token reply, and
the same work on every call. Latencies are over single prompts taken one after another: 100
replies for the int8 (chat default) rows, 40 for the slower ones (each row notes its count).

gru_attn is measured four ways, through `dialoglab.models.quantize.quantize_model` (what the chat
front ends call with their `quantize` setting): fp32 (`quantize=none`, GEMV weight layout), fp32
in the layout training leaves, weights held in bf16 (`quantize=bf16`) and int8 dynamic
quantization of the Linear and GRU layers (`quantize=int8`); GPT-2 in fp32 and int8. At batch 1
decoding reads every weight once per token, so it is bound by memory traffic, and smaller
weights are faster. Both change the numbers slightly (an argmax can flip on a near tie).
chat.py, serve.py and the web app default to `quantize=auto`, which is int8 on the CPU: those
rows are marked "(int8, chat default)". On trained checkpoints all int8 greedy replies but at
most one in 16 equal the fp32 ones, and test BLEU moves by under 0.6 (README, "Talk to a model").
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from dialoglab.bench.common import CHAT_PROMPTS as PROMPTS
from dialoglab.bench.common import (
    CORNELL_SLICE,
    Figure,
    percentile,
    set_seed,
    time_calls,
    time_interleaved,
)
from dialoglab.bench.lightning_overhead import scratch_config, scratch_size

REPLY_TOKENS = 20


def _word_tokenizer(vocab: int) -> Any:
    from dialoglab.data.tokenization import WordTokenizer

    tok = WordTokenizer(min_count=3)
    if (CORNELL_SLICE / "movie_lines.txt").is_file():
        from dialoglab.bench.workloads import cornell_datamodule

        tok = cornell_datamodule().tokenizer
    else:
        tok.fit(PROMPTS)
    itos = list(tok.itos) + [f"xw{k}" for k in range(max(0, vocab - len(tok)))]
    return tok.load_state_dict({"itos": itos})


def _seq2seq(quick: bool) -> Any:
    from dialoglab.models.seq2seq import Seq2SeqModule

    tok = _word_tokenizer(300 if quick else 8000)
    set_seed(0)
    module = Seq2SeqModule(
        tok,
        functools.partial(torch.optim.Adam, lr=1e-4, fused=True),  # as conf/model/gru_attn.yaml
        hidden_size=32 if quick else 500,
        encoder_n_layers=1 if quick else 2,
        decoder_n_layers=1 if quick else 2,
        max_reply_length=REPLY_TOKENS,
    )
    return module.eval()


def _decoding(strategy: str) -> Any:
    from dialoglab.generation import DecodingConfig

    return DecodingConfig(
        strategy=strategy, num_beams=5, max_length=REPLY_TOKENS, min_length=REPLY_TOKENS - 1
    )


def _latency_figures(
    label: str, times: list[float], target_ms: float | None, note: str
) -> list[Figure]:
    ms = [t * 1e3 for t in times]
    return [
        Figure(f"{label} reply p50", round(percentile(ms, 50), 1), "ms", note=note),
        Figure(
            f"{label} reply p95",
            round(percentile(ms, 95), 1),
            "ms",
            target=None if target_ms is None else ("<=", target_ms),
            note=f"{len(ms)} replies",
        ),
    ]


def _variants(module: Any) -> dict[str, Any]:
    """The module in fp32 (`quantize=none`: weights in the GEMV layout), in fp32 as trained (the
    layout `gemv_layout` replaces), bf16 and int8 (`quantize=auto`, chat's default on the CPU),
    each converted by `quantize_model` as the chat front ends do."""
    import copy

    from dialoglab.models.quantize import int8_available, quantize_model

    variants = {"": quantize_model(copy.deepcopy(module), "none")}  # fp32, GEMV weight layout
    variants[" (fp32, training weight layout)"] = quantize_model(
        copy.deepcopy(module), "none", one_at_a_time=False
    )
    variants[" (bf16 weights)"] = quantize_model(copy.deepcopy(module), "bf16")
    if int8_available():  # skipped where quantized kernels are missing (chat then uses fp32)
        variants[" (int8, chat default)"] = quantize_model(copy.deepcopy(module), "int8")
    return variants


def _bandwidth(quick: bool) -> list[Figure]:
    """Memory read rates that bound batch-1 decoding: a plain sum, and a (1, 500) x (500, 8000)
    product with the weight stored (out, in) as trained or (in, out) as `gemv_layout` holds it.
    Eight distinct 16 MB weights, so that caches do not hold them between calls."""
    n_mats, shape = (2, (800, 50)) if quick else (8, (8000, 500))
    weights = [torch.randn(shape) for _ in range(n_mats)]
    transposed = [w.t().contiguous().t() for w in weights]  # same values, (in, out) storage
    x = torch.randn(1, shape[1])
    big = torch.randn(n_mats * shape[0] * shape[1])

    def rate(fn: Any, items: list[torch.Tensor]) -> float:
        seconds = min(time_calls(lambda: [fn(w) for w in items], repeats=5, warmup=1))
        return round(sum(w.numel() * 4 for w in items) / seconds / 1e9, 1)

    with torch.inference_mode():
        figures = [
            Figure("memory read, plain sum", rate(torch.sum, [big]), "GB/s"),
            Figure(
                "batch-1 x W^T, W stored (out, in)",
                rate(lambda w: torch.nn.functional.linear(x, w), weights),
                "GB/s",
                note="fp32, the layout training leaves",
            ),
            Figure(
                "batch-1 x W^T, W stored (in, out)",
                rate(lambda w: torch.nn.functional.linear(x, w), transposed),
                "GB/s",
                note="fp32, models/quantize.py gemv_layout (chat's fp32 weights)",
            ),
        ]
    return figures


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = _bandwidth(quick)
    repeats = 5 if quick else 40
    # The chat-default (int8) rows are fast enough for more replies: a steadier p95.
    many = 5 if quick else 100
    batch = 8 if quick else 64

    variants = _variants(_seq2seq(quick))
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(many + 3)]
    k = iter(range(10**9))
    contexts = [[prompts[i % len(prompts)]] for i in range(batch)]
    with torch.inference_mode():
        for strategy, target in (("greedy", 15.0), ("beam", 60.0)):
            decoding = _decoding(strategy)
            for suffix, module in variants.items():

                def reply(texts: list[list[str]], m: Any = module, d: Any = decoding) -> Any:
                    return m.reply(texts, decoding=d)

                n_words = len(reply([[prompts[0]]])[0].split())
                times = time_calls(
                    lambda reply=reply: reply([[prompts[next(k) % len(prompts)]]]),
                    repeats=many if "int8" in suffix else repeats,
                    warmup=3,
                )
                label = "gru_attn " + ("greedy" if strategy == "greedy" else "beam 5") + suffix
                note = (
                    f"Seq2SeqModule.reply, H={module.config.hidden_size}, "
                    f"V={module.config.vocab_size}, {REPLY_TOKENS} tokens ({n_words} words shown)"
                )
                figures += _latency_figures(label, times, target, note)
                seconds = min(
                    time_calls(lambda reply=reply: reply(contexts), 2 if not quick else 1)
                )
                figures.append(
                    Figure(
                        f"{label}, batch of {batch}",
                        round(batch * REPLY_TOKENS / seconds),
                        "tokens/s",
                        note=f"{batch / seconds:.0f} replies/s",
                    )
                )

    figures += _gpt2(quick, repeats, many, batch=4 if quick else 16)
    return figures


class _HeldGPT2(torch.nn.Module):
    """A bare GPT-2 as `quantize_model` sees a CausalLMModule: a `.net` of the causal_lm family."""

    family = "causal_lm"

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net


def _gpt2_variants(net: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """GPT-2 held in fp32 (`quantize=none`: GEMV weight layout) and int8 (`quantize=auto`, chat's
    default on the CPU), each converted by `quantize_model` as the chat front ends do."""
    import copy

    from dialoglab.models.quantize import int8_available, quantize_model

    variants = {" (fp32)": quantize_model(_HeldGPT2(copy.deepcopy(net)), "none").net}
    if int8_available():
        variants[" (int8, chat default)"] = quantize_model(
            _HeldGPT2(copy.deepcopy(net)), "auto"
        ).net
    return variants


def _gpt2(quick: bool, repeats: int, many: int, batch: int) -> list[Figure]:
    """GPT-2 replies through our search (what chat does: `CausalLMModule.generate_ids`), and the
    int8 one also through Hugging Face `generate()`, interleaved call by call with ours."""
    from transformers import GPT2LMHeadModel

    from dialoglab.generation import DecodingConfig, generate
    from dialoglab.models.components.gpt2_stepper import GPT2Stepper

    size = scratch_size(quick)
    set_seed(0)
    bos, eos, pad, start = 0, 1, 2, 3  # `start`: the reply's marker each prompt ends with (<bot>)
    config = scratch_config(size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    base = GPT2LMHeadModel(config).eval()
    params = sum(p.numel() for p in base.parameters())
    prompt_len = 8 if quick else 32
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(4, size["vocab_size"], (many + 3, prompt_len), generator=g)
    prompts[:, -1] = start
    decoding = DecodingConfig(max_length=REPLY_TOKENS, min_length=REPLY_TOKENS - 1)
    hf_kwargs = {
        "max_new_tokens": REPLY_TOKENS,
        "min_new_tokens": REPLY_TOKENS,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": pad,
        "eos_token_id": eos,
    }
    note = (
        f"our search (dialoglab.generation) stepping GPT2Stepper's KV cache, as chat does; "
        f"{size['n_layer']} layers x {size['n_embd']}, {params / 1e6:.1f} M params, "
        f"{prompt_len}-token prompt, {REPLY_TOKENS} new tokens"
    )

    def ours(net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((ids.size(0),), ids.size(1))
        return generate(GPT2Stepper(net, start, eos, pad), ids, lengths, decoding)

    def theirs(net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids)
        return net.generate(input_ids=ids, attention_mask=mask, **hf_kwargs)[:, ids.size(1) :]

    figures: list[Figure] = []
    for suffix, net in _gpt2_variants(base).items():
        k = iter(range(10**9))

        def prompt(k: Any = k) -> torch.Tensor:
            return prompts[next(k) % len(prompts)].unsqueeze(0)

        contenders = {"ours": lambda net=net: ours(net, prompt())}
        int8 = "int8" in suffix
        if int8:
            contenders["hf"] = lambda net=net: theirs(net, prompt())
        with torch.inference_mode():
            assert ours(net, prompts[:1]).shape == (1, REPLY_TOKENS)
            assert theirs(net, prompts[:1]).shape == (1, REPLY_TOKENS)
            times = time_interleaved(contenders, repeats=many if int8 else repeats, warmup=3)
            seconds = min(
                time_calls(lambda net=net: ours(net, prompts[:batch]), repeats=1 if quick else 2)
            )
        figures += _latency_figures(f"GPT-2 scratch greedy{suffix}", times["ours"], 100.0, note)
        figures.append(
            Figure(
                f"GPT-2 scratch greedy{suffix}, batch of {batch}",
                round(batch * REPLY_TOKENS / seconds),
                "tokens/s",
            )
        )
        if int8:
            figures += _latency_figures(
                f"GPT-2 scratch greedy{suffix} through HF generate()",
                times["hf"],
                None,
                "the same replies through transformers' generate() with its KV cache, "
                "interleaved call by call with ours (model.search=hf)",
            )
            figures += [
                Figure(
                    f"GPT-2 scratch greedy{suffix}: HF generate() p50 / ours",
                    round(percentile(times["hf"], 50) / percentile(times["ours"], 50), 2),
                    "x",
                ),
            ]
    return figures
