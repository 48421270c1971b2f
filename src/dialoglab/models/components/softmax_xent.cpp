// The cross-entropy pass of models/components/linear_cross_entropy.py in C++: per row of the
// logits, the row's loss and, over the row itself, dL/dlogits = softmax - target distribution,
// in three sweeps of one row (max and sum; exp and its sum; the gradient) while it sits in
// cache (the exps kept in a scratch row of this thread's), where ATen's log_softmax, exp and
// scatter each sweep the whole (N, V) buffer.
// fp32 or bf16 logits (computed in fp32, the gradient rounded to bf16 once). Built into the
// fused GRU's extension (fused_gru.compiled_loops); linear_cross_entropy falls back to ATen ops
// without it.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "gru_gates.h"

namespace {

constexpr int kLanes = 16;  // partial results per sweep: what lets the compiler vectorise them

// The row's max and sum (sweep 1).
DIALOGLAB_CLONES void max_and_sum(int64_t V, const float* __restrict v, float& max_out,
                                  float& sum_out) {
  float lane_max[kLanes], lane_sum[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_max[l] = -std::numeric_limits<float>::infinity();
    lane_sum[l] = 0.0f;
  }
  const int64_t body = V - V % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lane_max[l] = std::max(lane_max[l], v[j + l]);
      lane_sum[l] += v[j + l];
    }
  }
  float m = -std::numeric_limits<float>::infinity(), s = 0.0f;
  for (int l = 0; l < kLanes; ++l) {
    m = std::max(m, lane_max[l]);
    s += lane_sum[l];
  }
  for (int64_t j = body; j < V; ++j) {
    m = std::max(m, v[j]);
    s += v[j];
  }
  max_out = m;
  sum_out = s;
}

// e = exp(v - m) and the sum of e (sweep 2).
DIALOGLAB_CLONES float exp_and_sum(int64_t V, const float* __restrict v, float m,
                                   float* __restrict e) {
  float lane_sum[kLanes] = {};
  const int64_t body = V - V % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      e[j + l] = exp_approx(v[j + l] - m);
      lane_sum[l] += e[j + l];
    }
  }
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += lane_sum[l];
  for (int64_t j = body; j < V; ++j) {
    e[j] = exp_approx(v[j] - m);
    s += e[j];
  }
  return s;
}

// out = e * scale - shift, in the storage type (sweep 3; bf16 rounded once).
template <typename S>
DIALOGLAB_INLINE void scaled_row(int64_t V, const float* __restrict e, float scale, float shift,
                                 S* __restrict out) {
  for (int64_t j = 0; j < V; ++j) store(out[j], e[j] * scale - shift);
}
DIALOGLAB_CLONES void scaled(int64_t V, const float* e, float scale, float shift, float* out) {
  scaled_row<float>(V, e, scale, shift, out);
}
DIALOGLAB_CLONES void scaled(int64_t V, const float* e, float scale, float shift,
                             uint16_t* out) {
  scaled_row<uint16_t>(V, e, scale, shift, out);
}

DIALOGLAB_CLONES void widen(int64_t V, const uint16_t* __restrict x, float* __restrict out) {
  for (int64_t j = 0; j < V; ++j) out[j] = load(x[j]);
}

// Row x's loss (1 - eps) (lse - x_t) + eps (lse - mean x), and with `write_grad` x overwritten
// by softmax(x) - (1 - eps) onehot(t) - eps / V. Scratch rows of V floats: this thread's own.
template <typename S>
float xent_row(int64_t V, S* x, int64_t t, float eps, bool write_grad) {
  thread_local std::vector<float> widened, exps;
  exps.resize(V);
  const float* v = nullptr;
  if constexpr (std::is_same_v<S, float>) {
    v = x;
  } else {
    widened.resize(V);
    widen(V, x, widened.data());
    v = widened.data();
  }
  float m, sum_x;
  max_and_sum(V, v, m, sum_x);
  const float x_t = v[t];
  const float sum = exp_and_sum(V, v, m, exps.data());
  const float lse = m + std::log(sum);
  const float loss = (1.0f - eps) * (lse - x_t) + eps * (lse - sum_x / static_cast<float>(V));
  if (!write_grad) return loss;
  const float inv = 1.0f / sum, uniform = eps / static_cast<float>(V);
  scaled(V, exps.data(), inv, uniform, x);
  store(x[t], exps[t] * inv - uniform - (1.0f - eps));
  return loss;
}

// logits (M, V), fp32 or bf16, contiguous; targets (N,) int64, N <= M. With write_grad, rows
// [0, N) are overwritten by their gradient, rows [N, M) (padding) by zeros; without it (no
// backward to come) the logits are left as they are. Returns the N losses (fp32).
at::Tensor softmax_xent_(at::Tensor logits, const at::Tensor& targets, double eps,
                         bool write_grad) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "softmax_xent_: contiguous (M, V)");
  const bool bf16 = logits.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || logits.scalar_type() == at::kFloat, "softmax_xent_: fp32 or bf16 logits");
  const at::Tensor t = targets.to(at::kLong).contiguous();
  const int64_t M = logits.size(0), V = logits.size(1), N = t.numel();
  TORCH_CHECK(N <= M, "softmax_xent_: ", N, " targets for ", M, " rows");
  const int64_t* t_p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(t_p[i] >= 0 && t_p[i] < V, "softmax_xent_: target ", t_p[i], " at row ", i,
                " is not a class id in [0, ", V, ")");
  }
  at::Tensor losses = at::empty({N}, logits.options().dtype(at::kFloat));
  float* loss_p = losses.data_ptr<float>();
  const float e = static_cast<float>(eps);
  with_storage(bf16, [&](auto tag) {
    using S = decltype(tag);
    S* rows = storage<S>(logits);
    at::parallel_for(0, N, 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        loss_p[i] = xent_row(V, rows + i * V, t_p[i], e, write_grad);
      }
    });
  });
  if (write_grad && N < M) logits.narrow(0, N, M - N).zero_();
  return losses;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dialoglab_gru, m) {
  m.def("softmax_xent_(Tensor(a!) logits, Tensor targets, float eps, bool write_grad) -> Tensor",
        &softmax_xent_);
}
