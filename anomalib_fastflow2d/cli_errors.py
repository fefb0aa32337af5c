# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Through the stock ``anomalib`` command, the plugin's errors read as their message and fix, not as tracebacks.

anomalib's CLI lets every exception reach the interpreter, which prints it with the rich traceback that
``anomalib.cli.cli`` installs: 100 to 200 lines for a one-line reason. An error raised while jsonargparse builds the
model or the data (an unknown backbone, say) is worse off: jsonargparse turns it into a union-type error, and the
plugin's message sits near the end of two chained tracebacks of jsonargparse's code.

:func:`install` changes three things in ``anomalib.cli.cli``, without touching anomalib's files:

- its ``main`` prints an error that the plugin raised (:func:`raised_by_plugin`) as ``error: <message>`` and one line
  saying where it came from, and exits with status 1. Every other error reaches the interpreter as before, with its
  traceback, so anomalib's and Python's own errors keep theirs.
- every parser that ``AnomalibCLI`` makes builds classes through an instantiator that notes the plugin's error before
  jsonargparse wraps it, so ``main`` can still find it.
- jsonargparse's error for a class name that the plugin publishes, spelt with other letter case (``--model
  FastFlow2D``), ends with the right name: ``Did you mean "Fastflow2D"?``.

The start-up hook (``_hook``) calls :func:`install` as soon as ``anomalib.cli.cli`` has executed. Set
``ANOMALIB_FASTFLOW2D_TRACEBACK=1`` to see the plugin's errors with their full tracebacks.
"""

import dis
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from functools import wraps
from types import MethodType, ModuleType, TracebackType
from typing import Any, NoReturn

from jsonargparse import ArgumentParser

from .registration import PUBLISHED

TRACEBACK_VARIABLE = "ANOMALIB_FASTFLOW2D_TRACEBACK"
"""Environment variable that, set to anything but ``0``, lets the plugin's errors show their full traceback."""

PACKAGE_DIRECTORY = os.path.dirname(os.path.abspath(__file__)) + os.sep  # noqa: PTH100, PTH120 - compared with code paths
"""Where the plugin's code lives: an error whose ``raise`` statement is in a file under it is the plugin's."""

_UNRESOLVED_CLASS = re.compile(r"Expected a dot import path string: (\S+)|Problem with given class_path '([^']+)'")
"""How jsonargparse reports a class name it could not resolve."""

_WRAPPED_MARKER = "_anomalib_fastflow2d_errors"

_build_errors: ContextVar[list[BaseException] | None] = ContextVar("_build_errors", default=None)
"""The plugin's errors raised while jsonargparse built classes during the running ``main``."""


def traceback_requested() -> bool:
    """Whether :data:`TRACEBACK_VARIABLE` asks for the plugin's errors with their tracebacks."""
    return os.environ.get(TRACEBACK_VARIABLE, "").strip() not in {"", "0"}


def _innermost(traceback: TracebackType) -> TracebackType:
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback


def raised_by_plugin(error: BaseException) -> bool:
    """Whether a ``raise`` statement in the plugin's code raised ``error``: one of the plugin's errors for the user.

    The frame that raised it must be in the package and stopped at a ``raise``: an error from a library the plugin
    called (torch failing to read a file) was raised elsewhere, and a bug of the plugin's (an ``AttributeError``
    while it looks something up, a failed ``assert``) stopped at another instruction or is an ``AssertionError``.
    Both keep their tracebacks.

    Examples:
        >>> try:
        ...     int("x")
        ... except ValueError as error:
        ...     raised_by_plugin(error)
        False
    """
    if error.__traceback__ is None or isinstance(error, AssertionError):
        return False
    traceback = _innermost(error.__traceback__)
    code = traceback.tb_frame.f_code
    if not code.co_filename.startswith(PACKAGE_DIRECTORY):
        return False
    raising = next((i for i in dis.get_instructions(code) if i.offset == traceback.tb_lasti), None)
    return raising is not None and raising.opname == "RAISE_VARARGS"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``raise ... from cause``), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def plugin_error(error: BaseException, build_errors: Sequence[BaseException] = ()) -> BaseException | None:
    """The plugin's error that ``error`` reports, if any.

    That is ``error`` itself or an error it was raised from, when the plugin raised it; or else one of
    ``build_errors`` whose message jsonargparse copied into ``error`` when it wrapped it.
    """
    own = next((cause for cause in _causes(error) if raised_by_plugin(cause)), None)
    if own is not None:
        return own
    message = str(error)
    return next((built for built in build_errors if _first_line(built) in message), None)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def report(error: BaseException) -> str:
    """What the command prints for one of the plugin's errors: its message, then where it came from."""
    message = str(error).strip() or type(error).__name__
    origin = type(error).__name__
    if error.__traceback__ is not None:
        origin += f" raised in {_innermost(error.__traceback__).tb_frame.f_globals['__name__']}"
    return f"error: {message}\n({origin}; set {TRACEBACK_VARIABLE}=1 to see its traceback.)\n"


def _build_recording_errors(class_type: type, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - any class
    """The default instantiator of jsonargparse, noting the plugin's error before jsonargparse wraps it."""
    try:
        return class_type(*args, **kwargs)
    except Exception as error:
        recorded = _build_errors.get()
        own = plugin_error(error)
        if recorded is not None and own is not None:
            recorded.append(own)
        raise


def _normalised(name: str) -> str:
    return name.replace("_", "").replace("-", "").casefold()


def misspelt_names(message: str) -> list[str]:
    """The plugin's class names that a jsonargparse error's unresolved class names mean, spelt with other case.

    Examples:
        >>> misspelt_names("- Expected a dot import path string: FastFlow2D")
        ['Fastflow2D']
        >>> misspelt_names("- Expected a dot import path string: Fastflow")
        []
    """
    published = {_normalised(cls.__name__): cls.__name__ for _, cls in PUBLISHED}
    meant = set()
    for match in _UNRESOLVED_CLASS.finditer(message):
        given = next(name for name in match.groups() if name).rsplit(".", 1)[-1]
        name = published.get(_normalised(given))
        if name is not None and name != given:
            meant.add(name)
    return sorted(meant)


def _error_with_hint(self: ArgumentParser, message: str, ex: Exception | None = None) -> NoReturn:
    """``ArgumentParser.error``, with the right spelling of a misspelt class name of the plugin's at the end."""
    names = misspelt_names(message)
    if names:
        meant = " or ".join(f'"{name}"' for name in names)
        message = f"{message.rstrip()}\nDid you mean {meant}? Class names are case-sensitive."
    type(self).error(self, message, ex)


def _extend_parser(init_parser: Callable[..., ArgumentParser]) -> Callable[..., ArgumentParser]:
    """``AnomalibCLI.init_parser``, whose parsers note the plugin's build errors and hint at misspelt names.

    ``AnomalibCLI`` makes its root parser and every subcommand's parser with it, so this reaches each of them
    before it parses anything.
    """

    @wraps(init_parser)
    def extended(**kwargs: Any) -> ArgumentParser:  # noqa: ANN401 - ArgumentParser's options
        parser = init_parser(**kwargs)
        parser.add_instantiator(_build_recording_errors, object)
        parser.error = MethodType(_error_with_hint, parser)  # type: ignore[method-assign]
        return parser

    return extended


def _shorten_errors(main: Callable[[], None]) -> Callable[[], None]:
    """The CLI's ``main``, printing the plugin's errors as :func:`report` does and exiting with status 1."""

    @wraps(main)
    def shortened() -> None:
        if traceback_requested():
            main()
            return
        build_errors: list[BaseException] = []
        token = _build_errors.set(build_errors)
        try:
            main()
        except Exception as error:
            own = plugin_error(error, build_errors)
            if own is None:
                raise
            sys.stderr.write(report(own))
            raise SystemExit(1) from None
        finally:
            _build_errors.reset(token)

    setattr(shortened, _WRAPPED_MARKER, True)
    return shortened


def install(cli_module: ModuleType) -> None:
    """Shorten the plugin's errors in ``cli_module`` (``anomalib.cli.cli``) and hint at misspelt names; idempotent."""
    if getattr(cli_module.main, _WRAPPED_MARKER, False):
        return
    cli_class = cli_module.AnomalibCLI
    cli_class.init_parser = staticmethod(_extend_parser(cli_class.init_parser))
    setattr(cli_module, "main", _shorten_errors(cli_module.main))  # noqa: B010 - mypy's ModuleType has no `main`
