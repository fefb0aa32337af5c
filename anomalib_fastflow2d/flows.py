# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""2D normalizing flows built from FrEIA coupling blocks; the only module that builds FrEIA modules.

Each flow is a :class:`FrEIA.framework.SequenceINN` of :class:`FrEIA.modules.AllInOneBlock` couplings whose subnets
are ``conv -> ReLU -> conv``. FastFlow alternates 3x3 and 1x1 kernels for high-capacity backbones, so the flow sees
local context while staying cheap, and uses 3x3 everywhere for ResNet18. The coupling's maths, and everything that
reads a block's fields, live in :mod:`anomalib_fastflow2d.coupling`, the only other module that imports FrEIA.

The flow is fully convolutional: no parameter depends on the feature map's height or width, so a flow trained at
one input size runs at any other.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (Figure 2 for the subnet).
"""

import itertools
from collections.abc import Callable
from typing import Any, cast

import torch
from FrEIA.framework import SequenceINN
from torch import nn

from .coupling import AtLeastFloat32, CouplingBlock, FoldedCoupling, exporting, tensor_versions

AFFINE_CLAMPING = 2.0
"""Bound on the coupling's log-scale (FrEIA's ``affine_clamping``): keeps ``exp(s)`` finite early in training."""


def subnet_constructor(kernel_size: int, hidden_ratio: float) -> Callable[[int, int], nn.Module]:
    """Return the FrEIA subnet factory for one coupling block: ``conv -> ReLU -> conv``, output in float32 or wider.

    Args:
        kernel_size: Kernel size of both convolutions (1 or 3); padding keeps the spatial size.
        hidden_ratio: Hidden channels as a fraction of the subnet's input channels.

    Returns:
        A callable ``(in_channels, out_channels) -> nn.Module``, as :class:`AllInOneBlock` expects.
    """

    def build(in_channels: int, out_channels: int) -> nn.Module:
        hidden_channels = max(1, int(in_channels * hidden_ratio))
        padding = kernel_size // 2
        return nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=padding),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, kernel_size, padding=padding),
            AtLeastFloat32(),
        )

    return build


def kernel_pattern(flow_steps: int, conv3x3_only: bool) -> list[int]:
    """Kernel size of each coupling block's subnet: 3, 1, 3, 1, ... or all 3.

    Examples:
        >>> kernel_pattern(4, conv3x3_only=False)
        [3, 1, 3, 1]
    """
    return [3 if conv3x3_only or step % 2 == 0 else 1 for step in range(flow_steps)]


class Flow2D(nn.Module):
    """An invertible map from a feature map to a latent map of the same shape.

    Args:
        channels: Channels of the feature map.
        flow_steps: Number of coupling blocks.
        conv3x3_only: Use 3x3 kernels in every subnet instead of alternating 3x3 and 1x1.
        hidden_ratio: Hidden channels of each subnet as a fraction of its input channels.

    Examples:
        >>> flow = Flow2D(channels=8, flow_steps=2, conv3x3_only=False, hidden_ratio=1.0)
        >>> features = torch.randn(2, 8, 5, 7)
        >>> latent, log_jacobian = flow(features)
        >>> latent.shape, log_jacobian.shape
        (torch.Size([2, 8, 5, 7]), torch.Size([2]))
        >>> torch.allclose(flow.inverse(latent), features, atol=1e-5)
        True
    """

    def __init__(self, channels: int, flow_steps: int, conv3x3_only: bool, hidden_ratio: float) -> None:
        super().__init__()
        self.kernel_sizes = kernel_pattern(flow_steps, conv3x3_only)
        # SequenceINN needs a shape to check dimensions; only the channel count matters to the blocks.
        self.inn = SequenceINN(channels, 1, 1)
        for kernel_size in self.kernel_sizes:
            self.inn.append(
                CouplingBlock,
                subnet_constructor=subnet_constructor(kernel_size, hidden_ratio),
                affine_clamping=AFFINE_CLAMPING,
                permute_soft=False,
                global_affine_type="SOFTPLUS",
            )
        # latent()'s folded parameters, and the parameters' (address, version) they were folded from.
        self._folded: list[FoldedCoupling] = []
        self._folded_from: tuple[tuple[int, int], ...] = ()

    @property
    def receptive_radius(self) -> int:
        """Feature pixels on each side that a latent pixel depends on: two convolutions per coupling's subnet."""
        return sum(2 * (kernel_size // 2) for kernel_size in self.kernel_sizes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map features to latents, as FrEIA's ``SequenceINN`` does, with each block's permutation as a gather.

        FrEIA permutes channels with a 1x1 convolution by a 0/1 matrix: ``C^2`` multiply-adds per pixel, which for
        the ViT presets' 768 channels is about half of a flow's arithmetic. Gathering the channels moves the same
        values with no arithmetic, and keeps float32 latents float32 under bfloat16 autocast.

        Args:
            features: Feature map of shape ``(N, C, H, W)``.

        Returns:
            The latent map ``z`` of shape ``(N, C, H, W)`` and ``log|det dz/dx|`` of shape ``(N,)``.
        """
        log_jacobian = features.new_zeros(features.shape[0], dtype=torch.promote_types(features.dtype, torch.float32))
        for block in self._blocks():
            features, block_log_jacobian = block.forward_with_log_jacobian(features)
            log_jacobian = log_jacobian + block_log_jacobian
        return features, log_jacobian

    def latent(self, features: torch.Tensor) -> torch.Tensor:
        """The latent map of :meth:`forward` without the log-Jacobian, for inference.

        The same maths as FrEIA's :class:`AllInOneBlock` with fewer passes over memory: constant factors and the
        global affine are folded into the subnet's last convolution and the coupling, and no log-determinant is
        computed (see :class:`~anomalib_fastflow2d.coupling.CouplingBlock`). Results equal :meth:`forward`'s up to
        float rounding. Pass channels-last features for speed on CPU: the layout is kept throughout.

        Without autograd, the folded parameters are computed once and reused until a parameter changes (an
        optimizer step, a loaded state dict, a move to another device): about half of each coupling's kernel
        launches, which bound small batches on a GPU.

        Args:
            features: Feature map of shape ``(N, C, H, W)``.

        Returns:
            The latent map ``z`` of shape ``(N, C, H, W)``.
        """
        blocks, folded_couplings = self._blocks(), self._folded_couplings()
        if exporting():
            return self._exported_latent(blocks, folded_couplings, features)
        halves = list(torch.split(features, blocks[0].channel_split, dim=1))
        for block, folded in zip(blocks, folded_couplings, strict=True):
            halves = block.folded_forward(folded, halves[0], halves[1])
        return halves[0]

    @staticmethod
    def _exported_latent(
        blocks: list[CouplingBlock], folded_couplings: list[FoldedCoupling], features: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`latent` as a graph of halves: split once, each block writes the next one's halves."""
        halves = list(torch.split(features, blocks[0].channel_split, dim=1))
        next_splits = [block.channel_split for block in blocks[1:]] + [[features.shape[1]]]
        for block, folded, next_split in zip(blocks, folded_couplings, next_splits, strict=True):
            halves = block.exported_forward(folded, halves[0], halves[1], next_split)
        return halves[0]

    def _blocks(self) -> list[CouplingBlock]:
        return [cast("CouplingBlock", block) for block in self.inn.module_list]

    def _folded_couplings(self) -> list[FoldedCoupling]:
        # Autograd needs the fold in its graph; traced graphs (compile, export) hold fake tensors without the
        # address the cache key reads, and fold in the graph too.
        cached = not (torch.is_grad_enabled() or torch.compiler.is_compiling() or exporting())
        source = tensor_versions(self.inn.parameters()) if cached else None
        if source is None:
            return self._fold()
        if source != self._folded_from:
            self._folded, self._folded_from = self._fold(), source
        return self._folded

    def _fold(self) -> list[FoldedCoupling]:
        """Each block folded to write the next block's halves; the last one writes the whole latent."""
        blocks = self._blocks()
        return [block.fold(after.channel_split) for block, after in itertools.pairwise(blocks)] + [blocks[-1].fold()]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the folded parameters, which are recomputed on first use."""
        state = self.__dict__.copy()
        state["_folded"], state["_folded_from"] = [], ()
        return state

    def inverse(self, latent: torch.Tensor) -> torch.Tensor:
        """Map latents back to features: the exact inverse of :meth:`forward`.

        Args:
            latent: Latent map of shape ``(N, C, H, W)``.

        Returns:
            The feature map of shape ``(N, C, H, W)``.
        """
        features, _ = self.inn(latent, rev=True)
        return features
