# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What ``anomalib test`` and ``predict`` write: the score table, and overlays at each image's own size."""

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from anomalib.data import ImageItem, MVTecAD, PredictDataset
from anomalib.engine import Engine
from anomalib.visualization.image.functional import add_text_to_image
from lightning.pytorch import seed_everything
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from anomalib_fastflow2d import Fastflow2D, predictions
from anomalib_fastflow2d.predictions import (
    PREDICTIONS_FILE,
    AspectKeepingVisualizer,
    PredictionTable,
    _with_caption,
    score_caption,
)
from fastflow2d_demo_data import generate_large_frame_dataset
from tests.conftest import ANOMALIB, TINY_MODEL, run

LARGE_FRAME = (96, 160)
"""Non-square frames of the large-frame generator, scored at half their size: the maps must be brought back up."""

LARGE_FRAME_MODEL = {**TINY_MODEL, "input_size": (48, 80)}


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


def test_stock_predict_overlays_show_each_image_at_its_own_size(cli_run: tuple[Path, str], photographs: Path) -> None:
    run_dir, _ = cli_run
    overlays = {path.name: path for path in (run_dir / "images").rglob("*.*")}
    with (run_dir / PREDICTIONS_FILE).open(newline="") as file:
        rows = {Path(row["image_path"]).name: row for row in csv.DictReader(file)}

    assert sorted(overlays) == ["brick.png", "cat.jpg", "coffee.png"]
    for name, overlay_path in overlays.items():
        with Image.open(photographs / name) as image, Image.open(overlay_path) as overlay:
            # Image, image + anomaly map, image + predicted mask (no ground truth here), each at the image's size.
            assert overlay.size == (3 * image.width, image.height), name
            if overlay_path.suffix == ".png":  # lossless: the first field is the image, its title and its caption
                row = rows[name]
                caption = score_caption(torch.tensor(float(row["pred_score"])), torch.tensor(row["pred_label"] == "1"))
                expected = _drawn_image_field(image.convert("RGB"), caption)
                assert np.array_equal(np.asarray(overlay)[:, : image.width], np.asarray(expected)), name


def _drawn_image_field(image: Image.Image, caption: str) -> Image.Image:
    """The first field as the visualizer draws it: anomalib's title, then the caption, on the image itself."""
    text_config: dict[str, Any] = AspectKeepingVisualizer().text_config
    title_config = {name: value for name, value in text_config.items() if name != "enable"}
    return _with_caption(add_text_to_image(image, "Image", **title_config), caption, text_config)


@pytest.fixture(scope="module")
def large_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("large_frames")
    counts = {"num_train": 8, "num_test_normal": 2, "num_test_anomalous": 2}
    return generate_large_frame_dataset(root, frame_size=LARGE_FRAME, defect_size=0.1, **counts)


def test_overlays_of_large_frames_are_drawn_at_the_frame_size_with_score_and_label(
    large_frames: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    engine = Engine(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    datamodule = MVTecAD(root=large_frames, category="brick", train_batch_size=8, eval_batch_size=4, num_workers=0)
    model = Fastflow2D(**LARGE_FRAME_MODEL)
    engine.fit(model, datamodule=datamodule)
    batches = engine.predict(model, datamodule=datamodule)
    items = [item for batch in batches for item in batch]

    # What Engine.predict returns stays at the model's input_size: anomalib keeps no original size to restore.
    assert {tuple(item.anomaly_map.shape[-2:]) for item in items} == {LARGE_FRAME_MODEL["input_size"]}
    overlays = {path.relative_to(path.parents[1]): path for path in tmp_path.rglob("images/*/*.png")}
    assert len(overlays) == len(items) == 4
    for item in items:
        frame_path = Path(item.image_path)
        overlay_path = overlays[frame_path.relative_to(frame_path.parents[1])]
        with Image.open(frame_path) as frame, Image.open(overlay_path) as overlay:
            # Image, ground truth, image + anomaly map, image + predicted mask, each at the frame's own size.
            assert overlay.size == (4 * LARGE_FRAME[1], LARGE_FRAME[0])
            expected = _drawn_image_field(frame.convert("RGB"), score_caption(item.pred_score, item.pred_label))
            assert np.array_equal(np.asarray(overlay)[:, : LARGE_FRAME[1]], np.asarray(expected))
            caption_band = np.asarray(overlay)[-20:-10, : LARGE_FRAME[1]]
            assert not np.array_equal(caption_band, np.asarray(frame.convert("RGB"))[-20:-10])


def test_predicted_mask_outlines_the_region_at_the_images_resolution(large_frames: Path) -> None:
    frame_path = next((large_frames / "brick" / "test" / "good").glob("*.png"))
    small_mask = torch.zeros(48, 80, dtype=torch.bool)  # the model's half-size map
    small_mask[10:16, 50:60] = True
    item = ImageItem(
        image_path=str(frame_path),
        image=torch.rand(3, 48, 80),
        anomaly_map=small_mask.float(),
        pred_mask=small_mask,
        pred_score=0.9,
        pred_label=True,
    )
    visualizer = AspectKeepingVisualizer(
        fields=["image"], overlay_fields=[("image", ["pred_mask"])], text_config={"enable": False}
    )

    picture = np.asarray(visualizer.draw(item))
    image, outlined = picture[:, : LARGE_FRAME[1]], picture[:, LARGE_FRAME[1] :]
    with Image.open(frame_path) as frame:
        assert np.array_equal(image, np.asarray(frame.convert("RGB")))  # pixel for pixel, no title without text
    rows, cols = np.nonzero(np.any(outlined != image, axis=-1))
    # Rows 10-15 and columns 50-59 at half size are rows 20-31 and columns 100-119 of the frame, outlined in red.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 31, 100, 119)
    assert np.all(outlined[rows, cols] == (255, 0, 0))


def test_images_above_the_pixel_limit_are_drawn_smaller_at_their_aspect_ratio(
    large_frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictions, "MAX_FIELD_PIXELS", LARGE_FRAME[0] * LARGE_FRAME[1] // 4)
    frame_path = next((large_frames / "brick" / "test" / "good").glob("*.png"))
    anomaly_map = torch.rand(48, 80)
    item = ImageItem(image_path=str(frame_path), image=torch.rand(3, 48, 80), anomaly_map=anomaly_map)

    picture = AspectKeepingVisualizer().draw(item.update(pred_mask=anomaly_map > 0.5))

    assert picture is not None
    # Image, image + anomaly map, image + predicted mask, each at half the frame's width and height.
    assert picture.size == (3 * LARGE_FRAME[1] // 2, LARGE_FRAME[0] // 2)
