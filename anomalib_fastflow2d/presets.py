# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Backbone presets that reproduce the FastFlow paper's configurations.

A preset is data: the backbone family, the feature stages, the flow depth, the subnet kernel pattern, the hidden
ratio and the input size the paper trained at. Adding a backbone means adding one entry to :data:`PRESETS`.

Any other timm CNN that supports ``features_only`` works too; it gets :data:`DEFAULT_CNN_PRESET`.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (Table 6 and Section 4.2 for steps, kernels and feature blocks).
"""

from dataclasses import dataclass, replace
from enum import Enum


class BackboneKind(str, Enum):
    """How features are taken from a timm backbone."""

    CNN = "cnn"
    """Feature pyramid from ``features_only``: one flow per stage, each normalised by :class:`~torch.nn.GroupNorm`."""

    VIT = "vit"
    """Patch tokens after one transformer block, reshaped to a map and normalised by the backbone's own norm."""


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
        dynamic_size: ViT only: the timm class interpolates its position embeddings, so other input sizes run.
    """

    kind: BackboneKind
    feature_stages: tuple[int, ...]
    flow_steps: int
    conv3x3_only: bool
    hidden_ratio: float
    input_size: tuple[int, int]
    dynamic_size: bool = False


DEFAULT_CNN_PRESET = BackbonePreset(
    kind=BackboneKind.CNN,
    feature_stages=(1, 2, 3),
    flow_steps=8,
    conv3x3_only=False,
    hidden_ratio=1.0,
    input_size=(256, 256),
)
"""Last layer of the first three stages, 8 alternating steps: the paper's WideResNet50-2 recipe."""

_DEIT_PRESET = BackbonePreset(
    kind=BackboneKind.VIT,
    feature_stages=(7,),
    flow_steps=20,
    conv3x3_only=False,
    hidden_ratio=0.16,
    input_size=(384, 384),
    dynamic_size=True,
)

PRESETS: dict[str, BackbonePreset] = {
    "resnet18": replace(DEFAULT_CNN_PRESET, conv3x3_only=True),
    "wide_resnet50_2": DEFAULT_CNN_PRESET,
    "deit_base_distilled_patch16_384": _DEIT_PRESET,
    # timm's CaiT cannot interpolate its position embeddings, so it runs at 448x448 only.
    "cait_m48_448": replace(_DEIT_PRESET, feature_stages=(40,), input_size=(448, 448), dynamic_size=False),
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
