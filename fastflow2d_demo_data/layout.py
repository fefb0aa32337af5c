# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Writing one category in the folder layout that :class:`anomalib.data.MVTecAD` reads.

Shared by the package's MVTec-style generators so that they name, encode and replace files the same way::

    root/<category>/train/good/000.png
    root/<category>/test/good/000.png
    root/<category>/test/<defect_type>/000.png
    root/<category>/ground_truth/<defect_type>/000_mask.png
"""

import shutil
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_PNG_COMPRESS_LEVEL = 6
_SPLIT_DIRS = ("train", "test", "ground_truth")


def save_png(array: NDArray[np.uint8], path: Path, compress_level: int = _PNG_COMPRESS_LEVEL) -> None:
    """Write an ``L`` or ``RGB`` PNG with fixed encoder settings (no metadata), creating parent folders.

    Args:
        array: ``uint8`` image of shape ``(H, W)`` or ``(H, W, 3)``.
        path: File to write.
        compress_level: zlib level from 0 to 9; it trades writing time for file size, never the pixels. Defaults
            to ``6``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=compress_level)


def clear_category(category_dir: Path) -> None:
    """Remove the split folders a previous run wrote into ``category_dir``; leave everything else alone."""
    for name in _SPLIT_DIRS:
        path = category_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def stem_width(*counts: int) -> int:
    """One zero-padded width for all file names of a category, so anomalib's sorted image and mask lists pair up."""
    return max(3, len(str(max(counts))))
