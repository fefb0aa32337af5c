# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from anomalib.data import Folder, ImageBatch, MVTecAD
from anomalib.engine import Engine
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import seed_everything
from torchvision.transforms.v2 import Resize

from anomalib_fastflow2d import Fastflow2D
from tests.conftest import ANOMALIB, TINY_MODEL, TINY_MODEL_CLI, run


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
    for name in ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"]:
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


def test_explicit_input_size_is_the_training_size_without_a_pre_processor() -> None:
    model = Fastflow2D(**{**TINY_MODEL, "input_size": (128, 96)}, pre_processor=False)

    assert model.model.config.input_size == (128, 96)
    checkpoint: dict = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["hyper_parameters"]["input_size"] == [128, 96]
    # The per-position norm's maps are stored at the 128x96 features: strides 4, 8 and 16.
    assert [tuple(norm.weight.shape[-2:]) for norm in model.model.norms] == [(32, 24), (16, 12), (8, 6)]


def test_input_size_that_contradicts_the_pre_processor_is_refused() -> None:
    pre_processor = PreProcessor(transform=Resize((96, 96)))
    with pytest.raises(ValueError, match=r"input_size \(128, 128\) differs from the pre-processor's resize"):
        Fastflow2D(**{**TINY_MODEL, "input_size": (128, 128)}, pre_processor=pre_processor)
    # Left out, the pre-processor's resize is the training size.
    assert Fastflow2D(**{**TINY_MODEL, "input_size": None}, pre_processor=pre_processor).model.config.input_size == (
        96,
        96,
    )


def test_crop_mode_trains_on_crops_and_scores_whole_frames(demo_root: Path, tmp_path: Path) -> None:
    seed_everything(0)
    model = Fastflow2D(**TINY_MODEL, train_crop_size=(32, 48))
    encoded_sizes: list[tuple[int, ...]] = []
    encode = model.model.encode

    def recording_encode(features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        encoded_sizes.append(tuple(features[0].shape[-2:]))
        return encode(features)

    model.model.encode = recording_encode  # type: ignore[method-assign]
    engine = _engine(tmp_path, max_epochs=1)
    engine.fit(model, datamodule=_datamodule(demo_root))
    predictions = engine.predict(model, datamodule=_datamodule(demo_root))

    assert set(encoded_sizes) == {(8, 12)}  # training saw 32x48 crops (stride 4), and only those
    assert predictions is not None
    assert {tuple(batch.anomaly_map.shape[-2:]) for batch in predictions} == {(64, 64)}  # scored whole
    assert engine.trainer.checkpoint_callback is not None
    hyper_parameters = torch.load(engine.trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert hyper_parameters["hyper_parameters"]["train_crop_size"] == (32, 48)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"train_crop_size": (40, 32)}, r"multiple of 16 .* e.g. \(32, 32\)"),
        ({"train_crop_size": (32, 80)}, r"must fit in input_size \(64, 64\)"),
        ({"backbone": "deit_base_distilled_patch16_384", "input_size": None, "train_crop_size": (64, 64)}, "CNN"),
    ],
)
def test_bad_training_crops_are_named_with_the_fix(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fastflow2D(**{**TINY_MODEL, "flow_steps": 1, **arguments})


class _PoisonedFeatures:
    """Wraps a feature extractor so that chosen calls return NaN or infinite features, as a diverging input would."""

    def __init__(self, extract: Callable[[torch.Tensor], list[torch.Tensor]], poisoned_calls: set[int]) -> None:
        self.extract = extract
        self.poisoned_calls = poisoned_calls
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.extract(images)
        self.calls += 1
        if self.calls in self.poisoned_calls:
            return [feature.clone().fill_(float("nan" if self.calls % 2 else "inf")) for feature in features]
        return features


def _poison(model: Fastflow2D, poisoned_calls: set[int]) -> None:
    extractor = model.model.feature_extractor
    extractor.forward = _PoisonedFeatures(extractor.forward, poisoned_calls)  # type: ignore[method-assign]


def test_non_finite_steps_are_skipped_and_counted(demo_root: Path, tmp_path: Path) -> None:
    model = Fastflow2D(**TINY_MODEL)
    _poison(model, poisoned_calls={1, 3})  # two of the four training steps (16 images, batch 8, 2 epochs)
    engine = _engine(tmp_path, max_epochs=2, limit_val_batches=0)
    engine.fit(model, datamodule=_datamodule(demo_root))
    assert model.skipped_steps == 2
    assert engine.trainer.logged_metrics["train_skipped_steps"] == 2
    assert math.isfinite(engine.trainer.logged_metrics["train_loss"])
    assert all(bool(torch.isfinite(weight).all()) for weight in model.model.state_dict().values())
    checkpoint = torch.load(engine.trainer.checkpoint_callback.last_model_path or _last_checkpoint(tmp_path))
    weights = [weight for name, weight in checkpoint["state_dict"].items() if name.startswith("model.")]
    assert all(bool(torch.isfinite(weight).all()) for weight in weights)


def _last_checkpoint(root: Path) -> Path:
    return max(root.rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)


def test_training_stops_after_too_many_non_finite_steps(demo_root: Path, tmp_path: Path) -> None:
    model = Fastflow2D(**TINY_MODEL, max_skipped_steps=1)
    _poison(model, poisoned_calls={1, 2})
    engine = _engine(tmp_path, max_epochs=2, limit_val_batches=0)
    with pytest.raises(FloatingPointError, match=r"2 steps had a non-finite loss.*max_skipped_steps=1.*Lower lr"):
        engine.fit(model, datamodule=_datamodule(demo_root))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_fifty_epochs_at_the_paper_learning_rate_stay_finite(demo_root: Path, tmp_path: Path) -> None:
    """The full preset at lr 1e-3; ``benchmarks/stability.py`` runs every CPU preset on the full demo data."""
    seed_everything(0)
    model = Fastflow2D(backbone="resnet18", pre_trained=False, input_size=(64, 64), lr=1e-3, max_skipped_steps=0)
    datamodule = MVTecAD(root=demo_root, category="brick", train_batch_size=16, num_workers=0)
    engine = _engine(tmp_path, max_epochs=50, limit_val_batches=0)
    engine.fit(model, datamodule=datamodule)
    assert engine.trainer.current_epoch == 50
    assert model.skipped_steps == 0
    assert math.isfinite(engine.trainer.logged_metrics["train_loss"])


_SEEDED_RUN = """
import json, sys
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from anomalib_fastflow2d import Fastflow2D

seed_everything(42)
datamodule = MVTecAD(root=sys.argv[1], category="brick", train_batch_size=8, eval_batch_size=8, num_workers=0)
engine = Engine(default_root_dir=sys.argv[2], accelerator="cpu", devices=1, max_epochs=2, enable_progress_bar=False)
model = Fastflow2D(backbone="resnet18", pre_trained=False, flow_steps=2, input_size=(64, 64))
engine.fit(model, datamodule=datamodule)
print("METRICS", json.dumps(engine.test(model, datamodule=datamodule)[0]))
"""


def test_same_seed_gives_the_same_metrics_in_separate_processes(demo_root: Path, tmp_path: Path) -> None:
    metrics = []
    for attempt in range(2):
        result = run([sys.executable, "-c", _SEEDED_RUN, str(demo_root), str(tmp_path / str(attempt))], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        line = next(line for line in result.stdout.splitlines() if line.startswith("METRICS "))
        metrics.append(json.loads(line.removeprefix("METRICS ")))
    assert set(metrics[0]) >= {"image_AUROC", "pixel_AUROC", "pixel_F1Score"}
    assert metrics[0] == metrics[1]


def test_ddp_on_two_cpu_processes_learns_thresholds_over_the_whole_validation_set(
    demo_root: Path, tmp_path: Path
) -> None:
    result = run(
        [
            ANOMALIB,
            "train",
            *TINY_MODEL_CLI,
            "--data",
            "MVTecAD",
            "--data.root",
            str(demo_root),
            "--data.category",
            "brick",
            "--data.num_workers",
            "0",
            "--data.train_batch_size",
            "4",
            "--data.eval_batch_size",
            "4",
            "--data.val_split_mode",
            "same_as_test",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "1",
            "--default_root_dir",
            str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    assert "image_AUROC" in result.stdout

    checkpoint_path = _last_checkpoint(tmp_path / "results")
    model = Fastflow2D.load_from_checkpoint(checkpoint_path)
    post_processor = model.post_processor
    assert isinstance(post_processor, PostProcessor)
    learned = [post_processor.image_min, post_processor.image_max, post_processor._image_threshold]
    learned += [post_processor.pixel_min, post_processor.pixel_max, post_processor._pixel_threshold]
    # One process over the whole validation set, with the same weights, must find the same statistics.
    datamodule = MVTecAD(
        root=demo_root, category="brick", eval_batch_size=4, num_workers=0, val_split_mode="same_as_test"
    )
    _engine(tmp_path / "single").validate(model, datamodule=datamodule)
    recomputed = [post_processor.image_min, post_processor.image_max, post_processor._image_threshold]
    recomputed += [post_processor.pixel_min, post_processor.pixel_max, post_processor._pixel_threshold]
    assert torch.allclose(torch.stack(learned).float(), torch.stack(recomputed).float(), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_keeps_the_loss_in_float32_and_close_to_it() -> None:
    torch.manual_seed(0)
    model = Fastflow2D(**TINY_MODEL)
    model.log = lambda *_, **__: None  # type: ignore[method-assign]
    batch = ImageBatch(image=torch.randn(4, 3, 64, 64))
    full_precision = model.training_step(batch, 0)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.training_step(batch, 0)["loss"]
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(full_precision.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, log_jacobians = model.model.encode(model.model.features(batch.image))
    assert all(log_jacobian.dtype == torch.float32 for log_jacobian in log_jacobians)


def test_bf16_mixed_precision_trains_from_the_trainer_option(demo_root: Path, tmp_path: Path) -> None:
    model = Fastflow2D(**TINY_MODEL, max_skipped_steps=0)
    engine = _engine(tmp_path, max_epochs=1, precision="bf16-mixed")
    engine.fit(model, datamodule=_datamodule(demo_root))
    assert math.isfinite(engine.trainer.logged_metrics["train_loss"])
    assert all(
        weight.dtype == torch.float32 for weight in model.model.state_dict().values() if weight.is_floating_point()
    )


def test_compiled_model_trains_and_predicts_like_the_eager_one(demo_root: Path, tmp_path: Path) -> None:
    results = []
    for compile_mode in (None, "default"):
        seed_everything(0)
        # One scale and one coupling block keep inductor's CPU compilation short.
        model = Fastflow2D(**{**TINY_MODEL, "feature_stages": [1], "flow_steps": 1}, compile_mode=compile_mode)
        engine = _engine(tmp_path / str(compile_mode), max_epochs=1, limit_val_batches=0)
        engine.fit(model, datamodule=_datamodule(demo_root))
        loss = float(engine.trainer.logged_metrics["train_loss"])
        results.append((model, loss, engine.predict(model, datamodule=_datamodule(demo_root))))
    (eager, eager_loss, eager_predictions), (compiled, compiled_loss, compiled_predictions) = results
    assert compiled.model.compiled
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    assert set(compiled.state_dict()) == set(eager.state_dict())
    for eager_batch, compiled_batch in zip(eager_predictions, compiled_predictions, strict=True):
        assert torch.allclose(eager_batch.anomaly_map, compiled_batch.anomaly_map, atol=1e-4)
