# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""One-class classification data modules for anomalib: CIFAR-10 and any labelled image folder.

Use them with the stock CLI as ``--data anomalib_fastflow2d.data.CIFAR10OneClass`` (or ``ClassFolderOneClass``).
Importing ``anomalib_fastflow2d`` also publishes them as ``anomalib.data.CIFAR10OneClass`` and
``anomalib.data.ClassFolderOneClass``, because anomalib's benchmark looks data modules up there by class name.
"""

from .cifar10 import CIFAR10OneClass
from .class_folder import ClassFolderOneClass
from .one_class import OneClassDataModule, OneClassDataset

__all__ = ["CIFAR10OneClass", "ClassFolderOneClass", "OneClassDataModule", "OneClassDataset"]
