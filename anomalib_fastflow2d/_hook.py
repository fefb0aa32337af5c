# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Start-up hook that registers Fastflow2D with anomalib when, and only when, ``anomalib.models`` is imported.

The installed ``anomalib_fastflow2d.pth`` runs ``install()`` at interpreter start, from a copy of this file at the top
of site-packages (``_anomalib_fastflow2d_hook``), so importing it does not import the package, torch or anomalib.
``install()`` puts a finder first on ``sys.meta_path`` that waits for ``anomalib.models``; once that module has
executed, the finder imports ``anomalib_fastflow2d``, which registers the model. Every interpreter that never imports
anomalib pays only for reading this file.

Set ``ANOMALIB_FASTFLOW2D_DISABLE_HOOK=1`` to turn the hook off; ``import anomalib_fastflow2d`` still registers.

The hook never raises: a failed registration becomes a warning, so a broken plugin cannot break anomalib.
"""

from __future__ import annotations  # annotations stay strings: importing `typing` would triple the start-up cost

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

DISABLE_VARIABLE = "ANOMALIB_FASTFLOW2D_DISABLE_HOOK"
TRIGGER_MODULE = "anomalib.models"
PLUGIN_MODULE = "anomalib_fastflow2d"
_MARKER = "_anomalib_fastflow2d_finder"


def _import_plugin() -> None:
    try:
        __import__(PLUGIN_MODULE)
    except Exception as error:  # noqa: BLE001 - a plugin failure must never break anomalib itself
        import warnings  # noqa: PLC0415

        warnings.warn(
            f"anomalib-fastflow2d could not register Fastflow2D with anomalib: {error!r}. "
            f"Run `python -c 'import {PLUGIN_MODULE}'` to see the full error, or set {DISABLE_VARIABLE}=1.",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisteringLoader:
    """Wraps ``anomalib.models``'s loader to import the plugin right after the module has executed."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _import_plugin()

    def __getattr__(self, name: str) -> object:  # delegate get_source, is_package, resource readers
        return getattr(self._loader, name)


class _RegisterAfterImport:
    """One-shot meta-path finder: wraps the real spec of ``anomalib.models``, then steps aside."""

    _anomalib_fastflow2d_finder = True

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != TRIGGER_MODULE:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def is_installed() -> bool:
    """Whether a hook finder is waiting on ``sys.meta_path``."""
    return any(getattr(finder, _MARKER, False) for finder in sys.meta_path)


def install() -> None:
    """Arrange for Fastflow2D to be registered when ``anomalib.models`` is imported; idempotent, never raises."""
    if os.environ.get(DISABLE_VARIABLE, "").strip() not in {"", "0"} or is_installed():
        return
    if TRIGGER_MODULE in sys.modules:
        _import_plugin()
        return
    sys.meta_path.insert(0, _RegisterAfterImport())
