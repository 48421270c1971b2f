"""fused_gru: nn.GRU's outputs, final states and gradients, packed or not, fp32 and bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dialoglab.models.components import fused_gru as fused_gru_module
from dialoglab.models.components.fused_gru import fused_gru, supports_fused
from dialoglab.models.components.gru_attn import GRUAttnConfig, GRUAttnSeq2Seq
from dialoglab.models.seq2seq import reply_nll

B, T, I, H = 5, 7, 6, 8  # noqa: E741 (batch, time, input, hidden)


@pytest.fixture(
    autouse=True,
    params=["python", "compiled", "compiled-aten-gates"],
    ids=["py-loops", "cpp-loops", "cpp-loops-aten-gates"],
)
def loops(request, monkeypatch):
    """Every test here runs with the Python time loops and with the C++ ones (built on first
    use; skipped only where this machine cannot build them), whose fp32 gate maths runs in
    their own vectorised passes or, with FUSED_GATES off, as ATen ops."""
    if request.param == "python":
        monkeypatch.setattr(fused_gru_module, "_loops_state", {"loaded": False})
    elif not fused_gru_module.compiled_loops():
        pytest.skip("the C++ loops cannot be built here (no compiler)")
    monkeypatch.setattr(fused_gru_module, "FUSED_GATES", request.param == "compiled")
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
def test_matches_nn_gru_outputs_states_and_gradients(bidirectional, layers, packed):
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
def test_matches_nn_gru_at_vector_widths_and_saturated_gates(hidden):
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
def test_zero_initial_state_skips_work_but_not_results(packed):
    """Without h0 (zeros, as the encoder runs) the first step's h W_hh^T and the state gradient
    into h0 are skipped; outputs, states and gradients still equal nn.GRU's."""
    torch.manual_seed(1)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    lengths = torch.tensor(LENGTHS[packed]) if LENGTHS[packed] else None
    _assert_matches_nn_gru(rnn, x, None, lengths, (1e-5, 1e-6), (1e-4, 1e-5))


def test_gradcheck_in_double_precision_math():
    """The hand-derived backward is the derivative of the forward (finite differences)."""
    from dialoglab.models.components.fused_gru import GRULayerFunction

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


def test_bf16_autocast_runs_in_bf16_and_stays_close_to_fp32():
    """Under CPU autocast the whole layer (matmuls, gates, state) runs in bf16; outputs and
    gradients stay close to fp32."""
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


@pytest.mark.parametrize("precision", ["bf16", "fp32-onednn"])
def test_row_buckets_leave_results_unchanged(precision, monkeypatch):
    """bf16 products over the packed tokens (and fp32 ones where oneDNN runs them) run on rows
    rounded up to a multiple of row_buckets.ROWS (zeros): the same outputs and gradients as with
    the switch off."""
    from dialoglab.models.components import onednn, row_buckets

    bf16 = precision == "bf16"
    if not bf16:
        if not onednn.AVAILABLE:
            pytest.skip("this torch build has no oneDNN fp32 linear")
        monkeypatch.setattr(onednn, "ENABLED", True)

    rows_seen = []
    real_addmm = onednn.addmm

    def addmm(bias, a, *args, **kwargs):
        rows_seen.append(a.size(0))
        return real_addmm(bias, a, *args, **kwargs)

    monkeypatch.setattr(onednn, "addmm", addmm)
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    lengths = torch.tensor([T, T - 2, 1, T, 3])
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(row_buckets, "ENABLED", enabled)
        rows_seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, h_n = fused_gru(rnn, x, lengths=lengths)
            grads = torch.autograd.grad(out.float().square().sum(), [x, *rnn.parameters()])
        input_rows = [r for r in rows_seen if r > B]  # the input projections, not the steps
        results.append((out.float(), h_n.float(), grads, input_rows))
    (out, h_n, grads, rows), (ref_out, ref_h, ref_grads, ref_rows) = results
    assert rows and all(r % row_buckets.ROWS == 0 for r in rows)
    assert ref_rows and all(r == sum(lengths.tolist()) for r in ref_rows)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h_n, ref_h)
    tolerance = (0.02, 1e-3) if bf16 else (1e-5, 1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=tolerance[0], atol=tolerance[1])


def test_row_buckets_pad_with_zero_rows():
    from dialoglab.models.components import row_buckets

    t = torch.randn(70, 3, 2)
    p = row_buckets.padded(t)
    assert p.shape == (128, 3, 2) and torch.equal(p[:70], t) and not p[70:].any()
    assert row_buckets.padded(p) is p
    assert row_buckets.wanted(torch.randn(2, 2, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert row_buckets.wanted(torch.randn(2, 2))


@pytest.mark.parametrize("onednn_fp32", [True, False], ids=["onednn", "mkl"])
def test_fp32_rows_rounded_where_onednn_runs_them(onednn_fp32, monkeypatch):
    """fp32 products get rounded rows only where they go to oneDNN (a kernel per shape), not on
    MKL; float64 never."""
    from dialoglab.models.components import onednn, row_buckets

    monkeypatch.setattr(onednn, "ENABLED", onednn_fp32)
    assert row_buckets.wanted(torch.randn(2, 2)) is onednn_fp32
    assert not row_buckets.wanted(torch.randn(2, 2, dtype=torch.float64))
    monkeypatch.setattr(row_buckets, "ENABLED", False)
    assert not row_buckets.wanted(torch.randn(2, 2))


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, dropout=0.5)
    x = torch.randn(B, T, I)
    rnn.eval()
    torch.testing.assert_close(fused_gru(rnn, x)[0], rnn(x)[0], rtol=1e-5, atol=1e-6)
    rnn.train()
    assert not torch.allclose(fused_gru(rnn, x)[0], fused_gru(rnn, x)[0])


def test_supports_only_plain_fp32_cpu_gru():
    x = torch.randn(1, 2, I)
    assert supports_fused(nn.GRU(I, H, batch_first=True), x)
    assert not supports_fused(nn.LSTM(I, H, batch_first=True), x)
    assert not supports_fused(nn.GRU(I, H, batch_first=True).to(torch.bfloat16), x)
    assert not supports_fused(nn.GRU(I, H), x)  # time-major
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights, bf16 compute
        assert supports_fused(nn.GRU(I, H, batch_first=True), x)


def test_model_loss_and_gradients_equal_with_and_without_the_fused_path(monkeypatch):
    """The whole seq2seq (packed encoder, teacher-forced decoder, loss on real tokens only)."""
    torch.manual_seed(0)
    net = GRUAttnSeq2Seq(
        GRUAttnConfig(vocab_size=30, hidden_size=16, encoder_n_layers=2, decoder_n_layers=2)
    ).eval()
    src = torch.randint(3, 30, (4, 6))
    lengths = torch.tensor([6, 2, 5, 1])
    target = torch.randint(3, 30, (4, 5))
    target[1, 3:] = 0  # padding in the replies
    target[3, 1:] = 0
    batch = {
        "src": src,
        "src_lengths": lengths,
        "decoder_input": torch.cat([torch.ones(4, 1, dtype=torch.long), target[:, :-1]], 1),
        "target": target,
    }
    results = []
    for fused in (False, True):
        net.fused_rnn = fused
        net.zero_grad()
        loss = reply_nll(net, batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_b, grads_a, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # ... and the loss equals cross-entropy over all positions with padding ignored
    logits = net(batch["src"], lengths, batch["decoder_input"])  # (B, T, V)
    full = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), target.flatten(), ignore_index=0, reduction="sum"
    )
    torch.testing.assert_close(loss_a, full.detach(), rtol=1e-5, atol=1e-5)
    # bf16 autocast with the packed rows rounded up (row_buckets) gives the same loss
    from dialoglab.models.components import row_buckets

    losses = []
    for enabled in (True, False):
        monkeypatch.setattr(row_buckets, "ENABLED", enabled)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(reply_nll(net, batch).detach())
    torch.testing.assert_close(losses[0], losses[1])


def test_compiled_loops_can_be_turned_off(monkeypatch, loops):
    monkeypatch.setattr(fused_gru_module, "_loops_state", {})
    monkeypatch.setenv("DIALOGLAB_COMPILED_GRU", "0")
    assert fused_gru_module.compiled_loops() is False
    assert fused_gru_module._loops_state == {"loaded": False}  # tried once, not again


def test_rows_split_over_threads_give_the_same_results(loops):
    """With more rows than the C++ gate passes' grain (8), a step's rows are split over torch's
    threads; outputs, states and every gradient are bit-for-bit those of the one-thread pass,
    and still nn.GRU's (fp32 and bf16 autocast, packed lengths)."""
    if loops != "compiled":
        pytest.skip("the row split is in the C++ gate passes")
    torch.manual_seed(3)
    rows = 37
    rnn = nn.GRU(I, 24, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(rows, T, I, requires_grad=True)
    lengths = torch.randint(1, T + 1, (rows,))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for bf16 in (False, True):
            results = {}
            for parallel in (False, True):
                with fused_gru_module.parallel_rows(parallel):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        out, h_n = fused_gru(rnn, x, None, lengths)
                    grads = torch.autograd.grad(
                        (out.float() * out.detach().float()).sum() + h_n.float().sum(),
                        [x, *rnn.parameters()],
                    )
                results[parallel] = (out, h_n, *grads)
            for a, b in zip(results[False], results[True], strict=True):
                assert torch.equal(a, b)
        _assert_matches_nn_gru(rnn, x, None, lengths, (1e-5, 1e-6), (1e-4, 1e-5))
    finally:
        torch.set_num_threads(threads)


def test_parallel_rows_switch_reports_the_previous_setting(loops):
    if loops == "python":
        assert fused_gru_module.set_parallel_rows(True) is False  # no C++ loops: nothing split
        return
    assert fused_gru_module.set_parallel_rows(False) is True  # on by default
    assert fused_gru_module.set_parallel_rows(True) is False


@pytest.mark.parametrize(
    "use_onednn, onednn_weight_grads",
    [(True, True), (True, False), (False, False)],
    ids=["onednn-dW", "onednn-mkl-dW", "mkl"],
)
def test_weight_gradients_match_through_either_library(
    use_onednn, onednn_weight_grads, monkeypatch
):
    """With oneDNN on (whatever this CPU's default), every weight gradient is oneDNN's (the
    upper layer's 2H-wide input included); with its weight gradients off, all take MKL's; with
    oneDNN off, every product is MKL's."""
    from dialoglab.models.components import onednn

    if use_onednn and not onednn.AVAILABLE:
        pytest.skip("this torch build has no oneDNN fp32 linear")
    monkeypatch.setattr(onednn, "ENABLED", use_onednn)
    monkeypatch.setattr(onednn, "WEIGHT_GRADS", onednn_weight_grads)
    torch.manual_seed(0)
    rnn = nn.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    lengths = torch.tensor(LENGTHS["unsorted"])
    _assert_matches_nn_gru(rnn, x, None, lengths, (1e-5, 1e-5), (1e-4, 1e-5))
