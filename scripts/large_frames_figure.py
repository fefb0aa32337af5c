# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The figure of docs/model.md's large-frame example: a small defect, Fastflow2D's full-resolution map, Fastflow's.

Generates large frames with small defects, trains Fastflow2D in crop mode and anomalib's ``Fastflow`` at 256 px (the
same seed, random-init resnet18, the models of ``benchmarks/large_frames.py``), and draws
``docs/images/large_frames.png`` for one anomalous test frame: the frame with a zoom on the defect, the ground
truth, Fastflow2D's map at the frame's resolution, and Fastflow's 256 px map resized to the frame.

Example:
    From the repository root (about 10 minutes on 2 CPU cores)::

        python -m scripts.large_frames_figure
"""

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from anomalib.data import MVTecAD
from anomalib.models import AnomalibModule
from lightning.pytorch import seed_everything
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from anomalib_fastflow2d.torch_model import DEFAULT_PIXEL_BUDGET
from benchmarks.large_frames import build, frame_tensor, training_engine
from fastflow2d_demo_data import generate_large_frame_dataset

from .demo_run import REPOSITORY

MODELS = ("Fastflow2D crop", "Fastflow 256")
"""The two maps drawn: Fastflow2D in crop mode at full resolution, anomalib's Fastflow at 256 px."""


def train(model_name: str, datamodule: MVTecAD, arguments: argparse.Namespace, root: Path) -> AnomalibModule:
    """Train one model of :data:`MODELS` from ``arguments.seed``."""
    seed_everything(arguments.seed, verbose=False)
    model = build(model_name, arguments)
    training_engine(model_name, arguments, root).fit(model, datamodule=datamodule)
    return model.eval()


def full_resolution_map(model: AnomalibModule, frame: torch.Tensor) -> np.ndarray:
    """The model's raw anomaly map of ``frame`` ``(1, 3, H, W)``, resized to ``(H, W)``."""
    with torch.no_grad():
        anomaly_map = model.model(model.pre_processor(frame)).anomaly_map  # type: ignore[misc]
    resized = torch.nn.functional.interpolate(anomaly_map, size=frame.shape[-2:], mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def draw(frame: torch.Tensor, mask: np.ndarray, maps: dict[str, np.ndarray], output: Path) -> None:
    """Frame, zoom on the defect, ground truth and each model's map, each map on its own colour scale."""
    image = frame[0].permute(1, 2, 0).numpy()
    rows, columns = np.nonzero(mask)
    centre = (int(rows.mean()), int(columns.mean()))
    half = max(32, int(max(np.ptp(rows), np.ptp(columns))))
    window = (
        slice(max(0, centre[0] - half), centre[0] + half),
        slice(max(0, centre[1] - half), centre[1] + half),
    )
    panels = [
        ("frame", image, None),
        ("defect, zoomed", image[window], None),
        ("ground truth, zoomed", mask[window], "gray"),
        *((f"{name}, zoomed", values[window], "jet") for name, values in maps.items()),
    ]
    figure = Figure(figsize=(3.2 * len(panels), 3.6))
    for index, (title, values, colours) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        axes.imshow(values, cmap=colours)
        axes.set_title(title, fontsize=10)
        axes.set_axis_off()
        if index == 1:  # where the zoom is
            top, left = window[0].start, window[1].start
            axes.add_patch(Rectangle((left, top), 2 * half, 2 * half, fill=False, edgecolor="red", linewidth=1.5))
    figure.suptitle(f"{image.shape[1]}x{image.shape[0]} frame, defect {np.ptp(rows) + 1}x{np.ptp(columns) + 1} px")
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the data, train both models and draw the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=int, default=1024)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--small", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--flow-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixel-budget", type=int, default=DEFAULT_PIXEL_BUDGET)
    parser.add_argument("--output", type=Path, default=REPOSITORY / "docs" / "images" / "large_frames.png")
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        frame_size = (arguments.frame, arguments.frame)
        root = generate_large_frame_dataset(
            work / "data", frame_size=frame_size, defect_size=max(0.03, 6 / arguments.frame)
        )
        datamodule = MVTecAD(root=root, category="brick", train_batch_size=8, eval_batch_size=4, num_workers=0)
        models = {name: train(name, datamodule, arguments, work / "runs") for name in MODELS}
        defect = next(path for path in sorted((root / "brick" / "test").rglob("*.png")) if path.parent.name != "good")
        mask_path = root / "brick" / "ground_truth" / defect.parent.name / f"{defect.stem}_mask.png"
        frame = frame_tensor(str(defect))
        mask = np.asarray(Image.open(mask_path).convert("L")) > 127  # noqa: PLR2004 - 0/255 masks
        draw(frame, mask, {name: full_resolution_map(model, frame) for name, model in models.items()}, arguments.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
