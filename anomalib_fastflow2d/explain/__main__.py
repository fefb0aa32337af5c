# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The command line ``python -m anomalib_fastflow2d.explain``: figures for a checkpoint and image files."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from anomalib_fastflow2d.explain.figures import write_figures
from anomalib_fastflow2d.lightning_model import Fastflow2D


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write explanation figures for images and a checkpoint."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_fastflow2d.explain",
        description="Write PNG figures that explain Fastflow2D's anomaly maps with the inverse flows.",
    )
    parser.add_argument("--ckpt_path", type=Path, required=True, help="Fastflow2D checkpoint (anomalib's model.ckpt)")
    parser.add_argument("--image", type=Path, nargs="+", required=True, help="image files to explain")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output directory (default: figures)")
    parser.add_argument("--radius", type=float, default=1.0, help="repair radius in units of sqrt(C) (default: 1)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0], help="sampling temperatures")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled latents (default: 0)")
    args = parser.parse_args(argv)
    for path in (args.ckpt_path, *args.image):
        if not path.is_file():
            parser.error(f"no such file: {path}")
    model = Fastflow2D.load_from_checkpoint(args.ckpt_path, map_location="cpu")
    for path in write_figures(model, args.image, args.out, args.radius, args.temperatures, args.seed):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
