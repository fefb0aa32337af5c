# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Which parts of an exported Fastflow2D graph need float32, and marking them so that OpenVINO keeps them there.

The flows' latents need more than 8 bits, and more than bfloat16's 3 significant digits: every coupling's output
goes through 1x1 convolutions by blocks of a permutation matrix, and the anomaly map is ``exp`` of their mean
square. INT8 quantisation leaves these nodes out (an NNCF ignored scope), and every OpenVINO export marks them
``precise`` so that the CPU plugin's bfloat16 default keeps them in float32 while the subnets' convolutions run in
bfloat16.
"""

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openvino import Model, Node


def precision_sensitive_nodes(model: "Model") -> list["Node"]:
    """The nodes that need float32: the flows from their input on, but the subnets' convolutions.

    That is the flows' input (the features' normalisation), the first coupling's split, the soft clamps (``tanh``),
    ``exp`` and affine updates, the channel permutations (1x1 convolutions by 0/1 blocks of a permutation matrix,
    which carry the whole latent, and their sums), the latent squares, their channel mean and ``exp``, the map's
    resize, the image score and the normalisation. Found from the graph's ``Tanh`` nodes, which only the couplings
    have: the first coupling's subnet input comes from a split of the flow's input, and everything downstream of the
    flows' inputs is taken. So it needs no node names and holds for every backbone. The subnets' convolutions (and
    the ReLUs between them) hold almost all of the flows' arithmetic and tolerate low precision.
    """
    soft_clamps = [node for node in model.get_ordered_ops() if node.get_type_name() == "Tanh"]
    pending = soft_clamps + [_block_input(node) for node in soft_clamps]
    reached: dict[str, Node] = {}
    while pending:
        node = pending.pop()
        if node.get_friendly_name() in reached:
            continue
        reached[node.get_friendly_name()] = node
        pending.extend(target.get_node() for output in node.outputs() for target in output.get_target_inputs())
    return [
        node
        for node in reached.values()
        if node.get_type_name() not in _NOT_SENSITIVE
        and (node.get_type_name() != "Convolution" or _is_channel_selection(node))
    ]


def _block_input(soft_clamp: "Node") -> "Node":
    """The first node of a flow's input, found upstream of its first coupling's ``Tanh`` (``tanh`` itself if none).

    The path is ``split -> conv -> relu -> conv -> tanh``, with INT8's quantisers in between; later couplings take
    their halves from the previous one's convolutions, which are downstream of the flow's input anyway. Where the
    split's input is a normalisation (``MVN`` and its affine), its start is returned instead: the backbone's
    features are normalised there, so rounding them before it would be magnified.
    """
    node = soft_clamp
    for _ in range(_MAX_SUBNET_DEPTH):
        if node.get_input_size() == 0:  # a later coupling's path reached a constant or the graph's input
            break
        node = node.input_value(0).get_node()
        if node.get_type_name() in {"Split", "VariadicSplit"}:
            block_input = node.input_value(0).get_node()
            normalisation = block_input
            for _ in range(len(_NORMALISATION)):
                if normalisation.get_type_name() == "MVN":
                    producer = normalisation.input_value(0).get_node()
                    return producer if producer.get_type_name() == "Reshape" else normalisation
                if normalisation.get_type_name() not in _NORMALISATION:
                    break
                normalisation = normalisation.input_value(0).get_node()
            return block_input
    return soft_clamp


_NORMALISATION = ("Add", "Multiply", "Reshape", "MVN")
"""Node types of a normalisation with an affine, as ``GroupNorm`` exports: reshape, ``MVN``, reshape, scale, shift."""

_MAX_SUBNET_DEPTH = 12
"""Nodes searched upstream of a coupling's ``tanh`` for its split: the subnet's four, quantisers, and slack."""

_NOT_SENSITIVE = frozenset({"Result", "FakeQuantize", "Relu"})
"""Node types never marked: outputs, INT8's quantisers (the low-precision part by design), and the subnets' ReLUs,
which are exact in any precision and sit between two low-precision convolutions: a mark there would only add
conversions around them."""


def _is_channel_selection(convolution: "Node") -> bool:
    """Whether a convolution's weights are a constant 0/1 block of a permutation matrix.

    That is at most one 1 per row and per column, so that each output channel is one input channel or zero.

    FP16 weights reach the convolution through the ``Convert`` that decompresses them (``Constant -> Convert ->
    Convolution``); 0 and 1 are exact in float16, so the matrix is read from the constant behind it.
    """
    weights = convolution.input_value(1).get_node()
    if weights.get_type_name() == "Convert":
        weights = weights.input_value(0).get_node()
    if weights.get_type_name() != "Constant":
        return False
    matrix = weights.get_data().reshape(weights.get_output_shape(0)[0], -1)
    return (
        bool(((matrix == 0) | (matrix == 1)).all())
        and bool((matrix.sum(axis=1) <= 1).all())
        and bool((matrix.sum(axis=0) <= 1).all())
    )


def mark_precision_sensitive(model_file: Path, compress_to_fp16: bool) -> None:
    """Rewrite an IR with :func:`precision_sensitive_nodes` marked to run in their own precision (float32).

    The mark is OpenVINO's ``precise`` runtime attribute, which the CPU plugin honours when it lowers a model to
    bfloat16 (it is saved as ``DisablePrecisionConversion``). The plugin converts ``Interpolate`` v11 nodes into
    new nodes without the mark, so marked resizes are rebuilt as the equivalent ``Interpolate`` v4 first.
    """
    import openvino  # noqa: PLC0415 - only needed for OpenVINO export

    model = openvino.Core().read_model(model_file)
    for node in precision_sensitive_nodes(model):
        if node.get_type_name() == "Interpolate" and node.get_type_info().version_id == "opset11":
            node = _interpolate_v4(node)  # noqa: PLW2901 - the replacement is the node to mark
        node.get_rt_info()["precise_0"] = ""
    model.validate_nodes_and_infer_types()
    # The weights file is memory-mapped by read_model: write beside it, then rename over it.
    marked_file = model_file.with_name(f"{model_file.stem}.marked.xml")
    openvino.save_model(model, marked_file, compress_to_fp16=compress_to_fp16)
    marked_file.with_suffix(".bin").replace(model_file.with_suffix(".bin"))
    marked_file.replace(model_file)


def _interpolate_v4(node: "Node") -> "Node":
    """Replace an ``Interpolate`` v11 with sizes (as ONNX ``Resize`` converts) by the same resize as v4."""
    import numpy as np  # noqa: PLC0415
    from openvino import opset1, opset10  # noqa: PLC0415

    attributes = node.get_attributes()
    if attributes["shape_calculation_mode"] != "sizes" or node.get_input_size() != len(("data", "sizes")):
        msg = f"Expected a resize to sizes over all axes, as ONNX Resize converts, got {node} with {attributes}."
        raise ValueError(msg)
    sizes = node.input_value(1)
    rank = sizes.get_partial_shape()[0].get_length()
    axes = opset1.constant(np.arange(rank, dtype=np.int64))
    replacement = opset10.interpolate(
        node.input_value(0),
        sizes,
        opset1.constant(np.ones(rank, dtype=np.float32)),
        attributes["mode"],
        "sizes",
        pads_begin=list(attributes["pads_begin"]),
        pads_end=list(attributes["pads_end"]),
        coordinate_transformation_mode=attributes["coordinate_transformation_mode"],
        nearest_mode=attributes["nearest_mode"],
        antialias=attributes["antialias"],
        cube_coeff=attributes["cube_coeff"],
        axes=axes,
    )
    replacement.set_friendly_name(node.get_friendly_name())
    node.output(0).replace(replacement.output(0))
    return replacement
