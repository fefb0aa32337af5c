# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/stability.py: a short run records a finite loss curve per preset, the environment and the table."""

import json
import math
from pathlib import Path

import pytest

from benchmarks import stability
from benchmarks.harness.environment import REPOSITORY, commit_id


def test_short_run_records_finite_losses(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "stability.json"
    arguments = ["--backbones", "resnet18", "--epochs", "2", "--size", "64", "--data-root", str(demo_root)]
    assert stability.main([*arguments, "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["seed"] == 0
    assert report["commit"] == commit_id(REPOSITORY)
    assert report["versions"]["anomalib-fastflow2d"] == "0.1.0"
    assert report["machine"]["cores"] >= 1
    (record,) = report["records"]
    assert record["model"] == "resnet18"
    assert record["mode"] == "train"
    assert record["epochs"] == 2
    assert record["finite"] is True
    assert len(record["losses"]) == 2
    assert all(math.isfinite(loss) for loss in record["losses"])
    assert "| resnet18 | 2 | True |" in capsys.readouterr().out
