"""accel/fused_gru.py: nn.GRU's outputs, final states and gradients, packed or not, fp32 and
bf16, with the C++ time loops and with the Python ones; and `accel.for_training`, which swaps
gru_attn's encoder and decoder for the classes that run it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab import accel
from dialoglab.accel import fused_gru as fused_gru_module
from dialoglab.accel.fused_gru import GRULayerFunction, fused_gru, supports_fused
from dialoglab.accel.gru_attn import FusedGRUDecoder, FusedGRUEncoder
from dialoglab.models.components.gru_attn import Decoder, Encoder, GRUAttnConfig, GRUAttnSeq2Seq
from tests.helpers.run_if import run_if

B, T, I, H = 5, 7, 6, 8  # noqa: E741 (batch, time, input, hidden)


@pytest.fixture(
    params=["python", pytest.param("compiled", marks=run_if(compiled_extension=True))],
    ids=["py-loops", "cpp-loops"],
)
def loops(request, monkeypatch):
    """A test runs with the Python time loops and with the C++ ones (built on first use)."""
    if request.param == "python":
        monkeypatch.setattr(fused_gru_module, "compiled_loops", lambda: False)
    else:
        assert fused_gru_module.compiled_loops()
    return request.param


def _reference(rnn: nn.GRU, x, h0, lengths):
    if lengths is None:
        return rnn(x, h0)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, h_n = rnn(packed, h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, h_n


def _grads(outputs, h_n, g_out, g_h, inputs):
    loss = (outputs * g_out).sum() + (h_n * g_h).sum()
    return torch.autograd.grad(loss, inputs)


def _assert_matches_nn_gru(rnn, x, h0, lengths, tol, grad_tol):
    """fused_gru's outputs, final states and gradients (inputs, h0 when given, every weight)
    equal nn.GRU's within tol = (rtol, atol) and grad_tol; returns fused_gru's outputs."""
    ref_out, ref_h = _reference(rnn, x, h0, lengths)
    out, h_n = fused_gru(rnn, x, h0, lengths)
    torch.testing.assert_close(out, ref_out, rtol=tol[0], atol=tol[1])
    torch.testing.assert_close(h_n, ref_h, rtol=tol[0], atol=tol[1])
    g_out, g_h = torch.randn_like(out), torch.randn_like(h_n)
    named = [("x", x), *([("h0", h0)] if h0 is not None else []), *rnn.named_parameters()]
    inputs = [tensor for _, tensor in named]
    expected = _grads(ref_out, ref_h, g_out, g_h, inputs)
    got = _grads(out, h_n, g_out, g_h, inputs)
    for (name, _), a, b in zip(named, got, expected, strict=True):
        torch.testing.assert_close(
            a, b, rtol=grad_tol[0], atol=grad_tol[1], msg=f"gradient of {name}"
        )
    return out


# None: no padding; unsorted lengths; sorted lengths that all stop before T (idle last steps)
LENGTHS = {"none": None, "unsorted": [T, 1, 4, T - 1, 2], "short": [T - 2, T - 2, 3, 1, 1]}


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("packed", LENGTHS)
def test_matches_nn_gru_outputs_states_and_gradients(loops, bidirectional, layers, packed):
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(B, T, I, requires_grad=True)
    h0 = torch.randn(layers * D, B, H, requires_grad=True)
    lengths = torch.tensor(LENGTHS[packed]) if LENGTHS[packed] else None
    out = _assert_matches_nn_gru(rnn, x, h0, lengths, (1e-5, 1e-6), (1e-4, 1e-5))
    if lengths is not None:  # padding outputs are exactly 0, as pad_packed_sequence leaves them
        assert all(out[b, n:].abs().max() == 0 for b, n in enumerate(lengths.tolist()) if n < T)


@pytest.mark.parametrize("hidden", [16, 100])
def test_matches_nn_gru_at_vector_widths_and_saturated_gates(loops, hidden):
    """Hidden sizes that fill whole SIMD vectors and leave a remainder, and pre-activations
    from -40 to 40 (sigmoid and tanh saturate; both tanh formulas are used). Weights up to 8x
    their usual size amplify one-ulp differences in exp/tanh through the steps: 1e-5 here."""
    torch.manual_seed(2)
    rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for weight in rnn.parameters():
            weight.mul_(torch.linspace(0.1, 8.0, weight.numel()).view_as(weight))
    x = (4 * torch.randn(3, 4, hidden)).requires_grad_()
    lengths = torch.tensor([4, 2, 3])
    _assert_matches_nn_gru(rnn, x, None, lengths, (1e-4, 1e-5), (1e-4, 1e-4))


@pytest.mark.parametrize("packed", LENGTHS)
def test_zero_initial_state_skips_work_but_not_results(loops, packed):
    """Without h0 (zeros, as the encoder runs) the first step's h W_hh^T and the state gradient
    into h0 are skipped; outputs, states and gradients still equal nn.GRU's."""
    torch.manual_seed(1)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    lengths = torch.tensor(LENGTHS[packed]) if LENGTHS[packed] else None
    _assert_matches_nn_gru(rnn, x, None, lengths, (1e-5, 1e-6), (1e-4, 1e-5))


def test_gradcheck_in_double_precision_math(loops):
    """The hand-derived backward is the derivative of the forward (finite differences)."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    w_ih = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    b_ih = torch.randn(12, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(12, dtype=torch.float64, requires_grad=True)

    def full(*args):  # no padding
        return GRULayerFunction.apply(*args, [2, 2, 2], torch.float64)

    def packed(*args):  # row 1 stops after step 0, row 0 after step 1
        return GRULayerFunction.apply(*args, [2, 1, 0], torch.float64)

    def from_zeros(*args):  # h0 = 0: the first step's product and dh0 are skipped
        x, _, *weights = args
        return GRULayerFunction.apply(x, torch.zeros_like(h0), *weights, [2, 1, 1],
                                      torch.float64, True)  # fmt: skip

    inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
    assert torch.autograd.gradcheck(full, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(packed, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(from_zeros, inputs, eps=1e-6, atol=1e-5)


def test_bf16_autocast_runs_in_bf16_and_stays_close_to_fp32(loops):
    """Under CPU autocast the whole layer (matmuls, gates, state) runs in bf16; outputs and
    gradients stay close to fp32, and the weight gradients come back in fp32."""
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I)
    lengths = torch.tensor([T, T - 2, 1, T, 3])  # B = 5
    ref_out, ref_h = fused_gru(rnn, x, lengths=lengths)
    ref_out.square().sum().backward()
    ref_grads = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = fused_gru(rnn, x, lengths=lengths)
        out.float().square().sum().backward()
    assert out.dtype == h_n.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_out, rtol=0.05, atol=0.03)
    torch.testing.assert_close(h_n.float(), ref_h, rtol=0.05, atol=0.03)
    for p, ref in zip(rnn.parameters(), ref_grads, strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert (p.grad - ref).norm() <= 0.05 * ref.norm()


def test_dropout_between_layers_only_in_training(loops):
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, dropout=0.5)
    x = torch.randn(B, T, I)
    rnn.eval()
    torch.testing.assert_close(fused_gru(rnn, x)[0], rnn(x)[0], rtol=1e-5, atol=1e-6)
    rnn.train()
    assert not torch.allclose(fused_gru(rnn, x)[0], fused_gru(rnn, x)[0])
    # the same draws as nn.GRU's F.dropout between layers: equal outputs from the same seed
    torch.manual_seed(5)
    ours = fused_gru(rnn, x)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(ours, rnn(x)[0], rtol=1e-5, atol=1e-6)


def test_supports_only_plain_fp32_cpu_gru():
    x = torch.randn(1, 2, I)
    assert supports_fused(nn.GRU(I, H, batch_first=True), x)
    assert not supports_fused(nn.LSTM(I, H, batch_first=True), x)
    assert not supports_fused(nn.GRU(I, H, batch_first=True).to(torch.bfloat16), x)
    assert not supports_fused(nn.GRU(I, H), x)  # time-major
    assert not supports_fused(nn.GRU(I, H, batch_first=True, bias=False), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights, bf16 compute
        assert supports_fused(nn.GRU(I, H, batch_first=True), x)


@run_if(compiled_extension=True)
def test_rows_split_over_threads_give_the_same_results():
    """With more rows than the C++ gate passes' grain (8), a step's rows are split over torch's
    threads; outputs, states and every gradient are bit for bit those of one thread (fp32 and
    bf16 autocast, packed lengths), and still nn.GRU's."""
    torch.manual_seed(3)
    rows = 37
    rnn = nn.GRU(I, 24, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(rows, T, I, requires_grad=True)
    lengths = torch.randint(1, T + 1, (rows,))
    threads = torch.get_num_threads()
    try:
        for bf16 in (False, True):
            results = {}
            for n_threads in (1, 2):
                torch.set_num_threads(n_threads)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out, h_n = fused_gru(rnn, x, None, lengths)
                grads = torch.autograd.grad(
                    (out.float() * out.detach().float()).sum() + h_n.float().sum(),
                    [x, *rnn.parameters()],
                )
                results[n_threads] = (out, h_n, *grads)
            for a, b in zip(results[1], results[2], strict=True):
                assert torch.equal(a, b)
        _assert_matches_nn_gru(rnn, x, None, lengths, (1e-5, 1e-6), (1e-4, 1e-5))
    finally:
        torch.set_num_threads(threads)


# -- accel.for_training: gru_attn's encoder and decoder through fused_gru ------------------------


def make_net(rnn_type: str = "gru", layers: int = 2, dropout: float = 0.0) -> GRUAttnSeq2Seq:
    torch.manual_seed(0)
    config = GRUAttnConfig(
        vocab_size=30,
        hidden_size=16,
        encoder_n_layers=layers,
        decoder_n_layers=layers,
        dropout=dropout,
        rnn_type=rnn_type,
    )
    return GRUAttnSeq2Seq(config)


def make_seq2seq_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 30, (4, 6), generator=g)
    lengths = torch.tensor([6, 2, 5, 1])
    target = torch.randint(3, 30, (4, 5), generator=g)
    target[1, 3:] = 0  # padding in the replies
    target[3, 1:] = 0
    decoder_input = torch.cat([torch.ones(4, 1, dtype=torch.long), target[:, :-1]], 1)
    return {"src": src, "src_lengths": lengths, "decoder_input": decoder_input, "target": target}


def nll(net: GRUAttnSeq2Seq, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return net.nll(batch["src"], batch["src_lengths"], batch["decoder_input"], batch["target"])


def test_for_training_keeps_the_state_dict_and_none_swaps_nothing():
    """The swap changes classes only: the same parameter objects, state_dict keys and values;
    accel.NONE (accel=none) leaves the reference classes in place."""
    net = make_net()
    before = {key: value.clone() for key, value in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    assert accel.for_training(net, accel.NONE) is net
    assert type(net.encoder) is Encoder and type(net.decoder) is Decoder
    assert accel.for_training(net, {"fused_gru": False}) is net
    assert type(net.encoder) is Encoder and type(net.decoder) is Decoder
    accel.for_training(net, {})
    assert type(net.encoder) is FusedGRUEncoder and type(net.decoder) is FusedGRUDecoder
    after = net.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert [id(p) for p in net.parameters()] == params
    accel.for_training(net, {})  # twice: still the same classes
    assert type(net.encoder) is FusedGRUEncoder and type(net.decoder) is FusedGRUDecoder
    # a state_dict saved from the swapped net loads into a plain one, and back
    plain = make_net()
    plain.load_state_dict(net.state_dict())
    net.load_state_dict(plain.state_dict())


def test_settings_of_removed_paths_are_accepted_and_ignored():
    """A run saved before a path was removed still composes: its retired key is ignored."""
    assert accel.AccelConfig.from_any({"keep_freed_memory": True, "fused_gru": False}) == (
        accel.AccelConfig(fused_gru=False)
    )


@pytest.mark.parametrize("bad", [{"fused": True}, {"fused_gru": "yes"}, "auto"])
def test_unknown_accel_settings_name_the_key(bad):
    from dialoglab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"accel"):
        accel.for_training(make_net(), bad)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_model_loss_and_gradients_equal_with_and_without_for_training(loops, rnn_type, layers):
    """The whole seq2seq (packed encoder, teacher-forced decoder skipping reply padding, loss on
    real tokens only) gives the same loss and gradients with the fused path swapped in (an LSTM
    keeps PyTorch's layers: the swap falls back)."""
    reference = make_net(rnn_type, layers)
    fast = accel.for_training(copy.deepcopy(reference))
    assert type(fast.encoder) is FusedGRUEncoder
    batch = make_seq2seq_batch()
    results = []
    for net in (reference, fast):
        loss = nll(net, batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_b, grads_a, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # ... and the logits of a teacher-forced forward and of one-token steps agree too
    with torch.no_grad():
        args = batch["src"], batch["src_lengths"], batch["decoder_input"]
        torch.testing.assert_close(fast(*args), reference(*args), rtol=1e-5, atol=1e-5)
        memory, state, mask = fast.encode(batch["src"], batch["src_lengths"])
        ref_memory, ref_state, _ = reference.encode(batch["src"], batch["src_lengths"])
        torch.testing.assert_close(memory, ref_memory, rtol=1e-5, atol=1e-6)
        step, _, _ = fast.decoder(batch["decoder_input"][:, :1], state, memory, mask)
        ref_step, _, _ = reference.decoder(batch["decoder_input"][:, :1], ref_state, memory, mask)
        torch.testing.assert_close(step, ref_step, rtol=1e-5, atol=1e-5)


def test_model_under_bf16_autocast_stays_close_to_the_reference(loops):
    reference = make_net()
    fast = accel.for_training(copy.deepcopy(reference))
    batch = make_seq2seq_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = nll(fast, batch), nll(reference, batch)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0.02, atol=0.05)
