# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Fastflow2D against anomalib's Fastflow, side by side in one process: speed, peak memory and AUROC.

Both models get the same backbone (and weights policy), input size, flow steps, subnet kernels and hidden ratio,
the same demo data, seed, batch size and number of epochs. The flow settings default to Fastflow2D's preset for
the backbone. For each model and mode the script writes one JSON record, and it prints a markdown table with the
ratio Fastflow2D / Fastflow of every number.

Modes:
    ``train``: images/s and wall time of the training epochs after the first (from an epoch's start to its last
        optimizer step, so validation is left out), the first epoch's time, and peak memory of the fit.
    ``test``: image and pixel AUROC on the demo test set after that training.
    ``eager_batch1``, ``eager_batch32``: eval forward of the trained torch model (backbone, flows, anomaly map)
        on one batch of pre-processed size, under ``torch.inference_mode``: the median of timed runs after
        warm-up. The two models take turns run by run, so that a busy machine slows both alike. Pre- and
        post-processing are the same for both models and are left out. Fastflow2D runs through
        :meth:`Fastflow2D.predict_images`, so a ``compile_mode`` given with ``--fastflow2d-arg`` is used.
    ``train_step_batch32``: one optimizer step (backbone, flows, loss, backward, Adam) on a fixed batch of 32
        images, timed like the eager modes. Fastflow2D's backbone runs here too: the step leaves the feature
        cache out, whose gain shows in the ``train`` mode.
    ``openvino_fp32_batch1`` ... ``openvino_int8_batch32``: both trained models exported with anomalib's exporter
        (ONNX opset 18; FP32 weights, FP16 weights, or NNCF INT8 quantisation calibrated on the demo data), run
        on CPU with the ``openvino`` runtime in full precision (``INFERENCE_PRECISION_HINT=f32``), taking turns
        as in eager mode. These graphs include pre- and post-processing. ``file_mib`` is the weights file's size.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, reset before each measured step. On CPU it is the
process's peak resident set (reset likewise on Linux): it includes the libraries, both models' weights, and memory
the allocator keeps from earlier steps, so on CPU it bounds a model's needs rather than isolating them.

Example:
    Run from the repository root::

        python benchmarks/speed.py --backbone resnet18 --size 256
        python benchmarks/speed.py --quick                      # under 3 minutes on 2 CPU cores
        python benchmarks/speed.py --device cuda --output results/speed-gpu.json
        python benchmarks/speed.py --fastflow2d-arg image_score=topk_mean   # any extra Fastflow2D argument
        python benchmarks/speed.py --device cuda --precision bf16-mixed --fastflow2d-arg compile_mode=reduce-overhead

``--precision bf16-mixed`` trains both models with Lightning's bfloat16 mixed precision and runs the eager and
training-step modes under bfloat16 autocast.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from anomalib.data import Batch, MVTecAD
from anomalib.deploy import CompressionType
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, Fastflow
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.presets import resolve_preset
from fastflow2d_demo_data import generate_demo_dataset

REFERENCE = "Fastflow"
"""The denominator of every ratio."""

CANDIDATE = "Fastflow2D"
"""The numerator of every ratio."""

EAGER_BATCH_SIZES = (1, 32)
"""Batch sizes of the eager inference modes."""

TRAIN_STEP_BATCH_SIZE = 32
"""Batch size of the training-step mode."""

PRECISIONS = ("32-true", "bf16-mixed")
"""Lightning precisions the run can use; the second also puts the eager and step modes under bfloat16 autocast."""

OPENVINO_VARIANTS: dict[str, CompressionType | None] = {
    "openvino_fp32": None,
    "openvino_fp16": CompressionType.FP16,
    "openvino_int8": CompressionType.INT8_PTQ,
}
"""Exports timed with the OpenVINO runtime: FP32 weights, FP16 weights, NNCF's INT8 post-training quantisation."""

OPENVINO_BATCH_SIZES = (1, 32)
"""Batch sizes of the OpenVINO modes."""

OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
"""Full-precision inference, so that both exports compute what their PyTorch models compute (see docs/deployment.md)."""

MODES = (
    "train",
    "test",
    *(f"eager_batch{size}" for size in EAGER_BATCH_SIZES),
    f"train_step_batch{TRAIN_STEP_BATCH_SIZE}",
    *(f"{variant}_batch{size}" for variant in OPENVINO_VARIANTS for size in OPENVINO_BATCH_SIZES),
)
"""Every mode, in table order."""

MEASURES = {
    "images_per_s": "images/s",
    "latency_ms": "latency (ms)",
    "epoch_s": "epoch after the first (s)",
    "first_epoch_s": "first epoch (s)",
    "peak_memory_mib": "peak memory (MiB)",
    "file_mib": "weights file (MiB)",
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
}
"""Every measure a record may hold, in table order, with its label."""

MIB = 2**20


@dataclass(frozen=True)
class FlowSettings:
    """What both models are built with."""

    backbone: str
    pre_trained: bool
    input_size: tuple[int, int]
    flow_steps: int
    conv3x3_only: bool
    hidden_ratio: float


@dataclass(frozen=True)
class DataSettings:
    """The generated demo data both models train and test on."""

    category: str = "brick"
    image_size: int = 128
    num_train: int = 48
    num_test_normal: int = 12
    num_test_anomalous: int = 12


@dataclass(frozen=True)
class RunSettings:
    """How long and how often each model is measured."""

    device: str = "cpu"
    precision: str = "32-true"
    epochs: int = 5
    batch_size: int = 16
    warmup: int = 3
    repeats: int = 10
    seed: int = 42
    num_workers: int = 0
    data: DataSettings = field(default_factory=DataSettings)


QUICK = RunSettings(
    epochs=2,
    batch_size=8,
    warmup=1,
    repeats=3,
    data=DataSettings(image_size=64, num_train=16, num_test_normal=6, num_test_anomalous=6),
)
"""``--quick``: the smallest run in which every measure is defined (with ``--size 64``)."""

QUICK_SIZE = 64


@dataclass(frozen=True)
class Record:
    """The measures of one model in one mode."""

    model: str
    mode: str
    values: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        """Flat record: ``{"model": ..., "mode": ..., measure: value, ...}``."""
        return {"model": self.model, "mode": self.mode, **self.values}


class PeakMemory:
    """Peak memory since the last :meth:`reset`: resident set (CPU, Linux) or allocated CUDA memory.

    On CPU, Linux resets the process's high-water mark through ``/proc/self/clear_refs``; elsewhere the peak is
    the process's lifetime peak, as :attr:`kind` says.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = device.type == "cuda" or Path("/proc/self/clear_refs").exists()

    @property
    def kind(self) -> str:
        """What :meth:`peak_mib` measures, for the JSON."""
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        return "peak resident set size" + ("" if self.resettable else " over the process lifetime")

    def reset(self) -> None:
        """Start a new peak."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")

    def peak_mib(self) -> float:
        """The peak since the last reset, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.resettable:
            return self._status_kib("VmHWM:") / 1024
        # ru_maxrss is in bytes on macOS, in KiB elsewhere.
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB

    @staticmethod
    def _status_kib(field: str) -> int:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for queued GPU work before reading the clock; nothing to wait for on CPU."""
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


class EpochTimer(Callback):
    """Wall time and number of images of every training epoch, from its start to the end of its last batch."""

    def __init__(self, synchronize: Callable[[], None]) -> None:
        self.synchronize = synchronize
        self.seconds: list[float] = []
        self.images: list[int] = []
        self._start = 0.0
        self._end = 0.0
        self._count = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock once the previous epoch's work has finished."""
        del trainer, pl_module
        self.synchronize()
        self._count = 0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401 - Lightning's signature
        batch: Batch,
        batch_idx: int,
    ) -> None:
        """Move the end of the epoch to the end of this batch's step."""
        del trainer, pl_module, outputs, batch_idx
        self.synchronize()
        self._end = time.perf_counter()
        self._count += len(batch.image) if batch.image is not None else 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the epoch's time and images; validation, which ran in between, is not counted."""
        del trainer, pl_module
        self.seconds.append(self._end - self._start)
        self.images.append(self._count)


def autocast(run: RunSettings) -> torch.autocast:
    """bfloat16 autocast on the run's device under ``bf16-mixed``; a disabled one otherwise."""
    device_type = torch.device(run.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=run.precision == "bf16-mixed")


def inference_function(module: AnomalibModule) -> Callable[[torch.Tensor], Any]:
    """What eval-mode inference of pre-processed images runs: the torch model (compiled where Fastflow2D's is)."""
    return cast("Callable[[torch.Tensor], Any]", module.model)


def training_loss_function(module: AnomalibModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training loss of a batch of pre-processed images, as each model's ``training_step`` computes it."""
    model = cast("Any", module.model)
    if isinstance(module, Fastflow2D):
        return lambda images: module.loss(*model.encode(model.features(images)))
    return lambda images: module.loss(*model(images))


def build_fastflow2d(flow: FlowSettings, extra_arguments: Mapping[str, Any]) -> AnomalibModule:
    """Fastflow2D with the shared settings and any extra arguments of ``--fastflow2d-arg``."""
    return Fastflow2D(
        backbone=flow.backbone,
        pre_trained=flow.pre_trained,
        flow_steps=flow.flow_steps,
        conv3x3_only=flow.conv3x3_only,
        hidden_ratio=flow.hidden_ratio,
        input_size=flow.input_size,
        visualizer=False,
        **extra_arguments,
    )


def build_fastflow(flow: FlowSettings) -> AnomalibModule:
    """The reference, anomalib's Fastflow, with the shared settings; its input size comes from its pre-processor."""
    return Fastflow(
        backbone=flow.backbone,
        pre_trained=flow.pre_trained,
        flow_steps=flow.flow_steps,
        conv3x3_only=flow.conv3x3_only,
        hidden_ratio=flow.hidden_ratio,
        pre_processor=Fastflow.configure_pre_processor(image_size=flow.input_size),
        visualizer=False,
    )


def measure_training(
    model: AnomalibModule, datamodule: MVTecAD, run: RunSettings, memory: PeakMemory, root: Path
) -> tuple[Record, Record]:
    """Train for ``run.epochs`` (validating once, at the end), then test: the ``train`` and ``test`` records."""
    device = torch.device(run.device)
    timer = EpochTimer(synchronizer(device))
    engine = Engine(
        callbacks=[timer],
        logger=False,
        default_root_dir=root,
        accelerator=device.type,
        devices=1,
        precision=run.precision,
        max_epochs=run.epochs,
        check_val_every_n_epoch=run.epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    seed_everything(run.seed, verbose=False)
    memory.reset()
    engine.fit(model, datamodule=datamodule)
    peak = memory.peak_mib()
    later_epochs = timer.seconds[1:]
    train = {
        "images_per_s": statistics.median(
            images / seconds for images, seconds in zip(timer.images[1:], later_epochs, strict=True)
        ),
        "epoch_s": statistics.median(later_epochs),
        "first_epoch_s": timer.seconds[0],
        "peak_memory_mib": peak,
    }
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    test = {"image_auroc": float(metrics["image_AUROC"]), "pixel_auroc": float(metrics["pixel_AUROC"])}
    name = type(model).__name__
    return Record(name, "train", train), Record(name, "test", test)


def time_in_turns(
    functions: Mapping[str, Callable[[], object]], run: RunSettings, memory: PeakMemory | None = None
) -> dict[str, tuple[float, float]]:
    """Median seconds and peak memory (MiB) of each function over ``run.repeats`` turns after ``run.warmup`` calls.

    The functions take turns call by call, so that a busy machine slows them alike. Without ``memory`` the peaks
    are 0.
    """
    synchronize = synchronizer(torch.device(run.device))
    for function in functions.values():
        for _ in range(run.warmup):
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    peak = dict.fromkeys(functions, 0.0)
    for _ in range(run.repeats):
        for name, function in functions.items():
            synchronize()
            if memory is not None:
                memory.reset()
            start = time.perf_counter()
            function()
            synchronize()
            seconds[name].append(time.perf_counter() - start)
            if memory is not None:
                peak[name] = max(peak[name], memory.peak_mib())
    return {name: (statistics.median(times), peak[name]) for name, times in seconds.items()}


def timed_records(mode: str, batch_size: int, timings: Mapping[str, tuple[float, float]]) -> list[Record]:
    """Images/s, latency and peak memory of each model from :func:`time_in_turns`."""
    return [
        Record(name, mode, {"images_per_s": batch_size / median, "latency_ms": median * 1000, "peak_memory_mib": peak})
        for name, (median, peak) in timings.items()
    ]


def fixed_images(batch_size: int, flow: FlowSettings, run: RunSettings) -> torch.Tensor:
    """The same random pre-processed batch for every model."""
    generator = torch.Generator().manual_seed(run.seed)
    return torch.randn(batch_size, 3, *flow.input_size, generator=generator).to(run.device)


def measure_eager(
    models: Mapping[str, AnomalibModule], batch_size: int, flow: FlowSettings, run: RunSettings, memory: PeakMemory
) -> list[Record]:
    """Median eval-forward time of each model on one fixed batch, under ``torch.inference_mode``."""
    images = fixed_images(batch_size, flow, run)
    functions = {}
    for name, model in models.items():
        model.eval()
        functions[name] = partial(inference_function(model), images)
    with torch.inference_mode(), autocast(run):
        timings = time_in_turns(functions, run, memory)
    return timed_records(f"eager_batch{batch_size}", batch_size, timings)


def measure_training_step(
    models: Mapping[str, AnomalibModule], flow: FlowSettings, run: RunSettings, memory: PeakMemory
) -> list[Record]:
    """Median time of one optimizer step of each model on one fixed batch (this changes the models' weights)."""
    images = fixed_images(TRAIN_STEP_BATCH_SIZE, flow, run)

    def step(loss_of: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(run):
            loss = loss_of(images)
        loss.backward()
        optimizer.step()

    functions = {}
    for name, model in models.items():
        model.train()
        functions[name] = partial(step, training_loss_function(model), optimizer_of(model))
    timings = time_in_turns(functions, run, memory)
    for model in models.values():
        model.eval()
    return timed_records(f"train_step_batch{TRAIN_STEP_BATCH_SIZE}", TRAIN_STEP_BATCH_SIZE, timings)


def optimizer_of(model: AnomalibModule) -> torch.optim.Optimizer:
    """The model's own optimizer, from ``configure_optimizers`` in any of the forms Lightning accepts here."""
    configured: Any = model.configure_optimizers()
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    if isinstance(configured, list | tuple):
        configured = configured[0]
    return cast("torch.optim.Optimizer", configured)


def export_openvino(model: AnomalibModule, variant: str, datamodule: MVTecAD, root: Path) -> Path:
    """Export a trained model with anomalib's exporter (ONNX opset 18 for both), compressed as ``variant`` says."""
    compression = OPENVINO_VARIANTS[variant]
    return model.to_openvino(
        export_root=root / variant,
        compression_type=compression,
        datamodule=datamodule if compression is CompressionType.INT8_PTQ else None,
        onnx_kwargs={"opset_version": 18},
    )


def measure_openvino(
    exports: Mapping[str, Path], variant: str, batch_size: int, flow: FlowSettings, run: RunSettings
) -> list[Record]:
    """Median inference time of each export with the OpenVINO runtime on CPU, taking turns as in eager mode."""
    import openvino  # noqa: PLC0415 - only needed for these modes

    core = openvino.Core()
    compiled = {name: core.compile_model(path, "CPU", OPENVINO_CONFIG) for name, path in exports.items()}
    generator = torch.Generator().manual_seed(run.seed)
    images = torch.rand(batch_size, 3, *flow.input_size, generator=generator).numpy()
    timings = time_in_turns({name: partial(model, images) for name, model in compiled.items()}, run)
    return [
        Record(
            name,
            f"{variant}_batch{batch_size}",
            {
                "images_per_s": batch_size / median,
                "latency_ms": median * 1000,
                "file_mib": exports[name].with_suffix(".bin").stat().st_size / MIB,
            },
        )
        for name, (median, _) in timings.items()
    ]


def train_and_test(
    name: str,
    build: Callable[[FlowSettings], AnomalibModule],
    flow: FlowSettings,
    run: RunSettings,
    data_root: Path,
    work_root: Path,
) -> tuple[AnomalibModule, MVTecAD, list[Record]]:
    """The trained model, its data, and the ``train`` and ``test`` records of a fresh model built from the seed."""
    seed_everything(run.seed, verbose=False)
    model = build(flow)
    datamodule = MVTecAD(
        root=data_root,
        category=run.data.category,
        train_batch_size=run.batch_size,
        eval_batch_size=run.batch_size,
        num_workers=run.num_workers,
    )
    records = measure_training(model, datamodule, run, PeakMemory(torch.device(run.device)), work_root / name)
    return model, datamodule, list(records)


def measure(
    builders: Mapping[str, Callable[[FlowSettings], AnomalibModule]],
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
    trained: dict[str, tuple[AnomalibModule, MVTecAD]] = {}
    records: list[Record] = []
    for name, build in builders.items():
        model, datamodule, model_records = train_and_test(name, build, flow, run, data_root, work_root)
        trained[name] = (model, datamodule)
        records += model_records
    if not inference:
        return sorted(records, key=lambda record: list(MODES).index(record.mode))
    modules = {name: model.to(run.device) for name, (model, _) in trained.items()}
    memory = PeakMemory(torch.device(run.device))
    for batch_size in EAGER_BATCH_SIZES:
        records += measure_eager(modules, batch_size, flow, run, memory)
    records += measure_training_step(modules, flow, run, memory)
    for variant in OPENVINO_VARIANTS if openvino else ():
        exports = {
            name: export_openvino(model.cpu(), variant, datamodule, work_root / name / "export")
            for name, (model, datamodule) in trained.items()
        }
        for batch_size in OPENVINO_BATCH_SIZES:
            records += measure_openvino(exports, variant, batch_size, flow, run)
    return sorted(records, key=lambda record: list(MODES).index(record.mode))


def ratios(records: Sequence[Record]) -> list[Record]:
    """``CANDIDATE / REFERENCE`` of every measure of every mode, as records of the model ``"ratio"``."""
    by_key = {(record.model, record.mode): record.values for record in records}
    modes = dict.fromkeys(record.mode for record in records)
    return [
        Record(
            f"{CANDIDATE} / {REFERENCE}",
            mode,
            {
                measure: _ratio(by_key[CANDIDATE, mode][measure], by_key[REFERENCE, mode][measure])
                for measure in by_key[CANDIDATE, mode]
            },
        )
        for mode in modes
    ]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def markdown_table(records: Sequence[Record]) -> str:
    """One row per mode and measure; one column per model, then the ratio."""
    models = list(dict.fromkeys(record.model for record in records))
    by_key = {(record.model, record.mode): record.values for record in records}
    lines = ["| mode | measure | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for mode in dict.fromkeys(record.mode for record in records):
        for measure, label in MEASURES.items():
            if measure in by_key[models[0], mode]:
                cells = [_format(by_key[model, mode][measure]) for model in models]
                lines.append(f"| {mode} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"  # noqa: PLR2004 - switch to thousands


def machine(device: torch.device) -> dict[str, Any]:
    """The CPU model, core count, threads torch uses, and the GPU name on CUDA."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(encoding="utf-8").splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    """Versions of what is measured, and the repository's commit (``+dirty`` with uncommitted changes)."""
    packages = ("anomalib-fastflow2d", "anomalib", "torch", "timm", "lightning")
    found = {package: _version(package) for package in packages}
    try:
        commit, dirty = _git("rev-parse", "HEAD"), _git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    return {"python": platform.python_version(), **found, "commit": commit + ("+dirty" if dirty else "")}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # imported from a source tree on PYTHONPATH
        return "not installed"


def _git(*arguments: str) -> str:
    repository = Path(__file__).resolve().parents[1]
    command = ["git", "-C", str(repository), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603


def parse_extra_arguments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["name=value", ...]`` with YAML values: ``cache_features=true`` gives ``{"cache_features": True}``."""
    arguments = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            msg = f"--fastflow2d-arg takes NAME=VALUE, got {pair!r}."
            raise ValueError(msg)
        arguments[name] = yaml.safe_load(value)
    return arguments


def settings_from(arguments: argparse.Namespace) -> tuple[FlowSettings, RunSettings]:
    """Flow settings from the backbone's Fastflow2D preset and the overrides; run settings from ``--quick``."""
    preset = resolve_preset(arguments.backbone)
    size = arguments.size or (QUICK_SIZE if arguments.quick else None)
    flow = FlowSettings(
        backbone=arguments.backbone,
        pre_trained=arguments.pre_trained,
        input_size=(size, size) if size else preset.input_size,
        flow_steps=arguments.flow_steps or preset.flow_steps,
        conv3x3_only=preset.conv3x3_only if arguments.conv3x3_only is None else arguments.conv3x3_only,
        hidden_ratio=arguments.hidden_ratio or preset.hidden_ratio,
    )
    run = QUICK if arguments.quick else RunSettings()
    overrides = {
        name: getattr(arguments, name)
        for name in ("epochs", "batch_size", "warmup", "repeats", "num_workers")
        if getattr(arguments, name) is not None
    }
    data = run.data if arguments.num_train is None else replace(run.data, num_train=arguments.num_train)
    run = replace(
        run, device=arguments.device, precision=arguments.precision, seed=arguments.seed, data=data, **overrides
    )
    if run.epochs < 2:  # noqa: PLR2004 - one epoch to warm up, one to time
        msg = f"--epochs must be at least 2 (the first epoch is not timed), got {run.epochs}."
        raise ValueError(msg)
    if run.repeats < 1:
        msg = f"--repeats must be at least 1, got {run.repeats}."
        raise ValueError(msg)
    return flow, run


def parser() -> argparse.ArgumentParser:
    """The command line; flow settings default to Fastflow2D's preset for the backbone."""
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--backbone", default="resnet18", help="A backbone both models support. Default: resnet18.")
    cli.add_argument("--size", type=int, help="Square input size. Default: the preset's (64 with --quick).")
    cli.add_argument("--flow-steps", type=int, help="Coupling blocks per flow. Default: the preset's.")
    cli.add_argument("--conv3x3-only", action=argparse.BooleanOptionalAction, help="Default: the preset's.")
    cli.add_argument("--hidden-ratio", type=float, help="Subnet hidden channel ratio. Default: the preset's.")
    cli.add_argument("--pre-trained", action="store_true", help="Pretrained backbone weights (needs the hub).")
    cli.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    cli.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=PRECISIONS[0],
        help="Lightning precision of training; bf16-mixed also autocasts the eager and step modes. Default: 32-true.",
    )
    cli.add_argument("--quick", action="store_true", help="Tiny data and few runs: under 3 minutes on 2 cores.")
    cli.add_argument(
        "--openvino",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Export both models and time them with OpenVINO (FP32, FP16, INT8). Default: on.",
    )
    cli.add_argument(
        "--train-only",
        action="store_true",
        help="Only the train and test modes: for backbones too slow to time at batch 32 on a CPU.",
    )
    cli.add_argument("--epochs", type=int, help=f"Training epochs, at least 2. Default: {RunSettings.epochs}.")
    cli.add_argument("--batch-size", type=int, help=f"Training and test batch. Default: {RunSettings.batch_size}.")
    cli.add_argument("--warmup", type=int, help=f"Untimed inference runs. Default: {RunSettings.warmup}.")
    cli.add_argument("--repeats", type=int, help=f"Timed inference runs. Default: {RunSettings.repeats}.")
    cli.add_argument("--num-workers", type=int, help="Data loader workers. Default: 0.")
    cli.add_argument("--seed", type=int, default=RunSettings.seed)
    cli.add_argument(
        "--num-train",
        type=int,
        help=f"Generated training images (with no --data-root). Default: {DataSettings.num_train}.",
    )
    cli.add_argument("--data-root", type=Path, help="Existing demo data. Default: generated in a temporary folder.")
    cli.add_argument(
        "--fastflow2d-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra Fastflow2D argument, value in YAML (repeatable), e.g. image_score=topk_mean.",
    )
    cli.add_argument("--output", type=Path, default=Path("results/speed.json"), help="Default: results/speed.json.")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both models, print the table, write the JSON; exit 1 if any measure is not finite."""
    arguments = parser().parse_args(argv)
    flow, run = settings_from(arguments)
    extra = parse_extra_arguments(arguments.fastflow2d_arg)
    builders: dict[str, Callable[[FlowSettings], AnomalibModule]] = {
        CANDIDATE: partial(build_fastflow2d, extra_arguments=extra),
        REFERENCE: build_fastflow,
    }
    device = torch.device(run.device)
    with tempfile.TemporaryDirectory(prefix="fastflow2d-speed-") as scratch:
        data_root = arguments.data_root or generate_demo_dataset(
            Path(scratch) / "data",
            [run.data.category],
            image_size=run.data.image_size,
            num_train=run.data.num_train,
            num_test_normal=run.data.num_test_normal,
            num_test_anomalous=run.data.num_test_anomalous,
            seed=run.seed,
        )
        records = measure(
            builders,
            flow,
            run,
            data_root,
            Path(scratch) / "runs",
            openvino=arguments.openvino,
            inference=not arguments.train_only,
        )
    records += ratios(records)
    report = {
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "machine": machine(device),
        "versions": versions(),
        "settings": {"flow": asdict(flow), "run": asdict(run), "fastflow2d_arguments": extra},
        "peak_memory": PeakMemory(device).kind,
        "records": [record.as_json() for record in records],
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(records))  # noqa: T201 - the script's output
    missing = [(r.model, r.mode, k) for r in records for k, v in r.values.items() if not math.isfinite(v)]
    if missing:
        print(f"Measures that are not finite: {missing}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
