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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from anomalib import LearningType
from anomalib.data import Batch, InferenceBatch
from anomalib.metrics import AUROC, AnomalibMetric, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.visualization import ImageVisualizer, Visualizer
from lightning.fabric.utilities.types import _MAP_LOCATION_TYPE
from lightning.pytorch import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.optim import Optimizer

from .backbones import check_backbone_weights
from .checkpoints import (
    CheckedCheckpointIO,
    architecture_differences,
    check_checkpoint,
    describe_architecture_change,
    mark_checkpoint,
    read_checkpoint,
)
from .data_checks import check_datamodule
from .export import Fastflow2DExportMixin
from .feature_cache import FeatureCache, randomness_in_training_data
from .loss import Fastflow2DLoss
from .predictions import AspectKeepingVisualizer, PredictionTable
from .presets import resolve_preset
from .torch_model import Fastflow2DModel

log = logging.getLogger(__name__)

MODEL_HPARAMS = (
    "backbone",
    "flow_steps",
    "conv3x3_only",
    "hidden_ratio",
    "feature_stages",
    "image_score",
    "topk_fraction",
)
"""The hyper-parameters :class:`Fastflow2DModel` is built from."""

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
"""The epoch limit Lightning falls back to when neither ``max_epochs`` nor ``max_steps`` is given."""


class Fastflow2D(Fastflow2DExportMixin, AnomalibModule):  # type: ignore[misc]  # anomalib changed to_onnx's signature
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
        input_size: ``(H, W)`` of the default pre-processor's resize; ignored when ``pre_processor`` is a module.
            Defaults to the preset's (256, 384 for DeiT, 448 for CaiT).
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
        input_size: tuple[int, int] | None = None,
        image_score: Literal["max", "topk_mean"] = "max",
        topk_fraction: float = 0.01,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        max_epochs: int | None = None,
        max_skipped_steps: int = 10,
        cache_features: bool = True,
        feature_cache_limit_mb: float = 4096,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        preset = resolve_preset(backbone)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size=input_size or preset.input_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if lr <= 0 or weight_decay < 0:
            msg = f"lr must be positive and weight_decay non-negative, got lr={lr}, weight_decay={weight_decay}."
            raise ValueError(msg)
        if max_epochs is not None and max_epochs < 1:
            msg = f"max_epochs must be at least 1 or None, got {max_epochs}."
            raise ValueError(msg)
        if max_skipped_steps < 0:
            msg = f"max_skipped_steps must be non-negative, got {max_skipped_steps}."
            raise ValueError(msg)
        if backbone_weights is not None:
            check_backbone_weights(backbone, backbone_weights)
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.max_skipped_steps = max_skipped_steps
        self.cache_features = cache_features
        self.feature_cache_limit_mb = feature_cache_limit_mb
        self.feature_cache: FeatureCache | None = None
        self.compile_mode = compile_mode
        # Plain containers, so that the compiled wrappers are not registered as submodules (and state-dict keys).
        self._compiled_forward: list[Callable[[torch.Tensor], InferenceBatch]] = []
        self._compiled_flows: list[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = []
        self._compiled_extractor: list[Callable[[torch.Tensor], list[torch.Tensor]]] = []
        self._feature_cache_planned = False
        self.skipped_steps = 0
        # Loaded at fit start, so that building the model to load a checkpoint (which holds them) never needs them.
        self.backbone_weights = backbone_weights
        self.backbone_weights_pending = pre_trained or backbone_weights is not None
        self._build_model(
            backbone=backbone,
            flow_steps=flow_steps,
            conv3x3_only=conv3x3_only,
            hidden_ratio=hidden_ratio,
            feature_stages=feature_stages,
            image_score=image_score,
            topk_fraction=topk_fraction,
        )
        self._check_input_size(self.input_size)
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
        """The components of anomalib, then the table of scores that ``predict`` writes to the run's folder."""
        callbacks = super().configure_callbacks()
        return [*(callbacks if isinstance(callbacks, Sequence) else [callbacks]), PredictionTable()]

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Return the negative log-likelihood of the batch's features; log it per image and per dimension."""
        del args, kwargs
        images = self._images(batch)
        loss, latents = self.feature_loss(self._backbone_features(batch, images))
        if torch.isfinite(loss):
            batch_size = images.shape[0]
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
            nats_per_dim = loss / Fastflow2DLoss.dimensions(latents)
            self.log("train_nats_per_dim", nats_per_dim, on_step=False, on_epoch=True, batch_size=batch_size)
        return {"loss": loss}

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Update the weights only when the loss and every gradient are finite on every process.

        Flows can diverge; one non-finite step would otherwise turn every weight into NaN. The decision is reduced
        over processes so that all DDP ranks skip the same steps.
        """
        del epoch, batch_idx
        loss = optimizer_closure() if optimizer_closure is not None else None
        checked = [parameter.grad for parameter in self.parameters() if parameter.grad is not None]
        if loss is not None:
            checked.append(loss)
        # One device-to-host sync for all tensors, not one per parameter.
        finite = not checked or bool(torch.stack([torch.isfinite(tensor).all() for tensor in checked]).all())
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            optimizer.step()
            self.weights_fitted = True
            return
        self.skipped_steps += 1
        self.log("train_skipped_steps", float(self.skipped_steps), on_step=False, on_epoch=True, reduce_fx="max")
        log.warning("Skipped training step %d: non-finite loss or gradient.", self.trainer.global_step)
        if self.skipped_steps > self.max_skipped_steps:
            msg = (
                f"Training stopped: {self.skipped_steps} steps had a non-finite loss or gradient "
                f"(max_skipped_steps={self.max_skipped_steps}). Lower lr (now {self.lr}), check the images for "
                "constant or corrupt ones, or raise max_skipped_steps."
            )
            raise FloatingPointError(msg)

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Add anomaly maps and scores to the batch for the post-processor's statistics and the metrics."""
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Add anomaly maps and scores to the batch, as in validation."""
        del args, kwargs
        return self._predict(batch)

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:  # noqa: ANN401
        """Add anomaly maps and scores to the batch, as in validation."""
        del args, kwargs
        return self._predict(batch)

    def setup(self, stage: str) -> None:
        """Check the data's images and masks, make checkpoint read errors name the file, compile if asked."""
        super().setup(stage)
        if self.compile_mode is not None and not self._compiled_forward:
            self._compiled_forward.append(torch.compile(self.model, mode=self.compile_mode))
            self._compiled_flows.extend(torch.compile(flow, mode=self.compile_mode) for flow in self.model.flows)
            self._compiled_extractor.append(torch.compile(self.model.feature_extractor, mode=self.compile_mode))
        strategy = self.trainer.strategy
        if not isinstance(strategy.checkpoint_io, CheckedCheckpointIO):
            strategy.checkpoint_io = CheckedCheckpointIO(strategy.checkpoint_io)
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
        self.feature_cache = None
        self._feature_cache_planned = not self.cache_features
        if not self.cache_features:
            return
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        transform = getattr(self.pre_processor, "transform", None)
        reason = randomness_in_training_data(dataset, transform)
        if reason is not None:
            log.info("Feature cache: off, because %s; the backbone runs every epoch.", reason)
            self._feature_cache_planned = True

    def on_fit_end(self) -> None:
        """Free the feature cache (and its folder, for a disk cache)."""
        if self.feature_cache is not None:
            self.feature_cache.clear()
            self.feature_cache = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the checkpoint so that loading it needs neither the model hub nor the original weights file.

        The backbone's weights are in the state dict, so the rebuilt model starts from random weights and the state
        dict overwrites them. Weights that are not finite are never written.
        """
        weights = self.model.state_dict().items()
        non_finite = [name for name, tensor in weights if not bool(torch.isfinite(tensor).all())]
        if non_finite:
            msg = f"Not saving a checkpoint with non-finite weights ({len(non_finite)} tensors, {non_finite[:3]})."
            raise FloatingPointError(msg)
        super().on_save_checkpoint(checkpoint)
        hyper_parameters = checkpoint.setdefault("hyper_parameters", {})
        hyper_parameters["pre_trained"] = False
        hyper_parameters["backbone_weights"] = None
        mark_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse other models' checkpoints; take the checkpoint's architecture and its backbone weights.

        ``anomalib test/predict/export --ckpt_path`` build the model from command-line arguments before loading, so
        a checkpoint trained with other ``flow_steps`` (say) would otherwise fail with missing state-dict keys.
        """
        source = repr(str(self._trainer.ckpt_path)) if self._trainer is not None else "being loaded"
        check_checkpoint(checkpoint, source)
        saved = checkpoint.get("hyper_parameters", {})
        differences = architecture_differences(saved, self.hparams)
        if differences:
            change = describe_architecture_change(saved, self.hparams)
            log.warning("Rebuilding Fastflow2D with the architecture of checkpoint %s: %s.", source, change)
            self.hparams.update(differences)
            self._build_model(**{name: self.hparams[name] for name in MODEL_HPARAMS})
        super().on_load_checkpoint(checkpoint)
        self.backbone_weights_pending = False

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:  # noqa: ANN401
        """Load weights (from a checkpoint, or directly) and record that the flows hold restored weights."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.weights_fitted = True
        return result

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: _MAP_LOCATION_TYPE = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,  # noqa: ANN401 - hyper-parameter overrides, as in Lightning
    ) -> "Fastflow2D":
        """Load a Fastflow2D checkpoint; a missing, unreadable or foreign file gives an error naming it."""
        check_checkpoint(read_checkpoint(checkpoint_path), repr(str(checkpoint_path)))
        model = super().load_from_checkpoint(
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=weights_only,
            **kwargs,
        )
        return cast("Fastflow2D", model)

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

    def _build_model(self, **arguments: Any) -> None:  # noqa: ANN401 - the MODEL_HPARAMS
        """Build the PyTorch model with random backbone weights (the pretrained ones load at fit start)."""
        self.model: Fastflow2DModel = Fastflow2DModel(pre_trained=False, **arguments)
        self.minimum_input_size = max(self.model.feature_extractor.strides)

    def predict_images(self, images: torch.Tensor) -> InferenceBatch:
        """Scores and anomaly maps of pre-processed images, through the compiled model when ``compile_mode`` is set.

        The model must be in eval mode; validation, test and prediction steps use this.
        """
        if not self._compiled_forward:
            return self.model(images)
        # CUDA-graph modes reuse their output memory at the next call: copies keep this call's results valid.
        torch.compiler.cudagraph_mark_step_begin()
        predictions = self._compiled_forward[0](images)
        return InferenceBatch(**{key: _copy(value) for key, value in predictions._asdict().items()})

    def extract_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's features of pre-processed images (compiled when ``compile_mode`` is set)."""
        return self._compiled_extractor[0](images) if self._compiled_extractor else self.model.feature_extractor(images)

    def feature_loss(self, backbone_features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The training loss of backbone features, and the latents it was computed from.

        The features are normalised and encoded by the (compiled, if asked) flows; the loss is computed in float32
        even under mixed precision, because log-determinants summed over a feature map lose too much in bfloat16.
        """
        features = self.model.normalise(backbone_features)
        if self._compiled_flows:
            torch.compiler.cudagraph_mark_step_begin()
        latents, log_jacobians = self.model.encode(features, self._compiled_flows or None)
        with torch.autocast(latents[0].device.type, enabled=False):
            loss = self.loss([latent.float() for latent in latents], [value.float() for value in log_jacobians])
        return loss, latents

    def _predict(self, batch: Batch) -> STEP_OUTPUT:
        return batch.update(**self.predict_images(self._images(batch))._asdict())

    def _backbone_features(self, batch: Batch, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's features of a training batch, from the feature cache where possible."""
        keys = getattr(batch, "image_path", None)
        if not self._feature_cache_planned:
            self._feature_cache_planned = True
            if keys is not None:
                features = self.extract_features(images)
                bytes_per_image = sum(feature[0].numel() * feature.element_size() for feature in features)
                self.feature_cache = FeatureCache.plan(
                    bytes_per_image=bytes_per_image,
                    num_images=len(self.trainer.train_dataloader.dataset),  # type: ignore[union-attr]
                    memory_limit_mb=self.feature_cache_limit_mb,
                    directory=Path(self.trainer.default_root_dir) / "feature_cache" / f"rank{self.global_rank}",
                    device=images.device,
                )
                if self.feature_cache is not None:
                    return self.feature_cache.features(list(keys), images, lambda _: features)
                return features
        if self.feature_cache is None or keys is None:
            return self.extract_features(images)
        return self.feature_cache.features(list(keys), images, self.extract_features)

    def _check_input_size(self, size: Sequence[int] | None) -> None:
        if size is not None and min(size) < self.minimum_input_size:
            msg = (
                f"Input size {tuple(size)} is below the minimum of {self.minimum_input_size} pixels per side for "
                f"backbone {self.hparams['backbone']!r} (its coarsest feature stride). Set input_size (or the "
                f"pre-processor's resize) to at least {self.minimum_input_size}."
            )
            raise ValueError(msg)

    def _images(self, batch: Batch) -> torch.Tensor:
        if batch.image is None:
            msg = "Fastflow2D needs batches with images; the datamodule returned a batch without an `image` field."
            raise ValueError(msg)
        self._check_input_size(batch.image.shape[-2:])
        # A plain tensor: torch.compile recurses without end through torchvision's tv_tensors.Image (torch 2.11).
        return batch.image.as_subclass(torch.Tensor)


def _copy(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.clone()
