# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of Fastflow2D: frozen backbone, feature normalisation, one 2D flow per scale, anomaly map.

Unlike anomalib's ``FastflowModel``, the model runs at any input size: CNN features are standardised per sample over
all of ``(C, H, W)`` as anomalib's ``LayerNorm([C, H, W])`` does, with a learned per-position affine that is resized
to the feature map (:class:`~anomalib_fastflow2d.norms.PositionNorm`), or a per-channel one
(:class:`~anomalib_fastflow2d.norms.ChannelNorm`). So a model trained at 256x256 runs at 192x320 and exports with
dynamic shapes.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677
"""

import logging
import math
import os
from typing import TYPE_CHECKING, Literal, cast

import torch
from anomalib.data import InferenceBatch
from anomalib.data.utils.tiler import Tiler
from torch import nn

from .anomaly_map import AnomalyMapGenerator, ImageScore
from .backbones import FeatureExtractor
from .coupling import exporting
from .flows import Flow2D
from .norms import ChannelNorm, PositionNorm, standardise
from .presets import BackboneKind, FeatureNorm, FlowConfig
from .tiling import receptive_radius, run_in_tiles

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""The ``torch.compile`` modes Fastflow2D accepts."""

DEFAULT_PIXEL_BUDGET = 4 * 1024 * 1024
"""Image pixels one backbone or flow pass may take: four 1,024 px frames, or one 2,048 px frame, at a time."""


class Fastflow2DModel(nn.Module):
    """Fastflow2D as a plain ``nn.Module``, built from a resolved :class:`~anomalib_fastflow2d.presets.FlowConfig`.

    Its steps are public so that training (which caches backbone features), the explanation and the benchmarks run
    the model's own path: :meth:`backbone_features`, :meth:`normalise`, :meth:`encode` (latents and
    log-determinants, for the loss), :meth:`latents` (latents only, for inference) and :meth:`anomaly_map`.
    :meth:`compile` makes every step run compiled. ``forward`` is inference: scores and anomaly maps.

    Args:
        config: The architecture, from :func:`~anomalib_fastflow2d.presets.resolve`.
        pre_trained: Load the hub's pretrained backbone weights. Defaults to ``True``.
        backbone_weights: Local backbone weights file, used instead of the hub. Defaults to ``None``.
        image_score: Reduction of the anomaly map to an image score. Defaults to ``"max"``.
        topk_fraction: Fraction of pixels averaged by ``image_score="topk_mean"``. Defaults to ``0.01``.
        pixel_budget: Image pixels one pass of the backbone or a flow may take. A larger batch runs in parts, and a
            frame larger than this runs in overlapping tiles whose results are stitched into exactly the
            whole-frame result (CNN backbones; exports always run whole). Defaults to
            :data:`DEFAULT_PIXEL_BUDGET`.

    Attributes:
        tiler: anomalib's :class:`~anomalib.data.utils.tiler.Tiler`, set by its ``TilerConfigurationCallback``
            (``None`` by default). When set, training and inference cut each frame into its tiles and the model
            is a model of tiles: see :meth:`frame_features` and :meth:`forward`.

    Examples:
        >>> from anomalib_fastflow2d.presets import resolve
        >>> model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False)
        >>> latents, log_jacobians = model.encode(model.features(torch.randn(2, 3, 64, 64)))
        >>> [tuple(latent.shape) for latent in latents]
        [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
        >>> model = model.eval()
        >>> model(torch.randn(2, 3, 48, 80)).anomaly_map.shape
        torch.Size([2, 1, 48, 80])
    """

    def __init__(
        self,
        config: FlowConfig,
        pre_trained: bool = True,
        backbone_weights: str | os.PathLike[str] | None = None,
        image_score: ImageScore | str = ImageScore.MAX,
        topk_fraction: float = 0.01,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
    ) -> None:
        super().__init__()
        _check_positive(pixel_budget=pixel_budget)
        self.config = config
        self.pixel_budget = pixel_budget
        self.tiler: Tiler | None = None
        # Measured on first use: the backbone's receptive-field margin, in image pixels, for tiles.
        self._backbone_margin: int | None = None
        self._tiled_sizes: set[tuple[int, int]] = set()
        preset = config.preset
        self.feature_extractor = FeatureExtractor(
            config.backbone,
            kind=preset.kind,
            feature_stages=config.feature_stages,
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            dynamic_size=preset.dynamic_size,
        )
        channels = self.feature_extractor.channels
        self.norms = self._build_norms(config.feature_norm, config.input_size)
        self.flows = nn.ModuleList(
            Flow2D(num_channels, config.flow_steps, config.conv3x3_only, config.hidden_ratio)
            for num_channels in channels
        )
        self.anomaly_map_generator = AnomalyMapGenerator(image_score=image_score, topk_fraction=topk_fraction)
        # A plain dict, so that the compiled wrappers are neither submodules nor state-dict keys.
        self._compiled: dict[str, Callable[..., object]] = {}
        self.compile_mode: CompileMode | None = None

    def _build_norms(self, feature_norm: FeatureNorm | None, input_size: tuple[int, int]) -> nn.ModuleList:
        channels = self.feature_extractor.channels
        if feature_norm is FeatureNorm.POSITION:
            shapes = self.feature_shapes(input_size)
            return nn.ModuleList(PositionNorm(shape[0], (shape[1], shape[2])) for shape in shapes)
        if feature_norm is FeatureNorm.CHANNEL:
            return nn.ModuleList(ChannelNorm(num_channels) for num_channels in channels)
        # ViT features already went through the backbone's own final norm.
        return nn.ModuleList(nn.Identity() for _ in channels)

    def rebuilt(self, config: FlowConfig) -> "Fastflow2DModel":
        """A model of another architecture with this one's scoring, device and compile mode, and random weights.

        Loading a checkpoint of another architecture builds it before its state dict is loaded.
        """
        generator = self.anomaly_map_generator
        model = Fastflow2DModel(
            config,
            pre_trained=False,
            image_score=generator.image_score,
            topk_fraction=generator.topk_fraction,
            pixel_budget=self.pixel_budget,
        )
        model = model.to(next(self.parameters()).device)
        model.compile(self.compile_mode)
        # anomalib's tiler callback set it before the checkpoint that triggers the rebuild was loaded.
        model.tiler = self.tiler
        return model

    def compile(self, mode: CompileMode | None) -> None:
        """Run the backbone, each flow and the inference path through ``torch.compile`` with ``mode`` from now on.

        ``None`` returns to eager execution. Exports always trace the eager modules.
        """
        self._compiled = {}
        self.compile_mode = mode
        if mode is None:
            return
        self._compiled["backbone"] = torch.compile(self.feature_extractor, mode=mode)
        self._compiled["inference"] = torch.compile(self._infer, mode=mode)
        for index, flow in enumerate(self.flows):
            self._compiled[f"flow{index}"] = torch.compile(flow, mode=mode)

    @property
    def compiled(self) -> bool:
        """Whether :meth:`compile` set a mode."""
        return bool(self._compiled)

    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's features of pre-processed images: one ``(N, C_s, H_s, W_s)`` map per scale.

        Within :attr:`pixel_budget`: a larger batch runs in parts, and a larger frame in tiles.
        """
        return self._within_budget(self._backbone(), images, 1, self._tiled_backbone)

    def _within_budget(
        self,
        run: "Callable[[torch.Tensor], list[torch.Tensor]]",
        inputs: torch.Tensor,
        stride: int,
        run_tiled: "Callable[[torch.Tensor], list[torch.Tensor]]",
    ) -> list[torch.Tensor]:
        """``run(inputs)`` in passes of at most :attr:`pixel_budget` image pixels, outputs put back together.

        ``inputs`` are maps at ``stride`` (1 for images), so a pixel of them covers ``stride**2`` image pixels. A
        batch runs whole when it fits (and always in exports and for ViTs), else in parts of whole frames, else
        frame by frame through ``run_tiled``.
        """
        frame_pixels = inputs.shape[-2] * inputs.shape[-1] * stride**2
        if not self._bounded_pixels(inputs.shape[0], frame_pixels):
            return run(inputs)
        if frame_pixels <= self.pixel_budget:
            parts = [run(part) for part in inputs.split(max(1, self.pixel_budget // frame_pixels))]
        else:
            parts = [run_tiled(frame) for frame in inputs.split(1)]
        return [torch.cat(outputs) for outputs in zip(*parts, strict=True)]

    def _backbone(self) -> "Callable[[torch.Tensor], list[torch.Tensor]]":
        return cast(
            "Callable[[torch.Tensor], list[torch.Tensor]]", self._compiled.get("backbone", self.feature_extractor)
        )

    def _bounded(self, images: torch.Tensor) -> bool:
        """Whether ``images`` need parts or tiles: never in exports, nor for ViTs, whose attention sees everything."""
        return self._bounded_pixels(images.shape[0], images.shape[-2] * images.shape[-1])

    def _bounded_pixels(self, count: int, frame_pixels: int) -> bool:
        if exporting() or self.config.preset.kind is not BackboneKind.CNN:
            return False  # before any comparison of sizes, which would pin an export's symbolic shapes
        return count * frame_pixels > self.pixel_budget

    def check_pixel_budget(self, image_size: tuple[int, int]) -> None:
        """Raise now, not mid-run, if frames of ``image_size`` need tiles and :attr:`pixel_budget` holds none.

        Raises:
            ValueError: The budget is below one tile with the backbone's overlap on each side; names the minimum.
        """
        if image_size[0] * image_size[1] > self.pixel_budget and self.config.preset.kind is BackboneKind.CNN:
            self._tile_side()

    def _tile_side(self) -> int:
        """The side of the backbone's tiles, measuring its receptive-field margin on first use."""
        strides = self.feature_extractor.strides
        align = max(strides)
        if self._backbone_margin is None:
            self._backbone_margin = receptive_radius(self.feature_extractor.network, strides, align)
        tile = math.isqrt(self.pixel_budget) // align * align
        if tile < 2 * self._backbone_margin + align:
            minimum = (2 * self._backbone_margin + align) ** 2
            msg = (
                f"pixel_budget={self.pixel_budget} is too small for tiles: the backbone's receptive field needs "
                f"{self._backbone_margin} pixels of overlap on each side. Set pixel_budget to at least {minimum}."
            )
            raise ValueError(msg)
        return tile

    def _tiled_backbone(self, frame: torch.Tensor) -> list[torch.Tensor]:
        tile = self._tile_side()
        margin = cast("int", self._backbone_margin)
        strides = self.feature_extractor.strides
        size = (frame.shape[-2], frame.shape[-1])
        if size not in self._tiled_sizes:
            self._tiled_sizes.add(size)
            log.info(
                "Computing features of %dx%d frames in tiles of up to %d px overlapping by %d px (pixel_budget=%d): "
                "more pixels than one pass may take; the stitched maps equal the whole frame's.",
                *size,
                tile,
                margin,
                self.pixel_budget,
            )
        return run_in_tiles(self._backbone(), frame, tile, margin, max(strides), strides)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised backbone features, the flows' input: one ``(N, C_s, H_s, W_s)`` map per scale."""
        return self.normalise(self.backbone_features(images))

    def frame_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone features training takes from each frame: :meth:`backbone_features`, or its tiles' features.

        With :attr:`tiler` set, each frame's tiles go through the backbone and their features stay grouped by
        frame, ``(N, T, C_s, h_s, w_s)`` for ``T`` tiles, so that the feature cache, which keys one entry per frame
        (image path), holds all of a frame's tiles. :meth:`normalise` and :meth:`normalise_crops` take the tiles as
        a batch of their own.
        """
        if self.tiler is None:
            return self.backbone_features(images)
        features = self.backbone_features(self._tiles(images, self.tiler))
        return [feature.unflatten(0, (images.shape[0], -1)) for feature in features]

    def _tiles(self, images: torch.Tensor, tiler: Tiler) -> torch.Tensor:
        """``tiler``'s tiles of ``images``, ``(N * T, 3, h, w)`` frame by frame, once the tile size is checked.

        Raises:
            ValueError: Tiles below the coarsest stride, or other than the only size a fixed-size ViT runs at.
        """
        tile = (tiler.tile_size_h, tiler.tile_size_w)
        minimum = max(self.feature_extractor.strides)
        fixed = self.feature_extractor.fixed_input_size
        if min(tile) < minimum or fixed not in {None, tile}:
            needed = f"exactly {fixed}" if fixed is not None else f"at least {minimum} pixels per side"
            msg = (
                f"The tiler's tiles of {tile} pixels do not fit backbone {self.config.backbone!r}: set the "
                f"TilerConfigurationCallback's tile_size to {needed}."
            )
            raise ValueError(msg)
        return tiler.tile(images)

    def normalise_crops(
        self,
        backbone_features: list[torch.Tensor],
        crop_size: tuple[int, int],
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Normalised features of a random ``crop_size`` part of each whole frame: what training on crops sees.

        Each frame is standardised over its whole feature map, then cropped, and the crop gets the part of the
        learned affine at its place. So a crop's features are exactly the whole frame's features there, as scoring
        the whole frame computes them. The crop starts on the coarsest stride's grid, so it covers whole feature
        pixels at every scale.

        Args:
            backbone_features: The frozen backbone's features of whole frames, one ``(N, C_s, H_s, W_s)`` per scale,
                or of tiled frames from :meth:`frame_features`, whose tiles are then cropped as frames.
            crop_size: ``(h, w)`` in image pixels, multiples of the coarsest stride.
            generator: Random generator for the crops' places. Defaults to ``None`` (torch's global one).

        Returns:
            One ``(N, C_s, h / s, w / s)`` map per scale.
        """
        backbone_features = _tiles_as_batch(backbone_features)
        strides = self.feature_extractor.strides
        align = max(strides)
        # The last whole crop on the grid that every scale's map holds (a frame off the grid has ragged ends).
        limits = [
            min(feature.shape[axis] * stride for feature, stride in zip(backbone_features, strides, strict=True))
            - crop_size[index]
            for index, axis in enumerate((-2, -1))
        ]
        if min(limits) < 0:
            msg = (
                f"Training crops of {tuple(crop_size)} pixels are larger than the frames' features cover. Set "
                "train_crop_size to at most the input size (the tile size with anomalib's tiler)."
            )
            raise ValueError(msg)
        count = backbone_features[0].shape[0]
        # Drawn on the CPU, where the default generator (the one seed_everything seeds) lives.
        places = [
            (torch.randint(limit // align + 1, (count,), generator=generator) * align).tolist() for limit in limits
        ]
        crops = []
        for norm, feature, stride in zip(self.norms, backbone_features, strides, strict=True):
            weight, bias = cast("ChannelNorm | PositionNorm", norm).affine(feature.shape[-2:])
            standardised = standardise(feature)
            height, width = crop_size[0] // stride, crop_size[1] // stride
            windows = [
                (slice(top // stride, top // stride + height), slice(left // stride, left // stride + width))
                for top, left in zip(*places, strict=True)
            ]
            crops.append(
                torch.stack(
                    [
                        standardised[index, :, rows, columns] * weight[:, rows, columns] + bias[:, rows, columns]
                        for index, (rows, columns) in enumerate(windows)
                    ]
                )
            )
        return crops

    def normalise(self, backbone_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply each scale's (trainable) normalisation to the frozen backbone's features.

        Split from :meth:`features` so that training can reuse cached backbone features. Tiled frames' features
        from :meth:`frame_features`, ``(N, T, C_s, h_s, w_s)``, come out as a batch of ``N * T`` tiles.
        """
        return [norm(feature) for norm, feature in zip(self.norms, _tiles_as_batch(backbone_features), strict=True)]

    def encode(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Map normalised features to latents with each scale's flow, with the log-determinants the loss needs.

        Returns:
            Latent maps (same shapes as ``features``) and ``log|det dz/dx|`` of shape ``(N,)`` per scale.
        """
        if self._compiled:
            # CUDA-graph modes reuse their memory at the next call; mark the step so that they may.
            torch.compiler.cudagraph_mark_step_begin()
        latents, log_jacobians = [], []
        for index, (flow, feature) in enumerate(zip(self.flows, features, strict=True)):
            run = cast(
                "Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]", self._compiled.get(f"flow{index}", flow)
            )
            latent, log_jacobian = run(feature)
            latents.append(latent)
            log_jacobians.append(log_jacobian)
        return latents, log_jacobians

    def latents(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map normalised features to latents for inference: no log-determinants, folded coupling parameters.

        Within :attr:`pixel_budget`, counted in the image pixels a feature map covers: a larger batch runs in
        parts, and a larger frame in tiles.
        """
        strides = self.feature_extractor.strides
        return [
            self._flow_latents(cast("Flow2D", flow), feature, stride)
            for flow, feature, stride in zip(self.flows, features, strides, strict=True)
        ]

    def _flow_latents(self, flow: Flow2D, features: torch.Tensor, stride: int) -> torch.Tensor:
        def run(part: torch.Tensor) -> list[torch.Tensor]:
            return [flow.latent(part)]

        def run_tiled(frame: torch.Tensor) -> list[torch.Tensor]:
            margin = flow.receptive_radius
            tile = max(math.isqrt(self.pixel_budget) // stride, 2 * margin + 1)
            return run_in_tiles(run, frame, tile, margin, 1, [1])

        return self._within_budget(run, features, stride, run_tiled)[0]

    def anomaly_map(self, latents: list[torch.Tensor], image_size: tuple[int, int]) -> InferenceBatch:
        """Scores ``(N, 1)`` and anomaly maps ``(N, 1, H, W)`` of ``(H, W)`` images from their latents."""
        anomaly_map, pred_score = self.anomaly_map_generator(latents, image_size=image_size)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)

    def decode(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map latents back to normalised features: the exact inverse of :meth:`encode`."""
        return [cast("Flow2D", flow).inverse(latent) for flow, latent in zip(self.flows, latents, strict=True)]

    def feature_shapes(self, image_size: tuple[int, int]) -> list[torch.Size]:
        """Shape ``(C_s, H_s, W_s)`` of each scale's features for ``(H, W)`` images, from a pass on a blank image."""
        return self.feature_extractor.feature_shapes(image_size)

    def sample(
        self,
        num_samples: int,
        image_size: tuple[int, int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Draw "typical normal" feature maps: ``z ~ N(0, temperature^2 I)`` per scale, mapped through :meth:`decode`.

        A temperature below 1 keeps to the likelier centre of the latent distribution (as in Glow), so samples
        look more like the training features' average; 1 draws from the distribution the flows learned.

        Args:
            num_samples: Number of feature maps per scale.
            image_size: ``(H, W)`` of the images whose features are imitated.
            temperature: Standard deviation of ``z``. Defaults to ``1.0``.
            generator: Random generator, for reproducible samples. Defaults to ``None`` (torch's global one).

        Returns:
            One ``(num_samples, C_s, H_s, W_s)`` map of normalised features per scale.
        """
        _check_positive(num_samples=num_samples, temperature=temperature)
        parameter = next(self.flows.parameters())
        latents = [
            temperature
            * torch.randn((num_samples, *shape), generator=generator, device=parameter.device, dtype=parameter.dtype)
            for shape in self.feature_shapes(image_size)
        ]
        return self.decode(latents)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score pre-processed images ``(N, 3, H, W)``: ``pred_score`` ``(N, 1)`` and ``anomaly_map`` ``(N, 1, H, W)``.

        Runs compiled after :meth:`compile`; the results are then copies, valid after the next call.

        With :attr:`tiler` set, each tile is scored as a frame of its own, the tiles' anomaly maps are put together
        by ``tiler.untile`` (overlaps averaged) and the image score is taken from that whole map. The maps are
        untiled, not the features (as anomalib's Padim does), because the flows learned each tile's features
        standardised over that tile: features stitched first would be standardised over the whole frame, which
        the flows never saw. The map is a per-pixel likelihood, so averaging overlapping tiles' maps keeps its
        meaning.
        """
        if self.tiler is not None:
            tiler = self.tiler
            anomaly_map = tiler.untile(cast("torch.Tensor", self._score(self._tiles(images, tiler)).anomaly_map))
            return InferenceBatch(pred_score=self.anomaly_map_generator.score(anomaly_map), anomaly_map=anomaly_map)
        return self._score(images)

    def _score(self, images: torch.Tensor) -> InferenceBatch:
        if "inference" not in self._compiled or self._bounded(images):
            return self._infer(images)
        torch.compiler.cudagraph_mark_step_begin()
        predictions = cast("InferenceBatch", self._compiled["inference"](images))
        return InferenceBatch(**{key: _copy(value) for key, value in predictions._asdict().items()})

    def _infer(self, images: torch.Tensor) -> InferenceBatch:
        # oneDNN convolves channels-last tensors without reordering them, and the layout carries through the model.
        images = images.contiguous(memory_format=torch.channels_last)
        extract = self.backbone_features if self._bounded(images) else self.feature_extractor
        features = self.normalise(extract(images))
        return self.anomaly_map(self.latents(features), image_size=(images.shape[-2], images.shape[-1]))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            msg = f"{name} must be positive, got {value}."
            raise ValueError(msg)


def _copy(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.clone()


def _tiles_as_batch(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tiled frames' features ``(N, T, C, h, w)`` as a batch of tiles ``(N * T, C, h, w)``; others unchanged."""
    return [feature.flatten(0, 1) if feature.dim() == 5 else feature for feature in features]  # noqa: PLR2004 - (N, T, C, h, w)
