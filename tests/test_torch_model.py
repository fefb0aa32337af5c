# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import pytest
import torch
from anomalib.data import InferenceBatch
from torch.nn import functional as F  # noqa: N812

from anomalib_fastflow2d import Fastflow2DModel
from anomalib_fastflow2d.presets import resolve


@pytest.fixture(scope="module")
def model() -> Fastflow2DModel:
    torch.manual_seed(0)
    return Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False)


def test_encode_returns_latents_and_log_jacobians(model: Fastflow2DModel) -> None:
    model.train()
    latents, log_jacobians = model.encode(model.features(torch.randn(2, 3, 64, 64)))
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
    assert wide.pred_score.shape == (2, 1)  # (N, 1), as anomalib's own models give
    assert torch.equal(wide.pred_score, wide.anomaly_map.flatten(1).amax(dim=1, keepdim=True))
    assert wide.anomaly_map.min() >= -1
    assert wide.anomaly_map.max() <= 0


def test_only_the_position_norm_has_parameters_sized_by_the_training_input(model: Fastflow2DModel) -> None:
    # anomalib's LayerNorm([C, H, W]) is the 3-d case: the position norm stores it at the training feature size.
    assert [tuple(norm.weight.shape) for norm in model.norms] == [(64, 64, 64), (128, 32, 32), (256, 16, 16)]
    assert all(parameter.dim() != 3 for parameter in model.flows.parameters())
    channel = Fastflow2DModel(resolve("resnet18", flow_steps=2, feature_norm="channel"), pre_trained=False)
    assert [tuple(norm.weight.shape) for norm in channel.norms] == [(64,), (128,), (256,)]


def test_decode_inverts_encode(model: Fastflow2DModel) -> None:
    model.eval()
    with torch.no_grad():
        features = model.features(torch.randn(2, 3, 64, 96))
        latents, _ = model.encode(features)
        restored = model.decode(latents)
    for original, back in zip(features, restored, strict=True):
        assert torch.allclose(original, back, atol=1e-4)


def _perturbed_model() -> Fastflow2DModel:
    """A model whose flows are away from their identity-like initialisation, in float64."""
    torch.manual_seed(0)
    model = Fastflow2DModel(resolve("resnet18", flow_steps=4), pre_trained=False)
    with torch.no_grad():
        for parameter in [*model.norms.parameters(), *model.flows.parameters()]:
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("image_size", [(64, 64), (48, 80), (100, 36)])
def test_eval_output_is_the_papers_map_computed_the_reference_way(image_size: tuple[int, int]) -> None:
    model = _perturbed_model().eval()
    images = torch.randn(2, 3, *image_size)
    with torch.no_grad():
        output = model(images)
        # The reference: FrEIA's full forward (with log-Jacobians), then the definition scale by scale.
        latents = [flow.inn(feature)[0] for flow, feature in zip(model.flows, model.features(images), strict=True)]
    expected = torch.stack(
        [
            F.interpolate(
                -torch.exp(-0.5 * (latent**2).mean(dim=1, keepdim=True)),
                size=image_size,
                mode="bilinear",
                align_corners=False,
            )
            for latent in latents
        ]
    ).mean(dim=0)
    assert isinstance(output, InferenceBatch)
    assert output.anomaly_map.shape == (2, 1, *image_size)
    assert output.anomaly_map.std() > 1e-3  # not a constant map
    torch.testing.assert_close(output.anomaly_map, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(output.pred_score, expected.flatten(1).amax(dim=1, keepdim=True), rtol=0, atol=1e-4)


def test_encode_returns_freias_latents_and_log_jacobians() -> None:
    model = _perturbed_model().train()
    images = torch.randn(2, 3, 64, 64)
    features = model.features(images)
    latents, log_jacobians = model.encode(features)
    for flow, feature, latent, log_jacobian in zip(model.flows, features, latents, log_jacobians, strict=True):
        expected_latent, expected_log_jacobian = flow.inn(feature)
        assert torch.equal(latent, expected_latent)
        assert torch.equal(log_jacobian, expected_log_jacobian)
        assert latent.requires_grad


def test_decode_inverts_the_eval_latents() -> None:
    model = _perturbed_model().double().eval()
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        features = model.features(images)
        latents = [flow.latent(feature) for flow, feature in zip(model.flows, features, strict=True)]
        restored = model.decode(latents)
    for original, back in zip(features, restored, strict=True):
        torch.testing.assert_close(back, original, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def active_model() -> Fastflow2DModel:
    """A model whose every weight is active: timm starts the residual branches at zero, hiding most of the field."""
    torch.manual_seed(3)
    model = Fastflow2DModel(resolve("resnet18", flow_steps=2, input_size=(96, 128)), pre_trained=False).eval()
    with torch.no_grad():
        for name, parameter in model.feature_extractor.named_parameters():
            if parameter.dim() == 1 and name.endswith("weight"):
                parameter.fill_(1.0)
        for parameter in [*model.flows.parameters(), *model.norms.parameters()]:
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def test_frames_over_the_pixel_budget_score_in_tiles_equal_to_the_whole_frame(
    active_model: Fastflow2DModel, caplog: pytest.LogCaptureFixture
) -> None:
    images = torch.randn(2, 3, 250, 330)
    with torch.no_grad():
        whole = active_model(images)
        active_model.pixel_budget = 256 * 256
        try:
            with caplog.at_level("INFO", logger="anomalib_fastflow2d"):
                tiled = active_model(images)
        finally:
            active_model.pixel_budget = 4 * 1024 * 1024

    assert "Computing features of 250x330 frames in tiles of up to 256 px overlapping by 112 px" in caplog.text
    assert (tiled.anomaly_map - whole.anomaly_map).abs().max() <= 1e-4
    assert (tiled.pred_score - whole.pred_score).abs().max() <= 1e-4


def test_a_pixel_budget_too_small_for_one_tile_is_named_with_its_minimum(active_model: Fastflow2DModel) -> None:
    active_model.check_pixel_budget((96, 128))  # fits whole: nothing to measure
    small = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False, pixel_budget=128 * 128)
    with pytest.raises(ValueError, match=r"Set pixel_budget to at least 57600"):
        small.check_pixel_budget((256, 256))


@pytest.mark.parametrize("feature_norm", ["position", "channel"])
def test_training_crops_are_the_whole_frames_normalised_features_at_their_place(feature_norm: str) -> None:
    torch.manual_seed(4)
    config = resolve("resnet18", flow_steps=2, feature_norm=feature_norm, input_size=(64, 96))
    model = Fastflow2DModel(config, pre_trained=False)
    with torch.no_grad():
        for parameter in model.norms.parameters():
            parameter.add_(torch.randn_like(parameter))
        backbone_features = model.backbone_features(torch.randn(3, 3, 64, 96))
        whole = model.normalise(backbone_features)
        crops = model.normalise_crops(backbone_features, (32, 48), torch.Generator().manual_seed(0))

    assert [tuple(crop.shape[-2:]) for crop in crops] == [(8, 12), (4, 6), (2, 3)]
    places = set()
    for index in range(3):
        # The crop's place on the 16 px grid: where the coarsest crop matches the whole frame's features.
        top, left = next(
            (top, left)
            for top in range(0, 64 - 32 + 1, 16)
            for left in range(0, 96 - 48 + 1, 16)
            if torch.allclose(
                crops[2][index], whole[2][index, :, top // 16 : top // 16 + 2, left // 16 : left // 16 + 3], atol=1e-4
            )
        )
        places.add((top, left))
        for crop, full, stride in zip(crops, whole, [4, 8, 16], strict=True):
            window = full[index, :, top // stride :, left // stride :][:, : 32 // stride, : 48 // stride]
            # One layer_norm kernel over the channels-last features, or the steps apart: rounding differs by ~1e-5.
            torch.testing.assert_close(crop[index], window, rtol=1e-4, atol=1e-4)
    assert len(places) > 1  # each frame gets its own place
