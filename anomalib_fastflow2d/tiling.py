# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Whole-frame results computed in overlapping tiles, so that large frames score in bounded memory.

A convolutional network's output at a pixel depends only on the input within its receptive field. Split a frame into
tiles that overlap by at least that field's radius (the *margin*), keep from each tile only its *core*, the part
at least a margin away from the tile's inner edges, and the cores put together are exactly the whole-frame result:
each kept value saw the same inputs, padding included, as it would in the whole frame. With strided networks the
tiles must also start on the coarsest stride's grid, so that every stage samples the same positions.

:func:`plan_spans` lays the tiles out along one axis; :func:`run_in_tiles` runs a function over the 2D tiles of a
map and stitches the cores of its outputs; :func:`receptive_radius` measures a network's margin.
"""

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the input it reads and the part of its output that is kept, in input pixels.

    Args:
        start: First input pixel of the tile.
        stop: One past the tile's last input pixel.
        keep_start: First kept pixel; the cores of consecutive spans meet, so together they cover the axis once.
        keep_stop: One past the last kept pixel.
    """

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_spans(length: int, tile: int, margin: int, align: int = 1) -> list[Span]:
    """Overlapping tiles of at most ``tile`` pixels covering ``[0, length)``, whose cores partition it.

    Tiles start on multiples of ``align``, and every core edge away from the ends of the axis is a multiple of
    ``align`` at least ``margin`` pixels inside its tile. One span covers the axis when it fits in a tile.

    Args:
        length: Pixels along the axis.
        tile: Largest tile, a multiple of ``align`` greater than ``2 * margin``.
        margin: The receptive field's radius, a multiple of ``align``.
        align: The grid tiles start on (the network's coarsest stride). Defaults to ``1``.

    Raises:
        ValueError: ``tile`` or ``margin`` is off the grid, or the tile leaves no core.

    Examples:
        >>> [(span.start, span.stop, span.keep_start, span.keep_stop) for span in plan_spans(10, 6, 1)]
        [(0, 6, 0, 5), (4, 10, 5, 10)]
    """
    if tile % align or margin % align or tile - 2 * margin < align:
        msg = (
            f"Tiles of {tile} pixels with a margin of {margin} on a grid of {align} leave no core: the tile must be a "
            f"multiple of {align} and larger than {2 * margin + align - 1}."
        )
        raise ValueError(msg)
    if length <= tile:
        return [Span(0, length, 0, length)]
    step = tile - 2 * margin
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    keep_starts = [0, *(start + margin for start in starts[1:]), length]
    return [
        Span(start, min(start + tile, length), keep_starts[index], keep_starts[index + 1])
        for index, start in enumerate(starts)
    ]


def run_in_tiles(
    function: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    inputs: torch.Tensor,
    tile: int,
    margin: int,
    align: int,
    strides: Sequence[int],
) -> list[torch.Tensor]:
    """``function(inputs)`` computed tile by tile: each output put together from the cores of its tiles.

    Args:
        function: Maps ``(N, C, h, w)`` inputs to outputs ``(N, C_k, h_k, w_k)``, one per stride ``s_k``, where
            output pixel ``j`` sits at input pixel ``j * s_k``.
        inputs: ``(N, C, H, W)``.
        tile: Largest tile side in input pixels (see :func:`plan_spans`).
        margin: Radius of ``function``'s receptive field in input pixels, a multiple of ``align``.
        align: Grid the tiles start on; every stride divides it.
        strides: Each output's stride relative to the input.

    Returns:
        The outputs for the whole input, one per stride.
    """
    rows = plan_spans(inputs.shape[-2], tile, margin, align)
    columns = plan_spans(inputs.shape[-1], tile, margin, align)
    strips: list[list[torch.Tensor]] = [[] for _ in strides]
    for row in rows:
        pieces: list[list[torch.Tensor]] = [[] for _ in strides]
        for column in columns:
            results = function(inputs[..., row.start : row.stop, column.start : column.stop])
            for kept, result, stride in zip(pieces, results, strides, strict=True):
                kept.append(result[..., _core(row, stride, result.shape[-2]), _core(column, stride, result.shape[-1])])
        for strip, kept in zip(strips, pieces, strict=True):
            strip.append(torch.cat(kept, dim=-1))
    return [torch.cat(strip, dim=-2) for strip in strips]


def _core(span: Span, stride: int, size: int) -> slice:
    """A span's core in its tile's output pixels; the last core runs to the end (a frame off the stride's grid)."""
    stop = size if span.keep_stop == span.stop else (span.keep_stop - span.start) // stride
    return slice((span.keep_start - span.start) // stride, stop)


def receptive_radius(network: nn.Module, strides: Sequence[int], align: int, probe: int = 256) -> int:
    """The margin tiles of ``network``'s input need, in input pixels, rounded up to a multiple of ``align``.

    Measured, so it holds for any timm CNN: the gradient of an output pixel with respect to the input is non-zero
    within its receptive field. It is measured on a copy whose weights let every input of the field through
    (:func:`_open_copy`): the field of the architecture, not of today's weights (timm starts the last norm of each
    residual block at zero, so an untrained ResNet's field is a fraction of a trained one's). An output pixel ``j``
    at stride ``s`` sits at input pixel ``j * s``; the margin covers the field's reach before that pixel and past
    its stride cell. The probe image doubles until every field fits inside it.

    Args:
        network: Maps ``(1, 3, H, W)`` images to feature maps, one per stride.
        strides: Each output's stride.
        align: The coarsest stride.
        probe: Side of the first probe image, a multiple of ``align``. Defaults to ``256``.
    """
    opened = _open_copy(network)
    while True:
        images = torch.rand(1, 3, probe, probe, dtype=torch.float64, requires_grad=True)
        margin, fits = 0, True
        with torch.enable_grad():
            outputs = opened(images)
            centres = [(output.shape[-2] // 2, output.shape[-1] // 2) for output in outputs]
            gradients = [
                torch.autograd.grad(output[..., row, column].sum(), images, retain_graph=True)[0]
                for output, (row, column) in zip(outputs, centres, strict=True)
            ]
        for gradient, centre, stride in zip(gradients, centres, strides, strict=True):
            reached = gradient[0].abs().amax(dim=0).nonzero()
            low, high = reached.amin(dim=0).tolist(), reached.amax(dim=0).tolist()
            fits = fits and min(low) > 0 and max(high) < probe - 1
            for axis in (0, 1):
                position = centre[axis] * stride
                margin = max(margin, position - low[axis], high[axis] - position - stride + 1)
        if fits:
            return math.ceil(margin / align) * align
        probe *= 2


def _open_copy(network: nn.Module) -> nn.Module:
    """A float64 CPU copy of ``network`` in which every input of a receptive field reaches the output.

    Weights become positive averages (``1 / fan_in``), norms identities, and max-pooling (whose gradient reaches
    one pixel per window) average-pooling of the same window, so with a positive input no ReLU or pool blocks a
    path and activations stay of order one.
    """
    opened = copy.deepcopy(network).to(device="cpu", dtype=torch.float64).eval()
    for module in list(opened.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for name, parameter in opened.named_parameters():
            if parameter.dim() >= 2:  # noqa: PLR2004 - weights (out, in, ...) as opposed to per-channel vectors
                parameter.fill_(1.0 / parameter[0].numel())
            else:
                parameter.fill_(0.0 if name.endswith("bias") else 1.0)
        for name, buffer in opened.named_buffers():
            if name.endswith("running_var"):
                buffer.fill_(1.0)
            elif name.endswith("running_mean"):
                buffer.zero_()
    return opened
