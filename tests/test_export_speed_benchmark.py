# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/export_speed.py: parity figures, file sizes, throughput, ratios and tables; one small end-to-end run."""

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import export_speed
from benchmarks.harness.memory import MIB
from benchmarks.harness.records import Record


def test_parity_compares_scores_maps_and_labels_with_the_reference() -> None:
    reference = {
        "pred_score": np.array([0.1, 0.9, 0.4, 0.8]),
        "anomaly_map": np.zeros((4, 1, 2, 2)),
        "pred_label": np.array([False, True, False, True]),
    }
    outputs = {
        "pred_score": np.array([0.1, 0.7, 0.4, 0.8]),
        "anomaly_map": np.full((4, 1, 2, 2), 0.5),
        "pred_label": np.array([False, True, True, True]),
    }
    masks = torch.tensor([0, 0, 0, 0] * 2 + [1, 1, 1, 1] * 2).int()  # the anomalous images' pixels are masked
    values = export_speed.parity(outputs, reference, torch.tensor([0, 1, 0, 1]).int(), masks)
    assert values == {
        "max_score_diff": pytest.approx(0.2),
        "max_map_diff": 0.5,
        "labels_equal": 3,
        "images": 4,
        "image_auroc": 1.0,
        "pixel_auroc": 0.5,  # a constant map ranks no pixel above another
    }


def test_file_size_is_the_export_folders_and_eager_has_none(tmp_path: Path) -> None:
    (tmp_path / "model.xml").write_bytes(b"\0" * MIB)
    (tmp_path / "model.bin").write_bytes(b"\0" * (MIB // 2))
    assert export_speed.files_mib(tmp_path / "model.xml") == {"file_mib": 1.5}
    assert export_speed.files_mib(None) == {}


def test_throughput_is_images_per_second_of_every_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_speed, "PAUSE_S", 0.0)
    calls: list[int] = []

    def runner(images: np.ndarray) -> export_speed.Outputs:
        calls.append(len(images))
        return {}

    rates = export_speed.throughput({"a": runner, "b": runner}, np.zeros((4, 3, 2, 2)), rounds=2, seconds=0.0)
    assert set(rates) == {"a", "b"}
    assert all(rate > 0 for rate in rates.values())
    assert calls == [4] * 6  # one warm-up call each, then one call per runner and round


def test_export_table_shows_each_runtime_beside_the_same_models_eager() -> None:
    common = {"max_score_diff": 0.0, "max_map_diff": 0.0, "images": 48, "image_auroc": 0.9, "pixel_auroc": 0.95}
    records = [
        Record("Fastflow2D", "PyTorch eager", {**common, "labels_equal": 48, "images_per_s_batch1": 10.0}),
        Record(
            "Fastflow2D",
            "ONNX Runtime",
            {**common, "file_mib": 3.14, "max_map_diff": 2e-6, "labels_equal": 47, "images_per_s_batch1": 25.0},
        ),
        Record("Fastflow", "PyTorch eager", {**common, "labels_equal": 48, "images_per_s_batch1": 5.0}),
        Record(
            "Fastflow",
            "OpenVINO FP32 (f32)",
            {**common, "file_mib": 3.0, "labels_equal": 48, "images_per_s_batch1": 20.0},
        ),
    ]
    assert export_speed.export_table(records, [1]).splitlines() == [
        (
            "| Runtime | Files MB | max score diff | max map diff | labels equal | AUROC | pixel AUROC "
            "| img/s batch 1 (x eager) |"
        ),
        "|---|---|---|---|---|---|---|---|",
        "| Fastflow2D PyTorch eager | - | 0.0e+00 | 0.0e+00 | 48/48 | 0.900 | 0.9500 | 10.0 (1.00) |",
        "| Fastflow2D ONNX Runtime | 3.1 | 0.0e+00 | 2.0e-06 | 47/48 | 0.900 | 0.9500 | 25.0 (2.50) |",
        "| Fastflow PyTorch eager | - | 0.0e+00 | 0.0e+00 | 48/48 | 0.900 | 0.9500 | 5.0 (1.00) |",
        "| Fastflow OpenVINO FP32 (f32) | 3.0 | 0.0e+00 | 0.0e+00 | 48/48 | 0.900 | 0.9500 | 20.0 (4.00) |",
    ]


def test_fastflow_runs_the_runtimes_it_is_compared_in_and_fastflow2d_all() -> None:
    runtimes = export_speed.MODEL_RUNTIMES
    assert runtimes == {
        "Fastflow2D": tuple(export_speed.RUNTIMES),
        "Fastflow": (
            "PyTorch eager",
            "OpenVINO FP32 (f32)",
            "OpenVINO FP32 (CPU default)",
            "OpenVINO INT8 PTQ (CPU default)",
            "OpenVINO INT8 PTQ (f32)",
        ),
    }
    assert set(export_speed.BUILDERS) == set(export_speed.MODEL_RUNTIMES)
    defaults = export_speed.parse_args([])
    assert defaults.batch_sizes == [1, 8]
    assert defaults.rounds >= 7


def test_main_refuses_a_model_without_eager_pytorch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PyTorch eager"):
        export_speed.main(["--output", str(tmp_path / "x.json")], {"Fastflow": ("OpenVINO FP32 (f32)",)})
    assert not (tmp_path / "x.json").exists()


def rates(model: str, runtime: str, batch1: float, batch8: float) -> Record:
    values = {"file_mib": 1.0, "max_score_diff": 0.0, "images_per_s_batch1": batch1, "images_per_s_batch8": batch8}
    return Record(model, runtime, values)


def test_compare_divides_fastflow2d_by_fastflow_for_every_runtime_both_ran() -> None:
    records = [
        rates("Fastflow2D", "PyTorch eager", 6.0, 16.0),
        rates("Fastflow2D", "ONNX Runtime", 30.0, 40.0),  # Fastflow has no ONNX Runtime row: no ratio
        rates("Fastflow2D", "OpenVINO FP32 (f32)", 20.0, 30.0),
        rates("Fastflow", "PyTorch eager", 3.0, 4.0),
        rates("Fastflow", "OpenVINO FP32 (f32)", 40.0, 0.0),  # a zero rate gives NaN, not an error
    ]
    ratios = export_speed.compare(records, [1, 8])
    assert [(ratio.model, ratio.mode) for ratio in ratios] == [
        ("Fastflow2D / Fastflow", "PyTorch eager"),
        ("Fastflow2D / Fastflow", "OpenVINO FP32 (f32)"),
    ]
    assert ratios[0].values == {"images_per_s_batch1": 2.0, "images_per_s_batch8": 4.0}
    assert ratios[1].values["images_per_s_batch1"] == 0.5
    assert np.isnan(ratios[1].values["images_per_s_batch8"])
    assert export_speed.ratio_table(records, ratios, [1, 8]).splitlines() == [
        ("| Runtime | batch 1: ratio (Fastflow2D / Fastflow img/s) | batch 8: ratio (Fastflow2D / Fastflow img/s) |"),
        "|---|---:|---:|",
        "| PyTorch eager | 2.00 (6.0 / 3.0) | 4.00 (16.0 / 4.0) |",
        "| OpenVINO FP32 (f32) | 0.50 (20.0 / 40.0) | nan (30.0 / 0.0) |",
    ]


SMALL_RUNTIMES = ("PyTorch eager", "OpenVINO FP32 (f32)", "OpenVINO FP32 (CPU default)")
"""The end-to-end run's runtimes: one export per model (each about ten seconds), two OpenVINO configs."""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One run of ``main`` at 64 px, two flow steps, one epoch, two rounds per batch size: the report and tables."""
    output = tmp_path_factory.mktemp("export_speed") / "report.json"
    arguments = ["--size", "64", "--flow-steps", "2", "--epochs", "1", "--rounds", "2", "--seconds", "0.05"]
    arguments += ["--batch-sizes", "1", "2"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(export_speed, "PAUSE_S", 0.0)
        code = export_speed.main(
            [*arguments, "--output", str(output)], dict.fromkeys(("Fastflow2D", "Fastflow"), SMALL_RUNTIMES)
        )
    assert code == 0
    return json.loads(output.read_text(encoding="utf-8")), printed.getvalue()


@pytest.mark.slow
def test_small_run_measures_both_models_in_every_runtime(small_run: tuple[dict[str, Any], str]) -> None:
    report, printed = small_run
    records = {(record["model"], record["mode"]): record for record in report["records"]}
    models = ("Fastflow2D", "Fastflow")
    assert set(records) == {
        (model, runtime) for model in (*models, "Fastflow2D / Fastflow") for runtime in SMALL_RUNTIMES
    }
    for model in models:
        assert f"| {model} OpenVINO FP32 (f32) |" in printed
        for runtime in SMALL_RUNTIMES:
            record = records[model, runtime]
            assert record["images"] == 24
            assert record["images_per_s_batch1"] > 0
            assert record["images_per_s_batch2"] > 0
            assert record["image_auroc"] > 0.5, (model, runtime)
        eager = records[model, "PyTorch eager"]
        assert (eager["max_score_diff"], eager["max_map_diff"], eager["labels_equal"]) == (0.0, 0.0, 24)
        # Each export against its own model's eager PyTorch: float32 throughout on this CPU at the f32 hint.
        exported = records[model, "OpenVINO FP32 (f32)"]
        assert exported["max_score_diff"] < 1e-3
        assert exported["max_map_diff"] < 1e-3
        assert exported["labels_equal"] == 24
        assert exported["image_auroc"] == pytest.approx(eager["image_auroc"], abs=1e-3)
        assert exported["file_mib"] > 1
    # Both models got the same flow settings: Fastflow2D's preset for resnet18 at 64 px, with two flow steps.
    assert report["flow"]["config"] | {"input_size": report["flow"]["input_size"]} == {
        "backbone": "resnet18",
        "feature_stages": [1, 2, 3],
        "flow_steps": 2,
        "conv3x3_only": True,
        "hidden_ratio": 1.0,
        "feature_norm": "position",
        "input_size": [64, 64],
    }


@pytest.mark.slow
def test_small_run_stores_and_prints_the_ratio_of_each_pair(small_run: tuple[dict[str, Any], str]) -> None:
    report, printed = small_run
    records = {(record["model"], record["mode"]): record for record in report["records"]}
    for runtime in SMALL_RUNTIMES:
        ratio = records["Fastflow2D / Fastflow", runtime]
        assert set(ratio) == {"model", "mode", "images_per_s_batch1", "images_per_s_batch2"}
        for measure in ("images_per_s_batch1", "images_per_s_batch2"):
            candidate, reference = records["Fastflow2D", runtime][measure], records["Fastflow", runtime][measure]
            assert ratio[measure] == pytest.approx(candidate / reference)
        batch1 = ratio["images_per_s_batch1"]
        rate2d, rate = (
            records["Fastflow2D", runtime]["images_per_s_batch1"],
            records["Fastflow", runtime]["images_per_s_batch1"],
        )
        assert f"| {runtime} | {batch1:.2f} ({rate2d:.1f} / {rate:.1f}) |" in printed
    assert "\nFastflow2D / Fastflow\n" in printed
