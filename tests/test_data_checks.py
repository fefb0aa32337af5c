# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Bad input through the Python API and the stock CLI: odd image formats run, broken files name themselves."""

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import Folder, ImageBatch, MVTecAD
from anomalib.engine import Engine
from PIL import Image

from anomalib_fastflow2d import Fastflow2D, data_checks
from anomalib_fastflow2d.data_checks import DataCheckError
from tests.conftest import ANOMALIB, TINY_MODEL, TINY_MODEL_CLI, run


def _rgb(source: Path) -> Image.Image:
    with Image.open(source) as image:
        return image.convert("RGB")


def _save_in_odd_formats(image: Image.Image, folder: Path, stem: str) -> None:
    """One image as grayscale, RGBA, palette, 16-bit PNG and JPEG, and at tiny, non-square and large sizes."""
    image.convert("L").save(folder / f"{stem}_gray.png")
    image.convert("RGBA").save(folder / f"{stem}_rgba.png")
    image.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / f"{stem}_palette.png")
    sixteen_bit = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen_bit).save(folder / f"{stem}_16bit.png")
    image.save(folder / f"{stem}.jpg", quality=95)
    image.resize((8, 8)).save(folder / f"{stem}_tiny.png")
    image.resize((100, 40)).save(folder / f"{stem}_wide.png")
    image.resize((1600, 1200)).save(folder / f"{stem}_large.png")


@pytest.fixture(scope="module")
def odd_formats_root(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Folder dataset (with masks) where every split mixes image formats, modes and sizes."""
    root = tmp_path_factory.mktemp("odd_formats")
    for name in ("good", "good_test", "defect", "masks"):
        (root / name).mkdir()
    for index, source in enumerate(sorted((demo_root / "brick" / "train" / "good").glob("*.png"))[:4]):
        _save_in_odd_formats(_rgb(source), root / "good", f"train{index}")
    for index, source in enumerate(sorted((demo_root / "brick" / "test" / "good").glob("*.png"))[:2]):
        _save_in_odd_formats(_rgb(source), root / "good_test", f"test{index}")
    defect = next(path for path in (demo_root / "brick" / "test").iterdir() if path.name != "good")
    for source in sorted(defect.glob("*.png"))[:4]:
        shutil.copy(source, root / "defect" / source.name)
        mask = demo_root / "brick" / "ground_truth" / defect.name / f"{source.stem}_mask.png"
        shutil.copy(mask, root / "masks" / source.name)
    return root


def _folder(root: Path, **kwargs: object) -> Folder:
    arguments: dict[str, object] = {
        "name": "odd",
        "root": root,
        "normal_dir": "good",
        "abnormal_dir": "defect",
        "normal_test_dir": "good_test",
        "mask_dir": "masks",
        "train_batch_size": 8,
        "eval_batch_size": 8,
        "num_workers": 0,
    }
    arguments.update(kwargs)
    return Folder(**arguments)


def _engine(root: Path) -> Engine:
    return Engine(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=1, enable_progress_bar=False)


def test_mixed_formats_modes_and_sizes_train_and_test(
    odd_formats_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(tmp_path)
    model = Fastflow2D(**TINY_MODEL)
    with caplog.at_level(logging.WARNING, logger="anomalib_fastflow2d"):
        engine.fit(model, datamodule=_folder(odd_formats_root))
    assert any("more than 8 bits per channel" in record.message for record in caplog.records)
    metrics = engine.test(model, datamodule=_folder(odd_formats_root))[0]
    assert math.isfinite(metrics["image_AUROC"])
    assert math.isfinite(metrics["pixel_AUROC"])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"not an image at all" * 10)


@pytest.mark.parametrize(
    ("file_name", "damage"),
    [("train0_rgba.png", _truncate), ("train1.jpg", _truncate), ("train2_gray.png", _garble)],
)
def test_broken_training_image_is_named(
    odd_formats_root: Path, tmp_path: Path, file_name: str, damage: Callable[[Path], None]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(odd_formats_root, root)
    damage(root / "good" / file_name)
    with pytest.raises(DataCheckError, match=file_name):
        _engine(tmp_path).fit(Fastflow2D(**TINY_MODEL), datamodule=_folder(root))


def test_mask_of_another_size_is_named(odd_formats_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(odd_formats_root, root)
    for mask in (root / "masks").glob("*.png"):
        with Image.open(mask) as image:
            image.resize((image.width // 2, image.height // 2)).save(mask)
    with pytest.raises(DataCheckError, match=r"Mask .*masks/\S+\.png is 32x32 but its image .*defect/\S+ is 64x64"):
        _engine(tmp_path).test(Fastflow2D(**TINY_MODEL), datamodule=_folder(root))


def test_empty_training_folder_is_named(demo_root: Path, odd_formats_root: Path, tmp_path: Path) -> None:
    mvtec_root = tmp_path / "mvtec"
    shutil.copytree(demo_root, mvtec_root)
    for image in (mvtec_root / "brick" / "train" / "good").iterdir():
        image.unlink()
    mvtec = MVTecAD(root=mvtec_root, category="brick", num_workers=0)
    with pytest.raises(DataCheckError, match=r"The training set of MVTecAD is empty \(root: .*mvtec"):
        _engine(tmp_path).fit(Fastflow2D(**TINY_MODEL), datamodule=mvtec)

    folder_root = tmp_path / "folder"
    shutil.copytree(odd_formats_root, folder_root)
    shutil.rmtree(folder_root / "good")
    (folder_root / "good").mkdir()
    # anomalib's Folder refuses it itself, naming the folder.
    with pytest.raises(RuntimeError, match=r"Found 0 .* images in .*folder/good"):
        _engine(tmp_path).fit(Fastflow2D(**TINY_MODEL), datamodule=_folder(folder_root))


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"backbone": "no_such_backbone"}, "Unknown backbone 'no_such_backbone'"),
        ({"flow_steps": 0}, "flow_steps must be positive"),
        ({"hidden_ratio": 0.0}, "hidden_ratio must be positive"),
        ({"hidden_ratio": -1.0}, "hidden_ratio must be positive"),
        ({"input_size": (8, 8)}, r"Input size \(8, 8\) is below the minimum of 16"),
        ({"backbone_weights": "missing.pth"}, "backbone_weights file 'missing.pth' does not exist"),
    ],
)
def test_bad_argument_is_named_at_construction(arguments: dict[str, object], named: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=named):
        Fastflow2D(**{**TINY_MODEL, **arguments})


def test_images_below_the_minimum_size_without_a_resize_are_refused() -> None:
    model = Fastflow2D(**TINY_MODEL, pre_processor=False)
    with pytest.raises(ValueError, match=r"Input size \(8, 8\) is below the minimum of 16 pixels"):
        model.training_step(ImageBatch(image=torch.rand(2, 3, 8, 8)), 0)


def test_stock_cli_names_a_truncated_image(odd_formats_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(odd_formats_root, root)
    _truncate(root / "good" / "train3_wide.png")
    result = run(
        [
            ANOMALIB,
            "train",
            *TINY_MODEL_CLI,
            "--data",
            "Folder",
            "--data.name",
            "odd",
            "--data.root",
            str(root),
            "--data.normal_dir",
            "good",
            "--data.abnormal_dir",
            "defect",
            "--data.normal_test_dir",
            "good_test",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--default_root_dir",
            str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "DataCheckError" in result.stderr
    assert "train3_wide.png cannot be read" in result.stderr


def test_stock_cli_names_a_bad_argument(tmp_path: Path) -> None:
    result = run([ANOMALIB, "train", "--model", "Fastflow2D", "--model.flow_steps", "0"], cwd=tmp_path)
    assert result.returncode != 0
    assert "flow_steps must be positive, got 0" in result.stderr


def test_every_bad_file_is_listed_in_one_error_up_to_a_bound(
    odd_formats_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    shutil.copytree(odd_formats_root, root)
    _truncate(root / "good" / "train0_rgba.png")
    _truncate(root / "good" / "train1.jpg")
    _garble(root / "good" / "train2_gray.png")
    with pytest.raises(DataCheckError) as listed:
        _engine(tmp_path).fit(Fastflow2D(**TINY_MODEL), datamodule=_folder(root))
    message = str(listed.value)
    assert message.startswith("3 files of the datamodule cannot be used:")
    assert all(name in message for name in ("train0_rgba.png", "train1.jpg", "train2_gray.png"))

    monkeypatch.setattr(data_checks, "MAX_LISTED_PROBLEMS", 2)
    with pytest.raises(DataCheckError, match=r"3 files .*\n  - .*\n  - .*\n  \.\.\. and 1 more\.$"):
        _engine(tmp_path).fit(Fastflow2D(**TINY_MODEL), datamodule=_folder(root))
