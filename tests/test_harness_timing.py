# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/timing.py: turns in order, seconds per call, medians, pauses and peaks, on a fake clock."""

from collections.abc import Callable, Iterator

import pytest

from benchmarks.harness.timing import Turns, time_in_turns


class FakeClock:
    """A clock that moves only when a fake function runs, and a log of every event."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def function(self, name: str, durations: list[float]) -> Callable[[], None]:
        """A callable that logs its name and takes the next of ``durations`` (the last one repeats)."""
        remaining: Iterator[float] = iter(durations)
        last = durations[-1]

        def call() -> None:
            self.log.append(name)
            self.now += next(remaining, last)

        return call

    def sleep(self, seconds: float) -> None:
        self.log.append(f"sleep {seconds}")


class FakeMemory:
    """Peaks of 10, 30, 20, ... MiB, one per read; counts resets."""

    def __init__(self, peaks: list[float]) -> None:
        self.peaks = iter(peaks)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def peak_mib(self) -> float:
        return next(self.peaks)


def test_functions_take_turns_after_their_warmup_and_report_medians() -> None:
    clock = FakeClock()
    functions = {"a": clock.function("a", [9.0, 9.0, 5.0, 1.0, 3.0]), "b": clock.function("b", [2.0])}
    turns = time_in_turns(functions, warmup=2, repeats=3, clock=clock, sleep=clock.sleep)
    assert clock.log == ["a", "a", "b", "b", "a", "b", "b", "a", "a", "b"]  # odd turns in reverse order
    assert turns["a"].seconds == [5.0, 1.0, 3.0]
    assert turns["a"].median_s == 3.0
    assert turns["b"].seconds == [2.0, 2.0, 2.0]
    assert turns["b"].peak_memory_mib == 0.0


def test_a_turn_repeats_calls_until_min_seconds_and_reports_seconds_per_call() -> None:
    clock = FakeClock()
    turns = time_in_turns(
        {"fast": clock.function("fast", [0.25])}, warmup=0, repeats=2, min_seconds=1.0, clock=clock, sleep=clock.sleep
    )
    assert clock.log == ["fast"] * 8
    assert turns["fast"].seconds == [0.25, 0.25]


def test_pauses_come_before_every_turn_but_not_before_the_warmup() -> None:
    clock = FakeClock()
    functions = {"a": clock.function("a", [1.0]), "b": clock.function("b", [1.0])}
    time_in_turns(functions, warmup=1, repeats=2, pause_s=0.5, clock=clock, sleep=clock.sleep)
    assert clock.log == ["a", "b", "sleep 0.5", "a", "sleep 0.5", "b", "sleep 0.5", "b", "sleep 0.5", "a"]


def test_synchronize_runs_before_the_clock_starts_and_after_every_call() -> None:
    clock = FakeClock()
    turns = time_in_turns(
        {"a": clock.function("a", [1.0])},
        warmup=0,
        repeats=1,
        synchronize=lambda: clock.log.append("sync"),
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.log == ["sync", "a", "sync"]
    assert turns["a"].seconds == [1.0]


def test_memory_is_reset_every_turn_and_the_highest_peak_is_kept() -> None:
    clock = FakeClock()
    memory = FakeMemory([10.0, 5.0, 30.0, 7.0])
    functions = {"a": clock.function("a", [1.0]), "b": clock.function("b", [1.0])}
    turns = time_in_turns(functions, warmup=0, repeats=2, memory=memory, clock=clock, sleep=clock.sleep)
    assert memory.resets == 4
    # Peaks are read a, b, then b, a (the second turn runs in reverse).
    assert (turns["a"].peak_memory_mib, turns["b"].peak_memory_mib) == (10.0, 30.0)


def test_median_of_an_even_number_of_turns_is_the_mean_of_the_middle_two() -> None:
    assert Turns(seconds=[4.0, 1.0, 2.0, 8.0]).median_s == pytest.approx(3.0)
