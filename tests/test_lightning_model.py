# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import math
import shutil
from pathlib import Path

import pytest
import torch
from anomalib.data import Folder, MVTecAD
from anomalib.engine import Engine
from anomalib.post_processing import PostProcessor
from lightning.pytorch import seed_everything

from anomalib_fastflow2d import Fastflow2D
from tests.conftest import TINY_MODEL


def _datamodule(root: Path) -> MVTecAD:
    return MVTecAD(root=root, category="brick", train_batch_size=8, eval_batch_size=8, num_workers=0)


def _engine(root: Path, **kwargs: object) -> Engine:
    return Engine(default_root_dir=root, accelerator="cpu", devices=1, enable_progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fastflow2D, Engine, list[dict]]:
    seed_everything(0)
    model = Fastflow2D(**TINY_MODEL)
    engine = _engine(tmp_path_factory.mktemp("fit"), max_epochs=2)
    datamodule = _datamodule(demo_root)
    engine.fit(model, datamodule=datamodule)
    fit_logs = {name: value.item() for name, value in engine.trainer.logged_metrics.items()}
    results = engine.test(model, datamodule=datamodule)
    return model, engine, [*results, fit_logs]


def test_fit_and_test_give_all_metrics(trained: tuple[Fastflow2D, Engine, list[dict]]) -> None:
    _, _, results = trained
    metrics = results[0]
    for name in ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score", "pixel_AUPRO"]:
        assert 0.0 <= metrics[name] <= 1.0, name
    # The synthetic defects are visible even to random backbone features after two epochs.
    assert metrics["pixel_AUROC"] > 0.6


def test_training_logs_loss_per_image_and_per_dimension(trained: tuple[Fastflow2D, Engine, list[dict]]) -> None:
    _, _, results = trained
    per_image, per_dim = results[-1]["train_loss"], results[-1]["train_nats_per_dim"]
    dimensions = 64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4
    assert math.isfinite(per_image)
    assert per_dim == pytest.approx(per_image / dimensions, rel=1e-4)


def test_post_processor_learned_thresholds_in_validation(trained: tuple[Fastflow2D, Engine, list[dict]]) -> None:
    model, _, _ = trained
    assert isinstance(model.post_processor, PostProcessor)
    post_processor = model.post_processor
    assert post_processor.image_min < post_processor.image_max
    assert post_processor.image_min <= post_processor._image_threshold <= post_processor.image_max


def test_checkpoint_loads_with_identical_predictions_and_without_the_hub(
    trained: tuple[Fastflow2D, Engine, list[dict]],
) -> None:
    model, engine, _ = trained
    checkpoint_path = engine.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
    assert checkpoint["hyper_parameters"]["pre_trained"] is False

    loaded = Fastflow2D.load_from_checkpoint(checkpoint_path)
    images = torch.rand(3, 3, 64, 64)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        expected, actual = model(images), loaded(images)
    assert torch.equal(expected.anomaly_map, actual.anomaly_map)
    assert torch.equal(expected.pred_score, actual.pred_score)
    assert torch.equal(expected.pred_label, actual.pred_label)


def test_dataset_without_masks_trains_and_tests(demo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "no_masks"
    shutil.copytree(demo_root / "brick" / "train" / "good", root / "good")
    for defect in (demo_root / "brick" / "test").iterdir():
        for image in defect.glob("*.png"):
            target = root / ("good_test" if defect.name == "good" else "defect")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, target / f"{defect.name}_{image.name}")
    datamodule = Folder(
        name="no_masks",
        root=root,
        normal_dir="good",
        abnormal_dir="defect",
        normal_test_dir="good_test",
        train_batch_size=8,
        eval_batch_size=8,
        num_workers=0,
    )
    engine = _engine(tmp_path / "results", max_epochs=1)
    model = Fastflow2D(**TINY_MODEL)
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule)[0]
    assert 0.0 <= metrics["image_AUROC"] <= 1.0
    assert not any(name.startswith("pixel_") for name in metrics)


@pytest.mark.parametrize(("model_epochs", "trainer_epochs", "expected"), [(2, None, 2), (3, 1, 1), (None, 1, 1)])
def test_max_epochs_bounds_training_unless_the_trainer_sets_it(
    demo_root: Path, tmp_path: Path, model_epochs: int | None, trainer_epochs: int | None, expected: int
) -> None:
    model = Fastflow2D(**TINY_MODEL, max_epochs=model_epochs)
    engine = _engine(tmp_path, max_epochs=trainer_epochs, limit_val_batches=1)
    engine.fit(model, datamodule=_datamodule(demo_root))
    assert engine.trainer.current_epoch == expected


def test_optimiser_uses_configured_lr_and_only_trainable_parameters() -> None:
    model = Fastflow2D(**TINY_MODEL, lr=3e-4, weight_decay=0.0)
    optimizer = model.configure_optimizers()
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (3e-4, 0.0)
    optimised = {id(parameter) for parameter in group["params"]}
    assert all(id(parameter) not in optimised for parameter in model.model.feature_extractor.parameters())
    assert len(optimised) == sum(1 for parameter in model.model.parameters() if parameter.requires_grad)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"), ({"max_epochs": 0}, "max_epochs")],
)
def test_bad_training_arguments_are_named(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Fastflow2D(**TINY_MODEL, **kwargs)


def test_default_input_size_comes_from_the_preset() -> None:
    assert tuple(Fastflow2D(backbone="resnet18", pre_trained=False).input_size) == (256, 256)
    deit = Fastflow2D(backbone="deit_base_distilled_patch16_384", pre_trained=False)
    assert tuple(deit.input_size) == (384, 384)
