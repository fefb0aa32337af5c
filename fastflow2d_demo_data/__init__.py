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

Generation is deterministic (same arguments, byte-identical files) and takes about a second. The module imports only
numpy, Pillow, scikit-image and the standard library so that it stays fast to import (no torch, no anomalib).
"""

import argparse
import functools
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import skimage.data
import skimage.draw
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from .photos import PHOTOS, generate_photo_dataset

__all__ = ["PHOTOS", "TEXTURES", "generate_demo_dataset", "generate_photo_dataset", "main", "synthesize_defect"]

PHOTO_SIZE = 512
"""Side length of the scikit-image texture photographs, in pixels."""

CROP_SIZE = 256
"""Side length of the square crops taken from a photograph before resizing (fixed so that all crops share a scale)."""

MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = PHOTO_SIZE
MAX_IMAGES_PER_CATEGORY = (PHOTO_SIZE - CROP_SIZE + 1) ** 2
"""Number of distinct crop positions; every image of a category is cropped at its own position."""

_PNG_COMPRESS_LEVEL = 6
_SPLIT_DIRS = ("train", "test", "ground_truth")


class Texture(NamedTuple):
    """A source photograph and the colour tint that turns it into an RGB image.

    Attributes:
        loader: Returns the 512x512 grayscale ``uint8`` photograph.
        tint: Per-channel (R, G, B) gain in ``(0, 1]`` applied to the grayscale values.
    """

    loader: Callable[[], NDArray[np.uint8]]
    tint: tuple[float, float, float]


TEXTURES: dict[str, Texture] = {
    "brick": Texture(skimage.data.brick, (1.0, 0.86, 0.76)),
    "grass": Texture(skimage.data.grass, (0.84, 1.0, 0.78)),
    "gravel": Texture(skimage.data.gravel, (0.94, 0.96, 1.0)),
}
"""Available categories. The position of a category in this dict is part of its random seed."""

STAIN_COLOURS: tuple[tuple[int, int, int], ...] = ((150, 62, 22), (24, 22, 30), (48, 96, 190), (214, 190, 40))
"""RGB colours of the ``stain`` defect: rust, oil, blue paint, yellow paint."""

_MID_GRAY = 128
_UNCHANGED_NUDGE = 24
"""Brightness shift (up below ``_MID_GRAY``, else down) for defect pixels whose new colour equals the old one."""

DefectFn = Callable[
    [NDArray[np.uint8], NDArray[np.uint8], np.random.Generator],
    tuple[NDArray[np.bool_], NDArray[np.floating]],
]


def _scratch(
    clean: NDArray[np.uint8], _donor: NDArray[np.uint8], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.floating]]:
    """Thin bright or dark curved line (a quadratic Bezier curve) across the image."""
    size = clean.shape[0]
    centre = rng.uniform(0.25, 0.75, size=2) * size
    angle = rng.uniform(0.0, np.pi)
    half = rng.uniform(0.25, 0.45) * size * np.array([np.cos(angle), np.sin(angle)])
    bend = rng.uniform(-0.2, 0.2) * 2 * np.array([-half[1], half[0]])
    t = np.linspace(0.0, 1.0, 32)[:, None]
    start, control, end = centre - half, centre + bend, centre + half
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    width = max(2, round(size * rng.uniform(0.02, 0.035)))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line([(float(x), float(y)) for x, y in points], fill=255, width=width, joint="curve")
    level = rng.choice([20.0, 235.0])
    return np.asarray(canvas) > 0, 0.8 * level + 0.2 * clean.astype(np.float64)


def _stain(
    clean: NDArray[np.uint8], _donor: NDArray[np.uint8], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.floating]]:
    """Rotated ellipse blended towards one of :data:`STAIN_COLOURS`."""
    size = clean.shape[0]
    row, col = rng.uniform(0.2, 0.8, size=2) * size
    radii = rng.uniform(0.08, 0.16, size=2) * size
    rr, cc = skimage.draw.ellipse(row, col, radii[0], radii[1], shape=clean.shape[:2], rotation=rng.uniform(0, np.pi))
    region = np.zeros(clean.shape[:2], dtype=bool)
    region[rr, cc] = True
    colour = np.array(STAIN_COLOURS[rng.integers(len(STAIN_COLOURS))], dtype=np.float64)
    alpha = rng.uniform(0.55, 0.75)
    return region, (1 - alpha) * clean.astype(np.float64) + alpha * colour


def _patch(
    clean: NDArray[np.uint8], donor: NDArray[np.uint8], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.floating]]:
    """Rotated rectangle of a different texture photograph pasted in."""
    size = clean.shape[0]
    centre = rng.uniform(0.2, 0.8, size=2) * size
    half_sides = rng.uniform(0.15, 0.3, size=2) * size / 2
    angle = rng.uniform(0.0, np.pi / 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * half_sides @ rotation.T + centre
    rr, cc = skimage.draw.polygon(corners[:, 0], corners[:, 1], shape=clean.shape[:2])
    region = np.zeros(clean.shape[:2], dtype=bool)
    region[rr, cc] = True
    return region, donor.astype(np.float64)


DEFECT_TYPES: dict[str, DefectFn] = {"scratch": _scratch, "stain": _stain, "patch": _patch}
"""Defect generators; anomalous test images are spread over them round-robin, in this order."""


def synthesize_defect(
    clean: NDArray[np.uint8], donor: NDArray[np.uint8], defect_type: str, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Paint one synthetic defect onto an image and return its exact ground-truth mask.

    Every pixel inside the defect region gets a different colour (pixels whose new colour would round to the old one
    are nudged in brightness), and no pixel outside it is touched, so ``mask == 255`` exactly where
    ``(defective != clean).any(axis=-1)``.

    Args:
        clean: Defect-free RGB image, ``uint8`` array of shape ``(size, size, 3)``.
        donor: RGB image of the same shape; the ``patch`` defect pastes a region of it.
        defect_type: One of :data:`DEFECT_TYPES`.
        rng: Source of all randomness (position, shape and colour of the defect).

    Returns:
        ``(defective, mask)``: the RGB ``uint8`` image with the defect, and a ``uint8`` mask of shape
        ``(size, size)`` holding 255 on changed pixels and 0 elsewhere.

    Raises:
        ValueError: If ``defect_type`` is unknown.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> clean = np.full((64, 64, 3), 128, dtype=np.uint8)
        >>> defective, mask = synthesize_defect(clean, clean, "stain", rng)
        >>> bool(((defective != clean).any(axis=-1) == (mask == 255)).all())
        True
    """
    if defect_type not in DEFECT_TYPES:
        msg = f"defect_type must be one of {sorted(DEFECT_TYPES)}, got {defect_type!r}"
        raise ValueError(msg)
    region, replacement = DEFECT_TYPES[defect_type](clean, donor, rng)
    new = np.clip(np.rint(replacement[region]), 0, 255).astype(np.uint8)
    old = clean[region]
    unchanged = (new == old).all(axis=-1)
    new[unchanged] = np.where(
        old[unchanged] < _MID_GRAY, old[unchanged] + _UNCHANGED_NUDGE, old[unchanged] - _UNCHANGED_NUDGE
    )
    defective = clean.copy()
    defective[region] = new
    return defective, region.astype(np.uint8) * 255


@functools.cache
def _load_photo(category: str) -> NDArray[np.uint8]:
    """Load a category's photograph once per process (read-only, shared between calls)."""
    photo = TEXTURES[category].loader()
    photo.flags.writeable = False
    return photo


def _crop(category: str, top: int, left: int, image_size: int) -> NDArray[np.uint8]:
    """Crop a ``CROP_SIZE`` square of a category's photo, resize it to ``image_size`` and tint it to RGB."""
    tint = np.array(TEXTURES[category].tint)
    patch = Image.fromarray(_load_photo(category)[top : top + CROP_SIZE, left : left + CROP_SIZE])
    gray = np.asarray(patch.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float64)
    return np.rint(gray[..., None] * tint).astype(np.uint8)


def _save_png(array: NDArray[np.uint8], path: Path) -> None:
    """Write an ``L`` or ``RGB`` PNG with fixed encoder settings (no metadata), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


def _clear_category(category_dir: Path) -> None:
    """Remove the split folders a previous run wrote into ``category_dir``; leave everything else alone."""
    for name in _SPLIT_DIRS:
        path = category_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


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
    if isinstance(categories, str) or not categories:
        msg = f"categories must be a non-empty sequence of names from {list(TEXTURES)}, got {categories!r}"
        raise ValueError(msg)
    unknown = [category for category in categories if category not in TEXTURES]
    if unknown:
        msg = f"categories contains unknown {unknown}; valid categories are {list(TEXTURES)}"
        raise ValueError(msg)
    if len(set(categories)) != len(categories):
        msg = f"categories must not repeat a name, got {list(categories)}"
        raise ValueError(msg)
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
    # One zero-padded width for all file names, so anomalib's sorted image and mask lists pair up.
    width = max(3, len(str(max(num_train, num_test_normal, num_test_anomalous))))

    _clear_category(category_dir)
    for number, crop in enumerate(crops[:num_train]):
        _save_png(crop, category_dir / "train" / "good" / f"{number:0{width}d}.png")
    for number, crop in enumerate(crops[num_train : num_train + num_test_normal]):
        _save_png(crop, category_dir / "test" / "good" / f"{number:0{width}d}.png")

    defect_names = list(DEFECT_TYPES)
    for k, crop in enumerate(crops[num_train + num_test_normal :]):
        defect_type = defect_names[k % len(defect_names)]
        stem = f"{k // len(defect_names):0{width}d}"
        top, left = rng.integers(0, PHOTO_SIZE - CROP_SIZE + 1, size=2)
        donor = _crop(donor_name, int(top), int(left), image_size)
        defective, mask = synthesize_defect(crop, donor, defect_type, rng)
        _save_png(defective, category_dir / "test" / defect_type / f"{stem}.png")
        _save_png(mask, category_dir / "ground_truth" / defect_type / f"{stem}_mask.png")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point ``fastflow2d-demo-data``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        Exit status 0 (invalid arguments exit with status 2 through :mod:`argparse`).

    Examples:
        ``fastflow2d-demo-data --root datasets/demo --categories brick grass --image-size 128``
    """
    parser = argparse.ArgumentParser(
        prog="fastflow2d-demo-data",
        description="Write an offline MVTec-AD-style dataset from scikit-image texture photos with synthetic defects.",
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root (anomalib MVTecAD root)")
    parser.add_argument("--categories", nargs="+", default=list(TEXTURES), choices=list(TEXTURES))
    parser.add_argument("--image-size", type=int, default=128, help="square image side, 32..512 (default 128)")
    parser.add_argument("--num-train", type=int, default=48, help="normal training images per category")
    parser.add_argument("--num-test-normal", type=int, default=12, help="normal test images per category")
    parser.add_argument("--num-test-anomalous", type=int, default=12, help="defective test images per category")
    parser.add_argument("--seed", type=int, default=0, help="non-negative random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        root = generate_demo_dataset(
            args.root,
            categories=args.categories,
            image_size=args.image_size,
            num_train=args.num_train,
            num_test_normal=args.num_test_normal,
            num_test_anomalous=args.num_test_anomalous,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    for category in args.categories:
        sys.stdout.write(
            f"{category}: {args.num_train} train, {args.num_test_normal} test good, "
            f"{args.num_test_anomalous} test anomalous -> {root / category}\n"
        )
    return 0
