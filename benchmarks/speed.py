# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Fastflow2D against anomalib's Fastflow, side by side in one process: speed, peak memory and AUROC.

Both models get the same backbone (and weights policy), input size, flow steps, subnet kernels and hidden ratio,
the same demo data, seed, batch size and number of epochs. The flow settings default to Fastflow2D's preset for
the backbone. For each model and mode the script writes one JSON record, beside the run's seed, versions, machine
and commit, and it prints a markdown table with the ratio Fastflow2D / Fastflow of every number. The measuring is
in :mod:`benchmarks.harness`; this script reads the command line.

Modes:
    ``train``: images/s and wall time of the training epochs after the first (from an epoch's start to its last
        optimizer step, so validation is left out), the first epoch's time, and peak memory of the fit.
    ``test``: image and pixel AUROC on the demo test set after that training.
    ``eager_batch1``, ``eager_batch8``, ``eager_batch32``: eval forward of the trained torch model (backbone,
        flows, anomaly map) on one batch of pre-processed size, under ``torch.inference_mode``: the median of
        timed runs after warm-up. The two models take turns run by run, so that a busy machine slows both alike.
        Pre- and post-processing are the same for both models and are left out. Fastflow2D runs through its
        torch model, so a ``compile_mode`` given with ``--fastflow2d-arg`` is used.
    ``train_step_batch32``: one optimizer step (backbone, flows, loss, backward, Adam) on a fixed batch of 32
        images, timed like the eager modes. Fastflow2D's backbone runs here too: the step leaves the feature
        cache out, whose gain shows in the ``train`` mode.
    ``openvino_fp32_batch1`` ... ``openvino_int8_batch32``: both trained models exported with anomalib's exporter
        (the package's ``ONNX_OPSET``; FP32 weights, FP16 weights, or NNCF INT8 quantisation calibrated on the
        demo data), run on CPU with the ``openvino`` runtime in full precision (``OPENVINO_F32_CONFIG``), taking
        turns as in eager mode. These graphs include pre- and post-processing. ``file_mib`` is the weights file's size.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, reset before each measured step. On CPU it is the
process's peak resident set (reset likewise on Linux): it includes the libraries, both models' weights, and memory
the allocator keeps from earlier steps, so on CPU it bounds a model's needs rather than isolating them.

Example:
    Run from the repository root::

        python benchmarks/speed.py --backbone resnet18 --size 256
        python benchmarks/speed.py --quick                      # about 4 minutes on 2 CPU cores, 6 exports
        python benchmarks/speed.py --device cuda --output results/speed-gpu.json
        python benchmarks/speed.py --fastflow2d-arg image_score=topk_mean   # any extra Fastflow2D argument
        python benchmarks/speed.py --device cuda --precision bf16-mixed --fastflow2d-arg compile_mode=reduce-overhead

``--precision bf16-mixed`` trains both models with Lightning's bfloat16 mixed precision and runs the eager and
training-step modes under bfloat16 autocast.
"""

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from benchmarks.harness.adapters import (
    Fastflow2DUnderTest,
    FastflowUnderTest,
    FlowSettings,
    ModelUnderTest,
    flow_settings,
)
from benchmarks.harness.environment import capture
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.modes import measure
from benchmarks.harness.records import Record, measure_table, non_finite, ratios, write_report
from benchmarks.harness.settings import PRECISIONS, DataSettings, RunSettings
from fastflow2d_demo_data import generate_demo_dataset

REFERENCE = FastflowUnderTest.name
"""The denominator of every ratio."""

CANDIDATE = Fastflow2DUnderTest.name
"""The numerator of every ratio."""

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

QUICK = RunSettings(
    epochs=2,
    batch_size=8,
    warmup=1,
    repeats=3,
    data=DataSettings(image_size=64, num_train=16, num_test_normal=6, num_test_anomalous=6),
)
"""``--quick``: the smallest run in which every measure is defined (with ``--size 64``)."""

QUICK_SIZE = 64
"""``--quick``'s input size unless ``--size`` is given."""


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
    flow = flow_settings(
        arguments.backbone,
        pre_trained=arguments.pre_trained,
        size=QUICK_SIZE if arguments.size is None and arguments.quick else arguments.size,
        flow_steps=arguments.flow_steps,
        conv3x3_only=arguments.conv3x3_only,
        hidden_ratio=arguments.hidden_ratio,
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
    cli.add_argument("--quick", action="store_true", help="Tiny data and few runs: about 4 minutes on 2 cores.")
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


def run_modes(
    arguments: argparse.Namespace, flow: FlowSettings, run: RunSettings, extra: dict[str, Any]
) -> list[Record]:
    """Every mode the arguments ask for, on the given demo data or on data generated in a temporary folder."""
    builders: list[Callable[[FlowSettings], ModelUnderTest]] = [
        partial(Fastflow2DUnderTest, extra_arguments=extra),
        FastflowUnderTest,
    ]
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
        return measure(
            builders,
            flow,
            run,
            data_root,
            Path(scratch) / "runs",
            openvino=arguments.openvino,
            inference=not arguments.train_only,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both models, print the table, write the JSON; exit 1 if any measure is not finite."""
    arguments = parser().parse_args(argv)
    flow, run = settings_from(arguments)
    # Both models run static shapes: let cuDNN pick each convolution's fastest algorithm (recorded in the JSON).
    torch.backends.cudnn.benchmark = run.device == "cuda"
    extra = parse_extra_arguments(arguments.fastflow2d_arg)
    device = torch.device(run.device)
    environment = capture(run.seed, device, argv)  # the commit and machine the runs start with
    records = run_modes(arguments, flow, run, extra)
    records += ratios(records, CANDIDATE, REFERENCE)
    sections = {
        "settings": {"flow": asdict(flow), "run": asdict(run), "fastflow2d_arguments": extra},
        "peak_memory": PeakMemory(device).kind,
    }
    write_report(arguments.output, environment, records, sections)
    print(measure_table(records, MEASURES))  # noqa: T201 - the script's output
    if missing := non_finite(records):
        print(f"Measures that are not finite: {missing}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
