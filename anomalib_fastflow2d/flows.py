# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""2D normalizing flows built from FrEIA coupling blocks; the only module that imports FrEIA.

Each flow is a :class:`FrEIA.framework.SequenceINN` of :class:`FrEIA.modules.AllInOneBlock` couplings whose subnets
are ``conv -> ReLU -> conv``. FastFlow alternates 3x3 and 1x1 kernels for high-capacity backbones, so the flow sees
local context while staying cheap, and uses 3x3 everywhere for ResNet18.

The flow is fully convolutional: no parameter depends on the feature map's height or width, so a flow trained at
one input size runs at any other.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (Figure 2 for the subnet).
"""

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import AllInOneBlock
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention

AFFINE_CLAMPING = 2.0
"""Bound on the coupling's log-scale (FrEIA's ``affine_clamping``): keeps ``exp(s)`` finite early in training."""


CHANNELS_LAST_GATHER_MIN = 256
"""From this many channels on, channels-last features are permuted by a gather rather than a 1x1 convolution."""


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


class AtLeastFloat32(nn.Module):
    """Promote a tensor to float32 (wider types pass unchanged).

    Under bfloat16 autocast only the subnet's convolutions run in bfloat16; the coupling's log-scales, and so the
    log-determinant and the loss, are computed in float32. Parameter-free, so state-dict keys are unchanged.
    """

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return ``tensor`` in ``float32``, or in its own type where that is wider."""
        return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def softplus_global_scale(pre_activation: torch.Tensor) -> torch.Tensor:
    """The coupling's global scale from its parameter: FrEIA's ``"SOFTPLUS"`` activation, as a module function.

    FrEIA stores the activation as a lambda, which cannot be pickled, and anomalib's torch export pickles the whole
    model.
    """
    return 0.1 * F.softplus(pre_activation, beta=0.5)


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
                AllInOneBlock,
                subnet_constructor=subnet_constructor(kernel_size, hidden_ratio),
                affine_clamping=AFFINE_CLAMPING,
                permute_soft=False,
                global_affine_type="SOFTPLUS",
            )
        for block in self.inn.module_list:
            block.global_scale_activation = softplus_global_scale
        # latent()'s folded parameters, and the parameters' (address, version) they were folded from.
        self._folded: list[FoldedCoupling] = []
        self._folded_from: tuple[tuple[int, int], ...] = ()

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
        for block in self.inn.module_list:
            features, block_log_jacobian = _coupling_forward(cast("AllInOneBlock", block), features)
            log_jacobian = log_jacobian + block_log_jacobian
        return features, log_jacobian

    def latent(self, features: torch.Tensor) -> torch.Tensor:
        """The latent map of :meth:`forward` without the log-Jacobian, for inference.

        The same maths as FrEIA's :class:`AllInOneBlock` with fewer passes over memory: constant factors and the
        global affine are folded into the subnet's last convolution and the coupling, and no log-determinant is
        computed. Results equal :meth:`forward`'s up to float rounding. Pass channels-last features for speed on
        CPU: the layout is kept throughout.

        Without autograd, the folded parameters are computed once and reused until a parameter changes (an
        optimizer step, a loaded state dict, a move to another device): about half of each coupling's kernel
        launches, which bound small batches on a GPU.

        Args:
            features: Feature map of shape ``(N, C, H, W)``.

        Returns:
            The latent map ``z`` of shape ``(N, C, H, W)``.
        """
        for block, folded in zip(self.inn.module_list, self._folded_couplings(), strict=True):
            features = _coupling_latent(cast("AllInOneBlock", block), folded, features)
        return features

    def _folded_couplings(self) -> list["FoldedCoupling"]:
        blocks = [cast("AllInOneBlock", block) for block in self.inn.module_list]
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or _exporting():
            return [fold_coupling(block) for block in blocks]
        # In-place updates and loads bump a tensor's version; moves and casts change its address.
        source = tuple((parameter.data_ptr(), parameter._version) for parameter in self.inn.parameters())  # noqa: SLF001
        if source != self._folded_from:
            self._folded = [fold_coupling(block) for block in blocks]
            self._folded_from = source
        return self._folded

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


def _coupling_forward(block: AllInOneBlock, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One coupling block's output and log-Jacobian, as :meth:`AllInOneBlock.forward` computes them.

    FrEIA's block computes ``P((x1, x2 * exp(s) + t) * g + b)`` (see :func:`_coupling_latent`), whose
    log-Jacobian is ``sum(s) + H * W * sum(log g)``.
    """
    passive, active = torch.split(features, block.splits, dim=1)
    coefficients = 0.1 * block.subnet(passive)
    log_scale = block.clamp * torch.tanh(coefficients[:, : block.splits[1]])
    active = active * torch.exp(log_scale) + coefficients[:, block.splits[1] :]
    scale = block.global_scale_activation(block.global_scale)
    mixed = torch.cat((passive, active), dim=1) * scale + block.global_offset
    pixels = features.shape[2] * features.shape[3]
    log_jacobian = log_scale.sum(dim=(1, 2, 3)) + pixels * torch.log(scale).sum()
    return _permute_channels(mixed, block), log_jacobian


def _permute_channels(features: torch.Tensor, block: AllInOneBlock) -> torch.Tensor:
    """``P x`` for the block's 0/1 permutation matrix ``P``, keeping a channels-last layout channels-last.

    Output channel ``i`` is input channel ``j`` where ``P[i, j] = 1``. On a contiguous tensor a gather copies
    whole channel planes. FrEIA's 1x1 convolution by ``P`` is kept where it is faster, and it is exact, as each
    output sums one input times 1:

    - in exported graphs: OpenVINO fuses it, where a gather between transposes made the whole graph up to 2x
      slower (resnet18, 64x64, INT8);
    - on channels-last tensors with fewer than :data:`CHANNELS_LAST_GATHER_MIN` channels, where oneDNN runs it 2x
      faster than a gather within each pixel (64 channels; at 768 the gather is 2.5x faster).
    """
    channels_last = features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    if _exporting() or (channels_last and features.shape[1] < CHANNELS_LAST_GATHER_MIN):
        return F.conv2d(features, block.w_perm.to(features.dtype))
    # The order is read from w_perm at every call, so that it follows the matrix a checkpoint loads.
    order = block.w_perm.flatten(1).argmax(dim=1)
    if channels_last:
        return features.permute(0, 2, 3, 1)[..., order].permute(0, 3, 1, 2)
    return features[:, order]


def _exporting() -> bool:
    """Whether the model is being traced into a graph for another runtime (ONNX, OpenVINO, TorchScript)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


class FoldedCoupling(NamedTuple):
    """A coupling block's parameters folded for inference (see :func:`_coupling_latent`)."""

    weight: torch.Tensor
    """The subnet's last convolution, output rows scaled by ``0.1`` (log-scale half) and ``0.1 * g2``."""
    bias: torch.Tensor
    """That convolution's bias, scaled likewise, plus the active half's global offset ``b2``."""
    log_active_scale: torch.Tensor
    """``log g2``, shaped ``(C2, 1, 1)``."""
    passive_scale: torch.Tensor
    """``g1``, shaped ``(C1, 1, 1)``."""
    passive_offset: torch.Tensor
    """``b1``, shaped ``(C1, 1, 1)``."""


def fold_coupling(block: AllInOneBlock) -> FoldedCoupling:
    """Fold a block's constant factors and global affine into its last convolution and per-channel terms."""
    last = cast("nn.Conv2d", block.subnet[2])
    scale = block.global_scale_activation(block.global_scale).flatten()
    passive_scale, active_scale = torch.split(scale, block.splits)
    passive_offset, active_offset = torch.split(block.global_offset.flatten(), block.splits)
    row_scale = torch.cat((torch.full_like(active_scale, 0.1), 0.1 * active_scale))
    row_offset = torch.cat((torch.zeros_like(active_offset), active_offset))
    return FoldedCoupling(
        weight=last.weight * row_scale[:, None, None, None],
        bias=torch.addcmul(row_offset, cast("torch.Tensor", last.bias), row_scale),
        log_active_scale=torch.log(active_scale)[:, None, None],
        passive_scale=passive_scale[:, None, None],
        passive_offset=passive_offset[:, None, None],
    )


def _coupling_latent(block: AllInOneBlock, folded: FoldedCoupling, features: torch.Tensor) -> torch.Tensor:
    """One coupling block's output, as :meth:`AllInOneBlock.forward` computes it, without its log-Jacobian.

    FrEIA's block computes ``P((x1, x2 * exp(s) + t) * g + b)``, where the subnet's last convolution on ``x1``
    gives ``(a_s, a_t)``, ``s = clamp * tanh(0.1 * a_s)``, ``t = 0.1 * a_t``, ``g`` and ``b`` are the global scale
    and offset and ``P`` is a permutation matrix. Here the factors ``0.1`` and ``0.1 * g2`` and the offset ``b2``
    are folded into that convolution's weights and bias, so it gives ``(0.1 * a_s, 0.1 * g2 * a_t + b2)``
    directly, and the active half becomes ``x2 * exp(s + log g2) + 0.1 * g2 * a_t + b2``, updated in place.
    """
    passive, active = torch.split(features, block.splits, dim=1)
    first, last = cast("nn.Conv2d", block.subnet[0]), cast("nn.Conv2d", block.subnet[2])
    hidden = F.relu(first(passive), inplace=True)
    coefficients = F.conv2d(hidden, folded.weight, folded.bias, padding=last.padding)
    # A slice, unlike torch.split's views, may be updated in place under autograd.
    log_scale, active_out = coefficients[:, : block.splits[1]], coefficients[:, block.splits[1] :]
    growth = torch.add(folded.log_active_scale, torch.tanh(log_scale), alpha=block.clamp).exp_()
    # In place saves a pass over memory, but exports as a scatter between transposes, which OpenVINO ran as
    # separate kernels taking a sixth of the graph's time.
    update = torch.addcmul if _exporting() else torch.Tensor.addcmul_
    active_out = update(active_out, active, growth)
    passive_out = torch.addcmul(folded.passive_offset, passive, folded.passive_scale)
    return _permute_channels(torch.cat((passive_out, active_out), dim=1), block)
