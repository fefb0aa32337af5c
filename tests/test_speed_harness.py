# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""benchmarks/speed.py: settings, models built alike, ratios, the table, and a smoke run of ``--quick``."""

import json
import math
import mmap
import sys
from pathlib import Path

import pytest

from anomalib_fastflow2d import PRESETS
from benchmarks import speed
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]

TINY_FLOW = speed.FlowSettings(
    backbone="resnet18", pre_trained=False, input_size=(64, 64), flow_steps=2, conv3x3_only=False, hidden_ratio=0.5
)


def test_settings_default_to_the_backbone_preset_and_take_overrides() -> None:
    flow, run_settings = speed.settings_from(speed.parser().parse_args(["--backbone", "wide_resnet50_2"]))
    preset = PRESETS["wide_resnet50_2"]
    assert (flow.input_size, flow.flow_steps, flow.conv3x3_only) == (preset.input_size, 8, False)
    assert flow.hidden_ratio == preset.hidden_ratio
    assert not flow.pre_trained
    assert run_settings == speed.RunSettings()

    arguments = ["--quick", "--size", "96", "--flow-steps", "4", "--no-conv3x3-only", "--epochs", "3"]
    flow, run_settings = speed.settings_from(speed.parser().parse_args(arguments))
    assert (flow.input_size, flow.flow_steps, flow.conv3x3_only) == ((96, 96), 4, False)
    assert run_settings.epochs == 3
    assert run_settings.data == speed.QUICK.data


def test_settings_take_the_precision_and_the_number_of_training_images() -> None:
    arguments = ["--precision", "bf16-mixed", "--num-train", "7"]
    _, run_settings = speed.settings_from(speed.parser().parse_args(arguments))
    assert run_settings.precision == "bf16-mixed"
    assert run_settings.data == speed.replace(speed.DataSettings(), num_train=7)


@pytest.mark.parametrize("precision", speed.PRECISIONS)
def test_training_step_mode_times_one_optimizer_step_of_each_model(precision: str) -> None:
    models = {"Fastflow2D": speed.build_fastflow2d(TINY_FLOW, {}), "Fastflow": speed.build_fastflow(TINY_FLOW)}
    before = {
        name: [p.detach().clone() for p in model.model.parameters() if p.requires_grad]
        for name, model in models.items()
    }
    run_settings = speed.RunSettings(precision=precision, warmup=0, repeats=2)
    memory = speed.PeakMemory(speed.torch.device("cpu"))
    records = speed.measure_training_step(models, TINY_FLOW, run_settings, memory)
    assert [(record.model, record.mode) for record in records] == [
        ("Fastflow2D", "train_step_batch32"),
        ("Fastflow", "train_step_batch32"),
    ]
    for record in records:
        assert record.values["images_per_s"] == pytest.approx(32_000 / record.values["latency_ms"])
        assert record.values["peak_memory_mib"] > 0
    for name, model in models.items():
        after = [p for p in model.model.parameters() if p.requires_grad]
        assert all(p.isfinite().all() for p in after), name
        assert any(not speed.torch.equal(old, new) for old, new in zip(before[name], after, strict=True)), name
        assert not model.training


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


def test_both_models_are_built_with_the_same_flow_settings() -> None:
    candidate = speed.build_fastflow2d(TINY_FLOW, {"lr": 0.01})
    reference = speed.build_fastflow(TINY_FLOW)
    assert candidate.lr == 0.01
    assert tuple(candidate.input_size) == tuple(reference.input_size) == TINY_FLOW.input_size
    assert len(candidate.model.flows) == len(reference.model.fast_flow_blocks) == 3
    assert len(candidate.model.flows[0].inn.module_list) == len(reference.model.fast_flow_blocks[0].module_list) == 2
    assert reference.conv3x3_only is candidate.model.conv3x3_only is False
    assert reference.hidden_ratio == candidate.model.hidden_ratio == 0.5
    flow_parameters = sum(parameter.numel() for parameter in candidate.model.flows.parameters())
    assert flow_parameters == sum(parameter.numel() for parameter in reference.model.fast_flow_blocks.parameters())


def _records() -> list[speed.Record]:
    return [
        speed.Record("Fastflow2D", "train", {"images_per_s": 30.0, "epoch_s": 2.0}),
        speed.Record("Fastflow", "train", {"images_per_s": 10.0, "epoch_s": 6.0}),
        speed.Record("Fastflow2D", "test", {"image_auroc": 0.9}),
        speed.Record("Fastflow", "test", {"image_auroc": 0.0}),
    ]


def test_ratios_divide_candidate_by_reference_per_mode_and_measure() -> None:
    ratios = speed.ratios(_records())
    assert [(record.model, record.mode) for record in ratios] == [
        ("Fastflow2D / Fastflow", "train"),
        ("Fastflow2D / Fastflow", "test"),
    ]
    assert ratios[0].values == {"images_per_s": 3.0, "epoch_s": pytest.approx(1 / 3)}
    assert math.isnan(ratios[1].values["image_auroc"])


def test_markdown_table_has_a_row_per_mode_and_measure_and_a_column_per_model() -> None:
    records = _records()
    table = speed.markdown_table([*records, *speed.ratios(records)]).splitlines()
    assert table[0] == "| mode | measure | Fastflow2D | Fastflow | Fastflow2D / Fastflow |"
    assert table[2] == "| train | images/s | 30 | 10 | 3 |"
    assert table[3] == "| train | epoch after the first (s) | 2 | 6 | 0.3333 |"
    assert table[4] == "| test | image AUROC | 0.9 | 0 | nan |"
    assert len(table) == 5


def test_peak_memory_grows_with_an_allocation() -> None:
    memory = speed.PeakMemory(speed.torch.device("cpu"))
    memory.reset()
    before = memory.peak_mib()
    # A fresh anonymous mapping, every page written: new resident memory, never pages the heap already holds.
    with mmap.mmap(-1, 64 * speed.MIB) as block:
        block.write(b"\x01" * (64 * speed.MIB))
        assert memory.peak_mib() >= before + 60


@pytest.mark.slow
def test_quick_run_writes_every_record_with_finite_values(tmp_path: Path) -> None:
    output = tmp_path / "speed.json"
    result = run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--output", str(output)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(output.read_text(encoding="utf-8"))
    records = {(record.pop("model"), record.pop("mode")): record for record in report["records"]}
    models = ("Fastflow2D", "Fastflow", "Fastflow2D / Fastflow")
    assert set(records) == {(model, mode) for model in models for mode in speed.MODES}
    expected = {
        "train": {"images_per_s", "epoch_s", "first_epoch_s", "peak_memory_mib"},
        "test": {"image_auroc", "pixel_auroc"},
        "eager_batch1": {"images_per_s", "latency_ms", "peak_memory_mib"},
        "eager_batch32": {"images_per_s", "latency_ms", "peak_memory_mib"},
        "train_step_batch32": {"images_per_s", "latency_ms", "peak_memory_mib"},
    }
    openvino = {"images_per_s", "latency_ms", "file_mib"}
    for (model, mode), values in records.items():
        assert set(values) == expected.get(mode, openvino), (model, mode)
        assert all(math.isfinite(value) and value >= 0 for value in values.values()), (model, mode, values)
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu"]
    assert report["settings"]["flow"]["input_size"] == [speed.QUICK_SIZE, speed.QUICK_SIZE]
    assert "| train | images/s |" in result.stdout
    assert "| openvino_int8_batch32 | images/s |" in result.stdout
    # FP16 weights take about half the FP32 file, for both models.
    for model in models[:2]:
        assert (
            records[(model, "openvino_fp16_batch1")]["file_mib"]
            < 0.6 * records[(model, "openvino_fp32_batch1")]["file_mib"]
        )
