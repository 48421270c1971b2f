"""DDP on CPU through the CLI (a subprocess: Lightning must never re-launch pytest itself).

One `-m` multirun covers the traps at once: trainer=cpu,ddp_cpu x model.net.hidden_size=16,24.
- Rank 1 of each DDP job must train the job's own config, not re-run the `-m` sweep: every rank
  records the digest of its resolved config, and they must agree with the job's config.
- A 2-process run must measure what a 1-process run measures. With lr=0 both train identical
  weights, so val/test metrics over the whole split must match (shards are not padded).
- Two DDP jobs in a row in one process: the second must start a fresh process group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dialoglab.experiment.distributed import config_digest
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
