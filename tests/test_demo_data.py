# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Tests for the offline MVTec-AD-style demo dataset generator."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastflow2d_demo_data import (
    DEFECT_TYPES,
    TEXTURES,
    generate_demo_dataset,
    main,
    synthesize_defect,
)

SMALL = {"image_size": 64, "num_train": 5, "num_test_normal": 3, "num_test_anomalous": 4}


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.png"))}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_layout_counts_sizes_and_modes(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path, categories=["brick", "gravel"], **SMALL)

    assert root == tmp_path
    assert sorted(p.name for p in root.iterdir()) == ["brick", "gravel"]
    expected = {
        "train/good": [f"{i:03d}.png" for i in range(5)],
        "test/good": [f"{i:03d}.png" for i in range(3)],
        # 4 anomalous images spread round-robin over scratch, stain, patch.
        "test/scratch": ["000.png", "001.png"],
        "test/stain": ["000.png"],
        "test/patch": ["000.png"],
        "ground_truth/scratch": ["000_mask.png", "001_mask.png"],
        "ground_truth/stain": ["000_mask.png"],
        "ground_truth/patch": ["000_mask.png"],
    }
    for category in ("brick", "gravel"):
        files = sorted(str(p.relative_to(root / category)) for p in (root / category).rglob("*") if p.is_file())
        assert files == sorted(f"{folder}/{name}" for folder, names in expected.items() for name in names)
        for path in (root / category).glob("*/*/*.png"):
            with Image.open(path) as image:
                assert image.size == (64, 64)
                assert image.mode == ("L" if path.parts[-3] == "ground_truth" else "RGB")
        for path in (root / category / "ground_truth").rglob("*.png"):
            assert set(np.unique(_load(path)).tolist()) == {0, 255}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    first = _pngs(generate_demo_dataset(tmp_path / "a", categories=["grass"], seed=3, **SMALL))
    second = _pngs(generate_demo_dataset(tmp_path / "b", categories=["grass"], seed=3, **SMALL))
    other = _pngs(generate_demo_dataset(tmp_path / "c", categories=["grass"], seed=4, **SMALL))

    assert len(first) == 5 + 3 + 4 + 4
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if "train" in name)


def test_category_output_does_not_depend_on_other_categories(tmp_path: Path) -> None:
    alone = _pngs(generate_demo_dataset(tmp_path / "a", categories=["gravel"], **SMALL) / "gravel")
    together = _pngs(generate_demo_dataset(tmp_path / "b", categories=["brick", "gravel"], **SMALL) / "gravel")
    assert alone == together


def test_categories_differ_and_train_test_images_are_distinct(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path, categories=list(TEXTURES), **SMALL)
    for category in TEXTURES:
        train = [_load(p) for p in sorted((root / category / "train" / "good").glob("*.png"))]
        test = [_load(p) for p in sorted((root / category / "test" / "good").glob("*.png"))]
        for image in test:
            assert all(not np.array_equal(image, other) for other in train)
    means = {category: _load(root / category / "train" / "good" / "000.png").mean(axis=(0, 1)) for category in TEXTURES}
    # The per-category tint: brick is reddish, grass greenish, gravel bluish.
    assert np.argmax(means["brick"]) == 0
    assert np.argmax(means["grass"]) == 1
    assert np.argmax(means["gravel"]) == 2


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: np.repeat(texture.loader()[..., None], 3, axis=-1) for name, texture in TEXTURES.items()}


@pytest.mark.parametrize("defect_type", list(DEFECT_TYPES))
@pytest.mark.parametrize("seed", range(6))
def test_synthesized_defect_mask_is_exact(photos: dict[str, np.ndarray], defect_type: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = list(photos)
    top, left = rng.integers(0, 512 - 96, size=2)
    clean = photos[names[seed % 3]][top : top + 96, left : left + 96].copy()
    donor = photos[names[(seed + 1) % 3]][left : left + 96, top : top + 96].copy()

    defective, mask = synthesize_defect(clean, donor, defect_type, rng)

    assert defective.shape == clean.shape
    assert defective.dtype == np.uint8
    assert mask.shape == (96, 96)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255}
    # Exact: changed pixels are precisely the mask pixels.
    np.testing.assert_array_equal((defective != clean).any(axis=-1), mask == 255)
    assert 0.005 < (mask == 255).mean() < 0.12


def test_synthesized_defect_keeps_mask_exact_on_flat_image() -> None:
    # A flat image equal to a stain colour / scratch level forces the "unchanged pixel" nudge.
    for level in (0, 20, 128, 235, 255):
        clean = np.full((64, 64, 3), level, dtype=np.uint8)
        for defect_type in DEFECT_TYPES:
            defective, mask = synthesize_defect(clean, clean, defect_type, np.random.default_rng(level))
            assert mask.any()
            np.testing.assert_array_equal((defective != clean).any(axis=-1), mask == 255)


def test_synthesize_defect_rejects_unknown_type() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="defect_type"):
        synthesize_defect(image, image, "crack", np.random.default_rng(0))


def test_written_anomalies_have_visible_nonempty_masks(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path, image_size=128, num_train=1, num_test_normal=1, num_test_anomalous=9)
    count = 0
    for category in TEXTURES:
        for mask_path in sorted((root / category / "ground_truth").rglob("*_mask.png")):
            defect_type = mask_path.parent.name
            image = _load(root / category / "test" / defect_type / mask_path.name.replace("_mask", "")).astype(float)
            mask = _load(mask_path) == 255
            assert 0.01 <= mask.mean() <= 0.10, (mask_path, mask.mean())
            # The defect changes the look of the region: its mean colour differs clearly from the rest.
            assert np.abs(image[mask].mean(axis=0) - image[~mask].mean(axis=0)).max() > 10
            count += 1
    assert count == 3 * 9


def test_regenerating_keeps_exact_counts_and_sibling_files(tmp_path: Path) -> None:
    sibling = tmp_path / "README.txt"
    sibling.write_text("keep me")
    other_dataset = tmp_path / "other" / "train" / "good" / "000.png"
    other_dataset.parent.mkdir(parents=True)
    other_dataset.write_bytes(b"not mine")
    note = tmp_path / "brick" / "notes.txt"

    generate_demo_dataset(
        tmp_path, categories=["brick"], image_size=32, num_train=6, num_test_normal=4, num_test_anomalous=6
    )
    note.write_text("also keep me")
    generate_demo_dataset(
        tmp_path, categories=["brick"], image_size=32, num_train=2, num_test_normal=1, num_test_anomalous=1
    )

    brick = tmp_path / "brick"
    assert sorted(str(p.relative_to(brick)) for p in brick.rglob("*.png")) == [
        "ground_truth/scratch/000_mask.png",
        "test/good/000.png",
        "test/scratch/000.png",
        "train/good/000.png",
        "train/good/001.png",
    ]
    assert sorted(p.name for p in (brick / "test").iterdir()) == ["good", "scratch"]
    assert sibling.read_text() == "keep me"
    assert note.read_text() == "also keep me"
    assert other_dataset.read_bytes() == b"not mine"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"categories": ["brick", "marble"]}, "categories"),
        ({"categories": []}, "categories"),
        ({"categories": "brick"}, "categories"),
        ({"categories": ["brick", "brick"]}, "categories"),
        ({"image_size": 31}, "image_size"),
        ({"image_size": 513}, "image_size"),
        ({"num_train": 0}, "num_train"),
        ({"num_test_normal": 0}, "num_test_normal"),
        ({"num_test_anomalous": -1}, "num_test_anomalous"),
        ({"num_train": 70_000}, "num_train"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_demo_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_unknown_category_message_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="marble") as error:
        generate_demo_dataset(tmp_path, categories=["marble"])
    assert all(name in str(error.value) for name in TEXTURES)


def test_cli_main_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "demo"
    argv = ["--root", str(root), "--categories", "brick", "grass", "--image-size", "48", "--num-train", "3"]
    argv += ["--num-test-normal", "2", "--num-test-anomalous", "3", "--seed", "1"]

    assert main(argv) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("brick: 3 train, 2 test good, 3 test anomalous")
    assert str(root / "grass") in lines[1]
    assert _pngs(root) == _pngs(
        generate_demo_dataset(
            tmp_path / "api",
            categories=["brick", "grass"],
            image_size=48,
            num_train=3,
            num_test_normal=2,
            num_test_anomalous=3,
            seed=1,
        )
    )


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as error:
        main(["--root", str(tmp_path), "--image-size", "8"])
    assert error.value.code == 2
    assert "image_size" in capsys.readouterr().err


def test_module_runs_as_script(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fastflow2d_demo_data", "--root", str(tmp_path), "--categories", "gravel"]
    command += ["--image-size", "32", "--num-train", "2", "--num-test-normal", "1", "--num-test-anomalous", "1"]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1], timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gravel: 2 train")
    assert len(list((tmp_path / "gravel").rglob("*.png"))) == 2 + 1 + 1 + 1


def test_command_imports_neither_torch_nor_anomalib(tmp_path: Path) -> None:
    # `fastflow2d-demo-data --help` took 5.7 s when the generator lived inside the plugin package, whose import
    # registers the model and so imports torch and anomalib.
    script = (
        "import sys\n"
        "from fastflow2d_demo_data import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'anomalib', 'anomalib_fastflow2d', 'lightning'}\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_anomalib_mvtecad_datamodule_reads_dataset(tmp_path: Path) -> None:
    mvtecad = pytest.importorskip("anomalib.data").MVTecAD
    generate_demo_dataset(
        tmp_path, categories=["brick"], image_size=64, num_train=6, num_test_normal=4, num_test_anomalous=5
    )

    datamodule = mvtecad(root=tmp_path, category="brick", train_batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.setup()

    assert len(datamodule.train_data) == 6
    samples = datamodule.test_data.samples
    # The default val_split_mode is "same_as_test": the validation set is a copy and the test set stays whole.
    assert len(samples) == 4 + 5
    assert (samples.label_index == 0).sum() == 4
    assert (samples.label_index == 1).sum() == 5
    anomalous = samples[samples.label_index == 1]
    for image_path, mask_path in zip(anomalous.image_path, anomalous.mask_path, strict=True):
        assert Path(image_path).stem in Path(mask_path).stem
        assert (_load(Path(mask_path)) == 255).any()
    item = datamodule.test_data[int(np.flatnonzero(samples.label_index == 1)[0])]
    assert tuple(item.image.shape) == (3, 64, 64)
    assert item.gt_mask.sum() > 0
    assert len(datamodule.val_data) == len(datamodule.test_data)


def test_default_dataset_generates_quickly(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_demo_dataset(tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, elapsed
    for category in TEXTURES:
        assert len(list((tmp_path / category / "train" / "good").glob("*.png"))) == 48
        assert len(list((tmp_path / category / "test" / "good").glob("*.png"))) == 12
        assert len(list((tmp_path / category / "ground_truth").rglob("*_mask.png"))) == 12
