# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""CIFAR-10 as a one-class anomaly detection benchmark, read from a local copy of its python version.

The FastFlow paper's CIFAR-10 protocol: one class is normal; the model trains on that class's 5,000 training images
and is tested on all 10,000 test images, the other nine classes being anomalous; image AUROC is reported per
class and averaged over the ten runs.

Nothing is downloaded. The data is the "CIFAR-10 python version", ``cifar-10-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html, or its extracted ``cifar-10-batches-py/`` folder: pickled batches,
each a dict with ``data`` (uint8, ``(N, 3072)``: the red, green and blue planes of a 32x32 image) and ``labels``.
On first use the images are decoded once into PNG files under ``<root>/cifar-10-png/``, so that anomalib reads
them like any folder dataset and every image has a path (for the visualiser, ``predictions.csv`` and the data
checks). The model's pre-processor resizes the 32x32 images to its input size.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (CIFAR-10 one-class results).
"""

import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .one_class import OneClassDataModule, normal_class_name

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""CIFAR-10's class names, in label order."""

ARCHIVE = "cifar-10-python.tar.gz"
BATCHES_FOLDER = "cifar-10-batches-py"
PNG_FOLDER = "cifar-10-png"
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{index}" for index in range(1, 6)),
    "test": ("test_batch",),
}
"""The pickled batch files of each split."""

_COMPLETE = ".complete"
"""Written last in the PNG folder: an interrupted decode is redone rather than half used."""


class CIFAR10OneClass(OneClassDataModule):
    """CIFAR-10 one-vs-rest: train on one class's training images, test on the whole test set.

    Args:
        root: Folder holding ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/``. The decoded PNG files go to
            ``<root>/cifar-10-png/``. Defaults to ``./datasets/CIFAR10``.
        normal_class: The normal class: an index 0-9 or a name, ``airplane`` ... ``truck``. Defaults to ``0``.
        **loading: Batch sizes, workers and the validation split, as
            :class:`~anomalib_fastflow2d.data.one_class.OneClassDataModule` takes them.

    Raises:
        ValueError: If ``normal_class`` is not a CIFAR-10 class; the message lists them.

    Example:
        >>> datamodule = CIFAR10OneClass(root="./datasets/CIFAR10", normal_class="cat")
        >>> datamodule.category
        'cat'

    Paper:
        FastFlow, Yu et al. 2021, https://arxiv.org/abs/2111.07677; the protocol follows Deep SVDD, Ruff et al.
        2018.
    """

    def __init__(
        self,
        root: str | Path = "./datasets/CIFAR10",
        normal_class: int | str = 0,
        **loading: Any,  # noqa: ANN401 - the base class's arguments, which the CLI reads from it
    ) -> None:
        super().__init__(normal_class=normal_class, **loading)
        self.root = Path(root).expanduser()
        self.category = normal_class_name(normal_class, CLASSES)

    def class_names(self) -> list[str]:
        """CIFAR-10's ten classes, in label order."""
        return list(CLASSES)

    def prepare_data(self) -> None:
        """Decode the batches into PNG files once (on one process only, under Lightning)."""
        decode_to_png(self.root)

    def list_images(self) -> list[tuple[str, str, str]]:
        """Every decoded image of both splits, decoding first if no complete decode exists."""
        png_root = decode_to_png(self.root)
        return [
            (str(path), path.parent.name, split)
            for split in BATCHES
            for path in sorted((png_root / split).glob("*/*.png"))
        ]


def decode_to_png(root: Path) -> Path:
    """Write every image of the batches under ``root`` to ``<root>/cifar-10-png/<split>/<class>/<index>.png``.

    A complete decode is kept and reused; an interrupted one is redone.

    Returns:
        The PNG folder.

    Raises:
        FileNotFoundError: If ``root`` holds neither the archive nor the extracted folder; the message names both
            paths and where to get the archive.
    """
    png_root = root / PNG_FOLDER
    if (png_root / _COMPLETE).is_file():
        return png_root
    for split, names in BATCHES.items():
        index = 0
        for name in names:
            batch = _read_batch(root, name)
            images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for image, label in zip(images, batch[b"labels"], strict=True):
                folder = png_root / split / CLASSES[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / f"{index:05d}.png")
                index += 1
    (png_root / _COMPLETE).write_text("decoded\n", encoding="utf-8")
    return png_root


def _read_batch(root: Path, name: str) -> dict[bytes, Any]:
    """One pickled batch, from the extracted folder if there is one, else from the archive."""
    extracted = root / BATCHES_FOLDER / name
    if extracted.is_file():
        return _unpickle(extracted.read_bytes())
    archive = root / ARCHIVE
    if archive.is_file():
        with tarfile.open(archive, "r:gz") as tar:
            try:
                member = tar.extractfile(f"{BATCHES_FOLDER}/{name}")
            except KeyError:
                member = None
            if member is None:
                msg = f"{archive} has no file {BATCHES_FOLDER}/{name}; is it the CIFAR-10 python version?"
                raise FileNotFoundError(msg) from None
            return _unpickle(member.read())
    msg = (
        f"CIFAR-10 not found: looked for {archive} and {root / BATCHES_FOLDER}/. Nothing is downloaded: get the "
        f"python version "
        f"from {DOWNLOAD_URL} and put the archive (or its extracted {BATCHES_FOLDER}/ folder) in {root}, or pass "
        "its folder as root (--data.root)."
    )
    raise FileNotFoundError(msg)


def _unpickle(content: bytes) -> dict[bytes, Any]:
    # CIFAR-10 is distributed pickled; like any pickle, load only an archive from a source you trust.
    batch = pickle.loads(content, encoding="bytes")  # noqa: S301
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        msg = "A CIFAR-10 batch must be a dict with b'data' and b'labels' (the python version, not binary or matlab)."
        raise ValueError(msg)
    return batch
