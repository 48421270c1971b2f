"""accel/heap.py: with glibc, freed large buffers are reused instead of page-faulted."""

from __future__ import annotations

import json
import subprocess
import sys

from omegaconf import OmegaConf

from dialoglab.experiment.runner import CONFIG_DIR
from tests.helpers.run_if import run_if

# A fresh process, as `python train.py` starts: page faults of allocating, filling and freeing a
# 16 MiB tensor five times, after twelve warm-up allocations (the heap grows for the first few:
# a freed block is reused once free space next to it has merged into one large enough for the
# next 64-byte-aligned request).
PROBE = """
import json, resource, sys
import torch
from dialoglab.accel.heap import keep_freed_memory
took = keep_freed_memory(enabled=sys.argv[1] == "keep")
for _ in range(12):
    torch.ones(4 * 1024 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    buffer = torch.ones(4 * 1024 * 1024)
    del buffer
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@run_if(glibc=True)
def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    pages = 16 * 1024 * 1024 // 4096
    off, kept = _probe("off"), _probe("keep")
    assert off["took"] is kept["took"] is True
    assert off["faults"] >= 4 * pages  # 128 KiB thresholds: mapped and returned every time
    assert kept["faults"] < pages // 4  # the same heap pages are reused


def test_accel_configs_turn_it_on_by_default_and_off_with_none():
    """`accel.keep_freed_memory`: on in conf/accel/auto.yaml (train's and eval's default group),
    off in accel=none."""
    assert OmegaConf.load(f"{CONFIG_DIR}/accel/auto.yaml").keep_freed_memory is True
    assert OmegaConf.load(f"{CONFIG_DIR}/accel/none.yaml").keep_freed_memory is False
    for root in ("train", "eval"):
        defaults = OmegaConf.to_container(OmegaConf.load(f"{CONFIG_DIR}/{root}.yaml").defaults)
        assert {"accel": "auto"} in defaults, root
    assert "keep_freed_memory" not in OmegaConf.load(f"{CONFIG_DIR}/train.yaml")
