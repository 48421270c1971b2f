"""The training loss as the per-token mean over the global batch (every data-parallel rank's).

DDP averages gradients over ranks. If each rank divided its summed NLL by its own token count,
the gradient would be the mean of per-rank means, which differs from one process's per-token
mean over the same examples whenever ranks hold different token counts. As fairseq does, the
token count (and the summed NLL, for logging) is all-reduced each step and each rank's loss is
scaled to `nll_sum * world_size / global_tokens`, so DDP's average is the global per-token mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def global_token_mean(
    nll_sum: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, per-token mean over all ranks) for this rank's summed NLL.

    One process: both are `nll_sum / tokens`. Under a process group the second is the true
    per-token mean of the global batch (the same on every rank, so also a non-finite value is
    seen alike by all ranks) and carries no gradient.
    """
    tokens = tokens.to(nll_sum.dtype)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        loss = nll_sum / tokens.clamp(min=1)
        return loss, loss.detach()
    totals = torch.stack([nll_sum.detach(), tokens])
    dist.all_reduce(totals)  # sum over ranks: global summed NLL, global tokens
    global_tokens = totals[1].clamp(min=1)
    loss = nll_sum * dist.get_world_size() / global_tokens
    return loss, totals[0] / global_tokens
