# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Export of Fastflow2D to PyTorch, ONNX and OpenVINO: the whole pipeline in one graph, and no half-written files.

The exported graph takes ``(N, 3, H, W)`` RGB images in ``[0, 1]`` of any batch size and resolution, and holds
everything between them and the prediction: the pre-processor's resize to ``input_size`` and ImageNet normalisation,
the backbone, the flows, the anomaly map, the image score, and the post-processor's thresholds and min-max
normalisation learned in validation. Its outputs are ``pred_score`` ``(N, 1)``, ``pred_label`` ``(N, 1)``,
``anomaly_map`` ``(N, 1, h, w)`` and ``pred_mask`` ``(N, 1, h, w)``, where ``(h, w)`` is ``input_size``.

anomalib's own exporter is used, with these changes:

- A model whose flows were neither trained nor restored, or whose post-processor learned no thresholds, is refused
  before anything is written: its scores would mean nothing, and the shared default ``weights/`` folder would lose a
  good export to it.
- ONNX opset 18 by default. torch's exporter implements nothing lower, so anomalib's default of 14 makes it
  down-convert the graph, which fails and logs a traceback (the opset-18 graph is kept anyway).
- Files are written to a staging folder and moved into ``weights/<format>/`` only once complete, so a failed
  export never leaves files that look like a finished one.
- INT8 quantisation checks for its data before the slow export starts, and calibrates on the training images
  (anomalib calibrates on the validation set, which is often the test set). ``INT8_PTQ`` and ``INT8_ACQ`` both
  leave the precision-sensitive nodes in float; ``INT8_ACQ`` checks its metric on the validation set.
- NNCF's node-by-node list of those nodes (an INFO line each) is held to one summary line; its other messages pass.
- The ONNX translation's own logging (``onnxscript``, ``onnx_ir``: a line per rewrite and per skipped constant
  fold, thousands per export) is held at ERROR, unless the user set those loggers' level.

The precision-sensitive part of the graph (the flows from their input on, but the subnets' convolutions; see
:mod:`anomalib_fastflow2d.openvino_precision`) is marked in the IR to stay in float32 when OpenVINO's CPU plugin
runs the rest in bfloat16 (its default on CPUs with AVX512-BF16 or AMX), and INT8 quantisation leaves it out.
The bfloat16 convolutions still round the scores; compile with :data:`OPENVINO_F32_CONFIG` for results equal to
PyTorch's (``docs/deployment.md`` gives the measured differences).

Examples:
    >>> from anomalib.engine import Engine
    >>> from anomalib_fastflow2d import Fastflow2D
    >>> Engine().export(Fastflow2D(), "openvino", ckpt_path="model.ckpt")  # doctest: +SKIP
    PosixPath('weights/openvino/model.xml')
"""

import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.data import AnomalibDataModule, Batch
from anomalib.deploy.export import CompressionType, ExportType
from anomalib.models.components.base.export_mixin import ExportMixin
from anomalib.post_processing import PostProcessor
from torch import nn

from .openvino_precision import mark_precision_sensitive, precision_sensitive_nodes

if TYPE_CHECKING:
    import nncf
    from anomalib import TaskType
    from openvino import CompiledModel, Model
    from torch.utils.data import DataLoader
    from torchmetrics import Metric

log = logging.getLogger(__name__)

ONNX_OPSET = 18
"""The lowest opset torch's ONNX exporter implements; a lower one triggers a failing down-conversion."""

OPENVINO_F32_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
"""OpenVINO compile config for full-precision inference; without it, bf16-capable CPUs run in bfloat16.

The IR cannot carry this: OpenVINO 2026.4 ignores ``INFERENCE_PRECISION_HINT`` under the model's
``runtime_options`` rt_info (only KV-cache and dynamic-quantisation options are read from there).
"""

QUIETED_EXPORT_LOGGERS = ("onnxscript", "onnx_ir")
"""Loggers of torch's ONNX translation that log every rewrite (INFO) and skipped constant fold (WARNING)."""

QUANTISATIONS_NEEDING_DATA = frozenset({CompressionType.INT8_PTQ, CompressionType.INT8_ACQ})
"""Compressions that calibrate on images, so they need a datamodule."""

NNCF_NODE_LIST = re.compile(r"Not adding activation input quantizer for operation: |\d+ ignored nodes were found by ")
"""NNCF's INFO messages about an ignored scope: a count, then one line per ignored node."""


class Fastflow2DExportMixin(ExportMixin):
    """anomalib's export methods, refusing untrained models, with opset 18, staged writes and an early INT8 check."""

    post_processor: nn.Module | None
    weights_fitted: bool = False
    """Whether the flows were trained or restored from a checkpoint or state dict; set by the model."""

    def check_exportable(self) -> None:
        """Refuse to export a model whose scores would mean nothing.

        Raises:
            RuntimeError: The flows were neither trained nor restored, or the post-processor has no thresholds.
        """
        fix = (
            "Export a trained model: `anomalib export --model Fastflow2D --ckpt_path path/to/model.ckpt ...` "
            "(in Python, `Engine.export(..., ckpt_path=...)` or export right after `Engine.fit`). Nothing was written."
        )
        if not self.weights_fitted:
            msg = f"Not exporting Fastflow2D: its flows were neither trained nor loaded from a checkpoint. {fix}"
            raise RuntimeError(msg)
        post_processor = self.post_processor
        if (
            isinstance(post_processor, PostProcessor)
            and post_processor.enable_thresholding
            and bool(post_processor.image_threshold.isnan())
        ):
            msg = (
                "Not exporting Fastflow2D: its post-processor has no thresholds, which are learned in validation "
                f"(the checkpoint came from a run without validation, or training stopped before it). {fix}"
            )
            raise RuntimeError(msg)

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export the whole Lightning module to ``weights/torch/<model_file_name>.pt`` for ``TorchInferencer``."""
        self.check_exportable()
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
        self.check_exportable()
        kwargs.setdefault("opset_version", ONNX_OPSET)
        with _staged(export_root, ExportType.ONNX) as staging, _quiet_onnx_translation():
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
            metric: Metric that ``INT8_ACQ`` keeps within ``max_drop`` on the validation set. Defaults to ``None``
                (image F1 of the labels).
            task: Accepted for anomalib's signature; the metric's fields decide what is measured. Defaults to
                ``None``.
            max_drop: Largest absolute drop of ``metric`` that ``INT8_ACQ`` accepts. Defaults to ``0.01``.
            ov_kwargs: Passed to ``openvino.convert_model``. Defaults to ``None``.
            onnx_kwargs: Passed to :meth:`to_onnx`. Defaults to ``None``.

        Raises:
            ValueError: ``INT8_PTQ`` or ``INT8_ACQ`` without a datamodule, or ``INT8_ACQ`` without validation images
                or with ``max_drop`` outside ``[0, 1]``.
            RuntimeError: The model was neither trained nor restored, or has no thresholds.
        """
        self.check_exportable()
        if compression_type is not None:
            compression_type = CompressionType(compression_type)
        if compression_type in QUANTISATIONS_NEEDING_DATA and datamodule is None:
            msg = (
                f"Compression {compression_type.value} calibrates on images, so it needs a datamodule: pass "
                "datamodule=... to Engine.export, or --data to `anomalib export`. FP16 and INT8 (weights only) need "
                "no data."
            )
            raise ValueError(msg)
        with _staged(export_root, ExportType.OPENVINO) as staging, _quiet_onnx_translation():
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
            mark_precision_sensitive(staged_file, compress_to_fp16=compression_type == CompressionType.FP16)
        return _final_path(export_root, ExportType.OPENVINO, staged_file)

    @staticmethod
    def _post_training_quantization_ov(model: "Model", datamodule: AnomalibDataModule | None = None) -> "Model":
        """Quantise to INT8 with NNCF (:func:`quantize_int8`), calibrated on the datamodule's training images."""
        return quantize_int8(model, _training_batches(model, _required(datamodule, CompressionType.INT8_PTQ)))

    @staticmethod
    def _accuracy_control_quantization_ov(
        model: "Model",
        datamodule: AnomalibDataModule | None = None,
        metric: "Metric | None" = None,
        task: "TaskType | None" = None,
        max_drop: float = 0.01,
    ) -> "Model":
        """Quantise to INT8 as ``INT8_PTQ`` does, then let NNCF restore float nodes until ``metric`` is kept.

        Calibration and ignored scope are those of :func:`quantize_int8`. NNCF then measures ``metric`` on the
        validation set with the float and the quantised model and, while it drops by more than ``max_drop``
        (absolute), puts the quantised nodes that cost it most back in float, one group at a time.

        Args:
            model: The converted float model.
            datamodule: Training images to calibrate on, validation images to measure ``metric`` on.
            metric: An anomalib metric, updated with the datamodule's batches and the model's predictions; higher
                is better. Defaults to ``None`` (image F1 of the labels, as anomalib).
            task: Unused, accepted for anomalib's signature. Defaults to ``None``.
            max_drop: Largest absolute drop of ``metric`` accepted, in ``[0, 1]``. Defaults to ``0.01``.

        Raises:
            TypeError: ``metric`` is a name, as ``anomalib export --metric NAME`` passes it, not a metric.
            ValueError: No datamodule, no validation images, or ``max_drop`` outside ``[0, 1]``.
        """
        import nncf  # noqa: PLC0415 - only needed for INT8
        from anomalib.metrics import F1Score  # noqa: PLC0415 - imports torchmetrics' classification metrics

        del task  # the metric's fields decide what is measured
        if isinstance(metric, str):  # `anomalib export --metric AUROC` passes the bare name
            msg = (
                f"INT8_ACQ needs a metric object, not the name {metric!r}: pass e.g. `--metric anomalib.metrics.AUROC "
                "--metric.fields '[pred_score,gt_label]'` (in Python, metric=AUROC(fields=[...]))."
            )
            raise TypeError(msg)
        if not 0 <= max_drop <= 1:
            msg = f"INT8_ACQ's max_drop is an absolute drop of the metric, between 0 and 1; got {max_drop}."
            raise ValueError(msg)
        datamodule = _required(datamodule, CompressionType.INT8_ACQ)
        calibration = _training_batches(model, datamodule)
        validation = datamodule.val_dataloader() if hasattr(datamodule, "val_data") else []  # none: no val_data
        if len(validation) == 0:
            msg = (
                "INT8_ACQ measures its metric on the validation set, and the datamodule has no validation images: "
                "give it some (e.g. --data.val_split_mode from_test), or use INT8_PTQ, which needs none."
            )
            raise ValueError(msg)
        measured = metric if metric is not None else F1Score(fields=["pred_label", "gt_label"])
        ignored = _ignored_scope(model)
        with _ignored_nodes_summarised(ignored):
            return nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(calibration, _batch_images),
                nncf.Dataset(validation, _batch_images),
                partial(_metric_on, measured),
                max_drop=max_drop,
                subset_size=len(calibration),
                ignored_scope=ignored,
            )


def quantize_int8(model: "Model", batches: "DataLoader[Batch] | Sequence[Batch]") -> "Model":
    """Quantise a converted Fastflow2D graph to INT8 with NNCF, keeping its precision-sensitive nodes in float.

    Every batch calibrates (NNCF averages its activation statistics over them). The nodes of
    :func:`~anomalib_fastflow2d.openvino_precision.precision_sensitive_nodes` are NNCF's ignored scope: rounding
    them to 8 bits (the permutation convolutions above all, which carry the whole latent) rounds the latents at
    every coupling, and the normalised scores with them. NNCF's list of them is logged as one line.

    Args:
        model: The float model, as ``openvino.convert_model`` returns it.
        batches: Batches of normal images, e.g. the training loader.

    Returns:
        The quantised model.
    """
    import nncf  # noqa: PLC0415 - only needed for INT8

    ignored = _ignored_scope(model)
    with _ignored_nodes_summarised(ignored):
        return nncf.quantize(
            model, nncf.Dataset(batches, _batch_images), subset_size=len(batches), ignored_scope=ignored
        )


def _required(datamodule: AnomalibDataModule | None, compression: CompressionType) -> AnomalibDataModule:
    if datamodule is None:
        msg = f"{compression.value} needs a datamodule to calibrate on: pass datamodule=... or --data."
        raise ValueError(msg)
    return datamodule


def _training_batches(model: "Model", datamodule: AnomalibDataModule) -> "DataLoader[Batch]":
    """The datamodule's training loader, at the model's batch size if that is static: normal images, never tests."""
    datamodule.setup("fit")
    batch_dimension = model.input(0).partial_shape[0]
    if batch_dimension.is_static:
        datamodule.train_batch_size = datamodule.eval_batch_size = batch_dimension.get_length()
    return datamodule.train_dataloader()


def _ignored_scope(model: "Model") -> "nncf.IgnoredScope":
    import nncf  # noqa: PLC0415 - only needed for INT8

    return nncf.IgnoredScope(names=[node.get_friendly_name() for node in precision_sensitive_nodes(model)])


@contextmanager
def _ignored_nodes_summarised(ignored: "nncf.IgnoredScope") -> Iterator[None]:
    """Log one line for the ignored scope, and hold back NNCF's own count and node list of it meanwhile.

    NNCF logs every ignored node at INFO (hundreds of lines); only INFO records matching :data:`NNCF_NODE_LIST`
    are dropped, so NNCF's warnings, errors and other messages still show.
    """
    nncf_logger = logging.getLogger("nncf")
    log.info("INT8: kept %d precision-sensitive nodes in float (NNCF's ignored scope).", len(ignored.names))
    nncf_logger.addFilter(_not_in_node_list)
    try:
        yield
    finally:
        nncf_logger.removeFilter(_not_in_node_list)


def _not_in_node_list(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or not NNCF_NODE_LIST.match(record.getMessage())


def _metric_on(metric: "Metric", compiled: "CompiledModel", batches: Iterable[Batch]) -> float:
    """``metric`` of a compiled model over ``batches``, each updated with the model's predictions for it.

    The metric starts from scratch at every call, as NNCF calls this once per model and once per batch. Scores and
    labels become one value per image, and ground-truth masks are resized (nearest) to the anomaly map's size,
    the model's ``input_size``, as anomalib's pre-processor resizes them in validation.
    """
    metric.reset()
    for batch in batches:
        outputs = compiled(_batch_images(batch).numpy())
        predictions = {output.any_name: torch.from_numpy(value) for output, value in outputs.items()}
        for name in ("pred_score", "pred_label"):
            predictions[name] = predictions[name].flatten()  # (N,), as gt_label
        gt_mask = _resized_mask(batch.gt_mask, predictions["anomaly_map"].shape[-2:])
        metric.update(batch.update(in_place=False, gt_mask=gt_mask, **predictions))
    return float(metric.compute())


def _resized_mask(mask: torch.Tensor | None, size: torch.Size) -> torch.Tensor | None:
    if mask is None or mask.shape[-2:] == size:
        return mask
    return nn.functional.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=size, mode="nearest")


def _batch_images(batch: Batch) -> torch.Tensor:
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


@contextmanager
def _quiet_onnx_translation() -> Iterator[None]:
    """Hold the ONNX translation's loggers at ERROR for the export, unless their level was set by the user."""
    quieted = [logging.getLogger(name) for name in QUIETED_EXPORT_LOGGERS]
    quieted = [logger for logger in quieted if logger.level == logging.NOTSET]
    for logger in quieted:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger in quieted:
            logger.setLevel(logging.NOTSET)


def _is_entry_file(path: Path) -> bool:
    return path.suffix in {".xml", ".onnx", ".pt"}


def _final_path(export_root: Path | str, export_type: ExportType, staged_file: Path) -> Path:
    return Path(export_root) / "weights" / export_type.value / staged_file.name
