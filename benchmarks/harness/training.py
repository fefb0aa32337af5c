# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The ``train`` and ``test`` modes: a model trained and tested with anomalib's engine, its epochs timed."""

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Batch, MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from benchmarks.harness.adapters import FlowSettings, ModelUnderTest
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.records import Record
from benchmarks.harness.settings import RunSettings
from benchmarks.harness.timing import synchronizer


class EpochTimer(Callback):
    """Wall time and number of images of every training epoch, from its start to the end of its last batch.

    Args:
        synchronize: Waits for queued device work before the clock is read.
    """

    def __init__(self, synchronize: Callable[[], None]) -> None:
        self.synchronize = synchronize
        self.seconds: list[float] = []
        self.images: list[int] = []
        self._start = 0.0
        self._end = 0.0
        self._count = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock once the previous epoch's work has finished."""
        del trainer, pl_module
        self.synchronize()
        self._count = 0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401 - Lightning's signature
        batch: Batch,
        batch_idx: int,
    ) -> None:
        """Move the end of the epoch to the end of this batch's step."""
        del trainer, pl_module, outputs, batch_idx
        self.synchronize()
        self._end = time.perf_counter()
        self._count += len(batch.image) if batch.image is not None else 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep the epoch's time and images; validation, which ran in between, is not counted."""
        del trainer, pl_module
        self.seconds.append(self._end - self._start)
        self.images.append(self._count)


def measure_training(
    model: ModelUnderTest, datamodule: MVTecAD, run: RunSettings, memory: PeakMemory, root: Path
) -> tuple[Record, Record]:
    """Train for ``run.epochs`` (validating once, at the end), then test: the ``train`` and ``test`` records."""
    device = torch.device(run.device)
    timer = EpochTimer(synchronizer(device))
    engine = Engine(
        callbacks=[timer],
        logger=False,
        default_root_dir=root,
        accelerator=device.type,
        devices=1,
        precision=run.precision,
        max_epochs=run.epochs,
        check_val_every_n_epoch=run.epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    seed_everything(run.seed, verbose=False)
    memory.reset()
    engine.fit(model.module, datamodule=datamodule)
    peak = memory.peak_mib()
    later_epochs = timer.seconds[1:]
    train = {
        "images_per_s": statistics.median(
            images / seconds for images, seconds in zip(timer.images[1:], later_epochs, strict=True)
        ),
        "epoch_s": statistics.median(later_epochs),
        "first_epoch_s": timer.seconds[0],
        "peak_memory_mib": peak,
    }
    metrics = engine.test(model.module, datamodule=datamodule, verbose=False)[0]
    test = {"image_auroc": float(metrics["image_AUROC"]), "pixel_auroc": float(metrics["pixel_AUROC"])}
    return Record(model.name, "train", train), Record(model.name, "test", test)


def train_and_test(
    build: Callable[[FlowSettings], ModelUnderTest], flow: FlowSettings, run: RunSettings, data_root: Path, work: Path
) -> tuple[ModelUnderTest, MVTecAD, list[Record]]:
    """The trained model, its data, and the ``train`` and ``test`` records of a fresh model built from the seed."""
    seed_everything(run.seed, verbose=False)
    model = build(flow)
    datamodule = MVTecAD(
        root=data_root,
        category=run.data.category,
        train_batch_size=run.batch_size,
        eval_batch_size=run.batch_size,
        num_workers=run.num_workers,
    )
    records = measure_training(model, datamodule, run, PeakMemory(torch.device(run.device)), work / model.name)
    return model, datamodule, list(records)
