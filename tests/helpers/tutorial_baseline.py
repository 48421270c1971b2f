"""The PyTorch chatbot tutorial's training recipe, written by us as a baseline to measure against.

It follows the structure of the tutorial's `EncoderRNN`, `LuongAttnDecoderRNN`, `maskNLLLoss` and
`train()` (pytorch.org/tutorials/beginner/chatbot_tutorial.html): time-major tensors, batches
sorted by source length for packing, the decoder called once per target time step, a softmax over
the vocabulary then `-log(gather(...))` per step, a per-step masked mean added into the loss, one
`.item()` host sync per step for the reported loss, two Adam optimizers (decoder at 5x the
learning rate) and gradient clipping per half.

It shares the parameters of one of our `GRUAttnSeq2Seq` models, so both compute the same
function on the same weights, and the only difference measured is how the computation is laid
out. To make that exact, three details follow our model instead of the tutorial: the decoder
starts from the encoder's summed directions of its top layers (the tutorial takes
`encoder_hidden[:n_layers]`, i.e. layer 0's forward and backward states), attention masks
padded source positions (the tutorial attends to them), and the shared embedding is updated
once, by the encoder's optimizer (the tutorial lists it in both optimizers).
"""

from __future__ import annotations

import random

import torch
from torch import nn
from torch.nn import functional as F

from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq


def _time_major_gru(rnn: nn.GRU) -> nn.GRU:
    """A batch_first=False GRU that shares every weight tensor of `rnn`."""
    twin = nn.GRU(
        rnn.input_size,
        rnn.hidden_size,
        rnn.num_layers,
        dropout=rnn.dropout,
        bidirectional=rnn.bidirectional,
    )
    for name in rnn._flat_weights_names:  # RNNBase.__setattr__ keeps _flat_weights in sync
        setattr(twin, name, getattr(rnn, name))
    return twin


class EncoderRNN(nn.Module):
    """The tutorial's encoder: embed, pack (sorted lengths), bidirectional GRU, sum directions."""

    def __init__(self, net: GRUAttnSeq2Seq):
        super().__init__()
        self.hidden_size = net.config.hidden_size
        self.n_layers = net.config.encoder_n_layers
        self.embedding = net.embedding
        self.dropout = nn.Dropout(net.config.dropout)
        self.gru = _time_major_gru(net.encoder.rnn)

    def forward(self, input_seq: torch.Tensor, input_lengths: torch.Tensor):
        embedded = self.dropout(self.embedding(input_seq))  # (S, B, H)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths)
        outputs, hidden = self.gru(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)  # (S, B, 2H)
        outputs = outputs[:, :, : self.hidden_size] + outputs[:, :, self.hidden_size :]
        return outputs, hidden  # (S, B, H), (2L, B, H)


class LuongAttnDecoderRNN(nn.Module):
    """The tutorial's decoder: one time step per call, dot attention, concat, softmax output."""

    def __init__(self, net: GRUAttnSeq2Seq):
        super().__init__()
        self.n_layers = net.config.decoder_n_layers
        self.embedding = net.embedding
        self.embedding_dropout = nn.Dropout(net.config.dropout)
        self.gru = _time_major_gru(net.decoder.rnn)
        self.concat = net.decoder.W_c
        self.out = net.decoder.W_o

    def forward(
        self,
        input_step: torch.Tensor,
        last_hidden: torch.Tensor,
        encoder_outputs: torch.Tensor,
        src_mask: torch.Tensor,
    ):
        embedded = self.embedding_dropout(self.embedding(input_step))  # (1, B, H)
        rnn_output, hidden = self.gru(embedded, last_hidden)  # (1, B, H)
        attn_energies = torch.sum(rnn_output * encoder_outputs, dim=2).t()  # (B, S)
        attn_energies = attn_energies.masked_fill(~src_mask, torch.finfo(attn_energies.dtype).min)
        attn_weights = F.softmax(attn_energies, dim=1).unsqueeze(1)  # (B, 1, S)
        context = attn_weights.bmm(encoder_outputs.transpose(0, 1)).squeeze(1)  # (B, H)
        rnn_output = rnn_output.squeeze(0)
        concat_output = torch.tanh(self.concat(torch.cat((rnn_output, context), 1)))
        output = F.softmax(self.out(concat_output), dim=1)  # (B, V) probabilities
        return output, hidden


def mask_nll_loss(inp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    """The tutorial's maskNLLLoss: mean -log p(target) over the unmasked rows, and their count."""
    n_total = mask.sum()
    cross_entropy = -torch.log(torch.gather(inp, 1, target.view(-1, 1)).squeeze(1))
    loss = cross_entropy.masked_select(mask).mean()
    return loss, n_total.item()


def tutorial_batch(batch: dict[str, torch.Tensor], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Our collated batch in the tutorial's layout: sorted by source length, time-major (on
    the batch's device, except the lengths: packing reads them on the CPU)."""
    order = torch.argsort(batch["src_lengths"], descending=True, stable=True)
    src_lengths = batch["src_lengths"][order].cpu()
    src = batch["src"][order, : int(src_lengths[0])]
    target = batch["target"][order]
    mask = target != pad_id
    return {
        "input_variable": src.t().contiguous(),  # (S, B)
        "lengths": src_lengths,
        "target_variable": target.t().contiguous(),  # (T, B)
        "mask": mask.t().contiguous(),
        "max_target_len": target.size(1),
    }


class TutorialTrainer:
    """The tutorial's `train()` for one batch, on the parameters of our model."""

    def __init__(
        self,
        net: GRUAttnSeq2Seq,
        lr: float = 1e-4,
        decoder_learning_ratio: float = 5.0,
        clip: float = 50.0,
        teacher_forcing_ratio: float = 1.0,
    ):
        self.net = net
        self.encoder = EncoderRNN(net)
        self.decoder = LuongAttnDecoderRNN(net)
        self.clip = clip
        self.teacher_forcing_ratio = teacher_forcing_ratio
        self.sos = net.config.sos_id
        embedding = {id(p) for p in net.embedding.parameters()}
        decoder_params = [p for p in self.decoder.parameters() if id(p) not in embedding]
        self.encoder_optimizer = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.decoder_optimizer = torch.optim.Adam(decoder_params, lr=lr * decoder_learning_ratio)

    def train(self, mode: bool = True) -> TutorialTrainer:
        self.encoder.train(mode)
        self.decoder.train(mode)
        return self

    def step(self, batch: dict[str, torch.Tensor], update: bool = True) -> float:
        """One training iteration on a `tutorial_batch`; returns the loss per target token."""
        self.encoder_optimizer.zero_grad()
        self.decoder_optimizer.zero_grad()
        input_variable, lengths = batch["input_variable"], batch["lengths"]
        target_variable, mask = batch["target_variable"], batch["mask"]
        batch_size = input_variable.size(1)
        loss = 0
        print_losses = []
        n_totals = 0

        encoder_outputs, encoder_hidden = self.encoder(input_variable, lengths)
        S, L = encoder_outputs.size(0), self.encoder.n_layers
        device = encoder_outputs.device  # `lengths` stay on the CPU, as packing needs them
        src_mask = torch.arange(S, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)
        # our model's bridge: directions summed, the decoder's number of top layers
        summed = encoder_hidden.view(L, 2, batch_size, -1).sum(dim=1)
        decoder_hidden = summed[L - self.decoder.n_layers :]
        decoder_input = torch.LongTensor([[self.sos for _ in range(batch_size)]]).to(device)

        use_teacher_forcing = random.random() < self.teacher_forcing_ratio
        for t in range(batch["max_target_len"]):
            decoder_output, decoder_hidden = self.decoder(
                decoder_input, decoder_hidden, encoder_outputs, src_mask
            )
            if use_teacher_forcing:
                decoder_input = target_variable[t].view(1, -1)
            else:
                _, topi = decoder_output.topk(1)
                decoder_input = torch.LongTensor([[topi[i][0] for i in range(batch_size)]])
                decoder_input = decoder_input.to(device)
            mask_loss, n_total = mask_nll_loss(decoder_output, target_variable[t], mask[t])
            loss += mask_loss
            print_losses.append(mask_loss.item() * n_total)
            n_totals += n_total

        if update:
            loss.backward()
            nn.utils.clip_grad_norm_(self.encoder.parameters(), self.clip)
            nn.utils.clip_grad_norm_(self.decoder.parameters(), self.clip)
            self.encoder_optimizer.step()
            self.decoder_optimizer.step()
        return sum(print_losses) / n_totals
