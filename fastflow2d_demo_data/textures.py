# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The scikit-image texture photographs that every generator of the package builds its normal images from.

Both the demo crops (:func:`~fastflow2d_demo_data.generate_demo_dataset`) and the large frames
(:func:`~fastflow2d_demo_data.generate_large_frame_dataset`) draw on the same photographs and tints, so a category
name means the same surface in either dataset.
"""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import skimage.data
from numpy.typing import NDArray

PHOTO_SIZE = 512
"""Side length of the scikit-image texture photographs, in pixels."""


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


@functools.cache
def load_photo(category: str) -> NDArray[np.uint8]:
    """Load a category's photograph once per process (read-only, shared between calls)."""
    photo = TEXTURES[category].loader()
    photo.flags.writeable = False
    return photo


def validate_categories(categories: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``categories`` is a non-empty sequence of distinct names from :data:`TEXTURES`."""
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
