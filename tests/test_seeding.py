# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's ``--seed_everything`` seeds the run once the plugin is installed: for Fastflow2D and anomalib's models."""

import logging
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from anomalib.cli import AnomalibCLI

from anomalib_fastflow2d import seeding
from tests.conftest import ANOMALIB, run

ROOT = Path(__file__).resolve().parents[1]
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
        assert seeding.seed_run(False) is None  # noqa: FBT003 - the option's value
        assert seeding.seed_run(None) is None
    assert caplog.messages == ["Seeding everything with 7 (from --seed_everything)."] * 2


def test_true_draws_a_new_seed_unless_lightning_passed_one_down(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drawn = []
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        for _ in range(3):
            monkeypatch.delenv(seeding.LIGHTNING_SEED_VARIABLE, raising=False)
            drawn.append(seeding.seed_run(True))  # noqa: FBT003 - the option's value
        monkeypatch.setenv(seeding.LIGHTNING_SEED_VARIABLE, "5")
        assert seeding.seed_run(True) == 5  # noqa: FBT003
    assert len(set(drawn)) == len(drawn)
    assert caplog.messages[0] == (
        f"Seeding everything with {drawn[0]} (drawn at random; repeat this run with --seed_everything {drawn[0]})."
    )
    assert caplog.messages[-1] == "Seeding everything with 5 (from PL_GLOBAL_SEED, as Lightning passes it on)."


def test_the_drawn_seed_is_written_into_the_runs_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(seeding.LIGHTNING_SEED_VARIABLE, raising=False)
    cli = AnomalibCLI(["fit", "--model", "Padim", "--model.pre_trained=false", *MVTEC], run=False)
    assert cli.config["fit"]["seed_everything"] == int(os.environ[seeding.LIGHTNING_SEED_VARIABLE])


def test_installing_twice_wraps_once() -> None:
    wrapped = AnomalibCLI.before_instantiate_classes
    seeding.install(sys.modules[AnomalibCLI.__module__])
    assert AnomalibCLI.before_instantiate_classes is wrapped


def _metrics(output: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"(\w+_(?:AUROC|F1Score))\s*│\s*([0-9.]+)", output)}


@pytest.mark.slow
def test_unseeded_cli_runs_draw_different_seeds_and_a_logged_seed_repeats_its_run(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A seed that the in-process tests left in this environment would reach the runs as Lightning's PL_GLOBAL_SEED.
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    data = [*MVTEC, f"--data.root={demo_root}", "--data.category=brick", "--data.train_batch_size=8"]
    model = ["--model", "Fastflow2D", "--model.pre_trained=false", "--model.flow_steps=1", "--model.input_size=[64,64]"]
    trainer = ["--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]

    def train(name: str, *seed: str) -> tuple[int, dict[str, float], dict[str, torch.Tensor], str]:
        folder = tmp_path / name
        folder.mkdir()
        result = run([ANOMALIB, "train", *model, *data, *trainer, *seed], folder)
        assert result.returncode == 0, result.stderr[-3000:]
        output = result.stdout + result.stderr
        logged = re.search(r"Seeding everything with (\d+)", output)
        assert logged, output[-3000:]
        checkpoint = folder / "results/Fastflow2D/MVTecAD/brick/latest/weights/lightning/model.ckpt"
        weights = torch.load(checkpoint, weights_only=False)["state_dict"]
        return int(logged.group(1)), _metrics(result.stdout), weights, output

    first_seed, first_metrics, first_weights, first_output = train("first")
    second_seed, _, second_weights, _ = train("second")
    again_seed, again_metrics, again_weights, _ = train("again", f"--seed_everything={first_seed}")

    assert first_seed != second_seed
    assert f"--seed_everything {first_seed}" in first_output
    assert again_seed == first_seed
    assert {"image_AUROC", "pixel_AUROC"} <= first_metrics.keys()
    assert again_metrics == first_metrics
    assert first_weights.keys() == again_weights.keys()
    assert all(torch.equal(first_weights[key], again_weights[key]) for key in first_weights)
    backbone = next(key for key in first_weights if "feature_extractor" in key and key.endswith("weight"))
    assert not torch.equal(first_weights[backbone], second_weights[backbone])


def _paragraph_after_install(page: str) -> str:
    """The first paragraph after the ``pip install anomalib-fastflow2d`` code block of ``page``."""
    after_install = page.split("pip install anomalib-fastflow2d", 1)[1]
    return after_install.split("```", 1)[1].strip().split("\n\n", 1)[0]


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_install_instructions_say_that_every_model_is_seeded_and_how_to_turn_it_off(page: str) -> None:
    paragraph = _paragraph_after_install((ROOT / page).read_text())
    assert "every model" in paragraph
    assert f"{seeding.DISABLE_VARIABLE}=1" in paragraph
