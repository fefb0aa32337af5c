# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What a run was measured with: command, seed, package versions, machine and commit id.

Every script records all of it, so that a number in the docs can be traced to the code and machine behind it.
"""

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parents[2]
"""The checkout the benchmarks run from, whose commit is recorded."""

PACKAGES = ("anomalib-fastflow2d", "anomalib", "torch", "timm", "lightning", "openvino", "nncf", "onnxruntime")
"""Packages whose versions every run records: the measured code and the runtimes it is measured with."""


@dataclass(frozen=True)
class Environment:
    """What one run was measured with.

    Attributes:
        command: The script's name and its arguments.
        seed: The seed of the run's data and models.
        machine: From :func:`machine`.
        versions: From :func:`versions`.
        commit: From :func:`commit_id`.
    """

    command: list[str]
    seed: int
    machine: dict[str, Any]
    versions: dict[str, str]
    commit: str

    def as_json(self) -> dict[str, Any]:
        """The report's header: ``{"command": ..., "seed": ..., "machine": ..., "versions": ..., "commit": ...}``."""
        return asdict(self)


def capture(seed: int, device: torch.device, argv: Sequence[str] | None = None) -> Environment:
    """The environment of this process, for a run with ``seed`` on ``device``.

    Args:
        seed: The run's seed.
        device: The device measured on.
        argv: The arguments the script's ``main`` parsed. Defaults to ``None``: the process's own.

    Returns:
        The script's name and arguments, the seed, the machine, the versions and the commit id.
    """
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    return Environment(command, seed, machine(device), versions(), commit_id(REPOSITORY))


def machine(device: torch.device) -> dict[str, Any]:
    """The CPU model, its core count, the threads torch uses (apart: they may differ), the GPU on CUDA.

    Also the backend settings that change GPU numbers: cuDNN's autotuning and TF32 for matmuls and convolutions.
    """
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(encoding="utf-8").splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "platform": platform.platform(),
    }


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Python's version and each package's, ``"not installed"`` for one imported from a source tree or absent."""
    return {"python": platform.python_version(), **{package: _version(package) for package in packages}}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def commit_id(repository: Path) -> str:
    """The checked-out commit, ``+dirty`` when tracked files have uncommitted changes, ``"unknown"`` outside git.

    Untracked files (results, scratch data) do not count: they do not change the code that ran.
    """
    try:
        commit = _git(repository, "rev-parse", "HEAD")
        dirty = _git(repository, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _git(repository: Path, *arguments: str) -> str:
    command = ["git", "-C", str(repository), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603
