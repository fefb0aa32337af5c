# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Make Fastflow2D a model of stock anomalib.

anomalib finds models in two ways: ``get_model("Fastflow2D")`` and ``list_models()`` scan the direct subclasses of
``AnomalibModule`` (true as soon as this package is imported), while ``get_model({"class_path": "Fastflow2D"})``,
benchmark configs and the CLI's short class names look the name up on ``anomalib.models``. :func:`register` sets it
there. The start-up hook (``_hook``) imports this package right after ``anomalib.models`` has executed, before the
import system binds it as an attribute of ``anomalib``, hence ``from anomalib import models`` (which falls back to
``sys.modules``) rather than ``import anomalib.models``.
"""

from anomalib import models as anomalib_models

from .lightning_model import Fastflow2D

MODEL_NAME = "Fastflow2D"


def register() -> None:
    """Publish :class:`Fastflow2D` as ``anomalib.models.Fastflow2D``; calling it again changes nothing.

    Raises:
        RuntimeError: If another class is already registered under the same name.
    """
    registered = getattr(anomalib_models, MODEL_NAME, None)
    if registered is not None and registered is not Fastflow2D:
        msg = (
            f"anomalib.models.{MODEL_NAME} is already {registered.__module__}.{registered.__qualname__}; "
            "refusing to replace it with anomalib_fastflow2d.Fastflow2D. Uninstall the other plugin."
        )
        raise RuntimeError(msg)
    anomalib_models.Fastflow2D = Fastflow2D  # type: ignore[attr-defined]
    if MODEL_NAME not in anomalib_models.__all__:
        anomalib_models.__all__.append(MODEL_NAME)
