# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import pytest
import torch
from anomalib.data import InferenceBatch

from anomalib_fastflow2d import Fastflow2DModel


@pytest.fixture(scope="module")
def model() -> Fastflow2DModel:
    torch.manual_seed(0)
    return Fastflow2DModel("resnet18", pre_trained=False, flow_steps=2)


def test_training_mode_returns_latents_and_log_jacobians(model: Fastflow2DModel) -> None:
    model.train()
    latents, log_jacobians = model(torch.randn(2, 3, 64, 64))
    assert [tuple(latent.shape) for latent in latents] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    assert [tuple(log_jacobian.shape) for log_jacobian in log_jacobians] == [(2,), (2,), (2,)]


def test_model_built_for_256_runs_at_192x320(model: Fastflow2DModel) -> None:
    model.eval()
    with torch.no_grad():
        square = model(torch.randn(1, 3, 256, 256))
        wide = model(torch.randn(2, 3, 192, 320))
    assert isinstance(wide, InferenceBatch)
    assert square.anomaly_map.shape == (1, 1, 256, 256)
    assert wide.anomaly_map.shape == (2, 1, 192, 320)
    assert wide.pred_score.shape == (2,)
    assert torch.equal(wide.pred_score, wide.anomaly_map.flatten(1).amax(dim=1))
    assert wide.anomaly_map.min() >= -1
    assert wide.anomaly_map.max() <= 0


def test_no_parameter_or_buffer_depends_on_the_input_size(model: Fastflow2DModel) -> None:
    shapes = [tuple(tensor.shape) for tensor in [*model.norms.parameters(), *model.flows.parameters()]]
    assert all(len(shape) != 3 for shape in shapes)  # anomalib's LayerNorm([C, H, W]) is the 3-d case
    assert {tuple(norm.weight.shape) for norm in model.norms} == {(64,), (128,), (256,)}


def test_decode_inverts_encode(model: Fastflow2DModel) -> None:
    model.eval()
    with torch.no_grad():
        features = model.features(torch.randn(2, 3, 64, 96))
        latents, _ = model.encode(features)
        restored = model.decode(latents)
    for original, back in zip(features, restored, strict=True):
        assert torch.allclose(original, back, atol=1e-4)
