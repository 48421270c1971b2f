"""`python -m benchmarks --quick`: the runner runs a benchmark and writes its two reports."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHES, main
from tests.conftest import REPO_ROOT


def test_quick_data_bench_writes_real_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "data", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["quick"] is True and report["benches"]["data"]["error"] is None
    assert report["benches"]["data"]["command"] == "python -m benchmarks --only data --quick"
    rows = {figure["name"]: figure for figure in report["figures"]}
    cold = rows["small synthetic Cornell (quick): parse+tokenize, cold"]
    assert cold["value"] > 0 and cold["unit"] == "s" and cold["met"] in (True, False)
    assert rows["small synthetic Cornell (quick): cached reload"]["value"] > 0
    assert all(figure["bench"] == "data" for figure in rows.values())
    table = (out / "results.md").read_text()
    assert "| small synthetic Cornell (quick): cached reload |" in table
    assert report["environment"]["torch"] in table


def test_runner_lists_and_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BENCHES)
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "nope"])
    assert exit_.value.code == 2


def test_every_registered_benchmark_names_a_function_that_exists() -> None:
    for target, _ in BENCHES.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(f"benchmarks.{module}"), function)), target
