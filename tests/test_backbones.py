# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import copy
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from torch import nn

from anomalib_fastflow2d import (
    BackboneKind,
    BackboneWeightsUnavailableError,
    Fastflow2DModel,
    FeatureExtractor,
    resolve,
)
from anomalib_fastflow2d.backbones import fold_batch_norms


def _resnet18(**kwargs: object) -> FeatureExtractor:
    return FeatureExtractor("resnet18", BackboneKind.CNN, (1, 2, 3), **kwargs)


def test_offline_pretrained_request_fails_at_once_naming_both_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsUnavailableError) as error:
        _resnet18(pre_trained=True)
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message
    assert "backbone_weights=" in message
    assert "pre_trained=False" in message


def test_unreachable_hub_fails_at_once_without_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # the discard port: connection refused
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsUnavailableError, match=r"backbone_weights=.*pre_trained=False"):
        _resnet18(pre_trained=True)
    assert time.perf_counter() - start < 5.0
    assert constants.HF_HUB_OFFLINE is False  # the cache-only switch is undone


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)

    extractor = _resnet18(pre_trained=False, backbone_weights=weights)
    loaded = extractor.network.state_dict()
    assert torch.equal(loaded["conv1.weight"], source.state_dict()["conv1.weight"])
    assert torch.equal(loaded["layer3.1.bn2.running_var"], source.state_dict()["layer3.1.bn2.running_var"])


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"backbone_weights file .*missing\.pth"):
        _resnet18(pre_trained=True, backbone_weights=tmp_path / "missing.pth")


def test_weights_of_another_backbone_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), weights)
    with pytest.raises(ValueError, match="does not fit backbone 'resnet18'"):
        _resnet18(pre_trained=True, backbone_weights=weights)


def test_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False)
    model.train()
    assert not model.feature_extractor.training
    assert not any(module.training for module in model.feature_extractor.modules())
    assert model.flows.training

    latents, log_jacobians = model.encode(model.features(torch.randn(2, 3, 64, 64)))
    loss = sum(latent.square().sum() for latent in latents) - sum(log_jacobians).sum()
    loss.backward()
    assert all(parameter.grad is None for parameter in model.feature_extractor.parameters())
    assert all(parameter.grad is not None for parameter in model.flows.parameters() if parameter.requires_grad)
    assert all(parameter.grad is not None for parameter in model.norms.parameters())


def test_cait_refuses_other_input_sizes_with_the_size_it_needs() -> None:
    extractor = FeatureExtractor("cait_xxs24_224", BackboneKind.VIT, (3,), pre_trained=False)
    assert extractor.fixed_input_size == (224, 224)
    with pytest.raises(ValueError, match=r"only runs at input size \(224, 224\), got \(192, 320\)"):
        extractor(torch.randn(1, 3, 192, 320))
    assert extractor(torch.randn(1, 3, 224, 224))[0].shape == (1, 192, 14, 14)


def test_deit_runs_at_other_input_sizes() -> None:
    extractor = FeatureExtractor(
        "deit_tiny_distilled_patch16_224", BackboneKind.VIT, (7,), pre_trained=False, dynamic_size=True
    )
    assert extractor(torch.randn(1, 3, 192, 320))[0].shape == (1, 192, 12, 20)


def _randomise_batch_norms(network: nn.Module) -> None:
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()


def test_eager_features_fold_the_batch_norms_and_follow_loaded_statistics() -> None:
    torch.manual_seed(0)
    extractor = _resnet18(pre_trained=False)
    _randomise_batch_norms(extractor.network)
    keys = set(extractor.state_dict())
    images = torch.rand(2, 3, 64, 64)
    features = extractor(images)
    (folded,) = extractor._folded  # the copy that ran
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    assert set(extractor.state_dict()) == keys  # checkpoints keep timm's layout
    with torch.no_grad():
        unfolded = list(extractor.network(images))
    for got, want in zip(features, unfolded, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # New statistics (a checkpoint's, say) are folded anew.
    other = _resnet18(pre_trained=False)
    _randomise_batch_norms(other.network)
    extractor.load_state_dict(other.state_dict())
    for got, want in zip(extractor(images), other(images), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


class _NormRegisteredBesideItsConvolution(nn.Module):
    """A convolution registered just before a norm that normalises something else: not a pair to fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(images) + self.norm(images)]


def test_a_network_that_folding_would_change_runs_unfolded() -> None:
    extractor = _resnet18(pre_trained=False)
    extractor.network = _NormRegisteredBesideItsConvolution().eval()
    _randomise_batch_norms(extractor.network)
    assert fold_batch_norms(copy.deepcopy(extractor.network)) == 1  # it would pair them
    images = torch.rand(2, 3, 8, 8)
    (features,) = extractor(images)
    assert extractor._folded == [extractor.network]  # the probe refused the folded copy
    torch.testing.assert_close(features, extractor.network(images)[0].detach())
