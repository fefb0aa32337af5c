# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""Explain a Fastflow2D anomaly with the inverse flows, and draw typical normal features.

The flows are invertible, so the latent maps ``z`` can be edited and mapped back to features. An anomalous pixel
has a latent far outside the typical shell of :math:`N(0, I_C)`, whose radius is about :math:`\sqrt{C}`. Shrinking
each latent toward 0 onto that shell and inverting gives a *repaired* feature map: what the model considers the
nearest normal features. The distance between the original and the repaired features is zero where nothing was
changed and large where the model had to repair, so it localises the anomaly at feature level.

This package holds the maths (:func:`explain`); :mod:`anomalib_fastflow2d.explain.figures` draws it, and the
command line (``anomalib_fastflow2d/explain/__main__.py``)::

    python -m anomalib_fastflow2d.explain --ckpt_path model.ckpt --image defect.png --out figures/

writes ``figures/defect_explanation.png`` (input, per-pixel negative log-likelihood, repair distance, and per
scale the ``z`` map, original, repaired features and distance) and ``figures/samples.png`` (real features beside
features sampled from the flows at several temperatures).

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (section "Feature visualization and generation").
"""

import copy
import math
from dataclasses import dataclass

import torch

from anomalib_fastflow2d.anomaly_map import resize_and_average
from anomalib_fastflow2d.torch_model import Fastflow2DModel

__all__ = ["Explanation", "explain", "feature_distance", "negative_log_likelihood", "repair_latent"]

LOG_2PI = math.log(2 * math.pi)


def negative_log_likelihood(latent: torch.Tensor) -> torch.Tensor:
    r"""Per-pixel negative log-likelihood of ``z`` under :math:`N(0, I)`, in nats per channel.

    Per channel, so that scales with different channel counts compare. The flows' log-Jacobian is one number per
    image and is left out, as the anomaly map leaves it out: the anomaly map of one scale is
    :math:`-\exp(-(\mathrm{NLL} - \tfrac{1}{2}\log 2\pi))`.

    Args:
        latent: Latent map ``(N, C, H, W)``.

    Returns:
        ``(N, 1, H, W)``.
    """
    return 0.5 * (latent.square().mean(dim=1, keepdim=True) + LOG_2PI)


def repair_latent(latent: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    r"""Shrink each pixel's latent toward 0, onto the ball of radius ``radius * sqrt(C)``.

    Latents inside the ball (normal pixels) stay as they are, so only the anomalous region is changed.

    Args:
        latent: Latent map ``(N, C, H, W)``.
        radius: Radius of the ball in units of :math:`\sqrt{C}`, the typical norm of :math:`N(0, I_C)`.
            Defaults to ``1.0``.

    Returns:
        The repaired latent map ``(N, C, H, W)``.
    """
    if not radius > 0:
        msg = f"radius must be positive, got {radius}."
        raise ValueError(msg)
    limit = radius * math.sqrt(latent.shape[1])
    norm = latent.norm(dim=1, keepdim=True)
    return latent * (limit / norm.clamp_min(limit))


def feature_distance(features: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Root mean square over channels of the difference of two feature maps ``(N, C, H, W)``: ``(N, 1, H, W)``."""
    return (features - other).square().mean(dim=1, keepdim=True).sqrt()


@dataclass(frozen=True)
class Explanation:
    """What the flows see in a batch of images; every list holds one ``(N, ., H_s, W_s)`` tensor per scale.

    Attributes:
        features: Normalised backbone features, the flows' input.
        latents: ``z``, the flows' output.
        repaired_latents: ``z`` shrunk onto the typical ball by :func:`repair_latent`.
        repaired_features: The repaired latents mapped back through the inverse flows.
        nll_maps: Per-pixel negative log-likelihood of ``z`` (:func:`negative_log_likelihood`).
        distance_maps: Distance between original and repaired features (:func:`feature_distance`).
        nll: ``nll_maps`` at the input size, averaged over scales as the anomaly map is: ``(N, 1, H, W)``.
        distance: ``distance_maps`` at the input size, averaged likewise: ``(N, 1, H, W)``.
    """

    features: list[torch.Tensor]
    latents: list[torch.Tensor]
    repaired_latents: list[torch.Tensor]
    repaired_features: list[torch.Tensor]
    nll_maps: list[torch.Tensor]
    distance_maps: list[torch.Tensor]
    nll: torch.Tensor
    distance: torch.Tensor


@torch.no_grad()
def explain(
    model: Fastflow2DModel, images: torch.Tensor, radius: float = 1.0, dtype: torch.dtype = torch.float64
) -> Explanation:
    """Encode images, repair their latents and decode them.

    Runs on a copy of the model in ``dtype``: an anomalous pixel's latent can reach ``|z| ~ 1e4``, which float32
    holds to only about ``1e-3``, and the inverse would carry that error into the repaired features.

    Args:
        model: A trained Fastflow2D model.
        images: Pre-processed (resized, normalised) images ``(N, 3, H, W)``.
        radius: See :func:`repair_latent`. Defaults to ``1.0``.
        dtype: Floating-point type of the computation. Defaults to ``torch.float64``.

    Returns:
        The per-scale maps and their input-sized averages, in ``dtype``.

    Examples:
        >>> from anomalib_fastflow2d.presets import resolve
        >>> model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False).eval()
        >>> explanation = explain(model, torch.randn(2, 3, 64, 64))
        >>> explanation.distance.shape, [tuple(z.shape) for z in explanation.latents][0]
        (torch.Size([2, 1, 64, 64]), (2, 64, 16, 16))
    """
    model = copy.deepcopy(model).to(dtype)
    features = model.features(images.to(dtype))
    latents, _ = model.encode(features)
    repaired_latents = [repair_latent(latent, radius) for latent in latents]
    repaired_features = model.decode(repaired_latents)
    nll_maps = [negative_log_likelihood(latent) for latent in latents]
    distance_maps = [
        feature_distance(feature, repaired) for feature, repaired in zip(features, repaired_features, strict=True)
    ]
    image_size = (images.shape[-2], images.shape[-1])
    # The per-scale lists in the fields' order, named as the fields.
    per_scale = (features, latents, repaired_latents, repaired_features, nll_maps, distance_maps)
    return Explanation(
        *per_scale,
        nll=resize_and_average(nll_maps, image_size),
        distance=resize_and_average(distance_maps, image_size),
    )
