# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Registration with stock anomalib: the API, the start-up hook, and the stock ``anomalib`` command line."""

import re
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from anomalib import models as anomalib_models
from anomalib.models import AnomalibModule, get_model, list_models

import anomalib_fastflow2d
from anomalib_fastflow2d import Fastflow2D, register
from anomalib_fastflow2d._hook import DISABLE_VARIABLE
from tests.conftest import ANOMALIB, run

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path, **env: str) -> str:
    result = run([sys.executable, "-c", code], cwd, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_model_is_a_direct_anomalib_model() -> None:
    assert Fastflow2D in AnomalibModule.__subclasses__()
    assert anomalib_models.Fastflow2D is Fastflow2D
    assert "Fastflow2D" in anomalib_models.__all__
    assert "Fastflow2D" in list_models(case="pascal")


def test_get_model_by_name_and_by_class_path() -> None:
    by_name = get_model("Fastflow2D", pre_trained=False, flow_steps=2)
    by_dict = get_model({"class_path": "Fastflow2D", "init_args": {"pre_trained": False, "flow_steps": 3}})
    assert isinstance(by_name, Fastflow2D)
    assert isinstance(by_dict, Fastflow2D)
    assert len(by_dict.model.flows[0].inn.module_list) == 3


def test_register_is_idempotent_and_refuses_another_class(monkeypatch: pytest.MonkeyPatch) -> None:
    register()
    register()
    assert anomalib_models.__all__.count("Fastflow2D") == 1

    monkeypatch.setattr(anomalib_models, "Fastflow2D", type("Fastflow2D", (), {}), raising=False)
    with pytest.raises(RuntimeError, match="refusing to replace"):
        register()


def test_hook_registers_on_anomalib_models_import_without_importing_torch_at_start(tmp_path: Path) -> None:
    output = _python(
        "import sys; before = 'torch' in sys.modules or 'anomalib' in sys.modules; "
        "import anomalib.models as m; print(before, m.Fastflow2D.__module__)",
        tmp_path,
    )
    assert output.splitlines()[-1] == "False anomalib_fastflow2d.lightning_model"


def test_hook_is_disabled_by_its_variable(tmp_path: Path) -> None:
    code = "import anomalib.models as m; print(hasattr(m, 'Fastflow2D'))"
    assert _python(code, tmp_path, **{DISABLE_VARIABLE: "1"}).splitlines()[-1] == "False"
    explicit = "import anomalib_fastflow2d, anomalib.models as m; print(hasattr(m, 'Fastflow2D'))"
    assert _python(explicit, tmp_path, **{DISABLE_VARIABLE: "1"}).splitlines()[-1] == "True"


def test_hook_costs_under_5_ms_at_start(tmp_path: Path) -> None:
    def hook_microseconds() -> int:
        result = run([sys.executable, "-X", "importtime", "-c", "pass"], tmp_path)
        rows = [line for line in result.stderr.splitlines() if line.endswith("_anomalib_fastflow2d_hook")]
        assert rows, "the start-up hook did not run: is the package installed (pip install -e .)?"
        return int(rows[0].split("|")[1])

    assert min(hook_microseconds() for _ in range(3)) < 5000


def test_wheel_ships_the_hook_and_registers_from_a_plain_install(tmp_path: Path) -> None:
    build = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)], tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(tmp_path.glob("anomalib_fastflow2d-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"anomalib_fastflow2d.pth", "_anomalib_fastflow2d_hook.py", "anomalib_fastflow2d/py.typed"} <= set(names)

    target = tmp_path / "site"
    install = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], tmp_path
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # Without `site` (-S), the editable install's .pth files never run; the wheel's site dir is processed like
    # site-packages, and the dependencies come from this environment's site-packages.
    code = (
        f"import sys, site; sys.path.append({sysconfig.get_paths()['purelib']!r}); site.addsitedir({str(target)!r}); "
        "import anomalib.models as m; import anomalib_fastflow2d as p; print(m.Fastflow2D.__name__, p.__file__)"
    )
    result = run([sys.executable, "-S", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    name, location = result.stdout.strip().splitlines()[-1].split()
    assert name == "Fastflow2D"
    assert Path(location).is_relative_to(target)


def _metric(output: str, name: str) -> float:
    match = re.search(rf"{name}\s*│\s*([0-9.]+)", output)
    assert match, f"{name} not in the printed metrics:\n{output[-3000:]}"
    return float(match.group(1))


@pytest.mark.slow
def test_stock_cli_trains_and_tests_fastflow2d(demo_root: Path, tmp_path: Path) -> None:
    data = ["--data", "anomalib.data.MVTecAD", f"--data.root={demo_root}", "--data.category=brick"]
    data += ["--data.num_workers=0", "--data.train_batch_size=8", "--data.eval_batch_size=8"]
    model = ["--model.pre_trained=false", "--model.flow_steps=2", "--model.input_size=[64,64]"]
    trainer = ["--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]

    train = run([ANOMALIB, "train", "--model", "Fastflow2D", *model, *data, *trainer], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    # `train` runs fit, then test on the same trainer: the model's callbacks are attached already, not overridden.
    assert "will override existing callbacks" not in train.stdout + train.stderr
    checkpoint = tmp_path / "results/Fastflow2D/MVTecAD/brick/latest/weights/lightning/model.ckpt"
    assert checkpoint.is_file()
    assert 0.0 <= _metric(train.stdout, "image_AUROC") <= 1.0
    assert 0.5 < _metric(train.stdout, "pixel_AUROC") <= 1.0

    test = run(
        [ANOMALIB, "test", "--model", "anomalib_fastflow2d.Fastflow2D", *model, *data, f"--ckpt_path={checkpoint}"],
        tmp_path,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    assert _metric(test.stdout, "pixel_AUROC") == pytest.approx(_metric(train.stdout, "pixel_AUROC"), abs=1e-4)


def test_package_exports_the_public_names() -> None:
    assert set(anomalib_fastflow2d.__all__) >= {"Fastflow2D", "Fastflow2DModel", "Fastflow2DLoss", "register"}


def test_benchmark_job_generator_builds_fastflow2d_from_a_short_class_path(demo_root: Path) -> None:
    from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator  # noqa: PLC0415 - heavy, one test

    args = {
        "seed": 42,
        "model": {"class_path": "Fastflow2D", "init_args": {"pre_trained": False, "flow_steps": 2, "max_epochs": 1}},
        "data": {"class_path": "MVTecAD", "init_args": {"root": str(demo_root), "category": "brick"}},
    }
    jobs = list(BenchmarkJobGenerator(accelerator="cpu").generate_jobs(args, None))
    assert len(jobs) == 1
    assert isinstance(jobs[0].model, Fastflow2D)
    assert jobs[0].model.max_epochs == 1
