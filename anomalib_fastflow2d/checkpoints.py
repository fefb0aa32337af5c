# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Checkpoint checks: a missing, truncated or foreign checkpoint gives an error that names the file and the fix.

Without them, a truncated file fails deep in ``torch.load`` ("failed finding central directory"), and another
model's checkpoint fails with a list of missing state-dict keys or an unexpected constructor argument.
"""

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anomalib.utils.serialization import anomalib_safe_globals
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.types import _MAP_LOCATION_TYPE, _PATH

from .presets import resolve_preset

CHECKPOINT_MARKER = "anomalib_fastflow2d"
"""Checkpoint key that tells Fastflow2D's checkpoints from those of other models."""


class CheckpointError(ValueError):
    """Raised for a checkpoint that cannot be read or was not written by this Fastflow2D."""


def mark_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Record in ``checkpoint`` that Fastflow2D wrote it, so that loading can tell it from other models'."""
    checkpoint[CHECKPOINT_MARKER] = {"model": "Fastflow2D"}


def check_checkpoint(checkpoint: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` was written by Fastflow2D.

    Args:
        checkpoint: The loaded checkpoint dictionary.
        source: Where it came from (a path), for the error message.
    """
    if CHECKPOINT_MARKER not in checkpoint:
        msg = (
            f"Checkpoint {source} was not written by Fastflow2D ({_guess_model(checkpoint)}). Load it with the model "
            "that wrote it, or pass a checkpoint from `anomalib train --model Fastflow2D`."
        )
        raise CheckpointError(msg)


ARCHITECTURE_HPARAMS = ("backbone", "flow_steps", "conv3x3_only", "hidden_ratio", "feature_stages")
"""The constructor arguments that shape the state dict."""


def architecture_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture arguments whose effective value in ``saved`` differs from ``current``, with saved values.

    An argument left at ``None`` counts as its preset's value, so ``flow_steps=None`` equals ``flow_steps=8`` for a
    CNN preset.
    """
    saved_architecture, current_architecture = _architecture(saved), _architecture(current)
    return {
        name: saved.get(name)
        for name in ARCHITECTURE_HPARAMS
        if name in saved and saved_architecture[name] != current_architecture[name]
    }


def describe_architecture_change(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The architecture arguments that differ, as ``name: current -> saved`` with the values actually used.

    Preset values stand in for arguments left at ``None``, so the message never says ``None``.
    """
    saved_architecture, current_architecture = _architecture(saved), _architecture(current)
    return ", ".join(
        f"{name}: {current_architecture[name]} -> {saved_architecture[name]}"
        for name in architecture_differences(saved, current)
    )


def read_checkpoint(
    path: _PATH,
    map_location: Any = None,  # noqa: ANN401 - whatever torch.load accepts
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint file, turning a missing or unreadable one into an error that names it.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is truncated or not a PyTorch checkpoint.
    """
    import torch  # noqa: PLC0415 - keeps this module importable for the checks alone

    file = Path(path)
    if not file.is_file():
        msg = f"Checkpoint {str(file)!r} does not exist. Pass the path of a model.ckpt written by training."
        raise FileNotFoundError(msg)
    try:
        with anomalib_safe_globals():
            checkpoint = torch.load(file, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else error.__class__.__name__
        msg = (
            f"Checkpoint {str(file)!r} ({file.stat().st_size} bytes) cannot be read: it is truncated or not a "
            f"PyTorch checkpoint ({reason}). Copy it again or pick another checkpoint."
        )
        raise CheckpointError(msg) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        msg = f"Checkpoint {str(file)!r} holds no Lightning state_dict. Pass a model.ckpt written by training."
        raise CheckpointError(msg)
    return checkpoint


class CheckedCheckpointIO(CheckpointIO):
    """The trainer's checkpoint IO, with errors that name an unreadable file.

    Args:
        inner: The checkpoint IO that does the work (anomalib's, which allowlists its types).
    """

    def __init__(self, inner: CheckpointIO) -> None:
        self.inner = inner

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:  # noqa: ANN401
        """Save through the wrapped IO."""
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: _MAP_LOCATION_TYPE = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load through the wrapped IO; a missing or truncated file gives an error naming it."""
        if not Path(path).is_file():
            return read_checkpoint(path)
        try:
            return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError):
            return read_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Remove through the wrapped IO."""
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        """Tear down the wrapped IO."""
        self.inner.teardown()


def _guess_model(checkpoint: Mapping[str, Any]) -> str:
    state_dict: Mapping[str, Any] = checkpoint.get("state_dict", {})
    prefixes = sorted({".".join(key.split(".")[:2]) for key in state_dict})[:4]
    return f"its weights start with {prefixes}" if prefixes else "it holds no weights"


def _architecture(hparams: Mapping[str, Any]) -> dict[str, object]:
    """The arguments that shape the state dict, with the preset's value where an argument was left at ``None``."""
    backbone = str(hparams.get("backbone", "resnet18"))
    preset = resolve_preset(backbone)
    defaults: dict[str, object] = {
        "flow_steps": preset.flow_steps,
        "conv3x3_only": preset.conv3x3_only,
        "hidden_ratio": preset.hidden_ratio,
        "feature_stages": list(preset.feature_stages),
    }
    architecture: dict[str, object] = {"backbone": backbone}
    for name, default in defaults.items():
        value = hparams.get(name)
        architecture[name] = default if value is None else list(value) if isinstance(value, (list, tuple)) else value
    return architecture
