# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Synthetic defects painted onto a clean image, each with a pixel-exact ground-truth mask.

The painters work on a square image and size their defect relative to its side, so a caller decides a defect's size
in pixels by the size of the window it hands them: the demo generator passes its whole image, the large-frame
generator a small window of a frame.
"""

from collections.abc import Callable

import numpy as np
import skimage.draw
from numpy.typing import NDArray
from PIL import Image, ImageDraw

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

DEFECT_EXTENTS: dict[str, float] = {"scratch": 1.0, "stain": 0.32, "patch": 0.43}
"""Largest side of each defect's bounding box, as a fraction of the image side, read off the painters' ranges.

A ``scratch`` can run off the image, which clips it; a ``stain`` spans at most twice its largest radius (0.16); a
``patch`` at most the diagonal of its largest 0.3 x 0.3 rectangle (0.424). Rasterising adds up to one pixel. The
large-frame generator divides a defect's size in pixels by these to get the window it paints in.
"""


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
