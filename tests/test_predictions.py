# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What ``anomalib predict`` writes: the score table and overlays at each image's aspect ratio."""

import csv
from pathlib import Path

import numpy as np
import pytest
from anomalib.data import MVTecAD, PredictDataset
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.predictions import PREDICTIONS_FILE, PredictionTable
from tests.conftest import ANOMALIB, TINY_MODEL, run


@pytest.fixture(scope="module")
def checkpoint(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed_everything(0)
    root = tmp_path_factory.mktemp("predictions_train")
    engine = Engine(default_root_dir=root, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    datamodule = MVTecAD(root=demo_root, category="brick", train_batch_size=8, eval_batch_size=8, num_workers=0)
    engine.fit(Fastflow2D(**TINY_MODEL), datamodule=datamodule)
    return Path(engine.trainer.checkpoint_callback.best_model_path)


@pytest.fixture(scope="module")
def photographs(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: two non-square photographs (JPEG and PNG) and a square demo image."""
    folder = tmp_path_factory.mktemp("photographs")
    Image.fromarray(data.chelsea()).save(folder / "cat.jpg", quality=90)  # 451 x 300
    Image.fromarray(data.coffee()[:200]).save(folder / "coffee.png")  # 600 x 200: aspect 3
    Image.open(demo_root / "brick" / "test" / "good" / "000.png").save(folder / "brick.png")
    return folder


@pytest.fixture(scope="module")
def cli_run(checkpoint: Path, photographs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("predict_cli")
    command = [ANOMALIB, "predict", "--model", "Fastflow2D", "--ckpt_path", str(checkpoint), "--data", str(photographs)]
    result = run(command, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    # anomalib's run folder for a prediction without a datamodule name.
    return cwd / "results" / "Fastflow2D" / "latest", result.stdout + result.stderr


def test_stock_predict_writes_a_score_table_and_logs_its_path(
    cli_run: tuple[Path, str], checkpoint: Path, photographs: Path
) -> None:
    run_dir, output = cli_run
    table = (run_dir / PREDICTIONS_FILE).resolve()
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert f"to {table}" in " ".join(output.split())
    assert list(rows[0]) == list(PredictionTable.COLUMNS)
    assert sorted(Path(row["image_path"]).name for row in rows) == ["brick.png", "cat.jpg", "coffee.png"]
    # The same model in this process gives the same post-processed scores and labels. One image per batch, as in
    # the CLI: anomalib's collate pads images of different sizes to the largest.
    model = Fastflow2D.load_from_checkpoint(checkpoint)
    dataset = PredictDataset(photographs)
    loader = DataLoader(dataset, batch_size=1, collate_fn=dataset.collate_fn)
    engine = Engine(logger=False, accelerator="cpu", default_root_dir=run_dir.parent / "in_process")
    batches = engine.predict(model, dataloaders=loader)
    expected = {Path(batch.image_path[0]).name: float(batch.pred_score) for batch in batches}
    for row in rows:
        score = float(row["pred_score"])
        assert score == pytest.approx(expected[Path(row["image_path"]).name], abs=1e-5)
        assert row["threshold"] == "0.5"
        assert row["pred_label"] == str(int(score >= 0.5))


def test_stock_predict_overlays_keep_each_images_aspect_ratio(cli_run: tuple[Path, str], photographs: Path) -> None:
    run_dir, _ = cli_run
    overlays = {path.name: path for path in (run_dir / "images").rglob("*.*")}

    assert sorted(overlays) == ["brick.png", "cat.jpg", "coffee.png"]
    for name, overlay_path in overlays.items():
        with Image.open(photographs / name) as image, Image.open(overlay_path) as overlay:
            fields = round(overlay.width / (overlay.height * image.width / image.height))
            field_aspect = overlay.width / fields / overlay.height
            assert fields >= 2, name  # image, map and overlays side by side
            assert field_aspect == pytest.approx(image.width / image.height, rel=0.02), name


def test_prediction_table_without_thresholds_leaves_label_and_threshold_empty(tmp_path: Path) -> None:
    model = Fastflow2D(**TINY_MODEL, post_processor=False)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(folder / "grey.png")
    engine = Engine(logger=False, accelerator="cpu", default_root_dir=tmp_path / "run", enable_progress_bar=False)
    engine.predict(model, data_path=folder)

    with (tmp_path / "run" / "Fastflow2D" / "latest" / PREDICTIONS_FILE).open(newline="") as file:
        (row,) = csv.DictReader(file)
    assert row["pred_label"] == ""
    assert row["threshold"] == ""
    assert -1.0 <= float(row["pred_score"]) <= 0.0  # the raw score: minus a likelihood in (0, 1]
