# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Frozen timm backbones that return the feature maps Fastflow2D's flows model.

Channels and strides are read from timm's ``feature_info``, never from backbone names, so any timm CNN with
``features_only`` works. Vision transformers give one map: the patch tokens after one block, through the backbone's
final norm, reshaped to ``(N, C, H/16, W/16)``.

Weights come from the model hub (``pre_trained=True``) or from a local file (``backbone_weights``) for machines
without hub access. A hub that cannot be reached fails at once with both fixes named, instead of after timm's
retries.
"""

import copy
import itertools
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import timm
import torch
from timm.models._features import FeatureGetterNet, FeatureInfo
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .coupling import exporting, tensor_versions
from .presets import BackboneKind

if TYPE_CHECKING:
    from timm.layers import PatchEmbed


log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0
"""How long to wait for the model hub's TCP handshake before declaring it unreachable."""


class BackboneWeightsUnavailableError(OSError):
    """Raised when pretrained weights are asked for but the model hub cannot deliver them."""


def _hub_endpoint() -> tuple[str, int]:
    from huggingface_hub import constants  # noqa: PLC0415 - only needed when downloading

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _hub_offline() -> bool:
    from huggingface_hub import constants  # noqa: PLC0415 - only needed when downloading

    return bool(constants.HF_HUB_OFFLINE)


def _hub_reachable() -> bool:
    host, port = _hub_endpoint()
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextmanager
def _hub_cache_only() -> Iterator[None]:
    """Let timm use weights already in the local hub cache, without network retries."""
    from huggingface_hub import constants  # noqa: PLC0415 - only needed when downloading

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def create_timm_model(
    name: str,
    pre_trained: bool,
    backbone_weights: str | os.PathLike[str] | None,
    **kwargs: Any,  # noqa: ANN401 - forwarded to timm.create_model unchanged
) -> nn.Module:
    """Create a timm model with weights from the hub, a local file, or random initialisation.

    Args:
        name: timm model name.
        pre_trained: Load the hub's pretrained weights. Ignored when ``backbone_weights`` is given.
        backbone_weights: Local weights file (``.pth``, ``.bin`` or ``.safetensors``) in timm's layout for ``name``.
        **kwargs: Passed to :func:`timm.create_model`.

    Returns:
        The timm model.

    Raises:
        FileNotFoundError: If ``backbone_weights`` does not exist.
        ValueError: If ``backbone_weights`` does not fit the backbone.
        BackboneWeightsUnavailableError: If pretrained weights cannot be downloaded.
    """
    if backbone_weights is not None:
        check_backbone_weights(name, backbone_weights)
        overlay = {"file": str(backbone_weights)}
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    if not pre_trained:
        return timm.create_model(name, pretrained=False, **kwargs)

    download_context: AbstractContextManager[None] = (
        _hub_cache_only() if _hub_offline() or not _hub_reachable() else nullcontext()
    )
    try:
        with download_context:
            return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:
        reason = "HF_HUB_OFFLINE is set" if _hub_offline() else f"the model hub at {_hub_endpoint()[0]} failed"
        msg = (
            f"Could not get pretrained weights for backbone {name!r} ({reason}; {error.__class__.__name__}). "
            "Either pass backbone_weights=/path/to/weights.pth (a local weights file for this backbone), "
            "or pre_trained=False to train from random weights."
        )
        raise BackboneWeightsUnavailableError(msg) from error


def check_backbone_weights(name: str, backbone_weights: str | os.PathLike[str]) -> None:
    """Raise a clear error unless ``backbone_weights`` is a readable file with exactly the weights of ``name``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is unreadable or holds weights of another architecture.
    """
    path = Path(backbone_weights)
    if not path.is_file():
        msg = f"backbone_weights file {str(path)!r} does not exist."
        raise FileNotFoundError(msg)
    try:
        _check_weights_fit(name, path)
    except (RuntimeError, KeyError, OSError, ValueError) as error:
        msg = f"backbone_weights file {str(path)!r} does not fit backbone {name!r}: {error}"
        raise ValueError(msg) from error


def _check_weights_fit(name: str, path: Path) -> None:
    """Raise unless ``path`` holds exactly the parameters of timm's ``name``, classifier aside.

    timm loads pretrained files leniently (extra keys are only logged), so weights of a deeper sibling such as
    ResNet34 would silently fill a ResNet18.
    """
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    pretrained_cfg: dict[str, Any] = getattr(reference, "pretrained_cfg", {})
    classifier = pretrained_cfg.get("classifier") or ()
    prefixes = tuple(f"{head}." for head in ((classifier,) if isinstance(classifier, str) else classifier))
    expected = {key: value.shape for key, value in reference.state_dict().items() if not key.startswith(prefixes)}
    loaded = {
        key: value.shape
        for key, value in timm.models.load_state_dict(str(path), device="cpu").items()
        if not key.startswith(prefixes)
    }
    missing = sorted(expected.keys() - loaded.keys())
    unexpected = sorted(loaded.keys() - expected.keys())
    mismatched = sorted(key for key in expected.keys() & loaded.keys() if expected[key] != loaded[key])
    if missing or unexpected or mismatched:
        msg = (
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}, "
            f"{len(mismatched)} keys of another shape {mismatched[:3]}"
        )
        raise ValueError(msg)


def fold_batch_norms(network: nn.Module) -> int:
    """Fold each ``BatchNorm2d`` that a ``Conv2d`` is registered just before into that convolution, in place.

    A frozen backbone's batch norms are fixed affine maps, so the convolution's weights and bias can absorb them;
    the norms become identities. Pairs are read from the order in which modules register their children, which is
    the order they run in timm's CNNs; :class:`FeatureExtractor` checks the result against the network on a probe.

    Returns:
        How many norms were folded.
    """
    folded = 0
    for parent in list(network.modules()):
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(list(parent.named_children())):
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.num_features == conv.out_channels:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(parent, norm_name, nn.Identity())
                folded += 1
    return folded


class FeatureExtractor(nn.Module):
    """A frozen timm backbone that returns a list of feature maps, coarsest last.

    Args:
        backbone: timm model name.
        kind: CNN feature pyramid or single-block ViT features.
        feature_stages: timm ``out_indices`` of the stages (CNN) or the transformer block (ViT).
        pre_trained: Load the hub's pretrained weights.
        backbone_weights: Local weights file, used instead of the hub when given.
        dynamic_size: ViT only: interpolate position embeddings so any input size runs. Without it the ViT only
            accepts the input size it was built for.

    Attributes:
        channels: Channels of each feature map.
        strides: Downsampling factor of each feature map relative to the input.

    Examples:
        >>> extractor = FeatureExtractor("resnet18", BackboneKind.CNN, (1, 2, 3), pre_trained=False)
        >>> extractor.channels, extractor.strides
        ([64, 128, 256], [4, 8, 16])
    """

    def __init__(
        self,
        backbone: str,
        kind: BackboneKind,
        feature_stages: Sequence[int],
        pre_trained: bool,
        backbone_weights: str | os.PathLike[str] | None = None,
        dynamic_size: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.backbone = backbone
        self.feature_stages = tuple(feature_stages)
        self.dynamic_size = dynamic_size
        self.fixed_input_size: tuple[int, int] | None = None
        self.network = self._create_network(pre_trained, backbone_weights)
        feature_info = cast("FeatureInfo", self.network.feature_info)
        self.channels: list[int] = list(feature_info.channels())
        self.strides: list[int] = list(feature_info.reduction())
        self.network.requires_grad_(requires_grad=False)
        self.network.eval()
        # The network with its batch norms folded (a plain list, so neither a submodule nor a state-dict key), and
        # the weights' and statistics' (address, version) it was folded from.
        self._folded: list[nn.Module] = []
        self._folded_from: tuple[tuple[int, int], ...] = ()

    def _create_network(self, pre_trained: bool, backbone_weights: str | os.PathLike[str] | None) -> nn.Module:
        if self.kind is BackboneKind.VIT:
            size_kwargs = {"dynamic_img_size": True} if self.dynamic_size else {}
            vit = create_timm_model(self.backbone, pre_trained, backbone_weights, **size_kwargs)
            patch_embed = cast("PatchEmbed", vit.patch_embed)
            if patch_embed.strict_img_size and patch_embed.img_size is not None:
                height, width = patch_embed.img_size
                self.fixed_input_size = (int(height), int(width))
            return FeatureGetterNet(vit, out_indices=self.feature_stages, norm=True, output_fmt="NCHW")
        try:
            return create_timm_model(
                self.backbone,
                pre_trained,
                backbone_weights,
                features_only=True,
                out_indices=self.feature_stages,
            )
        except (RuntimeError, IndexError, AttributeError, TypeError) as error:
            msg = (
                f"Backbone {self.backbone!r} cannot give feature stages {self.feature_stages} with timm's "
                f"features_only ({error}). Pick a timm CNN that supports features_only, or other feature_stages."
            )
            raise ValueError(msg) from error

    def load_pretrained_weights(self, backbone_weights: str | os.PathLike[str] | None = None) -> None:
        """Replace the backbone's weights with the hub's pretrained ones, or with ``backbone_weights``' content.

        Lets a model be built without the hub and receive its weights only when training needs them, so that
        rebuilding it to load a checkpoint (which holds the weights) never downloads anything.
        """
        pretrained_network = self._create_network(pre_trained=True, backbone_weights=backbone_weights)
        self.network.load_state_dict(pretrained_network.state_dict())

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Keep the frozen backbone in eval mode (batch-norm statistics and dropout stay fixed)."""
        del mode
        return super().train(mode=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Extract feature maps.

        Args:
            images: Normalised images of shape ``(N, 3, H, W)``.

        Returns:
            One ``(N, C_i, H / s_i, W / s_i)`` map per feature stage.
        """
        self._check_input_size((images.shape[-2], images.shape[-1]))
        with torch.no_grad():
            return list(self._network_for_inference()(images))

    def feature_shapes(self, image_size: tuple[int, int]) -> list[torch.Size]:
        """Shape ``(C_i, H_i, W_i)`` of each feature map for ``(H, W)`` images, from the network on a blank image.

        The network's own pass (nothing is folded for it), so padding and patch arithmetic are the backbone's.
        """
        self._check_input_size(image_size)
        parameter = next(self.network.parameters())
        probe = torch.zeros(1, 3, *image_size, device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            return [feature.shape[1:] for feature in self.network(probe)]

    def _check_input_size(self, size: tuple[int, int]) -> None:
        if self.fixed_input_size is not None and tuple(size) != self.fixed_input_size:
            msg = (
                f"This backbone only runs at input size {self.fixed_input_size}, got {tuple(size)}. "
                f"Resize images to {self.fixed_input_size} in the pre-processor."
            )
            raise ValueError(msg)

    def _network_for_inference(self) -> nn.Module:
        """The CNN with its batch norms folded (:func:`fold_batch_norms`), refolded when a weight or statistic changes.

        Eager runs only: exports and compiled graphs take :attr:`network`, whose norms OpenVINO and the compiler
        fold themselves. Folding saves the norms' passes over every feature map; the copy's weights are channels-last,
        the layout inference runs in. A network whose folded copy differs from it on a probe image (a norm
        registered beside a convolution that it does not follow) runs unfolded.
        """
        # Exports and compiled graphs hold fake tensors, without the address the cache key reads.
        cached = self.kind is BackboneKind.CNN and not (exporting() or torch.compiler.is_compiling())
        source = tensor_versions([*self.network.parameters(), *self.network.buffers()]) if cached else None
        if source is None:
            return self.network
        if source != self._folded_from:
            self._folded, self._folded_from = [self._checked_fold()], source
        return self._folded[0]

    def _checked_fold(self) -> nn.Module:
        folded = copy.deepcopy(self.network)
        if fold_batch_norms(folded) == 0:
            return self.network
        # Inference runs channels-last; weights in that layout are not reordered at every call.
        folded = folded.to(memory_format=torch.channels_last)
        parameter = next(self.network.parameters())
        probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(parameter)
        with torch.no_grad():
            expected, found = self.network(probe), folded(probe)
        for want, got in zip(expected, found, strict=True):
            if not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
                log.debug("Backbone %r runs with its batch norms: folded, it differs on a probe.", self.backbone)
                return self.network
        return folded

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the folded copy, which is rebuilt on first use."""
        state = self.__dict__.copy()
        state["_folded"], state["_folded_from"] = [], ()
        return state
