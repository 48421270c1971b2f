"""experiment/cpu_heap.py: with glibc, freed large buffers are reused instead of page-faulted."""

from __future__ import annotations

import resource

import pytest
import torch

from dialoglab.experiment import cpu_heap

pytestmark = pytest.mark.skipif(cpu_heap._mallopt() is None, reason="no glibc mallopt here")


def _faults_allocating(megabytes: int, times: int) -> int:
    """Minor page faults while allocating, filling and freeing a tensor `times` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        buffer = torch.ones(megabytes * 1024 * 1024 // 4)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    try:
        assert cpu_heap.keep_freed_memory(enabled=False) is True
        pages = 16 * 1024 * 1024 // 4096
        assert _faults_allocating(16, 5) >= 4 * pages  # mmap'd and returned each time
        assert cpu_heap.keep_freed_memory() is True
        _faults_allocating(16, 1)  # the heap grows once
        assert _faults_allocating(16, 5) < pages // 4  # then the same pages are reused
    finally:
        cpu_heap.keep_freed_memory()  # what train.py sets


def test_train_config_turns_it_on_by_default():
    from omegaconf import OmegaConf

    from dialoglab.experiment.runner import CONFIG_DIR

    assert OmegaConf.load(f"{CONFIG_DIR}/train.yaml").keep_freed_memory is True
