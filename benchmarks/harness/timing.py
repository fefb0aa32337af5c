# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Interleaved timing: the callables take turns, so that a busy machine slows them alike."""

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch

from benchmarks.harness.memory import PeakMemory


@dataclass
class Turns:
    """What :func:`time_in_turns` measured for one callable.

    Attributes:
        seconds: Seconds per call, one value per turn, in turn order.
        peak_memory_mib: The highest peak memory of any turn; 0 when no memory was measured.
    """

    seconds: list[float] = field(default_factory=list)
    peak_memory_mib: float = 0.0

    @property
    def median_s(self) -> float:
        """Median seconds per call over the turns: robust to a turn that another job slowed."""
        return statistics.median(self.seconds)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for queued GPU work before reading the clock; nothing to wait for on CPU."""
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def time_in_turns(
    functions: Mapping[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] = lambda: None,
    memory: PeakMemory | None = None,
    min_seconds: float = 0.0,
    pause_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Turns]:
    """Time each function over ``repeats`` turns after ``warmup`` untimed calls each.

    Turn by turn, every function runs: in the order given on even turns, in reverse on odd ones, so that no function
    always runs right after another (whose caches or clocks it would inherit). A turn calls its function once, or until
    ``min_seconds`` have passed (so that short calls are timed over many), and records the seconds per call.

    Args:
        functions: The callables to time, by name.
        warmup: Untimed calls of each function before the first turn.
        repeats: Timed turns of each function.
        synchronize: Waits for queued device work; called before the clock starts and after each call.
        memory: Reset before each turn and read after it. Defaults to ``None``: peaks stay 0.
        min_seconds: Least time per turn. Defaults to ``0.0``: one call per turn.
        pause_s: Pause before each turn, so that the previous runtime's worker threads go idle. Defaults to ``0.0``.
        clock: Seconds from an arbitrary start. Defaults to ``time.perf_counter``.
        sleep: Waits ``pause_s``. Defaults to ``time.sleep``.

    Returns:
        The turns of each function, by name.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    turns = {name: Turns() for name in functions}
    for turn in range(repeats):
        order = list(functions.items())
        for name, function in order[::-1] if turn % 2 else order:
            if pause_s:
                sleep(pause_s)
            synchronize()
            if memory is not None:
                memory.reset()
            turns[name].seconds.append(_seconds_per_call(function, synchronize, min_seconds, clock))
            if memory is not None:
                turns[name].peak_memory_mib = max(turns[name].peak_memory_mib, memory.peak_mib())
    return turns


def _seconds_per_call(
    function: Callable[[], object], synchronize: Callable[[], None], min_seconds: float, clock: Callable[[], float]
) -> float:
    calls, start = 0, clock()
    while True:
        function()
        synchronize()
        calls += 1
        elapsed = clock() - start
        if elapsed >= min_seconds:
            return elapsed / calls
