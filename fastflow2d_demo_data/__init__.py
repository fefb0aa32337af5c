# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Offline MVTec-AD-style demo dataset built from the texture photographs shipped with scikit-image.

The plugin's examples, tests and CI cannot download MVTec AD (no network, licence restrictions), yet a FastFlow
model needs realistic images with pixel-exact ground truth to train and to be evaluated. This module crops the real
``brick``, ``grass`` and ``gravel`` photographs bundled with scikit-image into normal samples and paints synthetic
defects (``scratch``, ``stain``, ``patch``) with exact masks onto further crops. The files are laid out exactly as
:class:`anomalib.data.MVTecAD` expects::

    root/<category>/train/good/000.png
    root/<category>/test/good/000.png
    root/<category>/test/<defect_type>/000.png
    root/<category>/ground_truth/<defect_type>/000_mask.png

Generation is deterministic (same arguments, byte-identical files) and takes about a second. The package imports only
numpy, Pillow, scikit-image and the standard library so that it stays fast to import (no torch, no anomalib).

The photographs and defect painters live in :mod:`~fastflow2d_demo_data.textures` and
:mod:`~fastflow2d_demo_data.defects`; :func:`generate_large_frame_dataset` (:mod:`~fastflow2d_demo_data.large_frames`)
uses them for megapixel frames with defects of a few percent of the side, and ``fastflow2d-demo-data --large-frames``
runs it.
"""

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .defects import DEFECT_TYPES, synthesize_defect
from .large_frames import generate_large_frame_dataset
from .layout import clear_category, save_png, stem_width
from .photos import PHOTOS, generate_photo_dataset
from .textures import PHOTO_SIZE, TEXTURES, load_photo, validate_categories

__all__ = [
    "PHOTOS",
    "TEXTURES",
    "generate_demo_dataset",
    "generate_large_frame_dataset",
    "generate_photo_dataset",
    "main",
    "synthesize_defect",
]

CROP_SIZE = 256
"""Side length of the square crops taken from a photograph before resizing (fixed so that all crops share a scale)."""

MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = PHOTO_SIZE
MAX_IMAGES_PER_CATEGORY = (PHOTO_SIZE - CROP_SIZE + 1) ** 2
"""Number of distinct crop positions; every image of a category is cropped at its own position."""


def _crop(category: str, top: int, left: int, image_size: int) -> NDArray[np.uint8]:
    """Crop a ``CROP_SIZE`` square of a category's photo, resize it to ``image_size`` and tint it to RGB."""
    tint = np.array(TEXTURES[category].tint)
    patch = Image.fromarray(load_photo(category)[top : top + CROP_SIZE, left : left + CROP_SIZE])
    gray = np.asarray(patch.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float64)
    return np.rint(gray[..., None] * tint).astype(np.uint8)


def _validate(
    *,
    categories: Sequence[str],
    image_size: int,
    num_train: int,
    num_test_normal: int,
    num_test_anomalous: int,
    seed: int,
) -> None:
    """Raise ``ValueError`` naming the first invalid argument of :func:`generate_demo_dataset`."""
    validate_categories(categories)
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        msg = f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, got {image_size}"
        raise ValueError(msg)
    counts = {"num_train": num_train, "num_test_normal": num_test_normal, "num_test_anomalous": num_test_anomalous}
    for name, count in counts.items():
        if count < 1:
            msg = f"{name} must be >= 1, got {count}"
            raise ValueError(msg)
    if sum(counts.values()) > MAX_IMAGES_PER_CATEGORY:
        msg = (
            f"num_train + num_test_normal + num_test_anomalous must be <= {MAX_IMAGES_PER_CATEGORY} "
            f"(distinct crop positions), got {sum(counts.values())}"
        )
        raise ValueError(msg)
    if seed < 0:
        msg = f"seed must be >= 0, got {seed}"
        raise ValueError(msg)


def _generate_category(
    category_dir: Path,
    category: str,
    *,
    image_size: int,
    num_train: int,
    num_test_normal: int,
    num_test_anomalous: int,
    seed: int,
) -> None:
    """Write one category; its random stream depends only on ``seed`` and the category's index in TEXTURES."""
    names = list(TEXTURES)
    index = names.index(category)
    donor_name = names[(index + 1) % len(names)]
    rng = np.random.default_rng([seed, index])

    # Distinct crop positions for every image of the category, so no test image duplicates a training image.
    positions = rng.choice(
        MAX_IMAGES_PER_CATEGORY, size=num_train + num_test_normal + num_test_anomalous, replace=False
    )
    crops = [_crop(category, *divmod(int(p), PHOTO_SIZE - CROP_SIZE + 1), image_size) for p in positions]
    width = stem_width(num_train, num_test_normal, num_test_anomalous)

    clear_category(category_dir)
    for number, crop in enumerate(crops[:num_train]):
        save_png(crop, category_dir / "train" / "good" / f"{number:0{width}d}.png")
    for number, crop in enumerate(crops[num_train : num_train + num_test_normal]):
        save_png(crop, category_dir / "test" / "good" / f"{number:0{width}d}.png")

    defect_names = list(DEFECT_TYPES)
    for k, crop in enumerate(crops[num_train + num_test_normal :]):
        defect_type = defect_names[k % len(defect_names)]
        stem = f"{k // len(defect_names):0{width}d}"
        top, left = rng.integers(0, PHOTO_SIZE - CROP_SIZE + 1, size=2)
        donor = _crop(donor_name, int(top), int(left), image_size)
        defective, mask = synthesize_defect(crop, donor, defect_type, rng)
        save_png(defective, category_dir / "test" / defect_type / f"{stem}.png")
        save_png(mask, category_dir / "ground_truth" / defect_type / f"{stem}_mask.png")


def generate_demo_dataset(
    root: str | Path,
    categories: Sequence[str] = ("brick", "grass", "gravel"),
    *,
    image_size: int = 128,
    num_train: int = 48,
    num_test_normal: int = 12,
    num_test_anomalous: int = 12,
    seed: int = 0,
) -> Path:
    """Write an MVTec-AD-style dataset of real texture crops with synthetic defects.

    Each category gets ``num_train`` normal training images, ``num_test_normal`` normal test images and
    ``num_test_anomalous`` defective test images spread round-robin over :data:`DEFECT_TYPES`, each with a binary
    mask (0 or 255) marking exactly the changed pixels. Images are RGB PNGs of ``image_size`` x ``image_size``
    pixels, each cropped from its own position of the category's photograph at one common scale.

    An existing ``root/<category>`` has its ``train``, ``test`` and ``ground_truth`` folders replaced, so file counts
    always match the arguments; nothing else in ``root`` or ``root/<category>`` is touched.

    Args:
        root: Dataset root; pass it as ``root`` to :class:`anomalib.data.MVTecAD`.
        categories: Names from :data:`TEXTURES` to generate.
        image_size: Side length of the square images, between 32 and 512.
        num_train: Normal training images per category, at least 1.
        num_test_normal: Normal test images per category, at least 1.
        num_test_anomalous: Defective test images per category, at least 1.
        seed: Non-negative seed; the same arguments always produce byte-identical files.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If an argument is out of range or names an unknown category; the message names the argument.

    Examples:
        >>> import tempfile
        >>> root = generate_demo_dataset(tempfile.mkdtemp(), categories=["brick"], image_size=64, num_train=4)
        >>> len(list((root / "brick" / "train" / "good").glob("*.png")))
        4
    """
    sizes = {
        "image_size": image_size,
        "num_train": num_train,
        "num_test_normal": num_test_normal,
        "num_test_anomalous": num_test_anomalous,
        "seed": seed,
    }
    _validate(categories=categories, **sizes)
    root = Path(root)
    for category in categories:
        _generate_category(root / category, category, **sizes)
    return root


def _keyword_defaults(generator: Callable[..., Path]) -> dict[str, object]:
    """A generator's keyword arguments and their defaults: the command's defaults, so the two cannot drift apart."""
    parameters = inspect.signature(generator).parameters.values()
    return {parameter.name: parameter.default for parameter in parameters if parameter.default is not parameter.empty}


def _typed(value: object) -> str:
    """A default as it is typed on the command line: a tuple's items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point ``fastflow2d-demo-data``.

    Without ``--large-frames`` it runs :func:`generate_demo_dataset`, with it :func:`generate_large_frame_dataset`;
    every other option defaults to that function's default, and an option the chosen generator does not take is
    refused.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        Exit status 0 (invalid arguments exit with status 2 through :mod:`argparse`).

    Examples:
        ``fastflow2d-demo-data --root datasets/demo --categories brick grass --image-size 128``

        ``fastflow2d-demo-data --root datasets/large --large-frames --frame-size 768 1024 --defect-size 0.03``
    """
    demo, large = _keyword_defaults(generate_demo_dataset), _keyword_defaults(generate_large_frame_dataset)
    mode = argparse.ArgumentParser(add_help=False)
    mode.add_argument(
        "--large-frames",
        action="store_true",
        help="write large frames with small defects instead of demo crops (--help after it shows its defaults)",
    )
    large_frames = mode.parse_known_args(argv)[0].large_frames
    generator = generate_large_frame_dataset if large_frames else generate_demo_dataset
    defaults = large if large_frames else demo
    parser = argparse.ArgumentParser(
        prog="fastflow2d-demo-data",
        description="Write an offline MVTec-AD-style dataset from scikit-image texture photos with synthetic defects.",
        parents=[mode],
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root (anomalib MVTecAD root)")
    parser.add_argument(
        "--categories",
        nargs="+",
        choices=list(TEXTURES),
        help=f"texture photographs to use (default {_typed(defaults['categories'])})",
    )
    parser.add_argument(
        "--image-size", type=int, help=f"demo crops only: square image side, 32..512 (default {demo['image_size']})"
    )
    parser.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help=f"--large-frames only: frame height and width, 32..8192 (default {_typed(large['frame_size'])})",
    )
    parser.add_argument(
        "--defect-size",
        type=float,
        help=f"--large-frames only: largest defect extent as a fraction of the shorter frame side "
        f"(default {large['defect_size']})",
    )
    integer_options = {
        "num_train": "normal training images per category",
        "num_test_normal": "normal test images per category",
        "num_test_anomalous": "defective test images per category",
        "seed": "non-negative random seed",
    }
    for name, text in integer_options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"{text} (default {defaults[name]})")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for name in ("image_size", "frame_size", "defect_size"):
        if name not in defaults and getattr(args, name) is not None:
            parser.error(
                f"--{name.replace('_', '-')} {'does not go' if large_frames else 'only goes'} with --large-frames"
            )
    try:
        root = generator(args.root, **{name: getattr(args, name) for name in defaults})
    except ValueError as error:
        parser.error(str(error))
    for category in args.categories:
        sys.stdout.write(
            f"{category}: {args.num_train} train, {args.num_test_normal} test good, "
            f"{args.num_test_anomalous} test anomalous -> {root / category}\n"
        )
    return 0
