# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Exported Fastflow2D against eager PyTorch: parity, image AUROC, file sizes and throughput.

The script trains Fastflow2D on the demo data, exports it to OpenVINO (FP32, FP16 weights, INT8 post-training
quantisation) and ONNX, and measures each runtime on the demo test set:

- parity with eager PyTorch: the largest ``pred_score`` and ``anomaly_map`` differences and how many
  ``pred_label`` values agree;
- image AUROC;
- throughput: images/s of the whole graph (resize, normalisation, model, post-processing) at each batch size. The
  variants take turns round by round, so that a busy machine slows them alike, and the median round is reported.

OpenVINO runs at ``INFERENCE_PRECISION_HINT=f32``, at ``bf16`` and at the CPU plugin's default, which is bf16 on
CPUs that have it; "unmarked" is the same IR without the float32 marks of its precision-sensitive nodes, as
the IR before marking would run. ``--data photos`` measures on non-square photographs with painted defects
(:func:`~anomalib_fastflow2d.demo_data.generate_photo_dataset`) instead of the demo textures. The thresholds come
from validation images that are not test images. The script exits non-zero if an export or a measurement fails.

Example:
    Run from the repository root::

        python benchmarks/export_speed.py                      # resnet18, 256x256, batch 1 and 8
        python benchmarks/export_speed.py --epochs 1 --rounds 3 --output results/export-quick.json
        python benchmarks/export_speed.py --data photos --size 128 --epochs 3 --batch-sizes 32
"""

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import torch
from anomalib.data import AnomalibDataModule, Folder, MVTecAD
from anomalib.deploy import CompressionType, ExportType
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from torchmetrics.functional.classification import binary_auroc

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.demo_data import generate_demo_dataset, generate_photo_dataset
from anomalib_fastflow2d.export import OPENVINO_F32_CONFIG

PAUSE_S = 0.5
"""Pause before timing each variant, so that the previous runtime's worker threads have gone idle."""

Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], Outputs]


@dataclass(frozen=True)
class Record:
    """One runtime's measurements."""

    runtime: str
    file_mb: float | None
    max_score_diff: float
    max_map_diff: float
    labels_equal: int
    images: int
    image_auroc: float
    pixel_auroc: float
    images_per_s: dict[int, float]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--data", choices=["demo", "photos"], default="demo", help="demo textures or photographs")
    parser.add_argument("--size", type=int, default=256, help="demo image and model input size")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=9, help="timing rounds; the median is reported")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per variant and round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("results/export_speed.json"))
    return parser.parse_args()


def datamodule(root: Path) -> AnomalibDataModule:
    """Demo data with validation images taken from the test split, so no test score sits on a threshold."""
    if (root / "normal").is_dir():  # generate_photo_dataset's layout
        return Folder(
            name="photos",
            root=root,
            normal_dir="normal",
            normal_test_dir="test_normal",
            abnormal_dir="abnormal",
            mask_dir="mask",
            num_workers=0,
            train_batch_size=8,
            eval_batch_size=8,
            val_split_mode="from_test",
            val_split_ratio=0.5,
            seed=0,
        )
    return MVTecAD(
        root=root,
        category="brick",
        num_workers=0,
        train_batch_size=8,
        eval_batch_size=8,
        val_split_mode="from_test",
        val_split_ratio=0.5,
        seed=0,
    )


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


def eager_runner(model: Fastflow2D) -> Runner:
    """Run the Lightning module (pre-processing, model, post-processing) under inference mode."""

    def run(images: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outputs = model(torch.from_numpy(images))
        return {name: value.numpy() for name, value in outputs._asdict().items() if value is not None}

    return run


def throughput(runners: dict[str, Runner], batch: np.ndarray, rounds: int, seconds: float) -> dict[str, float]:
    """Median images/s of each runner over ``rounds`` interleaved rounds of about ``seconds`` each."""
    for runner in runners.values():  # warm-up
        runner(batch)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            time.sleep(PAUSE_S)
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                runner(batch)
                calls += 1
            rates[name].append(calls * len(batch) / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> int:
    """Train, export, measure, write the JSON and print a markdown table."""
    args = parse_args()
    seed_everything(args.seed)
    work = Path(tempfile.mkdtemp(prefix="export_speed_"))
    if args.data == "photos":
        root = generate_photo_dataset(
            work / "data", image_size=(args.size * 3 // 4, args.size), num_test_normal=16, num_test_anomalous=16
        )
    else:
        root = generate_demo_dataset(
            work / "data",
            categories=["brick"],
            image_size=args.size,
            num_train=48,
            num_test_normal=24,
            num_test_anomalous=24,
            seed=args.seed,
        )
    options = {"backbone": args.backbone, "pre_trained": False, "input_size": (args.size, args.size)}
    engine = Engine(max_epochs=args.epochs, accelerator="cpu", default_root_dir=work, logger=False)
    engine.fit(Fastflow2D(**options), datamodule=datamodule(root))
    checkpoint = work / "model.ckpt"
    engine.trainer.save_checkpoint(checkpoint)

    def export(export_type: ExportType, compression: CompressionType | None = None) -> Path:
        path = Engine(logger=False).export(
            Fastflow2D(**options),
            export_type,
            work / f"{export_type.value}-{compression}",
            compression_type=compression,
            datamodule=datamodule(root),
            ckpt_path=checkpoint,
        )
        if path is None:
            msg = f"{export_type} export returned no path"
            raise RuntimeError(msg)
        return path

    fp32, fp16 = export(ExportType.OPENVINO), export(ExportType.OPENVINO, CompressionType.FP16)
    int8, onnx_file = export(ExportType.OPENVINO, CompressionType.INT8_PTQ), export(ExportType.ONNX)
    model = Fastflow2D.load_from_checkpoint(checkpoint).eval()
    runners: dict[str, tuple[Runner, Path | None]] = {
        "PyTorch eager": (eager_runner(model), None),
        "OpenVINO FP32 (f32)": (openvino_runner(fp32, OPENVINO_F32_CONFIG), fp32),
        "OpenVINO FP32 (CPU default)": (openvino_runner(fp32, {}), fp32),
        "OpenVINO FP32 (bf16)": (openvino_runner(fp32, {"INFERENCE_PRECISION_HINT": "bf16"}), fp32),
        "OpenVINO FP32 unmarked (CPU default)": (openvino_runner(unmarked(fp32), {}), fp32),
        "OpenVINO FP16 (f32)": (openvino_runner(fp16, OPENVINO_F32_CONFIG), fp16),
        "OpenVINO INT8 PTQ (f32)": (openvino_runner(int8, OPENVINO_F32_CONFIG), int8),
        "OpenVINO INT8 PTQ (CPU default)": (openvino_runner(int8, {}), int8),
        "ONNX Runtime": (onnx_runtime_runner(onnx_file), onnx_file),
    }

    test = datamodule(root)
    test.setup("test")
    batches = list(test.test_dataloader())
    images = torch.cat([batch.image for batch in batches]).numpy()
    labels = torch.cat([batch.gt_label for batch in batches]).int()
    masks = torch.cat([batch.gt_mask for batch in batches]).reshape(len(images), 1, *images.shape[-2:]).float()
    masks = torch.nn.functional.interpolate(masks, size=(args.size, args.size), mode="nearest").int().flatten()
    results = {name: runner(images) for name, (runner, _) in runners.items()}
    reference = results["PyTorch eager"]
    rates = {
        batch_size: throughput(
            {name: runner for name, (runner, _) in runners.items()},
            np.ascontiguousarray(images[np.arange(batch_size) % len(images)]),
            args.rounds,
            args.seconds,
        )
        for batch_size in args.batch_sizes
    }
    records = [
        Record(
            runtime=name,
            file_mb=None if path is None else sum(file.stat().st_size for file in path.parent.iterdir()) / 2**20,
            max_score_diff=float(np.abs(results[name]["pred_score"] - reference["pred_score"]).max()),
            max_map_diff=float(np.abs(results[name]["anomaly_map"] - reference["anomaly_map"]).max()),
            labels_equal=int((results[name]["pred_label"] == reference["pred_label"]).sum()),
            images=len(images),
            image_auroc=float(binary_auroc(torch.from_numpy(results[name]["pred_score"]), labels)),
            pixel_auroc=float(binary_auroc(torch.from_numpy(results[name]["anomaly_map"]).flatten(), masks)),
            images_per_s={batch_size: rates[batch_size][name] for batch_size in args.batch_sizes},
        )
        for name, (_, path) in runners.items()
    ]
    environment = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "openvino_cpu_default_precision": str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "versions": {name: version(name) for name in ["torch", "anomalib", "openvino", "nncf", "onnxruntime"]},
        "args": {name: str(value) for name, value in vars(args).items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"environment": environment, "records": [asdict(r) for r in records]}, indent=2))
    print(markdown_table(records, args.batch_sizes))  # noqa: T201 - the script's output
    return 0


def markdown_table(records: list[Record], batch_sizes: list[int]) -> str:
    """The records as a markdown table, with throughput also relative to eager PyTorch."""
    eager = records[0].images_per_s
    speed_columns = " | ".join(f"img/s batch {size} (x eager)" for size in batch_sizes)
    columns = "Runtime | Files MB | max score diff | max map diff | labels equal | AUROC | pixel AUROC"
    lines = [
        f"| {columns} | {speed_columns} |",
        "|---" * (7 + len(batch_sizes)) + "|",
    ]
    for record in records:
        speeds = " | ".join(
            f"{record.images_per_s[size]:.1f} ({record.images_per_s[size] / eager[size]:.2f})" for size in batch_sizes
        )
        size = "-" if record.file_mb is None else f"{record.file_mb:.1f}"
        lines.append(
            f"| {record.runtime} | {size} | {record.max_score_diff:.1e} | {record.max_map_diff:.1e} | "
            f"{record.labels_equal}/{record.images} | {record.image_auroc:.3f} | {record.pixel_auroc:.4f} | {speeds} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
