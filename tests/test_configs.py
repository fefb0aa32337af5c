# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Every YAML under configs/ is read by the stock anomalib CLI and builds what it says."""

from pathlib import Path

import pytest
import torch
from anomalib.cli import AnomalibCLI
from anomalib.data import BTech
from anomalib.models import AnomalibModule, UnknownModelError, get_model

from anomalib_fastflow2d import PRESETS, Fastflow2D, resolve
from anomalib_fastflow2d.data import CIFAR10OneClass
from fastflow2d_demo_data import generate_large_frame_dataset
from tests.conftest import ANOMALIB, run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_config_is_covered() -> None:
    """Benchmark and tiled-ensemble configs have tests of their own (test_benchmark_configs, test_tiled_ensemble)."""
    own_tests = {"benchmark", "tiled_ensemble"}
    found = {str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml") if path.parent.name not in own_tests}
    presets = {f"{folder}/{name}.yaml" for folder in ("model", "model_only") for name in PRESETS}
    assert found == {"demo.yaml", "large_frames.yaml", "cifar10/wide_resnet50_2.yaml"} | presets


def test_cifar10_config_builds_the_one_class_protocol_offline() -> None:
    config = CONFIGS / "cifar10" / "wide_resnet50_2.yaml"
    cli = AnomalibCLI(
        ["train", "--config", str(config), "--model.pre_trained=false", "--data.normal_class=3"], run=False
    )
    assert isinstance(cli.datamodule, CIFAR10OneClass)
    assert cli.datamodule.category == "cat"
    assert cli.datamodule.root == Path("datasets/CIFAR10")
    assert cli.model.model.config == resolve("wide_resnet50_2")
    assert cli.config["train"]["trainer"]["max_epochs"] == 500


def test_btech_builds_offline_from_a_preset_config_without_downloading(tmp_path: Path) -> None:
    # BTAD is anomalib's BTech: the preset configs take it with --data; building it must not fetch the data.
    data = ["--data", "anomalib.data.BTech", f"--data.root={tmp_path / 'BTech'}", "--data.category=02"]
    cli = AnomalibCLI(
        ["train", "--config", str(CONFIGS / "model" / "resnet18.yaml"), "--model.pre_trained=false", *data], run=False
    )
    assert isinstance(cli.datamodule, BTech)
    assert cli.datamodule.category == "02"
    assert isinstance(cli.model, Fastflow2D)
    assert cli.model.model.config == resolve("resnet18")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backbone", sorted(PRESETS))
def test_preset_config_builds_the_preset(backbone: str) -> None:
    cli = AnomalibCLI(
        ["train", "--config", str(CONFIGS / "model" / f"{backbone}.yaml"), "--model.pre_trained=false"], run=False
    )
    preset = PRESETS[backbone]
    assert isinstance(cli.model, Fastflow2D)
    assert tuple(cli.model.input_size) == preset.input_size
    assert len(cli.model.model.flows[0].inn.module_list) == preset.flow_steps
    assert cli.model.model.config.feature_stages == preset.feature_stages
    assert cli.config["train"]["trainer"]["max_epochs"] == 500
    assert cli.datamodule.category == "bottle"


@pytest.mark.parametrize("backbone", sorted(PRESETS))
def test_model_only_config_builds_the_preset_with_anomalibs_from_config(backbone: str) -> None:
    model = AnomalibModule.from_config(CONFIGS / "model_only" / f"{backbone}.yaml")
    assert isinstance(model, Fastflow2D)
    assert model.model.config == resolve(backbone)
    assert tuple(model.input_size) == PRESETS[backbone].input_size


def test_from_config_refuses_a_full_train_config_and_get_model_a_dotted_path() -> None:
    # What docs/configuration.md says: the full `anomalib train` files are for the CLI, and benchmark configs must
    # name the model `Fastflow2D`.
    with pytest.raises(SystemExit):
        AnomalibModule.from_config(CONFIGS / "model" / "resnet18.yaml")
    with pytest.raises(UnknownModelError):
        get_model("anomalib_fastflow2d.Fastflow2D")
    assert isinstance(get_model("Fastflow2D", pre_trained=False), Fastflow2D)


@pytest.mark.slow
def test_large_frames_config_trains_on_crops_and_scores_whole_frames_with_the_stock_cli(tmp_path: Path) -> None:
    root = generate_large_frame_dataset(
        tmp_path / "large",
        frame_size=(160, 192),
        defect_size=0.05,
        num_train=8,
        num_test_normal=3,
        num_test_anomalous=3,
    )
    # The config's frames and crops, scaled down: 160x192 frames, 64x96 crops.
    overrides = ["--model.input_size=[160,192]", "--model.train_crop_size=[64,96]", "--model.flow_steps=2"]
    overrides += [f"--data.root={root}", "--trainer.max_epochs=1", f"--default_root_dir={tmp_path / 'results'}"]
    result = run([ANOMALIB, "train", "--config", str(CONFIGS / "large_frames.yaml"), *overrides], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= _metric(result.stdout, "pixel_AUROC") <= 1.0
    (checkpoint,) = (tmp_path / "results").rglob("model.ckpt")
    hyper_parameters = torch.load(checkpoint, weights_only=False)["hyper_parameters"]
    assert list(hyper_parameters["train_crop_size"]) == [64, 96]
    assert hyper_parameters["input_size"] == [160, 192]


def _metric(stdout: str, name: str) -> float:
    line = next(line for line in stdout.splitlines() if name in line)
    return float(line.replace("│", " ").split()[-1])


@pytest.mark.slow
def test_demo_config_trains_with_the_stock_cli(demo_root: Path, tmp_path: Path) -> None:
    overrides = [f"--data.root={demo_root}", "--trainer.max_epochs=1", f"--default_root_dir={tmp_path}"]
    result = run([ANOMALIB, "train", "--config", str(CONFIGS / "demo.yaml"), *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image_AUROC" in result.stdout
    assert "pixel_F1Score" in result.stdout
    assert list(tmp_path.rglob("model.ckpt"))
