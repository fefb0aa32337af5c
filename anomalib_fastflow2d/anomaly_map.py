# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""Anomaly maps and image scores from the flows' latent maps.

For each scale the per-pixel likelihood under the standard normal is turned into a score in ``[-1, 0]``:

.. math::

    a_s(h, w) = -\exp\Big(-\tfrac{1}{2}\,\tfrac{1}{C_s}\sum_c z_s(c, h, w)^2\Big)

Each map is resized bilinearly to the input size and the scales are averaged. Normal pixels (small ``z``) score near
-1, anomalous ones near 0; anomalib's post-processor then min-max normalises the scores with statistics from the
validation set. :func:`likelihood_score` is ``a_s`` and :func:`resize_and_average` the second step; the explanation
(:mod:`anomalib_fastflow2d.explain`) averages its own per-scale maps the same way.
"""

from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention

from .coupling import exporting


def likelihood_score(latent: torch.Tensor) -> torch.Tensor:
    """One scale's anomaly map ``a_s``, in ``[-1, 0]``, from its latent map.

    Args:
        latent: ``z_s``, ``(N, C_s, H_s, W_s)``.

    Returns:
        ``(N, 1, H_s, W_s)``.
    """
    return -torch.exp(-0.5 * torch.mean(latent**2, dim=1, keepdim=True))


def resize_and_average(maps: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
    """Resize per-scale maps ``(N, 1, H_s, W_s)`` bilinearly to ``image_size`` ``(H, W)`` and average them.

    Resizing is linear, so each map is divided by the number of maps before it is resized, and the resized maps
    are summed in place, without stacking full-size copies. Exports of fixed-size maps resize by matrix products
    instead (:func:`resize_by_matrices`).

    Returns:
        ``(N, 1, H, W)``.
    """
    resize = resize_by_matrices if exporting() and _static(maps[0].shape[-2:], image_size) else _bilinear
    resized = (resize(scale_map / len(maps), image_size) for scale_map in maps)
    average = next(resized)
    for scale_map in resized:
        average = average.add_(scale_map)
    return average


def resize_by_matrices(scale_map: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The bilinear resize of :func:`resize_and_average` as ``A_H @ map @ A_W^T``, for exported graphs.

    ``A_H`` ``(H, H_s)`` and ``A_W`` ``(W, W_s)`` are the resize's matrices along each axis, obtained by resizing an
    identity, so the values are ``F.interpolate``'s up to float rounding. OpenVINO's CPU plugin resizes a
    single-channel map in the flows' channels-last layout and leaves the post-processor's element-wise steps in that
    layout, where they run many times slower; two small matrix products give a planar map at a fraction of the
    time.
    """
    rows = _resize_matrix(scale_map.shape[-2], image_size[0], scale_map)
    columns = _resize_matrix(scale_map.shape[-1], image_size[1], scale_map)
    return rows @ scale_map @ columns.T


def _resize_matrix(size: int, new_size: int, like: torch.Tensor) -> torch.Tensor:
    """``(new_size, size)``: row ``i`` holds the weights of the inputs that output ``i`` of a bilinear resize mixes."""
    identity = torch.eye(size, dtype=like.dtype, device=like.device)[None, None]
    return _bilinear(identity, (new_size, size))[0, 0]


def _static(*sizes: Sequence[int]) -> bool:
    """Whether sizes are plain integers, not an export's symbolic ones (which matrices cannot be built for)."""
    return all(isinstance(value, int) for size in sizes for value in size)


def _bilinear(scale_map: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(scale_map, size=image_size, mode="bilinear", align_corners=False)


class ImageScore(str, Enum):
    """How the anomaly map is reduced to one score per image."""

    MAX = "max"
    """The most anomalous pixel: sensitive to small defects."""

    TOPK_MEAN = "topk_mean"
    """Mean of the top ``topk_fraction`` of pixels: less sensitive to a single noisy pixel."""


class AnomalyMapGenerator(nn.Module):
    """Turn per-scale latent maps into an input-sized anomaly map and an image score.

    Args:
        image_score: Reduction of the map to one score per image. Defaults to ``ImageScore.MAX``.
        topk_fraction: Fraction of pixels averaged by ``ImageScore.TOPK_MEAN``, in ``(0, 1]``. Defaults to ``0.01``.

    Examples:
        >>> generator = AnomalyMapGenerator()
        >>> latents = [torch.zeros(2, 4, 8, 8), torch.zeros(2, 8, 4, 4)]
        >>> anomaly_map, score = generator(latents, image_size=(32, 32))
        >>> anomaly_map.shape, score.tolist()
        (torch.Size([2, 1, 32, 32]), [[-1.0], [-1.0]])
    """

    def __init__(self, image_score: ImageScore | str = ImageScore.MAX, topk_fraction: float = 0.01) -> None:
        super().__init__()
        try:
            self.image_score = ImageScore(image_score)
        except ValueError:
            msg = f"image_score must be one of {[score.value for score in ImageScore]}, got {image_score!r}."
            raise ValueError(msg) from None
        if not 0.0 < topk_fraction <= 1.0:
            msg = f"topk_fraction must be in (0, 1], got {topk_fraction}."
            raise ValueError(msg)
        self.topk_fraction = topk_fraction

    def forward(self, latents: list[torch.Tensor], image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the anomaly map and the image score.

        Args:
            latents: One latent map ``(N, C_s, H_s, W_s)`` per scale.
            image_size: ``(H, W)`` of the input images.

        Returns:
            The anomaly map ``(N, 1, H, W)`` in ``[-1, 0]`` and the image score ``(N, 1)``.
        """
        anomaly_map = resize_and_average([likelihood_score(latent) for latent in latents], image_size)
        return anomaly_map, self.score(anomaly_map)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Reduce an anomaly map ``(N, 1, H, W)`` to image scores ``(N, 1)``, the shape anomalib's models give."""
        flat = anomaly_map.flatten(start_dim=1)
        if self.image_score is ImageScore.MAX:
            return flat.amax(dim=1, keepdim=True)
        top_k = max(1, round(self.topk_fraction * flat.shape[1]))
        return flat.topk(top_k, dim=1).values.mean(dim=1, keepdim=True)
