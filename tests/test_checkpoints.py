# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Checkpoints: offline loading of pretrained models, resuming, and clear errors for bad files."""

import logging
from pathlib import Path

import pytest
import timm
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from anomalib.models import Padim
from lightning.pytorch import seed_everything

from anomalib_fastflow2d import Fastflow2D, resolve
from anomalib_fastflow2d.checkpoints import CheckpointError, describe_architecture_change, saved_config
from tests.conftest import ANOMALIB, TINY_MODEL, run


def _datamodule(root: Path) -> MVTecAD:
    return MVTecAD(root=root, category="brick", train_batch_size=8, eval_batch_size=8, num_workers=0)


def _engine(root: Path, **kwargs: object) -> Engine:
    return Engine(default_root_dir=root, accelerator="cpu", devices=1, enable_progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def pretrained_checkpoint(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Fastflow2D]:
    """A checkpoint trained from a local backbone weights file, which is deleted afterwards."""
    work = tmp_path_factory.mktemp("pretrained")
    weights_file = work / "resnet18_weights.pth"
    torch.manual_seed(1)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights_file)
    arguments = {**TINY_MODEL, "pre_trained": True, "backbone_weights": weights_file}
    model = Fastflow2D(**arguments)
    expected = torch.load(weights_file)["conv1.weight"]
    assert not torch.equal(model.model.feature_extractor.network.conv1.weight, expected)

    engine = _engine(work / "results", max_epochs=1)
    engine.fit(model, datamodule=_datamodule(demo_root))
    # The file's weights were loaded when training started.
    assert torch.equal(model.model.feature_extractor.network.conv1.weight, expected)
    weights_file.unlink()
    return Path(engine.trainer.checkpoint_callback.best_model_path), model


def test_pretrained_checkpoint_loads_offline_without_its_weights_file(
    pretrained_checkpoint: tuple[Path, Fastflow2D],
) -> None:
    checkpoint_path, model = pretrained_checkpoint
    loaded = Fastflow2D.load_from_checkpoint(checkpoint_path)
    images = torch.rand(2, 3, 64, 64)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(images).anomaly_map, loaded(images).anomaly_map)


def test_stock_cli_predicts_from_a_pretrained_checkpoint_offline(
    pretrained_checkpoint: tuple[Path, Fastflow2D], demo_root: Path, tmp_path: Path
) -> None:
    checkpoint_path, _ = pretrained_checkpoint
    images = demo_root / "brick" / "test" / "good"
    # Default arguments: pre_trained=True, which anomalib's Fastflow would try to download here.
    result = run(
        [ANOMALIB, "predict", "--model", "Fastflow2D", "--ckpt_path", str(checkpoint_path), "--data", str(images)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BackboneWeightsUnavailableError" not in result.stderr


def test_resuming_continues_where_training_stopped(demo_root: Path, tmp_path: Path) -> None:
    seed_everything(0)
    first = _engine(tmp_path / "first", max_epochs=1)
    first.fit(Fastflow2D(**TINY_MODEL), datamodule=_datamodule(demo_root))
    checkpoint_path = Path(
        first.trainer.checkpoint_callback.last_model_path or first.trainer.checkpoint_callback.best_model_path
    )
    steps_per_epoch = first.trainer.global_step
    saved = torch.load(checkpoint_path, weights_only=False)
    saved_adam_steps = next(iter(saved["optimizer_states"][0]["state"].values()))["step"]

    resumed_model = Fastflow2D(**TINY_MODEL)
    second = _engine(tmp_path / "second", max_epochs=2)
    second.fit(resumed_model, datamodule=_datamodule(demo_root), ckpt_path=checkpoint_path)
    assert second.trainer.current_epoch == 2
    assert second.trainer.global_step == 2 * steps_per_epoch
    adam_state = next(iter(second.trainer.optimizers[0].state.values()))
    assert int(adam_state["step"]) == int(saved_adam_steps) + steps_per_epoch


def test_truncated_checkpoint_is_named(pretrained_checkpoint: tuple[Path, Fastflow2D], tmp_path: Path) -> None:
    checkpoint_path, _ = pretrained_checkpoint
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint_path.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match=r"truncated.ckpt' \(100000 bytes\) cannot be read"):
        Fastflow2D.load_from_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt"):
        _engine(tmp_path).test(Fastflow2D(**TINY_MODEL), ckpt_path=truncated, datamodule=None)


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt' does not exist"):
        Fastflow2D.load_from_checkpoint(tmp_path / "nowhere.ckpt")


def test_checkpoint_of_another_model_is_refused(demo_root: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path / "padim", max_epochs=1)
    engine.fit(
        Padim(backbone="resnet18", pre_trained=False, layers=["layer1"], n_features=32),
        datamodule=_datamodule(demo_root),
    )
    padim_checkpoint = engine.trainer.checkpoint_callback.best_model_path
    with pytest.raises(CheckpointError, match=r"not written by Fastflow2D \(its weights start with .*model\."):
        Fastflow2D.load_from_checkpoint(padim_checkpoint)
    with pytest.raises(CheckpointError, match="not written by Fastflow2D"):
        _engine(tmp_path / "test").test(
            Fastflow2D(**TINY_MODEL), datamodule=_datamodule(demo_root), ckpt_path=padim_checkpoint
        )


def test_checkpoint_of_another_architecture_rebuilds_the_model(
    pretrained_checkpoint: tuple[Path, Fastflow2D], demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint_path, _ = pretrained_checkpoint
    model = Fastflow2D(**{**TINY_MODEL, "flow_steps": 3, "hidden_ratio": 0.5})
    with caplog.at_level(logging.WARNING, logger="anomalib_fastflow2d"):
        metrics = _engine(tmp_path).test(model, datamodule=_datamodule(demo_root), ckpt_path=checkpoint_path)[0]
    assert "flow_steps: 3 -> 2, hidden_ratio: 0.5 -> 1.0." in caplog.text
    assert "None" not in caplog.text
    assert model.model.config.flow_steps == 2
    assert model.model.config.hidden_ratio == 1.0
    assert 0.0 <= metrics["image_AUROC"] <= 1.0


@pytest.mark.parametrize("feature_norm", ["position", "channel"])
def test_only_a_size_that_shapes_weights_rebuilds_the_model(
    feature_norm: str, caplog: pytest.LogCaptureFixture
) -> None:
    trained = Fastflow2D(**{**TINY_MODEL, "feature_norm": feature_norm, "input_size": (64, 64)})
    checkpoint: dict = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    trained.on_save_checkpoint(checkpoint)
    model = Fastflow2D(**{**TINY_MODEL, "feature_norm": feature_norm, "input_size": (96, 96)})
    built = model.model

    with caplog.at_level(logging.WARNING, logger="anomalib_fastflow2d"):
        model.on_load_checkpoint(checkpoint)

    assert model.model.config.input_size == (64, 64)
    assert model.hparams["input_size"] == [64, 64]
    if feature_norm == "channel":  # no weight depends on the size: the backbone is not built again
        assert model.model is built
        assert not caplog.text
    else:  # the per-position maps are stored at the training size
        assert model.model is not built
        assert "input_size: [96, 96] -> [64, 64]" in caplog.text


def test_checkpoint_with_non_finite_weights_is_never_written(demo_root: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path, max_epochs=1)
    model = Fastflow2D(**TINY_MODEL)
    engine.fit(model, datamodule=_datamodule(demo_root))
    with torch.no_grad():
        next(model.model.flows.parameters()).fill_(float("nan"))
    target = tmp_path / "nan.ckpt"
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        engine.trainer.save_checkpoint(target)
    assert not target.exists()


def test_saved_config_reads_hyper_parameters_left_at_none_as_the_preset() -> None:
    # Checkpoints store the constructor's arguments; None means "the preset's value".
    hyper_parameters = {"backbone": "resnet18", "flow_steps": None, "hidden_ratio": 0.5, "feature_norm": None}
    saved = saved_config({**hyper_parameters, "lr": 0.1})
    assert saved == resolve("resnet18", hidden_ratio=0.5)
    assert describe_architecture_change(resolve("resnet18"), saved) == "hidden_ratio: 1.0 -> 0.5"


def test_checkpoint_records_the_resolved_norm_and_training_size(pretrained_checkpoint: tuple[Path, Fastflow2D]) -> None:
    hyper_parameters = torch.load(pretrained_checkpoint[0], weights_only=False)["hyper_parameters"]
    assert hyper_parameters["feature_norm"] == "position"
    assert hyper_parameters["input_size"] == [64, 64]


def test_checkpoint_from_before_the_position_norm_loads_with_channel_norms(
    pretrained_checkpoint: tuple[Path, Fastflow2D], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What earlier versions wrote: no feature_norm hyper-parameter, and GroupNorm(1, C) weights of shape (C,).
    checkpoint = torch.load(pretrained_checkpoint[0], weights_only=False)
    del checkpoint["hyper_parameters"]["feature_norm"]
    torch.manual_seed(2)
    state_dict = checkpoint["state_dict"]
    for key in [key for key in state_dict if key.startswith("model.norms.")]:
        state_dict[key] = torch.randn(state_dict[key].shape[0])
    legacy_path = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy_path)

    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        loaded = Fastflow2D.load_from_checkpoint(legacy_path)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        "Rebuilding Fastflow2D with the architecture of checkpoint being loaded: feature_norm: position -> channel."
    ]
    assert loaded.model.config.feature_norm.value == "channel"
    reference = torch.nn.GroupNorm(1, 64)
    reference.load_state_dict({"weight": state_dict["model.norms.0.weight"], "bias": state_dict["model.norms.0.bias"]})
    features = torch.randn(2, 64, 9, 13)
    assert torch.allclose(loaded.model.norms[0](features), reference(features), atol=1e-5)
