# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The README's pictures, from a real training run on the demo data.

Writes to ``docs/images/``:

- ``demo_predictions.png``: demo test images (one per defect type and a good one) with their ground-truth masks,
  Fastflow2D's heatmaps and predicted masks, as anomalib's post-processor normalises and thresholds them;
- ``<type>_000_explanation.png`` (``good`` and each defect type) and ``samples.png``: the figures of
  ``python -m anomalib_fastflow2d.explain``.

Example:
    From the repository root, train the demo and draw (about two minutes on 2 CPU cores)::

        python -m scripts.readme_figures
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.explain.figures import load_image, write_figures

from .demo_run import REPOSITORY, add_arguments, demo_run

ROWS = ("input", "ground truth", "Fastflow2D heatmap", "predicted mask")


def pick_images(category_root: Path) -> list[Path]:
    """The first test image of each defect type, then the first good one."""
    defects = sorted(path for path in (category_root / "test").iterdir() if path.name != "good")
    return [min(folder.glob("*.png")) for folder in [*defects, category_root / "test" / "good"]]


def ground_truth(category_root: Path, image: Path) -> np.ndarray:
    """The image's mask as a boolean array; all false for a good image."""
    mask = category_root / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
    if not mask.is_file():
        with Image.open(image) as picture:
            return np.zeros((picture.height, picture.width), dtype=bool)
    with Image.open(mask) as picture:
        return np.array(picture) > 0


@torch.no_grad()
def predictions_figure(model: Fastflow2D, category_root: Path, images: Sequence[Path]) -> Figure:
    """One column per image, one row per entry of :data:`ROWS`."""
    figure = Figure(figsize=(1.8 * len(images), 1.8 * len(ROWS) + 0.2), layout="constrained")
    grid = figure.subplots(len(ROWS), len(images), squeeze=False)
    model.eval()
    for column, path in enumerate(images):
        _, shown = load_image(path, model)
        prediction = model(shown[None])  # anomalib's pre-processing, model and post-processing
        picture = shown.permute(1, 2, 0).numpy()
        cells = grid[:, column]
        cells[0].imshow(picture)
        cells[0].set_title(path.parent.name, fontsize=9)
        cells[1].imshow(ground_truth(category_root, path), cmap="gray", vmin=0, vmax=1)
        cells[2].imshow(picture)
        cells[2].imshow(prediction.anomaly_map[0, 0].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        cells[3].imshow(prediction.pred_mask[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        for row, cell in enumerate(cells):
            cell.set_xticks([])
            cell.set_yticks([])
            if column == 0:
                cell.set_ylabel(ROWS[row], fontsize=9)
    return figure


def main(argv: Sequence[str] | None = None) -> None:
    """Train or load the demo run and write the README's pictures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "images", help="output directory")
    arguments = parser.parse_args(argv)
    ckpt_path, data_root = demo_run(arguments)
    model = Fastflow2D.load_from_checkpoint(ckpt_path, map_location="cpu")
    category_root = data_root / "brick"
    images = pick_images(category_root)
    arguments.out.mkdir(parents=True, exist_ok=True)
    predictions_figure(model, category_root, images).savefig(arguments.out / "demo_predictions.png", dpi=80)
    # The good image first: samples.png compares with its features.
    write_figures(model, [images[-1], *images[:-1]], arguments.out)


if __name__ == "__main__":
    main()
