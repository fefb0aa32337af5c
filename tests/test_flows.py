# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import copy
import pickle

import pytest
import torch
from FrEIA.modules import AllInOneBlock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomalib_fastflow2d import flows
from anomalib_fastflow2d.coupling import CHANNELS_LAST_GATHER_MIN
from anomalib_fastflow2d.flows import AFFINE_CLAMPING, Flow2D, kernel_pattern, subnet_constructor


@pytest.fixture
def flow() -> Flow2D:
    torch.manual_seed(0)
    flow = Flow2D(channels=6, flow_steps=4, conv3x3_only=False, hidden_ratio=1.0)
    # Move away from the identity-like initialisation so the test exercises real scales and shifts.
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return flow.double()


def test_inverse_of_forward_is_identity(flow: Flow2D) -> None:
    features = torch.randn(3, 6, 9, 11, dtype=torch.float64)
    latent, _ = flow(features)
    assert not torch.allclose(latent, features, atol=1e-2)
    assert torch.allclose(flow.inverse(latent), features, atol=1e-4)
    assert torch.allclose(flow(flow.inverse(features))[0], features, atol=1e-4)


def test_latent_is_forwards_latent_without_the_log_jacobian(flow: Flow2D) -> None:
    features = torch.randn(3, 6, 9, 11, dtype=torch.float64)
    latent, _ = flow(features)
    torch.testing.assert_close(flow.latent(features), latent, rtol=1e-12, atol=1e-12)
    channels_last = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(flow.latent(channels_last), latent, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv3x3_only", [False, True])
def test_float32_latent_is_as_close_to_the_float64_truth_as_freias(conv3x3_only: bool) -> None:
    torch.manual_seed(1)
    flow = Flow2D(channels=64, flow_steps=8, conv3x3_only=conv3x3_only, hidden_ratio=1.0)
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    features = 2 * torch.randn(2, 64, 12, 12)
    with torch.no_grad():
        truth, _ = copy.deepcopy(flow).double().inn(features.double())
        freia, _ = flow.inn(features)
        forward, _ = flow(features)
        latent = flow.latent(features.contiguous(memory_format=torch.channels_last))
    freia_error = ((freia.double() - truth).abs() / (1 + truth.abs())).max().item()
    assert freia_error < 1e-5
    for ours in (forward, latent):
        assert ((ours.double() - truth).abs() / (1 + truth.abs())).max().item() < 2 * freia_error


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_under_bfloat16_autocast_keeps_the_coupling_in_float32_as_training_does(channels_last: bool) -> None:
    torch.manual_seed(1)
    flow = Flow2D(channels=64, flow_steps=8, conv3x3_only=False, hidden_ratio=1.0).eval()
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    features = 2 * torch.randn(2, 64, 12, 12)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        truth, _ = flow(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            training, _ = flow(features)
            inference = flow.latent(features)
    assert training.dtype == inference.dtype == torch.float32
    # The mean error: the largest one of a bfloat16 convolution varies from run to run on oneDNN.
    training_error = (training - truth).abs().mean().item()
    # Writing the update into the bfloat16 convolution output instead gave 2.2x training's error here.
    assert 0 < (inference - truth).abs().mean().item() < 1.3 * training_error


def test_forward_log_jacobian_and_gradients_equal_freias(flow: Flow2D) -> None:
    features = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    parameters = [parameter for parameter in flow.parameters() if parameter.requires_grad]
    outputs = {"ours": flow(features), "FrEIA": flow.inn(features)}
    gradients = {
        name: torch.autograd.grad(latent.square().sum() - log_jacobian.sum(), parameters)
        for name, (latent, log_jacobian) in outputs.items()
    }
    torch.testing.assert_close(outputs["ours"], outputs["FrEIA"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradients["ours"], gradients["FrEIA"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels", [6, CHANNELS_LAST_GATHER_MIN])  # permuted by a 1x1 convolution, by a gather
def test_channels_last_features_stay_channels_last_through_the_flow(channels: int) -> None:
    torch.manual_seed(2)
    flow = Flow2D(channels=channels, flow_steps=2, conv3x3_only=False, hidden_ratio=0.5).double()
    features = torch.randn(2, channels, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        latent = flow.latent(features)
        forward, _ = flow(features)
        freia, _ = flow.inn(features.contiguous())
    assert latent.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(latent, freia, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward, freia, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [7, 64])
def test_exported_latent_equals_the_eager_latent(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    flow = Flow2D(channels=channels, flow_steps=4, conv3x3_only=False, hidden_ratio=1.0)
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
        features = torch.randn(2, channels, 9, 8)
        eager = flow.latent(features)
        monkeypatch.setattr(flows, "exporting", lambda: True)  # the graph torch's exporters trace
        exported = flow.latent(features)
    torch.testing.assert_close(exported, eager, rtol=1e-6, atol=1e-6)


def test_latent_gradients_match_freias(flow: Flow2D) -> None:
    features = torch.randn(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    (reference,) = torch.autograd.grad(flow(features)[0].square().sum(), features)
    (gradient,) = torch.autograd.grad(flow.latent(features).square().sum(), features)
    torch.testing.assert_close(gradient, reference, rtol=1e-10, atol=1e-10)


def test_log_jacobian_matches_brute_force_jacobian(flow: Flow2D) -> None:
    features = torch.randn(1, 6, 3, 2, dtype=torch.float64)
    _, log_jacobian = flow(features)

    def flat_forward(x: torch.Tensor) -> torch.Tensor:
        return flow(x.reshape(features.shape))[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(flat_forward, features.reshape(-1))
    sign, brute_force = torch.linalg.slogdet(jacobian)
    assert sign.item() != 0
    assert log_jacobian.item() == pytest.approx(brute_force.item(), abs=1e-6)


def test_log_jacobian_is_per_sample(flow: Flow2D) -> None:
    features = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    _, batch_log_jacobian = flow(features)
    singles = torch.cat([flow(features[i : i + 1])[1] for i in range(4)])
    assert batch_log_jacobian.shape == (4,)
    assert torch.allclose(batch_log_jacobian, singles)


def test_any_spatial_size_runs(flow: Flow2D) -> None:
    for height, width in [(1, 1), (7, 3), (16, 24)]:
        latent, log_jacobian = flow(torch.randn(2, 6, height, width, dtype=torch.float64))
        assert latent.shape == (2, 6, height, width)
        assert torch.isfinite(log_jacobian).all()


@pytest.mark.parametrize(
    ("steps", "conv3x3_only", "expected"),
    [(4, False, [3, 1, 3, 1]), (3, True, [3, 3, 3]), (1, False, [3])],
)
def test_kernel_pattern(steps: int, conv3x3_only: bool, expected: list[int]) -> None:
    assert kernel_pattern(steps, conv3x3_only) == expected
    flow = Flow2D(channels=4, flow_steps=steps, conv3x3_only=conv3x3_only, hidden_ratio=0.5)
    kernels = [block.subnet[0].kernel_size[0] for block in flow.inn.module_list]
    hidden = [block.subnet[0].out_channels for block in flow.inn.module_list]
    assert kernels == expected
    assert hidden == [1] * steps  # 2 input channels to the subnet * 0.5


def test_flow_pickles_and_keeps_freias_global_scale(flow: Flow2D) -> None:
    freia_block = AllInOneBlock(
        [(6, 1, 1)], subnet_constructor=subnet_constructor(3, 1.0), affine_clamping=AFFINE_CLAMPING
    )
    pre_activation = torch.linspace(-30, 30, 61, dtype=torch.float64)
    block = flow.inn.module_list[0]
    torch.testing.assert_close(
        block.global_scale_activation(pre_activation), freia_block.global_scale_activation(pre_activation)
    )

    features = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    # anomalib's torch export pickles the whole model; these bytes come from this test.
    restored = pickle.loads(pickle.dumps(flow))  # noqa: S301
    torch.testing.assert_close(restored(features), flow(features))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.integers(min_value=2, max_value=12),
    height=st.integers(min_value=1, max_value=9),
    width=st.integers(min_value=1, max_value=9),
    batch=st.integers(min_value=1, max_value=4),
    flow_steps=st.integers(min_value=1, max_value=3),
    conv3x3_only=st.booleans(),
    hidden_ratio=st.floats(min_value=0.1, max_value=2.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_shape_stays_invertible_with_finite_log_jacobians(
    channels: int,
    height: int,
    width: int,
    batch: int,
    flow_steps: int,
    conv3x3_only: bool,
    hidden_ratio: float,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    flow = Flow2D(channels, flow_steps, conv3x3_only, hidden_ratio).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:  # the fixed permutations are parameters too, but never trained
                parameter.add_(0.3 * torch.randn_like(parameter))
    features = 3 * torch.randn(batch, channels, height, width, dtype=torch.float64)
    latent, log_jacobian = flow(features)
    assert latent.shape == features.shape
    assert log_jacobian.shape == (batch,)
    assert torch.isfinite(latent).all()
    assert torch.isfinite(log_jacobian).all()
    assert torch.allclose(flow.inverse(latent), features, atol=1e-6)
    torch.testing.assert_close(flow.latent(features), latent, rtol=1e-10, atol=1e-10)


def test_folded_parameters_follow_optimizer_steps_loads_and_pickling(flow: Flow2D) -> None:
    features = torch.randn(2, 6, 5, 4, dtype=torch.float64)

    def assert_latent_is_forwards() -> None:
        with torch.no_grad():
            torch.testing.assert_close(flow.latent(features), flow(features)[0], rtol=1e-12, atol=1e-12)

    assert_latent_is_forwards()
    folded = flow._folded
    assert_latent_is_forwards()
    assert flow._folded is folded  # reused while no parameter changed

    optimizer = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=0.1)
    latent, log_jacobian = flow(features)
    (latent.square().sum() - log_jacobian.sum()).backward()
    optimizer.step()
    assert_latent_is_forwards()
    assert flow._folded is not folded

    other = Flow2D(channels=6, flow_steps=4, conv3x3_only=False, hidden_ratio=1.0).double()
    flow.load_state_dict(other.state_dict())
    assert_latent_is_forwards()

    restored = pickle.loads(pickle.dumps(flow))  # noqa: S301 - our own object
    assert restored._folded == []
    with torch.no_grad():
        torch.testing.assert_close(restored.latent(features), flow.latent(features), rtol=0, atol=0)


def test_flow_built_and_reloaded_inside_inference_mode_follows_its_weights() -> None:
    # A serving process may build or load the model under torch.inference_mode(): its parameters then keep no
    # version counter, which the folded-parameter cache reads elsewhere.
    torch.manual_seed(0)
    other = Flow2D(channels=6, flow_steps=2, conv3x3_only=True, hidden_ratio=1.0).double()
    features = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    with torch.inference_mode():
        flow = Flow2D(channels=6, flow_steps=2, conv3x3_only=True, hidden_ratio=1.0).double()
        torch.testing.assert_close(flow.latent(features), flow(features)[0], rtol=1e-12, atol=1e-12)
        flow.load_state_dict(other.state_dict())
        torch.testing.assert_close(flow.latent(features), other(features)[0], rtol=1e-12, atol=1e-12)
