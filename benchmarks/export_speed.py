# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Exported Fastflow2D and anomalib's Fastflow against eager PyTorch: parity, AUROC, file sizes and throughput.

The script trains Fastflow2D and anomalib's ``Fastflow`` on the demo data (the same data, seed, epochs, backbone
with random weights, and flow settings: Fastflow2D's preset for the backbone at ``--size``, with ``--flow-steps``
couplings if given), exports each with the stock ``Engine.export`` (OpenVINO FP32, FP16 weights, INT8 post-training
quantisation, ONNX; Fastflow only to FP32 and INT8_PTQ) and measures each runtime on the demo test set:

- parity with the same model in eager PyTorch: the largest ``pred_score`` and ``anomaly_map`` differences and how
  many ``pred_label`` values agree;
- image and pixel AUROC;
- throughput: images/s of the whole graph (resize, normalisation, model, post-processing) at each batch size. All
  rows of both models take turns round by round, so that a busy machine slows them alike, and the median round is
  reported.

OpenVINO runs at ``INFERENCE_PRECISION_HINT=f32``, at ``bf16`` and at the CPU plugin's default, which is bf16 on
CPUs that have it; "unmarked" is the same IR without the float32 marks of its precision-sensitive nodes, as
the IR before marking would run. ``--data photos`` measures on non-square photographs with painted defects
(:func:`fastflow2d_demo_data.generate_photo_dataset`) instead of the demo textures. The thresholds come
from validation images that are not test images.

The first table has one row per model and runtime ("Fastflow2D OpenVINO FP32 (f32)", "Fastflow OpenVINO FP32
(f32)", ...), with throughput also relative to the same model's eager PyTorch. The second, "Fastflow2D /
Fastflow", gives the throughput ratio of every runtime both models run (eager, FP32 at f32 and at the CPU default,
INT8 PTQ at the CPU default and at f32) at each batch size; the JSON holds these ratios as records of the model
``"Fastflow2D / Fastflow"`` whose mode is the runtime. The script exits non-zero if an export or a measurement
fails.

Example:
    Run from the repository root::

        python benchmarks/export_speed.py                      # resnet18, 256x256, batch 1 and 8
        python benchmarks/export_speed.py --epochs 1 --rounds 3 --output results/export-quick.json
        python benchmarks/export_speed.py --data photos --size 128 --epochs 3 --batch-sizes 32
"""

import argparse
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import openvino
import torch
from anomalib.data import AnomalibDataModule, Folder, MVTecAD
from anomalib.deploy import CompressionType, ExportType
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, Fastflow
from lightning.pytorch import seed_everything
from torchmetrics.functional.classification import binary_auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.export import ONNX_OPSET, OPENVINO_F32_CONFIG
from benchmarks.harness.adapters import (
    Fastflow2DUnderTest,
    FastflowUnderTest,
    FlowSettings,
    ModelUnderTest,
    flow_settings,
)
from benchmarks.harness.environment import capture
from benchmarks.harness.memory import MIB
from benchmarks.harness.records import Record, markdown_table, non_finite, ratios, write_report
from benchmarks.harness.timing import time_in_turns
from fastflow2d_demo_data import generate_demo_dataset, generate_photo_dataset

PAUSE_S = 0.5
"""Pause before timing each variant, so that the previous runtime's worker threads have gone idle."""

Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], Outputs]

CANDIDATE = Fastflow2DUnderTest.name
"""The numerator of every throughput ratio: ``"Fastflow2D"``."""

REFERENCE = FastflowUnderTest.name
"""The denominator of every throughput ratio: anomalib's ``"Fastflow"``."""

BUILDERS: dict[str, Callable[[FlowSettings], ModelUnderTest]] = {
    CANDIDATE: Fastflow2DUnderTest,
    REFERENCE: FastflowUnderTest,
}
"""How each model is built for training, from the shared flow settings."""

EAGER = "PyTorch eager"
"""The runtime every other runtime of the same model is compared with."""

EXPORTS: dict[str, tuple[ExportType, CompressionType | None]] = {
    "openvino_fp32": (ExportType.OPENVINO, None),
    "openvino_fp16": (ExportType.OPENVINO, CompressionType.FP16),
    "openvino_int8_ptq": (ExportType.OPENVINO, CompressionType.INT8_PTQ),
    "onnx": (ExportType.ONNX, None),
}
"""The exports ``Engine.export`` makes, by name: export type and compression."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--data", choices=["demo", "photos"], default="demo", help="demo textures or photographs")
    parser.add_argument("--size", type=int, default=256, help="demo image and model input size")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--flow-steps", type=int, help="coupling blocks per scale. Default: the preset's")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=9, help="timing rounds; the median is reported")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per variant and round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("results/export_speed.json"))
    return parser.parse_args(argv)


def datamodule(root: Path) -> AnomalibDataModule:
    """Demo data or photographs; validation images come from the test split, so no test score sits on a threshold."""
    loading: dict[str, Any] = {"num_workers": 0, "train_batch_size": 8, "eval_batch_size": 8, "seed": 0}
    loading |= {"val_split_mode": "from_test", "val_split_ratio": 0.5}
    if (root / "normal").is_dir():  # generate_photo_dataset's layout
        folders: dict[str, Any] = {"normal_dir": "normal", "normal_test_dir": "test_normal", "abnormal_dir": "abnormal"}
        return Folder(name="photos", root=root, mask_dir="mask", **folders, **loading)
    return MVTecAD(root=root, category="brick", **loading)


def openvino_runner(path: Path, config: dict[str, str]) -> Runner:
    """Compile the IR (or ONNX file) for the CPU and return a function that runs it."""
    compiled = openvino.Core().compile_model(path, "CPU", config)
    return lambda images: {output.any_name: value for output, value in compiled(images).items()}


def unmarked(path: Path) -> Path:
    """A copy of the IR without the float32 marks of export.precision_sensitive_nodes, as OpenVINO's default runs."""
    copy = path.parent.with_name("openvino-unmarked") / path.name
    copy.parent.mkdir()
    copy.write_text(re.sub(r'<attribute name="DisablePrecisionConversion"[^>]*/>', "", path.read_text()))
    copy.with_suffix(".bin").write_bytes(path.with_suffix(".bin").read_bytes())
    return copy


def onnx_runtime_runner(path: Path) -> Runner:
    """Load the ONNX file into ONNX Runtime and return a function that runs it."""
    options = onnxruntime.SessionOptions()
    # Idle threads that spin would steal the cores from the next variant timed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda images: dict(zip(names, session.run(None, {"input": images}), strict=True))


def eager_runner(model: AnomalibModule) -> Runner:
    """Run the Lightning module (pre-processing, model, post-processing) under inference mode."""

    def run(images: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outputs = model(torch.from_numpy(images))
        return {name: value.numpy() for name, value in outputs._asdict().items() if value is not None}

    return run


RUNTIMES: dict[str, tuple[str, Callable[[Path], Runner]] | None] = {
    EAGER: None,
    "OpenVINO FP32 (f32)": ("openvino_fp32", partial(openvino_runner, config=OPENVINO_F32_CONFIG)),
    "OpenVINO FP32 (CPU default)": ("openvino_fp32", partial(openvino_runner, config={})),
    "OpenVINO FP32 (bf16)": ("openvino_fp32", partial(openvino_runner, config={"INFERENCE_PRECISION_HINT": "bf16"})),
    "OpenVINO FP32 unmarked (CPU default)": ("openvino_fp32", lambda path: openvino_runner(unmarked(path), {})),
    "OpenVINO FP16 (f32)": ("openvino_fp16", partial(openvino_runner, config=OPENVINO_F32_CONFIG)),
    "OpenVINO INT8 PTQ (f32)": ("openvino_int8_ptq", partial(openvino_runner, config=OPENVINO_F32_CONFIG)),
    "OpenVINO INT8 PTQ (CPU default)": ("openvino_int8_ptq", partial(openvino_runner, config={})),
    "ONNX Runtime": ("onnx", onnx_runtime_runner),
}
"""Every runtime, in table order: the export it runs (``None``: the checkpoint in eager PyTorch) and its runner."""

MODEL_RUNTIMES: dict[str, tuple[str, ...]] = {
    CANDIDATE: tuple(RUNTIMES),
    REFERENCE: (
        EAGER,
        "OpenVINO FP32 (f32)",
        "OpenVINO FP32 (CPU default)",
        "OpenVINO INT8 PTQ (CPU default)",
        "OpenVINO INT8 PTQ (f32)",
    ),
}
"""The runtimes measured for each model: all for Fastflow2D; for anomalib's Fastflow those it is compared in."""

ModelRunners = dict[str, tuple[Runner, Path | None]]
"""A model's runners by runtime, each with the export it runs (``None`` for eager PyTorch)."""


def throughput(runners: dict[str, Runner], batch: np.ndarray, rounds: int, seconds: float) -> dict[str, float]:
    """Median images/s of each runner over ``rounds`` interleaved rounds of about ``seconds`` each."""
    turns = time_in_turns(
        {name: partial(runner, batch) for name, runner in runners.items()},
        warmup=1,
        repeats=rounds,
        min_seconds=seconds,
        pause_s=PAUSE_S,
    )
    return {name: statistics.median(len(batch) / per_call for per_call in turn.seconds) for name, turn in turns.items()}


def main(argv: Sequence[str] | None = None, model_runtimes: Mapping[str, Sequence[str]] = MODEL_RUNTIMES) -> int:
    """Train, export, measure, write the JSON and print the two markdown tables.

    Args:
        argv: The command line without the program name. Defaults to ``None``: ``sys.argv``.
        model_runtimes: The runtimes of each model of :data:`BUILDERS` to measure, by model name; each includes
            :data:`EAGER`. Defaults to :data:`MODEL_RUNTIMES`.

    Returns:
        0, or 1 if a measure is not finite.
    """
    args = parse_args(argv)
    environment = capture(args.seed, torch.device("cpu"), argv)  # before the runs: the commit they start with
    if missing := [name for name, runtimes in model_runtimes.items() if EAGER not in runtimes]:
        msg = f"Every model needs {EAGER!r}, the reference of its parity figures; {missing} have none."
        raise ValueError(msg)
    flow = flow_settings(args.backbone, size=args.size, flow_steps=args.flow_steps)  # pre_trained=False: no model hub
    with tempfile.TemporaryDirectory(prefix="export_speed_") as scratch:
        work = Path(scratch)
        root = generate_data(args, work / "data")
        runners = {
            name: train_and_export(name, runtimes, flow, root, work / name, args)
            for name, runtimes in model_runtimes.items()
        }
        records = measure(runners, root, args)
    throughput_ratios = compare(records, args.batch_sizes)
    sections = {
        "openvino_cpu_default_precision": str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "args": {name: str(value) for name, value in vars(args).items()},
        "flow": asdict(flow),
    }
    write_report(args.output, environment, [*records, *throughput_ratios], sections)
    print(export_table(records, args.batch_sizes))  # noqa: T201 - the script's output
    print(f"\n{CANDIDATE} / {REFERENCE}\n")  # noqa: T201
    print(ratio_table(records, throughput_ratios, args.batch_sizes))  # noqa: T201
    if failed := non_finite([*records, *throughput_ratios]):
        print(f"Measures that are not finite: {failed}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


def generate_data(args: argparse.Namespace, folder: Path) -> Path:
    """The demo textures or the photographs of ``--data``, at ``--size``; returns the dataset's root."""
    if args.data == "photos":
        return generate_photo_dataset(
            folder, image_size=(args.size * 3 // 4, args.size), num_test_normal=16, num_test_anomalous=16
        )
    return generate_demo_dataset(
        folder,
        categories=["brick"],
        image_size=args.size,
        num_train=48,
        num_test_normal=24,
        num_test_anomalous=24,
        seed=args.seed,
    )


def train_and_export(
    name: str, runtimes: Sequence[str], flow: FlowSettings, root: Path, work: Path, args: argparse.Namespace
) -> ModelRunners:
    """Train the model from the same seed, export it as its runtimes need, and build each runtime's runner."""
    seed_everything(args.seed)
    engine = Engine(max_epochs=args.epochs, accelerator="cpu", default_root_dir=work, logger=False)
    engine.fit(BUILDERS[name](flow).module, datamodule=datamodule(root))
    checkpoint = work / "model.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    needed = dict.fromkeys(spec[0] for runtime in runtimes if (spec := RUNTIMES[runtime]) is not None)
    exports = {export: export_model(restore(name, checkpoint, flow), export, root, work) for export in needed}
    runners: ModelRunners = {}
    for runtime in runtimes:
        spec = RUNTIMES[runtime]
        if spec is None:
            runners[runtime] = (eager_runner(restore(name, checkpoint, flow).eval()), None)
        else:
            runners[runtime] = (spec[1](exports[spec[0]]), exports[spec[0]])
    return runners


def restore(name: str, checkpoint: Path, flow: FlowSettings) -> AnomalibModule:
    """The trained model, loaded from its checkpoint as ``Engine.export(..., ckpt_path=...)`` loads it.

    Anomalib's Fastflow keeps its input size only in its pre-processor, which its checkpoint does not rebuild, so it
    is given again (``Engine.export`` with ``ckpt_path`` would load it at 256x256 and fail at any other size).
    """
    if name == REFERENCE:
        return Fastflow.load_from_checkpoint(
            checkpoint, pre_processor=Fastflow.configure_pre_processor(image_size=flow.input_size)
        )
    return Fastflow2D.load_from_checkpoint(checkpoint)


def export_model(model: AnomalibModule, export: str, root: Path, work: Path) -> Path:
    """Export with the stock ``Engine.export``, at the package's ONNX opset for both models.

    Anomalib's Fastflow exports at opset 14 by default, below what torch's exporter implements: the down-conversion
    fails and logs a traceback.
    """
    export_type, compression = EXPORTS[export]
    path = Engine(logger=False).export(
        model,
        export_type,
        work / export,
        compression_type=compression,
        datamodule=datamodule(root),
        onnx_kwargs={"opset_version": ONNX_OPSET},
    )
    if path is None:
        msg = f"{export} export returned no path"
        raise RuntimeError(msg)
    return path


def measure(runners: Mapping[str, ModelRunners], root: Path, args: argparse.Namespace) -> list[Record]:
    """Parity with the same model's eager PyTorch, AUROC, file size and throughput of every model and runtime.

    Every runner of every model is timed in the same rounds. Each record's model is the model's name, its mode the
    runtime's.
    """
    test = datamodule(root)
    test.setup("test")
    batches = list(test.test_dataloader())
    images = torch.cat([batch.image for batch in batches]).numpy()
    labels = torch.cat([batch.gt_label for batch in batches]).int()
    masks = torch.cat([batch.gt_mask for batch in batches]).reshape(len(images), 1, *images.shape[-2:]).float()
    masks = torch.nn.functional.interpolate(masks, size=(args.size, args.size), mode="nearest").int().flatten()
    rows = {(model, runtime): entry for model, entries in runners.items() for runtime, entry in entries.items()}
    results = {key: runner(images) for key, (runner, _) in rows.items()}
    rates = {
        batch_size: throughput(
            {row_name(*key): runner for key, (runner, _) in rows.items()},
            np.ascontiguousarray(images[np.arange(batch_size) % len(images)]),
            args.rounds,
            args.seconds,
        )
        for batch_size in args.batch_sizes
    }
    return [
        Record(
            model,
            runtime,
            {
                **files_mib(path),
                **parity(results[model, runtime], results[model, EAGER], labels, masks),
                **{f"images_per_s_batch{size}": rates[size][row_name(model, runtime)] for size in args.batch_sizes},
            },
        )
        for (model, runtime), (_, path) in rows.items()
    ]


def row_name(model: str, runtime: str) -> str:
    """A row's name in the tables and the timing, e.g. ``"Fastflow2D OpenVINO FP32 (f32)"``."""
    return f"{model} {runtime}"


def parity(outputs: Outputs, reference: Outputs, labels: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Largest score and map differences from the reference, labels that agree with it, image and pixel AUROC.

    ``masks`` are the flattened ground-truth masks at the anomaly map's size.
    """
    return {
        "max_score_diff": float(np.abs(outputs["pred_score"] - reference["pred_score"]).max()),
        "max_map_diff": float(np.abs(outputs["anomaly_map"] - reference["anomaly_map"]).max()),
        "labels_equal": int((outputs["pred_label"] == reference["pred_label"]).sum()),
        "images": len(labels),
        "image_auroc": float(binary_auroc(torch.from_numpy(outputs["pred_score"]).flatten(), labels)),
        "pixel_auroc": float(binary_auroc(torch.from_numpy(outputs["anomaly_map"]).flatten(), masks)),
    }


def files_mib(path: Path | None) -> dict[str, float]:
    """``{"file_mib": ...}``: the export folder's size (weights and metadata); nothing for eager PyTorch."""
    return {} if path is None else {"file_mib": sum(file.stat().st_size for file in path.parent.iterdir()) / MIB}


def compare(records: Sequence[Record], batch_sizes: Sequence[int]) -> list[Record]:
    """Fastflow2D's images/s over Fastflow's at each batch size, for every runtime both ran, in table order.

    The records are those of :func:`~benchmarks.harness.records.ratios`: model ``"Fastflow2D / Fastflow"``, mode the
    runtime, one ``images_per_s_batch<N>`` value per batch size.
    """
    measures = [f"images_per_s_batch{size}" for size in batch_sizes]
    modes = {model: {record.mode for record in records if record.model == model} for model in (CANDIDATE, REFERENCE)}
    shared = modes[CANDIDATE] & modes[REFERENCE]
    rates = [
        Record(record.model, record.mode, {measure: record.values[measure] for measure in measures})
        for record in records
        if record.model in {CANDIDATE, REFERENCE} and record.mode in shared
    ]
    return ratios(rates, CANDIDATE, REFERENCE)


def export_table(records: list[Record], batch_sizes: Sequence[int]) -> str:
    """The records as a markdown table, with throughput also relative to the same model's eager PyTorch."""
    eager = {record.model: record.values for record in records if record.mode == EAGER}
    rows = []
    for record in records:
        values = record.values
        rates = [
            (values[f"images_per_s_batch{size}"], eager[record.model][f"images_per_s_batch{size}"])
            for size in batch_sizes
        ]
        rows.append(
            [
                row_name(record.model, record.mode),
                f"{values['file_mib']:.1f}" if "file_mib" in values else "-",
                f"{values['max_score_diff']:.1e}",
                f"{values['max_map_diff']:.1e}",
                f"{values['labels_equal']:.0f}/{values['images']:.0f}",
                f"{values['image_auroc']:.3f}",
                f"{values['pixel_auroc']:.4f}",
                *(f"{rate:.1f} ({rate / eager_rate:.2f})" for rate, eager_rate in rates),
            ]
        )
    header = ["Runtime", "Files MB", "max score diff", "max map diff", "labels equal", "AUROC", "pixel AUROC"]
    return markdown_table([*header, *(f"img/s batch {size} (x eager)" for size in batch_sizes)], rows)


def ratio_table(records: Sequence[Record], throughput_ratios: Sequence[Record], batch_sizes: Sequence[int]) -> str:
    """The throughput ratios of :func:`compare` as a markdown table, each beside the two rates it divides."""
    by_key = {(record.model, record.mode): record.values for record in records}
    rows = []
    for ratio in throughput_ratios:
        cells = []
        for size in batch_sizes:
            measure = f"images_per_s_batch{size}"
            candidate, reference = by_key[CANDIDATE, ratio.mode][measure], by_key[REFERENCE, ratio.mode][measure]
            cells.append(f"{ratio.values[measure]:.2f} ({candidate:.1f} / {reference:.1f})")
        rows.append([ratio.mode, *cells])
    header = [f"batch {size}: ratio ({CANDIDATE} / {REFERENCE} img/s)" for size in batch_sizes]
    return markdown_table(["Runtime", *header], rows, [False, *[True] * len(batch_sizes)])


if __name__ == "__main__":
    sys.exit(main())
