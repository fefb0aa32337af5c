# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

from pathlib import Path

import numpy as np
import openvino
import pytest
from openvino import opset13 as ops

from anomalib_fastflow2d.openvino_precision import mark_precision_sensitive, precision_sensitive_nodes

RNG = np.random.default_rng(0)


def _coupling_graph(selection: np.ndarray) -> openvino.Model:
    """A coupling as Fastflow2D exports it, with a map resized to dynamic sizes (a model without a resize first).

    features -> split -> conv -> relu -> conv -> tanh -> exp * x2 -> 1x1 conv by ``selection`` -> resize.
    """
    features = ops.parameter([1, 4, -1, -1], openvino.Type.f32, name="features")
    passive, active = ops.variadic_split(features, 1, [2, 2]).outputs()
    hidden = ops.relu(
        ops.convolution(passive, RNG.normal(size=(2, 2, 3, 3)).astype(np.float32), [1, 1], [1, 1], [1, 1], [1, 1])
    )
    log_scale = ops.convolution(
        hidden, RNG.normal(size=(2, 2, 3, 3)).astype(np.float32), [1, 1], [1, 1], [1, 1], [1, 1]
    )
    active_out = ops.multiply(active, ops.exp(ops.tanh(log_scale)))
    latent = ops.convolution(ops.concat([passive, active_out], 1), selection, [1, 1], [0, 0], [0, 0], [1, 1])
    sizes = ops.shape_of(features)  # the map resized to the input's own size, a dynamic shape
    resized = ops.interpolate(latent, sizes, "linear", "sizes", coordinate_transformation_mode="half_pixel")
    return openvino.Model([ops.result(resized)], [features])


def _marked_types(model: openvino.Model) -> dict[str, set[str]]:
    marked: dict[str, set[str]] = {"marked": set(), "unmarked": set()}
    for node in model.get_ordered_ops():
        key = (
            "marked"
            if any(name.startswith("DisablePrecisionConversion") for name in node.get_rt_info())
            else "unmarked"
        )
        marked[key].add(node.get_type_name())
    return marked


def test_the_flows_nodes_are_marked_but_the_subnets_convolutions_and_relus(tmp_path: Path) -> None:
    permutation = np.eye(4, dtype=np.float32)[[2, 0, 3, 1]].reshape(4, 4, 1, 1)
    path, graph = tmp_path / "model.xml", _coupling_graph(permutation)
    openvino.save_model(graph, path, compress_to_fp16=False)
    features = RNG.normal(size=(1, 4, 5, 6)).astype(np.float32)
    expected = openvino.Core().compile_model(graph, "CPU")(features)[0]
    mark_precision_sensitive(path, compress_to_fp16=False)
    model = openvino.Core().read_model(path)
    types = _marked_types(model)
    assert {"VariadicSplit", "Tanh", "Exp", "Multiply", "Concat", "Interpolate"} <= types["marked"]
    assert "Relu" in types["unmarked"]
    assert "Relu" not in types["marked"]
    convolutions = [node for node in model.get_ordered_ops() if node.get_type_name() == "Convolution"]
    marked = [
        any(name.startswith("DisablePrecisionConversion") for name in node.get_rt_info()) for node in convolutions
    ]
    assert marked == [False, False, True]  # the subnet's two, then the permutation
    # The CPU plugin drops the mark from Interpolate v11, so the marked resize is the equivalent v4.
    (resize,) = [node for node in model.get_ordered_ops() if node.get_type_name() == "Interpolate"]
    assert resize.get_type_info().version_id == "opset4"
    np.testing.assert_allclose(
        openvino.Core().compile_model(path, "CPU")(features)[0], expected, rtol=0
    )  # exact: the marks change no value at f32


@pytest.mark.parametrize(
    ("weights", "marked"),
    [
        (np.eye(4)[[1, 3]], True),  # rows of a permutation: two of the next coupling's channels
        (np.eye(4)[[1, 3]] * np.array([[1], [0]]), True),  # a row of zeros: that channel comes from the other half
        (np.eye(4)[[1, 1]], False),  # one input twice: not a permutation's
        (np.eye(4)[[1, 3]] * 0.5, False),  # a scaled selection rounds in low precision
    ],
)
def test_only_blocks_of_permutation_matrices_are_marked_among_convolutions(weights: np.ndarray, marked: bool) -> None:
    selection = np.zeros((4, 4, 1, 1), dtype=np.float32)
    selection[:2, :, 0, 0] = weights
    selection[2:, :, 0, 0] = np.eye(4)[[0, 2]]
    model = _coupling_graph(selection)
    sensitive = {node.get_friendly_name() for node in precision_sensitive_nodes(model)}
    last_convolution = [node for node in model.get_ordered_ops() if node.get_type_name() == "Convolution"][-1]
    assert (last_convolution.get_friendly_name() in sensitive) is marked
