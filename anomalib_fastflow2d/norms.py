# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Trainable normalisations of the frozen CNN features, the first layer the flows' loss trains.

Both standardise each sample over all of ``(C, H, W)``, as ``GroupNorm(1, C)`` and anomalib's
``LayerNorm([C, H, W])`` do, and differ in their learned affine:

- :class:`PositionNorm` learns a scale and shift per feature position, ``(C, H_s, W_s)`` at the training feature
  size. On an aligned object (a part at the same place in every image) it corrects each place on its own, which is
  what anomalib's ``LayerNorm`` does; at another input size the maps are resized bilinearly, so it still runs at any
  size.
- :class:`ChannelNorm` learns a scale and shift per channel: independent of the size, equal to the other on
  textures, and the norm of checkpoints written before :class:`PositionNorm` existed (its state dict is
  ``GroupNorm(1, C)``'s).

On CUDA, channels-last features are standardised without leaving the layout (``group_norm`` returns contiguous
NCHW there), so the flows' convolutions stay channels-last.
"""

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention

from .coupling import exporting

NORM_EPS = 1e-5
"""The variance floor of ``GroupNorm`` and ``LayerNorm``, so that weights copied from either give the same maps."""


def standardise(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Each sample minus its mean over ``(C, H, W)``, divided by its standard deviation; the layout is kept on CUDA.

    The same values as ``F.group_norm(features, 1, eps=eps)``, which is what runs on CPU. Exports take
    ``layer_norm`` over ``(C, H, W)``: OpenVINO normalises that in the convolutions' layout, while ``group_norm``'s
    flattening to one row made it reorder the features to a planar layout and back.
    """
    if features.is_cuda and features.is_contiguous(memory_format=torch.channels_last):
        return standardise_in_layout(features, eps)
    if exporting():
        return F.layer_norm(features, features.shape[1:], eps=eps)
    return F.group_norm(features, 1, eps=eps)


def standardise_in_layout(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """:func:`standardise` from elementwise operations, which keep a channels-last input channels-last.

    Statistics are taken in float32 or wider, as ``group_norm`` does under autocast.
    """
    variance, mean = torch.var_mean(features.float(), dim=(1, 2, 3), correction=0, keepdim=True)
    return ((features - mean) * torch.rsqrt(variance + eps)).to(features.dtype)


def layer_norm_in_layout(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = NORM_EPS
) -> torch.Tensor:
    """``LayerNorm([C, H, W])`` of ``(N, C, H, W)`` features with affine maps ``(C, H, W)``, keeping the layout.

    Channels-last features are normalised as their ``(N, H, W, C)`` view, with the maps permuted to match: a
    per-position affine broadcast across the two layouts would run many times slower than the whole norm.
    """
    if features.is_contiguous() or not features.is_contiguous(memory_format=torch.channels_last):
        return F.layer_norm(features, features.shape[1:], weight, bias, eps)
    pixels_last = features.permute(0, 2, 3, 1)
    weight, bias = (affine.permute(1, 2, 0).contiguous() for affine in (weight, bias))
    return F.layer_norm(pixels_last, pixels_last.shape[1:], weight, bias, eps).permute(0, 3, 1, 2)


class ChannelNorm(nn.Module):
    """``GroupNorm(1, C)``: standardise each sample, then scale and shift each channel.

    Args:
        num_channels: Channels of the feature map.

    Examples:
        >>> norm = ChannelNorm(4)
        >>> torch.allclose(norm(features := torch.randn(2, 4, 5, 3)), nn.GroupNorm(1, 4)(features), atol=1e-6)
        True
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise ``(N, C, H, W)`` features of any size."""
        return standardise(features) * self.weight[:, None, None] + self.bias[:, None, None]

    def affine(self, size: torch.Size | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and shift as maps ``(C, H, W)`` (broadcast views, no copies), as :class:`PositionNorm` gives."""
        shape = (self.weight.shape[0], *size)
        return self.weight[:, None, None].expand(shape), self.bias[:, None, None].expand(shape)


class PositionNorm(nn.Module):
    """``LayerNorm([C, H_s, W_s])`` that runs at any feature size: the affine maps are resized to the features.

    At the training feature size it computes exactly what anomalib's ``LayerNorm`` does (tested with weights copied
    across). At another size the scale and shift maps are resized bilinearly (``align_corners=False``, so a map
    keeps its extent): an input resized to another shape keeps the object where the maps expect it.

    Args:
        num_channels: Channels of the feature map.
        feature_size: ``(H_s, W_s)`` of the feature map at the training input size.

    Examples:
        >>> norm = PositionNorm(4, feature_size=(8, 8))
        >>> norm(torch.randn(2, 4, 8, 8)).shape, norm(torch.randn(2, 4, 6, 10)).shape
        (torch.Size([2, 4, 8, 8]), torch.Size([2, 4, 6, 10]))
    """

    def __init__(self, num_channels: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels, *feature_size))
        self.bias = nn.Parameter(torch.zeros(num_channels, *feature_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise ``(N, C, H, W)`` features; ``(H, W)`` need not be the training feature size.

        At the training size this is one ``layer_norm`` kernel, in the features' own layout.
        """
        if not exporting() and tuple(features.shape[-2:]) == tuple(self.weight.shape[-2:]):
            return layer_norm_in_layout(features, self.weight, self.bias)
        weight, bias = self.affine(features.shape[-2:])
        return standardise(features) * weight + bias

    def affine(self, size: torch.Size | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and shift maps ``(C, H, W)`` for features of ``size`` ``(H, W)``.

        Exports always resize (an identity at the training size), so the graph keeps dynamic height and width.
        """
        # Comparing sizes first would pin an export's symbolic height and width to the training size.
        if not exporting() and tuple(size) == tuple(self.weight.shape[-2:]):
            return self.weight, self.bias
        maps = torch.stack((self.weight, self.bias))
        weight, bias = F.interpolate(maps, size=size, mode="bilinear", align_corners=False).unbind()
        return weight, bias
