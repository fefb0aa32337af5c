# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Every YAML under configs/benchmark/ is read by stock anomalib's benchmark pipeline and yields the jobs it says."""

import copy
import csv
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import yaml
from anomalib.data import BTech, MVTecAD
from anomalib.data.datasets.image.btech import CATEGORIES as BTECH_CATEGORIES
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTECAD_CATEGORIES
from anomalib.models import Fastflow, Padim, Patchcore
from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

from anomalib_fastflow2d import PRESETS, Fastflow2D
from anomalib_fastflow2d.data import CIFAR10OneClass
from anomalib_fastflow2d.data.cifar10 import CLASSES as CIFAR10_CLASSES
from fastflow2d_demo_data import TEXTURES, generate_demo_dataset
from tests.conftest import ANOMALIB, run

BENCHMARK_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "benchmark"

PAPER_CONFIGS: dict[str, tuple[type, tuple[str, ...]]] = {
    "mvtecad.yaml": (MVTecAD, MVTECAD_CATEGORIES),
    "btech.yaml": (BTech, BTECH_CATEGORIES),
}
"""The configs for users with the data and the weights: their datamodule and the categories they must cover."""

DEMO_MODELS = {"Fastflow2D": Fastflow2D, "Fastflow": Fastflow, "Padim": Padim, "Patchcore": Patchcore}


def _benchmark_args(name: str) -> dict[str, Any]:
    """The ``benchmark`` section, as anomalib's pipeline reads it (``yaml.safe_load``)."""
    return yaml.safe_load((BENCHMARK_CONFIGS / name).read_text(encoding="utf-8"))["benchmark"]


def _offline(args: dict[str, Any], category: str) -> dict[str, Any]:
    """One category and random backbone weights, so that jobs build without the data or the model hub."""
    offline = copy.deepcopy(args)
    offline["data"]["init_args"]["category"] = category
    offline["model"]["init_args"]["pre_trained"] = False
    return offline


OTHER_CONFIGS = {"demo.yaml", "kernel_ablation.yaml", "kernel_ablation_demo.yaml", "cifar10.yaml"}
"""Covered by the tests below and, for cifar10.yaml, by tests/test_one_class_data.py."""


def _rows(tmp_path: Path) -> list[dict[str, str]]:
    """The rows of the one results table a benchmark run in ``tmp_path`` wrote; fails with the log if it is absent."""
    tables = list((tmp_path / "runs" / "benchmark").glob("*/results.csv"))
    assert len(tables) == 1, (tmp_path / "runs" / "pipeline.log").read_text(encoding="utf-8")[-5000:]
    with tables[0].open(encoding="utf-8") as table:
        return list(csv.DictReader(table))


def test_every_benchmark_config_is_covered() -> None:
    assert {path.name for path in BENCHMARK_CONFIGS.glob("*.yaml")} == OTHER_CONFIGS | set(PAPER_CONFIGS)


def test_kernel_ablation_grid_covers_every_preset_both_kernels_and_every_category() -> None:
    combinations = {
        (
            job["model"]["init_args"]["backbone"],
            job["model"]["init_args"]["conv3x3_only"],
            job["data"]["init_args"]["category"],
        )
        for job in get_iterator_from_grid_dict(_benchmark_args("kernel_ablation.yaml"))
    }
    assert combinations == set(product(PRESETS, [True, False], MVTECAD_CATEGORIES))


def test_kernel_ablation_jobs_change_only_the_kernels_of_the_preset() -> None:
    args = _offline(_benchmark_args("kernel_ablation.yaml"), "bottle")
    args["model"]["init_args"]["backbone"]["grid"] = ["resnet18", "deit_base_distilled_patch16_384"]
    jobs = list(BenchmarkJobGenerator(accelerator="cuda").generate_jobs(args, None))

    assert len(jobs) == 4
    for job in jobs:
        config = job.model.model.config
        preset = PRESETS[config.backbone]
        assert config.conv3x3_only is job.flat_cfg["model.init_args.conv3x3_only"]
        assert (config.flow_steps, config.feature_stages, config.hidden_ratio) == (
            preset.flow_steps,
            preset.feature_stages,
            preset.hidden_ratio,
        )
        assert isinstance(job.datamodule, MVTecAD)


def test_cifar10_config_builds_one_job_per_class_offline() -> None:
    args = _benchmark_args("cifar10.yaml")
    assert [job["data"]["init_args"]["normal_class"] for job in get_iterator_from_grid_dict(args)] == list(
        CIFAR10_CLASSES
    )
    one_class = copy.deepcopy(args)
    one_class["data"]["init_args"]["normal_class"] = "frog"
    one_class["model"]["init_args"]["pre_trained"] = False
    (job,) = BenchmarkJobGenerator(accelerator="cuda").generate_jobs(one_class, None)
    assert isinstance(job.datamodule, CIFAR10OneClass)
    assert job.datamodule.category == "frog"
    assert isinstance(job.model, Fastflow2D)
    assert job.model.max_epochs == 500


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_grid_covers_every_preset_and_category(name: str) -> None:
    _, categories = PAPER_CONFIGS[name]
    combinations = {
        (job["model"]["init_args"]["backbone"], job["data"]["init_args"]["category"])
        for job in get_iterator_from_grid_dict(_benchmark_args(name))
    }
    assert combinations == set(product(PRESETS, categories))


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_config_builds_every_preset_with_the_stock_job_generator(name: str) -> None:
    datamodule_class, categories = PAPER_CONFIGS[name]
    args = _offline(_benchmark_args(name), categories[0])
    jobs = list(BenchmarkJobGenerator(accelerator="cuda").generate_jobs(args, None))

    assert [job.flat_cfg["model.init_args.backbone"] for job in jobs] == list(PRESETS)
    for job in jobs:
        preset = PRESETS[job.flat_cfg["model.init_args.backbone"]]
        assert isinstance(job.model, Fastflow2D)
        assert tuple(job.model.input_size) == preset.input_size
        assert job.model.model.config.feature_stages == preset.feature_stages
        assert len(job.model.model.flows[0].inn.module_list) == preset.flow_steps
        assert job.model.max_epochs == 500
        assert isinstance(job.datamodule, datamodule_class)
        assert job.datamodule.category == categories[0]


def test_demo_config_builds_every_model_on_every_demo_category() -> None:
    args = _benchmark_args("demo.yaml")
    jobs = list(get_iterator_from_grid_dict(args))
    assert {job["data"]["init_args"]["category"] for job in jobs} == set(TEXTURES)
    # anomalib gathers the results CSV only when every job has the same columns.
    assert len({tuple(sorted(job["model"]["init_args"])) for job in jobs}) == 1

    built = list(BenchmarkJobGenerator(accelerator="cpu").generate_jobs(_offline(args, "brick"), None))
    assert [type(job.model) for job in built] == list(DEMO_MODELS.values())
    assert {tuple(job.model.input_size) for job in built} == {(256, 256)}


@pytest.fixture(scope="module")
def smallest_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest demo dataset on which every metric of every model is defined."""
    root = tmp_path_factory.mktemp("benchmark-demo")
    return generate_demo_dataset(root, ["brick"], image_size=64, num_train=8, num_test_normal=4, num_test_anomalous=4)


@pytest.mark.slow
def test_demo_config_runs_every_model_with_the_stock_cli(smallest_demo_root: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((BENCHMARK_CONFIGS / "demo.yaml").read_text(encoding="utf-8"))
    config["benchmark"]["data"]["init_args"].update(root=str(smallest_demo_root), category="brick")
    reduced = tmp_path / "demo.yaml"
    reduced.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run([ANOMALIB, "benchmark", "--config", str(reduced)], tmp_path, PL_TRAINER_MAX_EPOCHS="1")

    # anomalib exits 0 and writes no CSV, or a CSV without the failed jobs, when jobs fail.
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["model.class_path"]: row for row in _rows(tmp_path)}
    assert set(rows) == set(DEMO_MODELS)
    for model, row in rows.items():
        for metric in ("image_AUROC", "pixel_AUROC"):
            assert 0.0 <= float(row[metric]) <= 1.0, (model, metric, row[metric])  # False for NaN


@pytest.mark.slow
def test_kernel_ablation_demo_config_runs_both_kernels_with_the_stock_cli(
    smallest_demo_root: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((BENCHMARK_CONFIGS / "kernel_ablation_demo.yaml").read_text(encoding="utf-8"))
    config["benchmark"]["model"]["init_args"].update(flow_steps=2, input_size=[64, 64], max_epochs=1)
    config["benchmark"]["data"]["init_args"].update(root=str(smallest_demo_root), category="brick")
    reduced = tmp_path / "kernel_ablation_demo.yaml"
    reduced.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run([ANOMALIB, "benchmark", "--config", str(reduced)], tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["model.init_args.conv3x3_only"]: row for row in _rows(tmp_path)}
    assert set(rows) == {"True", "False"}
    for kernels, row in rows.items():
        for metric in ("image_AUROC", "pixel_AUROC"):
            assert 0.0 <= float(row[metric]) <= 1.0, (kernels, metric, row[metric])
