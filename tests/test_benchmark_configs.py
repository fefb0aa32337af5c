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


def test_every_benchmark_config_is_covered() -> None:
    assert {path.name for path in BENCHMARK_CONFIGS.glob("*.yaml")} == {"demo.yaml"} | set(PAPER_CONFIGS)


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
    tables = list((tmp_path / "runs" / "benchmark").glob("*/results.csv"))
    log = (tmp_path / "runs" / "pipeline.log").read_text(encoding="utf-8")
    assert len(tables) == 1, log[-5000:]
    with tables[0].open(encoding="utf-8") as table:
        rows = {row["model.class_path"]: row for row in csv.DictReader(table)}
    assert set(rows) == set(DEMO_MODELS)
    for model, row in rows.items():
        for metric in ("image_AUROC", "pixel_AUROC"):
            assert 0.0 <= float(row[metric]) <= 1.0, (model, metric, row[metric])  # False for NaN
