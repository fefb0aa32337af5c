# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Inverse flows, sampling and explanation on a tiny trained model, the explain CLI, and anomalib's visualiser."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from PIL import Image
from torchmetrics.classification import BinaryAUROC

from anomalib_fastflow2d import AnomalyMapGenerator, Fastflow2D, Fastflow2DModel, resolve
from anomalib_fastflow2d.anomaly_map import resize_and_average
from anomalib_fastflow2d.explain import explain, feature_distance, negative_log_likelihood, repair_latent
from anomalib_fastflow2d.explain.figures import figure_names, load_image
from tests.conftest import TINY_MODEL, run


@pytest.fixture(scope="module")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fastflow2D, Path, Path]:
    """A tiny Fastflow2D trained and tested on the demo data: model, checkpoint and results directory."""
    seed_everything(0)
    model = Fastflow2D(**TINY_MODEL)
    results = tmp_path_factory.mktemp("results")
    engine = Engine(default_root_dir=results, accelerator="cpu", devices=1, max_epochs=2, enable_progress_bar=False)
    datamodule = MVTecAD(root=demo_root, category="brick", eval_batch_size=16, num_workers=0)
    engine.train(model, datamodule=datamodule)
    checkpoint = Path(engine.trainer.checkpoint_callback.best_model_path)
    return model.eval(), checkpoint, results


@pytest.fixture(scope="module")
def test_images(trained: tuple[Fastflow2D, Path, Path], demo_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo test set, pre-processed as the model does, and its ground-truth masks ``(N, 64, 64)``."""
    model, _, _ = trained
    images = sorted((demo_root / "brick" / "test").glob("*/*.png"))
    batch = torch.cat([load_image(path, model)[0] for path in images])
    masks = []
    for path in images:
        mask_path = demo_root / "brick" / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        masks.append(
            torch.from_numpy(np.array(Image.open(mask_path))) > 0
            if mask_path.is_file()
            else torch.zeros(batch.shape[-2:], dtype=torch.bool)
        )
    return batch, torch.stack(masks)


def test_decode_inverts_encode_on_real_features(trained: tuple[Fastflow2D, Path, Path], test_images) -> None:
    model, _, _ = trained
    images, _ = test_images
    with torch.no_grad():
        features = model.model.features(images)
        latents, _ = model.model.encode(features)
        decoded = model.model.decode(latents)
    for feature, latent, inverse in zip(features, latents, decoded, strict=True):
        assert latent.shape == feature.shape
        assert (latent - feature).abs().max() > 0.1  # the flow does change the features
        assert (inverse - feature).abs().max() < 1e-4


def test_feature_shapes_match_the_features_at_any_size() -> None:
    model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False)
    for size in [(64, 64), (50, 90)]:
        with torch.no_grad():
            features = model.features(torch.randn(1, 3, *size))
        assert model.feature_shapes(size) == [feature.shape[1:] for feature in features]


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_samples_are_decoded_gaussian_latents(trained: tuple[Fastflow2D, Path, Path], temperature: float) -> None:
    model, _, _ = trained
    with torch.no_grad():
        samples = model.model.sample(4, (64, 64), temperature, torch.Generator().manual_seed(0))
        again = model.model.sample(4, (64, 64), temperature, torch.Generator().manual_seed(0))
        latents, _ = model.model.encode(samples)
    assert [tuple(sample.shape) for sample in samples] == [(4, 64, 16, 16), (4, 128, 8, 8), (4, 256, 4, 4)]
    assert all(torch.equal(sample, repeat) for sample, repeat in zip(samples, again, strict=True))
    for latent in latents:  # encoding the samples gives back z ~ N(0, T^2 I)
        assert latent.mean().item() == pytest.approx(0.0, abs=0.05)
        assert latent.std().item() == pytest.approx(temperature, rel=0.05)


@pytest.mark.parametrize(("num_samples", "temperature", "name"), [(0, 1.0, "num_samples"), (1, 0.0, "temperature")])
def test_sample_rejects_non_positive_arguments(num_samples: int, temperature: float, name: str) -> None:
    model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False)
    with pytest.raises(ValueError, match=name):
        model.sample(num_samples, (64, 64), temperature)


def test_negative_log_likelihood_gives_the_anomaly_map() -> None:
    latent = torch.randn(2, 8, 4, 4)
    anomaly_map, _ = AnomalyMapGenerator()([latent], image_size=(4, 4))
    nll = negative_log_likelihood(latent)
    assert nll.shape == (2, 1, 4, 4)
    assert torch.allclose(-torch.exp(-(nll - 0.5 * math.log(2 * math.pi))), anomaly_map, atol=1e-6)
    assert negative_log_likelihood(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(0.5 * math.log(2 * math.pi))


def test_repair_shrinks_only_latents_outside_the_typical_ball() -> None:
    latent = torch.zeros(1, 4, 1, 2)
    latent[0, :, 0, 0] = 3.0  # norm 6 = 3 sqrt(C): shrunk to norm sqrt(C) = 2
    latent[0, :, 0, 1] = 0.5  # norm 1: inside
    repaired = repair_latent(latent)
    assert torch.allclose(repaired[0, :, 0, 0], torch.full((4,), 1.0))
    assert torch.equal(repaired[0, :, 0, 1], latent[0, :, 0, 1])
    assert torch.allclose(repair_latent(latent, radius=2.0)[0, :, 0, 0], torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="radius"):
        repair_latent(latent, radius=0.0)


def test_distance_and_resizing() -> None:
    features = torch.zeros(1, 4, 2, 2)
    other = features.clone()
    other[0, :, 1, 1] = 2.0
    distance = feature_distance(features, other)
    assert distance[0, 0].tolist() == [[0.0, 0.0], [0.0, 2.0]]
    resized = resize_and_average([distance, torch.zeros(1, 1, 1, 1)], (4, 4))
    assert resized.shape == (1, 1, 4, 4)
    assert resized[0, 0, 3, 3].item() == pytest.approx(1.0)  # the mean of 2 and 0


def test_injected_latent_anomaly_stands_out_in_feature_space(trained: tuple[Fastflow2D, Path, Path], test_images):
    model, _, _ = trained
    images, _ = test_images
    with torch.no_grad():
        features = model.model.features(images[:1])
        latents, _ = model.model.encode(features)
        latents[0][:, :, 4:8, 4:8] += 5.0  # an anomaly injected in z, as in the paper
        injected = model.model.decode(latents)[0]
    distance = feature_distance(features[0], injected)[0, 0]
    inside = distance[4:8, 4:8]
    outside = distance.clone()
    outside[4:8, 4:8] = 0
    assert inside.min() > outside.max()


def test_repair_distance_localises_defects_like_the_anomaly_map(trained: tuple[Fastflow2D, Path, Path], test_images):
    model, _, _ = trained
    images, masks = test_images
    with torch.no_grad():
        explanation = explain(model.model, images)
        anomaly_map = model.model(images).anomaly_map
    assert explanation.distance.shape == explanation.nll.shape == (len(images), 1, 64, 64)
    assert all(
        torch.equal(repaired, repair_latent(latent))
        for latent, repaired in zip(explanation.latents, explanation.repaired_latents, strict=True)
    )
    target = masks.flatten().int()
    distance_auroc = BinaryAUROC()(explanation.distance.flatten(), target).item()
    map_auroc = BinaryAUROC()(anomaly_map.flatten(), target).item()
    assert map_auroc > 0.6
    assert distance_auroc > map_auroc - 0.1


def test_explain_command_writes_figures(trained: tuple[Fastflow2D, Path, Path], demo_root: Path, tmp_path: Path):
    _, checkpoint, _ = trained
    images = [demo_root / "brick" / "test" / kind / "000.png" for kind in ("good", "patch")]
    out = tmp_path / "figures"
    command = [sys.executable, "-m", "anomalib_fastflow2d.explain", "--ckpt_path", str(checkpoint), "--out", str(out)]
    result = run([*command, "--image", *map(str, images)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = [out / "good_000_explanation.png", out / "patch_000_explanation.png", out / "samples.png"]
    assert result.stdout.split() == list(map(str, expected))
    for path in expected:
        with Image.open(path) as figure:
            figure.verify()
            assert figure.format == "PNG"
            assert min(figure.size) >= 300


def test_figures_are_named_after_the_file_and_where_needed_the_folder() -> None:
    assert figure_names([Path("a/x.png"), Path("b/y.jpg")]) == ["x", "y"]
    assert figure_names([Path("good/000.png"), Path("stain/000.png")]) == ["good_000", "stain_000"]
    with pytest.raises(ValueError, match="same folder and file name"):
        figure_names([Path("one/good/000.png"), Path("two/good/000.png")])


def test_explain_command_names_a_missing_image(trained: tuple[Fastflow2D, Path, Path], tmp_path: Path) -> None:
    _, checkpoint, _ = trained
    result = run(
        [sys.executable, "-m", "anomalib_fastflow2d.explain", "--ckpt_path", str(checkpoint), "--image", "nope.png"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "no such file: nope.png" in result.stderr


def test_anomalib_visualiser_writes_overlays(trained: tuple[Fastflow2D, Path, Path], demo_root: Path) -> None:
    _, _, results = trained
    written = sorted(results.glob("**/images/**/*.png"))
    tested = sorted((demo_root / "brick" / "test").glob("*/*.png"))
    assert sorted((path.parent.name, path.name) for path in written) == sorted(
        (path.parent.name, path.name) for path in tested
    )
    for path in written:
        with Image.open(path) as overlay:
            assert overlay.mode == "RGB"
            assert overlay.width > overlay.height >= 64  # anomalib puts image, masks and maps side by side
            assert len(set(overlay.convert("L").getdata())) > 10  # a picture, not a blank canvas


def test_explain_auroc_script_prints_both_aurocs(trained: tuple[Fastflow2D, Path, Path], demo_root: Path) -> None:
    _, checkpoint, _ = trained
    command = [sys.executable, "-m", "scripts.explain_auroc", "--ckpt_path", str(checkpoint), "--data_root"]
    result = run([*command, str(demo_root)], cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    rows = [line.strip("| ").split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    aurocs = {name: float(value) for name, value in rows[2:]}  # after the header and its rule
    assert set(aurocs) == {"anomaly map", "explanation: feature repair distance", "explanation: NLL of z"}
    assert all(0.6 < value <= 1.0 for value in aurocs.values())
    assert "within 0.0001 at all 4032 feature pixels" in result.stdout  # 12 images x (16^2 + 8^2 + 4^2)


def test_readme_figures_script_draws_every_picture(
    trained: tuple[Fastflow2D, Path, Path], demo_root: Path, tmp_path: Path
) -> None:
    _, checkpoint, _ = trained
    command = [sys.executable, "-m", "scripts.readme_figures", "--ckpt_path", str(checkpoint), "--out", str(tmp_path)]
    result = run([*command, "--data_root", str(demo_root)], cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    names = ["demo_predictions", "good_000_explanation", "patch_000_explanation", "samples"]
    names += ["scratch_000_explanation", "stain_000_explanation"]
    assert sorted(path.stem for path in tmp_path.iterdir()) == names
    with Image.open(tmp_path / "demo_predictions.png") as picture:
        assert picture.size == (4 * 144, 4 * 144 + 16)  # four images by four rows of 1.8 inches at 80 dpi
