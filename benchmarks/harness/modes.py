# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The side-by-side modes of ``speed.py``: every model trained and tested, then timed in turns.

The models take turns run by run in every timed mode, so that a busy machine slows them alike. What differs
between the models is asked of their :class:`~benchmarks.harness.adapters.ModelUnderTest`.
"""

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from anomalib.data import MVTecAD
from anomalib.deploy import CompressionType

from anomalib_fastflow2d.export import ONNX_OPSET, OPENVINO_F32_CONFIG
from benchmarks.harness.adapters import FlowSettings, ModelUnderTest
from benchmarks.harness.memory import MIB, PeakMemory
from benchmarks.harness.records import Record
from benchmarks.harness.settings import RunSettings, autocast
from benchmarks.harness.timing import Turns, synchronizer, time_in_turns
from benchmarks.harness.training import train_and_test

EAGER_BATCH_SIZES = (1, 8, 32)
"""Batch sizes of the eager inference modes."""

TRAIN_STEP_BATCH_SIZE = 32
"""Batch size of the training-step mode."""

OPENVINO_VARIANTS: dict[str, CompressionType | None] = {
    "openvino_fp32": None,
    "openvino_fp16": CompressionType.FP16,
    "openvino_int8": CompressionType.INT8_PTQ,
}
"""Exports timed with the OpenVINO runtime: FP32 weights, FP16 weights, NNCF's INT8 post-training quantisation."""

OPENVINO_BATCH_SIZES = (1, 32)
"""Batch sizes of the OpenVINO modes."""

MODES = (
    "train",
    "test",
    *(f"eager_batch{size}" for size in EAGER_BATCH_SIZES),
    f"train_step_batch{TRAIN_STEP_BATCH_SIZE}",
    *(f"{variant}_batch{size}" for variant in OPENVINO_VARIANTS for size in OPENVINO_BATCH_SIZES),
)
"""Every mode, in table order."""


def _time(
    functions: Mapping[str, Callable[[], object]], run: RunSettings, memory: PeakMemory | None = None
) -> dict[str, Turns]:
    return time_in_turns(
        functions,
        warmup=run.warmup,
        repeats=run.repeats,
        synchronize=synchronizer(torch.device(run.device)),
        memory=memory,
    )


def timed_records(mode: str, batch_size: int, timings: Mapping[str, Turns]) -> list[Record]:
    """Images/s, latency and peak memory of each model from :func:`~benchmarks.harness.timing.time_in_turns`."""
    return [
        Record(
            name,
            mode,
            {
                "images_per_s": batch_size / turns.median_s,
                "latency_ms": turns.median_s * 1000,
                "peak_memory_mib": turns.peak_memory_mib,
            },
        )
        for name, turns in timings.items()
    ]


def fixed_images(batch_size: int, flow: FlowSettings, run: RunSettings) -> torch.Tensor:
    """The same random pre-processed batch for every model."""
    generator = torch.Generator().manual_seed(run.seed)
    return torch.randn(batch_size, 3, *flow.input_size, generator=generator).to(run.device)


def measure_eager(
    models: Sequence[ModelUnderTest], batch_size: int, flow: FlowSettings, run: RunSettings, memory: PeakMemory
) -> list[Record]:
    """Median eval-forward time of each model on one fixed batch, under ``torch.inference_mode``."""
    images = fixed_images(batch_size, flow, run)
    functions = {}
    for model in models:
        model.module.eval()
        functions[model.name] = partial(model.infer, images)
    with torch.inference_mode(), autocast(run):
        timings = _time(functions, run, memory)
    return timed_records(f"eager_batch{batch_size}", batch_size, timings)


def measure_training_step(
    models: Sequence[ModelUnderTest], flow: FlowSettings, run: RunSettings, memory: PeakMemory
) -> list[Record]:
    """Median time of one optimizer step of each model on one fixed batch (this changes the models' weights)."""
    images = fixed_images(TRAIN_STEP_BATCH_SIZE, flow, run)

    def step(model: ModelUnderTest, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(run):
            loss = model.training_loss(images)
        loss.backward()
        optimizer.step()

    functions = {}
    for model in models:
        model.module.train()
        functions[model.name] = partial(step, model, optimizer_of(model))
    timings = _time(functions, run, memory)
    for model in models:
        model.module.eval()
    return timed_records(f"train_step_batch{TRAIN_STEP_BATCH_SIZE}", TRAIN_STEP_BATCH_SIZE, timings)


def optimizer_of(model: ModelUnderTest) -> torch.optim.Optimizer:
    """The model's own optimizer, from ``configure_optimizers`` in any of the forms Lightning accepts here."""
    configured: Any = model.module.configure_optimizers()
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    if isinstance(configured, list | tuple):
        configured = configured[0]
    return cast("torch.optim.Optimizer", configured)


def export_openvino(model: ModelUnderTest, variant: str, datamodule: MVTecAD, root: Path) -> Path:
    """Export a trained model with anomalib's exporter at the package's ONNX opset, compressed as ``variant`` says."""
    compression = OPENVINO_VARIANTS[variant]
    return model.module.cpu().to_openvino(
        export_root=root / variant,
        compression_type=compression,
        datamodule=datamodule if compression is CompressionType.INT8_PTQ else None,
        onnx_kwargs={"opset_version": ONNX_OPSET},
    )


def measure_openvino(
    exports: Mapping[str, Path], variant: str, batch_size: int, flow: FlowSettings, run: RunSettings
) -> list[Record]:
    """Median inference time of each export with the OpenVINO runtime on CPU, in full precision, taking turns."""
    import openvino  # noqa: PLC0415 - only needed for these modes

    core = openvino.Core()
    compiled = {name: core.compile_model(path, "CPU", OPENVINO_F32_CONFIG) for name, path in exports.items()}
    generator = torch.Generator().manual_seed(run.seed)
    images = torch.rand(batch_size, 3, *flow.input_size, generator=generator).numpy()
    timings = _time({name: partial(model, images) for name, model in compiled.items()}, run)
    return [
        Record(
            name,
            f"{variant}_batch{batch_size}",
            {
                "images_per_s": batch_size / turns.median_s,
                "latency_ms": turns.median_s * 1000,
                "file_mib": exports[name].with_suffix(".bin").stat().st_size / MIB,
            },
        )
        for name, turns in timings.items()
    ]


def measure(
    builders: Sequence[Callable[[FlowSettings], ModelUnderTest]],
    flow: FlowSettings,
    run: RunSettings,
    data_root: Path,
    work_root: Path,
    openvino: bool = True,
    inference: bool = True,
) -> list[Record]:
    """Train and test each model in turn, then time their inference side by side; records grouped by mode.

    With ``inference=False`` only the ``train`` and ``test`` records are made; ``openvino=False`` leaves out the
    OpenVINO modes.
    """
    trained = [train_and_test(build, flow, run, data_root, work_root) for build in builders]
    records = [record for _, _, model_records in trained for record in model_records]
    if inference:
        models = [model for model, _, _ in trained]
        for model in models:
            model.module.to(run.device)
        memory = PeakMemory(torch.device(run.device))
        for batch_size in EAGER_BATCH_SIZES:
            records += measure_eager(models, batch_size, flow, run, memory)
        records += measure_training_step(models, flow, run, memory)
        for variant in OPENVINO_VARIANTS if openvino else ():
            exports = {
                model.name: export_openvino(model, variant, datamodule, work_root / model.name / "export")
                for model, datamodule, _ in trained
            }
            for batch_size in OPENVINO_BATCH_SIZES:
                records += measure_openvino(exports, variant, batch_size, flow, run)
    return sorted(records, key=lambda record: MODES.index(record.mode))
