"""GPT2Stepper: GPT-2 stepped with a KV cache for our search, checked against Hugging Face's
forward and generate(), and the CausalLMModule switch between the two searches."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dialoglab import generation
from dialoglab.errors import ConfigError
from dialoglab.generation import DecodingConfig
from dialoglab.models.components.gpt2_stepper import GPT2Stepper
from dialoglab.models.quantize import int8_available, quantize_model
from tests.unit.test_gpt2_model import make_module, tok  # noqa: F401 (fixture)
from tests.unit.test_gpt2_tokenization import TEXTS

PAD, EOS, BOT, TYPE = 2, 1, 5, 3
V = 60


def tiny_gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=EOS, pad_token_id=PAD, **overrides,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def left_padded(lengths: list[int], width: int) -> tuple[torch.Tensor, ...]:
    """Prompts (B, width) of random tokens ending in <bot>, their lengths, mask and types."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, V, (len(lengths), width), generator=g)
    n = torch.tensor(lengths)
    mask = torch.arange(width).unsqueeze(0) >= (width - n).unsqueeze(1)
    ids[~mask] = PAD
    ids[:, -1] = BOT
    types = torch.where(mask, TYPE, PAD)
    types[:, -1] = BOT
    return ids, n, mask, types


def hf_logits(model: GPT2LMHeadModel, ids, mask, types, reply) -> torch.Tensor:
    """Hugging Face's logits for each reply position, positions and types as generate() sets them."""
    S = ids.size(1)
    full = torch.cat([ids, reply], dim=1)
    full_mask = torch.cat([mask.long(), torch.ones_like(reply)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 0)
    full_types = torch.cat([types, types[:, -1:].expand_as(reply)], dim=1)
    out = model(
        input_ids=full, attention_mask=full_mask, token_type_ids=full_types, position_ids=positions
    )
    return out.logits[:, S - 1 :]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"activation_function": "gelu", "scale_attn_by_inverse_layer_idx": True}],
    ids=["gpt2", "other-activation-and-scaling"],
)
@pytest.mark.parametrize("lengths", [[7, 7], [7, 4, 1]], ids=["unpadded", "left-padded"])
@torch.no_grad()
def test_cached_steps_give_hugging_face_logits(overrides: dict, lengths: list[int]) -> None:
    model = tiny_gpt2(**overrides)
    ids, n, mask, types = left_padded(lengths, 7)
    reply = torch.randint(6, V, (len(lengths), 5))
    stepper = GPT2Stepper(model, BOT, EOS, PAD, types)
    memory, state, prompt_mask = stepper.encode(ids, n)
    assert torch.equal(prompt_mask, mask)
    steps, token = [], ids[:, -1:]
    for i in range(reply.size(1) + 1):
        logits, state, _ = stepper.decoder(token, state, memory, prompt_mask)
        steps.append(logits)
        token = reply[:, i : i + 1]
    ours = torch.cat(steps, dim=1)
    expected = hf_logits(model, ids, mask, types, reply)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_greedy_replies_equal_hugging_face_generate() -> None:
    model = tiny_gpt2()
    ids, n, mask, types = left_padded([9, 6, 3], 9)
    expected = model.generate(
        input_ids=ids, attention_mask=mask.long(), token_type_ids=types, max_new_tokens=8,
        min_new_tokens=8, do_sample=False, pad_token_id=EOS, eos_token_id=EOS,
        suppress_tokens=[PAD, BOT],  # our search never puts <pad> or the start marker in a reply
    )[:, ids.size(1) :]  # fmt: skip
    config = DecodingConfig(max_length=8, min_length=7)
    ours = generation.generate(GPT2Stepper(model, BOT, EOS, PAD, types), ids, n, config)
    assert torch.equal(ours, expected)


class BanAndRenormalize:
    """<pad> and <bot> banned with the rest renormalized, as our search scores beams (generate()'s
    beam search runs processors on log-probabilities, so `suppress_tokens` would not renormalize
    and near ties between beams could break the other way)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.index_fill(1, torch.tensor([PAD, BOT]), -float("inf")).log_softmax(dim=-1)


@pytest.mark.parametrize("length_penalty", [1.0, 2.0])
@torch.no_grad()
def test_beam_search_equals_hugging_face_generate(length_penalty: float) -> None:
    """Our beam search is generate()'s under either stopping rule, through the kwargs mapping;
    on these prompts the two rules pick different replies for some rows."""
    model = tiny_gpt2()
    ids, n, mask, types = left_padded([9, 9, 5, 2, 7, 4, 1, 8], 9)

    def pad(t: torch.Tensor) -> torch.Tensor:
        """Replies cut after <eos> (generate() fills with it, we with <pad>), as (B, 20)."""
        after = (t == EOS).long().cumsum(dim=1) - (t == EOS).long() > 0
        return torch.nn.functional.pad(t.masked_fill(after, EOS), (0, 20 - t.size(1)), value=EOS)

    replies = {}
    for early_stopping in (False, True):
        config = DecodingConfig(
            strategy="beam", num_beams=3, max_length=20, length_penalty=length_penalty,
            early_stopping=early_stopping,
        )  # fmt: skip
        kwargs = generation.to_hf_generate_kwargs(config)
        assert kwargs["early_stopping"] is (True if early_stopping else "never")
        expected = model.generate(
            input_ids=ids, attention_mask=mask.long(), token_type_ids=types, pad_token_id=EOS,
            eos_token_id=EOS, logits_processor=[BanAndRenormalize()], **kwargs,
        )[:, ids.size(1) :]  # fmt: skip
        ours = generation.generate(GPT2Stepper(model, BOT, EOS, PAD, types), ids, n, config)
        assert torch.equal(pad(ours), pad(expected)), early_stopping
        replies[early_stopping] = pad(ours)
    assert not torch.equal(replies[False], replies[True])


class Recomputing:
    """The same search interface without a cache: every step reruns Hugging Face's forward on
    the whole sequence so far (the state is the fed tokens, batch on dim 1)."""

    def __init__(self, model: GPT2LMHeadModel, types: torch.Tensor) -> None:
        self.model, self.types = model, types
        self.config = GPT2Stepper(model, BOT, EOS, PAD).config

    def encode(self, ids, lengths):
        mask = torch.arange(ids.size(1)).unsqueeze(0) >= (ids.size(1) - lengths).unsqueeze(1)
        fed = torch.empty(1, ids.size(0), 0, dtype=torch.long)
        return torch.cat([ids, self.types, mask.long()], dim=1), fed, mask

    def decoder(self, token, state, memory, prompt_mask):
        ids, types, mask = memory.chunk(3, dim=1)  # (N, S) each
        fed = torch.cat([state, token.unsqueeze(0)], dim=2)  # the start marker, then the reply
        logits = hf_logits(self.model, ids, mask.bool(), types, fed[0, :, 1:])
        return logits[:, -1:], fed, None


@pytest.mark.parametrize(
    "config",
    [
        DecodingConfig(strategy="beam", num_beams=3, max_length=7),
        DecodingConfig(strategy="sample", top_k=10, max_length=7, seed=3),
        DecodingConfig(max_length=7, no_repeat_ngram_size=2, repetition_penalty=1.3),
    ],
    ids=["beam", "sample", "processors"],
)
@torch.no_grad()
def test_search_with_the_cache_equals_recomputing_everything(config: DecodingConfig) -> None:
    """Beam reordering, repeats and sampling move the cache with its rows."""
    model = tiny_gpt2()
    ids, n, _, types = left_padded([8, 5], 8)
    cached = generation.generate(GPT2Stepper(model, BOT, EOS, PAD, types), ids, n, config)
    recomputed = generation.generate(Recomputing(model, types), ids, n, config)
    assert torch.equal(cached, recomputed)


@pytest.mark.skipif(not int8_available(), reason="no quantized engine on this machine")
@torch.no_grad()
def test_int8_and_bf16_weights_step_close_to_fp32(tok) -> None:  # noqa: F811
    module = make_module(tok, max_reply_length=6).eval()
    batch = module.encode_prompts([[TEXTS[0]], [TEXTS[1], TEXTS[2]]], None)
    args = (batch["prompt_ids"], batch["prompt_mask"].sum(1))
    reply = torch.randint(10, len(tok), (2, 4))

    def logits(net: GPT2LMHeadModel) -> torch.Tensor:
        stepper = GPT2Stepper(net, tok.bot_id, tok.eos_id, tok.pad_id, batch["prompt_types"])
        memory, state, mask = stepper.encode(*args)
        out, token = [], batch["prompt_ids"][:, -1:]
        for i in range(reply.size(1)):
            step, state, _ = stepper.decoder(token, state, memory, mask)
            out.append(step.float())
            token = reply[:, i : i + 1]
        return torch.cat(out, dim=1)

    fp32 = logits(module.net)
    for mode in ("int8", "bf16"):
        held = quantize_model(make_module(tok, max_reply_length=6), mode).net
        torch.testing.assert_close(logits(held), fp32, atol=0.1, rtol=0.05)


def test_module_searches_with_the_stepper_unless_told_otherwise(tok, monkeypatch) -> None:  # noqa: F811
    module = make_module(tok, max_reply_length=6).eval()
    contexts = [[TEXTS[0]], [TEXTS[1], TEXTS[2]]]
    calls = []
    real = GPT2LMHeadModel.generate
    monkeypatch.setattr(
        GPT2LMHeadModel, "generate", lambda self, **kw: calls.append(1) or real(self, **kw)
    )
    ours = module.reply(contexts)
    assert calls == [] and len(ours) == 2
    module.search = "hf"
    theirs = module.reply(contexts)
    assert calls == [1] and len(theirs) == 2
    # Old checkpoints (no `search`) with generate() arguments keep Hugging Face's search.
    assert make_module(tok, generation={"repetition_penalty": 1.1}).search == "hf"
    assert make_module(tok).search == "dialoglab"


def test_generate_arguments_with_our_search_are_refused(tok) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="model.search=hf"):
        make_module(tok, search="dialoglab", generation={"repetition_penalty": 1.1})
    with pytest.raises(ConfigError, match="model.search must be one of"):
        make_module(tok, search="fast")


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        GPT2Stepper(torch.nn.Linear(2, 2), BOT, EOS, PAD)
    assert not GPT2Stepper.supports(tiny_gpt2(add_cross_attention=True))
    assert GPT2Stepper.supports(tiny_gpt2())
