# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Numerical stability: train every CPU-sized backbone preset for many epochs at the paper's learning rate.

Normalizing flows can diverge to NaN losses (anomalib's users have reported it with FastFlow). Each preset trains
on the demo data with ``max_skipped_steps=0``, so a single non-finite step stops it with an error; the script
records every epoch's loss and whether the run finished, beside the run's seed, versions, machine and commit. CaiT
is left out: it runs at 448x448 only, which a CPU cannot train in reasonable time.

Example:
    Run from the repository root::

        python benchmarks/stability.py                        # 50 epochs, 128x128, three presets
        python benchmarks/stability.py --epochs 2 --size 64 --backbones resnet18
"""

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from benchmarks.harness.environment import capture
from benchmarks.harness.records import Record, markdown_table, write_report
from fastflow2d_demo_data import generate_demo_dataset

CPU_PRESETS = ("resnet18", "wide_resnet50_2", "deit_base_distilled_patch16_384")
"""The presets a CPU trains in reasonable time."""

MODE = "train"
"""The mode of every record."""


class EpochLosses(Callback):
    """Collects the mean training loss of every epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the epoch's mean loss."""
        del pl_module
        self.losses.append(float(trainer.callback_metrics["train_loss"]))


def train(backbone: str, data_root: Path, work: Path, epochs: int, size: int, lr: float, seed: int) -> Record:
    """Train one preset from random weights and describe its loss curve."""
    seed_everything(seed)
    model = Fastflow2D(backbone=backbone, pre_trained=False, input_size=(size, size), lr=lr, max_skipped_steps=0)
    losses = EpochLosses()
    engine = Engine(
        default_root_dir=work / backbone,
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        enable_progress_bar=False,
        callbacks=[losses],
    )
    started = time.perf_counter()
    error = ""
    try:
        engine.fit(model, datamodule=MVTecAD(root=data_root, category="brick", num_workers=0))
    except FloatingPointError as failure:
        error = str(failure)
    values = {
        "epochs": len(losses.losses),
        "first_loss": losses.losses[0] if losses.losses else math.nan,
        "last_loss": losses.losses[-1] if losses.losses else math.nan,
        "max_loss": max(losses.losses, default=math.nan),
        "seconds": round(time.perf_counter() - started, 1),
    }
    finite = not error and all(math.isfinite(loss) for loss in losses.losses)
    return Record(backbone, MODE, values, {"finite": finite, "error": error, "losses": losses.losses})


def markdown(records: Sequence[Record]) -> str:
    """One row per preset."""
    header = ["backbone", "epochs", "all finite", "first loss", "last loss", "max loss", "seconds"]
    rows = [
        [
            record.model,
            f"{record.values['epochs']:.0f}",
            str(record.details["finite"]),
            *(f"{record.values[name]:.4g}" for name in ("first_loss", "last_loss", "max_loss")),
            str(record.values["seconds"]),
        ]
        for record in records
    ]
    return markdown_table(header, rows, [False, True, False, True, True, True, True])


def main(argv: Sequence[str] | None = None) -> int:
    """Train the presets; exit 1 if any loss was not finite."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(CPU_PRESETS), choices=CPU_PRESETS)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the demo data and of every model. Default: 0.")
    parser.add_argument("--data-root", type=Path, help="Demo data (generated in a temporary folder if omitted).")
    parser.add_argument("--output", type=Path, default=Path("results/stability.json"))
    arguments = parser.parse_args(argv)

    environment = capture(arguments.seed, torch.device("cpu"), argv)  # the commit and machine the runs start with
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        data_root = arguments.data_root or generate_demo_dataset(
            work / "demo", categories=["brick"], seed=arguments.seed
        )
        records = [
            train(backbone, data_root, work, arguments.epochs, arguments.size, arguments.lr, arguments.seed)
            for backbone in arguments.backbones
        ]
    write_report(arguments.output, environment, records)
    print(markdown(records))  # noqa: T201 - the report
    return 0 if all(record.details["finite"] for record in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
