"""Decoding: one config for every family; greedy, beam search and sampling over GRUAttnSeq2Seq."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from dialoglab.errors import ConfigError
from dialoglab.generation import (
    DecodingConfig,
    PromptNGramBlocker,
    beam_search,
    context_ngram_bans,
    generate,
    greedy_or_sample,
    load_preset,
    ngram_bans,
    preset_names,
    seeded,
    to_hf_generate_kwargs,
    top_k_top_p_filter,
)
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq

PAD, SOS, EOS = 0, 1, 2
VOCAB = 23


def make_model(seed: int = 0, vocab: int = VOCAB, **overrides: object) -> GRUAttnSeq2Seq:
    """A small random model in eval mode, which never prefers <pad>/<sos> (as a trained one)."""
    settings: dict[str, object] = {
        "vocab_size": vocab,
        "hidden_size": 16,
        "encoder_n_layers": 1,
        "decoder_n_layers": 2,
        "dropout": 0.0,
    }
    settings.update(overrides)
    torch.manual_seed(seed)
    net = GRUAttnSeq2Seq(GRUAttnConfig(**settings)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        net.decoder.W_o.bias[[PAD, SOS]] = -50.0
    return net


def make_src(
    lengths: list[int], seed: int = 1, vocab: int = VOCAB
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=generator)
    for row, length in enumerate(lengths):
        src[row, length - 1] = EOS
        src[row, length:] = PAD
    return src, torch.tensor(lengths)


def rows(tokens: torch.Tensor) -> list[list[int]]:
    """Each reply up to (without) <eos>."""
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(EOS)] if EOS in row else row)
    return out


def ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


LENGTHS = [6, 4, 1, 6, 2]


pytestmark = pytest.mark.usefixtures("one_thread")


# -----------------------------------------------------------------------------
# Config


def test_presets_exist_and_build() -> None:
    names = preset_names()
    assert {"greedy", "beam", "sample", "nucleus"} <= set(names)
    for name in names:
        config = DecodingConfig.from_any(name)
        assert config.strategy in ("greedy", "beam", "sample")
    nucleus = DecodingConfig.from_any("nucleus")
    assert nucleus.strategy == "sample" and nucleus.top_k == 0 and nucleus.top_p == 0.9


def test_from_any_accepts_every_form() -> None:
    from omegaconf import OmegaConf

    assert DecodingConfig.from_any(None) == DecodingConfig()
    beam = DecodingConfig.from_any("beam", num_beams=3)
    assert beam.num_beams == 3 and beam.strategy == "beam"
    assert DecodingConfig.from_any(beam) == beam and DecodingConfig.from_any(beam) is not beam
    cfg = OmegaConf.create({"_target_": "dialoglab.generation.DecodingConfig", "top_k": 5})
    assert DecodingConfig.from_any(cfg).top_k == 5
    assert DecodingConfig.from_any({"strategy": "sample", "seed": 3}).seed == 3


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"strategy": "topk"}, "decoding.strategy"),
        ({"num_beams": 0}, "decoding.num_beams"),
        ({"temperature": 0.0}, "decoding.temperature"),
        ({"top_p": 1.5}, "decoding.top_p"),
        ({"max_length": 0}, "decoding.max_length"),
        ({"max_length": 5, "min_length": 5}, "decoding.min_length"),
        ({"no_repeat_ngram_size": -1}, "decoding.no_repeat_ngram_size"),
        ({"repetition_penalty": 0}, "decoding.repetition_penalty"),
        ({"early_stopping": "yes"}, "decoding.early_stopping"),
        ({"beams": 3}, "decoding.beams"),
    ],
)
def test_bad_settings_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DecodingConfig.from_any(values)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="greedy"):
        DecodingConfig.from_any("does-not-exist")


def test_presets_come_from_the_callers_folder(tmp_path) -> None:
    (tmp_path / "wide.yaml").write_text("strategy: beam\nnum_beams: 7\n")
    (tmp_path / "wider.yaml").write_text("defaults: [wide]\nlength_penalty: 2.0\n")
    assert preset_names(tmp_path) == ["wide", "wider"]
    wider = DecodingConfig.from_any("wider", presets_dir=tmp_path, min_length=2)
    assert (wider.num_beams, wider.length_penalty, wider.min_length) == (7, 2.0, 2)
    with pytest.raises(ConfigError, match="choose one of wide, wider"):
        DecodingConfig.from_any("beam", presets_dir=tmp_path)
    # A name is one of the folder's presets, never a path out of it.
    with pytest.raises(ConfigError, match="no such preset"):
        load_preset("../wide", tmp_path / "sub")


def test_generation_imports_nothing_above_it() -> None:
    """Layering: presets reach generation from its callers; it never imports experiment/chat."""
    code = (
        "import sys, dialoglab.generation as g; g.DecodingConfig.from_any('beam'); "
        "print(sorted(m for m in sys.modules if m.startswith(('dialoglab.experiment', "
        "'dialoglab.chat', 'dialoglab.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_eval_config_takes_a_decoding(make_cfg) -> None:
    default = DecodingConfig.from_any(make_cfg("eval", ["ckpt_path=x.ckpt"]).decoding)
    assert default.effective_strategy == "greedy"
    cfg = make_cfg("eval", ["ckpt_path=x.ckpt", "decoding=beam", "decoding.num_beams=3"])
    assert DecodingConfig.from_any(cfg.decoding).num_beams == 3
    nucleus = DecodingConfig.from_any(
        make_cfg("eval", ["ckpt_path=x", "decoding=nucleus"]).decoding
    )
    assert nucleus == DecodingConfig.from_any("nucleus")


# -----------------------------------------------------------------------------
# Greedy and beam search


def plain_greedy(net: GRUAttnSeq2Seq, src: torch.Tensor, lengths: torch.Tensor, max_length: int):
    """Argmax one step at a time, one example at a time: the reference for batched greedy."""
    replies = []
    for row in range(src.size(0)):
        n = int(lengths[row])
        memory, state, mask = net.encode(src[row : row + 1, :n], lengths[row : row + 1])
        token, reply = torch.tensor([[SOS]]), []
        while len(reply) < max_length and EOS not in reply:
            logits, state, _ = net.decoder(token, state, memory, mask)
            reply.append(int(logits[0, -1].argmax()))
            token = torch.tensor([[reply[-1]]])
        replies.append(reply)
    width = max(len(r) for r in replies)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in replies])


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_greedy_equals_a_plain_greedy_loop(rnn_type: str) -> None:
    net = make_model(rnn_type=rnn_type)
    src, lengths = make_src(LENGTHS)
    with torch.no_grad():
        expected = plain_greedy(net, src, lengths, 12)
    assert torch.equal(generate(net, src, lengths, DecodingConfig(max_length=12)), expected)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize(
    "processors",
    [{}, {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.5, "min_length": 2}],
)
def test_beam_size_one_is_greedy(rnn_type: str, processors: dict) -> None:
    net = make_model(rnn_type=rnn_type)
    src, lengths = make_src(LENGTHS)
    greedy = generate(net, src, lengths, DecodingConfig(max_length=15, **processors))
    # The beam-search routine itself with one beam (and no length normalisation) ...
    one_beam = DecodingConfig(strategy="beam", num_beams=1, length_penalty=0.0, max_length=15)
    with torch.no_grad():
        searched = beam_search(net, src, lengths, one_beam.replace(**processors), 15)
    assert torch.equal(searched, greedy)
    # ... and the config (Hugging Face's rule: beam with num_beams=1 is greedy).
    config = DecodingConfig(strategy="beam", num_beams=1, max_length=15, **processors)
    assert config.effective_strategy == "greedy"
    assert torch.equal(generate(net, src, lengths, config), greedy)


def sequence_logprob(
    net: GRUAttnSeq2Seq, src: torch.Tensor, length: torch.Tensor, seq: list[int]
) -> float:
    """log p(seq | src) under the decoding distribution (<pad>/<sos> excluded, as in search)."""
    decoder_input = torch.tensor([[SOS, *seq[:-1]]])
    with torch.no_grad():
        logits = net(src, length, decoder_input)[0].float()
    logits[:, [PAD, SOS]] = -1e9
    logprobs = logits.log_softmax(-1)
    return float(sum(logprobs[t, token] for t, token in enumerate(seq)))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_wide_beam_finds_the_exact_best_reply(length_penalty: float) -> None:
    """With more beams than live prefixes, beam search is exhaustive: compare with brute force."""
    vocab, max_len = 5, 4  # words 3 and 4: at most 2 + 4 + 8 = 14 live prefixes
    net = make_model(seed=3, vocab=vocab)
    src, lengths = make_src([4, 3], seed=2, vocab=vocab)
    config = DecodingConfig(strategy="beam", num_beams=16, length_penalty=length_penalty)
    found = generate(net, src, lengths, config.replace(max_length=max_len))
    for b in range(2):
        candidates = []
        for n in range(max_len):  # n words then <eos>
            candidates += [[*w, EOS] for w in itertools.product((3, 4), repeat=n)]
        candidates += [list(w) for w in itertools.product((3, 4), repeat=max_len)]  # cut off
        best = max(
            candidates,
            key=lambda s: (
                sequence_logprob(net, src[b : b + 1], lengths[b : b + 1], s)
                / len(s) ** length_penalty
            ),
        )
        got = [t for t in found[b].tolist() if t != PAD]
        assert got == best


def test_beam_search_batches_like_single_examples() -> None:
    net = make_model(seed=4)
    src, lengths = make_src(LENGTHS, seed=5)
    config = DecodingConfig(strategy="beam", num_beams=4, max_length=12, no_repeat_ngram_size=2)
    batched = rows(generate(net, src, lengths, config))
    for b in range(len(LENGTHS)):
        single = rows(generate(net, src[b : b + 1, : lengths[b]], lengths[b : b + 1], config))
        assert single[0] == batched[b]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "beam-early", "sample"])
def test_check_every_does_not_change_the_result(strategy: str) -> None:
    net = make_model(seed=6)
    src, lengths = make_src(LENGTHS, seed=7)
    early = strategy == "beam-early"
    config = DecodingConfig(
        strategy="beam" if early else strategy,
        num_beams=3,
        max_length=20,
        seed=0,
        early_stopping=early,
    )
    results = [generate(net, src, lengths, config.replace(check_every=k)) for k in (1, 3, 8, 50)]
    for result in results[1:]:
        assert torch.equal(result, results[0])


class CountHostSyncs(TorchFunctionMode):
    """Counts tensor -> Python conversions (each one waits for the device)."""

    SYNCS = ("__bool__", "item", "__int__", "__float__", "__index__", "tolist")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__name__", "") in self.SYNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_no_host_sync_per_token(strategy: str) -> None:
    net = make_model(seed=8)
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = -50.0  # never stops: every step runs
    src, lengths = make_src(LENGTHS)
    max_length = 40
    config = DecodingConfig(
        strategy=strategy, num_beams=3, max_length=max_length, no_repeat_ngram_size=2, seed=1
    )
    with CountHostSyncs() as every_step:
        generate(net, src, lengths, config.replace(check_every=1))
    assert every_step.count >= max_length - 1  # the counter sees the checks
    with CountHostSyncs() as counter:
        tokens = generate(net, src, lengths, config.replace(check_every=8))
    assert tokens.shape[1] == max_length
    assert counter.count <= max_length // 8 + 2, counter.count


# -----------------------------------------------------------------------------
# Logit processors


def test_ngram_bans_by_hand() -> None:
    history = torch.tensor([[5, 6, 5], [7, 7, 7], [3, 4, 8]])
    banned = ngram_bans(history, 2, 10)
    assert banned[0].nonzero().flatten().tolist() == [6]  # "5 6" was said; last token is 5
    assert banned[1].nonzero().flatten().tolist() == [7]
    assert not banned[2].any()
    assert not ngram_bans(history[:, :1], 2, 10).any()  # too short for a 2-gram


def test_context_ngram_bans_by_hand() -> None:
    context = torch.tensor([[5, 6, 9, 2, 0]])
    valid = torch.tensor([[True, True, True, False, False]])  # <eos> and <pad> start nothing
    history = torch.tensor([[5]])
    assert context_ngram_bans(history, context, valid, 2, 10)[0].nonzero().flatten().tolist() == [6]
    unigram = context_ngram_bans(history, context, valid, 1, 10)[0].nonzero().flatten().tolist()
    assert unigram == [5, 6, 9]
    assert not context_ngram_bans(history[:, :0], context, valid, 2, 10).any()


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_blocking_holds(strategy: str, n: int) -> None:
    net = make_model(seed=9)
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = -50.0  # long replies: plenty of chances to repeat
    src, lengths = make_src(LENGTHS)
    config = DecodingConfig(strategy=strategy, num_beams=4, max_length=18, seed=2, temperature=0.3)
    unblocked = rows(generate(net, src, lengths, config))
    assert any(len(set(ngrams(r, n))) < len(ngrams(r, n)) for r in unblocked)  # it does repeat
    for reply in rows(generate(net, src, lengths, config.replace(no_repeat_ngram_size=n))):
        assert len(set(ngrams(reply, n))) == len(ngrams(reply, n)), reply


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_context_ngrams_are_blocked(strategy: str) -> None:
    net = make_model(seed=10)
    src, lengths = make_src(LENGTHS, seed=11)
    with torch.no_grad():  # a parrot: it loves the source's first word
        net.decoder.W_o.bias[int(src[0, 0])] = 20.0
    config = DecodingConfig(strategy=strategy, num_beams=3, max_length=10, seed=3)
    assert int(src[0, 0]) in rows(generate(net, src, lengths, config))[0]
    for n in (1, 2):
        replies = rows(generate(net, src, lengths, config.replace(block_context_ngram_size=n)))
        for b, reply in enumerate(replies):
            source = src[b, : lengths[b] - 1].tolist()  # without <eos>
            assert not set(ngrams(reply, n)) & set(ngrams(source, n)), (reply, source)


def test_repetition_penalty_discourages_repeats() -> None:
    net = make_model(seed=12)
    with torch.no_grad():
        net.decoder.W_o.bias[7] = 8.0
        net.decoder.W_o.bias[EOS] = -50.0
    src, lengths = make_src([5])
    config = DecodingConfig(max_length=8)
    assert rows(generate(net, src, lengths, config))[0].count(7) > 1
    penalised = rows(generate(net, src, lengths, config.replace(repetition_penalty=1e4)))[0]
    assert penalised.count(7) == 1


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_min_and_max_length(strategy: str) -> None:
    net = make_model(seed=13)
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = 30.0  # wants to stop at once
    src, lengths = make_src(LENGTHS)
    config = DecodingConfig(strategy=strategy, num_beams=3, max_length=10, seed=0)
    assert all(len(r) == 0 for r in rows(generate(net, src, lengths, config)))
    for reply in rows(generate(net, src, lengths, config.replace(min_length=3))):
        assert len(reply) >= 3
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = -50.0
    for max_length in (1, 4):
        tokens = generate(net, src, lengths, config.replace(max_length=max_length))
        assert tokens.shape == (len(LENGTHS), max_length)


def test_default_max_length_is_the_models() -> None:
    net = make_model(seed=14)
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = -50.0
    src, lengths = make_src([3])
    assert generate(net, src, lengths, DecodingConfig(), default_max_length=7).shape == (1, 7)


# -----------------------------------------------------------------------------
# Sampling


def test_seeded_sampling_is_reproducible() -> None:
    net = make_model(seed=15)
    src, lengths = make_src(LENGTHS)
    config = DecodingConfig(strategy="sample", temperature=1.5, max_length=15, seed=123)
    first = generate(net, src, lengths, config)
    torch.manual_seed(999)  # the global RNG does not matter when a seed is given
    assert torch.equal(generate(net, src, lengths, config), first)
    others = [generate(net, src, lengths, config.replace(seed=s)) for s in range(5)]
    assert any(not torch.equal(o, first) for o in others)


def test_sampling_with_top_k_1_or_tiny_top_p_is_greedy() -> None:
    net = make_model(seed=16)
    src, lengths = make_src(LENGTHS)
    greedy = generate(net, src, lengths, DecodingConfig(max_length=12))
    sample = DecodingConfig(strategy="sample", max_length=12, seed=0)
    assert torch.equal(generate(net, src, lengths, sample.replace(top_k=1)), greedy)
    assert torch.equal(generate(net, src, lengths, sample.replace(top_p=1e-6)), greedy)


def test_top_k_top_p_filter() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: torch.isfinite(x[0]).nonzero().flatten().tolist()  # noqa: E731
    assert kept(top_k_top_p_filter(logits, 2, 1.0)) == [0, 1]
    assert kept(top_k_top_p_filter(logits, 0, 0.5)) == [0]
    assert kept(top_k_top_p_filter(logits, 0, 0.7)) == [0, 1]
    assert kept(top_k_top_p_filter(logits, 0, 0.81)) == [0, 1, 2]
    assert kept(top_k_top_p_filter(logits, 0, 1.0)) == [0, 1, 2, 3]


def test_greedy_or_sample_stops_early_when_all_end() -> None:
    net = make_model(seed=17)
    with torch.no_grad():
        net.decoder.W_o.bias[EOS] = 30.0
    src, lengths = make_src(LENGTHS)
    with torch.no_grad():
        tokens = greedy_or_sample(net, src, lengths, DecodingConfig(), 50)
    assert tokens.shape == (len(LENGTHS), 1) and (tokens == EOS).all()


# -----------------------------------------------------------------------------
# Hugging Face mapping


def test_hf_kwargs_per_preset() -> None:
    greedy = to_hf_generate_kwargs(DecodingConfig.from_any("greedy"), default_max_length=30)
    assert greedy == {"do_sample": False, "num_beams": 1, "max_new_tokens": 30}
    beam = to_hf_generate_kwargs(DecodingConfig.from_any("beam", max_length=12))
    assert beam["num_beams"] == 5 and beam["do_sample"] is False
    assert beam["max_new_tokens"] == 12 and beam["min_new_tokens"] == 1
    assert beam["no_repeat_ngram_size"] == 3 and beam["length_penalty"] == 1.0
    sample = to_hf_generate_kwargs(DecodingConfig.from_any("sample"))
    assert sample["do_sample"] is True and sample["top_k"] == 40 and sample["top_p"] == 0.95
    assert sample["repetition_penalty"] == 1.2 and "max_new_tokens" not in sample
    one_beam = to_hf_generate_kwargs(DecodingConfig(strategy="beam", num_beams=1))
    assert one_beam["num_beams"] == 1 and "length_penalty" not in one_beam
    blocked = DecodingConfig(block_context_ngram_size=2)
    assert (
        to_hf_generate_kwargs(blocked, is_encoder_decoder=True)["encoder_no_repeat_ngram_size"] == 2
    )
    (processor,) = to_hf_generate_kwargs(blocked, prompt_length=6)["logits_processor"]
    assert isinstance(processor, PromptNGramBlocker)


def test_hf_kwargs_drive_a_real_gpt2_generate() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=40,
        n_positions=64,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    prompt = torch.randint(3, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    for name in ("greedy", "beam", "sample", "nucleus"):
        decoding = DecodingConfig.from_any(name, max_length=10, block_context_ngram_size=2, seed=4)
        kwargs = to_hf_generate_kwargs(decoding, prompt_length=prompt.size(1), ignore_ids=[0])
        outputs = []
        for _ in range(2):
            with seeded(decoding):
                out = model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    pad_token_id=0,
                    eos_token_id=2,
                    **kwargs,
                )
            outputs.append(out)
        assert torch.equal(outputs[0], outputs[1]), name  # seeded: reproducible
        replies = outputs[0][:, prompt.size(1) :]
        assert replies.shape[1] <= 10
        for b in range(2):
            reply = [t for t in replies[b].tolist() if t not in (0, 2)]
            assert not set(ngrams(reply, 2)) & set(ngrams(prompt[b].tolist(), 2)), name


def test_length_penalty_changes_which_reply_wins() -> None:
    """Sanity of the ranking: a strong length penalty never picks a shorter reply than none."""
    net = make_model(seed=18)
    src, lengths = make_src(LENGTHS, seed=19)
    base = DecodingConfig(strategy="beam", num_beams=5, max_length=12)
    short = rows(generate(net, src, lengths, base.replace(length_penalty=0.0)))
    long = rows(generate(net, src, lengths, base.replace(length_penalty=3.0)))
    assert all(len(b) >= len(a) for a, b in zip(short, long, strict=True))
