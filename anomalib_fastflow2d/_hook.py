# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Start-up hook that registers Fastflow2D with anomalib when, and only when, ``anomalib.models`` is imported.

The installed ``anomalib_fastflow2d.pth`` runs ``install()`` at interpreter start, from a copy of this file at the top
of site-packages (``_anomalib_fastflow2d_hook``), so importing it does not import the package, torch or anomalib.
``install()`` puts a finder first on ``sys.meta_path`` that waits for two modules. Once ``anomalib.models`` has
executed, the finder imports ``anomalib_fastflow2d``, which registers the model. Once ``anomalib.cli.cli`` has
executed, it makes the CLI's ``--seed_everything`` seed the run (:mod:`anomalib_fastflow2d.seeding`; anomalib 2.7
parses the option and ignores it), and the CLI print the plugin's errors as their message and fix instead of
tracebacks (:mod:`anomalib_fastflow2d.cli_errors`). Every interpreter that never imports anomalib pays only for
reading this file.

Set ``ANOMALIB_FASTFLOW2D_DISABLE_HOOK=1`` to turn the hook off; ``import anomalib_fastflow2d`` still registers.
``ANOMALIB_FASTFLOW2D_DISABLE_SEED=1`` turns the seeding off alone, ``ANOMALIB_FASTFLOW2D_TRACEBACK=1`` shows the
plugin's errors with their tracebacks.

The hook never raises: a failed registration becomes a warning, so a broken plugin cannot break anomalib.
"""

from __future__ import annotations  # annotations stay strings: importing `typing` would triple the start-up cost

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

DISABLE_VARIABLE = "ANOMALIB_FASTFLOW2D_DISABLE_HOOK"
TRIGGER_MODULE = "anomalib.models"
CLI_MODULE = "anomalib.cli.cli"
PLUGIN_MODULE = "anomalib_fastflow2d"
CLI_EXTENSIONS = {
    "anomalib_fastflow2d.seeding": "make anomalib's --seed_everything seed the run",
    "anomalib_fastflow2d.cli_errors": "shorten the plugin's errors in anomalib's CLI",
}
"""The modules whose ``install(cli_module)`` extends ``anomalib.cli.cli``, and what each does, for the warning."""
_MARKER = "_anomalib_fastflow2d_finder"


def _warn(what: str, error: Exception) -> None:
    import warnings  # noqa: PLC0415

    warnings.warn(
        f"anomalib-fastflow2d could not {what}: {error!r}. "
        f"Run `python -c 'import {PLUGIN_MODULE}'` to see the full error, or set {DISABLE_VARIABLE}=1.",
        RuntimeWarning,
        stacklevel=3,
    )


def _import_plugin(module: ModuleType | None = None) -> None:
    del module
    try:
        __import__(PLUGIN_MODULE)
    except Exception as error:  # noqa: BLE001 - a plugin failure must never break anomalib itself
        _warn("register Fastflow2D with anomalib", error)


def _install_extension(name: str, what: str, module: ModuleType) -> None:
    try:
        __import__(name)
        sys.modules[name].install(module)
    except Exception as error:  # noqa: BLE001 - a plugin failure must never break anomalib itself
        _warn(what, error)


def _extend_cli(module: ModuleType) -> None:
    for name, what in CLI_EXTENSIONS.items():  # one failing extension leaves the other working
        _install_extension(name, what, module)


_AFTER_IMPORT = {TRIGGER_MODULE: _import_plugin, CLI_MODULE: _extend_cli}
"""What to run once each module has executed."""


class _RegisteringLoader:
    """Wraps a trigger module's loader to run its action right after the module has executed."""

    def __init__(self, loader: Loader, action: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._action = action

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._action(module)

    def __getattr__(self, name: str) -> object:  # delegate get_source, is_package, resource readers
        return getattr(self._loader, name)


class _RegisterAfterImport:
    """Meta-path finder: wraps the real spec of each trigger module once, and steps aside after the last one."""

    _anomalib_fastflow2d_finder = True

    def __init__(self) -> None:
        self._waiting = dict(_AFTER_IMPORT)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        action = self._waiting.pop(fullname, None)
        if action is None:
            return None
        if not self._waiting and self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None and finder is not self else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader, action)
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
        _import_plugin()  # which also seeds the CLI if its module has executed
        return
    sys.meta_path.insert(0, _RegisterAfterImport())
