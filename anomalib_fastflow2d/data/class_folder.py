# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The one-class protocol on any labelled image folder, ``root/<class>/<image>`` (torchvision's ImageFolder layout).

For users whose normal parts come in several labelled kinds: each kind in turn is the normal class, and the other
kinds are its anomalies. Every class's images are split into train and test parts with the same fraction and seed,
so the test set keeps the folder's class balance, as CIFAR-10's test batch does; the model trains on the normal
class's train part only.
"""

import math
import random
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS

from .one_class import OneClassDataModule, normal_class_name


class ClassFolderOneClass(OneClassDataModule):
    """One-vs-rest on a folder of labelled images: one class is normal, the others anomalous.

    Args:
        root: Folder with one sub-folder of images per class (``root/<class>/*.png``; any image extension that
            torchvision's ``ImageFolder`` reads).
        normal_class: The normal class: a sub-folder name, or, where no sub-folder has that name, an index into the
            sorted sub-folder names. ``category`` is the chosen sub-folder's name.
        test_fraction: Fraction of each class's images that goes to the test split, in (0, 1). Defaults to ``0.2``.
        split_seed: Seed of the train/test split; the same seed gives the same split. Defaults to ``0``.
        **loading: Batch sizes, workers and the validation split, as
            :class:`~anomalib_fastflow2d.data.one_class.OneClassDataModule` takes them.

    Raises:
        ValueError: If ``test_fraction`` is outside (0, 1), or ``normal_class`` names no sub-folder of an existing
            ``root``.

    Example:
        >>> datamodule = ClassFolderOneClass(root="./datasets/parts", normal_class="washer", test_fraction=0.25)
        >>> datamodule.category
        'washer'
    """

    def __init__(
        self,
        root: str | Path,
        normal_class: int | str,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **loading: Any,  # noqa: ANN401 - the base class's arguments, which the CLI reads from it
    ) -> None:
        if not 0 < test_fraction < 1:
            msg = f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}; e.g. 0.2."
            raise ValueError(msg)
        super().__init__(normal_class=normal_class, **loading)
        self.root = Path(root).expanduser()
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        if self.root.is_dir():  # name the run's results folder after the chosen folder, not the argument
            self.category = normal_class_name(normal_class, self.class_names())

    def class_names(self) -> list[str]:
        """The sorted names of the sub-folders that hold images.

        Raises:
            FileNotFoundError: If ``root`` is missing or has no class sub-folder with images.
        """
        classes = sorted(folder.name for folder in self._class_folders())
        if len(classes) < 2:  # noqa: PLR2004 - one normal class and at least one anomalous
            msg = (
                f"{self.root} must hold at least two class sub-folders of images (root/<class>/*.png), "
                f"found {classes or 'none'}."
            )
            raise FileNotFoundError(msg)
        return classes

    def list_images(self) -> list[tuple[str, str, str]]:
        """Every image with its class and split; each class split by ``test_fraction`` with ``split_seed``."""
        images = []
        for folder in sorted(self._class_folders()):
            paths = sorted(str(path) for path in folder.iterdir() if path.suffix.lower() in IMG_EXTENSIONS)
            random.Random(f"{self.split_seed}/{folder.name}").shuffle(paths)  # noqa: S311 - a split, not a secret
            test_count = max(1, math.floor(self.test_fraction * len(paths) + 0.5))  # half up, at least one
            images += [(path, folder.name, "test" if rank < test_count else "train") for rank, path in enumerate(paths)]
        return images

    def _class_folders(self) -> list[Path]:
        if not self.root.is_dir():
            msg = f"Class folder root {self.root} does not exist; pass the folder of root/<class>/*.png as root."
            raise FileNotFoundError(msg)
        return [
            folder
            for folder in self.root.iterdir()
            if folder.is_dir() and any(path.suffix.lower() in IMG_EXTENSIONS for path in folder.iterdir())
        ]
