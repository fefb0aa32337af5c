# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Training on cached backbone features.

The backbone is frozen and, without random augmentation, each training image gives the same features every epoch,
so they are computed in the first epoch and reused. For the paper's ViT backbones the backbone is nearly all of an
epoch's cost, so later epochs only pay for loading images and training the flows.

The cache lives in the training process (not in dataloader workers), keyed by image path, so it is correct with any
number of workers and under DDP, where each rank caches the images its sampler gives it.
"""

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

DISK_HEADROOM = 1.2
"""A disk cache is used only where the disk has this many times its estimated size free."""

GPU_SHARE = 0.25
"""A GPU-resident cache may take at most this fraction of the GPU memory free when training starts."""


class CacheStorage(Enum):
    """Where cached features are kept."""

    MEMORY = "memory"
    DISK = "disk"
    GPU = "gpu"


class FeatureCache:
    """Backbone features of training images, in GPU memory, host memory or a folder, keyed by image path.

    Args:
        storage: GPU memory (the device the features come from), host memory, or one file per image in
            ``directory``.
        directory: Folder for the disk cache; it is created, and removed by :meth:`clear`.
    """

    def __init__(self, storage: CacheStorage, directory: Path | None = None) -> None:
        if storage is CacheStorage.DISK and directory is None:
            msg = "A disk feature cache needs a directory."
            raise ValueError(msg)
        self.storage = storage
        self.directory = directory
        self._memory: dict[str, list[torch.Tensor]] = {}
        self._on_disk: set[str] = set()
        if directory is not None and storage is CacheStorage.DISK:
            directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def plan(
        cls,
        bytes_per_image: int,
        num_images: int,
        memory_limit_mb: float,
        directory: Path,
        device: torch.device | None = None,
    ) -> "FeatureCache | None":
        """Choose GPU, host memory, disk or no cache for ``num_images`` images, and say which in one log line.

        On a CUDA ``device`` the cache stays in GPU memory where it fits both ``memory_limit_mb`` and a quarter of
        the free GPU memory: copying features from the host every step would cost about what the backbone saves.

        Returns:
            The cache, or ``None`` where neither memory nor disk can hold it (features are then recomputed).
        """
        total_mb = bytes_per_image * num_images / 2**20
        if total_mb <= memory_limit_mb:
            on_gpu = device is not None and device.type == "cuda"
            if on_gpu and total_mb <= GPU_SHARE * torch.cuda.mem_get_info(device)[0] / 2**20:
                log.info("Feature cache: in GPU memory, about %s MB for %d images.", _megabytes(total_mb), num_images)
                return cls(CacheStorage.GPU)
            log.info("Feature cache: in memory, about %s MB for %d images.", _megabytes(total_mb), num_images)
            return cls(CacheStorage.MEMORY)
        free_mb = shutil.disk_usage(_existing_parent(directory)).free / 2**20
        if free_mb >= DISK_HEADROOM * total_mb:
            log.info(
                "Feature cache: on disk in %s, about %s MB for %d images (over the %s MB memory limit).",
                directory,
                _megabytes(total_mb),
                num_images,
                _megabytes(memory_limit_mb),
            )
            return cls(CacheStorage.DISK, directory)
        log.info(
            "Feature cache: off, about %s MB needed, over the %s MB memory limit and the %s MB free on disk; "
            "features are recomputed every epoch.",
            _megabytes(total_mb),
            _megabytes(memory_limit_mb),
            _megabytes(free_mb),
        )
        return None

    def features(
        self,
        keys: Sequence[str],
        images: torch.Tensor,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """Return the batch's backbone features, extracting and storing only those not cached yet.

        Args:
            keys: One key (image path) per image of the batch.
            images: The batch, ``(N, 3, H, W)``.
            extract: The backbone, mapping images to one feature map per scale.
        """
        per_image: list[list[torch.Tensor] | None] = [self._get(key) for key in keys]
        missing = [index for index, features in enumerate(per_image) if features is None]
        if missing:
            extracted = extract(images[missing])
            home = images.device if self.storage is CacheStorage.GPU else torch.device("cpu")
            # Non-finite features are used once (the step is then skipped) but never kept; one host sync per batch.
            finite = torch.stack([scale.flatten(1).isfinite().all(dim=1) for scale in extracted]).all(dim=0).tolist()
            for position, index in enumerate(missing):
                features = [scale[position].detach().to(home, copy=True) for scale in extracted]
                if finite[position]:
                    self._put(keys[index], features)
                per_image[index] = features
        device = images.device
        return [
            torch.stack([_present(features)[scale] for features in per_image]).to(device, non_blocking=True)
            for scale in range(len(_present(per_image[0])))
        ]

    def clear(self) -> None:
        """Drop every cached feature, and the disk cache's folder and its parent where that is left empty."""
        self._memory.clear()
        self._on_disk.clear()
        if self.storage is CacheStorage.DISK and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            # The parent holds one folder per process; the last process to finish removes it.
            with contextlib.suppress(OSError):
                self.directory.parent.rmdir()

    def __len__(self) -> int:
        """The number of images cached."""
        return len(self._memory) + len(self._on_disk)

    def _file(self, key: str) -> Path:
        assert self.directory is not None  # noqa: S101 - guaranteed by __init__ for disk storage
        return self.directory / f"{hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()}.pt"

    def _get(self, key: str) -> list[torch.Tensor] | None:
        if self.storage is not CacheStorage.DISK:
            return self._memory.get(key)
        if key not in self._on_disk:
            return None
        return list(torch.load(self._file(key), weights_only=True))

    def _put(self, key: str, features: list[torch.Tensor]) -> None:
        if self.storage is not CacheStorage.DISK:
            self._memory[key] = features
            return
        torch.save(features, self._file(key))
        self._on_disk.add(key)


class TrainingFeatures:
    """The backbone features of training batches, from a :class:`FeatureCache` planned at the first batch.

    The plan needs the size of one image's features, so it is made when the first batch has been through the
    backbone. A cache is used only where the training data is deterministic (no random augmentation or
    pre-processing) and batches carry image paths to key it by.

    Args:
        enabled: Whether a cache may be used at all.
        memory_limit_mb: Memory the cache may use before it goes to disk.
    """

    def __init__(self, enabled: bool, memory_limit_mb: float) -> None:
        self.enabled = enabled
        self.memory_limit_mb = memory_limit_mb
        self.cache: FeatureCache | None = None
        self._planned = True
        self._trainer: Any = None

    def start(self, trainer: Any, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:  # noqa: ANN401 - a Lightning Trainer
        """At the start of training, drop an earlier run's cache and decide whether this run's data allows one.

        The trainer gives the number of training images and the folder of a disk cache when the plan is made.
        """
        self.clear()
        self._trainer = trainer
        self._planned = not self.enabled
        if not self.enabled:
            return
        reason = randomness_in_training_data(getattr(trainer.train_dataloader, "dataset", None), transform)
        if reason is not None:
            log.info("Feature cache: off, because %s; the backbone runs every epoch.", reason)
            self._planned = True

    def __call__(
        self,
        keys: Sequence[str] | None,
        images: torch.Tensor,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """The features of a training batch: cached, extracted and cached, or extracted.

        Args:
            keys: The batch's image paths, or ``None`` where the batches carry none.
            images: The pre-processed batch ``(N, 3, H, W)``.
            extract: The (frozen) backbone.
        """
        trainer = self._trainer
        if not self._planned:
            self._planned = True
            if keys is not None:
                features = extract(images)
                self.cache = FeatureCache.plan(
                    bytes_per_image=sum(feature[0].numel() * feature.element_size() for feature in features),
                    num_images=len(trainer.train_dataloader.dataset),
                    memory_limit_mb=self.memory_limit_mb,
                    directory=Path(trainer.default_root_dir) / "feature_cache" / f"rank{trainer.global_rank}",
                    device=images.device,
                )
                return features if self.cache is None else self.cache.features(keys, images, lambda _: features)
        if self.cache is None or keys is None:
            return extract(images)
        return self.cache.features(keys, images, extract)

    def clear(self) -> None:
        """Free the cache (and its folder, for a disk cache)."""
        if self.cache is not None:
            self.cache.clear()
            self.cache = None


def randomness_in_training_data(dataset: Any, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> str | None:  # noqa: ANN401 - any map-style dataset
    """Say why cached features would be wrong for this training data, or ``None`` where they are right.

    The dataset's first image is read twice, and the pre-processing transform applied twice to one input; any
    difference means random augmentation. The random number generators are restored afterwards, so checking does
    not change the training run.
    """
    with torch.random.fork_rng(devices=[]):
        if dataset is not None and len(dataset) > 0:
            first, second = dataset[0], dataset[0]
            if not torch.equal(first.image, second.image):
                return "the training dataset applies random augmentation"
        if transform is not None:
            probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            if not torch.equal(transform(probe), transform(probe)):
                return "the pre-processor's transform is random"
    return None


def _present(features: list[torch.Tensor] | None) -> list[torch.Tensor]:
    assert features is not None  # noqa: S101 - every slot is filled before stacking
    return features


def _megabytes(value: float) -> str:
    """A size in MB for a log line: whole numbers from 10 MB, two significant digits below (never "0 MB")."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"  # noqa: PLR2004 - where whole megabytes suffice


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
