# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Large industrial frames with small defects, in the layout :class:`anomalib.data.MVTecAD` reads.

Industrial cameras give 2-20 megapixel frames, and the defects that matter span 10-40 pixels: scaled down to the
usual 256 pixels they shrink to a few pixels or less and vanish. The demo crops cannot show this, because their defects
cover a tenth of the image. This generator renders frames of any size from the same scikit-image photographs, at a
fixed texture scale, with camera-like variation between frames (shift, brightness, uneven lighting, sensor noise),
and paints each anomalous frame with one defect from :data:`~fastflow2d_demo_data.defects.DEFECT_TYPES` confined to
a few percent of the frame side, with its pixel-exact mask.

Like the rest of the package it imports only numpy, Pillow and scikit-image.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .defects import DEFECT_EXTENTS, DEFECT_TYPES, synthesize_defect
from .layout import clear_category, save_png, stem_width
from .textures import PHOTO_SIZE, TEXTURES, load_photo, validate_categories

TEXTURE_SCALE = 2.0
"""Frame pixels per photograph pixel, whatever the frame size: like a camera at a fixed magnification, a larger frame
shows more surface while the grain keeps its size in pixels. At 2 a 1024-pixel frame shows about one photograph."""

MIN_FRAME_SIDE = 32
MAX_FRAME_SIDE = 8192
"""Sides up to 8192 cover 20-megapixel sensors (5472 x 3648) with room to spare."""

MAX_DEFECT_SIZE = 0.25
"""Largest ``defect_size``: beyond a quarter of the side a ``stain``'s painting window no longer fits the frame."""

MIN_DEFECT_PIXELS = 6
"""Smallest defect extent in pixels: at 6 every defect type is guaranteed to cover at least one pixel."""

_PERIOD = 2 * PHOTO_SIZE
"""Period of the mirrored photograph: mirroring joins the tiles without seams of changing brightness."""

_MARGIN = 2
"""Photograph pixels kept around a frame's source box, the reach of bicubic resampling."""

_BRIGHTNESS_JITTER = 0.1
"""Largest relative change of a frame's overall brightness (exposure, lamp ageing)."""

_LIGHT_RAMP = 0.1
"""Relative brightness change of the uneven lighting from one edge of the frame to the other."""

_NOISE_SIGMA = 2.0
"""Standard deviation of the sensor noise, in grey levels: every pixel varies between frames, as on a camera."""

_PNG_COMPRESS_LEVEL = 1
"""Noisy frames barely compress, so a higher zlib level multiplies the writing time for little saving in size."""


def _surface(category: str, frame_size: tuple[int, int]) -> Image.Image:
    """Mirror-tile a category's photograph so that a frame's source box fits at every shift within one period."""
    height, width = frame_size
    rows = _PERIOD + math.ceil(height / TEXTURE_SCALE) + 2 * _MARGIN
    cols = _PERIOD + math.ceil(width / TEXTURE_SCALE) + 2 * _MARGIN
    photo = load_photo(category)
    return Image.fromarray(np.pad(photo, ((0, rows - PHOTO_SIZE), (0, cols - PHOTO_SIZE)), mode="symmetric"))


def _render(
    surface: Image.Image, tint: tuple[float, float, float], frame_size: tuple[int, int], rng: np.random.Generator
) -> NDArray[np.uint8]:
    """One RGB frame of a surface: sub-pixel shift, brightness, a lighting ramp and sensor noise all vary per call."""
    height, width = frame_size
    top, left = rng.uniform(_MARGIN, _MARGIN + _PERIOD, size=2)
    box = (left, top, left + width / TEXTURE_SCALE, top + height / TEXTURE_SCALE)
    gray = np.asarray(surface.resize((width, height), Image.Resampling.BICUBIC, box=box), dtype=np.float32)
    gain = rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER)
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp_rows = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None] * np.float32(np.cos(angle))
    ramp_cols = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * np.float32(np.sin(angle))
    light = np.float32(gain) * (1 + np.float32(_LIGHT_RAMP) * (ramp_rows + ramp_cols))
    rgb = (gray * light)[..., None] * np.asarray(tint, dtype=np.float32)
    rgb += np.float32(_NOISE_SIGMA) * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _paint_small_defect(
    frame: NDArray[np.uint8],
    donor: tuple[Image.Image, tuple[float, float, float]],
    defect_type: str,
    extent: int,
    rng: np.random.Generator,
) -> NDArray[np.uint8]:
    """Paint one defect of at most ``extent`` pixels across onto ``frame`` in place; return its full-frame mask.

    The painters size a defect relative to the square they are given, so the defect is painted into a window whose
    side is ``extent`` shrunk by the painter's :data:`DEFECT_EXTENTS` (minus the pixel rasterising may add).
    """
    window = int((extent - 1) / DEFECT_EXTENTS[defect_type])
    height, width = frame.shape[:2]
    top = int(rng.integers(0, height - window + 1))
    left = int(rng.integers(0, width - window + 1))
    clean = frame[top : top + window, left : left + window]
    donor_surface, donor_tint = donor
    defective, window_mask = synthesize_defect(
        clean, _render(donor_surface, donor_tint, (window, window), rng), defect_type, rng
    )
    frame[top : top + window, left : left + window] = defective
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : top + window, left : left + window] = window_mask
    return mask


def _validate(
    *,
    categories: Sequence[str],
    frame_size: tuple[int, int],
    defect_size: float,
    counts: dict[str, int],
    seed: int,
) -> tuple[int, int]:
    """Raise ``ValueError`` naming the first invalid argument of :func:`generate_large_frame_dataset`.

    Returns:
        ``frame_size`` as plain ``int``s (the command passes a list, numpy code may pass numpy integers).
    """
    validate_categories(categories)
    msg = (
        f"frame_size must be (height, width) with integer sides between {MIN_FRAME_SIDE} and {MAX_FRAME_SIDE}, "
        f"got {frame_size!r}"
    )
    try:
        height, width = frame_size
    except (TypeError, ValueError):
        raise ValueError(msg) from None
    if not all(isinstance(side, int | np.integer) and MIN_FRAME_SIDE <= side <= MAX_FRAME_SIDE for side in frame_size):
        raise ValueError(msg)
    if not 0 < defect_size <= MAX_DEFECT_SIZE:
        msg = f"defect_size must be a fraction of the frame side in (0, {MAX_DEFECT_SIZE}], got {defect_size}"
        raise ValueError(msg)
    shorter = min(int(height), int(width))
    if math.floor(defect_size * shorter) < MIN_DEFECT_PIXELS:
        msg = (
            f"defect_size {defect_size} of the shorter frame side, {shorter} px, is {defect_size * shorter:.1f} px; "
            f"a defect needs {MIN_DEFECT_PIXELS} px: raise defect_size to "
            f"{math.ceil(MIN_DEFECT_PIXELS / shorter * 1000) / 1000} or enlarge frame_size"
        )
        raise ValueError(msg)
    for name, count in counts.items():
        if count < 1:
            msg = f"{name} must be >= 1, got {count}"
            raise ValueError(msg)
    if seed < 0:
        msg = f"seed must be >= 0, got {seed}"
        raise ValueError(msg)
    return int(height), int(width)


def _generate_category(
    category_dir: Path,
    category: str,
    *,
    frame_size: tuple[int, int],
    extent: int,
    num_train: int,
    num_test_normal: int,
    num_test_anomalous: int,
    seed: int,
) -> None:
    """Write one category, frame by frame; its random stream depends only on ``seed`` and the category's index."""
    names = list(TEXTURES)
    index = names.index(category)
    donor_name = names[(index + 1) % len(names)]
    rng = np.random.default_rng([seed, index])
    surface, tint = _surface(category, frame_size), TEXTURES[category].tint
    donor = (_surface(donor_name, frame_size), TEXTURES[donor_name].tint)
    width = stem_width(num_train, num_test_normal, num_test_anomalous)

    clear_category(category_dir)
    for folder, count in (("train", num_train), ("test", num_test_normal)):
        for number in range(count):
            frame = _render(surface, tint, frame_size, rng)
            save_png(frame, category_dir / folder / "good" / f"{number:0{width}d}.png", _PNG_COMPRESS_LEVEL)
    defect_names = list(DEFECT_TYPES)
    for k in range(num_test_anomalous):
        defect_type = defect_names[k % len(defect_names)]
        stem = f"{k // len(defect_names):0{width}d}"
        frame = _render(surface, tint, frame_size, rng)
        mask = _paint_small_defect(frame, donor, defect_type, extent, rng)
        save_png(frame, category_dir / "test" / defect_type / f"{stem}.png", _PNG_COMPRESS_LEVEL)
        save_png(mask, category_dir / "ground_truth" / defect_type / f"{stem}_mask.png", _PNG_COMPRESS_LEVEL)


def generate_large_frame_dataset(
    root: str | Path,
    categories: Sequence[str] = ("brick",),
    *,
    frame_size: tuple[int, int] = (1024, 1024),
    defect_size: float = 0.03,
    num_train: int = 32,
    num_test_normal: int = 8,
    num_test_anomalous: int = 8,
    seed: int = 0,
) -> Path:
    """Write an MVTec-AD-style dataset of large texture frames whose defects span only a few percent of the side.

    Normal frames show the category's photograph (:data:`~fastflow2d_demo_data.textures.TEXTURES`), mirror-tiled and
    magnified :data:`TEXTURE_SCALE` times, so a frame of any size is sharp. Each frame has its own sub-pixel shift,
    brightness (+-10 %), lighting ramp (10 % across the frame, in a random direction) and sensor noise (2 grey
    levels), so no two frames are equal. Anomalous frames get one defect, round-robin over ``scratch``, ``stain``
    and ``patch`` (another category's surface pasted in); its bounding box spans at most
    ``floor(defect_size * min(frame_size))`` pixels each way, and its mask (0 or 255) marks exactly the changed
    pixels. With the defaults a 1024 x 1024 frame gets defects of about 15-30 pixels.

    An existing ``root/<category>`` has its ``train``, ``test`` and ``ground_truth`` folders replaced, so file counts
    always match the arguments; nothing else in ``root`` or ``root/<category>`` is touched.

    Args:
        root: Dataset root; pass it as ``root`` to :class:`anomalib.data.MVTecAD`.
        categories: Names from :data:`~fastflow2d_demo_data.textures.TEXTURES` to generate. Defaults to
            ``("brick",)``.
        frame_size: ``(H, W)`` of the frames, each side between 32 and 8192. Defaults to ``(1024, 1024)``.
        defect_size: Largest defect extent as a fraction of the shorter frame side, in ``(0, 0.25]``; it must come
            to at least 6 pixels. Defaults to ``0.03``.
        num_train: Normal training frames per category, at least 1. Defaults to ``32``.
        num_test_normal: Normal test frames per category, at least 1. Defaults to ``8``.
        num_test_anomalous: Defective test frames per category, at least 1. Defaults to ``8``.
        seed: Non-negative seed; the same arguments always produce byte-identical files. Defaults to ``0``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If an argument is out of range or names an unknown category; the message names the argument.

    Examples:
        >>> import tempfile
        >>> root = generate_large_frame_dataset(
        ...     tempfile.mkdtemp(), frame_size=(96, 128), defect_size=0.1, num_train=2, num_test_normal=1,
        ...     num_test_anomalous=1,
        ... )
        >>> sorted(str(path.relative_to(root)) for path in root.rglob("*.png"))  # doctest: +NORMALIZE_WHITESPACE
        ['brick/ground_truth/scratch/000_mask.png', 'brick/test/good/000.png', 'brick/test/scratch/000.png',
         'brick/train/good/000.png', 'brick/train/good/001.png']
    """
    counts = {"num_train": num_train, "num_test_normal": num_test_normal, "num_test_anomalous": num_test_anomalous}
    height, width = _validate(
        categories=categories, frame_size=frame_size, defect_size=defect_size, counts=counts, seed=seed
    )
    root = Path(root)
    extent = math.floor(defect_size * min(height, width))
    for category in categories:
        _generate_category(root / category, category, frame_size=(height, width), extent=extent, seed=seed, **counts)
    return root
