# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""INT8 calibration sets for Fastflow2D: image AUROC and labels of each INT8 model against eager PyTorch.

The script trains resnet18 Fastflow2D (random backbone weights) on the demo ``brick`` textures, converts it to
OpenVINO once, and quantises it with :func:`anomalib_fastflow2d.export.quantize_int8` (what ``INT8_PTQ`` runs: NNCF
with the precision-sensitive nodes left in float) on each calibration set of :data:`VIEWS`: the training images as
they are (the export's calibration), with their flips, with shifted crops resized back, or with both. NNCF averages
its statistics over batches, so each set is quantised ``--repeats`` times with the images shuffled anew. Every INT8
model is compiled at f32 and measured on the test images: image AUROC, its drop from eager PyTorch's, labels equal
to eager PyTorch's, the largest score difference, and the seconds NNCF took. Half of the demo test images are the
validation set, which sets the thresholds; the other half are the test images. The script exits non-zero if a
measurement is not finite.

Example:
    Run from the repository root::

        python benchmarks/int8_calibration.py                  # 128x128, 3 epochs, 16 training images, 3 repeats
        python benchmarks/int8_calibration.py --size 64 --epochs 1 --repeats 1 --views plain flips
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import openvino
import torch
from anomalib.data import ImageBatch, MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from torchmetrics.functional.classification import binary_auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.export import OPENVINO_F32_CONFIG, quantize_int8
from benchmarks.harness.environment import capture
from benchmarks.harness.records import Record, markdown_table, non_finite, write_report
from fastflow2d_demo_data import generate_demo_dataset

SHIFTED_CROP = 7 / 8
"""Side of the shifted crops, as a fraction of the image's; each is resized back to the image's size."""

BATCH_SIZE = 8
"""Calibration batch size: the demo datamodule's training batch size, as the export calibrates with."""

MODE = "demo_test_set"
"""The mode of every record: each INT8 model is measured on the demo test images."""


def flips(images: torch.Tensor) -> list[torch.Tensor]:
    """The images ``(N, 3, H, W)`` mirrored left-right and upside down."""
    return [images.flip(-1), images.flip(-2)]


def shifts(images: torch.Tensor) -> list[torch.Tensor]:
    """Crops of :data:`SHIFTED_CROP` of each side at the four corners, resized back to ``(H, W)`` (bilinear)."""
    height, width = images.shape[-2:]
    crop_height, crop_width = round(height * SHIFTED_CROP), round(width * SHIFTED_CROP)
    corners = [(0, 0), (0, width - crop_width), (height - crop_height, 0), (height - crop_height, width - crop_width)]
    return [
        torch.nn.functional.interpolate(
            images[..., top : top + crop_height, left : left + crop_width], size=(height, width), mode="bilinear"
        )
        for top, left in corners
    ]


VIEWS: dict[str, tuple[Callable[[torch.Tensor], list[torch.Tensor]], ...]] = {
    "plain": (),
    "flips": (flips,),
    "shifts": (shifts,),
    "flips+shifts": (flips, shifts),
}
"""Calibration sets: the training images themselves, plus the views each function makes of them."""


def calibration_images(images: torch.Tensor, views: str) -> torch.Tensor:
    """The training images ``(N, 3, H, W)`` followed by the views of them that :data:`VIEWS` names."""
    return torch.cat([images, *(view for make in VIEWS[views] for view in make(images))])


def calibration_batches(images: torch.Tensor, generator: torch.Generator) -> list[ImageBatch]:
    """The images shuffled with ``generator``, in batches of :data:`BATCH_SIZE`."""
    return [
        ImageBatch(image=batch) for batch in images[torch.randperm(len(images), generator=generator)].split(BATCH_SIZE)
    ]


def measure(
    model: openvino.Model, images: np.ndarray, labels: torch.Tensor, eager: dict[str, np.ndarray]
) -> dict[str, float]:
    """Image AUROC of ``model`` compiled at f32, its drop from eager PyTorch's, labels equal, largest score diff."""
    compiled = openvino.Core().compile_model(model, "CPU", OPENVINO_F32_CONFIG)
    outputs = {output.any_name: value for output, value in compiled(images).items()}
    image_auroc = float(binary_auroc(torch.from_numpy(outputs["pred_score"]).flatten(), labels))
    eager_auroc = float(binary_auroc(torch.from_numpy(eager["pred_score"]).flatten(), labels))
    return {
        "image_auroc": image_auroc,
        "image_auroc_drop": eager_auroc - image_auroc,
        "labels_equal": int((outputs["pred_label"] == eager["pred_label"]).sum()),
        "images": len(labels),
        "max_score_diff": float(np.abs(outputs["pred_score"] - eager["pred_score"]).max()),
    }


def summary_table(records: Sequence[Record]) -> str:
    """One row per calibration set: its size, and the range over repeats of each measure."""

    def spread(values: list[float], digits: str) -> str:
        low, high = f"{min(values):{digits}}", f"{max(values):{digits}}"
        return low if low == high else f"{low} to {high}"

    rows = []
    for views in dict.fromkeys(record.model for record in records):
        chosen = [record for record in records if record.model == views]
        images = chosen[0].values["images"]
        rows.append(
            [
                views,
                f"{chosen[0].details['calibration_images']}",
                spread([record.values["image_auroc"] for record in chosen], ".3f"),
                spread([record.values["image_auroc_drop"] for record in chosen], ".3f"),
                spread([record.values["labels_equal"] for record in chosen], ".0f") + f"/{images:.0f}",
                spread([record.values["max_score_diff"] for record in chosen], ".2f"),
                f"{statistics.median(record.values['quantise_s'] for record in chosen):.0f}",
            ]
        )
    header = ["Calibration set", "images", "image AUROC", "drop", "labels equal", "max score diff", "NNCF s"]
    return markdown_table(header, rows, [False, True, True, True, True, True, True])


def main(argv: Sequence[str] | None = None) -> int:
    """Train, quantise with every calibration set, measure, write the JSON and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="demo image and model input size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--flow-steps", type=int, default=8, help="coupling blocks per flow; 8 is the preset's")
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="quantisations of each set, each shuffled anew")
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=VIEWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("results/int8_calibration.json"))
    arguments = parser.parse_args(argv)

    environment = capture(arguments.seed, torch.device("cpu"), argv)  # the commit and machine the runs start with
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        root = generate_demo_dataset(
            work / "data",
            categories=["brick"],
            image_size=arguments.size,
            num_train=arguments.train_images,
            num_test_normal=16,
            num_test_anomalous=16,
        )
        loading = {"num_workers": 0, "train_batch_size": BATCH_SIZE, "eval_batch_size": 32, "seed": arguments.seed}
        datamodule = MVTecAD(root=root, category="brick", val_split_mode="from_test", val_split_ratio=0.5, **loading)
        seed_everything(arguments.seed)
        size = (arguments.size, arguments.size)
        model = Fastflow2D(backbone="resnet18", pre_trained=False, flow_steps=arguments.flow_steps, input_size=size)
        engine = Engine(
            max_epochs=arguments.epochs,
            accelerator="cpu",
            default_root_dir=work,
            logger=False,
            enable_progress_bar=False,
        )
        engine.fit(model, datamodule=datamodule)
        onnx_file = model.to_onnx(work / "export")

        datamodule.setup("fit")
        training = torch.cat([batch.image for batch in datamodule.train_dataloader()])
        datamodule.setup("test")
        test_batches = list(datamodule.test_dataloader())
        images = torch.cat([batch.image for batch in test_batches])
        labels = torch.cat([batch.gt_label for batch in test_batches]).int()
        with torch.no_grad():
            eager = {name: value.numpy() for name, value in model.eval()(images)._asdict().items() if value is not None}

        records = []
        for views in arguments.views:
            calibration = calibration_images(training, views)
            generator = torch.Generator().manual_seed(arguments.seed)
            for repeat in range(arguments.repeats):
                batches = calibration_batches(calibration, generator)
                start = time.perf_counter()
                quantised = quantize_int8(openvino.convert_model(onnx_file), batches)
                seconds = time.perf_counter() - start
                values = {**measure(quantised, images.numpy(), labels, eager), "quantise_s": seconds}
                records.append(Record(views, MODE, values, {"repeat": repeat, "calibration_images": len(calibration)}))

    write_report(arguments.output, environment, records, {"args": {k: str(v) for k, v in vars(arguments).items()}})
    print(summary_table(records))  # noqa: T201 - the report
    if bad := non_finite(records):
        print(f"Not finite: {bad}", file=sys.stderr)  # noqa: T201 - the failure
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
