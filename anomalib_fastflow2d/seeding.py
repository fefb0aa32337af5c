# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Make anomalib's ``--seed_everything`` (and ``seed_everything:`` in a config) seed the run, for every model.

anomalib 2.7's CLI parses the option but never calls ``seed_everything``, so two runs with the same seed draw
different random backbones, data orders and metrics. :func:`install` wraps ``AnomalibCLI.before_instantiate_classes``
so that the seed is set after the arguments are parsed and before the model, the data and the engine are built, with
Lightning's meaning of the value: an integer seeds with it, ``false`` leaves the run unseeded, and ``true``
(anomalib's default) draws a seed, as ``LightningCLI`` meant it to. Lightning 2.x's ``seed_everything(None)`` no longer
draws: it returns 0, which would give every run the same seed. So a fresh seed comes from ``random.SystemRandom``,
unless Lightning passed one down in ``PL_GLOBAL_SEED`` (its DDP launcher does, so that every process of a run has the
seed of the first). The seed used is logged, with the option that repeats the run, and written into the run's config,
so the ``config.yaml`` that anomalib saves repeats the run too.

The start-up hook (``_hook``) calls :func:`install` as soon as ``anomalib.cli.cli`` has executed; importing this
package does too when the CLI module was imported first.

Set ``ANOMALIB_FASTFLOW2D_DISABLE_SEED=1`` to leave anomalib's CLI as it is.
"""

import logging
import os
import random
import sys
from functools import wraps
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from lightning.pytorch import seed_everything

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

DISABLE_VARIABLE = "ANOMALIB_FASTFLOW2D_DISABLE_SEED"
"""Environment variable that, set to anything but ``0``, turns CLI seeding off."""

LIGHTNING_SEED_VARIABLE = "PL_GLOBAL_SEED"
"""Where Lightning keeps the seed and passes it to the processes it starts (its DDP launcher)."""

CLI_MODULE = "anomalib.cli.cli"
"""The module that defines ``AnomalibCLI``."""

_WRAPPED_MARKER = "_anomalib_fastflow2d_seeds"


def seeding_disabled() -> bool:
    """Whether :data:`DISABLE_VARIABLE` turns CLI seeding off."""
    return os.environ.get(DISABLE_VARIABLE, "").strip() not in {"", "0"}


def seed_run(value: bool | int | str | None) -> int | None:
    """Seed Python, NumPy, torch and data-loader workers as ``--seed_everything value`` asks; return the seed.

    ``true`` draws the seed from the operating system's randomness, unless :data:`LIGHTNING_SEED_VARIABLE` holds one:
    then this process was started by a Lightning launcher for a run that is already seeded, and must use its seed.
    ``workers=True`` also seeds each data-loader worker from the seed, so runs with ``num_workers > 0`` repeat too.

    Examples:
        >>> seed_run(3)
        3
        >>> seed_run(False) is None
        True
    """
    if value is None or value is False:
        return None
    passed_down = os.environ.get(LIGHTNING_SEED_VARIABLE)
    if value is not True:
        seed, source = int(value), "from --seed_everything"
    elif passed_down is not None:
        seed, source = int(passed_down), f"from {LIGHTNING_SEED_VARIABLE}, as Lightning passes it on"
    else:
        seed = random.SystemRandom().randint(min_seed_value, max_seed_value)
        source = f"drawn at random; repeat this run with --seed_everything {seed}"
    seed_everything(seed, workers=True, verbose=False)
    log.info("Seeding everything with %d (%s).", seed, source)
    return seed


def install(cli_module: ModuleType) -> None:
    """Wrap ``AnomalibCLI.before_instantiate_classes`` to seed the run first, unless disabled when it runs; idempotent.

    The seed used replaces ``true`` in the run's config, as ``LightningCLI`` does, so the config anomalib saves with
    the run names it.
    """
    cli_class = cli_module.AnomalibCLI
    original: Callable[..., None] = cli_class.before_instantiate_classes
    if getattr(original, _WRAPPED_MARKER, False):
        return

    @wraps(original)
    def before_instantiate_classes(self: Any) -> None:  # noqa: ANN401 - any AnomalibCLI
        original(self)
        if not seeding_disabled():
            subcommand_config = self.config.get(str(self.subcommand), self.config)
            seed = seed_run(subcommand_config.get("seed_everything"))
            if seed is not None:
                subcommand_config["seed_everything"] = seed

    setattr(before_instantiate_classes, _WRAPPED_MARKER, True)
    cli_class.before_instantiate_classes = before_instantiate_classes


def install_if_loaded() -> None:
    """:func:`install` on ``anomalib.cli.cli`` if it has defined ``AnomalibCLI`` (the hook did not see it import)."""
    module = sys.modules.get(CLI_MODULE)
    if module is not None and hasattr(module, "AnomalibCLI"):
        install(module)
