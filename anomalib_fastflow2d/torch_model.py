# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of Fastflow2D: frozen backbone, feature normalisation, one 2D flow per scale, anomaly map.

Unlike anomalib's ``FastflowModel``, nothing here depends on the input size: CNN features are normalised with a
per-sample :class:`~torch.nn.GroupNorm` over all of ``(C, H, W)`` with a per-channel affine (where anomalib fixes a
``LayerNorm([C, H, W])`` at construction), so a model trained at 256x256 runs at 192x320 and exports with dynamic
shapes.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677
"""

import os
from collections.abc import Callable, Sequence
from typing import cast

import torch
from anomalib.data import InferenceBatch
from torch import nn

from .anomaly_map import AnomalyMapGenerator, ImageScore
from .backbones import FeatureExtractor
from .flows import Flow2D
from .presets import BackboneKind, resolve_preset

FlowFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""A flow as :meth:`Fastflow2DModel.encode` calls it: features to latents and log-Jacobians."""


class Fastflow2DModel(nn.Module):
    """Fastflow2D as a plain ``nn.Module``.

    Explicit arguments override the backbone's preset (see :data:`anomalib_fastflow2d.presets.PRESETS`).

    Args:
        backbone: A preset name or any timm CNN that supports ``features_only``. Defaults to ``"resnet18"``.
        pre_trained: Load the hub's pretrained backbone weights. Defaults to ``True``.
        backbone_weights: Local backbone weights file, used instead of the hub. Defaults to ``None``.
        flow_steps: Coupling blocks per flow. Defaults to the preset's.
        conv3x3_only: 3x3 kernels in every subnet instead of alternating 3x3/1x1. Defaults to the preset's.
        hidden_ratio: Subnet hidden channels as a fraction of input channels. Defaults to the preset's.
        feature_stages: timm ``out_indices`` (CNN stages, or the ViT block). Defaults to the preset's.
        image_score: Reduction of the anomaly map to an image score. Defaults to ``"max"``.
        topk_fraction: Fraction of pixels averaged by ``image_score="topk_mean"``. Defaults to ``0.01``.

    Examples:
        >>> model = Fastflow2DModel("resnet18", pre_trained=False, flow_steps=2)
        >>> latents, log_jacobians = model(torch.randn(2, 3, 64, 64))
        >>> [tuple(latent.shape) for latent in latents]
        [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
        >>> model = model.eval()
        >>> model(torch.randn(2, 3, 48, 80)).anomaly_map.shape
        torch.Size([2, 1, 48, 80])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        backbone_weights: str | os.PathLike[str] | None = None,
        flow_steps: int | None = None,
        conv3x3_only: bool | None = None,
        hidden_ratio: float | None = None,
        feature_stages: Sequence[int] | None = None,
        image_score: ImageScore | str = ImageScore.MAX,
        topk_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        preset = resolve_preset(backbone)
        self.flow_steps = preset.flow_steps if flow_steps is None else flow_steps
        self.conv3x3_only = preset.conv3x3_only if conv3x3_only is None else conv3x3_only
        self.hidden_ratio = preset.hidden_ratio if hidden_ratio is None else hidden_ratio
        self.feature_stages = tuple(preset.feature_stages if feature_stages is None else feature_stages)
        _check_positive(flow_steps=self.flow_steps, hidden_ratio=self.hidden_ratio)
        if not self.feature_stages:
            msg = "feature_stages must name at least one stage, e.g. [1, 2, 3]."
            raise ValueError(msg)

        self.feature_extractor = FeatureExtractor(
            backbone,
            kind=preset.kind,
            feature_stages=self.feature_stages,
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            dynamic_size=preset.dynamic_size,
        )
        channels = self.feature_extractor.channels
        # ViT features already went through the backbone's own final norm.
        self.norms = nn.ModuleList(
            nn.Identity() if preset.kind is BackboneKind.VIT else nn.GroupNorm(1, num_channels)
            for num_channels in channels
        )
        self.flows = nn.ModuleList(
            Flow2D(num_channels, self.flow_steps, self.conv3x3_only, self.hidden_ratio) for num_channels in channels
        )
        self.anomaly_map_generator = AnomalyMapGenerator(image_score=image_score, topk_fraction=topk_fraction)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised backbone features, the flows' input: one ``(N, C_s, H_s, W_s)`` map per scale."""
        return self.normalise(self.feature_extractor(images))

    def normalise(self, backbone_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply each scale's (trainable) normalisation to the frozen backbone's features.

        Split from :meth:`features` so that training can reuse cached backbone features.
        """
        return [norm(feature) for norm, feature in zip(self.norms, backbone_features, strict=True)]

    def encode(
        self,
        features: list[torch.Tensor],
        flows: Sequence[FlowFunction] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Map features to latents with each scale's flow.

        Args:
            features: Normalised features, one map per scale.
            flows: Callables to use instead of the model's flows, such as compiled wrappers of them.

        Returns:
            Latent maps (same shapes as ``features``) and ``log|det dz/dx|`` of shape ``(N,)`` per scale.
        """
        latents, log_jacobians = [], []
        scale_flows: Sequence[FlowFunction] = [cast("Flow2D", flow) for flow in self.flows] if flows is None else flows
        for flow, feature in zip(scale_flows, features, strict=True):
            latent, log_jacobian = flow(feature)
            latents.append(latent)
            log_jacobians.append(log_jacobian)
        return latents, log_jacobians

    def decode(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map latents back to normalised features: the exact inverse of :meth:`encode`."""
        return [cast("Flow2D", flow).inverse(latent) for flow, latent in zip(self.flows, latents, strict=True)]

    def feature_shapes(self, image_size: tuple[int, int]) -> list[torch.Size]:
        """Shape ``(C_s, H_s, W_s)`` of each scale's features for ``(H, W)`` images.

        Read from one backbone pass on a blank image, so padding and patch arithmetic match the backbone's own.
        """
        parameter = next(self.feature_extractor.parameters())
        probe = torch.zeros(1, 3, *image_size, device=parameter.device, dtype=parameter.dtype)
        return [feature.shape[1:] for feature in self.feature_extractor(probe)]

    def sample(
        self,
        num_samples: int,
        image_size: tuple[int, int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Draw "typical normal" feature maps: ``z ~ N(0, temperature^2 I)`` per scale, mapped through :meth:`decode`.

        A temperature below 1 keeps to the likelier centre of the latent distribution (as in Glow), so samples
        look more like the training features' average; 1 draws from the distribution the flows learned.

        Args:
            num_samples: Number of feature maps per scale.
            image_size: ``(H, W)`` of the images whose features are imitated.
            temperature: Standard deviation of ``z``. Defaults to ``1.0``.
            generator: Random generator, for reproducible samples. Defaults to ``None`` (torch's global one).

        Returns:
            One ``(num_samples, C_s, H_s, W_s)`` map of normalised features per scale.
        """
        _check_positive(num_samples=num_samples, temperature=temperature)
        parameter = next(self.flows.parameters())
        latents = [
            temperature
            * torch.randn((num_samples, *shape), generator=generator, device=parameter.device, dtype=parameter.dtype)
            for shape in self.feature_shapes(image_size)
        ]
        return self.decode(latents)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]] | InferenceBatch:
        """Run the model.

        Args:
            images: Normalised images of shape ``(N, 3, H, W)``.

        Returns:
            In training mode, the per-scale latents and log-Jacobians for the loss. In eval mode, an
            ``InferenceBatch`` with ``pred_score`` ``(N, 1)`` and ``anomaly_map`` ``(N, 1, H, W)``.
        """
        if self.training:
            return self.encode(self.features(images))
        # oneDNN convolves channels-last tensors without reordering them, and the layout carries through the model.
        features = self.features(images.contiguous(memory_format=torch.channels_last))
        latents = [cast("Flow2D", flow).latent(feature) for flow, feature in zip(self.flows, features, strict=True)]
        anomaly_map, pred_score = self.anomaly_map_generator(latents, image_size=(images.shape[-2], images.shape[-1]))
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            msg = f"{name} must be positive, got {value}."
            raise ValueError(msg)
