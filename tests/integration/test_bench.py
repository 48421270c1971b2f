"""`python -m dialoglab.bench --quick`: the runner runs a benchmark and writes its two reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dialoglab.bench.__main__ import BENCHES
from tests.conftest import REPO_ROOT


def test_quick_data_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "dialoglab.bench", "--quick", "--only", "data", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["quick"] is True and report["benches"]["data"]["error"] is None
    names = [f["name"] for f in report["figures"]]
    assert any("cached reload" in n for n in names)
    for figure in report["figures"]:
        assert figure["command"] == "python -m dialoglab.bench --only data --quick"
        assert figure["met"] in (True, False, None)
    table = (out / "results.md").read_text()
    assert "| figure | value | target | met? | command |" in table
    assert report["environment"]["torch"] in table


def test_runner_lists_and_rejects_unknown_names(capsys) -> None:
    from dialoglab.bench.__main__ import main

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BENCHES)
    try:
        main(["--only", "nope"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:  # pragma: no cover
        raise AssertionError("an unknown benchmark name must be rejected")


def test_quick_utilisation_replays_the_steps_own_matmuls() -> None:
    """The utilisation benchmark at its quick sizes: the step's recorded products carry exactly
    the counted FLOPs, and the replay's rows are there with their per-layout times."""
    from dialoglab.bench import utilisation

    figures = {figure.name: figure for figure in utilisation.run(quick=True)}
    alone = figures["gru_attn step fp32: its matmuls alone"]
    assert alone.extra["recorded_flops"] == alone.extra["counted_flops"] > 0
    assert alone.value > 0 and alone.extra["groups"]
    assert sum(group["count"] for group in alone.extra["groups"]) > 0
    assert figures["gru_attn step fp32 matmuls alone / fp32 peak"].value > 0
    assert isinstance(figures["gru_attn step fp32: time outside its matmuls"].value, float)
