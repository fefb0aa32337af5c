# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/norms.py: paired differences by seed, and one short run of every model on the aligned photographs."""

import json
from pathlib import Path

import pytest

from benchmarks import norms
from benchmarks.harness.records import Record


def test_differences_are_paired_by_seed() -> None:
    records = [
        Record("A", "data", {"pixel_auroc": value}, {"seed": seed}) for seed, value in [(0, 0.90), (1, 0.80), (2, 0.70)]
    ] + [
        Record("B", "data", {"pixel_auroc": value}, {"seed": seed}) for seed, value in [(2, 0.60), (0, 0.85), (1, 0.81)]
    ]
    result = norms.paired(records, "data", "A", "B", "pixel_auroc")
    assert result["seeds"] == 3
    assert result["wins"] == 2
    assert result["mean"] == pytest.approx((0.05 - 0.01 + 0.10) / 3)
    assert result["std"] > 0


def test_other_size_is_non_square_and_a_multiple_of_the_coarsest_stride() -> None:
    assert norms.other_size(256) == (192, 320)
    assert norms.other_size(64) == (48, 80)


def test_one_seed_runs_every_model_and_writes_the_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "norms.json"
    arguments = ["--seeds", "1", "--size", "64", "--epochs", "1", "--flow-steps", "1", "--datasets", "aligned chelsea"]
    assert norms.main([*arguments, "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert [record["model"] for record in report["records"]] == list(norms.MODELS)
    for record in report["records"]:
        assert 0.0 <= record["pixel_auroc"] <= 1.0
        assert ("pixel_auroc_other_size" in record) == record["model"].startswith("Fastflow2D")
    assert {row["measure"] for row in report["paired"]} >= {"pixel_auroc", "pixel_auroc_other_size"}
    assert "Fastflow2D position - Fastflow" in capsys.readouterr().out
