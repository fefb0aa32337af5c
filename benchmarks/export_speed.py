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
(:func:`fastflow2d_demo_data.generate_photo_dataset`) instead of the demo textures. The thresholds come
from validation images that are not test images. The script exits non-zero if an export or a measurement fails.

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
from collections.abc import Callable
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
from lightning.pytorch import seed_everything
from torchmetrics.functional.classification import binary_auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.export import OPENVINO_F32_CONFIG
from benchmarks.harness.environment import capture
from benchmarks.harness.memory import MIB
from benchmarks.harness.records import Record, markdown_table, write_report
from benchmarks.harness.timing import time_in_turns
from fastflow2d_demo_data import generate_demo_dataset, generate_photo_dataset

PAUSE_S = 0.5
"""Pause before timing each variant, so that the previous runtime's worker threads have gone idle."""

Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], Outputs]

MODE = "demo_test_set"
"""The mode of every record: each runtime is measured on the demo test set."""


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


def eager_runner(model: Fastflow2D) -> Runner:
    """Run the Lightning module (pre-processing, model, post-processing) under inference mode."""

    def run(images: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outputs = model(torch.from_numpy(images))
        return {name: value.numpy() for name, value in outputs._asdict().items() if value is not None}

    return run


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
    environment = capture(args.seed, torch.device("cpu"))  # before the runs: the commit they start with
    records = measure(runners, root, args)
    sections = {
        "openvino_cpu_default_precision": str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "args": {name: str(value) for name, value in vars(args).items()},
    }
    write_report(args.output, environment, records, sections)
    print(export_table(records, args.batch_sizes))  # noqa: T201 - the script's output
    return 0


def measure(runners: dict[str, tuple[Runner, Path | None]], root: Path, args: argparse.Namespace) -> list[Record]:
    """Parity with eager PyTorch (the first runner), image AUROC, file size and throughput of every runner."""
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
    return [
        Record(
            name,
            MODE,
            {
                **files_mib(path),
                **parity(results[name], reference, labels, masks),
                **{f"images_per_s_batch{size}": rates[size][name] for size in args.batch_sizes},
            },
        )
        for name, (_, path) in runners.items()
    ]


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


def export_table(records: list[Record], batch_sizes: list[int]) -> str:
    """The records as a markdown table, with throughput also relative to eager PyTorch (the first record)."""
    eager = records[0].values
    rows = []
    for record in records:
        values = record.values
        rates = [(values[f"images_per_s_batch{size}"], eager[f"images_per_s_batch{size}"]) for size in batch_sizes]
        rows.append(
            [
                record.model,
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


if __name__ == "__main__":
    sys.exit(main())
