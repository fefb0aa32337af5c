# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/speed.py: settings from the command line, and a smoke run of ``--quick``."""

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from anomalib_fastflow2d import PRESETS
from benchmarks import speed
from benchmarks.harness.environment import REPOSITORY, commit_id
from benchmarks.harness.modes import MODES
from benchmarks.harness.settings import DataSettings, RunSettings
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]


def test_settings_default_to_the_backbone_preset_and_take_overrides() -> None:
    flow, run_settings = speed.settings_from(speed.parser().parse_args(["--backbone", "wide_resnet50_2"]))
    preset = PRESETS["wide_resnet50_2"]
    assert (flow.input_size, flow.config.flow_steps, flow.config.conv3x3_only) == (preset.input_size, 8, False)
    assert flow.config.hidden_ratio == preset.hidden_ratio
    assert not flow.pre_trained
    assert run_settings == RunSettings()

    arguments = ["--quick", "--size", "96", "--flow-steps", "4", "--no-conv3x3-only", "--epochs", "3"]
    flow, run_settings = speed.settings_from(speed.parser().parse_args(arguments))
    assert (flow.input_size, flow.config.flow_steps, flow.config.conv3x3_only) == ((96, 96), 4, False)
    assert run_settings.epochs == 3
    assert run_settings.data == speed.QUICK.data


def test_settings_take_the_precision_and_the_number_of_training_images() -> None:
    arguments = ["--precision", "bf16-mixed", "--num-train", "7"]
    _, run_settings = speed.settings_from(speed.parser().parse_args(arguments))
    assert run_settings.precision == "bf16-mixed"
    assert run_settings.data == replace(DataSettings(), num_train=7)


def test_settings_keep_overrides_that_are_falsy_and_refuse_impossible_ones() -> None:
    arguments = ["--quick", "--size", "32", "--no-conv3x3-only"]
    flow, _ = speed.settings_from(speed.parser().parse_args(arguments))
    assert (flow.input_size, flow.config.conv3x3_only) == ((32, 32), False)
    with pytest.raises(ValueError, match="hidden_ratio must be positive"):
        speed.settings_from(speed.parser().parse_args([*arguments, "--hidden-ratio", "0"]))


def test_quick_settings_use_the_quick_size() -> None:
    flow, run_settings = speed.settings_from(speed.parser().parse_args(["--quick"]))
    assert flow.input_size == (speed.QUICK_SIZE, speed.QUICK_SIZE)
    assert run_settings.epochs == speed.QUICK.epochs


@pytest.mark.parametrize(("argument", "message"), [("--epochs=1", "at least 2"), ("--repeats=0", "at least 1")])
def test_settings_refuse_runs_that_cannot_be_timed(argument: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        speed.settings_from(speed.parser().parse_args([argument]))


def test_extra_arguments_are_parsed_as_yaml() -> None:
    parsed = speed.parse_extra_arguments(["cache_features=true", "precision=bf16", "lr=0.01", "stages=[1, 2]"])
    assert parsed == {"cache_features": True, "precision": "bf16", "lr": 0.01, "stages": [1, 2]}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        speed.parse_extra_arguments(["cache_features"])


@pytest.mark.slow
def test_quick_run_writes_every_record_with_finite_values(tmp_path: Path) -> None:
    output = tmp_path / "speed.json"
    # One flow step: each of the six ONNX exports takes a third of the time of the preset's eight.
    arguments = ["--quick", "--flow-steps", "1", "--output", str(output)]
    result = run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), *arguments], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(output.read_text(encoding="utf-8"))
    records = {(record.pop("model"), record.pop("mode")): record for record in report["records"]}
    models = ("Fastflow2D", "Fastflow", "Fastflow2D / Fastflow")
    assert set(records) == {(model, mode) for model in models for mode in MODES}
    expected = {
        "train": {"images_per_s", "epoch_s", "first_epoch_s", "peak_memory_mib"},
        "test": {"image_auroc", "pixel_auroc"},
        "eager_batch1": {"images_per_s", "latency_ms", "peak_memory_mib"},
        "eager_batch8": {"images_per_s", "latency_ms", "peak_memory_mib"},
        "eager_batch32": {"images_per_s", "latency_ms", "peak_memory_mib"},
        "train_step_batch32": {"images_per_s", "latency_ms", "peak_memory_mib"},
    }
    openvino = {"images_per_s", "latency_ms", "file_mib"}
    for (model, mode), values in records.items():
        assert set(values) == expected.get(mode, openvino), (model, mode)
        assert all(math.isfinite(value) and value >= 0 for value in values.values()), (model, mode, values)
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu"]
    assert report["seed"] == speed.QUICK.seed
    assert report["commit"] == commit_id(REPOSITORY)
    assert report["versions"]["anomalib-fastflow2d"] == "0.1.0"
    assert report["settings"]["flow"]["input_size"] == [speed.QUICK_SIZE, speed.QUICK_SIZE]
    assert report["settings"]["flow"]["config"]["flow_steps"] == 1
    assert "| train | images/s |" in result.stdout
    assert "| openvino_int8_batch32 | images/s |" in result.stdout
    # FP16 weights take about half the FP32 file, for both models.
    for model in models[:2]:
        assert (
            records[(model, "openvino_fp16_batch1")]["file_mib"]
            < 0.6 * records[(model, "openvino_fp32_batch1")]["file_mib"]
        )
