# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The one-class data modules: CIFAR-10 in its own pickle format and a labelled class folder, split and labelled
as the protocol says, and trained, tested and predicted on with the stock anomalib CLI and benchmark."""

import csv
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from anomalib import data as anomalib_data
from PIL import Image

from anomalib_fastflow2d.data import CIFAR10OneClass, ClassFolderOneClass
from anomalib_fastflow2d.data.cifar10 import CLASSES
from tests.conftest import ANOMALIB, TINY_MODEL_CLI, run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TRAIN_PER_CLASS_PER_BATCH = 1
"""Each of the five training batches holds this many images of each class: 5 training images per class."""

TEST_PER_CLASS = 2
"""Test images per class: the test set has 20, 2 normal and 18 anomalous."""

FOLDER_CLASSES = {"bolt": 5, "nut": 4, "washer": 6}
"""A labelled image folder: class name and number of images."""


def _batch(per_class: int, rng: np.random.Generator) -> dict[bytes, object]:
    """A batch in CIFAR-10's pickle layout: uint8 (N, 3072) rows of red, green and blue planes, and labels."""
    labels = [label for label in range(len(CLASSES)) for _ in range(per_class)]
    # Each class has its own brightness, so that a model can tell them apart.
    data = np.stack([rng.integers(0, 64, 3072, dtype=np.uint8) + 19 * label for label in labels]).astype(np.uint8)
    return {b"batch_label": b"tiny", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}


def _batches() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{index}": _batch(TRAIN_PER_CLASS_PER_BATCH, rng) for index in range(1, 6)}
    batches["test_batch"] = _batch(TEST_PER_CLASS, rng)
    batches["batches.meta"] = {b"label_names": [name.encode() for name in CLASSES]}
    return {name: pickle.dumps(batch) for name, batch in batches.items()}


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny ``cifar-10-python.tar.gz``."""
    root = tmp_path_factory.mktemp("cifar-archive")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, content in _batches().items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return root


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("class-folder")
    rng = np.random.default_rng(1)
    for index, (name, count) in enumerate(FOLDER_CLASSES.items()):
        (root / name).mkdir()
        for number in range(count):
            pixels = rng.integers(0, 64, (40, 40, 3), dtype=np.uint8) + 60 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{number:03d}.png")
    (root / "notes").mkdir()  # a folder without images is not a class
    return root


def _labels(dataset: anomalib_data.AnomalibDataset) -> dict[str, set[int]]:
    samples = dataset.samples
    return {name: set(group["label_index"]) for name, group in samples.groupby("class_name")}


@pytest.mark.parametrize("normal_class", ["cat", 3])
def test_cifar10_archive_gives_the_protocols_split(cifar_archive: Path, normal_class: str | int) -> None:
    datamodule = CIFAR10OneClass(root=cifar_archive, normal_class=normal_class, num_workers=0)
    datamodule.setup()

    assert datamodule.category == "cat"
    assert len(datamodule.train_data) == 5 * TRAIN_PER_CLASS_PER_BATCH
    assert _labels(datamodule.train_data) == {"cat": {0}}
    assert len(datamodule.test_data) == TEST_PER_CLASS * len(CLASSES)
    assert _labels(datamodule.test_data) == {name: {0 if name == "cat" else 1} for name in CLASSES}
    assert len(datamodule.val_data) == len(datamodule.test_data)  # the protocol holds no test image out
    item = datamodule.test_data[0]
    assert tuple(item.image.shape) == (3, 32, 32)
    assert Path(item.image_path).is_file()
    assert item.gt_mask is None


def test_cifar10_extracted_folder_gives_the_archives_images(cifar_archive: Path, tmp_path: Path) -> None:
    for name, content in _batches().items():
        (tmp_path / "cifar-10-batches-py").mkdir(exist_ok=True)
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(content)
    from_folder = CIFAR10OneClass(root=tmp_path, normal_class="truck", num_workers=0)
    from_archive = CIFAR10OneClass(root=cifar_archive, normal_class="truck", num_workers=0)
    from_folder.setup()
    from_archive.setup()

    first, second = from_folder.test_data.samples, from_archive.test_data.samples
    assert list(first["label_index"]) == list(second["label_index"])
    for left, right in zip(first["image_path"], second["image_path"], strict=True):
        assert Path(left).relative_to(tmp_path) == Path(right).relative_to(cifar_archive)
        assert np.array_equal(np.asarray(Image.open(left)), np.asarray(Image.open(right)))


def test_cifar10_missing_data_names_where_it_looked_and_where_to_get_it(tmp_path: Path) -> None:
    datamodule = CIFAR10OneClass(root=tmp_path / "absent", normal_class="dog")
    with pytest.raises(FileNotFoundError) as error:
        datamodule.setup()
    message = str(error.value)
    assert str(tmp_path / "absent" / "cifar-10-python.tar.gz") in message
    assert str(tmp_path / "absent" / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert not (tmp_path / "absent").exists()  # nothing was downloaded or written


@pytest.mark.parametrize("normal_class", ["dragon", 10, -1])
def test_cifar10_refuses_an_unknown_class_listing_the_classes(normal_class: str | int) -> None:
    with pytest.raises(ValueError, match=r"airplane.*truck"):
        CIFAR10OneClass(normal_class=normal_class)


@pytest.mark.parametrize("normal_class", ["washer", 2])
def test_class_folder_splits_every_class_and_trains_on_the_normal_one(
    class_folder: Path, normal_class: str | int
) -> None:
    datamodule = ClassFolderOneClass(root=class_folder, normal_class=normal_class, test_fraction=0.5, num_workers=0)
    datamodule.setup()

    # Each class: half its images, rounded up, are test images; the normal class's others are the training set.
    assert len(datamodule.test_data) == 3 + 2 + 3
    assert len(datamodule.train_data) == 3
    assert _labels(datamodule.train_data) == {"washer": {0}}
    assert _labels(datamodule.test_data) == {"bolt": {1}, "nut": {1}, "washer": {0}}
    train = set(datamodule.train_data.samples["image_path"])
    assert not train & set(datamodule.test_data.samples["image_path"])


@pytest.fixture(scope="module")
def numbered_class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classes named ``0`` ... ``11``, as a dataset of label indices is often laid out; sorted, ``10`` is third."""
    root = tmp_path_factory.mktemp("numbered-classes")
    for label in range(12):
        (root / str(label)).mkdir()
        for number in range(2):
            Image.new("RGB", (16, 16), (20 * label, number, 0)).save(root / str(label) / f"{number}.png")
    return root


@pytest.mark.parametrize("normal_class", [2, "2"])
def test_class_folder_takes_a_numeric_name_as_the_folder_of_that_name(
    numbered_class_folder: Path, normal_class: int | str
) -> None:
    # `--data.normal_class 2` reaches the data module as the integer 2.
    datamodule = ClassFolderOneClass(root=numbered_class_folder, normal_class=normal_class, num_workers=0)
    assert datamodule.category == "2"  # names the results folder before setup
    datamodule.setup()

    assert datamodule.category == "2"
    assert _labels(datamodule.train_data) == {"2": {0}}


def test_class_folder_index_applies_only_where_no_folder_has_the_name(numbered_class_folder: Path) -> None:
    datamodule = ClassFolderOneClass(root=numbered_class_folder, normal_class=2, num_workers=0)
    (numbered_class_folder / "2").rename(numbered_class_folder / "two")
    try:
        datamodule.setup()  # no folder "2" now: the index picks the sorted third name
    finally:
        (numbered_class_folder / "two").rename(numbered_class_folder / "2")
    assert datamodule.category == "10"
    assert _labels(datamodule.train_data) == {"10": {0}}


def test_class_folder_split_follows_the_seed(class_folder: Path) -> None:
    def test_paths(seed: int) -> list[str]:
        datamodule = ClassFolderOneClass(root=class_folder, normal_class="bolt", split_seed=seed, num_workers=0)
        datamodule.setup()
        return sorted(datamodule.test_data.samples["image_path"])

    assert test_paths(0) == test_paths(0)
    assert any(test_paths(0) != test_paths(seed) for seed in range(1, 6))


def test_class_folder_errors_name_the_fix(class_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        ClassFolderOneClass(root=class_folder, normal_class="bolt", test_fraction=1.0)
    with pytest.raises(ValueError, match=r"\['bolt', 'nut', 'washer'\]"):
        ClassFolderOneClass(root=class_folder, normal_class="screw").setup()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClassFolderOneClass(root=tmp_path / "absent", normal_class=0).setup()
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(FileNotFoundError, match="at least two class sub-folders"):
        ClassFolderOneClass(root=tmp_path, normal_class=0).setup()


def test_importing_the_plugin_publishes_the_data_modules_for_anomalibs_benchmark() -> None:
    assert anomalib_data.CIFAR10OneClass is CIFAR10OneClass
    assert anomalib_data.ClassFolderOneClass is ClassFolderOneClass
    datamodule = anomalib_data.get_datamodule(
        {"data": {"class_path": "anomalib_fastflow2d.data.CIFAR10OneClass", "init_args": {"normal_class": "ship"}}}
    )
    assert isinstance(datamodule, CIFAR10OneClass)
    assert datamodule.category == "ship"


def _image_auroc(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if "image_AUROC" in line)
    return float(line.replace("│", " ").split()[-1])


@pytest.mark.slow
def test_stock_cli_trains_and_tests_on_cifar10(cifar_archive: Path, tmp_path: Path) -> None:
    data = ["--data", "anomalib_fastflow2d.data.CIFAR10OneClass", f"--data.root={cifar_archive}"]
    data += ["--data.normal_class=cat", "--data.num_workers=0", "--data.train_batch_size=5"]
    trainer = ["--trainer.max_epochs=1", f"--default_root_dir={tmp_path}"]
    result = run([ANOMALIB, "train", *TINY_MODEL_CLI, *data, *trainer], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= _image_auroc(result.stdout) <= 1.0
    assert "pixel_AUROC" not in result.stdout  # no masks, so no pixel metrics
    assert list((tmp_path / "Fastflow2D" / "CIFAR10OneClass" / "cat").rglob("model.ckpt"))


@pytest.mark.slow
def test_stock_cli_trains_and_predicts_on_a_class_folder(class_folder: Path, tmp_path: Path) -> None:
    data = ["--data", "anomalib_fastflow2d.data.ClassFolderOneClass", f"--data.root={class_folder}"]
    data += ["--data.normal_class=washer", "--data.test_fraction=0.5", "--data.num_workers=0"]
    trainer = ["--trainer.max_epochs=1", f"--default_root_dir={tmp_path}"]
    trained = run([ANOMALIB, "train", *TINY_MODEL_CLI, *data, *trainer], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert 0.0 <= _image_auroc(trained.stdout) <= 1.0

    checkpoint = next((tmp_path / "Fastflow2D" / "ClassFolderOneClass" / "washer").rglob("model.ckpt"))
    predicted = run([ANOMALIB, "predict", "--model", "Fastflow2D", f"--ckpt_path={checkpoint}", *data], tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with next(tmp_path.rglob("predictions.csv")).open(encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 3 + 2 + 3  # the test split of every class
    assert {Path(row["image_path"]).parent.name for row in rows} == set(FOLDER_CLASSES)


@pytest.mark.slow
def test_stock_benchmark_runs_the_cifar10_config_on_one_class(cifar_archive: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "benchmark" / "cifar10.yaml").read_text(encoding="utf-8"))
    config["accelerator"] = "cpu"
    model = config["benchmark"]["model"]["init_args"]
    model.update(pre_trained=False, flow_steps=2, input_size=[64, 64], max_epochs=1)
    config["benchmark"]["data"]["init_args"].update(root=str(cifar_archive), normal_class="cat", num_workers=0)
    reduced = tmp_path / "cifar10.yaml"
    reduced.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run([ANOMALIB, "benchmark", "--config", str(reduced)], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    tables = list((tmp_path / "runs" / "benchmark").glob("*/results.csv"))
    assert len(tables) == 1, (tmp_path / "runs" / "pipeline.log").read_text(encoding="utf-8")[-5000:]
    with tables[0].open(encoding="utf-8") as table:
        (row,) = list(csv.DictReader(table))
    assert row["data.init_args.normal_class"] == "cat"
    assert 0.0 <= float(row["image_AUROC"]) <= 1.0
