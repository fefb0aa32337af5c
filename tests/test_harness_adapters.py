# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/adapters.py: settings from the presets, and both models built and run alike."""

import pytest
import torch

from anomalib_fastflow2d import PRESETS, resolve
from benchmarks.harness.adapters import Fastflow2DUnderTest, FastflowUnderTest, FlowSettings, flow_settings

TINY_FLOW = FlowSettings(
    config=resolve("resnet18", flow_steps=2, conv3x3_only=False, hidden_ratio=0.5),
    pre_trained=False,
    input_size=(64, 64),
)


def test_flow_settings_default_to_the_preset_and_keep_every_value_given() -> None:
    preset = PRESETS["wide_resnet50_2"]
    flow = flow_settings("wide_resnet50_2")
    assert flow == FlowSettings(config=resolve("wide_resnet50_2"), pre_trained=False, input_size=preset.input_size)
    assert (flow.config.flow_steps, flow.config.conv3x3_only, flow.config.hidden_ratio) == (8, False, 1.0)
    given = flow_settings("resnet18", size=32, flow_steps=1, conv3x3_only=False, hidden_ratio=0.25)
    assert (given.input_size, given.config.flow_steps, given.config.conv3x3_only) == ((32, 32), 1, False)
    assert given.config.hidden_ratio == 0.25
    with pytest.raises(ValueError, match="hidden_ratio must be positive"):
        flow_settings("resnet18", hidden_ratio=0.0)


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
    assert reference.conv3x3_only is candidate.model.config.conv3x3_only is False
    assert reference.hidden_ratio == candidate.model.config.hidden_ratio == 0.5
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
    assert output.pred_score.shape == (2, 1)  # (N, 1), as anomalib's models give
    assert output.pred_score.isfinite().all()
