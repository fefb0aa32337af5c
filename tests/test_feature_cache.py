# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Cached-feature training learns the same model, runs the backbone once, and turns itself off when it must."""

import logging
from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from torchvision.transforms import v2

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.feature_cache import CacheStorage, FeatureCache
from benchmarks.stability import EpochLosses
from tests.conftest import TINY_MODEL

EPOCHS = 3


class _CountingExtractor:
    def __init__(self, model: Fastflow2D) -> None:
        self.extract = model.model.feature_extractor.forward
        self.images = 0
        model.model.feature_extractor.forward = self  # type: ignore[method-assign]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.images += images.shape[0]
        return self.extract(images)


def _train(
    demo_root: Path,
    root: Path,
    num_workers: int = 0,
    augmentations: v2.Transform | None = None,
    **model_arguments: object,
) -> tuple[Fastflow2D, list[float], int]:
    seed_everything(0)
    model = Fastflow2D(**{**TINY_MODEL, **model_arguments})
    counter = _CountingExtractor(model)
    losses = EpochLosses()
    datamodule = MVTecAD(
        root=demo_root,
        category="brick",
        train_batch_size=4,
        num_workers=num_workers,
        train_augmentations=augmentations,
    )
    engine = Engine(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        limit_val_batches=0,
        enable_progress_bar=False,
        callbacks=[losses],
    )
    engine.fit(model, datamodule=datamodule)
    return model, losses.losses, counter.images


@pytest.fixture(scope="module")
def uncached(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fastflow2D, list[float], int]:
    return _train(demo_root, tmp_path_factory.mktemp("uncached"), cache_features=False)


def _assert_same_training(
    cached: tuple[Fastflow2D, list[float], int], uncached: tuple[Fastflow2D, list[float], int]
) -> None:
    cached_model, cached_losses, _ = cached
    uncached_model, uncached_losses, _ = uncached
    assert cached_losses == pytest.approx(uncached_losses, rel=1e-5)
    for (name, weight), other in zip(
        cached_model.model.state_dict().items(), uncached_model.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(weight, other, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("num_workers", [0, 2])
def test_cached_training_learns_the_same_model_and_runs_the_backbone_once(
    demo_root: Path,
    tmp_path: Path,
    uncached: tuple[Fastflow2D, list[float], int],
    num_workers: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        cached = _train(demo_root, tmp_path, num_workers=num_workers)
    assert "Feature cache: in memory" in caplog.text
    _assert_same_training(cached, uncached)
    train_images = len(list((demo_root / "brick" / "train" / "good").glob("*.png")))
    assert uncached[2] == EPOCHS * train_images
    assert cached[2] == train_images


def test_disk_cache_learns_the_same_model_and_removes_its_folder(
    demo_root: Path, tmp_path: Path, uncached: tuple[Fastflow2D, list[float], int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        cached = _train(demo_root, tmp_path, feature_cache_limit_mb=0.1)
    assert "Feature cache: on disk" in caplog.text
    assert "about 1.8 MB for 16 images (over the 0.1 MB memory limit)" in caplog.text
    _assert_same_training(cached, uncached)
    assert cached[2] == len(list((demo_root / "brick" / "train" / "good").glob("*.png")))
    assert list(tmp_path.rglob("feature_cache*")) == []


def test_random_augmentation_turns_the_cache_off(
    demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        _, _, backbone_images = _train(demo_root, tmp_path, augmentations=v2.RandomHorizontalFlip(p=0.5))
    assert "Feature cache: off, because the training dataset applies random augmentation" in caplog.text
    assert backbone_images == EPOCHS * len(list((demo_root / "brick" / "train" / "good").glob("*.png")))


def test_without_memory_or_disk_room_features_are_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        cache = FeatureCache.plan(bytes_per_image=2**40, num_images=2**20, memory_limit_mb=1, directory=tmp_path)
    assert cache is None
    assert "Feature cache: off" in caplog.text
    assert "recomputed every epoch" in caplog.text


def test_on_a_gpu_the_cache_stays_in_gpu_memory_where_a_quarter_of_the_free_memory_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    free_bytes = 1000 * 2**20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device: (free_bytes, 2 * free_bytes))
    cuda = torch.device("cuda", 0)

    def plan(num_images: int, memory_limit_mb: float) -> FeatureCache | None:
        return FeatureCache.plan(2**20, num_images, memory_limit_mb, tmp_path / str(num_images), device=cuda)

    with caplog.at_level(logging.INFO, logger="anomalib_fastflow2d"):
        fits = plan(num_images=250, memory_limit_mb=4096)
        over_a_quarter = plan(num_images=251, memory_limit_mb=4096)
        over_the_limit = plan(num_images=200, memory_limit_mb=100)
    storages = [cache.storage if cache is not None else None for cache in (fits, over_a_quarter, over_the_limit)]
    assert storages == [CacheStorage.GPU, CacheStorage.MEMORY, CacheStorage.DISK]
    assert "Feature cache: in GPU memory, about 250 MB for 250 images." in caplog.text


def test_a_device_cache_keeps_features_where_they_were_extracted_and_extracts_once() -> None:
    cache = FeatureCache(CacheStorage.GPU)
    images = torch.randn(3, 2, 4, 4)
    calls = []

    def extract(batch: torch.Tensor) -> list[torch.Tensor]:
        calls.append(len(batch))
        return [batch * 2, batch.mean(dim=1, keepdim=True)]

    first = cache.features(["a", "b", "c"], images, extract)
    again = cache.features(["c", "a"], images[[2, 0]], extract)
    assert calls == [3]
    assert len(cache) == 3
    torch.testing.assert_close(again[0], first[0][[2, 0]], rtol=0, atol=0)
    assert again[1].device == images.device


def test_only_the_images_with_non_finite_features_are_left_out_of_the_cache() -> None:
    cache = FeatureCache(CacheStorage.MEMORY)
    images = torch.randn(3, 2, 4, 4)
    images[1, 0, 0, 0] = float("nan")
    calls = []

    def extract(batch: torch.Tensor) -> list[torch.Tensor]:
        calls.append(len(batch))
        return [batch * 2, batch.mean(dim=1, keepdim=True)]

    cache.features(["a", "b", "c"], images, extract)
    assert len(cache) == 2
    cache.features(["a", "b", "c"], images, extract)
    assert calls == [3, 1]
