# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Figures of an explanation: image files in, PNG files out (see :mod:`anomalib_fastflow2d.explain`).

Feature maps are drawn as RGB through their first three principal axes (:func:`feature_rgb`), so that equal colours
mean equal features across the maps of one row.
"""

from collections.abc import Mapping, Sequence
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

from anomalib_fastflow2d.explain import Explanation, explain
from anomalib_fastflow2d.lightning_model import Fastflow2D


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
        radius: See :func:`~anomalib_fastflow2d.explain.repair_latent`. Defaults to ``1.0``.
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
