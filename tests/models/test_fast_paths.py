"""The speed-ups keep the numbers: vectorised collate, memoised encoding, bf16, tutorial baseline."""

from __future__ import annotations

import copy
import gc
import random
import re
import unicodedata

import pytest
import torch

from dialoglab.data.datamodule import gc_paused
from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq
from tests.helpers.tutorial_baseline import TutorialTrainer, tutorial_batch
from tests.helpers.workloads import make_optimizer, mean_nll, our_step, synthetic_batch


def reference_collate(tok: WordTokenizer, split: EncodedPairs, indices: list[int]) -> dict:
    """The per-row loop the vectorised collate replaced."""
    src_lengths = split.source_lengths()[indices] + 1
    tgt_lengths = split.target_lengths()[indices] + 1
    B, S, T = len(indices), int(src_lengths.max()), int(tgt_lengths.max())
    src = torch.full((B, S), tok.pad_id, dtype=torch.long)
    decoder_input = torch.full((B, T), tok.pad_id, dtype=torch.long)
    target = torch.full((B, T), tok.pad_id, dtype=torch.long)
    for row, i in enumerate(indices):
        s, t = split.source(i), split.target(i)
        src[row, : len(s)] = s
        src[row, len(s)] = tok.eos_id
        decoder_input[row, 0] = tok.sos_id
        decoder_input[row, 1 : len(t) + 1] = t
        target[row, : len(t)] = t
        target[row, len(t)] = tok.eos_id
    return {
        "src": src,
        "src_lengths": src_lengths,
        "decoder_input": decoder_input,
        "target": target,
        "n_words": split.n_words[indices].long(),
        "index": torch.tensor(indices, dtype=torch.long),
    }


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_collate_equals_the_loop(seed: int) -> None:
    rng = random.Random(seed)
    n = 50
    sources = [[rng.randint(5, 99) for _ in range(rng.randint(0, 12))] for _ in range(n)]
    targets = [[rng.randint(5, 99) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    split = EncodedPairs.from_lists(sources, targets, [rng.randint(1, 9) for _ in range(n)])
    tok = WordTokenizer()
    for size in (1, 7, 32):
        indices = rng.sample(range(n), size)
        got, want = tok.collate(split, indices), reference_collate(tok, split, indices)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            assert torch.equal(got[key], want[key]), key


def test_collate_with_only_empty_sources() -> None:
    split = EncodedPairs.from_lists([[], []], [[7], [8, 9]], [1, 2])
    tok = WordTokenizer()
    got, want = tok.collate(split, [1, 0]), reference_collate(tok, split, [1, 0])
    for key in want:
        assert torch.equal(got[key], want[key]), key


def reference_normalize(tok: WordTokenizer, text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("`", "'")
    return text.lower()


TEXTS = [
    "Hello, World! I'm FINE.",
    "Caf\u00e9 cr\u00e8me \u2014 na\u00efve r\u00e9sum\u00e9?",
    "don`t say \u2019yes\u2019 ... ok",
    "\u0130stanbul \u03a3\u039f\u03a6\u039f\u03a3 ma\u00dfe",
    "2nd time's the charm, isn't it?",
    "",
    "???",
    "x_y under_score and <unk> <eos>",
]


@pytest.mark.parametrize("text", TEXTS)
def test_ascii_fast_path_normalizes_alike(text: str) -> None:
    tok = WordTokenizer()
    assert tok.normalize(text) == reference_normalize(tok, text)


@pytest.mark.parametrize("policy", ["filter", "truncate"])
def test_encode_examples_word_counts_match_decoding(policy: str) -> None:
    rng = random.Random(0)
    pool = [*TEXTS[:5], "well . well , well !", "rare1 rare2 rare3 common common"]
    examples = [
        Example(tuple(rng.sample(pool, 2)), rng.choice(pool), dialogue_id=str(k)) for k in range(60)
    ]
    tok = WordTokenizer(min_count=2).fit_examples(examples)  # rare words become <unk>
    encoded = tok.encode_examples(examples, max_length=6, length_policy=policy)
    for i in range(len(encoded)):
        ids = encoded.target(i).tolist()
        assert int(encoded.n_words[i]) == max(1, tok.count_words(tok.decode(ids)))
    # and the ids are those of the plain encoder
    kept = [ex for ex in examples if tok.encode(ex.response)]
    if policy == "truncate":
        assert len(encoded) == len(kept)
        for i, ex in enumerate(kept):
            assert encoded.target(i).tolist() == tok.encode(ex.response)[:5]
            want_src = tok.encode_context(ex.persona, ex.context)[-5:]
            assert encoded.source(i).tolist() == want_src


def test_word_split_unchanged_for_ascii() -> None:
    tok = WordTokenizer()
    pattern = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?,]")
    for text in TEXTS:
        assert tok.split(text) == pattern.findall(reference_normalize(tok, text))


# -- models --------------------------------------------------------------------------------------


def tiny_model(seed: int = 0, dropout: float = 0.0) -> GRUAttnSeq2Seq:
    torch.manual_seed(seed)
    config = GRUAttnConfig(
        vocab_size=60, hidden_size=24, encoder_n_layers=2, decoder_n_layers=2, dropout=dropout
    )
    return GRUAttnSeq2Seq(config)


def test_bf16_autocast_training_tracks_fp32(one_thread) -> None:
    """A few steps under bf16 autocast end at (nearly) the fp32 loss on the same batches."""
    batches = []
    for k in range(4):
        b = synthetic_batch(60, 16, 6, 6, seed=k)
        b["target"] = b["src"].flip(1)  # learnable: reverse the source
        b["decoder_input"] = torch.cat([b["decoder_input"][:, :1], b["target"][:, :-1]], 1)
        batches.append(b)
    losses = {}
    for bf16 in (False, True):
        net = tiny_model().train()
        optimizer = make_optimizer(net, lr=3e-3)
        for _ in range(8):
            for b in batches:
                our_step(net, optimizer, b, bf16=bf16)
        losses[bf16] = mean_nll(net, batches)
    start = mean_nll(tiny_model(), batches)
    assert losses[False] < start - 0.1  # it learned something
    assert losses[True] == pytest.approx(losses[False], rel=0.02)


def test_tutorial_baseline_computes_our_loss() -> None:
    net = tiny_model(dropout=0.1)
    lengths = [6, 2, 5, 1]
    batch = synthetic_batch(60, 4, 6, 5, seed=3)
    for row, n in enumerate(lengths):
        batch["src"][row, n:] = 0
    batch["src_lengths"] = torch.tensor(lengths)
    batch["target"][1, 3:] = 0  # a shorter reply
    batch["decoder_input"][1, 4:] = 0
    ours = mean_nll(net, [batch])
    tutorial = TutorialTrainer(copy.deepcopy(net)).train(False)
    assert tutorial.step(tutorial_batch(batch), update=False) == pytest.approx(ours, rel=1e-5)


def test_tutorial_baseline_trains_the_shared_weights() -> None:
    net = tiny_model()
    before = net.decoder.W_o.weight.detach().clone()
    trainer = TutorialTrainer(net)
    trainer.step(tutorial_batch(synthetic_batch(60, 4, 5, 5)))
    assert not torch.equal(before, net.decoder.W_o.weight)  # the twin GRUs share parameters too
    assert trainer.encoder.gru.weight_hh_l0 is net.encoder.rnn.weight_hh_l0


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])
def test_fused_adam_gradients_are_clipped_without_a_grad_scaler(max_norm: float) -> None:
    """DialogueModule.configure_gradient_clipping clips itself for fused optimizers (bf16-mixed
    has no scaler; Lightning would refuse): to max_norm when above it, untouched below."""
    import functools
    from types import SimpleNamespace

    from dialoglab.models.seq2seq import Seq2SeqModule

    tok = WordTokenizer(min_count=1).fit(["hello there", "how are you", "fine thanks"])
    torch.manual_seed(0)
    net = functools.partial(GRUAttnSeq2Seq, hidden_size=16)
    module = Seq2SeqModule(tok, net, functools.partial(torch.optim.Adam, fused=True))
    batch = synthetic_batch(len(tok), 3, 4, 4)
    module.nll(batch).backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    optimizer = torch.optim.Adam(module.parameters(), fused=True)
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None))
    module.configure_gradient_clipping(optimizer, max_norm, "norm")
    after = [p.grad for p in module.parameters() if p.grad is not None]
    torch.testing.assert_close(
        torch.nn.utils.get_total_norm(after), min(norm, torch.tensor(max_norm)), rtol=1e-4, atol=0
    )
    if max_norm > norm:
        assert all(torch.equal(a, b) for a, b in zip(after, grads, strict=True))
