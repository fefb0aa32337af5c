# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Fastflow2D as an anomalib model: training, validation, optimiser, pre/post-processing and metrics.

Examples:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_fastflow2d import Fastflow2D
    >>> model = Fastflow2D(backbone="wide_resnet50_2")  # doctest: +SKIP
    >>> Engine(max_epochs=100).fit(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677

See Also:
    :class:`anomalib_fastflow2d.torch_model.Fastflow2DModel`: the PyTorch model.
    :class:`anomalib_fastflow2d.loss.Fastflow2DLoss`: the training objective.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUROC, AnomalibMetric, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.visualization import ImageVisualizer, Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from .backbones import check_backbone_weights
from .checkpoints import CheckpointHooks
from .data_checks import check_datamodule
from .export import Fastflow2DExportMixin
from .feature_cache import TrainingFeatures
from .loss import Fastflow2DLoss
from .predictions import AspectKeepingVisualizer, PredictionTable
from .presets import BackboneKind, FlowConfig, resolve, resolve_preset
from .step_guard import SkipNonFiniteSteps
from .torch_model import DEFAULT_PIXEL_BUDGET, CompileMode, Fastflow2DModel

log = logging.getLogger(__name__)

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
"""The epoch limit Lightning falls back to when neither ``max_epochs`` nor ``max_steps`` is given."""

TILED_ENSEMBLE_METRICS_SIZE = (10, 10)
"""The input size anomalib 2.7's tiled-ensemble metrics stage builds a model at, only to take its evaluator."""


class Fastflow2D(Fastflow2DExportMixin, CheckpointHooks, SkipNonFiniteSteps, AnomalibModule):  # type: ignore[misc]  # anomalib changed to_onnx's signature
    """FastFlow with size-independent normalisation, presets for the paper's backbones and a bounded schedule.

    A frozen timm backbone gives multi-scale features; per scale, a 2D normalizing flow maps them to a standard
    normal; the per-pixel likelihood is the anomaly map. Explicit arguments override the backbone's preset.

    Args:
        backbone: A preset (``"resnet18"``, ``"wide_resnet50_2"``, ``"deit_base_distilled_patch16_384"``,
            ``"cait_m48_448"``) or any timm CNN that supports ``features_only``. Defaults to ``"resnet18"``.
        pre_trained: Load the hub's pretrained backbone weights when training starts. Defaults to ``True``.
        backbone_weights: Local backbone weights file, for machines without model-hub access; checked at
            construction, read when training starts. Defaults to ``None``.
        flow_steps: Coupling blocks per flow. Defaults to the preset's (8 for CNNs, 20 for ViTs).
        conv3x3_only: 3x3 kernels in every subnet instead of alternating 3x3/1x1. Defaults to the preset's.
        hidden_ratio: Subnet hidden channels as a fraction of input channels. Defaults to the preset's.
        feature_stages: timm ``out_indices`` (CNN stages, or the ViT block). Defaults to the preset's.
        feature_norm: CNN feature norm's learned affine: ``"position"`` (a scale and shift per feature position,
            resized at other input sizes; best on aligned objects) or ``"channel"`` (per channel). Defaults to
            ``"position"`` for CNNs; ViTs use their backbone's own norm.
        input_size: ``(H, W)`` of the training images: the default pre-processor's resize, and the size the
            per-position norm's maps are stored at. With ``pre_processor=False`` the images must already have it;
            with a pre-processor module that resizes, it must match that resize or be left out. Defaults to the
            pre-processor module's resize, else the preset's (256, 384 for DeiT, 448 for CaiT).
        train_crop_size: ``(h, w)``: train on random crops of this size of the ``input_size`` frames, which are
            scored whole, so that large frames keep their resolution (CNN backbones; multiples of the coarsest
            feature stride, 16 for the presets). Defaults to ``None``: train on whole frames.
        pixel_budget: Image pixels one pass of the backbone or a flow may take; larger batches run in parts and
            larger frames in overlapping tiles whose stitched results equal the whole frame's (CNN backbones).
            Defaults to 4,194,304 (one 2,048 px frame).
        image_score: ``"max"`` of the anomaly map, or ``"topk_mean"``. Defaults to ``"max"``.
        topk_fraction: Fraction of pixels averaged by ``image_score="topk_mean"``. Defaults to ``0.01``.
        lr: Adam learning rate. Defaults to ``1e-3`` (paper).
        weight_decay: Adam weight decay. Defaults to ``1e-5`` (paper).
        max_epochs: Stop training after this many epochs unless the trainer sets its own ``max_epochs`` or
            ``max_steps``. Lets configs that cannot pass trainer arguments (anomalib's benchmark) bound training.
            Defaults to ``None`` (the trainer decides).
        max_skipped_steps: Training steps with a non-finite loss or gradient are skipped (no weight update);
            training stops with an error once more than this many were skipped. Defaults to ``10``.
        cache_features: Compute the frozen backbone's features of each training image once and train the flows on
            them in later epochs. Turns itself off when training augmentation or pre-processing is random.
            Defaults to ``True``.
        feature_cache_limit_mb: Memory the cache may use; a larger cache goes to disk (under the trainer's
            ``default_root_dir``), or, without disk space, features are recomputed. Defaults to ``4096``.
        compile_mode: ``torch.compile`` the backbone and flows for training, validation, test and prediction with
            this mode (``"default"``, ``"reduce-overhead"`` for CUDA graphs, ``"max-autotune"``); exports use the
            eager model. Defaults to ``None`` (eager). With ``--trainer.precision bf16-mixed`` the convolutions run
            in bfloat16 while log-determinants and the loss stay in float32.
        pre_processor: Pre-processor, or ``True`` for resize to ``input_size`` and ImageNet normalisation.
            Defaults to ``True``.
        post_processor: Post-processor, or ``True`` for anomalib's adaptive thresholds and min-max normalisation.
            Defaults to ``True``.
        evaluator: Evaluator, or ``True`` for image AUROC/F1 and, where masks exist, pixel AUROC/F1.
            Defaults to ``True``.
        visualizer: Visualizer, or ``True`` for anomalib's image visualizer. Defaults to ``True``.

    Examples:
        >>> model = Fastflow2D(backbone="resnet18", pre_trained=False, input_size=(64, 64))
        >>> model.input_size
        torch.Size([64, 64])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        backbone_weights: str | Path | None = None,
        flow_steps: int | None = None,
        conv3x3_only: bool | None = None,
        hidden_ratio: float | None = None,
        feature_stages: Sequence[int] | None = None,
        feature_norm: Literal["position", "channel"] | None = None,
        input_size: tuple[int, int] | None = None,
        train_crop_size: tuple[int, int] | None = None,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        image_score: Literal["max", "topk_mean"] = "max",
        topk_fraction: float = 0.01,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        max_epochs: int | None = None,
        max_skipped_steps: int = 10,
        cache_features: bool = True,
        feature_cache_limit_mb: float = 4096,
        compile_mode: CompileMode | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size=input_size or resolve_preset(backbone).input_size)
        super().__init__(pre_processor, post_processor, evaluator, visualizer)
        # The training size, which shapes the per-position norm: the one given, else the pre-processor's resize.
        training_size = _training_size(input_size, self.input_size)
        config = resolve(backbone, feature_stages, flow_steps, conv3x3_only, hidden_ratio, feature_norm, training_size)
        _check_arguments(lr=lr, weight_decay=weight_decay, max_epochs=max_epochs, max_skipped_steps=max_skipped_steps)
        if backbone_weights is not None:
            check_backbone_weights(backbone, backbone_weights)
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.max_skipped_steps = max_skipped_steps
        self.training_features = TrainingFeatures(cache_features, feature_cache_limit_mb)
        self.compile_mode = compile_mode
        # Loaded at fit start, so that building the model to load a checkpoint (which holds them) never needs them.
        self.backbone_weights = backbone_weights
        self.backbone_weights_pending = pre_trained or backbone_weights is not None
        self.model = Fastflow2DModel(
            config, pre_trained=False, image_score=image_score, topk_fraction=topk_fraction, pixel_budget=pixel_budget
        )
        self._check_input_size(config.input_size)
        self.model.check_pixel_budget(config.input_size)
        self.train_crop_size = _checked_crop_size(train_crop_size, config, max(self.model.feature_extractor.strides))
        self.loss = Fastflow2DLoss()

    @staticmethod
    def configure_post_processor() -> PostProcessor:
        """Adaptive F1 thresholds and min-max normalisation, learned in validation and saved in checkpoints."""
        return PostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC and F1 always; pixel AUROC and F1 only where the data has masks.

        The same metric names as anomalib's own models, which anomalib's benchmark needs to tabulate models side by
        side; pass an ``Evaluator`` with ``AUPRO`` for the per-region overlap.
        """
        val_metrics: list[AnomalibMetric] = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ]
        test_metrics: list[AnomalibMetric] = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        ]
        return Evaluator(val_metrics=val_metrics, test_metrics=test_metrics)

    @classmethod
    def configure_visualizer(cls) -> ImageVisualizer:
        """The image visualizer of anomalib, with each overlay at its image's aspect ratio."""
        return AspectKeepingVisualizer()

    def configure_callbacks(self) -> list[Callback]:
        """The components of anomalib, then the table of scores that ``predict`` writes to the run's folder.

        Callbacks that the trainer holds already are left out, and its score table is reused: ``Engine.train`` runs
        ``fit`` and then ``test`` on one trainer, and Lightning would report each of them as overriding itself.
        """
        held: list[Callback] = getattr(self._trainer, "callbacks", [])  # no trainer: none held
        table = next((callback for callback in held if isinstance(callback, PredictionTable)), PredictionTable())
        components = super().configure_callbacks()
        callbacks = [*(components if isinstance(components, Sequence) else [components]), table]
        return [callback for callback in callbacks if not any(callback is other for other in held)]

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Return the negative log-likelihood of the batch's features; log it per image and per dimension."""
        del args, kwargs
        images = self._images(batch)
        keys = getattr(batch, "image_path", None)
        backbone_features = self.training_features(keys, images, self.model.frame_features)
        if self.train_crop_size is None:
            features = self.model.normalise(backbone_features)
        else:
            features = self.model.normalise_crops(backbone_features, self.train_crop_size)
        latents, log_jacobians = self.model.encode(features)
        loss = self.loss(latents, log_jacobians)
        if torch.isfinite(loss):
            batch_size = images.shape[0]
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
            nats_per_dim = loss / Fastflow2DLoss.dimensions(latents)
            self.log("train_nats_per_dim", nats_per_dim, on_step=False, on_epoch=True, batch_size=batch_size)
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Add anomaly maps and scores to the batch for the post-processor's statistics and the metrics."""
        del args, kwargs
        return batch.update(**self.model(self._images(batch))._asdict())

    test_step = validation_step
    predict_step = validation_step

    def setup(self, stage: str) -> None:
        """Check the data's images and masks, make checkpoint read errors name the file, compile if asked."""
        super().setup(stage)
        if self.model.compile_mode != self.compile_mode:
            self.model.compile(self.compile_mode)
        self.use_checked_checkpoint_io()
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            check_datamodule(datamodule, stage)

    def on_fit_start(self) -> None:
        """Load the pretrained backbone weights, unless a checkpoint already provided them; bound the epochs."""
        if self.backbone_weights_pending:
            source = self.backbone_weights or "the model hub"
            log.info("Loading pretrained %s weights from %s.", self.hparams["backbone"], source)
            self.model.feature_extractor.load_pretrained_weights(self.backbone_weights)
            self.backbone_weights_pending = False
        trainer = self.trainer
        unbounded = trainer.max_epochs == LIGHTNING_DEFAULT_MAX_EPOCHS and trainer.max_steps == -1
        if self.max_epochs is not None and unbounded:
            trainer.fit_loop.max_epochs = self.max_epochs

    def on_train_start(self) -> None:
        """Decide whether training may use cached backbone features: only if the training data is deterministic."""
        self.training_features.start(self.trainer, getattr(self.pre_processor, "transform", None))

    def on_fit_end(self) -> None:
        """Free the feature cache (and its folder, for a disk cache)."""
        self.training_features.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the flows and feature norms; the backbone is frozen."""
        trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        return torch.optim.Adam(trainable, lr=self.lr, weight_decay=self.weight_decay)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (as in the paper) and no sanity validation (thresholds come from full epochs)."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """Fastflow2D learns from normal images only."""
        return LearningType.ONE_CLASS

    def _check_input_size(self, size: Sequence[int] | None) -> None:
        minimum = max(self.model.feature_extractor.strides)
        if size is not None and min(size) < minimum:
            msg = (
                f"Input size {tuple(size)} is below the minimum of {minimum} pixels per side for backbone "
                f"{self.hparams['backbone']!r} (its coarsest feature stride). Set input_size (or the pre-processor's "
                f"resize) to at least {minimum}."
            )
            if tuple(size) == TILED_ENSEMBLE_METRICS_SIZE:
                msg += (
                    " anomalib's tiled-ensemble metrics stage builds its model at that size: run the ensemble with "
                    "`python -m anomalib_fastflow2d.tiled_ensemble`, or train on crops with --model.train_crop_size."
                )
            raise ValueError(msg)

    def _images(self, batch: Batch) -> torch.Tensor:
        if batch.image is None:
            msg = "Fastflow2D needs batches with images; the datamodule returned a batch without an `image` field."
            raise ValueError(msg)
        self._check_input_size(batch.image.shape[-2:])
        # A plain tensor: torch.compile recurses without end through torchvision's tv_tensors.Image (torch 2.11).
        return batch.image.as_subclass(torch.Tensor)


def _training_size(
    input_size: Sequence[int] | None, pre_processed_size: Sequence[int] | None
) -> tuple[int, int] | None:
    """The explicit ``input_size``, else the pre-processor's resize; ``None`` leaves it to the preset.

    Raises:
        ValueError: ``input_size`` differs from the resize of a pre-processor module.
    """
    if input_size is None:
        return None if pre_processed_size is None else (int(pre_processed_size[0]), int(pre_processed_size[1]))
    size = (int(input_size[0]), int(input_size[1]))
    if pre_processed_size is not None and tuple(pre_processed_size) != size:
        msg = (
            f"input_size {size} differs from the pre-processor's resize to {tuple(pre_processed_size)}. Leave "
            "input_size out to train at the pre-processor's size, or resize to input_size in the pre-processor."
        )
        raise ValueError(msg)
    return size


def _checked_crop_size(
    crop_size: Sequence[int] | None, config: FlowConfig, coarsest_stride: int
) -> tuple[int, int] | None:
    """``train_crop_size`` as ``(h, w)``, checked against the backbone and the frame size.

    Raises:
        ValueError: A ViT backbone, a crop off the coarsest stride's grid, or one larger than ``input_size``.
    """
    if crop_size is None:
        return None
    size = (int(crop_size[0]), int(crop_size[1]))
    if config.preset.kind is not BackboneKind.CNN:
        msg = (
            f"train_crop_size needs a CNN backbone; {config.backbone!r} is a ViT, whose attention sees the whole "
            "image. Leave train_crop_size unset, or pick a CNN backbone such as resnet18 or wide_resnet50_2."
        )
        raise ValueError(msg)
    frame = config.input_size
    if (
        any(side % coarsest_stride or side < coarsest_stride for side in size)
        or size[0] > frame[0]
        or size[1] > frame[1]
    ):
        suggestion = tuple(
            max(coarsest_stride, min(side, limit) // coarsest_stride * coarsest_stride)
            for side, limit in zip(size, frame, strict=True)
        )
        msg = (
            f"train_crop_size {size} must fit in input_size {frame} and be a multiple of {coarsest_stride} pixels "
            f"(the backbone's coarsest feature stride), e.g. {suggestion}."
        )
        raise ValueError(msg)
    return size


def _check_arguments(lr: float, weight_decay: float, max_epochs: int | None, max_skipped_steps: int) -> None:
    if lr <= 0 or weight_decay < 0:
        msg = f"lr must be positive and weight_decay non-negative, got lr={lr}, weight_decay={weight_decay}."
        raise ValueError(msg)
    if max_epochs is not None and max_epochs < 1:
        msg = f"max_epochs must be at least 1 or None, got {max_epochs}."
        raise ValueError(msg)
    if max_skipped_steps < 0:
        msg = f"max_skipped_steps must be non-negative, got {max_skipped_steps}."
        raise ValueError(msg)
