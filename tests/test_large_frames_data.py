# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Tests for the large-frame dataset generator (small defects on large images)."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastflow2d_demo_data import generate_large_frame_dataset, main
from fastflow2d_demo_data.defects import DEFECT_EXTENTS, DEFECT_TYPES, synthesize_defect
from fastflow2d_demo_data.large_frames import MIN_DEFECT_PIXELS, _paint_small_defect, _render, _surface
from fastflow2d_demo_data.textures import TEXTURES

# Tiny frames keep the tests fast; defect_size 0.05 gives 6 px defects on the 128 px side.
TINY = {"frame_size": (128, 160), "defect_size": 0.05, "num_train": 4, "num_test_normal": 2, "num_test_anomalous": 3}


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.png"))}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _extent(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_anomalib_mvtecad_datamodule_reads_non_square_frames(tmp_path: Path) -> None:
    mvtecad = pytest.importorskip("anomalib.data").MVTecAD
    generate_large_frame_dataset(tmp_path, **TINY)

    datamodule = mvtecad(root=tmp_path, category="brick", train_batch_size=2, eval_batch_size=2, num_workers=0)
    datamodule.setup()

    assert len(datamodule.train_data) == 4
    samples = datamodule.test_data.samples
    assert (samples.label_index == 0).sum() == 2
    assert (samples.label_index == 1).sum() == 3
    assert sorted(set(samples[samples.label_index == 1].label)) == sorted(DEFECT_TYPES)
    anomalous = samples[samples.label_index == 1]
    for image_path, mask_path in zip(anomalous.image_path, anomalous.mask_path, strict=True):
        assert Path(mask_path).stem == f"{Path(image_path).stem}_mask"
    item = datamodule.test_data[int(np.flatnonzero(samples.label_index == 1)[0])]
    assert tuple(item.image.shape) == (3, 128, 160)
    assert tuple(item.gt_mask.shape[-2:]) == (128, 160)
    assert item.gt_mask.sum() > 0


def test_files_have_the_frame_size_and_modes(tmp_path: Path) -> None:
    root = generate_large_frame_dataset(tmp_path, categories=["gravel", "grass"], **TINY)
    assert sorted(path.name for path in root.iterdir()) == ["grass", "gravel"]
    for path in root.rglob("*.png"):
        with Image.open(path) as image:
            assert image.size == (160, 128)  # (W, H)
            assert image.mode == ("L" if "ground_truth" in path.parts else "RGB")


def test_same_arguments_give_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = _pngs(generate_large_frame_dataset(tmp_path / "a", seed=5, **TINY))
    second = _pngs(generate_large_frame_dataset(tmp_path / "b", seed=5, **TINY))
    other = _pngs(generate_large_frame_dataset(tmp_path / "c", seed=6, **TINY))

    assert len(first) == 4 + 2 + 3 + 3
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_normal_frames_differ_clearly_from_one_another(tmp_path: Path) -> None:
    root = generate_large_frame_dataset(tmp_path, **{**TINY, "num_train": 6})
    frames = [_load(path).astype(float) for path in sorted((root / "brick").glob("*/good/*.png"))]
    assert len(frames) == 6 + 2
    for first, second in itertools.combinations(frames, 2):
        # Far beyond the sensor noise (2 grey levels): each frame shows another part of the surface.
        assert np.abs(first - second).mean() > 10


def test_written_masks_are_small_binary_and_nonempty_for_the_default_defect_size(tmp_path: Path) -> None:
    frame_size = (256, 320)
    root = generate_large_frame_dataset(
        tmp_path, frame_size=frame_size, num_train=1, num_test_normal=1, num_test_anomalous=9
    )
    masks = sorted((root / "brick" / "ground_truth").rglob("*_mask.png"))
    assert len(masks) == 9
    for path in masks:
        mask = _load(path)
        assert set(np.unique(mask).tolist()) == {0, 255}
        # Under 3 % of each side: at most floor(0.03 * 256) = 7 px of a 256 x 320 frame.
        height, width = _extent(mask == 255)
        assert height <= 7 < 0.03 * frame_size[0]
        assert width <= 7 < 0.03 * frame_size[1]


@pytest.mark.parametrize("defect_type", list(DEFECT_TYPES))
@pytest.mark.parametrize("extent", [MIN_DEFECT_PIXELS, 30])
def test_small_defect_mask_is_exact_bounded_and_visible(defect_type: str, extent: int) -> None:
    surface = _surface("brick", (96, 120))
    donor = (_surface("grass", (96, 120)), TEXTURES["grass"].tint)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        clean = _render(surface, TEXTURES["brick"].tint, (96, 120), rng)
        frame = clean.copy()

        mask = _paint_small_defect(frame, donor, defect_type, extent, rng)

        assert mask.shape == (96, 120)
        np.testing.assert_array_equal((frame != clean).any(axis=-1), mask == 255)
        assert max(_extent(mask == 255)) <= extent
        changed = np.abs(frame.astype(float) - clean.astype(float))[mask == 255]
        assert changed.max(axis=-1).mean() > 10, (seed, changed.max(axis=-1).mean())


@pytest.mark.parametrize("defect_type", list(DEFECT_TYPES))
def test_defect_extents_bound_the_painters(defect_type: str) -> None:
    # The large frames size their painting windows with DEFECT_EXTENTS; a painter drawing beyond it breaks the bound.
    size = 100
    clean = np.full((size, size, 3), 128, dtype=np.uint8)
    for seed in range(50):
        _, mask = synthesize_defect(clean, clean, defect_type, np.random.default_rng(seed))
        assert max(_extent(mask == 255)) <= DEFECT_EXTENTS[defect_type] * size + 1


def test_regenerating_replaces_only_the_category_folders(tmp_path: Path) -> None:
    note = tmp_path / "brick" / "notes.txt"
    sibling = tmp_path / "README.txt"
    generate_large_frame_dataset(tmp_path, **{**TINY, "num_train": 5, "num_test_anomalous": 6})
    note.write_text("keep me")
    sibling.write_text("keep me too")

    generate_large_frame_dataset(tmp_path, **{**TINY, "num_train": 1, "num_test_normal": 1, "num_test_anomalous": 1})

    brick = tmp_path / "brick"
    assert sorted(str(path.relative_to(brick)) for path in brick.rglob("*.png")) == [
        "ground_truth/scratch/000_mask.png",
        "test/good/000.png",
        "test/scratch/000.png",
        "train/good/000.png",
    ]
    assert note.read_text() == "keep me"
    assert sibling.read_text() == "keep me too"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"categories": ["marble"]}, "categories"),
        ({"categories": "brick"}, "categories"),
        ({"frame_size": (128,)}, "frame_size"),
        ({"frame_size": 128}, "frame_size"),
        ({"frame_size": (31, 160)}, "frame_size"),
        ({"frame_size": (128, 8193)}, "frame_size"),
        ({"frame_size": (128.0, 160)}, "frame_size"),
        ({"defect_size": 0.0}, "defect_size"),
        ({"defect_size": 0.3}, "defect_size"),
        ({"defect_size": 0.03}, "defect_size"),  # 3.8 px of 128: below MIN_DEFECT_PIXELS
        ({"num_train": 0}, "num_train"),
        ({"num_test_normal": 0}, "num_test_normal"),
        ({"num_test_anomalous": -1}, "num_test_anomalous"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_large_frame_dataset(tmp_path, **{**TINY, **kwargs})
    assert not any(tmp_path.iterdir())


def test_too_small_defect_message_says_what_would_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defect_size") as error:
        generate_large_frame_dataset(tmp_path, frame_size=(128, 160))
    suggested = float(str(error.value).split("raise defect_size to ")[1].split()[0])
    assert math.floor(suggested * 128) >= MIN_DEFECT_PIXELS
    generate_large_frame_dataset(tmp_path, frame_size=(128, 160), defect_size=suggested, num_train=1)


def test_cli_large_frames_writes_the_same_files_as_the_function(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--root", str(tmp_path / "cli"), "--large-frames", "--frame-size", "128", "160", "--defect-size", "0.05"]
    argv += ["--num-train", "4", "--num-test-normal", "2", "--num-test-anomalous", "3", "--categories", "gravel"]

    assert main(argv) == 0

    assert capsys.readouterr().out.startswith("gravel: 4 train, 2 test good, 3 test anomalous")
    api = generate_large_frame_dataset(tmp_path / "api", categories=["gravel"], **TINY)
    assert _pngs(tmp_path / "cli") == _pngs(api)


def test_cli_help_shows_the_large_frame_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--large-frames", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "normal training images per category (default 32)" in text
    assert "frame height and width, 32..8192 (default 1024 1024)" in text
    assert "texture photographs to use (default brick)" in text
    assert "(default 0.03)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--large-frames", "--image-size", "64"], "--image-size does not go with --large-frames"),
        (["--frame-size", "128", "160"], "--frame-size only goes with --large-frames"),
        (["--defect-size", "0.05"], "--defect-size only goes with --large-frames"),
        (["--large-frames", "--frame-size", "128", "160"], "defect_size"),
    ],
)
def test_cli_refuses_options_of_the_other_generator_and_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as error:
        main(["--root", str(tmp_path), *argv])
    assert error.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
