# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""A user-like dataset: jittered non-square photographs saved as JPEG, with painted defects and PNG masks.

The demo textures are square PNG crops; deployment checks (INT8, bfloat16) also need whole scenes at another aspect
ratio, compressed as cameras save them. Imports only numpy, Pillow and scikit-image, like the rest of the package.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import skimage.data
from numpy.typing import NDArray
from PIL import Image, ImageDraw

PHOTOS: dict[str, Callable[[], NDArray[np.uint8]]] = {
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
}
"""Non-square RGB photographs for :func:`generate_photo_dataset`."""


def generate_photo_dataset(
    root: str | Path,
    photo: str = "chelsea",
    *,
    image_size: tuple[int, int] = (48, 72),
    num_train: int = 16,
    num_test_normal: int = 8,
    num_test_anomalous: int = 8,
    seed: int = 0,
) -> Path:
    """Write a :class:`anomalib.data.Folder` dataset of one non-square photograph, with painted defects.

    Unlike the demo textures, these are whole scenes at a non-square size saved as JPEG, like a user's own photos:
    normal images are jittered crops (position, scale, brightness) of the photograph, and defective ones get a
    painted stroke or blob. Masks (PNG, same stem) mark the painted pixels. The layout is ``root/normal``,
    ``root/test_normal``, ``root/abnormal`` and ``root/mask``, for ``Folder(normal_dir="normal",
    normal_test_dir="test_normal", abnormal_dir="abnormal", mask_dir="mask")``.

    Args:
        root: Dataset root; pass it as ``root`` to :class:`anomalib.data.Folder`.
        photo: One of :data:`PHOTOS`. Defaults to ``"chelsea"``.
        image_size: ``(H, W)`` of the images. Defaults to ``(48, 72)``.
        num_train: Normal training images. Defaults to ``16``.
        num_test_normal: Normal test images. Defaults to ``8``.
        num_test_anomalous: Defective test images, strokes and blobs alternating. Defaults to ``8``.
        seed: Seed of every crop, jitter and defect. Defaults to ``0``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``photo`` is unknown.
    """
    if photo not in PHOTOS:
        msg = f"photo must be one of {sorted(PHOTOS)}, got {photo!r}"
        raise ValueError(msg)
    root, scene = Path(root), PHOTOS[photo]()
    rng = np.random.default_rng(seed)
    for split, count in (("normal", num_train), ("test_normal", num_test_normal), ("abnormal", num_test_anomalous)):
        for number in range(count):
            image = _jittered_crop(scene, image_size, rng)
            if split == "abnormal":
                mask = _paint_defect(image, stroke=number % 2 == 0, rng=rng)
                (root / "mask").mkdir(parents=True, exist_ok=True)
                mask.save(root / "mask" / f"{number:03d}.png")
            path = root / split / f"{number:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="JPEG", quality=95)
    return root


def _jittered_crop(scene: NDArray[np.uint8], image_size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Up to 8 % off-centre, 90-100 % of the scene, +-6 % brightness, resized to ``(H, W)``."""
    height, width = image_size
    scale = rng.uniform(0.9, 1.0)
    box_h, box_w = int(scene.shape[0] * scale), int(scene.shape[1] * scale)
    top = rng.integers(0, scene.shape[0] - box_h + 1)
    left = rng.integers(0, scene.shape[1] - box_w + 1)
    crop = Image.fromarray(scene[top : top + box_h, left : left + box_w]).resize((width, height))
    return Image.fromarray(np.clip(np.asarray(crop) * rng.uniform(0.94, 1.06), 0, 255).astype(np.uint8))


def _paint_defect(image: Image.Image, stroke: bool, rng: np.random.Generator) -> Image.Image:
    """Paint a stroke or a blob of one random colour onto ``image`` in place; return its 0/255 mask."""
    width, height = image.size
    mask = Image.new("L", (width, height), 0)
    centre = rng.uniform(0.2, 0.8, size=2) * (width, height)
    extent = rng.uniform(0.08, 0.16, size=2) * (width, height)
    shape = [tuple(centre - extent), tuple(centre + extent)]
    if stroke:
        ImageDraw.Draw(mask).line(shape, fill=255, width=max(2, height // 16))
    else:
        ImageDraw.Draw(mask).ellipse(shape, fill=255)
    colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
    image.paste(Image.new("RGB", image.size, colour), mask=mask)
    return mask
