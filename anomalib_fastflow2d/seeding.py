# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Make anomalib's ``--seed_everything`` (and ``seed_everything:`` in a config) seed the run, for every model.

anomalib 2.7's CLI parses the option but never calls ``seed_everything``, so two runs with the same seed draw
different random backbones, data orders and metrics. :func:`install` wraps ``AnomalibCLI.before_instantiate_classes``
so that the seed is set after the arguments are parsed and before the model, the data and the engine are built, with
Lightning's meaning of the value: an integer seeds with it, ``true`` (anomalib's default) draws a seed and logs it,
``false`` leaves the run unseeded. The start-up hook (``_hook``) calls :func:`install` as soon as ``anomalib.cli.cli``
has executed; importing this package does too when the CLI module was imported first.

Set ``ANOMALIB_FASTFLOW2D_DISABLE_SEED=1`` to leave anomalib's CLI as it is.
"""

import logging
import os
import sys
from functools import wraps
from typing import TYPE_CHECKING, Any

from lightning.pytorch import seed_everything

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

DISABLE_VARIABLE = "ANOMALIB_FASTFLOW2D_DISABLE_SEED"
"""Environment variable that, set to anything but ``0``, turns CLI seeding off."""

CLI_MODULE = "anomalib.cli.cli"
"""The module that defines ``AnomalibCLI``."""

_WRAPPED_MARKER = "_anomalib_fastflow2d_seeds"


def seeding_disabled() -> bool:
    """Whether :data:`DISABLE_VARIABLE` turns CLI seeding off."""
    return os.environ.get(DISABLE_VARIABLE, "").strip() not in {"", "0"}


def seed_run(value: bool | int | str | None) -> int | None:
    """Seed Python, NumPy, torch and data-loader workers as ``--seed_everything value`` asks; return the seed.

    ``workers=True`` also seeds each data-loader worker from the seed, so runs with ``num_workers > 0`` repeat too.

    Examples:
        >>> seed_run(3)
        3
        >>> seed_run(False) is None
        True
    """
    if value is None or value is False:
        return None
    seed = seed_everything(None if value is True else int(value), workers=True, verbose=False)
    source = "drawn at random; pass --seed_everything N to repeat" if value is True else "from --seed_everything"
    log.info("Seeding everything with %d (%s).", seed, source)
    return seed


def install(cli_class: type) -> None:
    """Wrap ``cli_class.before_instantiate_classes`` to seed the run first, unless disabled when it runs; idempotent."""
    original: Callable[..., None] = cli_class.before_instantiate_classes  # type: ignore[attr-defined]
    if getattr(original, _WRAPPED_MARKER, False):
        return

    @wraps(original)
    def before_instantiate_classes(self: Any) -> None:  # noqa: ANN401 - any AnomalibCLI
        original(self)
        if not seeding_disabled():
            subcommand_config = self.config.get(str(self.subcommand), self.config)
            seed_run(subcommand_config.get("seed_everything"))

    setattr(before_instantiate_classes, _WRAPPED_MARKER, True)
    cli_class.before_instantiate_classes = before_instantiate_classes  # type: ignore[attr-defined]


def install_if_loaded() -> None:
    """:func:`install` on ``AnomalibCLI`` if its module has already executed (the hook did not see it import)."""
    module = sys.modules.get(CLI_MODULE)
    cli_class = getattr(module, "AnomalibCLI", None)
    if cli_class is not None:
        install(cli_class)
