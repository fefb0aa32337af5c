# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Tiles whose cores stitch into exactly the whole input's result, and the receptive field that sizes them."""

import itertools

import pytest
import torch
from torch import nn

from anomalib_fastflow2d.tiling import plan_spans, receptive_radius, run_in_tiles


@pytest.mark.parametrize(
    ("length", "tile", "margin", "align"), [(10, 6, 1, 1), (430, 288, 112, 16), (1000, 96, 16, 16)]
)
def test_cores_partition_the_axis_on_the_grid_a_margin_inside_their_tiles(
    length: int, tile: int, margin: int, align: int
) -> None:
    spans = plan_spans(length, tile, margin, align)

    assert spans[0].keep_start == 0
    assert spans[-1].keep_stop == spans[-1].stop == length
    for span, following in itertools.pairwise(spans):
        assert span.keep_stop == following.keep_start  # no gap, no overlap
        assert following.start % align == 0
        assert following.keep_start % align == 0
        assert following.keep_start - following.start >= margin
        assert span.stop - span.keep_stop >= margin
    assert all(span.stop - span.start <= tile for span in spans)


def test_an_axis_that_fits_in_a_tile_is_one_span() -> None:
    (span,) = plan_spans(100, 128, 16, 16)
    assert (span.start, span.stop, span.keep_start, span.keep_stop) == (0, 100, 0, 100)


def test_a_tile_without_a_core_is_refused() -> None:
    with pytest.raises(ValueError, match="leave no core"):
        plan_spans(100, 32, 16, 16)


def _strided_network() -> nn.Module:
    """Two outputs, at strides 2 and 4, with zero padding: tiles that overlap too little give other values."""

    class TwoScales(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Sequential(
                nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
            )
            self.second = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(4, 6, 3, padding=1))

        def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
            first = self.first(images)
            return [first, self.second(first)]

    torch.manual_seed(0)
    return TwoScales().eval()


def test_receptive_radius_is_the_fields_reach_rounded_to_the_grid() -> None:
    # Stride-1 convolutions of 5 and 3 pixels reach 2 + 1 pixels either side.
    network = nn.Sequential(nn.Conv2d(3, 2, 5, padding=2), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    assert receptive_radius(_as_list(network), [1], align=1, probe=32) == 3
    assert receptive_radius(_as_list(network), [1], align=4, probe=32) == 4


def test_stitched_tiles_equal_the_whole_input_and_a_smaller_margin_does_not() -> None:
    network = _strided_network()
    margin = receptive_radius(network, [2, 4], align=4)
    images = torch.randn(2, 3, 70, 93)
    with torch.no_grad():
        whole = network(images)
        tiled = run_in_tiles(network, images, tile=2 * margin + 8, margin=margin, align=4, strides=[2, 4])
        short = run_in_tiles(network, images, tile=2 * margin + 8, margin=margin - 4, align=4, strides=[2, 4])

    for expected, stitched in zip(whole, tiled, strict=True):
        assert stitched.shape == expected.shape
        assert torch.allclose(stitched, expected, atol=1e-6)
    assert not torch.allclose(short[1], whole[1], atol=1e-3)


def _as_list(network: nn.Module) -> nn.Module:
    """``network`` with its one output in a list, as :func:`receptive_radius` takes feature pyramids."""

    class Listed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
            return [self.network(images)]

    return Listed()
