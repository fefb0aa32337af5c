# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/large_frames.py (pairing by seed, a quick run of every model at full resolution) and its figure."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import large_frames
from benchmarks.harness.records import Record
from scripts import large_frames_figure


def test_ratios_and_differences_are_paired_by_seed() -> None:
    reference, ours = large_frames.MODELS[0], large_frames.MODELS[2]
    records = [
        Record(reference, "large frames", {"pixel_aupr": value}, {"seed": seed}) for seed, value in [(0, 0.1), (1, 0.2)]
    ] + [Record(ours, "large frames", {"pixel_aupr": value}, {"seed": seed}) for seed, value in [(1, 0.6), (0, 0.2)]]
    result = large_frames.paired(records, ours, "pixel_aupr")
    assert result["seeds"] == 2
    assert result["mean"] == pytest.approx(0.4)
    assert result["ratio"] == pytest.approx((2.0 + 3.0) / 2)
    assert result["difference"] == pytest.approx((0.1 + 0.4) / 2)


def test_table_of_an_earlier_run_puts_models_across_with_their_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        ("Fastflow 256", 0, 0.01),
        ("Fastflow 256", 1, 0.03),
        ("Fastflow2D crop", 0, 0.3),
        ("Fastflow2D crop", 1, 0.6),
    ]
    entries = [
        {"model": model, "mode": "large frames", "seed": seed, "pixel_aupr": value} for model, seed, value in runs
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": entries}), encoding="utf-8")

    assert large_frames.main(["--table", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| measure | Fastflow 256 (reference) | Fastflow2D crop |")
    assert lines[2].startswith("| pixel_aupr | 0.02 (0.014) | 0.45 (0.21), 25x | 2 |")


@pytest.mark.slow
def test_quick_run_scores_every_model_at_full_resolution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "large_frames.json"
    assert large_frames.main(["--quick", "--output", str(output)]) == 0
    report = json.loads(output.read_text())

    assert [record["model"] for record in report["records"]] == list(large_frames.DEFAULT_MODELS)
    for record in report["records"]:
        for measure in ("pixel_aupr", "pixel_auroc", "image_auroc"):
            assert 0.0 <= record[measure] <= 1.0
        assert record["epoch_s"] > 0
        assert record["openvino_ms_per_frame"] > 0
    assert {row["model"] for row in report["paired"]} == set(large_frames.DEFAULT_MODELS)
    assert "Fastflow2D crop" in capsys.readouterr().out


@pytest.mark.slow
def test_figure_script_draws_both_maps_of_a_defect(tmp_path: Path) -> None:
    output = tmp_path / "large_frames.png"
    arguments = ["--frame", "128", "--crop", "64", "--small", "64", "--epochs", "1", "--flow-steps", "1"]
    assert large_frames_figure.main([*arguments, "--output", str(output)]) == 0

    with Image.open(output) as figure:
        width, height = figure.size
        pixels = np.asarray(figure.convert("RGB"))
    assert width > 4 * height  # six panels side by side
    assert pixels.std() > 10  # drawn, not blank
