"""5. Replies: latency of one chat reply (p50/p95) and batched generation throughput.

gru_attn (hidden 500, 2+2 layers, vocabulary 8,000: the slice's min_count-3 vocabulary padded
with extra entries to the full corpus's size) through `Seq2SeqModule.reply`, which tokenizes the
prompt, decodes with `dialoglab.generation` and detokenizes: greedy and beam 5. GPT-2 scratch
(`conf/model/gpt2_scratch.yaml`'s size, vocabulary 8,000) through Hugging Face `generate` with
the KV cache, greedy, from a 32-token prompt. The weights are untrained, so every reply is held
to its full length (`min_length`: exactly 20 tokens): the worst case of a 20-token reply, and
the same work on every call. Latencies are over single prompts taken one after another.

gru_attn is also measured with its weights held in bf16 and with int8 dynamic quantization
(`torch.ao.quantization.quantize_dynamic` of the Linear and GRU layers): at batch 1 decoding reads
every weight once per token, so it is bound by memory traffic, and smaller weights are faster.
Both change the numbers slightly (an argmax can flip); chat uses fp32 today.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from dialoglab.bench.common import CORNELL_SLICE, Figure, percentile, set_seed, time_calls
from dialoglab.bench.lightning_overhead import scratch_size

REPLY_TOKENS = 20
PROMPTS = (
    "hello!",
    "how are you?",
    "what is your name?",
    "do you like movies?",
    "where are you going?",
    "i don't know what you mean.",
    "can you help me with something?",
    "what time is it?",
    "tell me about your family.",
    "why did you do that?",
)


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


def _latency_figures(label: str, times: list[float], target_ms: float, note: str) -> list[Figure]:
    ms = [t * 1e3 for t in times]
    return [
        Figure(f"{label} reply p50", round(percentile(ms, 50), 1), "ms", note=note),
        Figure(
            f"{label} reply p95",
            round(percentile(ms, 95), 1),
            "ms",
            target=("<=", target_ms),
            note=f"{len(ms)} replies",
        ),
    ]


def _variants(module: Any) -> dict[str, Any]:
    """The module as chat runs it (fp32), and two cheaper ways to hold the same weights."""
    import copy
    import warnings

    variants = {"": module}
    bf16 = copy.deepcopy(module)
    bf16.net.to(torch.bfloat16)
    variants[" (bf16 weights)"] = bf16
    try:
        with warnings.catch_warnings():  # torch.ao quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            int8 = copy.deepcopy(module)
            int8.net = torch.ao.quantization.quantize_dynamic(
                int8.net, {torch.nn.Linear, torch.nn.GRU}, dtype=torch.qint8
            )
        variants[" (int8 dynamic quantization)"] = int8
    except Exception:  # an optional extra: skip it where quantized kernels are missing
        pass
    return variants


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    repeats = 5 if quick else 40
    batch = 8 if quick else 64

    variants = _variants(_seq2seq(quick))
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(repeats + 3)]
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
                    repeats=repeats,
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

    figures += _gpt2(quick, repeats, batch=4 if quick else 16)
    return figures


def _gpt2(quick: bool, repeats: int, batch: int) -> list[Figure]:
    from transformers import GPT2Config, GPT2LMHeadModel

    size = scratch_size(quick)
    set_seed(0)
    config = GPT2Config(
        vocab_size=size["vocab_size"],
        n_positions=size["n_positions"],
        n_embd=size["n_embd"],
        n_layer=size["n_layer"],
        n_head=size["n_head"],
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    net = GPT2LMHeadModel(config).eval()
    prompt_len = 8 if quick else 32
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, size["vocab_size"], (repeats + 3, prompt_len), generator=g)
    kwargs = {
        "max_new_tokens": REPLY_TOKENS,
        "min_new_tokens": REPLY_TOKENS,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": 2,
        "eos_token_id": 1,
    }
    k = iter(range(10**9))

    def one() -> torch.Tensor:
        ids = prompts[next(k) % len(prompts)].unsqueeze(0)
        return net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)

    with torch.inference_mode():
        out = one()
        assert out.shape[1] == prompt_len + REPLY_TOKENS
        times = time_calls(one, repeats=repeats, warmup=3)
        ids = prompts[:batch]
        seconds = min(
            time_calls(
                lambda: net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs),
                repeats=1 if quick else 2,
            )
        )
    params = sum(p.numel() for p in net.parameters())
    note = (
        f"HF generate with KV cache, {size['n_layer']} layers x {size['n_embd']}, "
        f"{params / 1e6:.1f} M params, {prompt_len}-token prompt, {REPLY_TOKENS} new tokens"
    )
    figures = _latency_figures("GPT-2 scratch greedy", times, 100.0, note)
    figures.append(
        Figure(
            f"GPT-2 scratch greedy, batch of {batch}",
            round(batch * REPLY_TOKENS / seconds),
            "tokens/s",
        )
    )
    return figures
