# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""Pixel AUROC of the explanation's feature repair distance beside the anomaly map's, on the demo test set.

Also measures how exactly the inverse flows undo the forward flows on the test images' features. Every map is
compared raw (before anomalib's min-max normalisation, which clips and so ties the highest scores), at the ground
truth's size.

Example:
    From the repository root, train the demo and measure (about two minutes on 2 CPU cores)::

        python -m scripts.explain_auroc

    or measure the run of ``make demo``::

        python -m scripts.explain_auroc --data_root datasets/demo \
            --ckpt_path results/demo/Fastflow2D/MVTecAD/brick/latest/weights/lightning/model.ckpt
"""

import argparse
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from anomalib.data import MVTecAD
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention
from torchmetrics.classification import BinaryAUROC

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.explain import explain

from .demo_run import add_arguments, demo_run

INEXACT = 1e-4

MAPS = ("anomaly map", "explanation: feature repair distance", "explanation: NLL of z")


@dataclass
class RoundTrip:
    """How exactly ``decode(encode(x))`` gives back the features ``x`` in float32."""

    max_error: float = 0.0
    pixels: int = 0
    inexact_pixels: int = 0
    """Pixels where some channel is off by more than ``1e-4``."""
    smallest_inexact_rms_z: float = math.inf
    """The smallest root mean square of ``z`` over channels among those pixels."""

    def __str__(self) -> str:
        """Where the round trip is off by more than :data:`INEXACT`, if anywhere."""
        if not self.inexact_pixels:
            return f"within {INEXACT:g} at all {self.pixels} feature pixels"
        return (
            f"off by more than {INEXACT:g} at {self.inexact_pixels} of {self.pixels} feature pixels, all with "
            f"rms(z) >= {self.smallest_inexact_rms_z:.3g} (the explanation runs in float64)"
        )

    def update(self, features: torch.Tensor, decoded: torch.Tensor, latent: torch.Tensor) -> None:
        """Add one scale of one batch."""
        error = (decoded - features).abs().amax(dim=1)
        inexact = error > INEXACT
        self.max_error = max(self.max_error, error.max().item())
        self.pixels += error.numel()
        self.inexact_pixels += int(inexact.sum())
        if inexact.any():
            rms_z = latent.square().mean(dim=1).sqrt()[inexact].min().item()
            self.smallest_inexact_rms_z = min(self.smallest_inexact_rms_z, rms_z)


@torch.no_grad()
def measure(model: Fastflow2D, datamodule: MVTecAD, radius: float) -> tuple[dict[str, float], RoundTrip]:
    """Return each map's pixel AUROC and the float32 round trip's exactness over all test features."""
    torch_model = model.model.eval()
    transform = getattr(model.pre_processor, "transform", None)
    aurocs = {name: BinaryAUROC() for name in MAPS}
    round_trip = RoundTrip()
    for batch in datamodule.test_dataloader():
        images = batch.image if transform is None else transform(batch.image)
        features = torch_model.features(images)
        latents, _ = torch_model.encode(features)
        for feature, inverse, latent in zip(features, torch_model.decode(latents), latents, strict=True):
            round_trip.update(feature, inverse, latent)
        explanation = explain(torch_model, images, radius)
        anomaly_map = torch_model(images).anomaly_map
        masks = batch.gt_mask.reshape(len(images), -1).int()
        for name, scores in zip(MAPS, (anomaly_map, explanation.distance, explanation.nll), strict=True):
            resized = F.interpolate(scores, size=batch.gt_mask.shape[-2:], mode="bilinear", align_corners=False)
            aurocs[name].update(resized.reshape(len(images), -1), masks)
    return {name: auroc.compute().item() for name, auroc in aurocs.items()}, round_trip


def main(argv: Sequence[str] | None = None) -> None:
    """Train or load the demo run, measure, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--radius", type=float, default=1.0, help="repair radius in units of sqrt(C) (default: 1)")
    arguments = parser.parse_args(argv)
    ckpt_path, data_root = demo_run(arguments)
    model = Fastflow2D.load_from_checkpoint(ckpt_path, map_location="cpu")
    datamodule = MVTecAD(root=data_root, category="brick", eval_batch_size=16, num_workers=0)
    datamodule.setup()
    aurocs, round_trip = measure(model, datamodule, arguments.radius)
    lines = [
        f"Checkpoint: {ckpt_path}; demo test set: {len(datamodule.test_data)} images of {data_root / 'brick'}",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}",
        f"Inverse flows in float32: max |decode(encode(x)) - x| = {round_trip.max_error:.2e}; {round_trip}",
        "",
        "| map | pixel AUROC |",
        "| --- | --- |",
        *(f"| {name} | {value:.4f} |" for name, value in aurocs.items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
