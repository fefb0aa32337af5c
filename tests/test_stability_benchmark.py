# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/stability.py: a short run records a finite loss curve per preset and the table."""

import json
import math
from pathlib import Path

import pytest

from benchmarks import stability


def test_short_run_records_finite_losses(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "stability.json"
    arguments = ["--backbones", "resnet18", "--epochs", "2", "--size", "64", "--data-root", str(demo_root)]
    assert stability.main([*arguments, "--output", str(output)]) == 0
    (record,) = json.loads(output.read_text())
    assert record["backbone"] == "resnet18"
    assert record["epochs"] == 2
    assert record["finite"] is True
    assert len(record["losses"]) == 2
    assert all(math.isfinite(loss) for loss in record["losses"])
    assert "| resnet18 | 2 | True |" in capsys.readouterr().out
