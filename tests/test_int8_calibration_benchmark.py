# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/int8_calibration.py: the calibration views, their batches, the table, and one short run."""

import json
from pathlib import Path

import torch
from anomalib.data import ImageBatch

from benchmarks import int8_calibration
from benchmarks.harness.records import Record


def test_views_mirror_and_shift_the_images_at_their_size() -> None:
    ramp = torch.linspace(0, 1, 16).expand(2, 3, 8, 16).contiguous()  # brighter to the right
    mirrored, upside_down = int8_calibration.flips(ramp)
    assert torch.equal(mirrored, ramp.flip(-1))
    assert torch.equal(upside_down, ramp)  # a left-right ramp is the same upside down

    crops = int8_calibration.shifts(ramp)
    assert [crop.shape for crop in crops] == [ramp.shape] * 4
    top_left, top_right, bottom_left, _ = crops
    assert top_left.mean() < ramp.mean() < top_right.mean()
    assert torch.allclose(top_left, bottom_left)


def test_calibration_set_holds_every_view_in_shuffled_batches() -> None:
    images = torch.rand(4, 3, 8, 8)
    calibration = int8_calibration.calibration_images(images, "flips+shifts")
    assert len(calibration) == 4 * (1 + 2 + 4)
    assert torch.equal(int8_calibration.calibration_images(images, "plain"), images)

    batches = int8_calibration.calibration_batches(calibration, torch.Generator().manual_seed(0))
    assert all(isinstance(batch, ImageBatch) for batch in batches)
    batch_images = [batch.image for batch in batches if isinstance(batch.image, torch.Tensor)]
    assert [len(images) for images in batch_images] == [8, 8, 8, 4]
    shuffled = torch.cat(batch_images)
    assert not torch.equal(shuffled, calibration)
    assert torch.allclose(shuffled.sum(), calibration.sum())


def test_summary_gives_each_sets_range_over_repeats() -> None:
    def record(views: str, auroc: float, labels: int) -> Record:
        values = {"image_auroc": auroc, "image_auroc_drop": 1 - auroc, "labels_equal": labels, "images": 16}
        values |= {"max_score_diff": 0.1, "quantise_s": 10.0}
        return Record(views, int8_calibration.MODE, values, {"calibration_images": 16})

    records = [
        record("plain", 0.984, 15),
        record("plain", 1.0, 16),
        record("flips", 1.0, 16),
        record("flips", 0.9999, 16),
    ]
    assert int8_calibration.summary_table(records).splitlines()[2:] == [
        "| plain | 16 | 0.984 to 1.000 | 0.000 to 0.016 | 15 to 16/16 | 0.10 | 10 |",
        "| flips | 16 | 1.000 | 0.000 | 16/16 | 0.10 | 10 |",
    ]


def test_one_short_run_measures_an_int8_model_against_eager(tmp_path: Path) -> None:
    output = tmp_path / "int8_calibration.json"
    arguments = ["--size", "64", "--epochs", "1", "--flow-steps", "1", "--train-images", "8", "--repeats", "1"]
    arguments += ["--views", "plain"]
    assert int8_calibration.main([*arguments, "--output", str(output)]) == 0
    (record,) = json.loads(output.read_text())["records"]
    assert record["model"] == "plain"
    assert record["calibration_images"] == 8
    assert 0.0 <= record["image_auroc"] <= 1.0
    assert 0 <= record["labels_equal"] <= record["images"] == 16
