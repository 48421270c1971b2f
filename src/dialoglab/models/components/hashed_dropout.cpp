// Dropout whose mask is a hash of (seed, element index): models/components/dropout.py's CPU
// path. Element i gets the top 16 bits of a 32-bit hash of i under the seed (two rounds of
// the `lowbias32` integer hash, a bijection with good avalanche, the seed's halves mixed in
// before each), and is kept when those bits, read as 0..65535, are at least `threshold`. So the
// mask needs no random-number generator state, no mask buffer and no pass of its own: forward
// and backward each recompute it while they scale (one read and one write of the tensor), from
// the same seed. The hash is 32-bit integer maths per element, which the compiler vectorises.
// fp32 or bf16 (scaled in fp32, rounded once). Built into the fused GRU's extension
// (fused_gru.compiled_loops); dropout.py draws its mask with torch.randint without it.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "gru_gates.h"

namespace {

constexpr int64_t kGrain = 1 << 16;  // elements per parallel chunk

DIALOGLAB_INLINE uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// out[i] = x[i] * scale where element i is kept, else 0, for i in [begin, end).
template <typename S>
DIALOGLAB_INLINE void scale_kept(int64_t begin, int64_t end, uint32_t key0, uint32_t key1,
                                 uint32_t threshold, float scale, const S* __restrict x,
                                 S* __restrict out) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t bits = lowbias32(lowbias32(static_cast<uint32_t>(i) ^ key0) + key1) >> 16;
    store(out[i], load(x[i]) * (bits >= threshold ? scale : 0.0f));
  }
}

DIALOGLAB_CLONES void scale_kept_f32(int64_t begin, int64_t end, uint32_t key0, uint32_t key1,
                                     uint32_t threshold, float scale, const float* x,
                                     float* out) {
  scale_kept<float>(begin, end, key0, key1, threshold, scale, x, out);
}

DIALOGLAB_CLONES void scale_kept_bf16(int64_t begin, int64_t end, uint32_t key0, uint32_t key1,
                                      uint32_t threshold, float scale, const uint16_t* x,
                                      uint16_t* out) {
  scale_kept<uint16_t>(begin, end, key0, key1, threshold, scale, x, out);
}

// x (any shape, fp32 or bf16) -> x * scale on kept elements, 0 elsewhere, element order that
// of x.contiguous(). The same (seed, threshold) give the same mask for any tensor of x's size.
at::Tensor hashed_dropout(const at::Tensor& x_in, int64_t seed, int64_t threshold,
                          double scale) {
  const bool bf16 = x_in.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || x_in.scalar_type() == at::kFloat, "hashed_dropout: fp32 or bf16 input");
  TORCH_CHECK(x_in.device().is_cpu(), "hashed_dropout: a CPU tensor");
  TORCH_CHECK(threshold >= 0 && threshold <= 65536, "hashed_dropout: threshold in [0, 65536]");
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  TORCH_CHECK(n <= std::numeric_limits<uint32_t>::max(),
              "hashed_dropout: at most 2^32 - 1 elements, got ", n);
  const auto s = static_cast<uint64_t>(seed);
  const auto key0 = static_cast<uint32_t>(s), key1 = static_cast<uint32_t>(s >> 32);
  const auto t = static_cast<uint32_t>(threshold);
  const auto c = static_cast<float>(scale);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (bf16) {
      scale_kept_bf16(begin, end, key0, key1, t, c, storage<uint16_t>(x), storage<uint16_t>(out));
    } else {
      scale_kept_f32(begin, end, key0, key1, t, c, storage<float>(x), storage<float>(out));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dialoglab_gru, m) {
  m.def("hashed_dropout(Tensor x, int seed, int threshold, float scale) -> Tensor",
        &hashed_dropout);
}
