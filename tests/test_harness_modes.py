# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/modes.py: the timed side-by-side modes on tiny models."""

import pytest
import torch

from anomalib_fastflow2d import resolve
from benchmarks.harness.adapters import Fastflow2DUnderTest, FastflowUnderTest, FlowSettings
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.modes import MODES, measure_eager, measure_training_step, timed_records
from benchmarks.harness.settings import PRECISIONS, RunSettings
from benchmarks.harness.timing import Turns

TINY_FLOW = FlowSettings(
    config=resolve("resnet18", flow_steps=2, conv3x3_only=False, hidden_ratio=0.5),
    pre_trained=False,
    input_size=(64, 64),
)


def test_modes_are_listed_in_table_order() -> None:
    assert MODES[:6] == ("train", "test", "eager_batch1", "eager_batch8", "eager_batch32", "train_step_batch32")
    assert MODES[6:] == tuple(
        f"openvino_{weights}_batch{size}" for weights in ("fp32", "fp16", "int8") for size in (1, 32)
    )


def test_timed_records_turn_median_seconds_into_rates_and_latencies() -> None:
    timings = {"a": Turns([0.5, 0.1, 0.2], peak_memory_mib=3.0), "b": Turns([1.0])}
    assert [record.as_json() for record in timed_records("eager_batch4", 4, timings)] == [
        {"model": "a", "mode": "eager_batch4", "images_per_s": 20.0, "latency_ms": 200.0, "peak_memory_mib": 3.0},
        {"model": "b", "mode": "eager_batch4", "images_per_s": 4.0, "latency_ms": 1000.0, "peak_memory_mib": 0.0},
    ]


def test_eager_mode_times_each_model_in_eval_mode() -> None:
    models = [Fastflow2DUnderTest(TINY_FLOW), FastflowUnderTest(TINY_FLOW)]
    run_settings = RunSettings(warmup=0, repeats=1)
    records = measure_eager(models, 1, TINY_FLOW, run_settings, PeakMemory(torch.device("cpu")))
    assert [(record.model, record.mode) for record in records] == [
        ("Fastflow2D", "eager_batch1"),
        ("Fastflow", "eager_batch1"),
    ]
    for record in records:
        assert record.values["images_per_s"] == pytest.approx(1000 / record.values["latency_ms"])
    assert not any(model.module.training for model in models)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_step_mode_times_one_optimizer_step_of_each_model(precision: str) -> None:
    models = [Fastflow2DUnderTest(TINY_FLOW), FastflowUnderTest(TINY_FLOW)]
    before = {
        model.name: [p.detach().clone() for p in model.module.model.parameters() if p.requires_grad] for model in models
    }
    run_settings = RunSettings(precision=precision, warmup=0, repeats=2)
    memory = PeakMemory(torch.device("cpu"))
    records = measure_training_step(models, TINY_FLOW, run_settings, memory)
    assert [(record.model, record.mode) for record in records] == [
        ("Fastflow2D", "train_step_batch32"),
        ("Fastflow", "train_step_batch32"),
    ]
    for record in records:
        assert record.values["images_per_s"] == pytest.approx(32_000 / record.values["latency_ms"])
        assert record.values["peak_memory_mib"] > 0
    for model in models:
        after = [p for p in model.module.model.parameters() if p.requires_grad]
        assert all(p.isfinite().all() for p in after), model.name
        assert any(not torch.equal(old, new) for old, new in zip(before[model.name], after, strict=True)), model.name
        assert not model.module.training
