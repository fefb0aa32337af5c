# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Every YAML under configs/ is read by the stock anomalib CLI and builds what it says."""

from pathlib import Path

import pytest
from anomalib.cli import AnomalibCLI
from anomalib.models import AnomalibModule, UnknownModelError, get_model

from anomalib_fastflow2d import PRESETS, Fastflow2D, resolve
from tests.conftest import ANOMALIB, run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_config_is_covered() -> None:
    """Benchmark configs are for ``anomalib benchmark``; tests/test_benchmark_configs.py covers them."""
    found = {str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml") if path.parent.name != "benchmark"}
    presets = {f"{folder}/{name}.yaml" for folder in ("model", "model_only") for name in PRESETS}
    assert found == {"demo.yaml"} | presets


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
def test_demo_config_trains_with_the_stock_cli(demo_root: Path, tmp_path: Path) -> None:
    overrides = [f"--data.root={demo_root}", "--trainer.max_epochs=1", f"--default_root_dir={tmp_path}"]
    result = run([ANOMALIB, "train", "--config", str(CONFIGS / "demo.yaml"), *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image_AUROC" in result.stdout
    assert "pixel_F1Score" in result.stdout
    assert list(tmp_path.rglob("model.ckpt"))
