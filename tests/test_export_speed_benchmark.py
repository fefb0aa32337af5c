# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/export_speed.py: parity figures, file sizes, throughput and the table, without an export."""

from pathlib import Path

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


def test_export_table_shows_each_runtime_beside_eager() -> None:
    common = {"max_score_diff": 0.0, "max_map_diff": 0.0, "images": 48, "image_auroc": 0.9, "pixel_auroc": 0.95}
    records = [
        Record("PyTorch eager", "demo_test_set", {**common, "labels_equal": 48, "images_per_s_batch1": 10.0}),
        Record(
            "ONNX Runtime",
            "demo_test_set",
            {**common, "file_mib": 3.14, "max_map_diff": 2e-6, "labels_equal": 47, "images_per_s_batch1": 25.0},
        ),
    ]
    assert export_speed.export_table(records, [1]).splitlines() == [
        (
            "| Runtime | Files MB | max score diff | max map diff | labels equal | AUROC | pixel AUROC "
            "| img/s batch 1 (x eager) |"
        ),
        "|---|---|---|---|---|---|---|---|",
        "| PyTorch eager | - | 0.0e+00 | 0.0e+00 | 48/48 | 0.900 | 0.9500 | 10.0 (1.00) |",
        "| ONNX Runtime | 3.1 | 0.0e+00 | 2.0e-06 | 47/48 | 0.900 | 0.9500 | 25.0 (2.50) |",
    ]
