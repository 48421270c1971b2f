"""Unit tests for the plain GRU/LSTM + Luong attention seq2seq module."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.models.components.gru_attn import (
    GRUAttnConfig,
    GRUAttnSeq2Seq,
    LuongAttention,
    bridge_state,
)
from dialoglab.models.dialogue_module import summed_nll
from dialoglab.models.seq2seq import scheduled_sampling_logits
from tests.helpers.oracles import greedy_decode

PAD, SOS, EOS = 0, 1, 2
VOCAB = 23


def make_model(seed: int = 0, **overrides: object) -> GRUAttnSeq2Seq:
    """A small model in eval mode with dropout off unless overridden."""
    settings: dict[str, object] = {
        "vocab_size": VOCAB,
        "hidden_size": 16,
        "encoder_n_layers": 2,
        "decoder_n_layers": 2,
        "dropout": 0.0,
    }
    settings.update(overrides)
    torch.manual_seed(seed)
    return GRUAttnSeq2Seq(GRUAttnConfig(**settings)).eval()  # type: ignore[arg-type]


def make_batch(
    lengths: list[int], tgt_len: int = 5, seed: int = 1, extra_pad: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random source ids (padded with PAD after each length) and a decoder input starting at SOS."""
    generator = torch.Generator().manual_seed(seed)
    S = max(lengths) + extra_pad
    src = torch.randint(3, VOCAB, (len(lengths), S), generator=generator)
    for row, length in enumerate(lengths):
        src[row, length:] = PAD
    decoder_input = torch.randint(3, VOCAB, (len(lengths), tgt_len), generator=generator)
    decoder_input[:, 0] = SOS
    return src, torch.tensor(lengths), decoder_input


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_shapes(attention: str, rnn_type: str) -> None:
    model = make_model(attention=attention, rnn_type=rnn_type)
    src, lengths, decoder_input = make_batch([5, 3, 1])
    encoder_outputs, state, src_mask = model.encode(src, lengths)
    assert encoder_outputs.shape == (3, 5, 16)
    assert src_mask.tolist()[1] == [True, True, True, False, False]
    for h in state if isinstance(state, tuple) else (state,):
        assert h.shape == (2, 3, 16)
    assert isinstance(state, tuple) == (rnn_type == "lstm")
    logits = model(src, lengths, decoder_input)
    assert logits.shape == (3, 5, VOCAB)
    assert torch.isfinite(logits).all()
    # padded encoder positions are exactly zero (packing)
    assert (encoder_outputs[1, 3:] == 0).all()
    assert (encoder_outputs[2, 1:] == 0).all()


@pytest.mark.parametrize("method", ["dot", "general", "concat"])
def test_attention_masks_padding_exactly(method: str) -> None:
    torch.manual_seed(0)
    attention = LuongAttention(method, 8)
    query, keys = torch.randn(3, 4, 8) * 5, torch.randn(3, 6, 8) * 5
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4, [True] + [False] * 5])
    context, weights = attention(query, keys, mask)
    assert context.shape == (3, 4, 8) and weights.shape == (3, 4, 6)
    assert not torch.isnan(weights).any()
    assert (weights[1, :, 2:] == 0).all()
    assert (weights[2, :, 1:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(context[2], keys[2, :1].expand(4, 8))


def test_attention_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="attention"):
        LuongAttention("additive", 8)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_padding_invariance(rnn_type: str) -> None:
    model = make_model(rnn_type=rnn_type, attention="general")
    src, lengths, decoder_input = make_batch([4, 2, 3])
    padded = torch.cat([src, torch.full((3, 5), PAD)], dim=1)
    outputs, _, _ = model.encode(src, lengths)
    padded_outputs, _, mask = model.encode(padded, lengths)
    torch.testing.assert_close(padded_outputs[:, :4], outputs, rtol=0, atol=1e-6)
    assert (padded_outputs[:, 4:] == 0).all() and not mask[:, 4:].any()
    torch.testing.assert_close(
        model(padded, lengths, decoder_input), model(src, lengths, decoder_input), rtol=0, atol=1e-6
    )


def test_padding_content_is_ignored() -> None:
    model = make_model()
    src, lengths, decoder_input = make_batch([4, 2])
    garbage = src.clone()
    garbage[1, 2:] = 7  # not PAD, but beyond the length
    torch.testing.assert_close(
        model(garbage, lengths, decoder_input), model(src, lengths, decoder_input)
    )


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["dot", "concat"])
def test_stepwise_with_full_teacher_forcing_equals_forward(rnn_type: str, attention: str) -> None:
    model = make_model(rnn_type=rnn_type, attention=attention)
    src, lengths, decoder_input = make_batch([5, 2, 4], tgt_len=7)
    expected = model(src, lengths, decoder_input)
    actual = scheduled_sampling_logits(
        model, src, lengths, decoder_input, teacher_forcing_ratio=1.0
    )
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_stepwise_without_teacher_forcing_feeds_own_predictions() -> None:
    model = make_model()
    src, lengths, decoder_input = make_batch([5, 2, 4], tgt_len=7)
    gold_fed = model(src, lengths, decoder_input)
    free = scheduled_sampling_logits(model, src, lengths, decoder_input, teacher_forcing_ratio=0.0)
    assert free.shape == gold_fed.shape
    torch.testing.assert_close(free[:, 0], gold_fed[:, 0])  # step 0 reads sos in both
    assert not torch.allclose(free, gold_fed)
    # ratio 0.0 means exactly "feed back the previous argmax": the same as forward() on that input
    own_input = torch.cat([decoder_input[:, :1], free[:, :-1].argmax(-1)], dim=1)
    torch.testing.assert_close(model(src, lengths, own_input), free, rtol=0, atol=1e-5)


def test_stepwise_mixed_ratio_is_reproducible_with_generator() -> None:
    model = make_model()
    src, lengths, decoder_input = make_batch([5, 2, 4], tgt_len=7)

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return scheduled_sampling_logits(
            model, src, lengths, decoder_input, 0.5, generator=generator
        )

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_greedy_decode_stops_at_forced_eos() -> None:
    model = make_model()
    with torch.no_grad():
        model.decoder.W_o.bias[EOS] = 100.0
    src, lengths, _ = make_batch([5, 2, 4])
    tokens, attention = greedy_decode(model, src, lengths, max_len=20)
    assert tokens.tolist() == [[EOS]] * 3
    assert attention.shape == (3, 1, 5)
    assert (attention[1, :, 2:] == 0).all()


def test_greedy_decode_runs_to_max_len_without_eos() -> None:
    model = make_model()
    with torch.no_grad():
        model.decoder.W_o.bias[5] = 100.0
    src, lengths, _ = make_batch([5, 2, 4])
    tokens, attention = greedy_decode(model, src, lengths, max_len=11)
    assert tokens.shape == (3, 11) and (tokens == 5).all()
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 11))


def test_greedy_decode_pads_after_eos_per_sequence() -> None:
    model = make_model(seed=4, vocab_size=12)
    with torch.no_grad():
        model.decoder.W_o.weight.mul_(4)  # sharper logits, more varied outputs
        model.decoder.W_o.bias[EOS] = -100.0  # the free run below never emits eos=2
    src = torch.randint(3, 12, (6, 6), generator=torch.Generator().manual_seed(4))
    lengths = torch.tensor([6, 4, 3, 5, 2, 1])
    free_run, _ = greedy_decode(model, src, lengths, max_len=20)
    assert free_run.shape == (6, 20) and not (free_run == EOS).any()

    # Reuse the weights with the eos id that makes rows end at the most different steps.
    def end_steps(token: int) -> list[int]:
        return [row.index(token) if token in row else -1 for row in free_run.tolist()]

    new_eos = max(range(3, 12), key=lambda token: len(set(end_steps(token))))
    ends = end_steps(new_eos)
    assert len(set(ends)) >= 4 and -1 not in ends and max(ends) >= 8, ends
    model_eos = GRUAttnSeq2Seq(dataclasses.replace(model.config, eos_id=new_eos)).eval()
    model_eos.load_state_dict(model.state_dict())
    tokens, attention = greedy_decode(model_eos, src, lengths, max_len=20)

    assert tokens.shape == (6, max(ends) + 1)  # trimmed to the longest output
    for i, end in enumerate(ends):
        assert tokens[i, : end + 1].tolist() == free_run[i, : end + 1].tolist()
        assert tokens[i, end] == new_eos
        assert (tokens[i, end + 1 :] == PAD).all()
        assert (attention[i, end + 1 :] == 0).all()
        # the same row decoded alone stops at its own eos
        alone, _ = greedy_decode(model_eos, src[i : i + 1], lengths[i : i + 1], max_len=20)
        assert alone[0].tolist() == tokens[i, : end + 1].tolist()


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize(("encoder_layers", "decoder_layers"), [(2, 1), (1, 3), (3, 3)])
def test_decoder_and_encoder_layer_counts_differ(
    rnn_type: str, encoder_layers: int, decoder_layers: int
) -> None:
    model = make_model(
        rnn_type=rnn_type, encoder_n_layers=encoder_layers, decoder_n_layers=decoder_layers
    )
    src, lengths, decoder_input = make_batch([5, 3])
    assert model(src, lengths, decoder_input).shape == (2, 5, VOCAB)
    _, encoder_state = model.encoder(src, lengths)
    _, state, _ = model.encode(src, lengths)
    pairs = (
        zip(encoder_state, state, strict=True) if rnn_type == "lstm" else [(encoder_state, state)]
    )
    for enc, dec in pairs:
        assert dec.shape == (decoder_layers, 2, 16)
        shared = min(encoder_layers, decoder_layers)
        torch.testing.assert_close(dec[-shared:], enc[-shared:])  # top layers line up
        assert (dec[: decoder_layers - shared] == 0).all()  # extra bottom layers start at 0


def test_bridge_state_top_layers_and_zero_fill() -> None:
    h = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)
    assert bridge_state(h, 2)[:, 0, 0].tolist() == [1.0, 2.0]
    assert bridge_state(h, 5)[:, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 2.0]
    h2, c2 = bridge_state((h, h + 10), 1)
    assert h2[:, 0, 0].tolist() == [2.0] and c2[:, 0, 0].tolist() == [12.0]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"attention": "bahdanau"}, "model.net.attention"),
        ({"rnn_type": "rnn"}, "model.net.rnn_type"),
        ({"hidden_size": 0}, "model.net.hidden_size"),
        ({"decoder_n_layers": 0}, "model.net.decoder_n_layers"),
        ({"dropout": 1.0}, "model.net.dropout"),
        ({"eos_id": VOCAB}, "model.net.eos_id"),
        ({"eos_id": PAD}, "model.net.eos_id"),
    ],
)
def test_invalid_config_names_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key) as error:
        GRUAttnConfig(vocab_size=VOCAB, **overrides)  # type: ignore[arg-type]
    assert isinstance(error.value, ConfigError)
    if key == "model.net.attention":
        assert "dot, general, concat" in str(error.value)


def test_config_dict_round_trip() -> None:
    config = GRUAttnConfig(vocab_size=50, attention="concat", rnn_type="lstm", dropout=0.2)
    values = dataclasses.asdict(config)
    assert json.loads(json.dumps(values)) == values
    assert GRUAttnConfig.from_dict(values) == config
    with pytest.raises(ValueError, match=r"unknown model setting\(s\) model\.net\.hiden_size"):
        GRUAttnConfig.from_dict({**values, "hiden_size": 3})
    with pytest.raises(ConfigError, match=r"model\.net\.vocab_size is required"):
        GRUAttnConfig.from_dict({"hidden_size": 3})


def test_built_from_keywords_as_hydra_does() -> None:
    """`model.net` is a partial of the class: its settings arrive as keywords, completed by the
    module with the vocabulary size and special ids; a typo is an error, not ignored."""
    net = GRUAttnSeq2Seq(vocab_size=VOCAB, hidden_size=8, encoder_n_layers=1, decoder_n_layers=1)
    assert net.config == GRUAttnConfig(
        vocab_size=VOCAB, hidden_size=8, encoder_n_layers=1, decoder_n_layers=1
    )
    with pytest.raises(ConfigError, match=r"model\.net\.hiden_size"):
        GRUAttnSeq2Seq(vocab_size=VOCAB, hiden_size=8)


def test_plain_pytorch_modules() -> None:
    """The reference network holds only PyTorch's own layers (speed paths live in accel)."""
    model = make_model(dropout=0.1)
    assert type(model.decoder.W_o) is torch.nn.Linear
    assert type(model.encoder.dropout) is type(model.decoder.dropout) is torch.nn.Dropout
    assert type(model.encoder.rnn) is type(model.decoder.rnn) is torch.nn.GRU
    for removed in ("greedy_decode", "forward_stepwise", "fused_rnn", "keep"):
        assert not hasattr(model, removed), removed


def make_targets(lengths: list[int], T: int, seed: int = 2) -> torch.Tensor:
    """(B, T) reply ids ending in EOS after `lengths[b] - 1` words, PAD after."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(3, VOCAB, (len(lengths), T), generator=generator)
    for row, n in enumerate(lengths):
        target[row, n - 1] = EOS
        target[row, n:] = PAD
    return target


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_nll_equals_cross_entropy_of_the_logits_on_real_tokens(
    rnn_type: str, label_smoothing: float
) -> None:
    """`nll` runs the output layer on the N real target tokens only: its loss and every gradient
    are those of F.cross_entropy over `forward`'s logits with padding ignored."""
    src, lengths, _ = make_batch([5, 2, 4], tgt_len=6)
    target = make_targets([6, 2, 4], 6)
    decoder_input = torch.cat([torch.full((3, 1), SOS), target[:, :-1]], dim=1)
    results = []
    for full in (False, True):
        model = make_model(rnn_type=rnn_type, attention="general")
        if full:
            logits = model(src, lengths, decoder_input)  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1),
                target.flatten(),
                ignore_index=PAD,
                reduction="sum",
                label_smoothing=label_smoothing,
            )
        else:
            loss = model.nll(src, lengths, decoder_input, target, label_smoothing)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss, grads), (expected, expected_grads) = results
    assert loss.dim() == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_decoder_nll_is_summed_cross_entropy_of_w_o_in_fp32() -> None:
    """`Decoder.nll` is `summed_nll` of W_o's logits; under bf16 autocast it still sums in fp32."""
    model = make_model()
    features, targets = torch.randn(9, 16), torch.randint(0, VOCAB, (9,))
    expected = summed_nll(model.decoder.W_o(features), targets, 0.2)
    want = torch.nn.functional.cross_entropy(
        model.decoder.W_o(features), targets, reduction="sum", label_smoothing=0.2
    )
    torch.testing.assert_close(expected, want)
    torch.testing.assert_close(model.decoder.nll(features, targets, 0.2), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.decoder.nll(features, targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss, summed_nll(model.decoder.W_o(features), targets), rtol=0.02, atol=0.1
    )


def test_module_builds_its_net_from_a_partial() -> None:
    from dialoglab.data.tokenization import WordTokenizer
    from dialoglab.models.seq2seq import Seq2SeqModule

    tok = WordTokenizer(min_count=1).fit(["hello there", "how are you?"])
    net = functools.partial(GRUAttnSeq2Seq, hidden_size=8, encoder_n_layers=1, decoder_n_layers=1)
    module = Seq2SeqModule(tok, net, functools.partial(torch.optim.Adam, lr=1e-3))
    config = module.net.config
    assert (config.vocab_size, config.pad_id, config.sos_id, config.eos_id) == (
        len(tok),
        tok.pad_id,
        tok.sos_id,
        tok.eos_id,
    )
    assert config.hidden_size == 8 and module.config is config


def test_module_trains_with_scheduled_sampling() -> None:
    """teacher_forcing_ratio < 1: the module's training logits come step by step
    (`scheduled_sampling_logits`); at ratio 0 they feed back their own argmax."""
    from dialoglab.data.tokenization import WordTokenizer
    from dialoglab.models.seq2seq import Seq2SeqModule

    tok = WordTokenizer(min_count=1).fit(["hello there", "how are you?"])
    net = functools.partial(GRUAttnSeq2Seq, hidden_size=8, encoder_n_layers=1, decoder_n_layers=1)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    torch.manual_seed(0)
    module = Seq2SeqModule(tok, net, optimizer, teacher_forcing_ratio=0.0).train()
    module.net.eval()  # no dropout, so the two passes can be compared
    src, lengths = module.encode_contexts([["hello there"], ["how are you?"]])
    decoder_input = torch.tensor([[tok.sos_id, 5, 6], [tok.sos_id, 7, 8]])
    target = torch.tensor([[5, 6, tok.eos_id], [7, 8, tok.eos_id]])
    batch = {"src": src, "src_lengths": lengths, "decoder_input": decoder_input, "target": target}
    logits = module(batch)
    expected = scheduled_sampling_logits(module.net, src, lengths, decoder_input, 0.0)
    torch.testing.assert_close(logits, expected)
    assert torch.isfinite(module.nll(batch))


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_save_and_load_pretrained_round_trip(tmp_path, rnn_type: str) -> None:
    model = make_model(rnn_type=rnn_type, attention="concat")
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = GRUAttnSeq2Seq.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    # the embedding is still one shared module after loading
    assert loaded.encoder.embedding.weight is loaded.decoder.embedding.weight
    assert loaded.embedding.weight is loaded.encoder.embedding.weight
    src, lengths, decoder_input = make_batch([5, 3])
    torch.testing.assert_close(
        loaded(src, lengths, decoder_input), model(src, lengths, decoder_input), rtol=0, atol=0
    )


def test_from_pretrained_missing_directory_is_a_checkpoint_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        GRUAttnSeq2Seq.from_pretrained(tmp_path / "nowhere")


def test_num_parameters_counts_shared_embedding_once() -> None:
    model = make_model()
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    assert model.embedding.weight.numel() == VOCAB * 16
    assert model.embedding.padding_idx == PAD


def test_tiny_model_overfits_toy_batch() -> None:
    torch.manual_seed(0)
    model = GRUAttnSeq2Seq(
        GRUAttnConfig(vocab_size=12, hidden_size=32, encoder_n_layers=1, decoder_n_layers=1)
    )
    model.train()
    src = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11], [5, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 4, 1])
    targets = torch.tensor([[5, 4, 3, EOS], [7, 6, EOS, PAD], [11, 10, 9, 8], [5, 5, EOS, PAD]])
    decoder_input = torch.cat([torch.full((4, 1), SOS), targets[:, :-1]], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = torch.tensor(float("inf"))
    for _ in range(300):
        logits = model(src, lengths, decoder_input)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 12), targets.reshape(-1), ignore_index=PAD
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1
    model.eval()
    tokens, _ = greedy_decode(model, src, lengths, max_len=6)
    assert tokens[0].tolist()[:4] == [5, 4, 3, EOS]
