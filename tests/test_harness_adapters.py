# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/adapters.py: settings from the presets, and both models built and run alike."""

import pytest
import torch

from anomalib_fastflow2d import PRESETS
from benchmarks.harness.adapters import Fastflow2DUnderTest, FastflowUnderTest, FlowSettings, flow_settings

TINY_FLOW = FlowSettings(
    backbone="resnet18", pre_trained=False, input_size=(64, 64), flow_steps=2, conv3x3_only=False, hidden_ratio=0.5
)


def test_flow_settings_default_to_the_preset_and_keep_every_value_given() -> None:
    preset = PRESETS["wide_resnet50_2"]
    flow = flow_settings("wide_resnet50_2")
    assert flow == FlowSettings(
        backbone="wide_resnet50_2",
        pre_trained=False,
        input_size=preset.input_size,
        flow_steps=preset.flow_steps,
        conv3x3_only=preset.conv3x3_only,
        hidden_ratio=preset.hidden_ratio,
    )
    given = flow_settings("resnet18", size=32, flow_steps=0, conv3x3_only=False, hidden_ratio=0.0)
    assert (given.input_size, given.flow_steps, given.conv3x3_only, given.hidden_ratio) == ((32, 32), 0, False, 0.0)


def test_flow_settings_refuse_an_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="Unknown backbone"):
        flow_settings("no_such_backbone")


def test_both_models_are_built_with_the_same_flow_settings() -> None:
    candidate = Fastflow2DUnderTest(TINY_FLOW, {"lr": 0.01}).module
    reference = FastflowUnderTest(TINY_FLOW).module
    assert candidate.lr == 0.01
    assert tuple(candidate.input_size) == tuple(reference.input_size) == TINY_FLOW.input_size
    assert len(candidate.model.flows) == len(reference.model.fast_flow_blocks) == 3
    assert len(candidate.model.flows[0].inn.module_list) == len(reference.model.fast_flow_blocks[0].module_list) == 2
    assert reference.conv3x3_only is candidate.model.conv3x3_only is False
    assert reference.hidden_ratio == candidate.model.hidden_ratio == 0.5
    assert _parameters(candidate.model.flows) == _parameters(reference.model.fast_flow_blocks)


def _parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("adapter", [Fastflow2DUnderTest, FastflowUnderTest])
def test_each_model_infers_maps_and_computes_a_finite_loss(adapter: type) -> None:
    model = adapter(TINY_FLOW)
    images = torch.rand(2, 3, *TINY_FLOW.input_size, generator=torch.Generator().manual_seed(0))
    model.module.train()
    loss = model.training_loss(images)
    assert loss.shape == ()
    assert loss.isfinite()
    model.module.eval()
    with torch.inference_mode():
        output = model.infer(images)
    assert output.anomaly_map.shape == (2, 1, *TINY_FLOW.input_size)
    assert output.pred_score.numel() == 2  # (N,) for Fastflow2D, (N, 1) for Fastflow
    assert output.pred_score.isfinite().all()
