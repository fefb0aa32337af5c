# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import dataclasses
import time
from dataclasses import FrozenInstanceError

import pytest

from anomalib_fastflow2d import PRESETS, BackboneKind, Fastflow2DModel, resolve, resolve_preset
from anomalib_fastflow2d.presets import ARCHITECTURE_NAMES, DEFAULT_CNN_PRESET, FeatureNorm, FlowConfig

# What the paper's presets must build: (channels per scale, strides, steps, kernels of the first two steps).
EXPECTED = {
    "resnet18": ([64, 128, 256], [4, 8, 16], 8, [3, 3]),
    "wide_resnet50_2": ([256, 512, 1024], [4, 8, 16], 8, [3, 1]),
    "deit_base_distilled_patch16_384": ([768], [16], 20, [3, 3]),
    "cait_m48_448": ([768], [16], 20, [3, 1]),
}


def test_every_preset_is_covered() -> None:
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("backbone", sorted(PRESETS))
def test_preset_builds_with_expected_scales_steps_and_kernels(backbone: str) -> None:
    channels, strides, steps, first_kernels = EXPECTED[backbone]
    model = Fastflow2DModel(resolve(backbone), pre_trained=False)
    assert model.feature_extractor.channels == channels
    assert model.feature_extractor.strides == strides
    assert len(model.flows) == len(channels)
    for flow, num_channels in zip(model.flows, channels, strict=True):
        assert len(flow.inn.module_list) == steps
        assert flow.kernel_sizes[:2] == first_kernels
        hidden = flow.inn.module_list[0].subnet[0].out_channels
        assert hidden == int((num_channels - num_channels // 2) * PRESETS[backbone].hidden_ratio)


def test_explicit_arguments_override_the_preset() -> None:
    config = resolve("wide_resnet50_2", flow_steps=3, conv3x3_only=True, hidden_ratio=0.5, feature_stages=[2, 3])
    model = Fastflow2DModel(config, pre_trained=False)
    assert model.feature_extractor.channels == [512, 1024]
    assert [len(flow.inn.module_list) for flow in model.flows] == [3, 3]
    assert model.flows[0].kernel_sizes == [3, 3, 3]
    assert model.flows[0].inn.module_list[0].subnet[0].out_channels == 128


def test_other_timm_cnn_gets_the_default_stages() -> None:
    assert resolve_preset("resnet10t") is DEFAULT_CNN_PRESET
    model = Fastflow2DModel(resolve("resnet10t", flow_steps=2), pre_trained=False)
    assert model.feature_extractor.strides == [4, 8, 16]
    assert model.flows[0].kernel_sizes == [3, 1]


def test_vit_presets_use_one_scale_after_the_papers_block() -> None:
    assert PRESETS["deit_base_distilled_patch16_384"].kind is BackboneKind.VIT
    assert PRESETS["deit_base_distilled_patch16_384"].feature_stages == (7,)
    assert PRESETS["cait_m48_448"].feature_stages == (40,)
    assert PRESETS["cait_m48_448"].input_size == (448, 448)


def test_unknown_backbone_lists_the_presets_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match="Unknown backbone 'resnet_eighteen'") as error:
        Fastflow2DModel(resolve("resnet_eighteen"), pre_trained=False)
    assert time.perf_counter() - start < 1.0
    for name in PRESETS:
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"flow_steps": 0}, "flow_steps"),
        ({"hidden_ratio": 0.0}, "hidden_ratio"),
        ({"feature_stages": []}, "feature_stages"),
        ({"feature_norm": "batch"}, "feature_norm"),
        ({"input_size": (0, 64)}, "input_size"),
    ],
)
def test_bad_flow_arguments_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Fastflow2DModel(resolve("resnet18", **kwargs), pre_trained=False)


def test_impossible_feature_stages_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match="feature_stages"):
        Fastflow2DModel(resolve("resnet18", feature_stages=[7]), pre_trained=False)


def test_resolve_fills_in_the_preset_and_keeps_every_override() -> None:
    assert resolve("wide_resnet50_2") == FlowConfig(
        backbone="wide_resnet50_2",
        feature_stages=(1, 2, 3),
        flow_steps=8,
        conv3x3_only=False,
        hidden_ratio=1.0,
        feature_norm=FeatureNorm.POSITION,
        input_size=(256, 256),
    )
    config = resolve(
        "resnet18",
        feature_stages=[2, 3],
        flow_steps=3,
        conv3x3_only=False,
        hidden_ratio=0.5,
        feature_norm="channel",
        input_size=[96, 160],
    )
    assert dataclasses.astuple(config)[1:] == ((2, 3), 3, False, 0.5, FeatureNorm.CHANNEL, (96, 160))
    assert config.preset is PRESETS["resnet18"]


def test_flow_config_fields_are_the_one_list_of_architecture_names() -> None:
    config = resolve("resnet18", flow_steps=2)
    assert ARCHITECTURE_NAMES == (
        "backbone",
        "feature_stages",
        "flow_steps",
        "conv3x3_only",
        "hidden_ratio",
        "feature_norm",
        "input_size",
    )
    assert config.as_hparams() == {
        "backbone": "resnet18",
        "feature_stages": [1, 2, 3],
        "flow_steps": 2,
        "conv3x3_only": True,
        "hidden_ratio": 1.0,
        "feature_norm": "position",
        "input_size": [256, 256],
    }
    with pytest.raises(FrozenInstanceError):
        config.flow_steps = 3  # type: ignore[misc]


def test_vit_presets_refuse_a_feature_norm_they_would_ignore() -> None:
    assert resolve("deit_base_distilled_patch16_384").feature_norm is None
    with pytest.raises(ValueError, match="CNN backbones only"):
        resolve("deit_base_distilled_patch16_384", feature_norm="position")
