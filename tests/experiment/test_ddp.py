"""DDP on CPU through the CLI (a subprocess: Lightning must never re-launch pytest itself).

One `-m` multirun covers the traps at once: trainer=cpu,ddp_cpu x model.net.hidden_size=16,24.
- Rank 1 of each DDP job must train the job's own config, not re-run the `-m` sweep: every rank
  records the digest of its resolved config, and they must agree with the job's config.
- A 2-process run must measure what a 1-process run measures. With lr=0 both train identical
  weights, so val/test metrics over the whole split must match (shards are not padded).
- Two DDP jobs in a row in one process: the second must start a fresh process group.
- W ranks with batch size B train on what one process with batch size B*W trains on: step k's
  batches together are its batch k, and the gradient is the per-token mean over all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from torch.utils.data import BatchSampler

from dialoglab.data.resumable import ResumableDistributedSampler, ResumableShuffleSampler
from dialoglab.experiment.distributed import config_digest
from dialoglab.models.token_mean import global_token_mean
from tests.conftest import free_port
from tests.experiment.test_sweeps import job_dirs, overrides_of, run_multirun

COMPARED = [
    f"{stage}/{name}"
    for stage in ("val", "test")
    for name in ("loss", "ppl", "ppl_word", "bleu", "distinct_1", "distinct_2", "rouge_l")
]


@pytest.mark.slow
def test_ddp_cpu_multirun_matches_single_process(tmp_path: Path) -> None:
    result = run_multirun(
        "data=chatterbot",
        "logger=csv",
        "trainer=cpu,ddp_cpu",
        "model.net.hidden_size=16,24",
        "model.optimizer.lr=0",
        "model.net.encoder_n_layers=1",
        "model.net.decoder_n_layers=1",
        "model.val_generate=40",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "sample_replies=0",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    outputs = tmp_path / "outputs" / "train"
    assert not (outputs / "runs").exists(), "a rank started a Hydra run of its own"
    (sweep_dir,) = (outputs / "multiruns").iterdir()
    runs = {
        (o["trainer"], o["model.net.hidden_size"]): run
        for run in job_dirs(sweep_dir)
        for o in [overrides_of(run)]
    }
    assert len(runs) == 4

    for hidden in ("16", "24"):
        ddp_run = runs["ddp_cpu", hidden]
        # every rank ran this job's resolved config (not a sweep of its own)
        resolved = OmegaConf.load(ddp_run / "ddp" / "config.yaml")
        assert resolved.model.net.hidden_size == int(hidden)
        ranks = [json.loads(p.read_text()) for p in sorted((ddp_run / "ddp").glob("rank_*.json"))]
        assert [r["global_rank"] for r in ranks] == [0, 1]
        assert {r["world_size"] for r in ranks} == {2}
        assert {r["config_sha256"] for r in ranks} == {config_digest(resolved)}
        assert len({r["pid"] for r in ranks}) == 2

        # rank 0 alone wrote the reports and checkpoints, in the job's one directory
        assert len(list((ddp_run / "checkpoints").glob("*.ckpt"))) == 2  # best + last
        single = json.loads((runs["cpu", hidden] / "metrics.json").read_text())["metrics"]
        multi = json.loads((ddp_run / "metrics.json").read_text())["metrics"]
        for name in COMPARED:
            assert multi[name] == pytest.approx(single[name], rel=1e-5, abs=1e-7), (hidden, name)
        assert single["val/distinct_2"] > 0 and single["val/ppl"] > 1


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(1841, 64, 2), (21, 4, 2), (17, 4, 2), (10, 3, 4)]
)
def test_rank_batches_together_are_the_one_process_batch(n: int, batch: int, world: int) -> None:
    """Same seed and epoch: step k's batches of all ranks = batch k of one process (batch*world),
    also the short last one; every rank draws as many batches. Padding (a repeated example) only
    when the last global batch is shorter than `world` (17 % 8 = 1 < 2, 10 % 12 = 10 >= 4)."""
    one = ResumableShuffleSampler(range(n), seed=7)
    one.set_epoch(3)
    expected = [sorted(b) for b in BatchSampler(one, batch * world, drop_last=False)]
    ranks = []
    for rank in range(world):
        sampler = ResumableDistributedSampler(range(n), world, rank, seed=7, batch_size=batch)
        sampler.set_epoch(3)
        assert len(sampler) == len(list(sampler))
        ranks.append(list(BatchSampler(sampler, batch, drop_last=False)))
    assert len({len(r) for r in ranks}) == 1
    together = [sorted(i for r in ranks for i in r[k]) for k in range(len(ranks[0]))]
    if n % (batch * world) in range(1, world):
        assert together[:-1] == expected[:-1] and set(together[-1]) >= set(expected[-1])
    else:
        assert together == expected
    # resumed after 2 batches, each rank continues its own shard
    resumed = ResumableDistributedSampler(range(n), world, 1, seed=7, batch_size=batch)
    resumed.set_epoch(3)
    resumed.resume_at(3, 2 * batch)
    assert list(BatchSampler(resumed, batch, drop_last=False)) == ranks[1][2:]


def _nll_and_tokens(w: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> tuple:
    """A summed per-token loss over examples with `lengths` tokens each (rows of x)."""
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return ((x * w).pow(2) * mask).sum(), mask.sum()


def _gradient_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, lengths = torch.load(out + ".in")
        mine = slice(0, 3) if rank == 0 else slice(3, None)  # 3 short + 2 long examples
        w = torch.ones(x.shape[1], requires_grad=True)
        loss, mean = global_token_mean(*_nll_and_tokens(w, x[mine], lengths[mine]))
        loss.backward()
        dist.all_reduce(w.grad)
        w.grad /= 2  # what DDP does to the gradients
        if rank == 0:
            torch.save({"grad": w.grad, "mean": mean}, out)
    finally:
        dist.destroy_process_group()


def test_global_token_mean_gradient_equals_one_process(tmp_path: Path) -> None:
    """2 gloo ranks with unequal token counts: DDP's averaged gradient and the logged loss equal
    one process's per-token mean over the whole batch (a mean of per-rank means would not)."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([1, 2, 1, 6, 5])
    w = torch.ones(6, requires_grad=True)
    loss, mean = global_token_mean(*_nll_and_tokens(w, x, lengths))
    loss.backward()
    assert mean == loss
    out = str(tmp_path / "rank0.pt")
    torch.save((x, lengths), out + ".in")
    mp.spawn(_gradient_rank, args=(free_port(), out), nprocs=2, join=True)
    got = torch.load(out)
    torch.testing.assert_close(got["grad"], w.grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(got["mean"], loss.detach(), rtol=1e-6, atol=0)
