# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""One-class classification with anomalib: one labelled class is normal, every other class is anomalous.

The protocol is the standard one of anomaly detection on classification data since Deep SVDD (Ruff et al. 2018):
train on the normal class's training images only, test on a test split of *every* class, and report image AUROC.
There are no masks, so the datasets are anomalib ``classification`` datasets and the evaluator reports image
metrics only.

:class:`OneClassDataModule` holds what the data modules share: the choice of the normal class (an index or a name),
the labels, and a validation set equal to the test set (anomalib learns its thresholds and normalisation there,
and the protocol tests on the full test split). Subclasses only list their images.
"""

from abc import abstractmethod
from collections.abc import Sequence

from anomalib import TaskType
from anomalib.data import AnomalibDataModule
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from pandas import DataFrame


class OneClassDataset(AnomalibDataset):
    """Images labelled normal (those of the normal class) or anomalous (those of any other class).

    Args:
        images: ``(image path, class name, split)`` of each image.
        normal_class: The class whose images are normal.
    """

    def __init__(self, images: Sequence[tuple[str, str, str]], normal_class: str) -> None:
        super().__init__()
        samples = DataFrame(list(images), columns=["image_path", "class_name", "split"])
        normal = samples["class_name"] == normal_class
        samples["label_index"] = [int(LabelName.NORMAL if flag else LabelName.ABNORMAL) for flag in normal]
        samples["label"] = ["normal" if flag else "abnormal" for flag in normal]
        samples["mask_path"] = ""
        samples.attrs["task"] = TaskType.CLASSIFICATION
        self.samples = samples


class OneClassDataModule(AnomalibDataModule):
    """Base of the one-vs-rest data modules: a normal class among named classes, train on it, test on all.

    Subclasses list their class names and images. The normal class is checked at construction where the class
    names are fixed (CIFAR-10), and at setup where they come from the data (a class folder).

    Args:
        normal_class: The normal class, as an index into the class names or a name.
        train_batch_size: Training batch size. Defaults to ``32``.
        eval_batch_size: Validation and test batch size. Defaults to ``32``.
        num_workers: Data loader workers. Defaults to ``8``.
        val_split_mode: Where validation images come from. Defaults to ``same_as_test``: the protocol tests on the
            whole test split, so none of it is held out; anomalib learns its thresholds (for F1) and normalisation
            there, and AUROC needs neither.
        val_split_ratio: Fraction held out when ``val_split_mode`` samples from a split. Defaults to ``0.5``.
        seed: Seed of any random split. Defaults to ``None``.
    """

    def __init__(
        self,
        normal_class: int | str,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            test_split_mode=TestSplitMode.FROM_DIR,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.normal_class = normal_class
        # The results folder is named after the category before setup; subclasses whose class names are known by
        # then name the chosen class, and setup names it in any case.
        self.category = str(normal_class)

    @abstractmethod
    def class_names(self) -> list[str]:
        """The class names, in the order that an index ``normal_class`` refers to."""

    @abstractmethod
    def list_images(self) -> list[tuple[str, str, str]]:
        """``(image path, class name, "train" or "test")`` of every image, both splits."""

    def _setup(self, _stage: str | None = None) -> None:
        normal = normal_class_name(self.normal_class, self.class_names())
        self.category = normal
        images = self.list_images()
        train = [image for image in images if image[2] == Split.TRAIN.value and image[1] == normal]
        self.train_data = OneClassDataset(train, normal)
        self.test_data = OneClassDataset([image for image in images if image[2] == Split.TEST.value], normal)


def normal_class_name(normal_class: int | str, classes: Sequence[str]) -> str:
    """The name of the normal class: a class of that name first, else the class at that index.

    A name wins over an index, so with folders named ``0`` ... ``11`` (which the CLI parses as integers) ``2`` is
    the folder ``2``, not the sorted third name ``10``. An index applies only where no class has the name.

    Raises:
        ValueError: Naming the valid indices and names.

    Examples:
        >>> normal_class_name(3, ["airplane", "automobile", "bird", "cat"])
        'cat'
        >>> normal_class_name("bird", ["airplane", "automobile", "bird", "cat"])
        'bird'
        >>> normal_class_name(2, ["0", "1", "10", "11", "2"])
        '2'
    """
    if not isinstance(normal_class, bool):
        if str(normal_class) in classes:
            return str(normal_class)
        index = _as_index(normal_class)
        if index is not None and 0 <= index < len(classes):
            return classes[index]
    msg = (
        f"normal_class must be one of the class names {list(classes)} or an index from 0 to {len(classes) - 1}, "
        f"got {normal_class!r}."
    )
    raise ValueError(msg)


def _as_index(normal_class: int | str) -> int | None:
    """``normal_class`` as an index: an integer, or a string of digits (as a YAML or Python caller may write it)."""
    if isinstance(normal_class, int):
        return normal_class
    return int(normal_class) if normal_class.isdecimal() else None
