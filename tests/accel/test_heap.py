"""experiment/cpu_heap.py: with glibc, freed large buffers are reused instead of page-faulted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dialoglab.experiment import cpu_heap

pytestmark = pytest.mark.skipif(cpu_heap._mallopt() is None, reason="no glibc mallopt here")

# A fresh process, as `python train.py` starts: page faults of allocating, filling and freeing a
# 16 MiB tensor five times, after twelve warm-up allocations (the heap grows for the first few:
# a freed block is reused once free space next to it has merged into one large enough for the
# next 64-byte-aligned request).
PROBE = """
import json, resource, sys
import torch
from dialoglab.experiment.cpu_heap import keep_freed_memory
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


def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    pages = 16 * 1024 * 1024 // 4096
    off, kept = _probe("off"), _probe("keep")
    assert off["took"] is kept["took"] is True
    assert off["faults"] >= 4 * pages  # 128 KiB thresholds: mapped and returned every time
    assert kept["faults"] < pages // 4  # the same heap pages are reused


def test_train_config_turns_it_on_by_default():
    from omegaconf import OmegaConf

    from dialoglab.experiment.runner import CONFIG_DIR

    assert OmegaConf.load(f"{CONFIG_DIR}/train.yaml").keep_freed_memory is True
