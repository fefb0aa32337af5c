# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""How long, on what data and on which device the side-by-side modes measure."""

from dataclasses import dataclass, field

import torch

PRECISIONS = ("32-true", "bf16-mixed")
"""Lightning precisions the run can use; the second also puts the eager and step modes under bfloat16 autocast."""


@dataclass(frozen=True)
class DataSettings:
    """The generated demo data both models train and test on."""

    category: str = "brick"
    image_size: int = 128
    num_train: int = 48
    num_test_normal: int = 12
    num_test_anomalous: int = 12


@dataclass(frozen=True)
class RunSettings:
    """How long and how often each model is measured."""

    device: str = "cpu"
    precision: str = "32-true"
    epochs: int = 5
    batch_size: int = 16
    warmup: int = 3
    repeats: int = 10
    seed: int = 42
    num_workers: int = 0
    data: DataSettings = field(default_factory=DataSettings)


def autocast(run: RunSettings) -> torch.autocast:
    """bfloat16 autocast on the run's device under ``bf16-mixed``; a disabled one otherwise."""
    device_type = torch.device(run.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=run.precision == "bf16-mixed")
