# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Training steps with a non-finite loss or gradient are skipped, counted, and stop training past a bound.

Normalizing flows can diverge: one step with a NaN gradient would otherwise turn every weight into NaN, and the
checkpoint written after it would be useless.
"""

import logging
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.optim import Optimizer

log = logging.getLogger(__name__)


class SkipNonFiniteSteps(LightningModule):
    """Mixin for a LightningModule: update the weights only when the loss and every gradient are finite.

    The module sets ``max_skipped_steps`` and ``lr`` (named in the error); ``skipped_steps`` counts the skipped
    steps, and ``weights_fitted`` becomes ``True`` at the first update.
    """

    max_skipped_steps: int
    lr: float
    skipped_steps: int = 0
    weights_fitted: bool = False

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step only if the loss and all gradients are finite on every process; count and log a skipped step.

        The decision is reduced over processes so that all DDP ranks skip the same steps.

        Raises:
            FloatingPointError: More than ``max_skipped_steps`` steps were skipped.
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
