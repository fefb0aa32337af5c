# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Checks of a datamodule's files before training or testing, so that bad data fails with the file's name.

anomalib reads images inside dataloader workers, where a truncated file fails with "image file is truncated" and
no name, and a mask of the wrong size with a shape error at collation. These checks read only headers, verify
PNG checksums and JPEG end markers, and decode a file fully only when those are in doubt.
"""

import logging
from pathlib import Path
from typing import Any

from anomalib.data import AnomalibDataModule
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes that anomalib's reader clips to 8 bits (values above 255 become white)."""

JPEG_END_OF_IMAGE = b"\xff\xd9"

MAX_LISTED_PROBLEMS = 20
"""Bad files named in one error; the rest are counted, so a folder of thousands stays readable."""

STAGE_DATASETS: dict[str, tuple[str, ...]] = {
    "fit": ("train_data", "val_data"),
    "validate": ("val_data",),
    "test": ("test_data",),
    "predict": ("test_data",),
}
"""The datamodule attributes each trainer stage reads."""


class DataCheckError(ValueError):
    """Raised for an unreadable image or mask, a mask that does not fit its image, or an empty training set."""


def check_datamodule(datamodule: Any, stage: str) -> None:  # noqa: ANN401 - any LightningDataModule
    """Check the images and masks that ``stage`` will read from an anomalib datamodule.

    Every file is checked before anything is raised, so one error lists all the bad files (the first
    :data:`MAX_LISTED_PROBLEMS` by name) and they can be fixed in one go. Datamodules that are not anomalib's (and so
    have no sample table) are left alone.

    Raises:
        DataCheckError: Naming each bad file and its problem.
    """
    if not isinstance(datamodule, AnomalibDataModule):
        return
    problems: list[str] = []
    high_bit_depth: list[str] = []
    for attribute in STAGE_DATASETS.get(stage, ()):
        samples = getattr(getattr(datamodule, attribute, None), "samples", None)
        if samples is None:
            continue
        if len(samples) == 0 and attribute == "train_data":
            root = getattr(datamodule, "root", None) or getattr(datamodule, "normal_dir", None)
            msg = (
                f"The training set of {type(datamodule).__name__} is empty (root: {root}). Put normal images "
                "in the training folder, or point the datamodule at the folder that holds them."
            )
            raise DataCheckError(msg)
        mask_paths = samples["mask_path"] if "mask_path" in samples else [""] * len(samples)
        for image_path, mask_path in zip(samples["image_path"], mask_paths, strict=True):
            problem, deep = _sample_problem(Path(image_path), Path(mask_path) if _is_path(mask_path) else None)
            problems.extend([problem] if problem else [])
            high_bit_depth.extend([image_path] if deep else [])
    if high_bit_depth:
        log.warning(
            "%d images have more than 8 bits per channel (e.g. %s); anomalib reads them clipped to 8 bits, so "
            "values above 255 become white. Convert them to 8 bits (scaled) for meaningful results.",
            len(set(high_bit_depth)),
            high_bit_depth[0],
        )
    if problems:
        raise DataCheckError(_listing(problems))


def _sample_problem(image_path: Path, mask_path: Path | None) -> tuple[str | None, bool]:
    """What is wrong with one sample (``None`` if nothing), and whether its image has more than 8 bits."""
    try:
        return None, check_sample(image_path, mask_path)
    except DataCheckError as problem:
        return str(problem), False


def _listing(problems: list[str]) -> str:
    unique = list(dict.fromkeys(problems))  # a file in both the validation and the training split is named once
    lines = [f"{len(unique)} files of the datamodule cannot be used:"]
    lines += [f"  - {problem}" for problem in unique[:MAX_LISTED_PROBLEMS]]
    if len(unique) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(unique) - MAX_LISTED_PROBLEMS} more.")
    return "\n".join(lines)


def check_sample(image_path: Path, mask_path: Path | None) -> bool:
    """Check one image and its mask.

    Returns:
        Whether the image has more than 8 bits per channel.

    Raises:
        DataCheckError: If either file is missing or unreadable, or the mask's size differs from the image's.
    """
    image_size, image_mode = _check_image(image_path, "image")
    if mask_path is not None:
        mask_size, _ = _check_image(mask_path, "mask")
        if mask_size != image_size:
            msg = (
                f"Mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]} (width x height). Save the mask at the image's size."
            )
            raise DataCheckError(msg)
    return image_mode in HIGH_BIT_DEPTH_MODES


def _check_image(path: Path, role: str) -> tuple[tuple[int, int], str]:
    if not path.is_file():
        msg = f"The {role} file {path} does not exist."
        raise DataCheckError(msg)
    try:
        with Image.open(path) as image:
            size, mode, image_format = image.size, image.mode, image.format
            if image_format == "PNG":
                image.verify()
            elif image_format != "JPEG" or not _ends_with_jpeg_marker(path):
                image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        msg = f"The {role} file {path} cannot be read ({error}). Replace or remove it."
        raise DataCheckError(msg) from error
    return size, mode


def _ends_with_jpeg_marker(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-len(JPEG_END_OF_IMAGE), 2)
        return file.read() == JPEG_END_OF_IMAGE


def _is_path(value: object) -> bool:
    return isinstance(value, (str, Path)) and str(value) not in {"", "nan"}
