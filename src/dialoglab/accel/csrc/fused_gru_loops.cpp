// The fused GRU's two time loops (dialoglab/accel/fused_gru.py) in C++: the same ATen ops
// in the same order as the Python loops, without Python between them. Built by `make install`
// (dialoglab/accel/extension.py); the Python loops remain the fallback.
//
// Shapes: T steps, B batch, H hidden, N real tokens (rows packed step after step; at step t
// the first active[t] rows are real). Everything is in the compute dtype.
//
// In fp32 and bf16 each step's gate maths is one pass over the rows (`gates_forward`,
// `grads_backward`) instead of five or six ATen kernels: at gru_attn's sizes (64 rows of 500)
// a step's kernels cost more in launching and re-reading memory than in arithmetic. Their exp
// and tanh are Cephes' single-precision formulas, written as branch-free code that the compiler
// vectorises; on x86-64 Linux the functions are built for AVX-512, AVX2 and baseline x86-64 and
// the CPU picks one at load time (GCC/Clang `target_clones`). A step's rows are split over
// torch's intra-op threads (gru_gates.h `for_rows`; the extension is built with OpenMP on Linux).
// The gate passes and the forward time loop (`forward_steps`) live in gru_gates.h.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "gru_gates.h"

namespace {

using at::Tensor;

// Forward loop. gi (N, 3H) holds x W_ih^T + b_ih + (b_hr, b_hz, 0); b_gh is (0, 0, b_hn).
// Returns gh (N, 3H) = h W_hh^T + b_gh per token, rz (N, 2H), n (N, H), hs (T, B, H).
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_loop(
    const Tensor& gi, const Tensor& h0, const Tensor& w_hh, const Tensor& b_gh,
    at::IntArrayRef active, bool zero_state, bool fused_gates) {
  const Tensor w_hh_t = w_hh.t();
  return forward_steps(gi, h0, b_gh, active, zero_state, fused_gates, [&](const Tensor& h_k) {
    return at::addmm(b_gh, h_k, w_hh_t);
  });
}

// Backward loop. c_gh (N, 3, H): dL/d(gh) = dh * c_gh; z (N, H). Returns d_gh (N, 3H),
// d_h (N, H) (dL/dh at each step's output) and dh (B, H), the state gradient into h0 (only
// meaningful with need_dh0: without it the first step's product is skipped).
std::tuple<Tensor, Tensor, Tensor> backward_loop(
    const Tensor& d_out, const Tensor& d_h_n, const Tensor& c_gh, const Tensor& z,
    const Tensor& w_hh, at::IntArrayRef active, bool need_dh0) {
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
    Tensor product = at::mm(d_gh_s, w_hh);
    Tensor stepped = at::addcmul(product, dh_k, z.narrow(0, offset, k));
    dh = k == B ? stepped : at::cat({stepped, dh.narrow(0, k, B - k)});
  }
  return {d_gh, d_h, dh};
}

// Adds one row's bias-gradient parts to its fp32 sums (4H): d_gi's r, z and n columns
// (3H: b_ih's gradient, whose r and z parts are also b_hh's) and d_gh's n columns (H: the rest
// of b_hh's). Read back right after the row is written, while it is in cache.
template <typename S>
GRU_GATES_INLINE void add_bias_parts_row(int64_t H, const S* __restrict d_gi,
                                         const S* __restrict d_gh, float* __restrict sums) {
  for (int64_t j = 0; j < 3 * H; ++j) sums[j] += load(d_gi[j]);
  for (int64_t j = 0; j < H; ++j) sums[3 * H + j] += load(d_gh[2 * H + j]);
}
GRU_GATES_CLONES void add_bias_parts(int64_t H, const float* d_gi, const float* d_gh,
                                     float* sums) {
  add_bias_parts_row<float>(H, d_gi, d_gh, sums);
}
GRU_GATES_CLONES void add_bias_parts(int64_t H, const uint16_t* d_gi, const uint16_t* d_gh,
                                     float* sums) {
  add_bias_parts_row<uint16_t>(H, d_gi, d_gh, sums);
}

// The backward loop in fp32 or bf16, the gate gradients computed step by step from the forward's saved
// r|z (N, 2H), n (N, H) and gh (N, 3H) and the states h0 (B, H), hs (T, B, H), so no (N, 3, H)
// coefficient buffer is built first. Returns d_gh (N, 3H), d_gi (N, 3H) (dL/d(x W_ih^T + b)),
// dh (B, H), the state gradient into h0 (only meaningful with need_dh0), and the biases'
// gradient parts (4H, fp32; `add_bias_parts_row`), summed over the rows as they are written
// (a column sum of each (N, 3H) buffer afterwards costs a pass over it, ~0.2 ms each in bf16).
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_loop_fused(
    const Tensor& d_out_in, const Tensor& d_h_n, const Tensor& h0_in, const Tensor& hs,
    const Tensor& gh, const Tensor& rz, const Tensor& n, const Tensor& w_hh,
    at::IntArrayRef active, bool need_dh0) {
  const bool bf16 = gh.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || gh.scalar_type() == at::kFloat, "backward_loop_fused: fp32 or bf16");
  for (const Tensor* t : {&d_out_in, &d_h_n, &h0_in, &hs, &rz, &n}) {
    TORCH_CHECK(t->scalar_type() == gh.scalar_type(), "backward_loop_fused: mixed dtypes");
  }
  const int64_t T = static_cast<int64_t>(active.size());
  const int64_t B = d_h_n.size(0), H = d_h_n.size(1), N = gh.size(0);
  const Tensor d_out = d_out_in.contiguous(), h0 = h0_in.contiguous();
  const Tensor states = hs.contiguous(), gh_c = gh.contiguous();
  const Tensor rz_c = rz.contiguous(), n_c = n.contiguous();
  Tensor d_gh = at::empty({N, 3 * H}, gh.options());
  Tensor d_gi = at::empty({N, 3 * H}, gh.options());
  Tensor d_h = at::empty({B, H}, gh.options());  // this step's dL/dh at its output
  Tensor dh = d_h_n.contiguous().clone();  // the state gradient, rows updated in place
  // sums of the bias parts per batch row (each step's row i is one thread's, whatever the row
  // split), added up over the rows at the end: the same result with or without the split
  Tensor sums = at::zeros({B, 4 * H}, gh.options().dtype(at::kFloat));
  float* sums_p = sums.data_ptr<float>();
  Tensor w_hh_t = w_hh.t();
  int64_t offset = N;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t k = active[t];
    if (k == 0) continue;
    offset -= k;
    const Tensor& before = t == 0 ? h0 : states.select(0, t - 1);  // the state before step t
    with_storage(bf16, [&](auto tag) {
      using S = decltype(tag);
      const S* h_prev = storage<S>(before);
      const S* dh_p = storage<S>(dh);
      const S* do_p = storage<S>(d_out.select(0, t));
      const S* rz_p = storage<S>(rz_c) + offset * 2 * H;
      const S* n_p = storage<S>(n_c) + offset * H;
      const S* gh_p = storage<S>(gh_c) + offset * 3 * H;
      S* d_h_p = storage<S>(d_h);
      S* d_gh_p = storage<S>(d_gh) + offset * 3 * H;
      S* d_gi_p = storage<S>(d_gi) + offset * 3 * H;
      for_rows(k, [&](int64_t i) {
        grads_backward(H, dh_p + i * H, do_p + i * H, h_prev + i * H, rz_p + i * 2 * H,
                       n_p + i * H, gh_p + i * 3 * H, d_h_p + i * H, d_gh_p + i * 3 * H,
                       d_gi_p + i * 3 * H);
        add_bias_parts(H, d_gi_p + i * 3 * H, d_gh_p + i * 3 * H,
                       sums_p + i * 4 * H);
      });
    });
    if (offset == 0 && !need_dh0) break;  // its product would only flow into h0
    Tensor d_gh_s = d_gh.narrow(0, offset, k);
    Tensor product = at::mm(d_gh_s, w_hh);
    product = product.contiguous();
    with_storage(bf16, [&](auto tag) {  // rows [k, B) of dh (padding) pass through unchanged
      using S = decltype(tag);
      const S* prod_p = storage<S>(product);
      const S* d_h_p = storage<S>(d_h);
      const S* z_p = storage<S>(rz_c) + offset * 2 * H + H;
      S* dh_out = storage<S>(dh);
      for_rows(k, [&](int64_t i) {
        state_grad(H, prod_p + i * H, d_h_p + i * H, z_p + i * 2 * H, dh_out + i * H);
      });
    });
  }
  return {d_gh, d_gi, dh, sums.sum(0)};
}

}  // namespace

TORCH_LIBRARY(dialoglab_gru, m) {
  m.def(
      "forward_loop(Tensor gi, Tensor h0, Tensor w_hh, Tensor b_gh, int[] active, "
      "bool zero_state, bool fused_gates) -> (Tensor, Tensor, Tensor, Tensor)",
      &forward_loop);
  m.def(
      "backward_loop(Tensor d_out, Tensor d_h_n, Tensor c_gh, Tensor z, Tensor w_hh, "
      "int[] active, bool need_dh0) -> (Tensor, Tensor, Tensor)",
      &backward_loop);
  m.def(
      "backward_loop_fused(Tensor d_out, Tensor d_h_n, Tensor h0, Tensor hs, Tensor gh, "
      "Tensor rz, Tensor n, Tensor w_hh, int[] active, bool need_dh0) "
      "-> (Tensor, Tensor, Tensor, Tensor)",
      &backward_loop_fused);
}
