# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What ``anomalib predict`` leaves for a person to read: a table of scores, and overlays at the image's shape.

anomalib 2.7's ``predict`` writes overlay pictures but no scores, and squeezes every overlay into a square. Fastflow2D
adds :class:`PredictionTable`, which writes ``predictions.csv`` (image path, score, label and the threshold that
decided it) into the run's folder, and :class:`AspectKeepingVisualizer`, anomalib's image visualizer with each
picture at its image's aspect ratio.

Examples:
    >>> import csv
    >>> with open("results/Fastflow2D/latest/predictions.csv") as file:  # doctest: +SKIP
    ...     rows = list(csv.DictReader(file))
    >>> rows[0]  # doctest: +SKIP
    {'image_path': 'images/000.png', 'pred_score': '0.912345', 'pred_label': '1', 'threshold': '0.5'}
"""

import csv
import logging
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from anomalib.visualization import ImageVisualizer
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
"""File name of the score table in the run's folder (``trainer.default_root_dir``)."""

MAX_ASPECT_RATIO = 4.0
"""Widest (or tallest) overlay field relative to its other side, so panoramas stay readable."""


class PredictionTable(Callback):
    """Write every predicted image's path, score, label and threshold to ``predictions.csv`` in the run's folder.

    It runs after the post-processor, so scores are the normalised ones (the image threshold maps to 0.5) and the
    labels are the ones anomalib reports. Without thresholds (post-processing off), the raw score is written and the
    label and threshold columns stay empty. With several processes, each rank writes ``predictions-rank<N>.csv``.
    """

    COLUMNS = ("image_path", "pred_score", "pred_label", "threshold")
    """The table's header."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, str, str]] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty table for this prediction run."""
        del trainer, pl_module
        self.rows = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Add the batch's post-processed predictions to the table."""
        del trainer, batch, batch_idx, dataloader_idx
        threshold = _normalised_image_threshold(getattr(pl_module, "post_processor", None))
        scores = _column(outputs.pred_score)
        labels = None if outputs.pred_label is None else _column(outputs.pred_label)
        paths = getattr(outputs, "image_path", None) or [""] * len(scores)
        for index, (path, score) in enumerate(zip(paths, scores, strict=True)):
            label = "" if labels is None else str(int(labels[index]))
            self.rows.append((str(path), f"{score:.6f}", label, threshold))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the table and log where it went."""
        del pl_module
        name = PREDICTIONS_FILE if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        path = Path(trainer.default_root_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(self.COLUMNS)
            writer.writerows(self.rows)
        log.info("Wrote the scores of %d images to %s.", len(self.rows), path)


class AspectKeepingVisualizer(ImageVisualizer):
    """anomalib's image visualizer, with each overlay field at its image's aspect ratio instead of a square.

    The anomaly map covers the whole image (the pre-processor resized it), so stretching the map back to the image's
    shape puts every pixel's score where that pixel is. The field keeps the configured height; its width follows the
    image, within :data:`MAX_ASPECT_RATIO`.
    """

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: Any,  # noqa: ANN401 - anomalib's AnomalibModule, typed as in the parent
        outputs: Any,  # noqa: ANN401
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw each image of the batch with a field size of its own shape."""
        configured = self.field_size
        height = configured[1]
        try:
            for item in batch:
                self.field_size = (_field_width(getattr(item, "image_path", None), height), height)
                single = type(batch).collate([item])
                super().on_test_batch_end(trainer, pl_module, outputs, single, batch_idx, dataloader_idx)
        finally:
            self.field_size = configured


def _field_width(image_path: str | None, height: int) -> int:
    if not image_path:
        return height
    with Image.open(image_path) as image:
        width, image_height = image.size
    aspect = min(max(width / image_height, 1 / MAX_ASPECT_RATIO), MAX_ASPECT_RATIO)
    return max(1, round(height * aspect))


def _normalised_image_threshold(post_processor: Any) -> str:  # noqa: ANN401 - any module, or None
    if not isinstance(post_processor, PostProcessor) or not post_processor.enable_thresholding:
        return ""
    return f"{float(post_processor.normalized_image_threshold):g}"


def _column(values: torch.Tensor | None) -> list[float]:
    return [] if values is None else values.detach().float().flatten().cpu().tolist()
