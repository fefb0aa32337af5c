# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's ``--seed_everything`` seeds the run once the plugin is installed: for Fastflow2D and anomalib's models."""

import logging
import re
from pathlib import Path

import pytest
import torch
from anomalib.cli import AnomalibCLI

from anomalib_fastflow2d import seeding
from tests.conftest import ANOMALIB, run

MVTEC = ["--data", "anomalib.data.MVTecAD", "--data.num_workers=0"]


def _built_model_weights(model: str, *arguments: str) -> torch.Tensor:
    """The first parameter of the model the stock CLI builds, without running anything."""
    cli = AnomalibCLI(["fit", "--model", model, "--model.pre_trained=false", *MVTEC, *arguments], run=False)
    return next(cli.model.parameters()).detach().clone()


def test_the_stock_cli_seeds_anomalibs_own_models_too() -> None:
    first = _built_model_weights("Padim", "--seed_everything=1")
    assert torch.equal(first, _built_model_weights("Padim", "--seed_everything=1"))
    assert not torch.equal(first, _built_model_weights("Padim", "--seed_everything=2"))


def test_the_disable_variable_leaves_the_cli_unseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(seeding.DISABLE_VARIABLE, "1")
    first = _built_model_weights("Fastflow2D", "--seed_everything=1")
    assert not torch.equal(first, _built_model_weights("Fastflow2D", "--seed_everything=1"))


def test_seed_values_mean_what_they_mean_in_lightning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        assert seeding.seed_run(7) == 7
        first = torch.rand(3)
        seeding.seed_run("7")
        assert torch.equal(torch.rand(3), first)
        drawn = seeding.seed_run(True)  # noqa: FBT003 - the option's value
        assert seeding.seed_run(False) is None  # noqa: FBT003
        assert seeding.seed_run(None) is None
    assert isinstance(drawn, int)
    assert caplog.messages == [
        "Seeding everything with 7 (from --seed_everything).",
        "Seeding everything with 7 (from --seed_everything).",
        f"Seeding everything with {drawn} (drawn at random; pass --seed_everything N to repeat).",
    ]


def test_installing_twice_wraps_once() -> None:
    wrapped = AnomalibCLI.before_instantiate_classes
    seeding.install(AnomalibCLI)
    assert AnomalibCLI.before_instantiate_classes is wrapped


def _metrics(output: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"(\w+_(?:AUROC|F1Score))\s*│\s*([0-9.]+)", output)}


@pytest.mark.slow
def test_two_cli_runs_with_one_seed_train_the_same_model_and_another_seed_does_not(
    demo_root: Path, tmp_path: Path
) -> None:
    data = [*MVTEC, f"--data.root={demo_root}", "--data.category=brick", "--data.train_batch_size=8"]
    model = ["--model", "Fastflow2D", "--model.pre_trained=false", "--model.flow_steps=1", "--model.input_size=[64,64]"]
    trainer = ["--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]

    def train(name: str, seed: int) -> tuple[dict[str, float], dict[str, torch.Tensor], str]:
        folder = tmp_path / name
        folder.mkdir()
        result = run([ANOMALIB, "train", *model, *data, *trainer, f"--seed_everything={seed}"], folder)
        assert result.returncode == 0, result.stderr[-3000:]
        checkpoint = folder / "results/Fastflow2D/MVTecAD/brick/latest/weights/lightning/model.ckpt"
        weights = torch.load(checkpoint, weights_only=False)["state_dict"]
        return _metrics(result.stdout), weights, result.stdout + result.stderr

    first_metrics, first_weights, output = train("first", 1)
    assert "Seeding everything with 1 (from --seed_everything)." in output
    again_metrics, again_weights, _ = train("again", 1)
    _, other_weights, _ = train("other", 2)

    assert {"image_AUROC", "pixel_AUROC"} <= first_metrics.keys()
    assert again_metrics == first_metrics
    assert first_weights.keys() == again_weights.keys()
    assert all(torch.equal(first_weights[key], again_weights[key]) for key in first_weights)
    backbone = next(key for key in first_weights if "feature_extractor" in key and key.endswith("weight"))
    assert not torch.equal(first_weights[backbone], other_weights[backbone])
