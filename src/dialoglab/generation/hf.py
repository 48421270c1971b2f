"""Decoding a Hugging Face model like a `DecodingConfig`: `generate()` keyword arguments, seeding."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dialoglab.generation.config import DecodingConfig
from dialoglab.generation.processors import PromptNGramBlocker


def to_hf_generate_kwargs(
    config: DecodingConfig,
    *,
    default_max_length: int | None = None,
    is_encoder_decoder: bool = False,
    prompt_length: int | None = None,
    ignore_ids: Sequence[int] = (),
    unk_id: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a Hugging Face `model.generate(...)` that decode like `config`.

    The caller adds `input_ids`, `attention_mask`, `pad_token_id` and `eos_token_id`. Sampling
    with a seed: wrap the call in `seeded(config)`. `block_context_ngram_size` becomes
    `encoder_no_repeat_ngram_size` for encoder-decoder models; for decoder-only models it needs
    `prompt_length` (the padded prompt width) and becomes a logits processor banning n-grams of
    `input_ids[:, :prompt_length]` (tokens in `ignore_ids`, e.g. padding, start no n-gram).
    `unk_id` (the tokenizer's unknown-token id, when it has one of its own) is never generated
    unless `config.allow_unk`; byte-level BPE (GPT-2) has no unknown token, so there the key
    changes nothing. `mmi_lambda` is not applied here (Hugging Face's beam search ranks by
    likelihood alone): such a model decodes as plain beam search.
    """
    kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1}
    max_length = config.max_length if config.max_length is not None else default_max_length
    if max_length is not None:
        kwargs["max_new_tokens"] = max_length
    if config.min_length:
        kwargs["min_new_tokens"] = config.min_length
    strategy = config.effective_strategy
    if strategy == "beam":
        kwargs.update(
            num_beams=config.num_beams,
            length_penalty=config.length_penalty,
            early_stopping=True if config.early_stopping else "never",  # the same search as ours
            num_return_sequences=1,
        )
    elif strategy == "sample":
        kwargs.update(
            do_sample=True, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p
        )
    if config.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = config.no_repeat_ngram_size
    if config.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = config.repetition_penalty
    processors: list[Any] = []
    if config.block_context_ngram_size:
        if is_encoder_decoder:
            kwargs["encoder_no_repeat_ngram_size"] = config.block_context_ngram_size
        elif prompt_length is not None:
            blocker = PromptNGramBlocker(config.block_context_ngram_size, prompt_length, ignore_ids)
            processors.append(blocker)
    if unk_id is not None and not config.allow_unk:
        # A logits processor, not `suppress_tokens`: callers set that one for their own ids.
        processors.append(TokenBan([unk_id]))
    if processors:
        kwargs["logits_processor"] = processors
    return kwargs


class TokenBan:
    """Hugging Face logits processor: the given token ids are never generated."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.ids] = float("-inf")
        return scores


@contextlib.contextmanager
def seeded(config: DecodingConfig) -> Iterator[None]:
    """Run the body with the global torch RNG seeded by `config.seed` (restored afterwards)."""
    if config.seed is None or config.effective_strategy != "sample":
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        yield
