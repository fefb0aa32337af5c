# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/harness/records.py: ratios, markdown tables and the JSON report."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from benchmarks.harness.environment import REPOSITORY, capture, commit_id
from benchmarks.harness.records import (
    Record,
    format_number,
    markdown_table,
    measure_table,
    non_finite,
    ratios,
    write_report,
)

LABELS = {"images_per_s": "images/s", "epoch_s": "epoch after the first (s)", "image_auroc": "image AUROC"}


def _records() -> list[Record]:
    return [
        Record("Fastflow2D", "train", {"images_per_s": 30.0, "epoch_s": 2.0}),
        Record("Fastflow", "train", {"images_per_s": 10.0, "epoch_s": 6.0}),
        Record("Fastflow2D", "test", {"image_auroc": 0.9}),
        Record("Fastflow", "test", {"image_auroc": 0.0}),
    ]


def test_ratios_divide_candidate_by_reference_per_mode_and_measure() -> None:
    divided = ratios(_records(), "Fastflow2D", "Fastflow")
    assert [(record.model, record.mode) for record in divided] == [
        ("Fastflow2D / Fastflow", "train"),
        ("Fastflow2D / Fastflow", "test"),
    ]
    assert divided[0].values == {"images_per_s": 3.0, "epoch_s": pytest.approx(1 / 3)}
    assert math.isnan(divided[1].values["image_auroc"])


def test_measure_table_has_a_row_per_mode_and_measure_and_a_column_per_model() -> None:
    records = _records()
    table = measure_table([*records, *ratios(records, "Fastflow2D", "Fastflow")], LABELS).splitlines()
    assert table[0] == "| mode | measure | Fastflow2D | Fastflow | Fastflow2D / Fastflow |"
    assert table[1] == "|---|---|---:|---:|---:|"
    assert table[2] == "| train | images/s | 30 | 10 | 3 |"
    assert table[3] == "| train | epoch after the first (s) | 2 | 6 | 0.3333 |"
    assert table[4] == "| test | image AUROC | 0.9 | 0 | nan |"
    assert len(table) == 5


def test_markdown_table_aligns_the_columns_it_is_told_to_the_right() -> None:
    table = markdown_table(["name", "n", "note"], [["a", "1", "x"], ["b", "22", "y"]], [False, True])
    assert table == "| name | n | note |\n|---|---:|---|\n| a | 1 | x |\n| b | 22 | y |"


def test_numbers_keep_four_digits_then_switch_to_thousands() -> None:
    assert [format_number(value) for value in (0.123456, 9999.4, 12345.6, -20000.0)] == [
        "0.1235",
        "9999",
        "12,346",
        "-20,000",
    ]


def test_non_finite_names_every_failed_measure() -> None:
    records = [Record("a", "train", {"x": 1.0, "y": math.nan}), Record("b", "test", {"z": math.inf})]
    assert non_finite(records) == [("a", "train", "y"), ("b", "test", "z")]


def test_record_json_is_flat_with_its_details_after_its_values() -> None:
    record = Record("resnet18", "train", {"epochs": 2}, {"finite": True, "losses": [1.0, 0.5]})
    assert record.as_json() == {"model": "resnet18", "mode": "train", "epochs": 2, "finite": True, "losses": [1.0, 0.5]}


def test_report_carries_seed_versions_machine_and_commit_before_the_records(tmp_path: Path) -> None:
    output = tmp_path / "nested" / "report.json"
    environment = capture(7, torch.device("cpu"), ["--quick"])
    write_report(output, environment, _records()[:1], {"settings": {"epochs": 2}})
    report = json.loads(output.read_text(encoding="utf-8"))
    assert list(report) == ["command", "seed", "machine", "versions", "commit", "settings", "records"]
    assert report["command"][1:] == ["--quick"]
    assert report["seed"] == 7
    assert report["machine"]["cores"] == os.cpu_count()
    assert report["versions"]["torch"]
    assert report["commit"] == commit_id(REPOSITORY)
    assert report["settings"] == {"epochs": 2}
    assert report["records"] == [{"model": "Fastflow2D", "mode": "train", "images_per_s": 30.0, "epoch_s": 2.0}]
