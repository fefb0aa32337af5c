# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/memory.py: the CPU peak follows a fresh allocation."""

import mmap

import torch

from benchmarks.harness.memory import MIB, PeakMemory


def test_peak_memory_grows_with_an_allocation() -> None:
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    before = memory.peak_mib()
    # A fresh anonymous mapping, every page written: new resident memory, never pages the heap already holds.
    with mmap.mmap(-1, 64 * MIB) as block:
        block.write(b"\x01" * (64 * MIB))
        assert memory.peak_mib() >= before + 60


def test_cpu_peak_says_what_it_measures() -> None:
    memory = PeakMemory(torch.device("cpu"))
    assert memory.kind == "peak resident set size" + ("" if memory.resettable else " over the process lifetime")
