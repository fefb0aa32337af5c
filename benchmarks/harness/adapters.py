# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The models under test behind one interface, so that measuring code never asks which model it holds.

Each adapter builds its model from the shared :class:`FlowSettings` and says how that model runs inference and
computes its training loss on pre-processed images. Adding a model to the comparison means adding one adapter.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from anomalib.models import AnomalibModule, Fastflow

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.presets import FlowConfig, resolve


@dataclass(frozen=True)
class FlowSettings:
    """What both models are built with: the resolved architecture, the weights and the input size."""

    config: FlowConfig
    pre_trained: bool
    input_size: tuple[int, int]

    def common_arguments(self) -> dict[str, Any]:
        """The constructor arguments both models take under the same names, without a visualizer (not measured)."""
        config = self.config
        return {
            "backbone": config.backbone,
            "pre_trained": self.pre_trained,
            "flow_steps": config.flow_steps,
            "conv3x3_only": config.conv3x3_only,
            "hidden_ratio": config.hidden_ratio,
            "visualizer": False,
        }


def flow_settings(
    backbone: str,
    *,
    pre_trained: bool = False,
    size: int | None = None,
    flow_steps: int | None = None,
    conv3x3_only: bool | None = None,
    hidden_ratio: float | None = None,
) -> FlowSettings:
    """The backbone's Fastflow2D preset with the values given; ``None`` keeps the preset's.

    The architecture comes from :func:`anomalib_fastflow2d.presets.resolve`, which also refuses impossible values.
    """
    config = resolve(
        backbone,
        flow_steps=flow_steps,
        conv3x3_only=conv3x3_only,
        hidden_ratio=hidden_ratio,
        input_size=None if size is None else (size, size),
    )
    return FlowSettings(config=config, pre_trained=pre_trained, input_size=config.input_size)


class ModelUnderTest(ABC):
    """One built model and how to run it on pre-processed images of shape ``(N, 3, H, W)``.

    Attributes:
        name: The model's name in records and tables.
        module: The Lightning module, trained and exported as anomalib does.
    """

    name: ClassVar[str]
    module: AnomalibModule

    @abstractmethod
    def infer(self, images: torch.Tensor) -> object:
        """Eval-mode inference: backbone, flows and anomaly map, without pre- or post-processing."""

    @abstractmethod
    def training_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, as the model's ``training_step`` computes it."""


class Fastflow2DUnderTest(ModelUnderTest):
    """Fastflow2D, whose inference and loss go through its torch model's steps (compiled where ``compile_mode`` asks).

    Args:
        flow: The shared settings.
        extra_arguments: Further Fastflow2D arguments, e.g. from ``--fastflow2d-arg``. Defaults to none.
    """

    name = "Fastflow2D"

    def __init__(self, flow: FlowSettings, extra_arguments: Mapping[str, Any] | None = None) -> None:
        self.module: Fastflow2D = Fastflow2D(
            **flow.common_arguments(), input_size=flow.input_size, **(extra_arguments or {})
        )

    def infer(self, images: torch.Tensor) -> object:
        """Fastflow2D's (maybe compiled) eval model."""
        return self.module.model(images)

    def training_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The loss of the backbone's features, with the feature cache left out."""
        model = self.module.model
        return self.module.loss(*model.encode(model.features(images)))


class FastflowUnderTest(ModelUnderTest):
    """The reference, anomalib's Fastflow; its input size comes from its pre-processor.

    Args:
        flow: The shared settings.
    """

    name = "Fastflow"

    def __init__(self, flow: FlowSettings) -> None:
        self.module: Fastflow = Fastflow(
            **flow.common_arguments(), pre_processor=Fastflow.configure_pre_processor(image_size=flow.input_size)
        )

    def infer(self, images: torch.Tensor) -> object:
        """The torch model's eval forward."""
        return self.module.model(images)

    def training_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Fastflow's loss of its hidden variables and log-Jacobians."""
        return self.module.loss(*self.module.model(images))
