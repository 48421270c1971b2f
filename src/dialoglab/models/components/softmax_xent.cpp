// The cross-entropy pass of models/components/linear_cross_entropy.py in C++: per row of the
// logits, the row's loss and, over the row itself, dL/dlogits = softmax - target distribution,
// in three sweeps of one row (max; sum of exp and of the logits; the gradient) while it sits in
// cache, where ATen's log_softmax, exp and scatter each sweep the whole (N, V) buffer.
// fp32 or bf16 logits (computed in fp32, the gradient rounded to bf16 once). Built into the
// fused GRU's extension (fused_gru.compiled_loops); linear_cross_entropy falls back to ATen ops
// without it.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "gru_gates.h"

namespace {

constexpr int kLanes = 16;  // partial results per sweep: what lets the compiler vectorise them

// Row i's loss (1 - eps) (lse - x_t) + eps (lse - mean x), and the row overwritten by
// softmax(x) - (1 - eps) onehot(t) - eps / V.
template <typename S>
DIALOGLAB_INLINE float xent_row_impl(int64_t V, S* __restrict x, int64_t t, float eps) {
  float lane_max[kLanes], lane_sum[kLanes], lane_x[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_max[l] = -std::numeric_limits<float>::infinity();
    lane_sum[l] = lane_x[l] = 0.0f;
  }
  const int64_t body = V - V % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane_max[l] = std::max(lane_max[l], load(x[j + l]));
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int l = 0; l < kLanes; ++l) m = std::max(m, lane_max[l]);
  for (int64_t j = body; j < V; ++j) m = std::max(m, load(x[j]));
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = load(x[j + l]);
      lane_sum[l] += exp_approx(v - m);
      lane_x[l] += v;
    }
  }
  float sum = 0.0f, sum_x = 0.0f;
  for (int l = 0; l < kLanes; ++l) {
    sum += lane_sum[l];
    sum_x += lane_x[l];
  }
  for (int64_t j = body; j < V; ++j) {
    sum += exp_approx(load(x[j]) - m);
    sum_x += load(x[j]);
  }
  const float lse = m + std::log(sum);
  const float x_t = load(x[t]);
  const float loss = (1.0f - eps) * (lse - x_t) + eps * (lse - sum_x / static_cast<float>(V));
  const float inv = 1.0f / sum, uniform = eps / static_cast<float>(V);
  for (int64_t j = 0; j < V; ++j) store(x[j], exp_approx(load(x[j]) - m) * inv - uniform);
  store(x[t], exp_approx(x_t - m) * inv - uniform - (1.0f - eps));
  return loss;
}

DIALOGLAB_CLONES float xent_row(int64_t V, float* x, int64_t t, float eps) {
  return xent_row_impl<float>(V, x, t, eps);
}
DIALOGLAB_CLONES float xent_row(int64_t V, uint16_t* x, int64_t t, float eps) {
  return xent_row_impl<uint16_t>(V, x, t, eps);
}

// logits (M, V), fp32 or bf16, contiguous; targets (N,) int64, N <= M. Rows [0, N) are
// overwritten by their gradient, rows [N, M) (padding) by zeros. Returns the N losses (fp32).
at::Tensor softmax_xent_(at::Tensor logits, const at::Tensor& targets, double eps) {
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
      for (int64_t i = begin; i < end; ++i) loss_p[i] = xent_row(V, rows + i * V, t_p[i], e);
    });
  });
  if (N < M) logits.narrow(0, N, M - N).zero_();
  return losses;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dialoglab_gru, m) {
  m.def("softmax_xent_(Tensor(a!) logits, Tensor targets, float eps) -> Tensor", &softmax_xent_);
}
