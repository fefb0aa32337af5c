# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Small defects on large frames, paired by seed: anomalib's ``Fastflow`` at 256 px against Fastflow2D.

Fastflow2D runs at 256 px too, on whole frames at half their resolution, and in crop mode at full resolution (with
either feature norm). Every model is built right after ``seed_everything(seed)``, so all draw the same random
resnet18 and see the data in the same order, and is trained with anomalib's engine (validating once, at the end).
Each is then scored here on the test frames at their *own* resolution: its anomaly map is resized to the frame,
where the defects and their masks are, so a map computed at 256 px is judged on the pixels a user inspects.
Measures: pixel AUROC, pixel AUPR (average precision: defects under 3 % of the side make AUROC saturate), image
AUROC, training time per epoch after the first, the peak resident memory of the whole fit (``train_peak_mib``,
the final validation of whole frames included) and of the training epochs alone (``epochs_peak_mib``), each also as
its rise over the memory before training, and scoring time per frame in eager PyTorch and in OpenVINO at the CPU
default.

Example:
    Run from the repository root::

        python benchmarks/large_frames.py                       # 5 seeds, 1024 px frames, 256 px crops
        python benchmarks/large_frames.py --quick               # 128 px frames, 1 seed: a smoke test
        python benchmarks/large_frames.py --table results/large_frames.json   # the table of an earlier run
        python benchmarks/large_frames.py --frame 512 --models "Fastflow2D crop" "Fastflow2D crop channel"
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import openvino
import torch
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.data import MVTecAD
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, Fastflow
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from PIL import Image
from torchmetrics.functional.classification import binary_auroc, binary_average_precision
from torchvision.transforms.v2.functional import to_dtype, to_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.torch_model import DEFAULT_PIXEL_BUDGET
from benchmarks.harness.environment import capture
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.records import Record, markdown_table, write_report
from benchmarks.harness.timing import synchronizer
from benchmarks.harness.training import EpochTimer
from fastflow2d_demo_data import generate_large_frame_dataset

MODELS = (
    "Fastflow 256",
    "Fastflow2D 256",
    "Fastflow2D half",
    "Fastflow2D crop",
    "Fastflow2D crop channel",
    "Fastflow2D tiler",
)
"""anomalib's model at 256 px (the reference of every pair), Fastflow2D at 256 px, Fastflow2D on whole frames at half
their resolution, Fastflow2D in crop mode at full resolution with the per-position norm (the default) and with the
per-channel one, and Fastflow2D at full resolution with anomalib's ``TilerConfigurationCallback`` (tiles of the crop
size, no overlap)."""

DEFAULT_MODELS = MODELS[:4]
"""The models a run measures unless ``--models`` names others: the norms' comparison is a run of its own."""

MEASURES = (
    "pixel_aupr",
    "pixel_auroc",
    "image_auroc",
    "epoch_s",
    "train_peak_mib",
    "train_rise_mib",
    "epochs_peak_mib",
    "epochs_rise_mib",
    "eager_ms_per_frame",
    "openvino_ms_per_frame",
)
"""What each run records, in the tables' order."""


def build(model: str, arguments: argparse.Namespace) -> AnomalibModule:
    """One model of :data:`MODELS`: random-init resnet18, 3x3 subnets, ``arguments.flow_steps`` couplings."""
    if model == "Fastflow 256":
        return Fastflow(
            backbone="resnet18",
            pre_trained=False,
            flow_steps=arguments.flow_steps,
            conv3x3_only=True,
            pre_processor=Fastflow.configure_pre_processor(image_size=(arguments.small, arguments.small)),
        )
    if model == "Fastflow2D 256":
        return Fastflow2D(pre_trained=False, flow_steps=arguments.flow_steps, input_size=(arguments.small,) * 2)
    if model == "Fastflow2D tiler":
        return Fastflow2D(pre_trained=False, flow_steps=arguments.flow_steps, input_size=(arguments.frame,) * 2)
    if model == "Fastflow2D half":
        return Fastflow2D(pre_trained=False, flow_steps=arguments.flow_steps, input_size=(arguments.frame // 2,) * 2)
    return Fastflow2D(
        pre_trained=False,
        flow_steps=arguments.flow_steps,
        feature_norm="channel" if model.endswith("channel") else "position",
        input_size=(arguments.frame, arguments.frame),
        train_crop_size=(arguments.crop, arguments.crop),
        pixel_budget=arguments.pixel_budget,
    )


def run(model_name: str, datamodule: MVTecAD, seed: int, arguments: argparse.Namespace, work: Path) -> Record:
    """Train one model from ``seed`` and measure it on the full-resolution test frames."""
    memory = PeakMemory(torch.device("cpu"))
    timer = EpochTimer(synchronizer(torch.device("cpu")))
    training_peak = PeakBeforeValidation(memory)
    callbacks: list[Callback] = [timer, training_peak]
    if model_name.endswith("tiler"):
        tile = arguments.crop
        callbacks.append(TilerConfigurationCallback(enable=True, tile_size=tile, stride=tile))
    engine = training_engine(model_name, arguments, work, callbacks)
    seed_everything(seed, verbose=False)
    model = build(model_name, arguments)
    memory.reset()
    before = memory.peak_mib()
    engine.fit(model, datamodule=datamodule)
    peak = memory.peak_mib()
    values = {
        **score_full_resolution(model, datamodule),
        "epoch_s": statistics.median(timer.seconds[1:] or timer.seconds),
        "train_peak_mib": peak,
        "train_rise_mib": peak - before,
        "epochs_peak_mib": training_peak.mib,
        "epochs_rise_mib": training_peak.mib - before,
    }
    if seed < arguments.openvino_seeds:
        values["openvino_ms_per_frame"] = openvino_ms_per_frame(engine, model, datamodule, work / "export")
    return Record(model_name, "large frames", values, {"seed": seed})


def training_engine(
    model_name: str, arguments: argparse.Namespace, work: Path, callbacks: Sequence[Callback] = ()
) -> Engine:
    """The anomalib engine that trains one model: CPU, ``arguments.epochs`` epochs, validating once, at the end."""
    return Engine(
        callbacks=list(callbacks),
        default_root_dir=work / model_name.replace(" ", "_"),
        accelerator="cpu",
        devices=1,
        max_epochs=arguments.epochs,
        check_val_every_n_epoch=arguments.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


class PeakBeforeValidation(Callback):
    """The peak memory of the training epochs alone: read when the (final) validation starts, or at the end of fit.

    Validation scores whole frames, which costs what scoring costs; the training peak is what learning costs.
    """

    def __init__(self, memory: PeakMemory) -> None:
        self.memory = memory
        self.mib = float("nan")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Read the peak once, before the first validation."""
        del trainer, pl_module
        if self.mib != self.mib:  # still NaN
            self.mib = self.memory.peak_mib()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Read it at the end of fit where no validation ran."""
        self.on_validation_start(trainer, pl_module)


def score_full_resolution(model: AnomalibModule, datamodule: MVTecAD) -> dict[str, float]:
    """Pixel AUROC and AUPR at each frame's own resolution, image AUROC, and eager scoring time per frame."""
    model.eval()
    pre_process = cast("Callable[[torch.Tensor], torch.Tensor]", model.pre_processor)
    maps, masks, scores, labels, seconds = [], [], [], [], []
    with torch.no_grad():
        # Frames are read from their files: the datamodule's images were resized by the last model's pre-processor.
        for sample in datamodule.test_data.samples.itertuples():
            frame = frame_tensor(sample.image_path)
            started = time.perf_counter()
            prediction = model.model(pre_process(frame))
            seconds.append(time.perf_counter() - started)
            resized = torch.nn.functional.interpolate(
                prediction.anomaly_map, size=frame.shape[-2:], mode="bilinear", align_corners=False
            )
            maps.append(resized.flatten())
            masks.append(_mask(sample.mask_path, frame.shape[-2:]))
            scores.append(float(prediction.pred_score.flatten()[0]))
            labels.append(int(sample.label_index))
    pixel_maps, pixel_masks = torch.cat(maps), torch.cat(masks)
    return {
        "pixel_aupr": float(binary_average_precision(pixel_maps, pixel_masks)),
        "pixel_auroc": float(binary_auroc(pixel_maps, pixel_masks)),
        "image_auroc": float(binary_auroc(torch.tensor(scores), torch.tensor(labels))),
        "eager_ms_per_frame": 1000 * statistics.median(seconds[1:] or seconds),
    }


def frame_tensor(path: str) -> torch.Tensor:
    """An image file as a ``(1, 3, H, W)`` float tensor in ``[0, 1]``, as anomalib's datasets read it."""
    return to_dtype(to_image(Image.open(path).convert("RGB")), scale=True).unsqueeze(0)


def _mask(path: str, size: torch.Size) -> torch.Tensor:
    """A test frame's ground truth at its own resolution: all normal where the frame has no mask file."""
    if not path:
        return torch.zeros(size[0] * size[1], dtype=torch.long)
    return torch.from_numpy(np.asarray(Image.open(path).convert("L")) > 127).flatten().long()  # noqa: PLR2004


def openvino_ms_per_frame(engine: Engine, model: AnomalibModule, datamodule: MVTecAD, root: Path) -> float:
    """Median milliseconds per full-resolution frame of the model's OpenVINO export at the CPU default precision."""
    path = engine.export(model, ExportType.OPENVINO, export_root=root / type(model).__name__)
    compiled = openvino.Core().compile_model(str(path), "CPU")
    frame = frame_tensor(datamodule.test_data.samples["image_path"].iloc[0]).numpy()
    compiled(frame)  # warm-up
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        compiled(frame)
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def paired(records: Sequence[Record], model: str, measure: str) -> dict[str, float]:
    """Mean and standard deviation over seeds of ``model``'s ``measure``, and of its ratio to the first model's."""
    first = records[0].model  # the reference: the first model of every seed
    reference = {r.details["seed"]: r.values[measure] for r in records if r.model == first and measure in r.values}
    ours = {r.details["seed"]: r.values[measure] for r in records if r.model == model and measure in r.values}
    seeds = sorted(ours.keys() & reference.keys())
    values = [ours[seed] for seed in seeds]
    ratios = [ours[seed] / reference[seed] if reference[seed] else float("nan") for seed in seeds]
    differences = [ours[seed] - reference[seed] for seed in seeds]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "ratio": statistics.fmean(ratios),
        "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "difference": statistics.fmean(differences),
        "difference_std": statistics.stdev(differences) if len(differences) > 1 else 0.0,
        "seeds": len(seeds),
    }


def summary(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Every model's mean per measure, with its ratio and difference to anomalib's Fastflow, paired by seed."""
    measured = [measure for measure in MEASURES if any(measure in record.values for record in records)]
    models = list(dict.fromkeys(record.model for record in records))
    return [
        {"model": model, "measure": measure, **paired(records, model, measure)}
        for model in models
        for measure in measured
    ]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Measures down, models across: each model's mean (std over seeds), then its ratio to the first model's."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    measures = list(dict.fromkeys(row["measure"] for row in rows))
    cells = {(row["model"], row["measure"]): row for row in rows}
    table = [
        [measure, *(_cell(cells.get((model, measure)), model == models[0]) for model in models), _seeds(cells, measure)]
        for measure in measures
    ]
    header = ["measure", *(f"{model}{' (reference)' if index == 0 else ''}" for index, model in enumerate(models))]
    return markdown_table([*header, "seeds"], table, [False, *(True for _ in models), True])


def _cell(row: dict[str, Any] | None, reference: bool) -> str:
    if row is None:
        return "-"
    value = f"{row['mean']:.4g} ({row['std']:.2g})"
    return value if reference else f"{value}, {row['ratio']:.3g}x"


def _seeds(cells: dict[tuple[str, str], dict[str, Any]], measure: str) -> str:
    return str(max(row["seeds"] for (_, name), row in cells.items() if name == measure))


def report_table(path: Path) -> str:
    """The table of a run's JSON, without running anything."""
    report = json.loads(path.read_text(encoding="utf-8"))
    names = {"model", "mode", "seed"}
    records = [
        Record(
            entry["model"],
            entry["mode"],
            {key: value for key, value in entry.items() if key not in names},
            {"seed": entry["seed"]},
        )
        for entry in report["records"]
    ]
    return markdown(summary(records))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="Seeds 0..N-1. Default: 5.")
    parser.add_argument("--frame", type=int, default=1024, help="Frame side in pixels. Default: 1024.")
    parser.add_argument("--crop", type=int, default=256, help="Crop side of the crop mode. Default: 256.")
    parser.add_argument("--small", type=int, default=256, help="Side the 256 px models resize to. Default: 256.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--flow-steps", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=32)
    parser.add_argument("--num-test", type=int, default=8, help="Normal and anomalous test frames, each.")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS), help="The first is the reference."
    )
    parser.add_argument(
        "--openvino-seeds", type=int, default=1, help="Export and time OpenVINO for the first N seeds. Default: 1."
    )
    parser.add_argument(
        "--pixel-budget", type=int, default=DEFAULT_PIXEL_BUDGET, help="Crop mode's pixel_budget. Default: the model's."
    )
    parser.add_argument("--quick", action="store_true", help="128 px frames, 64 px crops, 1 seed, 1 epoch.")
    parser.add_argument("--table", type=Path, help="Print the table of this JSON of an earlier run, and stop.")
    parser.add_argument("--output", type=Path, default=Path("results/large_frames.json"))
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.seeds, arguments.frame, arguments.crop, arguments.small, arguments.epochs = 1, 128, 64, 64, 1
        arguments.flow_steps, arguments.num_train, arguments.num_test = 2, 8, 3
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Run every model for every seed on generated large frames; write the JSON and print the table."""
    arguments = parse(argv)
    if arguments.table is not None:
        print(report_table(arguments.table))  # noqa: T201 - the report
        return 0
    environment = capture(0, torch.device("cpu"), argv)  # the commit and machine the runs start with
    settings = {"arguments": vars(arguments) | {"output": str(arguments.output)}}
    records: list[Record] = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        generate_large_frame_dataset(
            work / "data",
            frame_size=(arguments.frame, arguments.frame),
            defect_size=max(0.03, 6 / arguments.frame),
            num_train=arguments.num_train,
            num_test_normal=arguments.num_test,
            num_test_anomalous=arguments.num_test,
        )
        loading: dict[str, Any] = {"train_batch_size": 8, "eval_batch_size": 4, "num_workers": 0}
        datamodule = MVTecAD(root=work / "data", category="brick", **loading)
        datamodule.setup()
        for seed in range(arguments.seeds):
            records.extend(run(name, datamodule, seed, arguments, work / "runs") for name in arguments.models)
            # After every seed, so that a long run stopped early keeps the seeds it finished.
            write_report(arguments.output, environment, records, {"paired": summary(records), **settings})
    print(markdown(summary(records)))  # noqa: T201 - the report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
