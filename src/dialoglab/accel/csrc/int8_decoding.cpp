// gru_attn inference with int8 weights (models/components/int8_gru.py), in C++ so that a token
// costs one call from Python instead of dozens. The int8 products are torch's dynamically
// quantized ones (fbgemm through the packed weight's apply_dynamic: activations quantized per
// product with reduce_range, as torch.ao's dynamic modules do); the GRU gates are the fp32 pass
// of gru_gates.h; everything else is ATen.
//
//   int8_forward_loop   a GRU layer's time loop (the encoder): gru_gates.h's forward_steps
//   Int8DecoderStep     the decoder's one-token step: embedding, GRU layers, Luong attention
//                       (dot, general or concat), tanh(W_c [h; context]), W_o
//
// Shapes: B batch, S source length, H hidden, V vocabulary, L layers; fp32 throughout.

#include <ATen/ATen.h>
#include <ATen/native/quantized/PackedParams.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "gru_gates.h"

namespace {

using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

// x W^T + b through a packed int8 weight.
Tensor int8_linear(const Packed& w, const Tensor& x) {
  return w->apply_dynamic(x.contiguous(), /*reduce_range=*/true);
}

// Inference with int8 recurrent weights. gi (N, 3H) = x W_ih^T + b_ih in fp32, packed over the
// real tokens as in forward_loop; w_hh is quantized::linear_prepack(W_hh int8, b_hh), b_hh (3H,)
// its bias (the whole product when zero_state and no row has stepped yet). Returns hs (T, B, H).
Tensor int8_forward_loop(const Tensor& gi, const Tensor& h0, const Packed& w_hh,
                         const Tensor& b_hh, at::IntArrayRef active, bool zero_state) {
  TORCH_CHECK(gi.scalar_type() == at::kFloat && h0.scalar_type() == at::kFloat,
              "int8_forward_loop: fp32 gi and h0");
  const auto product = [&](const Tensor& h_k) { return int8_linear(w_hh, h_k); };
  return std::get<3>(forward_steps(gi, h0.contiguous(), b_hh.contiguous(), active, zero_state,
                                   /*fused_gates=*/true, product));
}

// One step of a unidirectional multi-layer GRU with int8 weights: x (B, I), hx (L, B, H) ->
// h_n (L, B, H), whose last layer is the step's output; per layer two dynamically quantized
// products (w_ih[l], w_hh[l]: quantized::linear_prepack with b_ih, b_hh) and the gate pass.
Tensor gru_step(const Tensor& x, const Tensor& hx, const c10::List<Packed>& w_ih,
                const c10::List<Packed>& w_hh) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && hx.scalar_type() == at::kFloat,
              "gru_step: fp32 x and hx");
  const int64_t L = hx.size(0), B = hx.size(1);
  TORCH_CHECK(static_cast<int64_t>(w_ih.size()) == L && static_cast<int64_t>(w_hh.size()) == L,
              "gru_step: one w_ih and one w_hh per layer");
  const std::vector<int64_t> all_rows{B};  // one time step, every row running
  std::vector<Tensor> states;
  Tensor input = x;
  for (int64_t l = 0; l < L; ++l) {
    const Tensor gi = int8_linear(w_ih.get(l), input).contiguous();
    const auto product = [&](const Tensor& h_k) { return int8_linear(w_hh.get(l), h_k); };
    input = std::get<3>(forward_steps(gi, hx.select(0, l).contiguous(), Tensor(), all_rows,
                                      /*zero_state=*/false, /*fused_gates=*/true, product))
                .select(0, 0);  // (B, H)
    states.push_back(input);
  }
  return at::stack(states);
}

// The decoder's one-token step, built once per model from its int8 layers. `attention` holds
// the attention's layers: none for dot, [W] for general, [W_q, W_k, v] for concat.
struct Int8DecoderStep : torch::CustomClassHolder {
  Tensor embedding;  // (V, H), fp32
  c10::List<Packed> w_ih, w_hh, attention;
  Packed w_c, w_o;

  Int8DecoderStep(Tensor embedding, c10::List<Packed> w_ih, c10::List<Packed> w_hh,
                  c10::List<Packed> attention, Packed w_c, Packed w_o)
      : embedding(std::move(embedding)), w_ih(std::move(w_ih)), w_hh(std::move(w_hh)),
        attention(std::move(attention)), w_c(std::move(w_c)), w_o(std::move(w_o)) {
    TORCH_CHECK(this->w_ih.size() == this->w_hh.size(), "Int8DecoderStep: w_ih and w_hh per layer");
    const auto n = this->attention.size();
    TORCH_CHECK(n == 0 || n == 1 || n == 3, "Int8DecoderStep: 0, 1 or 3 attention layers");
  }

  // tokens (B, 1), state (L, B, H), keys (B, S, H) (the encoder outputs), mask (B, S) true on
  // real tokens -> logits (B, 1, V), new state (L, B, H), attention weights (B, 1, S): the
  // Python decoder's results for one token (models/components/gru_attn.py, Decoder.forward).
  std::tuple<Tensor, Tensor, Tensor> step(const Tensor& tokens, const Tensor& state,
                                          const Tensor& keys, const Tensor& mask) const {
    const int64_t B = keys.size(0), S = keys.size(1), H = keys.size(2);
    const Tensor x = at::index_select(embedding, 0, tokens.reshape({-1}));  // (B, H)
    const Tensor h_n = gru_step(x, state, w_ih, w_hh);  // (L, B, H)
    const Tensor out = h_n.select(0, h_n.size(0) - 1);  // (B, H)
    Tensor scores;  // (B, 1, S)
    if (attention.size() == 0) {  // dot
      scores = at::bmm(out.unsqueeze(1), keys.transpose(1, 2));
    } else if (attention.size() == 1) {  // general: q . W k
      const Tensor wk = int8_linear(attention.get(0), keys.reshape({B * S, H})).view({B, S, H});
      scores = at::bmm(out.unsqueeze(1), wk.transpose(1, 2));
    } else {  // concat: v . tanh(W_q q + W_k k + b)
      const Tensor q = int8_linear(attention.get(0), out).view({B, 1, H});
      const Tensor k = int8_linear(attention.get(1), keys.reshape({B * S, H})).view({B, S, H});
      const Tensor t = at::tanh(q + k).reshape({B * S, H});
      scores = int8_linear(attention.get(2), t).view({B, 1, S});
    }
    scores = scores.masked_fill(mask.logical_not().unsqueeze(1),
                                std::numeric_limits<float>::lowest());
    const Tensor weights = at::softmax(scores, -1);  // (B, 1, S)
    const Tensor context = at::bmm(weights, keys).squeeze(1);  // (B, H)
    const Tensor concat = at::tanh(int8_linear(w_c, at::cat({out, context}, 1)));  // (B, H)
    const Tensor logits = int8_linear(w_o, concat);  // (B, V)
    return {logits.unsqueeze(1), h_n, weights};
  }
};

}  // namespace

TORCH_LIBRARY_FRAGMENT(dialoglab_gru, m) {
  m.def(
      "int8_forward_loop(Tensor gi, Tensor h0, "
      "__torch__.torch.classes.quantized.LinearPackedParamsBase w_hh, Tensor b_hh, int[] active, "
      "bool zero_state) -> Tensor",
      &int8_forward_loop);
  m.class_<Int8DecoderStep>("Int8DecoderStep")
      .def(torch::init<Tensor, c10::List<Packed>, c10::List<Packed>, c10::List<Packed>, Packed,
                       Packed>())
      .def("step", &Int8DecoderStep::step);
}
