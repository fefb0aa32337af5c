# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import pickle
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pytest
import torch
from FrEIA.modules import AllInOneBlock
from torch import nn

from anomalib_fastflow2d.coupling import CouplingBlock, check_layout
from anomalib_fastflow2d.flows import AFFINE_CLAMPING, subnet_constructor

FASTFLOW_OPTIONS: dict[str, Any] = {
    "subnet_constructor": subnet_constructor(3, 1.0),
    "affine_clamping": AFFINE_CLAMPING,
    "permute_soft": False,
    "global_affine_type": "SOFTPLUS",
}


def conv_only(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1))


@pytest.fixture(params=[6, 7])  # an odd count gives the passive half the extra channel
def block(request: pytest.FixtureRequest) -> CouplingBlock:
    torch.manual_seed(request.param)
    block = CouplingBlock([(request.param, 1, 1)], **FASTFLOW_OPTIONS)
    # Move away from the identity-like initialisation so the test exercises real scales and shifts.
    with torch.no_grad():
        for parameter in block.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return block.double()


def freia_forward(block: AllInOneBlock, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    (output,), log_jacobian = block((features,))
    return output, log_jacobian


def test_training_forward_equals_freias_block(block: CouplingBlock) -> None:
    features = torch.randn(3, block.in_channels, 5, 4, dtype=torch.float64)
    output, log_jacobian = block.forward_with_log_jacobian(features)
    expected, expected_log_jacobian = freia_forward(block, features)
    assert not torch.allclose(output, features, atol=1e-2)
    assert log_jacobian.shape == (3,)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_jacobian, expected_log_jacobian, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("pieces", ["whole", "halves"])  # after the last block, or the next block's halves
def test_folded_forward_equals_freias_block(
    block: CouplingBlock, memory_format: torch.memory_format, pieces: str
) -> None:
    features = torch.randn(3, block.in_channels, 5, 4, dtype=torch.float64)
    expected, _ = freia_forward(block, features)
    split = [block.in_channels] if pieces == "whole" else block.channel_split
    passive, active = torch.split(features.contiguous(memory_format=memory_format), block.channel_split, dim=1)
    with torch.no_grad():
        output = block.folded_forward(block.fold(split), passive, active)
    assert [piece.shape[1] for piece in output] == split
    assert all(piece.is_contiguous(memory_format=memory_format) for piece in output)
    torch.testing.assert_close(torch.cat(output, dim=1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_pieces", [1, 2, 3])
def test_permuted_pieces_are_the_permutation_by_a_gather_exactly(block: CouplingBlock, num_pieces: int) -> None:
    channels = block.in_channels
    split = [channels // num_pieces + (index < channels % num_pieces) for index in range(num_pieces)]
    # float32 values of every magnitude: a product by 1 plus zeros is exact, a rounding anywhere would show.
    features = torch.randn(2, channels, 5, 4) * torch.logspace(-20, 20, channels)[None, :, None, None]
    halves = list(torch.split(features, block.channel_split, dim=1))
    order = block.permutation().flatten(1).argmax(dim=1)
    pieces = block.float().permuted_pieces(halves, split)
    assert [piece.shape[1] for piece in pieces] == split
    assert torch.equal(torch.cat(pieces, dim=1), features[:, order])


def test_exported_forward_equals_the_folded_forward(block: CouplingBlock) -> None:
    features = torch.randn(3, block.in_channels, 5, 4, dtype=torch.float64)
    passive, active = torch.split(features, block.channel_split, dim=1)
    with torch.no_grad():
        (expected,) = block.folded_forward(block.fold(), passive, active)
        pieces = block.exported_forward(block.fold(), passive, active, block.channel_split)
    assert [piece.shape[1] for piece in pieces] == block.channel_split
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-12, atol=1e-12)


def test_freias_inverse_undoes_the_forward_and_the_block_pickles(block: CouplingBlock) -> None:
    features = torch.randn(2, block.in_channels, 3, 3, dtype=torch.float64)
    output, _ = block.forward_with_log_jacobian(features)
    (inverse,), _ = block((output,), rev=True)
    torch.testing.assert_close(inverse, features, rtol=1e-10, atol=1e-10)
    restored = pickle.loads(pickle.dumps(block))  # noqa: S301 - our own object
    torch.testing.assert_close(restored.forward_with_log_jacobian(features), block.forward_with_log_jacobian(features))


def test_global_scale_is_freias_softplus(block: CouplingBlock) -> None:
    freia_block = AllInOneBlock([(6, 1, 1)], **FASTFLOW_OPTIONS)
    pre_activation = torch.linspace(-30, 30, 61, dtype=torch.float64)
    expected = freia_block.global_scale_activation(pre_activation)
    torch.testing.assert_close(block.global_scale_activation(pre_activation), expected, rtol=0, atol=0)
    torch.testing.assert_close(block.scale(), block.global_scale_activation(block.global_scale), rtol=0, atol=0)


def test_state_dict_keys_are_freias() -> None:
    freia_block = AllInOneBlock([(6, 1, 1)], **FASTFLOW_OPTIONS)
    block = CouplingBlock([(6, 1, 1)], **FASTFLOW_OPTIONS)
    assert list(block.state_dict()) == list(freia_block.state_dict())
    block.load_state_dict(freia_block.state_dict())
    torch.testing.assert_close(block.permutation(), freia_block.w_perm, rtol=0, atol=0)


def test_freias_block_with_fastflows_options_passes_the_check() -> None:
    check_layout(AllInOneBlock([(5, 1, 1)], **FASTFLOW_OPTIONS))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"permute_soft": True}, "w_perm"),
        ({"global_affine_type": "EXP"}, "global_scale_activation"),
        ({"gin_block": True}, "GIN"),
        ({"learned_householder_permutation": 2}, "householder"),
        ({"reverse_permutation": True}, "reverse_pre_permute"),
        ({"subnet_constructor": conv_only}, "subnet"),
        ({"subnet_constructor": subnet_constructor(3, 1.0), "affine_clamping": 2}, "clamp"),
    ],
)
def test_a_block_built_otherwise_is_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    torch.manual_seed(0)
    block = AllInOneBlock([(6, 1, 1)], **(FASTFLOW_OPTIONS | options))
    with pytest.raises(ValueError, match=f"FrEIA {version('FrEIA')}'s AllInOneBlock field '{field}' is "):
        check_layout(block)
    with pytest.raises(ValueError, match=f"'{field}'"):
        CouplingBlock([(6, 1, 1)], **(FASTFLOW_OPTIONS | options))


@pytest.mark.parametrize(
    ("change", "field", "found"),
    [
        (lambda block: delattr(block, "clamp"), "clamp", "is missing"),
        (lambda block: setattr(block, "splits", [2, 4]), "splits", "[2, 4]"),
        (lambda block: block.subnet.insert(1, nn.Tanh()), "subnet", "kernel_size=(3, 3)) -> Tanh -> ReLU -> Conv2d"),
    ],
)
def test_a_changed_or_missing_field_is_named(change: Callable[[AllInOneBlock], None], field: str, found: str) -> None:
    block = AllInOneBlock([(6, 1, 1)], **FASTFLOW_OPTIONS)
    change(block)
    with pytest.raises(ValueError, match=f"'{field}'") as error:
        check_layout(block)
    assert found in str(error.value)


def test_blocks_build_on_the_meta_device() -> None:
    with torch.device("meta"):
        block = CouplingBlock([(6, 1, 1)], **FASTFLOW_OPTIONS)
    assert block.global_scale.is_meta  # the layout check's probe of the global scale stays on the CPU
    assert block.scale().shape == (1, 6, 1, 1)
