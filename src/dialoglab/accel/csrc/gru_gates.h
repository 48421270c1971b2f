// The GRU gate passes of fused_gru_loops.cpp (each step's gate maths for one row in one
// vectorised pass, fp32 and bf16 storage, the rows split over threads) and the forward time
// loop around them (`forward_steps`). Private to the extension (anonymous namespace).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>

// (target_clones needs the C library's ifunc support: glibc on x86-64 Linux.)
#if defined(__x86_64__) && defined(__GLIBC__) && (defined(__GNUC__) || defined(__clang__))
#define GRU_GATES_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GRU_GATES_CLONES
#endif

// Inlined into every clone, whatever the inliner would decide: a call inside the loop would
// keep it from being vectorised.
#if defined(__GNUC__) || defined(__clang__)
#define GRU_GATES_INLINE inline __attribute__((always_inline))
#else
#define GRU_GATES_INLINE inline
#endif


namespace {

using at::Tensor;

// exp(x) for x in float range: 2^k * exp(r), r = x - k ln 2 (Cody-Waite), Cephes' polynomial.
GRU_GATES_INLINE float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);  // 2^k stays a normal float
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

GRU_GATES_INLINE float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh: Cephes' odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above.
GRU_GATES_INLINE float tanh_approx(float x) {
  const float a = std::fabs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : large;
}

// Storage: fp32 as float, bf16 as its raw 16 bits (the top half of a float). The passes compute
// in fp32 and round each result to bf16 once, to nearest even, as c10::BFloat16 does.
GRU_GATES_INLINE float load(float v) { return v; }
GRU_GATES_INLINE float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
GRU_GATES_INLINE void store(float& out, float v) { out = v; }
GRU_GATES_INLINE void store(uint16_t& out, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  out = static_cast<uint16_t>(v != v ? 0x7fc0u : rounded);  // NaN stays NaN
}

// The per-row passes take restrict-qualified pointers (one row of H, or 2H / 3H for the gate
// buffers), which is what lets the compiler vectorise them; each has an fp32 and a bf16 build.

// One step's gates for one row: gh = p (h W_hh^T + b_gh), r|z = sigmoid(gi + gh),
// n = tanh(gi_n + r * gh_n), out = n + z (h - n).
template <typename S>
GRU_GATES_INLINE void gates_forward_row(int64_t H, const S* __restrict gi, const S* __restrict p,
                                        const S* __restrict h, S* __restrict gh,
                                        S* __restrict rz, S* __restrict n, S* __restrict out) {
  for (int64_t j = 0; j < 3 * H; ++j) gh[j] = p[j];
  for (int64_t j = 0; j < H; ++j) {
    const float r = sigmoid_approx(load(gi[j]) + load(p[j]));
    const float z = sigmoid_approx(load(gi[H + j]) + load(p[H + j]));
    const float c = tanh_approx(load(gi[2 * H + j]) + r * load(p[2 * H + j]));
    const float hj = load(h[j]);
    store(rz[j], r);
    store(rz[H + j], z);
    store(n[j], c);
    store(out[j], c + z * (hj - c));
  }
}

// One backward step's gradients for one row: g = dh + d_out (dL/dh at the step's output), then
// dL/d(gh) and dL/d(gi): equal r and z parts, n parts g c_n r and g c_n with
// c_n = (1 - z)(1 - n^2); h_prev: the state before the step.
template <typename S>
GRU_GATES_INLINE void grads_backward_row(int64_t H, const S* __restrict dh,
                                         const S* __restrict d_out, const S* __restrict h_prev,
                                         const S* __restrict rz, const S* __restrict n,
                                         const S* __restrict gh, S* __restrict d_h,
                                         S* __restrict d_gh, S* __restrict d_gi) {
  for (int64_t j = 0; j < H; ++j) {
    const float g = load(dh[j]) + load(d_out[j]);
    const float r = load(rz[j]), z = load(rz[H + j]), c = load(n[j]);
    const float d_n = g * ((1.0f - z) * (1.0f - c * c));
    const float d_r = d_n * load(gh[2 * H + j]) * (r * (1.0f - r));
    const float d_z = g * ((load(h_prev[j]) - c) * z) * (1.0f - z);
    store(d_h[j], g);
    store(d_gh[j], d_r);
    store(d_gi[j], d_r);
    store(d_gh[H + j], d_z);
    store(d_gi[H + j], d_z);
    store(d_gh[2 * H + j], d_n * r);
    store(d_gi[2 * H + j], d_n);
  }
}

// dh = product + d_h * z for one row: the state gradient into the step before.
template <typename S>
GRU_GATES_INLINE void state_grad_row(int64_t H, const S* __restrict product,
                                     const S* __restrict d_h, const S* __restrict z,
                                     S* __restrict dh) {
  for (int64_t j = 0; j < H; ++j) store(dh[j], load(product[j]) + load(d_h[j]) * load(z[j]));
}

#define GRU_GATES_ROW_PASSES(S, suffix)                                                        \
  GRU_GATES_CLONES void gates_forward(int64_t H, const S* gi, const S* p, const S* h, S* gh,  \
                                      S* rz, S* n, S* out) {                                 \
    gates_forward_row<S>(H, gi, p, h, gh, rz, n, out);                                       \
  }                                                                                            \
  GRU_GATES_CLONES void grads_backward(int64_t H, const S* dh, const S* d_out,                \
                                       const S* h_prev, const S* rz, const S* n, const S* gh, \
                                       S* d_h, S* d_gh, S* d_gi) {                            \
    grads_backward_row<S>(H, dh, d_out, h_prev, rz, n, gh, d_h, d_gh, d_gi);                  \
  }                                                                                            \
  GRU_GATES_CLONES void state_grad(int64_t H, const S* product, const S* d_h, const S* z,     \
                                   S* dh) {                                                   \
    state_grad_row<S>(H, product, d_h, z, dh);                                               \
  }
GRU_GATES_ROW_PASSES(float, f32)
GRU_GATES_ROW_PASSES(uint16_t, bf16)
#undef GRU_GATES_ROW_PASSES

// f(i) for each of a step's k rows: split over torch's intra-op threads (at::parallel_for) when
// there are more than kRowGrain rows. The extension is built with
// OpenMP on Linux and so runs on torch's own OpenMP pool (one libgomp.so.1 in the process); the
// second core would otherwise spin idle between the matmuls while one thread does the gates.
constexpr int64_t kRowGrain = 8;
template <typename F>
void for_rows(int64_t k, const F& f) {
  at::parallel_for(0, k, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// A tensor's data as the passes' storage type (float for fp32, uint16_t for bf16).
template <typename S>
S* storage(const Tensor& t) {
  return static_cast<S*>(t.data_ptr());
}

// f(uint16_t{}) for bf16 tensors, f(float{}) for fp32: a generic lambda run with the passes'
// storage type.
template <typename F>
void with_storage(bool bf16, const F& f) {
  if (bf16) {
    f(uint16_t{});
  } else {
    f(float{});
  }
}

// The forward time loop. gi (N, 3H) holds each real token's input projection (plus whatever
// part of b_hh the caller folded in); product(h_k) is h_k W_hh^T + b_gh for the k running rows,
// and b_gh alone is the product from a zero state (only read with zero_state). Returns gh
// (N, 3H) = the products per token, rz (N, 2H), n (N, H), hs (T, B, H).
template <typename Product>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_steps(const Tensor& gi, const Tensor& h0,
                                                         const Tensor& b_gh,
                                                         at::IntArrayRef active, bool zero_state,
                                                         bool fused_gates,
                                                         const Product& product_of) {
  const int64_t T = static_cast<int64_t>(active.size());
  const int64_t B = h0.size(0), H = h0.size(1), N = gi.size(0);
  Tensor gh = at::empty({N, 3 * H}, gi.options());
  Tensor rz = at::empty({N, 2 * H}, gi.options());
  Tensor n = at::empty({N, H}, gi.options());
  Tensor hs = at::empty({T, B, H}, gi.options());
  Tensor h = h0;
  int64_t offset = 0;
  // fp32 and bf16: one pass per step for the gates (h0, gi and the outputs are contiguous)
  const bool bf16 = gi.scalar_type() == at::kBFloat16;
  const bool fused = fused_gates && (bf16 || gi.scalar_type() == at::kFloat) &&
                     gi.is_contiguous() && h0.is_contiguous() &&
                     h0.scalar_type() == gi.scalar_type() &&
                     (!zero_state ||
                      (b_gh.is_contiguous() && b_gh.scalar_type() == gi.scalar_type()));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t k = active[t];
    Tensor h_next = hs.select(0, t);
    if (k < B) h_next.narrow(0, k, B - k).copy_(h.narrow(0, k, B - k));  // padding passes
    if (k > 0) {
      Tensor h_k = h.narrow(0, 0, k);
      Tensor product;  // (k, 3H): h W_hh^T + b_gh
      if (zero_state && offset == 0) {
        product = b_gh.expand({k, 3 * H});  // no row has stepped: h = 0
      } else {
        product = product_of(h_k);
      }
      if (fused) {
        product = product.stride(1) == 1 ? product : product.contiguous();
        const int64_t ld_p = product.stride(0);  // 0 for the broadcast bias row
        with_storage(bf16, [&](auto tag) {
          using S = decltype(tag);
          const S *p = storage<S>(product), *g = storage<S>(gi) + offset * 3 * H;
          const S* hp = storage<S>(h);
          S *o = storage<S>(h_next), *gh_o = storage<S>(gh) + offset * 3 * H;
          S *rz_o = storage<S>(rz) + offset * 2 * H, *n_o = storage<S>(n) + offset * H;
          for_rows(k, [&](int64_t i) {
            gates_forward(H, g + i * 3 * H, p + i * ld_p, hp + i * H, gh_o + i * 3 * H,
                          rz_o + i * 2 * H, n_o + i * H, o + i * H);
          });
        });
      } else {
        Tensor gh_s = gh.narrow(0, offset, k), gi_s = gi.narrow(0, offset, k);
        gh_s.copy_(product);
        Tensor rz_s = rz.narrow(0, offset, k);
        at::sigmoid_out(rz_s, gi_s.narrow(1, 0, 2 * H) + gh_s.narrow(1, 0, 2 * H));
        Tensor r = rz_s.narrow(1, 0, H), z = rz_s.narrow(1, H, H);
        Tensor n_s = n.narrow(0, offset, k);
        at::tanh_out(n_s, at::addcmul(gi_s.narrow(1, 2 * H, H), r, gh_s.narrow(1, 2 * H, H)));
        Tensor out = h_next.narrow(0, 0, k);
        at::lerp_out(out, n_s, h_k, z);  // n + z (h - n)
      }
      offset += k;
    }
    h = h_next;
  }
  return {gh, rz, n, hs};
}

}  // namespace
