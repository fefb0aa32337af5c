# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Checkpoints that load offline, bring their own architecture, and name a bad file with the fix.

Without them, a truncated file fails deep in ``torch.load`` ("failed finding central directory"), and another
model's checkpoint fails with a list of missing state-dict keys or an unexpected constructor argument.
"""

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.utils.serialization import anomalib_safe_globals
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.types import _MAP_LOCATION_TYPE, _PATH
from lightning.pytorch import LightningModule
from typing_extensions import Self

from .presets import ARCHITECTURE_NAMES, FeatureNorm, FlowConfig, resolve, resolve_preset

if TYPE_CHECKING:
    from .torch_model import Fastflow2DModel

log = logging.getLogger(__name__)

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


def saved_config(hyper_parameters: Mapping[str, Any]) -> FlowConfig:
    """The architecture a checkpoint's hyper-parameters describe (preset values where they hold ``None``).

    Checkpoints written before the per-position norm existed record no ``feature_norm``: their CNN norms are
    per-channel.
    """
    saved: dict[str, Any] = {name: hyper_parameters[name] for name in ARCHITECTURE_NAMES if name in hyper_parameters}
    if "feature_norm" not in hyper_parameters and resolve_preset(saved.get("backbone", "resnet18")).feature_norm:
        saved["feature_norm"] = FeatureNorm.CHANNEL
    return resolve(**saved)


def describe_architecture_change(current: FlowConfig, saved: FlowConfig) -> str:
    """The fields that differ, as ``name: current -> saved`` with the values actually used (never ``None``)."""
    current_values, saved_values = current.as_hparams(), saved.as_hparams()
    return ", ".join(
        f"{name}: {current_values[name]} -> {saved_values[name]}"
        for name in ARCHITECTURE_NAMES
        if current_values[name] != saved_values[name]
    )


class CheckpointHooks(LightningModule):
    """Mixin for Fastflow2D's LightningModule: checkpoints that load offline, bring their architecture, name a file.

    The module holds ``model`` (a :class:`~anomalib_fastflow2d.torch_model.Fastflow2DModel`) and
    ``backbone_weights_pending`` (pretrained weights still to load at fit start); ``weights_fitted`` becomes
    ``True`` once weights are restored.
    """

    model: "Fastflow2DModel"
    backbone_weights_pending: bool
    weights_fitted: bool = False

    def use_checked_checkpoint_io(self) -> None:
        """Make the trainer's checkpoint reads name a missing or truncated file."""
        strategy = self.trainer.strategy
        if not isinstance(strategy.checkpoint_io, CheckedCheckpointIO):
            strategy.checkpoint_io = CheckedCheckpointIO(strategy.checkpoint_io)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the checkpoint so that loading it needs neither the model hub nor the original weights file.

        The backbone's weights are in the state dict, so the rebuilt model starts from random weights and the state
        dict overwrites them. Weights that are not finite are never written.
        """
        weights = self.model.state_dict().items()
        non_finite = [name for name, tensor in weights if not bool(torch.isfinite(tensor).all())]
        if non_finite:
            msg = f"Not saving a checkpoint with non-finite weights ({len(non_finite)} tensors, {non_finite[:3]})."
            raise FloatingPointError(msg)
        super().on_save_checkpoint(checkpoint)
        hyper_parameters = checkpoint.setdefault("hyper_parameters", {})
        # The resolved architecture, norm and training size included, whatever the arguments left to the preset.
        hyper_parameters.update(self.model.config.as_hparams())
        hyper_parameters["pre_trained"] = False
        hyper_parameters["backbone_weights"] = None
        mark_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse other models' checkpoints; take the checkpoint's architecture and its backbone weights.

        ``anomalib test/predict/export --ckpt_path`` build the model from command-line arguments before loading, so
        a checkpoint trained with other ``flow_steps`` (say) would otherwise fail with missing state-dict keys.
        """
        source = repr(str(self._trainer.ckpt_path)) if self._trainer is not None else "being loaded"
        check_checkpoint(checkpoint, source)
        saved = saved_config(checkpoint.get("hyper_parameters", {}))
        if not saved.has_weights_of(self.model.config):
            change = describe_architecture_change(self.model.config, saved)
            log.warning("Rebuilding Fastflow2D with the architecture of checkpoint %s: %s.", source, change)
            self.model = self.model.rebuilt(saved)
        else:  # at most the training size differs, which no weight depends on: nothing to rebuild
            self.model.config = saved
        self.hparams.update(saved.as_hparams())
        super().on_load_checkpoint(checkpoint)
        self.backbone_weights_pending = False

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:  # noqa: ANN401 - torch's own _IncompatibleKeys
        """Load weights (from a checkpoint, or directly) and record that the flows hold restored weights."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.weights_fitted = True
        return result

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: _MAP_LOCATION_TYPE = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,  # noqa: ANN401 - hyper-parameter overrides, as in Lightning
    ) -> Self:
        """Load a Fastflow2D checkpoint; a missing, unreadable or foreign file gives an error naming it."""
        check_checkpoint(read_checkpoint(checkpoint_path), repr(str(checkpoint_path)))
        return super().load_from_checkpoint(
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=weights_only,
            **kwargs,
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
