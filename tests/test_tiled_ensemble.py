# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's tiled-ensemble pipeline runs Fastflow2D to the end: ``python -m anomalib_fastflow2d.tiled_ensemble``."""

import csv
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from anomalib.pipelines.tiled_ensemble.components.utils import NormalizationStage
from anomalib.pipelines.tiled_ensemble.components.utils.helper_functions import get_ensemble_model

from anomalib_fastflow2d.tiled_ensemble import main

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiled_ensemble" / "demo.yaml"


def _tiny_config(demo_root: Path, tmp_path: Path, **model_args: Any) -> dict[str, Any]:
    """The shipped demo config on the tiny demo data: 64 px frames in two 64x32 tiles, two flow steps, two epochs."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["data"]["init_args"]["root"] = str(demo_root)
    config["tiling"].update(image_size=[64, 64], tile_size=[64, 32], stride=32)
    config["TrainModels"]["model"]["init_args"].update(flow_steps=2, **model_args)
    config["TrainModels"]["trainer"]["max_epochs"] = 2
    return config


def _write(config: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_demo_config_trains_every_tile_and_gives_metrics_and_merged_scores(demo_root: Path, tmp_path: Path) -> None:
    assert main(["--config", _write(_tiny_config(demo_root, tmp_path), tmp_path)]) == 0

    (run,) = (tmp_path / "results" / "Fastflow2D" / "MVTecAD" / "brick").glob("v*")
    assert sorted(path.name for path in (run / "weights" / "lightning").iterdir()) == [
        "model0_0.ckpt",
        "model0_1.ckpt",
        "stats.json",
    ]
    with (run / "metric_results.csv").open() as file:
        (metrics,) = [{name: float(value) for name, value in row.items()} for row in csv.DictReader(file)]
    assert set(metrics) == {"image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    assert metrics["pixel_AUROC"] > 0.6
    with (run / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    # The test half of the 12 test images (from_test gives the other half to validation), merged over both tiles.
    assert len(rows) == 6
    assert {Path(row["image_path"]).parent.parent.name for row in rows} == {"test"}
    assert all(0.0 <= float(row["pred_score"]) <= 1.0 for row in rows)
    assert {row["threshold"] for row in rows} == {"0.5"}
    assert {row["pred_label"] for row in rows} == {"0", "1"}
    assert all((row["pred_label"] == "1") == (float(row["pred_score"]) >= 0.5) for row in rows)


def test_a_failed_stage_stops_the_run_with_exit_status_1(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pretrained weights with the hub offline: each tile's training fails when it loads them.
    config = _tiny_config(demo_root, tmp_path, pre_trained=True)
    assert main(["--config", _write(config, tmp_path)]) == 1
    assert "error: There were some errors with job TrainModels" in capsys.readouterr().err
    assert not list((tmp_path / "results").rglob("stats.json"))  # no later stage ran


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda config: config["tiling"].pop("stride"), r"lacks \['tiling.stride'\]"),
        (lambda config: config["data"]["init_args"].update(test_split_mode="none"), "test_split_mode to from_dir"),
        (
            lambda config: config["TrainModels"]["model"]["init_args"].update(input_size=[64, 64]),
            "remove input_size from TrainModels.model.init_args",
        ),
    ],
)
def test_config_errors_name_the_fix_before_anything_trains(
    demo_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    message: str,
) -> None:
    config = _tiny_config(demo_root, tmp_path)
    change(config)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", _write(config, tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m anomalib_fastflow2d.tiled_ensemble: error:")
    assert re.search(message, error), error
    assert not (tmp_path / "results").exists()


def test_anomalibs_own_metrics_stage_model_is_refused_with_the_way_out() -> None:
    # EvalTiledEnsemble's metrics stage builds its model at 10x10, only for its evaluator.
    with pytest.raises(
        ValueError,
        match=r"below the minimum of 16 .*anomalib_fastflow2d\.tiled_ensemble`, or .*--model\.train_crop_size",
    ):
        get_ensemble_model(
            {"class_path": "Fastflow2D"}, input_size=(10, 10), normalization_stage=NormalizationStage.IMAGE
        )
