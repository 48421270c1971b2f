"""Reply latency p95 with the accel paths on and off: gru_attn at full size and GPT-2 scratch.

Untrained weights, every reply held to 20 tokens (`min_length`), single prompts one after
another, as a chat user sends them. gru_attn goes through `Seq2SeqModule.reply` after
`accel.for_inference` (quantize=auto: int8 on the CPU), greedy and beam 5; GPT-2 scratch
(conf/model/gpt2_scratch.yaml's size) through Hugging Face `generate()` with the KV cache, as
`CausalLMModule.generate_ids` calls it.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Any

import torch

from dialoglab import accel
from dialoglab.generation import DecodingConfig, to_hf_generate_kwargs

PROMPTS = ["hello!", "how are you?", "what is your name?", "do you like movies?", "where to?"]
TOKENS = 20


def p95_ms(call: Any, repeats: int) -> float:
    for k in range(3):  # warm-up
        call(k)
    times = []
    for k in range(repeats):
        start = time.perf_counter()
        call(k)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1)


def decoding(beams: int) -> DecodingConfig:
    strategy = "beam" if beams > 1 else "greedy"
    return DecodingConfig(
        strategy=strategy, num_beams=beams, max_length=TOKENS, min_length=TOKENS - 1
    )


def gru_attn(quick: bool) -> Any:
    """A Seq2SeqModule of conf/model/gru_attn.yaml's size over an 8,000-word vocabulary."""
    from dialoglab.data.tokenization import WordTokenizer
    from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
    from dialoglab.models.seq2seq import Seq2SeqModule

    tok = WordTokenizer(min_count=1)
    tok.fit(PROMPTS)
    words = 300 if quick else 8000
    tok.load_state_dict({"itos": [*tok.itos, *(f"w{k}" for k in range(words - len(tok)))]})
    size = {"hidden_size": 32, "encoder_n_layers": 1, "decoder_n_layers": 1} if quick else {}
    torch.manual_seed(0)
    net = functools.partial(GRUAttnSeq2Seq, **size)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-4)
    return Seq2SeqModule(tok, net, optimizer, max_reply_length=TOKENS).eval()


def gpt2_scratch(quick: bool) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    size = dict(n_layer=1, n_head=2, n_embd=32) if quick else dict(n_layer=4, n_head=4, n_embd=256)
    config = GPT2Config(vocab_size=8000, n_positions=256, bos_token_id=0, eos_token_id=1, **size)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def latency_rows(quick: bool = False) -> list[dict[str, Any]]:
    """p95 ms per (figure, accel setting)."""
    repeats = 5 if quick else 40
    rows: list[dict[str, Any]] = []
    module = gru_attn(quick)
    for variant, settings in (("auto", accel.AccelConfig()), ("none", accel.NONE)):
        held = accel.for_inference(copy.deepcopy(module), "auto", settings)
        for beams, figure in ((1, "gru_attn greedy"), (5, "gru_attn beam 5")):
            config = decoding(beams)
            ms = p95_ms(
                lambda k, h=held, c=config: h.reply([[PROMPTS[k % 5]]], decoding=c), repeats
            )
            rows.append({"figure": figure + " p95 ms", "variant": variant, "value": ms})
            print(rows[-1], flush=True)
    base = gpt2_scratch(quick)
    prompts = torch.randint(4, 8000, (8, 32), generator=torch.Generator().manual_seed(0))
    from dialoglab.models.quantize import quantize_model

    class Held(torch.nn.Module):  # quantize_model converts a module's `.net`
        family = "causal_lm"

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

    for held_as in ("auto", "none"):
        net = quantize_model(Held(copy.deepcopy(base)), held_as).net
        for beams in (1, 5):
            kwargs = to_hf_generate_kwargs(decoding(beams))

            def call(k: int, net: Any = net, kwargs: dict = kwargs) -> None:
                ids = prompts[k % 8 : k % 8 + 1]
                with torch.inference_mode():
                    net.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 pad_token_id=1, eos_token_id=1, **kwargs)  # fmt: skip

            name = "GPT-2 scratch greedy" if beams == 1 else "GPT-2 scratch beam 5"
            ms = p95_ms(call, repeats)
            rows.append({"figure": f"{name} p95 ms", "variant": f"quantize={held_as}", "value": ms})
            print(rows[-1], flush=True)
    return rows
