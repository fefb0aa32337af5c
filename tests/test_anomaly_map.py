# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F  # noqa: N812

from anomalib_fastflow2d import AnomalyMapGenerator, anomaly_map
from anomalib_fastflow2d.anomaly_map import likelihood_score, resize_and_average, resize_by_matrices


@pytest.mark.parametrize("image_size", [(32, 48), (256, 256), (37, 21)])
def test_map_follows_the_papers_definition(image_size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    latents = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4), torch.randn(2, 8, 2, 3)]
    anomaly_map, score = AnomalyMapGenerator()(latents, image_size=image_size)

    per_scale = [
        F.interpolate(-torch.exp(-0.5 * (latent**2).mean(dim=1, keepdim=True)), size=image_size, mode="bilinear")
        for latent in latents
    ]
    expected = torch.stack(per_scale).mean(dim=0)
    assert anomaly_map.shape == (2, 1, *image_size)
    assert torch.allclose(anomaly_map, expected, atol=1e-6)
    assert torch.equal(score, anomaly_map.flatten(1).amax(dim=1, keepdim=True))
    assert anomaly_map.min() >= -1
    assert anomaly_map.max() <= 0


def test_zero_latents_score_minus_one_and_large_latents_near_zero() -> None:
    generator = AnomalyMapGenerator()
    normal, _ = generator([torch.zeros(1, 3, 4, 4)], image_size=(4, 4))
    anomalous, _ = generator([torch.full((1, 3, 4, 4), 10.0)], image_size=(4, 4))
    assert torch.allclose(normal, torch.full_like(normal, -1.0))
    assert anomalous.max() > -1e-6


def test_topk_mean_score() -> None:
    generator = AnomalyMapGenerator(image_score="topk_mean", topk_fraction=0.25)
    anomaly_map = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / -16
    # The top 4 of 0, -1/16, ..., -15/16 are 0, -1/16, -2/16, -3/16.
    assert generator.score(anomaly_map).item() == pytest.approx(-6 / 64)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"image_score": "mean"}, "image_score"), ({"topk_fraction": 0}, "topk")]
)
def test_bad_options_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AnomalyMapGenerator(**kwargs)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(min_value=1, max_value=3),
    scales=st.lists(
        st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9), st.floats(1e-3, 1e3)), min_size=1, max_size=3
    ),
    image_size=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    image_score=st.sampled_from(["max", "topk_mean"]),
    seed=st.integers(0, 2**16),
)
def test_map_is_in_minus_one_to_zero_and_has_the_image_size(
    batch: int,
    scales: list[tuple[int, int, int, float]],
    image_size: tuple[int, int],
    image_score: str,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    latents = [
        spread * torch.randn(batch, channels, height, width, generator=generator)
        for channels, height, width, spread in scales
    ]
    anomaly_map, score = AnomalyMapGenerator(image_score=image_score)(latents, image_size=image_size)
    assert anomaly_map.shape == (batch, 1, *image_size)
    assert anomaly_map.min() >= -1
    assert anomaly_map.max() <= 0
    assert score.shape == (batch, 1)
    assert ((score >= -1) & (score <= 0)).all()


def test_likelihood_score_of_one_scale() -> None:
    latent = torch.zeros(1, 4, 2, 3)
    latent[0, :, 1, 2] = 2.0  # mean of z^2 over channels: 4
    score = likelihood_score(latent)
    assert score.shape == (1, 1, 2, 3)
    expected = torch.full((1, 1, 2, 3), -1.0)
    expected[0, 0, 1, 2] = -math.exp(-2.0)
    torch.testing.assert_close(score, expected, rtol=0, atol=1e-7)


def test_resize_and_average_leaves_its_inputs_alone() -> None:
    maps = [torch.full((2, 1, 3, 5), 1.0), torch.full((2, 1, 1, 1), 4.0), torch.full((2, 1, 7, 2), 7.0)]
    copies = [scale_map.clone() for scale_map in maps]
    average = resize_and_average(maps, (6, 9))
    assert average.shape == (2, 1, 6, 9)
    torch.testing.assert_close(average, torch.full((2, 1, 6, 9), 4.0))
    assert all(torch.equal(scale_map, copy) for scale_map, copy in zip(maps, copies, strict=True))


@pytest.mark.parametrize("image_size", [(40, 48), (12, 5)])  # up and down
def test_exports_resize_by_matrices_to_the_same_values(
    image_size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    maps = [-torch.rand(2, 1, 16, 20), -torch.rand(2, 1, 8, 10), -torch.rand(2, 1, 4, 5)]
    eager = resize_and_average(maps, image_size)
    monkeypatch.setattr(anomaly_map, "exporting", lambda: True)
    exported = resize_and_average(maps, image_size)
    assert exported.shape == (2, 1, *image_size)
    torch.testing.assert_close(exported, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        resize_by_matrices(maps[1], image_size), F.interpolate(maps[1], size=image_size, mode="bilinear")
    )
