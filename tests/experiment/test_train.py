"""Training end to end on real corpora: fast_dev_run, checkpoint -> eval round trip, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from dialoglab.experiment.evaluate import evaluate
from dialoglab.experiment.train import train
from tests.conftest import QUIET_CPU_RUN, TINY_GRU, run_script


def test_fast_dev_run_on_cornell_slice(make_cfg, cornell_subset: Path) -> None:
    cfg = make_cfg("train", ["debug=fast", f"data.path={cornell_subset}", *TINY_GRU])
    metrics = train(cfg)
    for name in ("train/loss", "val/loss", "val/ppl", "val/ppl_word", "val/bleu", "val/ppl_best"):
        assert name in metrics, name
    for name in ("test/ppl", "test/bleu", "test/distinct_1", "test/distinct_2", "test/rouge_l"):
        assert name in metrics, name
    assert 1.0 < metrics["val/ppl"] < 1e6


@pytest.mark.parametrize("experiment", ["cornell", "cornell_gru"])
def test_cornell_recipes_run_at_full_size(make_cfg, cornell_subset: Path, experiment: str) -> None:
    """The README's Cornell commands: each recipe's own network and batch, one batch per stage."""
    overrides = [f"experiment={experiment}", "debug=fast", f"data.path={cornell_subset}"]
    cfg = make_cfg("train", [*overrides, *QUIET_CPU_RUN])
    metrics = train(cfg)
    assert cfg.model.net.hidden_size == {"cornell": 768, "cornell_gru": 500}[experiment]
    assert 1.0 < metrics["val/ppl"] < 1e6 and 1.0 < metrics["test/ppl"] < 1e6


def test_fast_dev_run_on_chatterbot(make_cfg) -> None:
    metrics = train(make_cfg("train", ["debug=fast", "data=chatterbot", *TINY_GRU]))
    assert metrics["val/ppl"] > 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_checkpoint_eval_round_trip(make_cfg, tmp_path: Path) -> None:
    """eval.py rebuilds everything from the checkpoint and reproduces the in-training test metrics."""
    limits = [
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    ]
    train_cfg = make_cfg(
        "train",
        ["data=chatterbot", "trainer.max_epochs=2", *limits, *TINY_GRU],
        output_dir=tmp_path / "train_run",
    )
    train_metrics = train(train_cfg)
    summary = json.loads((tmp_path / "train_run" / "metrics.json").read_text())
    best = summary["best_checkpoint"]
    assert Path(best).is_file() and (tmp_path / "train_run" / "checkpoints" / "last.ckpt").is_file()
    assert [s["prompt"] for s in summary["samples"]] == ["hello!", "how are you?"]

    # The checkpoint is plain data: it loads with weights_only=True and carries config + vocabulary.
    payload = torch.load(best, map_location="cpu", weights_only=True)["dialoglab"]
    assert payload["config"]["model"]["net"]["hidden_size"] == 16
    assert payload["tokenizer"]["itos"][:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]

    # No training overrides repeated: only the checkpoint (and the same test-batch limit).
    eval_cfg = make_cfg(
        "eval",
        [f"ckpt_path={best}", "trainer.limit_test_batches=2"],
        output_dir=tmp_path / "eval_run",
    )
    eval_metrics = evaluate(eval_cfg)
    for name in ("test/loss", "test/ppl", "test/ppl_word", "test/bleu", "test/distinct_2"):
        assert eval_metrics[name] == pytest.approx(train_metrics[name], rel=1e-5, abs=1e-6), name
    saved = json.loads((tmp_path / "eval_run" / "metrics.json").read_text())
    assert saved["metrics"]["test/ppl"] == pytest.approx(eval_metrics["test/ppl"])


def run_cli(
    script: str, *overrides: str, cwd: Path, merge_stderr: bool = False
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd)}
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SILENT"):  # as a user's shell has them
        env.pop(name, None)
    return run_script(script, *overrides, cwd=cwd, env=env, merge_stderr=merge_stderr)


def test_cli_train_logs_to_wandb_offline_and_csv(tmp_path: Path) -> None:
    """No W&B credentials: the run goes offline by itself, says how to sync, and writes CSV too;
    the run's report (where it went, how to evaluate it) is the last thing printed, after W&B's
    summary."""
    result = run_cli(
        "train.py",
        "data=chatterbot",
        "logger=many",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        *TINY_GRU[:4],
        cwd=tmp_path,
        merge_stderr=True,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    assert "wandb sync" in out
    assert "run directory:" in out
    last_lines = [line for line in out.splitlines() if line.strip()][-3:]
    assert last_lines[0].startswith("run directory:"), last_lines
    assert last_lines[-1].startswith("evaluate it with: python eval.py ckpt_path="), last_lines
    run_dir = next((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert list(run_dir.glob("wandb/offline-run-*")), "no offline W&B run"
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_cli_user_error_has_no_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "train.py", f"data.path={tmp_path / 'nowhere'}", "data.reader.download=false", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nowhere" in result.stderr and "movie_lines.txt" in result.stderr


def test_debug_profile_torch_reports_the_ten_scheduled_steps(make_cfg) -> None:
    cfg = make_cfg("train", ["debug=profile_torch", "data=chatterbot", *TINY_GRU])
    train(cfg)
    report = (Path(cfg.paths.output_dir) / "fit-profile.txt").read_text()
    step_row = next(
        line for line in report.splitlines() if line.strip().startswith("ProfilerStep*")
    )
    assert step_row.split()[-1] == "10"  # the "# of Calls" column: steps 6-15 recorded
    assert "[pl][profile][Strategy]SingleDeviceStrategy.backward" in report
