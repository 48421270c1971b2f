// The fused GRU's two time loops (models/components/fused_gru.py) in C++: the same ATen ops
// in the same order as the Python loops, without Python between them. Built on first use by
// torch.utils.cpp_extension (fused_gru.compiled_loops); the Python loops remain the fallback.
//
// Shapes: T steps, B batch, H hidden, N real tokens (rows packed step after step; at step t
// the first active[t] rows are real). Everything is in the compute dtype.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace {

using at::Tensor;

// x @ w^T + b through oneDNN's fp32 matmul (torch.ops.mkldnn._linear_pointwise).
Tensor onednn_linear(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                        c10::string_view, c10::List<std::optional<at::Scalar>>,
                        std::optional<c10::string_view>)>();
  return op.call(x, w, b, "none", c10::List<std::optional<at::Scalar>>(), "");
}

// Forward loop. gi (N, 3H) holds x W_ih^T + b_ih + (b_hr, b_hz, 0); b_gh is (0, 0, b_hn).
// Returns gh (N, 3H) = h W_hh^T + b_gh per token, rz (N, 2H), n (N, H), hs (T, B, H).
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_loop(
    const Tensor& gi, const Tensor& h0, const Tensor& w_hh, const Tensor& b_gh,
    at::IntArrayRef active, bool zero_state, bool onednn) {
  const int64_t T = static_cast<int64_t>(active.size());
  const int64_t B = h0.size(0), H = h0.size(1), N = gi.size(0);
  Tensor gh = at::empty({N, 3 * H}, gi.options());
  Tensor rz = at::empty({N, 2 * H}, gi.options());
  Tensor n = at::empty({N, H}, gi.options());
  Tensor hs = at::empty({T, B, H}, gi.options());
  Tensor w_hh_t = w_hh.t();
  Tensor h = h0;
  int64_t offset = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t k = active[t];
    Tensor h_next = hs.select(0, t);
    if (k < B) h_next.narrow(0, k, B - k).copy_(h.narrow(0, k, B - k));  // padding passes
    if (k > 0) {
      Tensor gh_s = gh.narrow(0, offset, k), gi_s = gi.narrow(0, offset, k);
      Tensor h_k = h.narrow(0, 0, k);
      if (zero_state && offset == 0) {
        gh_s.copy_(b_gh.expand({k, 3 * H}));  // no row has stepped: h = 0
      } else if (onednn) {
        gh_s.copy_(onednn_linear(h_k, w_hh, b_gh));
      } else {
        at::addmm_out(gh_s, b_gh, h_k, w_hh_t);
      }
      Tensor rz_s = rz.narrow(0, offset, k);
      at::sigmoid_out(rz_s, gi_s.narrow(1, 0, 2 * H) + gh_s.narrow(1, 0, 2 * H));
      Tensor r = rz_s.narrow(1, 0, H), z = rz_s.narrow(1, H, H);
      Tensor n_s = n.narrow(0, offset, k);
      at::tanh_out(n_s, at::addcmul(gi_s.narrow(1, 2 * H, H), r, gh_s.narrow(1, 2 * H, H)));
      Tensor out = h_next.narrow(0, 0, k);
      at::lerp_out(out, n_s, h_k, z);  // n + z (h - n)
      offset += k;
    }
    h = h_next;
  }
  return {gh, rz, n, hs};
}

// Backward loop. c_gh (N, 3, H): dL/d(gh) = dh * c_gh; z (N, H). Returns d_gh (N, 3H),
// d_h (N, H) (dL/dh at each step's output) and dh (B, H), the state gradient into h0 (only
// meaningful with need_dh0: without it the first step's product is skipped).
std::tuple<Tensor, Tensor, Tensor> backward_loop(
    const Tensor& d_out, const Tensor& d_h_n, const Tensor& c_gh, const Tensor& z,
    const Tensor& w_hh, at::IntArrayRef active, bool need_dh0, bool onednn) {
  const int64_t T = static_cast<int64_t>(active.size());
  const int64_t B = d_h_n.size(0), H = d_h_n.size(1), N = c_gh.size(0);
  Tensor d_gh = at::empty({N, 3 * H}, c_gh.options());
  Tensor d_h = at::empty({N, H}, c_gh.options());
  Tensor dh = d_h_n.clone();
  Tensor w_hh_t = w_hh.t();
  int64_t offset = N;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t k = active[t];
    if (k == 0) continue;
    offset -= k;
    Tensor dh_k = d_h.narrow(0, offset, k);
    at::add_out(dh_k, dh.narrow(0, 0, k), d_out.select(0, t).narrow(0, 0, k));
    Tensor d_gh_s = d_gh.narrow(0, offset, k);
    Tensor d_gh_view = d_gh_s.view({k, 3, H});
    at::mul_out(d_gh_view, dh_k.unsqueeze(1), c_gh.narrow(0, offset, k));
    if (offset == 0 && !need_dh0) break;  // its product would only flow into h0
    Tensor product = onednn ? onednn_linear(d_gh_s, w_hh_t, std::nullopt) : at::mm(d_gh_s, w_hh);
    Tensor stepped = at::addcmul(product, dh_k, z.narrow(0, offset, k));
    dh = k == B ? stepped : at::cat({stepped, dh.narrow(0, k, B - k)});
  }
  return {d_gh, d_h, dh};
}

}  // namespace

TORCH_LIBRARY(dialoglab_gru, m) {
  m.def(
      "forward_loop(Tensor gi, Tensor h0, Tensor w_hh, Tensor b_gh, int[] active, "
      "bool zero_state, bool onednn) -> (Tensor, Tensor, Tensor, Tensor)",
      &forward_loop);
  m.def(
      "backward_loop(Tensor d_out, Tensor d_h_n, Tensor c_gh, Tensor z, Tensor w_hh, "
      "int[] active, bool need_dh0, bool onednn) -> (Tensor, Tensor, Tensor)",
      &backward_loop);
}
