# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""FastFlow's coupling block: FrEIA's :class:`~FrEIA.modules.AllInOneBlock`, read through named accessors.

Fastflow2D computes the coupling three ways: FrEIA's own block maps latents back to features (``inverse``), the
training forward adds the log-Jacobian, and inference runs folded parameters without it. For ``x = (x1, x2)`` the
block computes

.. math::

    y = P\big((x_1,\; x_2 \odot e^{s} + t) \odot g + b\big), \qquad s = \alpha \tanh(0.1\,a_s), \quad t = 0.1\,a_t,

where the subnet on ``x1`` gives ``(a_s, a_t)``, ``alpha`` is the clamp, ``g`` and ``b`` are the global scale and
offset and ``P`` is a 0/1 permutation matrix. The log-Jacobian is ``sum(s) + H * W * sum(log g)``.

Everything that reads FrEIA's fields lives here, so :class:`CouplingBlock` checks once, at construction, that the
block has the layout this maths assumes (:func:`check_layout`). If a FrEIA release changes a field, construction
fails with the field's name instead of the latents drifting. Internal to :class:`~anomalib_fastflow2d.Flow2D`;
nothing here is exported from the package.
"""

from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Any, NamedTuple, cast

import torch
from FrEIA.modules import AllInOneBlock
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention

CHANNELS_LAST_GATHER_MIN = 256
"""From this many channels on, channels-last features are permuted by a gather rather than a 1x1 convolution."""


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in ``float32``, or in its own type where that is wider (``float64``)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class AtLeastFloat32(nn.Module):
    """:func:`at_least_float32` as a module: the last module of the coupling's subnet.

    Under bfloat16 autocast only the subnet's convolutions run in bfloat16; the coupling's log-scales, and so the
    log-determinant and the loss, are computed in float32. Parameter-free, so state-dict keys are unchanged.
    """

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return ``tensor`` in ``float32``, or in its own type where that is wider."""
        return at_least_float32(tensor)


def exporting() -> bool:
    """Whether the model is being traced into a graph for another runtime (ONNX, OpenVINO, TorchScript)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def tensor_versions(tensors: Iterable[torch.Tensor]) -> tuple[tuple[int, int], ...] | None:
    """Each tensor's ``(address, version)``: the key of a cache of values derived from them, or ``None`` if none holds.

    In-place updates and loads bump a tensor's version; moves and casts change its address. Tensors made under
    ``torch.inference_mode()`` (a model built or loaded in a serving process) keep no version counter, so an in-place
    load could not be told apart: for them there is no key, and the values must be derived on every call.
    """
    tensors = list(tensors)
    if any(tensor.is_inference() for tensor in tensors):
        return None
    return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)  # noqa: SLF001


def _softplus_scale(pre_activation: torch.Tensor) -> torch.Tensor:
    """FrEIA's ``"SOFTPLUS"`` global-scale activation, ``0.1 * softplus(a, beta=0.5)``."""
    return 0.1 * F.softplus(pre_activation, beta=0.5)


def _halves(block: AllInOneBlock) -> list[int]:
    channels = block.in_channels
    return [channels - channels // 2, channels // 2]


def _is_hard_permutation(matrix: object) -> bool:
    """A ``(C, C, 1, 1)`` 0/1 matrix with one 1 per row and column."""
    if not isinstance(matrix, torch.Tensor) or matrix.shape != (len(matrix), len(matrix), 1, 1):
        return False
    rows = matrix.detach().flatten(1)
    ones = rows == 1
    return bool(((rows == 0) | ones).all() and (ones.sum(dim=0) == 1).all() and (ones.sum(dim=1) == 1).all())


def _has_subnet_layout(block: AllInOneBlock) -> bool:
    """``conv -> ReLU -> conv -> AtLeastFloat32`` from ``x1``'s channels to twice ``x2``'s, keeping the size."""
    modules = list(block.subnet)
    if [type(module) for module in modules] != [nn.Conv2d, nn.ReLU, nn.Conv2d, AtLeastFloat32]:
        return False
    first, last = cast("nn.Conv2d", modules[0]), cast("nn.Conv2d", modules[2])
    channels_fit = first.in_channels == block.splits[0] and last.out_channels == 2 * block.splits[1]
    return channels_fit and _is_plain_same_size(first) and _is_plain_same_size(last)


def _is_plain_same_size(conv: nn.Conv2d) -> bool:
    """A convolution with a bias, stride 1, no dilation or groups, and an odd kernel padded to keep the size."""
    sizes = zip(conv.kernel_size, conv.padding, strict=True)
    same_size = all(size % 2 == 1 and pad == size // 2 for size, pad in sizes)
    plain = conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    return same_size and plain and conv.bias is not None


def _has_softplus_scale(block: AllInOneBlock) -> bool:
    probe = torch.linspace(-30, 30, 61, dtype=torch.float64, device="cpu")  # on the CPU under a meta device too
    return torch.allclose(block.global_scale_activation(probe), _softplus_scale(probe), rtol=1e-12, atol=0)


# The block's field, what the maths needs of it (with FrEIA's argument that sets it), and the test of the block.
_LAYOUT: tuple[tuple[str, str, Callable[[AllInOneBlock], bool]], ...] = (
    ("input_rank", "2: (N, C, H, W) inputs", lambda block: block.input_rank == 2),  # noqa: PLR2004
    ("conditional", "False: no condition inputs", lambda block: block.conditional is False),
    ("GIN", "False (gin_block=False)", lambda block: block.GIN is False),
    ("householder", "0 (learned_householder_permutation=0)", lambda block: block.householder == 0),
    ("reverse_pre_permute", "False (reverse_permutation=False)", lambda block: block.reverse_pre_permute is False),
    (
        "clamp",
        "a positive float, the tanh soft clamp's bound",
        lambda block: isinstance(block.clamp, float) and block.clamp > 0,
    ),
    ("splits", "[C - C // 2, C // 2]: x1 takes the odd channel", lambda block: block.splits == _halves(block)),
    ("w_perm", "a 0/1 permutation matrix (permute_soft=False)", lambda block: _is_hard_permutation(block.w_perm)),
    ("subnet", "conv -> ReLU -> conv -> AtLeastFloat32, x1's channels in, 2 * x2's out", _has_subnet_layout),
    ("global_scale_activation", "0.1 * softplus(a, beta=0.5) (global_affine_type='SOFTPLUS')", _has_softplus_scale),
)


def _describe(block: AllInOneBlock, field: str) -> str:
    if not hasattr(block, field):
        return "missing"
    value = getattr(block, field)
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} tensor"
    if isinstance(value, nn.Sequential):
        return " -> ".join(_describe_module(module) for module in value)
    return f"{value!r:.120}"


def _describe_module(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"Conv2d({module.in_channels}, {module.out_channels}, kernel_size={module.kernel_size})"
    return type(module).__name__


def check_layout(block: AllInOneBlock) -> None:
    """Check that a FrEIA block has the layout that :class:`CouplingBlock`'s maths reads.

    Args:
        block: A FrEIA :class:`~FrEIA.modules.AllInOneBlock`.

    Raises:
        ValueError: Naming the first field that differs (or is missing) and the installed FrEIA version.
    """
    for field, expected, holds in _LAYOUT:
        try:
            found = holds(block)
        except (AttributeError, TypeError, IndexError):
            found = False
        if not found:
            msg = (
                f"FrEIA {version('FrEIA')}'s AllInOneBlock field {field!r} is {_describe(block, field)}, but "
                f"Fastflow2D's coupling maths (anomalib_fastflow2d/coupling.py) need {expected}."
            )
            raise ValueError(msg)


class FoldedCoupling(NamedTuple):
    """A coupling block's parameters folded for inference (see :meth:`CouplingBlock.folded_forward`).

    Convolution weights are channels-last, the layout inference runs in, so that no call reorders them.
    """

    first_weight: torch.Tensor
    """The subnet's first convolution's weight."""
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
    mixing: tuple["Mixing", ...]
    """How each piece of the output (the next block's halves, or the whole output after the last block) is made."""


class Mixing(NamedTuple):
    """One piece of a block's output from the concatenation of ``x1`` and the updated ``x2``.

    Below :data:`CHANNELS_LAST_GATHER_MIN` channels a 1x1 convolution: rows of ``P`` times the passive half's global
    affine (``diag(g1, 1)`` and ``(b1, 0)``), so the passive half is not updated on its own. From there on, a gather
    of the channels ``order`` names, after the passive half's affine.
    """

    weight: torch.Tensor | None
    """``(P diag(g1, 1))`` rows of the piece, ``(C_piece, C, 1, 1)``; ``None`` for a gather."""
    bias: torch.Tensor | None
    """``P (b1, 0)`` rows of the piece; ``None`` for a gather."""
    order: torch.Tensor
    """Input channel of each output channel of the piece."""


class CouplingBlock(AllInOneBlock):
    """FrEIA's :class:`~FrEIA.modules.AllInOneBlock`, checked by :func:`check_layout`, with two faster forwards.

    FrEIA's own ``forward`` (with ``rev=True``) stays the inverse. The parameters and state-dict keys are FrEIA's,
    so checkpoints of plain ``AllInOneBlock`` flows load. FrEIA stores its ``"SOFTPLUS"`` activation as a lambda,
    which cannot be pickled, and anomalib's torch export pickles the whole model; after the layout check the
    method :meth:`global_scale_activation` stands in for it.

    Args:
        dims_in: FrEIA's input dimensions, ``[(C, H, W)]``.
        **options: FrEIA's ``AllInOneBlock`` arguments; the result must pass :func:`check_layout`.
    """

    def __init__(self, dims_in: list[tuple[int, ...]], **options: Any) -> None:  # noqa: ANN401 - FrEIA's options
        super().__init__(dims_in, **options)
        check_layout(self)
        del self.global_scale_activation  # FrEIA's lambda, now checked; the method below takes its place

    def global_scale_activation(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """FrEIA's ``"SOFTPLUS"`` activation, which FrEIA's inverse applies to the global scale's parameter."""
        return _softplus_scale(pre_activation)

    @property
    def channel_split(self) -> list[int]:
        """Channels of the passive half ``x1`` and of the active half ``x2``."""
        return list(self.splits)

    @property
    def log_scale_bound(self) -> float:
        """``alpha``: the log-scale ``s`` lies in ``[-alpha, alpha]``."""
        return cast("float", self.clamp)

    @property
    def subnet_convolutions(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The subnet's first and last convolution (the ReLU and the float32 promotion lie between and after)."""
        return cast("nn.Conv2d", self.subnet[0]), cast("nn.Conv2d", self.subnet[2])

    def scale(self) -> torch.Tensor:
        """The global scale ``g``, shaped ``(1, C, 1, 1)``."""
        return _softplus_scale(self.global_scale)

    def offset(self) -> torch.Tensor:
        """The global offset ``b``, shaped ``(1, C, 1, 1)``."""
        return cast("torch.Tensor", self.global_offset)

    def permutation(self) -> torch.Tensor:
        """``P`` as a ``(C, C, 1, 1)`` 0/1 matrix: output channel ``i`` is input channel ``j`` where ``P[i, j] = 1``."""
        return cast("torch.Tensor", self.w_perm)

    def forward_with_log_jacobian(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and ``log|det dy/dx|`` per sample, as FrEIA's forward, with ``P`` as a gather.

        Args:
            features: ``(N, C, H, W)``.

        Returns:
            The output ``(N, C, H, W)`` and the log-Jacobian ``(N,)``.
        """
        active_channels = self.channel_split[1]
        passive, active = torch.split(features, self.channel_split, dim=1)
        coefficients = 0.1 * self.subnet(passive)
        log_scale = self.log_scale_bound * torch.tanh(coefficients[:, :active_channels])
        active = active * torch.exp(log_scale) + coefficients[:, active_channels:]
        scale = self.scale()
        mixed = torch.cat((passive, active), dim=1) * scale + self.offset()
        pixels = features.shape[2] * features.shape[3]
        log_jacobian = log_scale.sum(dim=(1, 2, 3)) + pixels * torch.log(scale).sum()
        return self._permute_channels(mixed), log_jacobian

    def fold(self, output_split: list[int] | None = None) -> FoldedCoupling:
        """Fold the constant factors and the global affine into the convolutions and per-channel terms.

        Args:
            output_split: Channels of the pieces :meth:`folded_forward` returns: the next block's
                :attr:`channel_split`, or the default ``[C]``, the whole output.
        """
        first, last = self.subnet_convolutions
        passive_scale, active_scale = torch.split(self.scale().flatten(), self.channel_split)
        passive_offset, active_offset = torch.split(self.offset().flatten(), self.channel_split)
        row_scale = torch.cat((torch.full_like(active_scale, 0.1), 0.1 * active_scale))
        row_offset = torch.cat((torch.zeros_like(active_offset), active_offset))
        return FoldedCoupling(
            first_weight=first.weight.contiguous(memory_format=torch.channels_last),
            weight=(last.weight * row_scale[:, None, None, None]).contiguous(memory_format=torch.channels_last),
            bias=torch.addcmul(row_offset, cast("torch.Tensor", last.bias), row_scale),
            log_active_scale=torch.log(active_scale)[:, None, None],
            passive_scale=passive_scale[:, None, None],
            passive_offset=passive_offset[:, None, None],
            mixing=self._mixing(passive_scale, passive_offset, output_split or [self.in_channels]),
        )

    def _mixing(
        self, passive_scale: torch.Tensor, passive_offset: torch.Tensor, output_split: list[int]
    ) -> tuple[Mixing, ...]:
        permutation = self.permutation()
        orders = permutation.flatten(1).argmax(dim=1).split(output_split)
        if self.in_channels >= CHANNELS_LAST_GATHER_MIN:
            return tuple(Mixing(None, None, order) for order in orders)
        channel_scale = torch.cat((passive_scale, torch.ones_like(passive_scale[: self.channel_split[1]])))
        channel_offset = torch.cat((passive_offset, torch.zeros_like(passive_offset[: self.channel_split[1]])))
        weight = (permutation * channel_scale[:, None, None]).contiguous(memory_format=torch.channels_last)
        bias = permutation.flatten(1) @ channel_offset
        return tuple(
            Mixing(rows, row_bias, order)
            for rows, row_bias, order in zip(weight.split(output_split), bias.split(output_split), orders, strict=True)
        )

    def folded_forward(self, folded: FoldedCoupling, passive: torch.Tensor, active: torch.Tensor) -> list[torch.Tensor]:
        """The block's output without its log-Jacobian, from :meth:`fold`'s parameters, for inference.

        The factors ``0.1`` and ``0.1 * g2`` and the offset ``b2`` are folded into the subnet's last convolution,
        so it gives ``(0.1 * a_s, 0.1 * g2 * a_t + b2)`` directly, and the active half becomes
        ``x2 * exp(s + log g2) + 0.1 * g2 * a_t + b2``, updated in place. The halves come and go as separate,
        contiguous maps (a convolution would copy a channel slice first), and the permutation writes the next
        block's halves (:class:`Mixing`). Exports compute the same with :meth:`exported_forward`.

        Args:
            folded: This block's :meth:`fold`, computed with its current parameters.
            passive: ``x1``, ``(N, C1, H, W)``; channels-last for speed.
            active: ``x2``, ``(N, C2, H, W)``.

        Returns:
            The output ``(N, C, H, W)`` in the pieces of :meth:`fold`'s ``output_split``, channels-last.
        """
        active_channels = self.channel_split[1]
        first, last = self.subnet_convolutions
        hidden = F.relu_(F.conv2d(passive, folded.first_weight, first.bias, padding=first.padding))
        # Under bfloat16 autocast the convolutions run in bfloat16; the coupling itself, as in training, in float32.
        coefficients = at_least_float32(F.conv2d(hidden, folded.weight, folded.bias, padding=last.padding))
        # A slice, unlike torch.split's views, may be updated in place under autograd.
        log_scale, active_out = coefficients[:, :active_channels], coefficients[:, active_channels:]
        growth = torch.add(folded.log_active_scale, torch.tanh(log_scale), alpha=self.log_scale_bound).exp_()
        active_out = active_out.addcmul_(active, growth)
        if folded.mixing[0].weight is None:
            passive = torch.addcmul(folded.passive_offset, passive, folded.passive_scale)
        mixed = torch.cat((passive.to(active_out.dtype), active_out), dim=1)
        return [_mix(mixed, piece) for piece in folded.mixing]

    def exported_forward(
        self, folded: FoldedCoupling, passive: torch.Tensor, active: torch.Tensor, next_split: list[int]
    ) -> list[torch.Tensor]:
        """:meth:`folded_forward` as exported graphs compute it: halves in, the next block's halves out.

        OpenVINO's CPU plugin splits and concatenates the channels of its blocked layouts with reference kernels,
        which took a tenth of the flows' time, so this graph has neither: the subnet's last convolution is two (the
        log-scale rows, which the plugin fuses with ``tanh``, and the shift rows), and :meth:`permuted_pieces`
        writes the next block's halves directly. The latents equal :meth:`folded_forward`'s.

        Args:
            folded: This block's :meth:`fold`.
            passive: ``x1``, ``(N, C1, H, W)``.
            active: ``x2``, ``(N, C2, H, W)``.
            next_split: Channels of the pieces of the output to return: the next block's :attr:`channel_split`,
                or ``[C]`` after the last block.

        Returns:
            The block's output ``(N, C, H, W)`` in pieces of ``next_split`` channels.
        """
        active_channels = self.channel_split[1]
        first, last = self.subnet_convolutions
        hidden = F.relu(first(passive))
        weights, biases = folded.weight.split(active_channels), folded.bias.split(active_channels)
        log_scale, shift = (
            F.conv2d(hidden, weight, bias, padding=last.padding) for weight, bias in zip(weights, biases, strict=True)
        )
        growth = torch.add(folded.log_active_scale, torch.tanh(log_scale), alpha=self.log_scale_bound).exp()
        passive_out = torch.addcmul(folded.passive_offset, passive, folded.passive_scale)
        return self.permuted_pieces([passive_out, torch.addcmul(shift, active, growth)], next_split)

    def permuted_pieces(self, halves: list[torch.Tensor], split: list[int]) -> list[torch.Tensor]:
        """``P`` applied to the concatenated ``halves``, returned in pieces of ``split`` channels, by convolutions.

        Each piece is the sum of two 1x1 convolutions by 0/1 blocks of ``P``, one per half: no concatenation, no
        split, and exact, as each output sums one input times 1 and zeros.

        Args:
            halves: ``x1``-sized and ``x2``-sized maps, as :attr:`channel_split` splits the block's channels.
            split: Channels of each piece; they sum to the block's channels.

        Returns:
            ``(P cat(halves))`` split into ``split``.
        """
        pieces = []
        for rows in self.permutation().split(split):
            blocks = rows.split(self.channel_split, dim=1)
            first, second = (F.conv2d(half, block) for half, block in zip(halves, blocks, strict=True))
            pieces.append(first + second)
        return pieces

    def _permute_channels(self, features: torch.Tensor) -> torch.Tensor:
        """``P x``, keeping a channels-last layout channels-last.

        On a contiguous tensor a gather copies whole channel planes. On channels-last tensors with fewer than
        :data:`CHANNELS_LAST_GATHER_MIN` channels FrEIA's 1x1 convolution by ``P`` is kept, as oneDNN's convolution
        beats a gather within each pixel (``docs/model.md`` gives the measurements); it is exact, as each output
        sums one input times 1.
        """
        channels_last = features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
        if channels_last and features.shape[1] < CHANNELS_LAST_GATHER_MIN:
            return _convolve_in_own_type(features, self.permutation())
        # The order is read from P at every call, so that it follows the matrix a checkpoint loads.
        return _gather_channels(features, self.permutation().flatten(1).argmax(dim=1))


def _mix(features: torch.Tensor, mixing: Mixing) -> torch.Tensor:
    if mixing.weight is None:
        return _gather_channels(features, mixing.order)
    return _convolve_in_own_type(features, mixing.weight, mixing.bias)


def _gather_channels(features: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``features[:, order]``, in the features' own layout."""
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        return features.permute(0, 2, 3, 1)[..., order].permute(0, 3, 1, 2)
    return features[:, order]


def _convolve_in_own_type(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """A 1x1 convolution in the features' own type: autocast would round float32 latents to bfloat16."""
    if torch.is_autocast_enabled(features.device.type):
        with torch.autocast(features.device.type, enabled=False):
            return _convolve_in_own_type(features, weight, bias)
    return F.conv2d(features, weight.to(features.dtype), None if bias is None else bias.to(features.dtype))
