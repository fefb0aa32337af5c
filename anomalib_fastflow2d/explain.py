# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

r"""Explain a Fastflow2D anomaly with the inverse flows, and draw typical normal features.

The flows are invertible, so the latent maps ``z`` can be edited and mapped back to features. An anomalous pixel
has a latent far outside the typical shell of :math:`N(0, I_C)`, whose radius is about :math:`\sqrt{C}`. Shrinking
each latent toward 0 onto that shell and inverting gives a *repaired* feature map: what the model considers the
nearest normal features. The distance between the original and the repaired features is zero where nothing was
changed and large where the model had to repair, so it localises the anomaly at feature level.

Usage::

    python -m anomalib_fastflow2d.explain --ckpt_path model.ckpt --image defect.png --out figures/

writes ``figures/defect_explanation.png`` (input, per-pixel negative log-likelihood, repair distance, and per
scale the ``z`` map, original, repaired features and distance) and ``figures/samples.png`` (real features beside
features sampled from the flows at several temperatures).

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677 (section "Feature visualization and generation").
"""

import argparse
import copy
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from numpy.typing import NDArray
from PIL import Image
from torch.nn import functional as F  # noqa: N812 - the PyTorch convention
from torchvision.transforms.v2.functional import pil_to_tensor

from .lightning_model import Fastflow2D
from .torch_model import Fastflow2DModel

LOG_2PI = math.log(2 * math.pi)


def negative_log_likelihood(latent: torch.Tensor) -> torch.Tensor:
    r"""Per-pixel negative log-likelihood of ``z`` under :math:`N(0, I)`, in nats per channel.

    Per channel, so that scales with different channel counts compare. The flows' log-Jacobian is one number per
    image and is left out, as the anomaly map leaves it out: the anomaly map of one scale is
    :math:`-\exp(-(\mathrm{NLL} - \tfrac{1}{2}\log 2\pi))`.

    Args:
        latent: Latent map ``(N, C, H, W)``.

    Returns:
        ``(N, 1, H, W)``.
    """
    return 0.5 * (latent.square().mean(dim=1, keepdim=True) + LOG_2PI)


def repair_latent(latent: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    r"""Shrink each pixel's latent toward 0, onto the ball of radius ``radius * sqrt(C)``.

    Latents inside the ball (normal pixels) stay as they are, so only the anomalous region is changed.

    Args:
        latent: Latent map ``(N, C, H, W)``.
        radius: Radius of the ball in units of :math:`\sqrt{C}`, the typical norm of :math:`N(0, I_C)`.
            Defaults to ``1.0``.

    Returns:
        The repaired latent map ``(N, C, H, W)``.
    """
    if not radius > 0:
        msg = f"radius must be positive, got {radius}."
        raise ValueError(msg)
    limit = radius * math.sqrt(latent.shape[1])
    norm = latent.norm(dim=1, keepdim=True)
    return latent * (limit / norm.clamp_min(limit))


def feature_distance(features: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Root mean square over channels of the difference of two feature maps ``(N, C, H, W)``: ``(N, 1, H, W)``."""
    return (features - other).square().mean(dim=1, keepdim=True).sqrt()


def to_image_size(maps: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
    """Resize per-scale maps ``(N, 1, H_s, W_s)`` bilinearly to ``image_size`` and average them, as the anomaly map."""
    resized = [F.interpolate(scale_map, size=image_size, mode="bilinear", align_corners=False) for scale_map in maps]
    return torch.stack(resized).mean(dim=0)


@dataclass(frozen=True)
class Explanation:
    """What the flows see in a batch of images; every list holds one ``(N, ., H_s, W_s)`` tensor per scale.

    Attributes:
        features: Normalised backbone features, the flows' input.
        latents: ``z``, the flows' output.
        repaired_latents: ``z`` shrunk onto the typical ball by :func:`repair_latent`.
        repaired_features: The repaired latents mapped back through the inverse flows.
        nll_maps: Per-pixel negative log-likelihood of ``z`` (:func:`negative_log_likelihood`).
        distance_maps: Distance between original and repaired features (:func:`feature_distance`).
        nll: ``nll_maps`` at the input size, averaged over scales: ``(N, 1, H, W)``.
        distance: ``distance_maps`` at the input size, averaged over scales: ``(N, 1, H, W)``.
    """

    features: list[torch.Tensor]
    latents: list[torch.Tensor]
    repaired_latents: list[torch.Tensor]
    repaired_features: list[torch.Tensor]
    nll_maps: list[torch.Tensor]
    distance_maps: list[torch.Tensor]
    nll: torch.Tensor
    distance: torch.Tensor


@torch.no_grad()
def explain(
    model: Fastflow2DModel, images: torch.Tensor, radius: float = 1.0, dtype: torch.dtype = torch.float64
) -> Explanation:
    """Encode images, repair their latents and decode them.

    Runs on a copy of the model in ``dtype``: an anomalous pixel's latent can reach ``|z| ~ 1e4``, which float32
    holds to only about ``1e-3``, and the inverse would carry that error into the repaired features.

    Args:
        model: A trained Fastflow2D model.
        images: Pre-processed (resized, normalised) images ``(N, 3, H, W)``.
        radius: See :func:`repair_latent`. Defaults to ``1.0``.
        dtype: Floating-point type of the computation. Defaults to ``torch.float64``.

    Returns:
        The per-scale maps and their input-sized averages, in ``dtype``.

    Examples:
        >>> from anomalib_fastflow2d.presets import resolve
        >>> model = Fastflow2DModel(resolve("resnet18", flow_steps=2), pre_trained=False).eval()
        >>> explanation = explain(model, torch.randn(2, 3, 64, 64))
        >>> explanation.distance.shape, [tuple(z.shape) for z in explanation.latents][0]
        (torch.Size([2, 1, 64, 64]), (2, 64, 16, 16))
    """
    model = copy.deepcopy(model).to(dtype)
    features = model.features(images.to(dtype))
    latents, _ = model.encode(features)
    repaired_latents = [repair_latent(latent, radius) for latent in latents]
    repaired_features = model.decode(repaired_latents)
    nll_maps = [negative_log_likelihood(latent) for latent in latents]
    distance_maps = [
        feature_distance(feature, repaired) for feature, repaired in zip(features, repaired_features, strict=True)
    ]
    image_size = (images.shape[-2], images.shape[-1])
    return Explanation(
        features=features,
        latents=latents,
        repaired_latents=repaired_latents,
        repaired_features=repaired_features,
        nll_maps=nll_maps,
        distance_maps=distance_maps,
        nll=to_image_size(nll_maps, image_size),
        distance=to_image_size(distance_maps, image_size),
    )


def feature_rgb(reference: torch.Tensor, *others: torch.Tensor) -> list[NDArray[np.float32]]:
    """Show feature maps ``(C, H, W)`` as RGB images: their projection on ``reference``'s first 3 principal axes.

    All maps share the reference's axes and colour range, so equal colours mean equal features.

    Returns:
        One ``(H, W, 3)`` array in ``[0, 1]`` per map, the reference's first.
    """
    pixels = reference.flatten(start_dim=1).T.double()
    mean = pixels.mean(dim=0)
    _, _, right = torch.linalg.svd(pixels - mean, full_matrices=False)
    axes = right[:3].T
    projected = (pixels - mean) @ axes
    low, high = projected.quantile(0.01, dim=0), projected.quantile(0.99, dim=0)
    images = []
    for feature in (reference, *others):
        values = (feature.flatten(start_dim=1).T.double() - mean) @ axes
        values = ((values - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
        images.append(values.reshape(*feature.shape[1:], 3).float().numpy())
    return images


def _show(
    axes: Axes, image: NDArray[np.float32] | torch.Tensor, title: str, colour_map: str | None = None
) -> AxesImage:
    shown = axes.imshow(image, cmap=colour_map, interpolation="nearest")
    axes.set_title(title, fontsize=8)
    axes.set_axis_off()
    return shown


def explanation_figure(image: torch.Tensor, explanation: Explanation, index: int = 0) -> Figure:
    """Draw one image's explanation.

    The first row shows the input, the per-pixel negative log-likelihood, the repair distance and the distance
    over the input. Each further row is one scale: ``mean_c z^2``, the original and the repaired features (same
    colours for equal features) and their distance.

    Args:
        image: The input as shown, ``(3, H, W)`` in ``[0, 1]`` at the pre-processed size.
        explanation: Explanation of a batch that holds the image.
        index: The image's index in that batch. Defaults to ``0``.
    """
    num_scales = len(explanation.latents)
    figure = Figure(figsize=(8, 2 * (num_scales + 1)), layout="constrained")
    grid = figure.subplots(num_scales + 1, 4, squeeze=False)
    picture = image.permute(1, 2, 0).cpu().numpy()
    distance = explanation.distance[index, 0].cpu().numpy()
    _show(grid[0, 0], picture, "input")
    # Colour bars: each map is scaled to its own range, and a normal image's small values would look as bright.
    nll = _show(grid[0, 1], explanation.nll[index, 0].cpu().numpy(), "NLL of z (nats/channel)", "inferno")
    figure.colorbar(nll, ax=grid[0, 1], shrink=0.8)
    figure.colorbar(_show(grid[0, 2], distance, "feature repair distance", "inferno"), ax=grid[0, 2], shrink=0.8)
    _show(grid[0, 3], picture, "distance over input")
    grid[0, 3].imshow(distance, cmap="jet", alpha=0.5, interpolation="bilinear")
    for scale in range(num_scales):
        row = grid[scale + 1]
        original, repaired = feature_rgb(
            explanation.features[scale][index].cpu(), explanation.repaired_features[scale][index].cpu()
        )
        height, width = original.shape[:2]
        _show(row[0], explanation.latents[scale][index].square().mean(dim=0).cpu().numpy(), "", "inferno")
        row[0].set_title(f"scale {scale + 1} ({height}x{width}): mean z²", fontsize=8)
        _show(row[1], original, "features")
        _show(row[2], repaired, "repaired features")
        _show(row[3], explanation.distance_maps[scale][index, 0].cpu().numpy(), "distance", "inferno")
    return figure


def samples_figure(features: Sequence[torch.Tensor], samples: Mapping[float, Sequence[torch.Tensor]]) -> Figure:
    """Draw an image's features beside features sampled from the flows, one row per scale.

    Args:
        features: One ``(C_s, H_s, W_s)`` map per scale, whose principal axes colour every map of its row.
        samples: For each temperature, one sampled ``(C_s, H_s, W_s)`` map per scale.
    """
    num_scales = len(features)
    figure = Figure(figsize=(2 * (len(samples) + 1), 2 * num_scales), layout="constrained")
    grid = figure.subplots(num_scales, len(samples) + 1, squeeze=False)
    for scale, row in enumerate(grid):
        drawn = [sample[scale].cpu() for sample in samples.values()]
        real, *fakes = feature_rgb(features[scale].cpu(), *drawn)
        _show(row[0], real, f"scale {scale + 1}: real features")
        for axes, fake, temperature in zip(row[1:], fakes, samples, strict=True):
            _show(axes, fake, f"sampled, T={temperature:g}")
    return figure


def load_image(path: Path, model: Fastflow2D) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an image file and pre-process it as the model does.

    Returns:
        The pre-processed batch ``(1, 3, H, W)`` and the image as shown, ``(3, H, W)`` in ``[0, 1]`` at that size.
    """
    with Image.open(path) as file:
        image = pil_to_tensor(file.convert("RGB")).float().div(255)[None]
    transform = getattr(model.pre_processor, "transform", None)
    batch = image if transform is None else transform(image)
    shown = F.interpolate(image, size=batch.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    return batch, shown[0].clamp(0, 1)


def figure_names(images: Sequence[Path]) -> list[str]:
    """Name each image's figure after its file name, or after folder and file name where file names repeat.

    MVTec AD repeats file names across its defect folders (``test/stain/000.png``, ``test/good/000.png``).
    """
    for names in ([path.stem for path in images], [f"{path.parent.name}_{path.stem}" for path in images]):
        if len(set(names)) == len(names):
            return names
    msg = f"Two images have the same folder and file name, so their figures would overwrite each other: {images}."
    raise ValueError(msg)


def write_figures(
    model: Fastflow2D,
    images: Sequence[Path],
    out: Path,
    radius: float = 1.0,
    temperatures: Sequence[float] = (0.5, 1.0),
    seed: int = 0,
    dpi: int = 80,
) -> list[Path]:
    """Write ``<name>_explanation.png`` for each image (see :func:`figure_names`) and ``samples.png``.

    ``samples.png`` shows the first image's features beside sampled ones.

    Args:
        model: A trained Fastflow2D.
        images: Image files.
        out: Output directory, created if missing.
        radius: See :func:`repair_latent`. Defaults to ``1.0``.
        temperatures: Temperatures of the sampled features. Defaults to ``(0.5, 1.0)``.
        seed: Seed of the sampled latents. Defaults to ``0``.
        dpi: Resolution of the PNG files. Defaults to ``80``.

    Returns:
        The files written.
    """
    if not images:
        msg = "Give at least one image."
        raise ValueError(msg)
    out.mkdir(parents=True, exist_ok=True)
    torch_model = model.model.eval()
    loaded = [load_image(path, model) for path in images]
    written = []
    for name, (batch, shown) in zip(figure_names(images), loaded, strict=True):
        written.append(out / f"{name}_explanation.png")
        explanation_figure(shown, explain(torch_model, batch, radius)).savefig(written[-1], dpi=dpi)
    first = loaded[0][0]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        features = [feature[0] for feature in torch_model.features(first)]
        samples = {
            temperature: [
                sample[0]
                for sample in torch_model.sample(1, (first.shape[-2], first.shape[-1]), temperature, generator)
            ]
            for temperature in temperatures
        }
    written.append(out / "samples.png")
    samples_figure(features, samples).savefig(written[-1], dpi=dpi)
    return written


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
