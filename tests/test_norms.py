# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The feature norms: anomalib's LayerNorm at the training size, any other size, every layout, and export."""

from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import pytest
import torch
from anomalib.models.image.fastflow.torch_model import FastflowModel
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_fastflow2d import Fastflow2DModel, resolve
from anomalib_fastflow2d.export import OPENVINO_F32_CONFIG
from anomalib_fastflow2d.norms import ChannelNorm, PositionNorm, standardise, standardise_in_layout


def _randomised(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        for parameter in norm.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return norm


def test_position_norm_at_the_training_size_is_anomalibs_layer_norm() -> None:
    torch.manual_seed(0)
    anomalib_model = FastflowModel(input_size=(64, 96), backbone="resnet18", pre_trained=False, flow_steps=1).eval()
    ours = Fastflow2DModel(resolve("resnet18", flow_steps=1, input_size=(64, 96)), pre_trained=False)
    ours.feature_extractor.network.load_state_dict(anomalib_model.feature_extractor.state_dict())
    for layer_norm, position_norm in zip(anomalib_model.norms, ours.norms, strict=True):
        position_norm.load_state_dict(_randomised(layer_norm).state_dict())
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = anomalib_model.feature_extractor(images)
        expected = [layer_norm(feature) for layer_norm, feature in zip(anomalib_model.norms, features, strict=True)]
        actual = ours.features(images)
    for want, got in zip(expected, actual, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_position_norm_at_the_training_size_keeps_the_layout_and_equals_the_standardised_affine(
    memory_format: torch.memory_format,
) -> None:
    torch.manual_seed(0)
    norm = _randomised(PositionNorm(6, feature_size=(5, 7)))
    features = 3 * torch.randn(2, 6, 5, 7) + 1
    expected = F.group_norm(features, 1) * norm.weight + norm.bias
    normalised = norm(features.contiguous(memory_format=memory_format))
    assert normalised.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(normalised, expected, rtol=1e-5, atol=1e-5)


def test_position_norm_resizes_its_maps_bilinearly_at_other_sizes() -> None:
    torch.manual_seed(0)
    norm = _randomised(PositionNorm(4, feature_size=(8, 8)))
    features = torch.randn(3, 4, 6, 10)
    maps = F.interpolate(torch.stack((norm.weight, norm.bias)), size=(6, 10), mode="bilinear", align_corners=False)
    expected = F.group_norm(features, 1) * maps[0] + maps[1]
    torch.testing.assert_close(norm(features), expected)


def test_position_norm_with_one_value_per_channel_is_the_channel_norm_at_any_size() -> None:
    torch.manual_seed(0)
    channel = _randomised(ChannelNorm(5))
    position = PositionNorm(5, feature_size=(7, 7))
    with torch.no_grad():
        position.weight.copy_(channel.weight[:, None, None].expand(5, 7, 7))
        position.bias.copy_(channel.bias[:, None, None].expand(5, 7, 7))
    for size in [(7, 7), (4, 12), (15, 3)]:
        features = torch.randn(2, 5, *size)
        torch.testing.assert_close(position(features), channel(features), atol=1e-6, rtol=1e-5)


def test_channel_norm_loads_and_equals_group_norm() -> None:
    torch.manual_seed(0)
    group_norm = _randomised(nn.GroupNorm(1, 6))
    channel = ChannelNorm(6)
    channel.load_state_dict(group_norm.state_dict())
    features = torch.randn(2, 6, 5, 9)
    torch.testing.assert_close(channel(features), group_norm(features))


def test_standardising_in_layout_keeps_channels_last_and_equals_group_norm() -> None:
    features = (3 + 2 * torch.randn(2, 8, 6, 5)).contiguous(memory_format=torch.channels_last)
    standardised = standardise_in_layout(features)
    assert standardised.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(standardised, F.group_norm(features, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(standardise(features), F.group_norm(features, 1))
    half = standardise_in_layout(features.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), standardised, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("feature_norm", ["position", "channel"])
def test_model_trained_at_one_size_runs_and_trains_at_others(feature_norm: str) -> None:
    torch.manual_seed(0)
    model = Fastflow2DModel(
        resolve("resnet18", flow_steps=1, feature_norm=feature_norm, input_size=(64, 64)), pre_trained=False
    )
    for size in [(64, 64), (48, 80), (96, 160)]:
        latents, _ = model.encode(model.features(torch.randn(2, 3, *size)))
        sum(latent.square().sum() for latent in latents).backward()
    assert all(parameter.grad is not None for parameter in model.norms.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 96, 160)).anomaly_map.shape == (1, 1, 96, 160)


def test_onnx_export_of_the_position_norm_keeps_height_and_width_dynamic_and_standardises_in_4d(tmp_path: Path) -> None:
    torch.manual_seed(0)
    norm = _randomised(PositionNorm(4, feature_size=(8, 8))).eval()
    path = tmp_path / "norm.onnx"
    height, width = torch.export.Dim("height", min=2, max=64), torch.export.Dim("width", min=2, max=64)
    torch.onnx.export(
        norm, (torch.randn(2, 4, 8, 8),), path, dynamo=True, dynamic_shapes=({2: height, 3: width},), verbose=False
    )
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for size in [(8, 8), (6, 10)]:
        features = torch.randn(2, 4, *size)
        (output,) = session.run(None, {session.get_inputs()[0].name: features.numpy()})
        np.testing.assert_allclose(output, norm(features).detach().numpy(), atol=1e-5)
    # OpenVINO standardises the features as they are (4-D, in the convolutions' layout): flattened to one row first,
    # as group_norm exports, they were reordered to a planar layout and back, slower than the norm itself.
    model = openvino.convert_model(path)
    normalisations = [node for node in model.get_ordered_ops() if node.get_type_name() == "MVN"]
    assert [node.get_input_partial_shape(0).rank.get_length() for node in normalisations] == [4]
    features = torch.randn(2, 4, 6, 10)
    (output,) = openvino.Core().compile_model(model, "CPU", OPENVINO_F32_CONFIG)(features.numpy()).values()
    np.testing.assert_allclose(output, norm(features).detach().numpy(), atol=1e-5)
