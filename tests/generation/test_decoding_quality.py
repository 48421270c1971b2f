"""Replies worth reading: no `<unk>` unless asked, and MMI-antiLM reranking of beam replies."""

from __future__ import annotations

import pytest
import torch

from dialoglab.errors import ConfigError
from dialoglab.generation import (
    DecodingConfig,
    TokenBan,
    generate,
    mmi_scores,
    to_hf_generate_kwargs,
    unconditioned_logprob,
)
from dialoglab.generation.mmi import reply_lengths
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq

PAD, SOS, EOS, UNK, SEP = 0, 1, 2, 3, 4
VOCAB = 23
SEARCHES = ("greedy", "beam", "sample", "nucleus", "beam_mmi")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, bias: dict[int, float] | None = None) -> GRUAttnSeq2Seq:
    """A small random model in eval mode; `bias` adds to output logits (e.g. loves <unk>)."""
    torch.manual_seed(seed)
    config = GRUAttnConfig(
        vocab_size=VOCAB, hidden_size=16, encoder_n_layers=1, decoder_n_layers=2, dropout=0.0
    )
    net = GRUAttnSeq2Seq(config).eval()
    with torch.no_grad():
        net.decoder.W_o.bias[[PAD, SOS]] = -50.0
        for token, value in (bias or {}).items():
            net.decoder.W_o.bias[token] += value
    return net


def make_src(batch: int = 4, length: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(5, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    src[:, -1] = EOS
    return src, torch.full((batch,), length)


def decode(net: GRUAttnSeq2Seq, preset: str, **overrides: object) -> torch.Tensor:
    src, lengths = make_src()
    config = DecodingConfig.from_any(preset, max_length=8, seed=0, **overrides)
    return generate(net, src, lengths, config, ignore_ids=(SEP, UNK), unk_id=UNK)


def test_special_ids_here_are_the_word_tokenizers() -> None:
    from dialoglab.data.tokenization import SEP as SEP_TOKEN
    from dialoglab.data.tokenization import SPECIALS
    from dialoglab.data.tokenization import UNK as UNK_TOKEN

    assert SPECIALS.index(UNK_TOKEN) == UNK
    assert SPECIALS.index(SEP_TOKEN) == SEP


@pytest.mark.parametrize("preset", SEARCHES)
def test_no_unk_or_sep_unless_asked(preset: str) -> None:
    """A model that loves <unk> and <sep> never says them by default; allow_unk lets <unk> out."""
    net = make_model(bias={UNK: 8.0, SEP: 8.0})
    replies = decode(net, preset)
    assert not (replies == UNK).any() and not (replies == SEP).any()
    allowed = decode(net, preset, allow_unk=True)
    assert (allowed == UNK).any() and not (allowed == SEP).any()


def test_an_explicit_unk_id_is_honoured() -> None:
    net = make_model(bias={7: 8.0})
    src, lengths = make_src()
    config = DecodingConfig(max_length=6)
    assert (generate(net, src, lengths, config, ignore_ids=(7,)) != 7).all()
    allowed = generate(net, src, lengths, config.replace(allow_unk=True), ignore_ids=(7,), unk_id=7)
    assert (allowed == 7).any()


def test_hf_kwargs_ban_unk_only_when_the_tokenizer_has_one() -> None:
    plain = DecodingConfig()
    assert "logits_processor" not in to_hf_generate_kwargs(plain)  # GPT-2: no unknown token
    (ban,) = to_hf_generate_kwargs(plain, unk_id=5)["logits_processor"]
    assert isinstance(ban, TokenBan)
    scores = ban(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 8))
    assert torch.isinf(scores[:, 5]).all() and torch.isfinite(scores[:, :5]).all()
    assert "logits_processor" not in to_hf_generate_kwargs(plain.replace(allow_unk=True), unk_id=5)


@pytest.mark.parametrize(
    ("values", "key"), [({"mmi_lambda": -0.1}, "mmi_lambda"), ({"allow_unk": "no"}, "allow_unk")]
)
def test_bad_settings_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"decoding.{key}"):
        DecodingConfig(**values)


def test_unconditioned_logprob_equals_a_step_by_step_loop() -> None:
    net = make_model(seed=3)
    tokens = torch.tensor([[5, 9, EOS, PAD, PAD], [6, 6, 7, 8, EOS], [10, 11, 12, 13, 14]])
    got = unconditioned_logprob(net, tokens)
    with torch.no_grad():
        memory, state, mask = net.encode(torch.tensor([[EOS]]), torch.tensor([1]))
        for row, reply in enumerate(tokens.tolist()):
            total, token, s = 0.0, SOS, state
            for target in reply:
                logits, s, _ = net.decoder(torch.tensor([[token]]), s, memory, mask)
                total += float(logits[0, -1].log_softmax(-1)[target])
                token = target
                if target == EOS:
                    break
            assert got[row].item() == pytest.approx(total, abs=1e-4)


def test_mmi_order_changes_with_lambda() -> None:
    """Two replies: the one the beam prefers is the more generic; a large lambda flips the pick."""
    net = make_model(seed=5)
    tokens = torch.tensor([[[5, 6, EOS], [9, 10, EOS]]])
    lm = unconditioned_logprob(net, tokens[0]) / 3
    generic = int(lm.argmax())  # the reply more likely without a source
    scores = torch.zeros(1, 2)
    scores[0, 1 - generic] = -0.01  # the beam slightly prefers the generic reply
    assert int(mmi_scores(net, scores, tokens, 0.0, 1.0).argmax()) == generic
    assert torch.equal(mmi_scores(net, scores, tokens, 0.0, 1.0), scores)
    flipped = mmi_scores(net, scores, tokens, 50.0, 1.0)
    assert int(flipped.argmax()) == 1 - generic
    assert (flipped - scores)[0, generic] < (flipped - scores)[0, 1 - generic]


def test_mmi_beam_search_rerank() -> None:
    """lambda 0 is plain beam; a large lambda picks replies less likely without the source."""
    net = make_model(seed=7)
    src, lengths = make_src(batch=8, seed=8)
    beam = DecodingConfig(strategy="beam", num_beams=6, max_length=8)
    plain = generate(net, src, lengths, beam)
    assert torch.equal(generate(net, src, lengths, beam.replace(mmi_lambda=0.0)), plain)
    mmi = generate(net, src, lengths, beam.replace(mmi_lambda=5.0))
    width = max(plain.size(1), mmi.size(1))

    def padded(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.size(1)), value=PAD)

    changed = (padded(plain) != padded(mmi)).any(dim=1)
    assert changed.any()

    def per_token(t: torch.Tensor) -> torch.Tensor:
        return unconditioned_logprob(net, padded(t)) / reply_lengths(padded(t), EOS)

    assert (per_token(mmi)[changed] < per_token(plain)[changed]).all()  # less generic
    one = generate(net, src[:1], lengths[:1], beam.replace(mmi_lambda=5.0))
    assert torch.equal(one[0], mmi[0, : one.size(1)])


def test_chat_serve_and_the_chatbot_share_one_default() -> None:
    """chat.py, serve.py and Chatbot (web, Python API) start from conf/decoding/default.yaml,
    which blocks repeated 3-grams and never says <unk>."""
    from hydra import compose, initialize_config_dir

    from dialoglab.chat.bot import decoding_config
    from dialoglab.experiment.runner import CONFIG_DIR

    default = DecodingConfig.from_any("default")
    assert default.no_repeat_ngram_size >= 2 and not default.allow_unk
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for root in ("chat", "serve"):
            cfg = compose(root, ["ckpt_path=x.ckpt"])
            assert DecodingConfig.from_any(cfg.decoding) == default, root
    assert decoding_config(None) == default
    assert decoding_config(None, temperature=0.5).temperature == 0.5


def test_hf_models_decode_beam_mmi_as_plain_beam() -> None:
    """Hugging Face's beam search has no reranking hook: beam_mmi there is beam with 10 beams."""
    mmi = to_hf_generate_kwargs(DecodingConfig.from_any("beam_mmi"))
    beam = to_hf_generate_kwargs(DecodingConfig.from_any("beam", num_beams=10))
    assert mmi == beam and mmi["num_beams"] == 10
