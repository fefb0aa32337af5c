# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Export of Fastflow2D to PyTorch, ONNX and OpenVINO: the whole pipeline in one graph, and no half-written files.

The exported graph takes ``(N, 3, H, W)`` RGB images in ``[0, 1]`` of any batch size and resolution, and holds
everything between them and the prediction: the pre-processor's resize to ``input_size`` and ImageNet normalisation,
the backbone, the flows, the anomaly map, the image score, and the post-processor's thresholds and min-max
normalisation learned in validation. Its outputs are ``pred_score`` ``(N,)``, ``pred_label`` ``(N,)``,
``anomaly_map`` ``(N, 1, h, w)`` and ``pred_mask`` ``(N, 1, h, w)``, where ``(h, w)`` is ``input_size``.

anomalib's own exporter is used, with three changes:

- ONNX opset 18 by default. torch's exporter implements nothing lower, so anomalib's default of 14 makes it
  down-convert the graph, which fails and logs a traceback (the opset-18 graph is kept anyway).
- Files are written to a staging folder and moved into ``weights/<format>/`` only once complete, so a failed
  export never leaves files that look like a finished one.
- INT8 quantisation checks for its data before the slow export starts, and calibrates on the training images
  (anomalib calibrates on the validation set, which is often the test set).

The flows' latents need more than 8 bits, and more than bfloat16's 3 significant digits: every coupling's
output goes through a 1x1 permutation convolution, and the anomaly map is ``exp`` of their mean square. So the
precision-sensitive part of the graph (:func:`precision_sensitive_nodes`: every operation from the first
coupling's soft clamp on, except the subnets' convolutions) is marked in the IR to stay in float32 when OpenVINO's
CPU plugin runs the rest in bfloat16 (its default on CPUs with AVX512-BF16 or AMX), and INT8 quantisation leaves
it out. bfloat16 convolutions still move scores by several 1e-3; compile with :data:`OPENVINO_F32_CONFIG` for
results equal to PyTorch's (see ``docs/deployment.md``).

Examples:
    >>> from anomalib.engine import Engine
    >>> from anomalib_fastflow2d import Fastflow2D
    >>> Engine().export(Fastflow2D(), "openvino", ckpt_path="model.ckpt")  # doctest: +SKIP
    PosixPath('weights/openvino/model.xml')
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib.data import AnomalibDataModule, Batch
from anomalib.deploy.export import CompressionType, ExportType
from anomalib.models.components.base.export_mixin import ExportMixin

if TYPE_CHECKING:
    import torch
    from anomalib import TaskType
    from openvino import Model, Node
    from torchmetrics import Metric

ONNX_OPSET = 18
"""The lowest opset torch's ONNX exporter implements; a lower one triggers a failing down-conversion."""

OPENVINO_F32_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
"""OpenVINO compile config for full-precision inference; without it, bf16-capable CPUs run in bfloat16.

The IR cannot carry this: OpenVINO 2026.4 ignores ``INFERENCE_PRECISION_HINT`` under the model's
``runtime_options`` rt_info (only KV-cache and dynamic-quantisation options are read from there).
"""

QUANTISATIONS_NEEDING_DATA = frozenset({CompressionType.INT8_PTQ, CompressionType.INT8_ACQ})
"""Compressions that calibrate on images, so they need a datamodule."""


class Fastflow2DExportMixin(ExportMixin):
    """anomalib's export methods, with opset 18, staged writes and an early INT8 data check."""

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole Lightning module to ``weights/torch/<model_file_name>.pt`` for ``TorchInferencer``."""
        with _staged(export_root, ExportType.TORCH) as staging:
            staged_file = super().to_torch(staging, model_file_name)
        return _final_path(export_root, ExportType.TORCH, staged_file)

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,  # noqa: ANN401 - passed to torch.onnx.export, as in anomalib
    ) -> Path:
        """Export to ``weights/onnx/<model_file_name>.onnx``; batch, height and width are dynamic.

        Args:
            export_root: Folder that receives ``weights/onnx/``.
            model_file_name: File name without extension. Defaults to ``"model"``.
            input_size: Fix the input's ``(H, W)``; the graph resizes to the model's ``input_size`` either way.
                Defaults to ``None`` (dynamic).
            **kwargs: Passed to ``torch.onnx.export``; ``opset_version`` defaults to :data:`ONNX_OPSET`.
        """
        kwargs.setdefault("opset_version", ONNX_OPSET)
        with _staged(export_root, ExportType.ONNX) as staging:
            staged_file = super().to_onnx(staging, model_file_name, input_size, **kwargs)
        return _final_path(export_root, ExportType.ONNX, staged_file)

    def to_openvino(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        compression_type: CompressionType | None = None,
        datamodule: AnomalibDataModule | None = None,
        metric: "Metric | None" = None,
        task: "TaskType | None" = None,
        max_drop: float = 0.01,
        ov_kwargs: dict[str, Any] | None = None,
        onnx_kwargs: dict[str, Any] | None = None,
    ) -> Path:
        """Export to ``weights/openvino/<model_file_name>.xml`` and ``.bin``, optionally compressed.

        Args:
            export_root: Folder that receives ``weights/openvino/``.
            model_file_name: File name without extension. Defaults to ``"model"``.
            input_size: Fix the input's ``(H, W)``. Defaults to ``None`` (dynamic).
            compression_type: ``None`` (FP32), ``FP16`` weights, ``INT8`` weights, or ``INT8_PTQ``/``INT8_ACQ``
                quantisation calibrated on ``datamodule``'s training images. Defaults to ``None``.
            datamodule: Data for ``INT8_PTQ`` and ``INT8_ACQ``. Defaults to ``None``.
            metric: Metric that ``INT8_ACQ`` keeps within ``max_drop``. Defaults to ``None`` (image F1).
            task: Task type for ``INT8_ACQ``. Defaults to ``None`` (the datamodule's).
            max_drop: Largest metric drop ``INT8_ACQ`` accepts. Defaults to ``0.01``.
            ov_kwargs: Passed to ``openvino.convert_model``. Defaults to ``None``.
            onnx_kwargs: Passed to :meth:`to_onnx`. Defaults to ``None``.

        Raises:
            ValueError: ``INT8_PTQ`` or ``INT8_ACQ`` without a datamodule.
        """
        if compression_type is not None:
            compression_type = CompressionType(compression_type)
        if compression_type in QUANTISATIONS_NEEDING_DATA and datamodule is None:
            msg = (
                f"Compression {compression_type.value} calibrates on images, so it needs a datamodule: pass "
                "datamodule=... to Engine.export, or --data to `anomalib export`. FP16 and INT8 (weights only) need "
                "no data."
            )
            raise ValueError(msg)
        with _staged(export_root, ExportType.OPENVINO) as staging:
            staged_file = super().to_openvino(
                staging,
                model_file_name,
                input_size=input_size,
                compression_type=compression_type,
                datamodule=datamodule,
                metric=metric,
                task=task,
                max_drop=max_drop,
                ov_kwargs=ov_kwargs,
                onnx_kwargs=onnx_kwargs,
            )
            _mark_precision_sensitive(staged_file, compress_to_fp16=compression_type == CompressionType.FP16)
        return _final_path(export_root, ExportType.OPENVINO, staged_file)

    @staticmethod
    def _post_training_quantization_ov(model: "Model", datamodule: AnomalibDataModule | None = None) -> "Model":
        """Quantise to INT8 with NNCF, calibrated on the training images: normal ones, never the test set.

        The precision-sensitive nodes stay in float: quantising them (the permutation convolutions above all, which
        carry the whole latent) moved normalised scores by up to 0.22 and flipped up to 7 of 16 labels on photographs
        (``docs/deployment.md``).
        """
        import nncf  # noqa: PLC0415 - only needed for INT8

        if datamodule is None:
            msg = "INT8_PTQ needs a datamodule to calibrate on."
            raise ValueError(msg)
        datamodule.setup("fit")
        batch_dimension = model.input(0).partial_shape[0]
        if batch_dimension.is_static:
            datamodule.train_batch_size = batch_dimension.get_length()
        batches = datamodule.train_dataloader()
        ignored = nncf.IgnoredScope(names=[node.get_friendly_name() for node in precision_sensitive_nodes(model)])
        return nncf.quantize(
            model, nncf.Dataset(batches, _batch_images), subset_size=len(batches), ignored_scope=ignored
        )


def precision_sensitive_nodes(model: "Model") -> list["Node"]:
    """The nodes that need float32: the flows from their input on, but the subnets' convolutions.

    That is the flows' input (the features' normalisation), the couplings' split, soft clamp (``tanh``), ``exp`` and
    affine update, the channel permutations (1x1 convolutions by a 0/1 matrix, which carry the whole latent), the
    latent squares, their channel mean and ``exp``, the map's resize, the image score and the normalisation. Found
    from the graph's ``Tanh`` nodes, which only the couplings have: each one's subnet input comes from a split of the
    block's input, and everything downstream of the first blocks' inputs is taken. So it needs no node names and
    holds for every backbone. The subnets' other convolutions hold almost all of the flows' arithmetic and tolerate
    low precision.
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
        and (node.get_type_name() != "Convolution" or _is_permutation(node))
    ]


def _block_input(soft_clamp: "Node") -> "Node":
    """The first node of a coupling block's input, found upstream of the block's ``Tanh`` (``tanh`` itself if none).

    The path is ``split -> conv -> relu -> conv -> slice -> tanh``, with INT8's quantisers in between. Where the
    split's input is a normalisation (``MVN`` and its affine), its start is returned instead: the backbone's
    features are normalised there, so rounding them before it would be magnified.
    """
    node = soft_clamp
    for _ in range(_MAX_SUBNET_DEPTH):
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
"""Nodes searched upstream of a coupling's ``tanh`` for its split: the subnet's five, quantisers, and slack."""

_NOT_SENSITIVE = frozenset({"Result", "FakeQuantize"})
"""Node types never marked: outputs, and INT8's quantisers (which are the low-precision part by design)."""


def _is_permutation(convolution: "Node") -> bool:
    """Whether a convolution's weights are a constant 0/1 permutation matrix (one 1 per row and per column)."""
    weights = convolution.input_value(1).get_node()
    if weights.get_type_name() != "Constant":
        return False
    matrix = weights.get_data().reshape(weights.get_output_shape(0)[0], -1)
    return (
        matrix.shape[0] == matrix.shape[1]
        and bool(((matrix == 0) | (matrix == 1)).all())
        and bool((matrix.sum(axis=0) == 1).all() and (matrix.sum(axis=1) == 1).all())
    )


def _mark_precision_sensitive(model_file: Path, compress_to_fp16: bool) -> None:
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


def _batch_images(batch: Batch) -> "torch.Tensor":
    if batch.image is None:
        msg = "INT8 calibration needs batches with images; the datamodule returned a batch without an `image` field."
        raise ValueError(msg)
    return batch.image


@contextmanager
def _staged(export_root: Path | str, export_type: ExportType) -> Iterator[Path]:
    """Yield a staging export root; on success, move its ``weights/<format>/`` files into ``export_root``'s.

    The staging folder sits inside ``export_root``, so the moves are renames on one file system. Data files go
    first and the file that names them (``.xml``, ``.onnx``, ``.pt``) last, so a complete entry file means a
    complete export. On failure the staging folder is deleted and ``export_root`` is left as it was.
    """
    root = Path(export_root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=root) as staging:
        yield Path(staging)
        staged_files = sorted((Path(staging) / "weights" / export_type.value).iterdir(), key=_is_entry_file)
        target = root / "weights" / export_type.value
        target.mkdir(parents=True, exist_ok=True)
        for staged_file in staged_files:
            staged_file.replace(target / staged_file.name)


def _is_entry_file(path: Path) -> bool:
    return path.suffix in {".xml", ".onnx", ".pt"}


def _final_path(export_root: Path | str, export_type: ExportType, staged_file: Path) -> Path:
    return Path(export_root) / "weights" / export_type.value / staged_file.name
