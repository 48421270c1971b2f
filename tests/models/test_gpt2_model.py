"""CausalLMModule and GPT-2 construction: special ids, loss masking, packing, generation
(Hugging Face generate() without the special markers), warm-up/decay scheduling, switches, and
the offline fast-fail for hub names."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dialoglab.data.hf_tokenization import HFTokenizer
from dialoglab.errors import ConfigError
from dialoglab.models.causal_lm import CausalLMModule
from dialoglab.models.components.gpt2 import (
    SpecialIds,
    gpt2_from_config,
    gpt2_pretrained,
    is_activation_checkpointing,
)
from dialoglab.models.schedules import warmup_decay
from tests.data.test_gpt2_tokenization import EXAMPLES, TEXTS
from tests.helpers.workloads import full_logits_nll


@pytest.fixture(scope="module")
def tok() -> HFTokenizer:
    return HFTokenizer(vocab_size=300, min_frequency=1).fit_examples(EXAMPLES * 3)


def train_losses(tok: HFTokenizer, *modules: CausalLMModule) -> list[torch.Tensor]:
    """Each module's summed reply loss on the same three examples, after its backward."""
    split = tok.encode_examples(EXAMPLES, max_length=48, length_policy="truncate")
    batch = tok.collate(split, [0, 1, 2])
    losses = [module.nll(batch) for module in modules]
    for loss in losses:
        loss.backward()
    return [loss.detach() for loss in losses]


def special_ids(tok: HFTokenizer) -> SpecialIds:
    return SpecialIds(len(tok), tok.bos_id, tok.eos_id, tok.pad_id)


def make_module(tok: HFTokenizer, **kwargs) -> CausalLMModule:
    torch.manual_seed(0)
    defaults = dict(n_layer=2, n_head=2, n_embd=32, n_positions=128, dropout=0.0)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    return CausalLMModule(tok, optimizer, **{**defaults, **kwargs})


def test_scratch_model_uses_the_tokenizer_ids(tok: HFTokenizer) -> None:
    net = make_module(tok).net
    assert net.config.vocab_size == len(tok)
    for holder in (net.config, net.generation_config):
        assert (holder.bos_token_id, holder.eos_token_id, holder.pad_token_id) == (
            tok.bos_id,
            tok.eos_id,
            tok.pad_id,
        )


def test_loss_counts_reply_tokens_only_and_packing_matches(tok: HFTokenizer) -> None:
    module = make_module(tok).eval()
    split = tok.encode_examples(EXAMPLES, max_length=48, length_policy="truncate")
    batch = tok.collate(split, list(range(5)))
    replies = sum(len(split.target(i)) for i in range(5))
    assert int(module.count_tokens(batch)) == replies
    # Changing a prompt token changes the loss (it conditions), but labels stay on the reply.
    packer = HFTokenizer(pack_to=128)
    packer.load_state_dict(tok.state_dict())
    packed = packer.collate(split, list(range(5)))
    assert packed["input_ids"].shape[0] < 5
    with torch.no_grad():
        plain_nll, packed_nll = module.nll(batch), module.nll(packed)
    assert int(module.count_tokens(packed)) == replies
    assert torch.allclose(plain_nll, packed_nll, rtol=1e-4), (plain_nll, packed_nll)
    chosen = torch.tensor([0, 2])
    sub = module.select_examples(packed, chosen)
    assert set(sub) == {
        "prompt_ids",
        "prompt_mask",
        "prompt_types",
        "reply_ids",
        "n_words",
        "index",
    }
    assert sub["index"].tolist() == [0, 2]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("pack_to", [None, 128])
def test_reply_only_output_layer_equals_full_logits(
    tok: HFTokenizer, label_smoothing: float, pack_to: int | None
) -> None:
    """`nll` runs the output layer on labelled positions only: the loss and every gradient are
    those of the logits at every position."""
    tokenizer = HFTokenizer(pack_to=pack_to)
    tokenizer.load_state_dict(tok.state_dict())
    split = tokenizer.encode_examples(EXAMPLES, max_length=48, length_policy="truncate")
    batch = tokenizer.collate(split, list(range(5)))
    assert (batch["labels"] == -100).float().mean() > 0.3  # prompts and padding go unscored
    grads = []
    for loss_of in (CausalLMModule.nll, full_logits_nll):
        module = make_module(tok).train()  # the same initial weights, no dropout
        loss = loss_of(module, batch, label_smoothing)
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in module.parameters()]))
    (ours, ours_grads), (full, full_grads) = grads
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_nll_is_cross_entropy_of_the_full_logits_on_labelled_positions(
    tok: HFTokenizer, label_smoothing: float
) -> None:
    """`nll` equals plain F.cross_entropy over `forward`'s logits at every position whose next
    token carries a label (position t predicts token t + 1; prompts and padding are -100)."""
    module = make_module(tok).eval()
    split = tok.encode_examples(EXAMPLES, max_length=48, length_policy="truncate")
    batch = tok.collate(split, list(range(5)))
    with torch.no_grad():
        logits = module(batch)  # (rows, T, V): the output layer at every position
        labels = batch["labels"][:, 1:]
        scored = labels != -100
        expected = F.cross_entropy(
            logits[:, :-1][scored].float(),
            labels[scored],
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        loss = module.nll(batch, label_smoothing)
    assert int(scored.sum()) == int(module.count_tokens(batch)) > 0
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_plain_hugging_face_gpt2(tok: HFTokenizer) -> None:
    """The module holds an unmodified GPT-2: PyTorch's dropout modules, Hugging Face's own
    attention, and none of the retired speed switches."""
    module = make_module(tok, dropout=0.1)
    assert any(type(m) is nn.Dropout for m in module.net.modules())
    assert module.net.config._attn_implementation in ("sdpa", "eager")
    for retired in ("fast_dropout", "search"):
        assert not hasattr(module, retired)
        with pytest.raises(TypeError, match=retired):
            make_module(tok, **{retired: True})


def test_generate_never_emits_the_special_markers(tok: HFTokenizer, monkeypatch) -> None:
    """Replies come from Hugging Face generate() with `suppress_tokens` set to every special
    marker but `<eot>`: even a model that prefers them never puts one in a reply."""
    module = make_module(tok, max_reply_length=6).eval()
    banned = module.never_generated()
    assert banned == sorted(
        {tok.pad_id, tok.bos_id, tok.persona_id, tok.user_id, tok.bot_id} - {tok.eos_id}
    )
    assert tok.eos_id not in banned
    # An output layer with a bias that makes every marker the argmax at every step.
    head = module.net.lm_head
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[banned] = 100.0
    module.net.lm_head = biased
    batch = module.encode_prompts([[TEXTS[0]], [TEXTS[1], TEXTS[2]]], None)
    args = batch["prompt_ids"], batch["prompt_mask"], batch["prompt_types"]
    calls = []
    real = module.net.generate
    monkeypatch.setattr(module.net, "generate", lambda **kw: calls.append(kw) or real(**kw))
    for strategy in ("greedy", "beam"):
        ids = module.generate_ids(*args, {"strategy": strategy, "num_beams": 3, "max_length": 6})
        assert ids.shape[1] >= 1 and not set(ids.flatten().tolist()) & set(banned), strategy
    assert all(kw["suppress_tokens"] == banned for kw in calls) and len(calls) == 2
    module.generation_kwargs = {"suppress_tokens": []}  # generate()'s own keywords win
    ids = module.generate_ids(*args, {"strategy": "greedy", "max_length": 6})
    assert set(ids.flatten().tolist()) & set(banned)


def test_batched_left_padded_generation_matches_single(tok: HFTokenizer) -> None:
    module = make_module(tok, max_reply_length=6).eval()
    contexts = [[TEXTS[0]], [TEXTS[1], TEXTS[2], TEXTS[3]], []]
    personas = [TEXTS[4], (), [TEXTS[5]]]
    together = module.reply(contexts, personas=personas)
    alone = [module.reply([c], personas=[p])[0] for c, p in zip(contexts, personas, strict=True)]
    assert together == alone
    assert len(module.reply([[TEXTS[0]]])) == 1  # no persona: the base signature still works


def test_generate_stops_within_the_position_budget(tok: HFTokenizer) -> None:
    module = make_module(tok, n_positions=24, max_reply_length=40).eval()
    batch = module.encode_prompts([[" ".join(TEXTS)]], None)
    assert batch["prompt_ids"].shape[1] <= 24
    ids = module.generate_ids(batch["prompt_ids"], batch["prompt_mask"], batch["prompt_types"])
    assert batch["prompt_ids"].shape[1] + ids.shape[1] <= 24


def test_step_scheduler_and_weight_decay_groups(tok: HFTokenizer) -> None:
    scheduler = functools.partial(warmup_decay, interval="step", warmup_ratio=0.1)
    module = make_module(tok, scheduler=scheduler, weight_decay=0.1)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = module.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    optimizer, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    no_decay = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert all(id(p) in no_decay for n, p in module.net.named_parameters() if n.endswith("bias"))
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    peak = lrs.index(max(lrs))
    assert peak == 10 and max(lrs) == pytest.approx(1e-3)  # 10 warm-up steps, then decay
    assert lrs[0] < lrs[5] < lrs[9] and lrs[20] > lrs[60] > lrs[99]
    # An epoch scheduler keeps working as before (the default interval).
    epoch = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)
    module = make_module(tok, scheduler=epoch)
    assert module.configure_optimizers()["lr_scheduler"]["interval"] == "epoch"
    bad = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, interval="batch")
    with pytest.raises(ConfigError, match="interval"):
        make_module(tok, scheduler=bad).configure_optimizers()


def test_schedule_shapes() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = warmup_decay(opt, num_training_steps=10, warmup_steps=0, decay="cosine")
    assert cosine.lr_lambdas[0](0) == pytest.approx(1.0)
    assert cosine.lr_lambdas[0](5) == pytest.approx(0.5)
    constant = warmup_decay(opt, num_training_steps=10, warmup_steps=2, decay="constant")
    assert [round(constant.lr_lambdas[0](s), 3) for s in (0, 1, 2, 9)] == [0.333, 0.667, 1, 1]
    with pytest.raises(ConfigError, match="decay"):
        warmup_decay(opt, 10, decay="exp")


def test_gradient_checkpointing_and_compile_switches(tok: HFTokenizer, monkeypatch) -> None:
    module = make_module(tok, gradient_checkpointing=True).train()
    assert is_activation_checkpointing(module.net)
    split = tok.encode_examples(EXAMPLES, max_length=48, length_policy="truncate")
    loss = module.nll(tok.collate(split, [0, 1]))
    loss.backward()
    assert module.net.transformer.wte.weight.grad is not None
    calls = []
    compiled = make_module(tok, compile=True)
    monkeypatch.setattr(compiled.net.transformer, "compile", lambda **kw: calls.append(kw))
    compiled.on_fit_start()
    compiled.on_fit_start()
    assert calls == [{"dynamic": True}]


def test_fused_activation_trains_like_gelu_new(tok: HFTokenizer) -> None:
    """The default MLP activation is one fused op with gelu_new's formula: the same loss and
    gradients to float rounding, recorded in the config that checkpoints rebuild from."""
    fused, reference = make_module(tok).train(), make_module(tok, activation="gelu_new").train()
    assert fused.net.config.activation_function == "gelu_pytorch_tanh"
    assert reference.net.config.activation_function == "gelu_new"
    assert type(fused.net.transformer.h[0].mlp.act).__name__ == "GELUTanh"
    reference.load_state_dict(fused.state_dict())
    losses = train_losses(tok, fused, reference)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(fused.net.parameters(), reference.net.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    rebuilt = gpt2_from_config(fused.net.config.to_dict(), special_ids(tok))
    assert type(rebuilt.transformer.h[1].mlp.act) is type(fused.net.transformer.h[1].mlp.act)


def test_pretrained_activation_kept_or_swapped(tok: HFTokenizer, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = special_ids(tok)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "tiny")
    kept = gpt2_pretrained(str(tmp_path / "tiny"), ids).eval()
    swapped = gpt2_pretrained(str(tmp_path / "tiny"), ids, "gelu_pytorch_tanh").eval()
    assert kept.config.activation_function == "gelu_new"
    assert swapped.config.activation_function == "gelu_pytorch_tanh"
    ids_in = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(swapped(ids_in).logits, kept(ids_in).logits)
    swapped.save_pretrained(tmp_path / "saved")
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.activation_function == "gelu_pytorch_tanh"


def test_unknown_activation_names_the_key(tok: HFTokenizer) -> None:
    with pytest.raises(ConfigError, match=r"model.activation='gelu_fast_typo'.*gelu_pytorch_tanh"):
        make_module(tok, activation="gelu_fast_typo")


def test_unfitted_tokenizer_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="fitted"):
        CausalLMModule(HFTokenizer(), functools.partial(torch.optim.AdamW, lr=1e-3))


@pytest.fixture
def no_hub_cache(tmp_path: Path, monkeypatch) -> None:
    """An empty HF cache, and offline mode restored after the test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)


@pytest.mark.parametrize("offline_env", [True, False])
def test_hub_name_offline_fails_fast(
    tok: HFTokenizer, no_hub_cache, monkeypatch, offline_env: bool
) -> None:
    """Offline switch already set, or the hub unreachable (a closed local port): seconds, not
    the 23-46 s of retries, and the message says how to supply a local directory."""
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        make_module(tok, pretrained="distilgpt2")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "model.pretrained='distilgpt2'" in message and "model.pretrained=/path/to/DIR" in message
    assert "save_pretrained" in message
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the rest of the run stays offline
    with pytest.raises(ConfigError, match="no such directory"):
        make_module(tok, pretrained="./no/such/dir")


@pytest.mark.slow
def test_compiled_network_trains_to_the_same_numbers(tok: HFTokenizer) -> None:
    """model.compile=true (torch.compile through on_fit_start) keeps the loss and gradients."""
    eager, compiled = make_module(tok).train(), make_module(tok, compile=True).train()
    compiled.on_fit_start()
    assert compiled.net.transformer._compiled_call_impl is not None  # compiled in place
    losses = train_losses(tok, eager, compiled)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-4)
    grads = [m.net.transformer.wte.weight.grad for m in (eager, compiled)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    # parameter names (and so checkpoints) are unchanged by compiling in place
    assert list(compiled.state_dict()) == list(eager.state_dict())
