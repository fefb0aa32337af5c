# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/environment.py: cores apart from torch's threads, versions, and the commit id."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.harness.environment import PACKAGES, REPOSITORY, capture, commit_id, machine, versions


def test_cores_are_the_machines_and_torch_threads_are_recorded_apart() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = machine(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert found["cores"] == os.cpu_count()
    assert found["torch_threads"] == 1
    assert found["gpu"] is None
    assert found["cpu"]
    assert found["cudnn_benchmark"] is torch.backends.cudnn.benchmark
    assert found["tf32"] == {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


def test_versions_name_python_and_every_package() -> None:
    found = versions()
    assert list(found) == ["python", *PACKAGES]
    assert found["anomalib-fastflow2d"] == "0.1.0"
    assert versions(("no-such-package-anywhere",))["no-such-package-anywhere"] == "not installed"


def _git(repository: Path, *arguments: str) -> str:
    command = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@t", *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A git repository with one commit of one file."""
    _git(tmp_path, "init", "--quiet")
    (tmp_path / "code.py").write_text("x = 1\n", encoding="utf-8")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "--quiet", "-m", "first")
    return tmp_path


def test_commit_id_is_the_commit_of_a_clean_tree(repository: Path) -> None:
    head = _git(repository, "rev-parse", "HEAD")
    assert len(head) == 40
    assert commit_id(repository) == head
    (repository / "results.json").write_text("{}", encoding="utf-8")
    assert commit_id(repository) == head  # untracked output does not change the code that ran


def test_commit_id_marks_uncommitted_changes_dirty(repository: Path) -> None:
    (repository / "code.py").write_text("x = 2\n", encoding="utf-8")
    assert commit_id(repository) == _git(repository, "rev-parse", "HEAD") + "+dirty"


def test_commit_id_outside_git_is_unknown(tmp_path: Path) -> None:
    assert commit_id(tmp_path) == "unknown"


def test_capture_records_the_arguments_seed_and_this_checkouts_commit() -> None:
    environment = capture(3, torch.device("cpu"), ["--epochs", "2"])
    assert environment.command[1:] == ["--epochs", "2"]
    assert environment.seed == 3
    assert environment.commit == commit_id(REPOSITORY)
    assert environment.machine["cores"] == os.cpu_count()
