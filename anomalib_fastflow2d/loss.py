# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""Negative log-likelihood of features under the flows, the training objective of Fastflow2D.

By the change-of-variables formula, with ``z = f(x)`` and a standard normal prior on ``z``,

.. math::

    -\log p(x) = \tfrac{1}{2}\lVert z \rVert^2 - \log\left|\det \tfrac{\partial z}{\partial x}\right|
                  + \tfrac{D}{2}\log 2\pi

The constant is dropped; the rest is summed over scales and averaged over the batch. It is computed in float32 even
under mixed precision: log-determinants summed over a feature map lose too much in bfloat16.
"""

import torch
from torch import nn


class Fastflow2DLoss(nn.Module):
    """Negative log-likelihood of the features, summed over scales and averaged over the batch.

    Examples:
        >>> loss = Fastflow2DLoss()
        >>> latents = [torch.zeros(2, 3, 4, 4)]
        >>> log_jacobians = [torch.full((2,), 5.0)]
        >>> loss(latents, log_jacobians)
        tensor(-5.)
    """

    @staticmethod
    def forward(latents: list[torch.Tensor], log_jacobians: list[torch.Tensor]) -> torch.Tensor:
        """Compute the loss.

        Args:
            latents: One latent map ``(N, C_s, H_s, W_s)`` per scale.
            log_jacobians: ``log|det dz/dx|`` of shape ``(N,)`` per scale.

        Returns:
            The scalar loss in nats per image, in float32 (or wider).
        """
        with torch.autocast(latents[0].device.type, enabled=False):
            per_image = sum(
                0.5 * _at_least_float32(latent).pow(2).flatten(start_dim=1).sum(dim=1) - _at_least_float32(log_jacobian)
                for latent, log_jacobian in zip(latents, log_jacobians, strict=True)
            )
            return torch.as_tensor(per_image).mean()

    @staticmethod
    def dimensions(latents: list[torch.Tensor]) -> int:
        """Number of modelled dimensions per image, to express the loss in nats per dimension.

        Nats per dimension compare across backbones and input sizes, where nats per image do not.
        """
        return sum(latent[0].numel() for latent in latents)


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float64 else tensor.float()
