# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Backbone presets that reproduce the FastFlow paper's configurations, and the one place they are resolved.

A preset is data: the backbone family, the feature stages, the flow depth, the subnet kernel pattern, the hidden
ratio, the feature normalisation and the input size the paper trained at. Adding a backbone means adding one entry
to :data:`PRESETS`.

Any other timm CNN that supports ``features_only`` works too; it gets :data:`DEFAULT_CNN_PRESET`.

:func:`resolve` turns a backbone name and the user's overrides into a :class:`FlowConfig`, the architecture every
other part of the package (torch model, checkpoints, Lightning module, benchmarks) is built from. Its fields are the
only list of architecture names.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (Table 6 and Section 4.2 for steps, kernels and feature blocks).

Sources of the values: feature stages or block, flow steps and input size are the paper's (Section 4.2). The
subnet kernels follow the paper's kernel ablation: alternating 3x3 and 1x1 for the higher-capacity backbones
(WideResNet50-2, CaiT), 3x3 only for the lower-capacity ones (ResNet18, DeiT). The hidden ratios (1.0 for the CNNs,
0.16 for the ViTs) are those of the public reimplementation https://github.com/gathierry/FastFlow (``configs/``),
whose DeiT config alternates kernels, against the paper's ablation.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum


class BackboneKind(str, Enum):
    """How features are taken from a timm backbone."""

    CNN = "cnn"
    """Feature pyramid from ``features_only``: one flow per stage, each after a trainable feature norm."""

    VIT = "vit"
    """Patch tokens after one transformer block, reshaped to a map and normalised by the backbone's own norm."""


class FeatureNorm(str, Enum):
    """The learned affine of a CNN feature normalisation (see :mod:`anomalib_fastflow2d.norms`)."""

    POSITION = "position"
    """Per feature position, resized to the feature map: best on aligned objects. The CNN default."""

    CHANNEL = "channel"
    """Per channel: size-independent, and the norm of checkpoints written before ``position`` existed."""


@dataclass(frozen=True)
class BackbonePreset:
    """One backbone configuration of Fastflow2D.

    Args:
        kind: How features are taken from the backbone.
        feature_stages: timm ``out_indices``: the stages (CNN) or the transformer block (ViT) whose output is used.
        flow_steps: Number of coupling blocks per flow.
        conv3x3_only: Use 3x3 convolutions in every subnet instead of alternating 3x3 and 1x1.
        hidden_ratio: Hidden channels of a subnet as a fraction of its input channels.
        input_size: Height and width the paper trained this backbone at.
        feature_norm: CNN only: the learned affine of the feature norm. ``None`` for ViTs, whose features went
            through the backbone's own final norm.
        dynamic_size: ViT only: the timm class interpolates its position embeddings, so other input sizes run.
    """

    kind: BackboneKind
    feature_stages: tuple[int, ...]
    flow_steps: int
    conv3x3_only: bool
    hidden_ratio: float
    input_size: tuple[int, int]
    feature_norm: FeatureNorm | None
    dynamic_size: bool = False


DEFAULT_CNN_PRESET = BackbonePreset(
    kind=BackboneKind.CNN,
    feature_stages=(1, 2, 3),
    flow_steps=8,
    conv3x3_only=False,
    hidden_ratio=1.0,
    input_size=(256, 256),
    feature_norm=FeatureNorm.POSITION,
)
"""Last layer of the first three stages, 8 alternating steps: the paper's WideResNet50-2 recipe."""

_DEIT_PRESET = BackbonePreset(
    kind=BackboneKind.VIT,
    feature_stages=(7,),
    flow_steps=20,
    conv3x3_only=True,
    hidden_ratio=0.16,
    input_size=(384, 384),
    feature_norm=None,
    dynamic_size=True,
)

PRESETS: dict[str, BackbonePreset] = {
    "resnet18": replace(DEFAULT_CNN_PRESET, conv3x3_only=True),
    "wide_resnet50_2": DEFAULT_CNN_PRESET,
    "deit_base_distilled_patch16_384": _DEIT_PRESET,
    # timm's CaiT cannot interpolate its position embeddings, so it runs at 448x448 only.
    "cait_m48_448": replace(
        _DEIT_PRESET, feature_stages=(40,), conv3x3_only=False, input_size=(448, 448), dynamic_size=False
    ),
}
"""The paper's four backbones, keyed by timm model name."""


def resolve_preset(backbone: str) -> BackbonePreset:
    """Return the preset of ``backbone``, or the generic CNN preset for another timm CNN.

    Args:
        backbone: A key of :data:`PRESETS` or the name of any timm model.

    Returns:
        The preset to build the backbone and its flows with.

    Raises:
        ValueError: If ``backbone`` is neither a preset nor a timm model; the message lists the presets.

    Examples:
        >>> resolve_preset("resnet18").flow_steps
        8
        >>> resolve_preset("resnet34").feature_stages
        (1, 2, 3)
    """
    if backbone in PRESETS:
        return PRESETS[backbone]
    import timm  # noqa: PLC0415 - timm is heavy; presets are read by tools that never build a model

    if timm.is_model(backbone):
        return DEFAULT_CNN_PRESET
    msg = (
        f"Unknown backbone {backbone!r}. Use one of the presets {sorted(PRESETS)} "
        "or the name of a timm CNN that supports features_only (see timm.list_models())."
    )
    raise ValueError(msg)


@dataclass(frozen=True)
class FlowConfig:
    """The resolved architecture of a Fastflow2D: what shapes its state dict, with every preset value filled in.

    Build it with :func:`resolve`. Checkpoints store these fields as hyper-parameters, and a checkpoint of another
    architecture is recognised by comparing them.

    Args:
        backbone: A key of :data:`PRESETS` or the name of a timm CNN.
        feature_stages: timm ``out_indices``: the CNN stages, or the ViT block.
        flow_steps: Coupling blocks per flow.
        conv3x3_only: 3x3 kernels in every subnet instead of alternating 3x3 and 1x1.
        hidden_ratio: Subnet hidden channels as a fraction of its input channels.
        feature_norm: CNN feature norm's learned affine, per position or per channel; ``None`` for ViTs.
        input_size: ``(H, W)`` of the training images; sizes the per-position norm's maps.

    Examples:
        >>> config = resolve("resnet18", flow_steps=2)
        >>> config.flow_steps, config.feature_norm.value, config.input_size
        (2, 'position', (256, 256))
    """

    backbone: str
    feature_stages: tuple[int, ...]
    flow_steps: int
    conv3x3_only: bool
    hidden_ratio: float
    feature_norm: FeatureNorm | None
    input_size: tuple[int, int]

    def __post_init__(self) -> None:
        """Refuse values no flow can be built from, naming the argument."""
        for name, value in (("flow_steps", self.flow_steps), ("hidden_ratio", self.hidden_ratio)):
            if not value > 0:
                msg = f"{name} must be positive, got {value}."
                raise ValueError(msg)
        if not self.feature_stages:
            msg = "feature_stages must name at least one stage, e.g. [1, 2, 3]."
            raise ValueError(msg)
        if len(self.input_size) != 2 or min(self.input_size) < 1:  # noqa: PLR2004 - height and width
            msg = f"input_size must be (height, width) in pixels, got {self.input_size}."
            raise ValueError(msg)

    @property
    def preset(self) -> BackbonePreset:
        """The backbone's preset: its kind, size handling and the paper's input size."""
        return resolve_preset(self.backbone)

    def has_weights_of(self, other: "FlowConfig") -> bool:
        """Whether a model built from ``other`` has this one's state dict: the same weights, of the same shapes.

        ``input_size`` counts only for the per-position norm, whose maps are stored at the training feature size;
        the per-channel norm and the ViT presets have no weight that depends on it.

        Examples:
            >>> resolve("resnet18", feature_norm="channel", input_size=(64, 64)).has_weights_of(
            ...     resolve("resnet18", feature_norm="channel", input_size=(96, 96))
            ... )
            True
            >>> resolve("resnet18", input_size=(64, 64)).has_weights_of(resolve("resnet18", input_size=(96, 96)))
            False
        """
        if self.feature_norm is FeatureNorm.POSITION:
            return self == other
        return replace(self, input_size=other.input_size) == other

    def as_hparams(self) -> dict[str, object]:
        """The fields as checkpoint hyper-parameters: sequences as lists and the norm as its name, as the CLI writes."""
        return {field.name: _plain(getattr(self, field.name)) for field in fields(self)}


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    return value.value if isinstance(value, Enum) else value


ARCHITECTURE_NAMES: tuple[str, ...] = tuple(field.name for field in fields(FlowConfig))
"""The names of the architecture arguments, in :class:`FlowConfig`'s order."""


def resolve(
    backbone: str = "resnet18",
    feature_stages: Sequence[int] | None = None,
    flow_steps: int | None = None,
    conv3x3_only: bool | None = None,
    hidden_ratio: float | None = None,
    feature_norm: FeatureNorm | str | None = None,
    input_size: Sequence[int] | None = None,
) -> FlowConfig:
    """Resolve a backbone's architecture: the preset's values, overridden by every argument that is not ``None``.

    Raises:
        ValueError: For an unknown backbone (listing the presets), a value no flow can be built from, or a
            ``feature_norm`` for a ViT (whose features the backbone's own norm already normalised).

    Examples:
        >>> resolve("wide_resnet50_2").conv3x3_only
        False
        >>> resolve("resnet18", feature_stages=[1, 2]).feature_stages
        (1, 2)
    """
    preset = resolve_preset(backbone)
    if feature_norm is not None and preset.feature_norm is None:
        msg = f"feature_norm applies to CNN backbones only; {backbone!r} uses its own final norm. Leave it unset."
        raise ValueError(msg)
    if feature_norm is not None and feature_norm not in set(FeatureNorm):
        msg = f"feature_norm must be one of {[norm.value for norm in FeatureNorm]}, got {feature_norm!r}."
        raise ValueError(msg)
    return FlowConfig(
        backbone=backbone,
        feature_stages=tuple(preset.feature_stages if feature_stages is None else feature_stages),
        flow_steps=preset.flow_steps if flow_steps is None else flow_steps,
        conv3x3_only=preset.conv3x3_only if conv3x3_only is None else conv3x3_only,
        hidden_ratio=preset.hidden_ratio if hidden_ratio is None else hidden_ratio,
        feature_norm=preset.feature_norm if feature_norm is None else FeatureNorm(feature_norm),
        input_size=preset.input_size if input_size is None else (int(input_size[0]), int(input_size[1])),
    )
