# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Make Fastflow2D a model of stock anomalib.

anomalib finds models in two ways: ``get_model("Fastflow2D")`` and ``list_models()`` scan the direct subclasses of
``AnomalibModule`` (true as soon as this package is imported), while ``get_model({"class_path": "Fastflow2D"})``,
benchmark configs and the CLI's short class names look the name up on ``anomalib.models``. :func:`register` sets it
there. The start-up hook (``_hook``) imports this package right after ``anomalib.models`` has executed, before the
import system binds it as an attribute of ``anomalib``, hence ``from anomalib import models`` (which falls back to
``sys.modules``) rather than ``import anomalib.models``.

The data modules are published the same way on ``anomalib.data``: anomalib's benchmark (``get_datamodule``) looks a
data module up there by the last part of its class path, so ``class_path: CIFAR10OneClass`` and
``class_path: anomalib_fastflow2d.data.CIFAR10OneClass`` both work in benchmark configs.
"""

from types import ModuleType

from anomalib import data as anomalib_data
from anomalib import models as anomalib_models

from .data import CIFAR10OneClass, ClassFolderOneClass
from .lightning_model import Fastflow2D

PUBLISHED: tuple[tuple[ModuleType, type], ...] = (
    (anomalib_models, Fastflow2D),
    (anomalib_data, CIFAR10OneClass),
    (anomalib_data, ClassFolderOneClass),
)
"""The classes set on anomalib's modules, each under its own name."""


def register() -> None:
    """Publish :class:`Fastflow2D` on ``anomalib.models`` and the data modules on ``anomalib.data``.

    Calling it again changes nothing.

    Raises:
        RuntimeError: If another class is already registered under one of the names; nothing is published then.
    """
    for module, cls in PUBLISHED:
        registered = getattr(module, cls.__name__, None)
        if registered is not None and registered is not cls:
            msg = (
                f"{module.__name__}.{cls.__name__} is already {registered.__module__}.{registered.__qualname__}; "
                f"refusing to replace it with {cls.__module__}.{cls.__qualname__}. Uninstall the other plugin."
            )
            raise RuntimeError(msg)
    for module, cls in PUBLISHED:
        setattr(module, cls.__name__, cls)
        if cls.__name__ not in module.__all__:
            module.__all__.append(cls.__name__)
