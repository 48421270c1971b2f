// The GRU gate passes shared by the extension's sources (fused_gru_loops.cpp, int8_decoding.cpp):
// each step's gate maths for one row in one vectorised pass, fp32 and bf16 storage. Private to
// the extension; every source gets its own copy (anonymous namespace).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// (target_clones needs the C library's ifunc support: glibc on x86-64 Linux.)
#if defined(__x86_64__) && defined(__GLIBC__) && (defined(__GNUC__) || defined(__clang__))
#define DIALOGLAB_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DIALOGLAB_CLONES
#endif

// Inlined into every clone, whatever the inliner would decide: a call inside the loop would
// keep it from being vectorised.
#if defined(__GNUC__) || defined(__clang__)
#define DIALOGLAB_INLINE inline __attribute__((always_inline))
#else
#define DIALOGLAB_INLINE inline
#endif

namespace {

using at::Tensor;

// exp(x) for x in float range: 2^k * exp(r), r = x - k ln 2 (Cody-Waite), Cephes' polynomial.
DIALOGLAB_INLINE float exp_approx(float x) {
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

DIALOGLAB_INLINE float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh: Cephes' odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above.
DIALOGLAB_INLINE float tanh_approx(float x) {
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
DIALOGLAB_INLINE float load(float v) { return v; }
DIALOGLAB_INLINE float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
DIALOGLAB_INLINE void store(float& out, float v) { out = v; }
DIALOGLAB_INLINE void store(uint16_t& out, float v) {
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
DIALOGLAB_INLINE void gates_forward_row(int64_t H, const S* __restrict gi, const S* __restrict p,
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
DIALOGLAB_INLINE void grads_backward_row(int64_t H, const S* __restrict dh,
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
DIALOGLAB_INLINE void state_grad_row(int64_t H, const S* __restrict product,
                                     const S* __restrict d_h, const S* __restrict z,
                                     S* __restrict dh) {
  for (int64_t j = 0; j < H; ++j) store(dh[j], load(product[j]) + load(d_h[j]) * load(z[j]));
}

#define DIALOGLAB_ROW_PASSES(S, suffix)                                                        \
  DIALOGLAB_CLONES void gates_forward(int64_t H, const S* gi, const S* p, const S* h, S* gh,  \
                                      S* rz, S* n, S* out) {                                 \
    gates_forward_row<S>(H, gi, p, h, gh, rz, n, out);                                       \
  }                                                                                            \
  DIALOGLAB_CLONES void grads_backward(int64_t H, const S* dh, const S* d_out,                \
                                       const S* h_prev, const S* rz, const S* n, const S* gh, \
                                       S* d_h, S* d_gh, S* d_gi) {                            \
    grads_backward_row<S>(H, dh, d_out, h_prev, rz, n, gh, d_h, d_gh, d_gi);                  \
  }                                                                                            \
  DIALOGLAB_CLONES void state_grad(int64_t H, const S* product, const S* d_h, const S* z,     \
                                   S* dh) {                                                   \
    state_grad_row<S>(H, product, d_h, z, dh);                                               \
  }
DIALOGLAB_ROW_PASSES(float, f32)
DIALOGLAB_ROW_PASSES(uint16_t, bf16)
#undef DIALOGLAB_ROW_PASSES

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

}  // namespace
