# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's tiler: ``TilerConfigurationCallback`` sets ``Fastflow2DModel.tiler``, and the model is one of tiles."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.data import MVTecAD
from anomalib.data.utils.tiler import Tiler
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.feature_cache import CacheStorage, FeatureCache
from anomalib_fastflow2d.presets import resolve
from anomalib_fastflow2d.torch_model import Fastflow2DModel
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def model() -> Iterator[Fastflow2DModel]:
    torch.manual_seed(0)
    model = Fastflow2DModel(resolve("resnet18", flow_steps=2, input_size=(64, 64)), pre_trained=False).eval()
    model.tiler = Tiler(tile_size=32, stride=32)
    yield model
    model.tiler = None


def test_inference_scores_each_tile_as_a_frame_and_the_image_from_the_untiled_map(model: Fastflow2DModel) -> None:
    images = torch.randn(2, 3, 64, 64)
    tiled = model(images)
    tiler, model.tiler = model.tiler, None
    try:
        corners = [
            model(images[..., rows, columns])
            for rows in (slice(0, 32), slice(32, 64))
            for columns in (slice(0, 32), slice(32, 64))
        ]
    finally:
        model.tiler = tiler
    assert tiled.anomaly_map is not None
    assert tiled.anomaly_map.shape == (2, 1, 64, 64)
    untiled = torch.cat(
        [
            torch.cat([corners[0].anomaly_map, corners[1].anomaly_map], -1),
            torch.cat([corners[2].anomaly_map, corners[3].anomaly_map], -1),
        ],
        -2,
    )
    torch.testing.assert_close(tiled.anomaly_map, untiled)
    torch.testing.assert_close(tiled.pred_score, tiled.anomaly_map.amax(dim=(1, 2, 3))[:, None])


def test_overlapping_tiles_give_a_map_of_the_whole_frame(model: Fastflow2DModel) -> None:
    tiler, model.tiler = model.tiler, Tiler(tile_size=(48, 32), stride=16)
    try:
        predictions = model(torch.randn(1, 3, 64, 80))
    finally:
        model.tiler = tiler
    assert predictions.anomaly_map is not None
    assert predictions.anomaly_map.shape == (1, 1, 64, 80)
    assert torch.isfinite(predictions.anomaly_map).all()


def test_training_features_stay_grouped_by_frame_for_the_cache_and_normalise_as_tiles(
    model: Fastflow2DModel,
) -> None:
    images = torch.randn(3, 3, 64, 64)
    features = model.frame_features(images)
    assert [tuple(feature.shape) for feature in features] == [(3, 4, 64, 8, 8), (3, 4, 128, 4, 4), (3, 4, 256, 2, 2)]
    assert model.tiler is not None
    tiles = model.tiler.tile(images)
    expected = model.normalise(model.backbone_features(tiles))
    for normalised, reference in zip(model.normalise(features), expected, strict=True):
        torch.testing.assert_close(normalised, reference)
    crops = model.normalise_crops(features, (16, 16), generator=torch.Generator().manual_seed(0))
    assert [tuple(crop.shape) for crop in crops] == [(12, 64, 4, 4), (12, 128, 2, 2), (12, 256, 1, 1)]


def test_feature_cache_holds_every_tile_of_a_frame_under_its_path(model: Fastflow2DModel) -> None:
    images = torch.randn(2, 3, 64, 64)
    cache = FeatureCache(CacheStorage.MEMORY)
    first = cache.features(["a.png", "b.png"], images, model.frame_features)

    def no_backbone(_: torch.Tensor) -> list[torch.Tensor]:
        raise AssertionError

    second = cache.features(["b.png", "a.png"], images.flip(0), no_backbone)
    assert len(cache) == 2
    for cached, extracted in zip(second, first, strict=True):
        torch.testing.assert_close(cached, extracted.flip(0))


@pytest.mark.parametrize(
    ("fixed_input_size", "tile_size", "message"),
    [
        (None, 8, r"tiles of \(8, 8\) pixels .* tile_size to at least 16 pixels per side"),
        # A backbone that runs at one size only, as CaiT does at 448 px (cheaper than building CaiT).
        ((64, 64), 32, r"tile_size to exactly \(64, 64\)"),
    ],
)
def test_tiles_the_backbone_cannot_take_are_named_with_the_fix(
    fixed_input_size: tuple[int, int] | None, tile_size: int, message: str
) -> None:
    model = Fastflow2DModel(resolve("resnet18", flow_steps=1, input_size=(64, 64)), pre_trained=False)
    model.feature_extractor.fixed_input_size = fixed_input_size
    model.tiler = Tiler(tile_size=tile_size, stride=tile_size)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 3, 64, 64))


def test_rebuilding_for_a_checkpoint_keeps_the_tiler(model: Fastflow2DModel) -> None:
    assert model.rebuilt(resolve("resnet18", flow_steps=1, input_size=(64, 64))).tiler is model.tiler


def test_tiler_callback_trains_and_tests_on_tiles_through_anomalib(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiled_shapes: list[tuple[int, ...]] = []
    tile = Tiler.tile

    def recording_tile(self: Tiler, image: torch.Tensor, use_random_tiling: bool = False) -> torch.Tensor:
        tiles = tile(self, image, use_random_tiling)
        tiled_shapes.append(tuple(tiles.shape))
        return tiles

    monkeypatch.setattr(Tiler, "tile", recording_tile)
    seed_everything(0)
    model = Fastflow2D(**TINY_MODEL)
    datamodule = MVTecAD(root=demo_root, category="brick", train_batch_size=8, eval_batch_size=12, num_workers=0)
    engine = Engine(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        max_epochs=1,
        callbacks=[TilerConfigurationCallback(enable=True, tile_size=32, stride=32)],
    )
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule)
    predictions = engine.predict(model, datamodule=datamodule)

    assert isinstance(model.model.tiler, Tiler)
    # Training batches of 8 frames (16 images), then whole test and predict batches of 12: four 32 px tiles each.
    assert (32, 3, 32, 32) in tiled_shapes
    assert (48, 3, 32, 32) in tiled_shapes
    assert {shape[1:] for shape in tiled_shapes} == {(3, 32, 32)}
    for name in ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"]:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["pixel_AUROC"] > 0.6
    assert predictions is not None
    assert {tuple(batch.anomaly_map.shape[-2:]) for batch in predictions} == {(64, 64)}

    # Exported from the trained model, which holds the tiler, the graph scores tiles as the model does.
    path = engine.export(model, ExportType.ONNX, tmp_path / "export")
    assert path is not None
    images = next(iter(datamodule.test_dataloader())).image[:2].as_subclass(torch.Tensor)
    with torch.no_grad():
        expected = model.eval()(images).anomaly_map
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": images.numpy()}), strict=True))
    np.testing.assert_allclose(outputs["anomaly_map"], expected.numpy(), atol=1e-4)
