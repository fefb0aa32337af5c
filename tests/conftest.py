# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Shared fixtures: offline settings, a tiny demo dataset, and tiny model settings."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# No test may reach the model hub: a stray download must fail at once rather than retry for ~50 s.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from anomalib_fastflow2d._hook import DISABLE_VARIABLE
from fastflow2d_demo_data import generate_demo_dataset

TINY_DATA: dict[str, Any] = {"image_size": 64, "num_train": 16, "num_test_normal": 6, "num_test_anomalous": 6}
"""Enough images for every metric to be defined, small enough for a CPU epoch in about a second."""

TINY_MODEL: dict[str, Any] = {"backbone": "resnet18", "pre_trained": False, "flow_steps": 2, "input_size": (64, 64)}
"""A Fastflow2D that trains in seconds on 2 cores."""

TINY_MODEL_CLI: list[str] = [
    "--model",
    "Fastflow2D",
    "--model.pre_trained",
    "false",
    "--model.flow_steps",
    str(TINY_MODEL["flow_steps"]),
    "--model.input_size",
    str(list(TINY_MODEL["input_size"])),
]
"""The same tiny model as arguments of the stock anomalib CLI."""


ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
"""The stock anomalib command of this environment."""


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command offline, with the start-up hook enabled unless ``env`` disables it, and capture its output."""
    environment = {name: value for name, value in os.environ.items() if name != DISABLE_VARIABLE}
    environment.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200", **env)
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MVTec-style dataset with the ``brick`` category."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), categories=["brick"], **TINY_DATA)
