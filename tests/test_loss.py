# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import math
from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD

from anomalib_fastflow2d import Fastflow2D, Fastflow2DLoss
from tests.conftest import TINY_MODEL


def test_loss_is_batch_mean_of_summed_negative_log_likelihood() -> None:
    latents = [torch.tensor([[[[1.0, 2.0]]], [[[0.0, 3.0]]]]), torch.ones(2, 2, 1, 1)]
    log_jacobians = [torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.5])]
    # image 0: 0.5*(1+4) - 1 + 0.5*2 - 0.5 = 2.0; image 1: 0.5*9 + 1 + 1 - 0.5 = 6.0
    assert Fastflow2DLoss()(latents, log_jacobians).item() == pytest.approx(4.0)
    assert Fastflow2DLoss.dimensions(latents) == 4


def test_loss_falls_over_a_few_steps_on_demo_data(demo_root: Path) -> None:
    torch.manual_seed(0)
    datamodule = MVTecAD(root=demo_root, category="brick", train_batch_size=8, num_workers=0)
    datamodule.setup()
    model = Fastflow2D(**TINY_MODEL)
    optimizer = model.configure_optimizers()
    batches = [model.pre_processor.transform(batch.image) for batch in datamodule.train_dataloader()]
    model.model.train()
    losses = []
    for _ in range(5):
        for images in batches:
            loss = model.loss(*model.model.encode(model.model.features(images)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 0.1 * abs(first)
