# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The demo training run the scripts measure: ``make demo``'s data and ``configs/demo.yaml``, or a given checkpoint."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from fastflow2d_demo_data import generate_demo_dataset

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPOSITORY / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the run: an existing checkpoint and data, or a fresh demo training."""
    parser.add_argument("--ckpt_path", type=Path, help="checkpoint of a finished run (default: train the demo)")
    parser.add_argument("--data_root", type=Path, help="demo data of that run (default: generated under --work)")
    parser.add_argument("--work", type=Path, default=Path("results/scripts"), help="where a fresh run goes")


def demo_run(arguments: argparse.Namespace) -> tuple[Path, Path]:
    """Return ``(checkpoint, data root)``: the given ones, or those of a fresh ``configs/demo.yaml`` training.

    A fresh run uses the stock ``anomalib train`` on freshly generated demo data, exactly as ``make demo`` does.
    """
    data_root: Path = arguments.data_root or arguments.work / "datasets" / "demo"
    if arguments.ckpt_path is not None:
        if arguments.data_root is None:
            msg = "--ckpt_path needs --data_root, the demo data the checkpoint was trained on."
            raise SystemExit(msg)
        return arguments.ckpt_path, data_root
    if arguments.data_root is None:
        generate_demo_dataset(data_root, categories=("brick",))
    results = arguments.work / "results"
    command = [
        str(Path(sys.executable).with_name("anomalib")),
        "train",
        "--config",
        str(DEMO_CONFIG),
        "--data.root",
        str(data_root),
        "--default_root_dir",
        str(results),
    ]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # noqa: S603 - our own command
    return next(results.glob("**/latest/weights/lightning/model.ckpt")), data_root
