# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Feature norms, paired by seed: Fastflow2D with each norm against anomalib's ``Fastflow`` on the same draws.

For every seed, each model is built right after ``seed_everything(seed)``, so all of them draw the same random
backbone and see the data in the same order; the differences of their test AUROCs are paired by seed. Data: an
aligned object (jittered crops of one scikit-image photograph with painted defects) and a demo texture. Fastflow2D
is also tested at another input size than it trained at, which anomalib's ``Fastflow`` cannot run.

Example:
    Run from the repository root::

        python benchmarks/norms.py                                   # 10 seeds, 128x128, 5 epochs
        python benchmarks/norms.py --seeds 2 --size 64 --epochs 1    # a quick look
"""

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.data import Folder, MVTecAD
from anomalib.data.datamodules.base import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.models import AnomalibModule, Fastflow
from lightning.pytorch import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: the harness imports from the checkout

from anomalib_fastflow2d import Fastflow2D
from benchmarks.harness.environment import capture
from benchmarks.harness.records import Record, markdown_table, write_report
from fastflow2d_demo_data import generate_demo_dataset
from fastflow2d_demo_data.photos import generate_photo_dataset

MODELS = ("Fastflow", "Fastflow2D position", "Fastflow2D channel")
"""anomalib's model (the reference of every pair), then Fastflow2D with each feature norm."""

DATASETS = ("aligned chelsea", "texture brick")
"""An aligned object and a texture."""


def build(model: str, size: int, flow_steps: int) -> AnomalibModule:
    """One model of :data:`MODELS` with a random-init resnet18 and 3x3 subnets at ``size`` x ``size``."""
    if model == "Fastflow":
        pre_processor = Fastflow.configure_pre_processor(image_size=(size, size))
        return Fastflow(
            backbone="resnet18",
            pre_trained=False,
            flow_steps=flow_steps,
            conv3x3_only=True,
            pre_processor=pre_processor,
        )
    norm = model.removeprefix("Fastflow2D ")
    return Fastflow2D(pre_trained=False, flow_steps=flow_steps, feature_norm=norm, input_size=(size, size))  # type: ignore[arg-type]


def make_data(dataset: str, root: Path, size: int) -> AnomalibDataModule:
    """The datamodule of one of :data:`DATASETS`, generated under ``root``."""
    loading: dict[str, Any] = {"train_batch_size": 8, "eval_batch_size": 8, "num_workers": 0}
    if dataset == "texture brick":
        generate_demo_dataset(root, categories=["brick"], image_size=size, num_test_normal=16, num_test_anomalous=16)
        return MVTecAD(root=root, category="brick", **loading)
    photo = dataset.removeprefix("aligned ")
    generate_photo_dataset(
        root, photo, image_size=(size, size), num_train=32, num_test_normal=16, num_test_anomalous=16
    )
    return Folder(
        name=photo,
        root=root,
        normal_dir="normal",
        normal_test_dir="test_normal",
        abnormal_dir="abnormal",
        mask_dir="mask",
        **loading,
    )


def run(
    model_name: str, dataset: str, datamodule: AnomalibDataModule, seed: int, arguments: argparse.Namespace, work: Path
) -> Record:
    """Train one model from ``seed``; its test AUROCs, and for Fastflow2D those at the other input size."""
    seed_everything(seed, verbose=False)
    model = build(model_name, arguments.size, arguments.flow_steps)
    engine = Engine(
        default_root_dir=work,
        accelerator="cpu",
        devices=1,
        max_epochs=arguments.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    values = {"image_auroc": float(metrics["image_AUROC"]), "pixel_auroc": float(metrics["pixel_AUROC"])}
    if isinstance(model, Fastflow2D):
        model.pre_processor = Fastflow2D.configure_pre_processor(image_size=other_size(arguments.size))
        metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
        values["pixel_auroc_other_size"] = float(metrics["pixel_AUROC"])
    return Record(model_name, dataset, values, {"seed": seed})


def other_size(size: int) -> tuple[int, int]:
    """A non-square size of about the same area, as 192x320 is for 256x256: 3/4 the height, 5/4 the width."""
    return (size * 3 // 4 // 16 * 16, size * 5 // 4 // 16 * 16)


def paired(records: Sequence[Record], dataset: str, model: str, reference: str, measure: str) -> dict[str, float]:
    """Mean, standard deviation, wins and t of ``model - reference`` in ``measure``, paired by seed."""

    def by_seed(name: str) -> dict[int, float]:
        return {r.details["seed"]: r.values[measure] for r in records if r.model == name and r.mode == dataset}

    ours, theirs = by_seed(model), by_seed(reference)
    differences = [ours[seed] - theirs[seed] for seed in sorted(ours.keys() & theirs.keys())]
    mean = statistics.fmean(differences)
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    t = mean / (spread / len(differences) ** 0.5) if spread > 0 else 0.0
    wins = sum(difference > 0 for difference in differences)
    return {"mean": mean, "std": spread, "wins": wins, "seeds": len(differences), "t": t}


def summary(records: Sequence[Record]) -> list[dict[str, object]]:
    """Every paired comparison the docs quote."""
    comparisons = [
        ("Fastflow2D position", "Fastflow", "pixel_auroc"),
        ("Fastflow2D channel", "Fastflow", "pixel_auroc"),
        ("Fastflow2D position", "Fastflow2D channel", "pixel_auroc"),
        ("Fastflow2D position", "Fastflow", "image_auroc"),
        ("Fastflow2D channel", "Fastflow", "image_auroc"),
        ("Fastflow2D position", "Fastflow2D channel", "pixel_auroc_other_size"),
    ]
    return [
        {
            "dataset": dataset,
            "model": model,
            "reference": reference,
            "measure": measure,
            **paired(records, dataset, model, reference, measure),
        }
        for dataset in dict.fromkeys(record.mode for record in records)
        for model, reference, measure in comparisons
    ]


def markdown(rows: Sequence[dict[str, object]], records: Sequence[Record]) -> str:
    """The paired differences, then each model's mean AUROCs."""
    header = ["data", "model - reference", "measure", "mean diff", "std", "wins", "t"]
    table = [
        [
            str(row["dataset"]),
            f"{row['model']} - {row['reference']}",
            str(row["measure"]),
            f"{row['mean']:+.4f}",
            f"{row['std']:.4f}",
            f"{row['wins']}/{row['seeds']}",
            f"{row['t']:+.1f}",
        ]
        for row in rows
    ]
    means = [
        [
            dataset,
            model,
            *(
                f"{statistics.fmean(r.values[m] for r in chosen):.4f}"
                if (chosen := [r for r in records if r.model == model and r.mode == dataset and m in r.values])
                else "-"
                for m in ("image_auroc", "pixel_auroc", "pixel_auroc_other_size")
            ),
        ]
        for dataset in dict.fromkeys(record.mode for record in records)
        for model in MODELS
    ]
    return (
        markdown_table(header, table, [False, False, False, True, True, True, True])
        + "\n\n"
        + markdown_table(
            ["data", "model", "image AUROC", "pixel AUROC", "pixel AUROC, other size"],
            means,
            [False, False, True, True, True],
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every model on every dataset for every seed; write the JSON and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="Seeds 0..N-1. Default: 10.")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--flow-steps", type=int, default=8)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--output", type=Path, default=Path("results/norms.json"))
    arguments = parser.parse_args(argv)

    environment = capture(0, torch.device("cpu"), argv)  # the commit and machine the runs start with
    records: list[Record] = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for dataset in arguments.datasets:
            datamodule = make_data(dataset, work / dataset.replace(" ", "_"), arguments.size)
            for seed in range(arguments.seeds):
                records.extend(run(name, dataset, datamodule, seed, arguments, work / "runs") for name in MODELS)
    rows = summary(records)
    write_report(arguments.output, environment, records, {"paired": rows})
    print(markdown(rows, records))  # noqa: T201 - the report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
