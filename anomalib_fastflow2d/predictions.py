# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What ``anomalib test`` and ``predict`` leave for a person to read: a table of scores, and overlays at full size.

anomalib 2.7's ``predict`` writes overlay pictures but no scores, and squeezes every overlay into 256 x 256 pixels,
where the small defects of a large frame vanish. Fastflow2D adds :class:`PredictionTable`, which writes
``predictions.csv`` (image path, score, label and the threshold that decided it) into the run's folder, and
:class:`AspectKeepingVisualizer`, anomalib's image visualizer with each picture at its image's own size and the
score and label written on it.

The anomaly maps themselves stay at the model's ``input_size``: in the batches ``Engine.predict`` returns, in the
exported graph's outputs, and in the overlays' source. anomalib 2.7's pre-processor resizes the batch's images and
masks in place and keeps no original size to restore them to, so only these pictures are drawn at the image's size;
set ``input_size`` to the frames' size to score them at full resolution.

Examples:
    >>> import csv
    >>> with open("results/Fastflow2D/latest/predictions.csv") as file:  # doctest: +SKIP
    ...     rows = list(csv.DictReader(file))
    >>> rows[0]  # doctest: +SKIP
    {'image_path': 'images/000.png', 'pred_score': '0.912345', 'pred_label': '1', 'threshold': '0.5'}
"""

import csv
import logging
import math
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Batch, ImageItem
from anomalib.post_processing import PostProcessor
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, dynamic_font_size
from anomalib.visualization.image.item_visualizer import visualize_image_item
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, ImageFont
from torch.nn import functional

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
"""File name of the score table in the run's folder (``trainer.default_root_dir``)."""

MAX_FIELD_PIXELS = 4_194_304
"""Most pixels of one overlay field (4 megapixels, a 2,048 x 2,048 frame); a larger image is drawn at this size.

Up to it, an image is drawn at its own size. A picture holds three or four fields side by side, so each megapixel of
the frame costs about 50 MB while the picture is drawn, and a 20-megapixel frame at full size would take a gigabyte.
"""

MASK_CUT = 0.5
"""A resized mask's pixel is set where the bilinear resize of the 0/1 mask reaches this."""

PNG_COMPRESS_LEVEL = 1
"""zlib level of the pictures written as PNG: Pillow's default (6) takes over twice as long on a full-size picture for
a file a fifth smaller."""

CAPTION_MARGIN = 10
"""Pixels between the caption's box and the field's left and bottom edges, as anomalib's titles keep from the top."""

CAPTION_PADDING = 3
"""Pixels of background around the caption's text, as around anomalib's titles."""


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
    """anomalib's image visualizer, drawing each image at its own resolution, with its score and label written on it.

    anomalib squeezes every field into ``field_size`` (256 x 256), where a 30 px defect on a 1,024 px frame shrinks
    to 7 px. Here each field has the size of the image file (``image_path``), so the image is shown pixel for pixel,
    and the anomaly map, predicted mask and ground truth, which the pre-processor brought to the model's
    ``input_size``, are resized to it: the map bilinearly, the masks bilinearly and cut at 0.5, so their outlines are
    smooth at full resolution instead of blocks of the model's pixels. An image above :data:`MAX_FIELD_PIXELS` is
    drawn at that many pixels, keeping its aspect ratio. An item without ``image_path`` is drawn as anomalib draws it,
    at ``field_size``. The first field's bottom left corner reads the score and label (:func:`score_caption`), unless
    ``text_config`` disables text.

    Examples:
        >>> import tempfile
        >>> import torch
        >>> from anomalib.data import ImageItem
        >>> path = Path(tempfile.mkdtemp()) / "frame.png"
        >>> Image.new("RGB", (1600, 900)).save(path)
        >>> item = ImageItem(
        ...     image_path=str(path), image=torch.rand(3, 256, 256), anomaly_map=torch.rand(256, 256),
        ...     pred_mask=torch.rand(256, 256) > 0.9, pred_score=0.87, pred_label=True,
        ... )
        >>> AspectKeepingVisualizer().draw(item).size  # image, map overlay and mask overlay, 1600 x 900 each
        (4800, 900)
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
        """Save each image's picture where anomalib would (the run's ``images/`` folder, in the dataset's layout)."""
        del pl_module, outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        datamodule = getattr(trainer, "datamodule", None)
        for item in batch:
            picture = self.draw(item)
            if picture is not None:
                path = generate_output_filename(
                    input_path=item.image_path or "",
                    output_path=self.output_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
                picture.save(path, compress_level=PNG_COMPRESS_LEVEL)

    def draw(self, item: ImageItem) -> Image.Image | None:
        """The picture of one item: its fields side by side at the image's own size, captioned with its score.

        Args:
            item: A post-processed item, as ``anomalib test`` and ``predict`` give it.

        Returns:
            The picture, or ``None`` where the item has none of the fields to draw.
        """
        size = _field_size(getattr(item, "image_path", None)) or self.field_size
        height_width = (size[1], size[0])
        full_size = item.update(
            in_place=False,
            anomaly_map=_resized(item.anomaly_map, height_width),
            pred_mask=_resized_mask(item.pred_mask, height_width),
            gt_mask=_resized_mask(item.gt_mask, height_width),
        )
        picture = visualize_image_item(
            full_size,
            fields=self.fields,
            overlay_fields=self.overlay_fields,
            field_size=size,
            fields_config=self.fields_config,
            overlay_fields_config=self.overlay_fields_config,
            text_config=self.text_config,
        )
        caption = score_caption(item.pred_score, item.pred_label)
        if picture is None or not caption or not self.text_config.get("enable", True):
            return picture
        field = picture.crop((0, 0, *size))
        picture.paste(_with_caption(field, caption, self.text_config), (0, 0))
        return picture


def score_caption(score: torch.Tensor | None, label: torch.Tensor | None) -> str:
    """The line written on an overlay: the image's score, and its label where thresholds decided one.

    Args:
        score: The item's ``pred_score``: normalised, so that 0.5 is the threshold, unless post-processing is off.
        label: The item's ``pred_label``, or ``None`` without thresholds.

    Returns:
        The caption, or ``""`` without a score.

    Examples:
        >>> import torch
        >>> score_caption(torch.tensor(0.8712), torch.tensor(True))
        'score 0.87 · anomalous'
        >>> score_caption(torch.tensor(-0.0312), None)
        'score -0.03'
    """
    if score is None:
        return ""
    caption = f"score {float(score):.2f}"
    return caption if label is None else f"{caption} · {'anomalous' if bool(label) else 'normal'}"


def _field_size(image_path: str | None) -> tuple[int, int] | None:
    """``(width, height)`` of the image file, within :data:`MAX_FIELD_PIXELS`; ``None`` without a file."""
    if not image_path:
        return None
    with Image.open(image_path) as image:
        width, height = image.size  # read from the header: the pixels are not decoded
    scale = min(1.0, math.sqrt(MAX_FIELD_PIXELS / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(values: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """A ``(H, W)`` or ``(1, H, W)`` map resized bilinearly to ``size`` ``(h, w)``, as a float32 ``(h, w)`` tensor."""
    if values is None:
        return None
    flat = values.as_subclass(torch.Tensor).float().reshape(1, 1, *values.shape[-2:])
    return functional.interpolate(flat, size=size, mode="bilinear", align_corners=False)[0, 0]


def _resized_mask(mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """A mask at ``size``: bilinear, then cut at 0.5, for outlines as smooth as the map's instead of stair steps."""
    resized = _resized(mask, size)
    return None if resized is None else resized >= MASK_CUT


def _with_caption(field: Image.Image, caption: str, text_config: dict[str, Any]) -> Image.Image:
    """Write ``caption`` in the field's bottom left corner, in anomalib's text style, shrunk to fit the width."""
    font_name = text_config.get("font")
    size = text_config.get("size") or dynamic_font_size(field.size)
    width = _font(font_name, size).getlength(caption)
    room = field.width - 2 * CAPTION_MARGIN
    if width > room:
        size = max(1, int(size * room / width))
    bottom = math.ceil(_font(font_name, size).getbbox(caption)[3])
    position = (CAPTION_MARGIN, field.height - CAPTION_MARGIN - CAPTION_PADDING - bottom)
    return add_text_to_image(
        field,
        caption,
        font=font_name,
        size=size,
        color=text_config.get("color", "white"),
        background=text_config.get("background"),
        position=position,
        padding=CAPTION_PADDING,
    )


def _font(name: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font anomalib's :func:`add_text_to_image` draws with, to measure the caption before drawing it."""
    try:
        return ImageFont.truetype(name, size) if name else ImageFont.load_default(size)
    except OSError:
        return ImageFont.load_default(size)


def _normalised_image_threshold(post_processor: Any) -> str:  # noqa: ANN401 - any module, or None
    if not isinstance(post_processor, PostProcessor) or not post_processor.enable_thresholding:
        return ""
    return f"{float(post_processor.normalized_image_threshold):g}"


def _column(values: torch.Tensor | None) -> list[float]:
    return [] if values is None else values.detach().float().flatten().cpu().tolist()
