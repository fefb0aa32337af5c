# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Export to OpenVINO, ONNX and PyTorch: parity with eager PyTorch, compression, bad input, CLI and the docs."""

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime
import openvino
import pytest
import torch
from anomalib.data import Folder, ImageBatch, MVTecAD
from anomalib.deploy import CompressionType, ExportType, TorchInferencer
from anomalib.engine import Engine
from anomalib.metrics import AUROC, F1Score
from anomalib.models import Padim
from lightning.pytorch import seed_everything
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from anomalib_fastflow2d import PRESETS, Fastflow2D
from anomalib_fastflow2d.export import ONNX_OPSET, OPENVINO_F32_CONFIG, Fastflow2DExportMixin, _metric_on
from fastflow2d_demo_data import generate_demo_dataset, generate_photo_dataset
from tests.conftest import ANOMALIB, TINY_MODEL, run

ROOT = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-3
MAP_TOLERANCE = 1e-2
LOADING: dict[str, Any] = {"num_workers": 0, "train_batch_size": 8, "eval_batch_size": 32, "seed": 0}
LOADING |= {"val_split_mode": "from_test", "val_split_ratio": 0.5}
"""Loading for every datamodule here: validation images come from the test split."""


def _datamodule(root: Path) -> MVTecAD:
    # Thresholds come from validation images that are not test images, so no test score sits on a threshold.
    return MVTecAD(root=root, category="brick", **LOADING)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export_data")
    return generate_demo_dataset(
        root, categories=["brick"], image_size=64, num_train=16, num_test_normal=16, num_test_anomalous=16
    )


@pytest.fixture(scope="module")
def checkpoint(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed_everything(0)
    engine = Engine(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path_factory.mktemp("train"),
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(Fastflow2D(**TINY_MODEL), datamodule=_datamodule(data_root))
    path = Path(engine.trainer.default_root_dir) / "model.ckpt"
    engine.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def test_images(data_root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The test split's images ``(N, 3, 64, 64)`` in ``[0, 1]``, their labels and paths."""
    datamodule = _datamodule(data_root)
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    images = torch.cat([batch.image for batch in batches])
    labels = torch.cat([batch.gt_label for batch in batches])
    paths = [path for batch in batches for path in batch.image_path]
    return images, labels, paths


@pytest.fixture(scope="module")
def eager(checkpoint: Path, test_images: tuple[torch.Tensor, torch.Tensor, list[str]]) -> dict[str, np.ndarray]:
    model = Fastflow2D.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        outputs = model(test_images[0])
    return {name: value.numpy() for name, value in outputs._asdict().items() if value is not None}


@pytest.fixture(scope="module")
def openvino_fp32(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    export_root = tmp_path_factory.mktemp("openvino_fp32")
    path = Engine(logger=False).export(Fastflow2D(**TINY_MODEL), ExportType.OPENVINO, export_root, ckpt_path=checkpoint)
    assert path == export_root / "weights/openvino/model.xml"
    return path


def _assert_parity(outputs: dict[str, np.ndarray], eager: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(outputs["pred_label"], eager["pred_label"])
    assert np.abs(outputs["pred_score"] - eager["pred_score"]).max() <= SCORE_TOLERANCE
    assert np.abs(outputs["anomaly_map"] - eager["anomaly_map"]).max() <= MAP_TOLERANCE


def _openvino_outputs(model_path: Path, images: torch.Tensor, config: dict[str, str]) -> dict[str, np.ndarray]:
    compiled = openvino.Core().compile_model(model_path, "CPU", config)
    return {output.any_name: value for output, value in compiled(images.numpy()).items()}


def test_eager_model_separates_the_test_images(eager: dict[str, np.ndarray]) -> None:
    # Parity only means something if labels and scores vary across the test set.
    assert 0 < eager["pred_label"].sum() < len(eager["pred_label"])
    assert np.ptp(eager["pred_score"]) > 0.1


OPENVINO_ONLY_SCRIPT = """
import json, sys
import numpy as np
import openvino

images_file, model_file, output_file = sys.argv[1:]
images = np.load(images_file)
compiled = openvino.Core().compile_model(model_file, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
def outputs(batch):
    return {output.any_name: value for output, value in compiled(batch).items()}
batch = outputs(images)
single = outputs(images[:1])
resized = outputs(np.ascontiguousarray(np.pad(images[:2], ((0, 0), (0, 0), (8, 8), (0, 24)), mode="edge")))
np.savez(output_file, **batch, single_score=single["pred_score"], resized_map_shape=resized["anomaly_map"].shape)
heavy = {"torch", "anomalib", "anomalib_fastflow2d"}
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in heavy)))
"""


def test_openvino_fp32_matches_pytorch_in_a_process_without_torch(
    openvino_fp32: Path, test_images: Any, eager: dict[str, np.ndarray], tmp_path: Path
) -> None:
    np.save(tmp_path / "images.npy", test_images[0].numpy())
    result = run(
        [sys.executable, "-c", OPENVINO_ONLY_SCRIPT, "images.npy", str(openvino_fp32), "outputs.npz"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    _assert_parity(outputs, eager)
    # Dynamic batch, and any input size is resized to the model's 64x64 inside the graph.
    np.testing.assert_allclose(outputs["single_score"], outputs["pred_score"][:1], atol=1e-6)
    assert tuple(outputs["resized_map_shape"]) == (2, 1, 64, 64)


def test_onnx_export_logs_no_traceback_and_matches_onnx_runtime(
    checkpoint: Path,
    test_images: Any,
    eager: dict[str, np.ndarray],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = Engine(logger=False).export(Fastflow2D(**TINY_MODEL), ExportType.ONNX, tmp_path, ckpt_path=checkpoint)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err + caplog.text
    assert "version conversion" not in captured.out + captured.err + caplog.text
    opsets = {entry.domain: entry.version for entry in onnx.load(path, load_external_data=False).opset_import}
    assert opsets[""] == ONNX_OPSET

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": test_images[0].numpy()}), strict=True))
    _assert_parity(outputs, eager)
    shapes = {value.name: value.shape for value in session.get_inputs()}
    assert shapes["input"] == ["batch_size", 3, "height", "width"]


def test_torch_export_runs_in_torch_inferencer(
    checkpoint: Path, test_images: Any, eager: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Engine(logger=False).export(Fastflow2D(**TINY_MODEL), ExportType.TORCH, tmp_path, ckpt_path=checkpoint)
    assert path == tmp_path / "weights/torch/model.pt"
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    inferencer = TorchInferencer(path, device="cpu")
    with torch.no_grad():
        outputs = inferencer.model(test_images[0])
    np.testing.assert_array_equal(outputs.pred_score.numpy(), eager["pred_score"])
    np.testing.assert_array_equal(outputs.anomaly_map.numpy(), eager["anomaly_map"])


def test_docs_snippet_writes_the_heatmap_of_pytorch(
    openvino_fp32: Path,
    test_images: Any,
    eager: dict[str, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = int(np.argmax(eager["pred_score"]))
    (tmp_path / "weights").symlink_to(openvino_fp32.parents[1], target_is_directory=True)
    (tmp_path / "image.png").symlink_to(test_images[2][index])

    text = (ROOT / "docs/deployment.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "Inferencer" in block)
    monkeypatch.chdir(tmp_path)
    exec(snippet, {})  # noqa: S102 - the documentation's own example
    output = capsys.readouterr().out

    score, anomalous = re.findall(r"score (\S+) anomalous (\S+)", output)[-1]
    assert abs(float(score) - eager["pred_score"][index]) <= SCORE_TOLERANCE
    assert anomalous == str(bool(eager["pred_label"][index]))
    heatmap = np.asarray(Image.open(tmp_path / "heatmap.png"), dtype=np.float64) / 255
    expected = np.clip(eager["anomaly_map"][index, 0], 0, 1)
    assert heatmap.shape == expected.shape
    assert np.abs(heatmap - expected).max() <= MAP_TOLERANCE


def test_int8_without_data_stops_before_exporting(checkpoint: Path, tmp_path: Path) -> None:
    model = Fastflow2D.load_from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"needs a datamodule.*--data"):
        model.to_openvino(tmp_path, compression_type=CompressionType.INT8_PTQ)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_files_and_keeps_the_previous_export(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Fastflow2D.load_from_checkpoint(checkpoint)
    previous = model.to_torch(tmp_path).read_bytes()

    def write_half_then_fail(obj: object, f: Path, **kwargs: object) -> None:
        del obj, kwargs
        Path(f).write_bytes(b"partial")
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        model.to_torch(tmp_path)
    assert [path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()] == [
        Path("weights/torch/model.pt")
    ]
    assert (tmp_path / "weights/torch/model.pt").read_bytes() == previous


def _padim_checkpoint(path: Path) -> Path:
    padim = Padim(backbone="resnet18", pre_trained=False, layers=["layer1"], n_features=8)
    torch.save({"state_dict": padim.state_dict(), "hyper_parameters": {"backbone": "resnet18"}}, path)
    return path


@pytest.mark.parametrize("kind", ["missing", "truncated", "another model's"])
def test_bad_checkpoint_gives_an_error_naming_it_and_writes_nothing(
    kind: str, checkpoint: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.ckpt"
    if kind == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:100_000])
    elif kind == "another model's":
        _padim_checkpoint(bad)
    export_root = tmp_path / "export"
    with pytest.raises((FileNotFoundError, ValueError), match=re.escape(str(bad))):
        Engine(logger=False).export(Fastflow2D(**TINY_MODEL), ExportType.OPENVINO, export_root, ckpt_path=bad)
    assert not export_root.exists() or not any(export_root.rglob("*.*"))


def _as_if_trained(model: Fastflow2D) -> Fastflow2D:
    """Load an untrained model's own weights with the statistics validation would learn, so that it may export."""
    statistics = {"_image_threshold": -0.5, "_pixel_threshold": -0.5, "image_min": -1.0, "image_max": 0.0}
    statistics |= {"pixel_min": -1.0, "pixel_max": 0.0}
    state = model.state_dict()
    state.update({f"post_processor.{name}": torch.tensor(value) for name, value in statistics.items()})
    model.load_state_dict(state)
    return model


# Untrained models at 64x64 with made-up statistics. resnet18 is the trained model above.
CNN_PRESET_SIZES: dict[str, dict[str, Any]] = {"wide_resnet50_2": {"input_size": (64, 64)}}
VIT_PRESET_SIZES: dict[str, dict[str, Any]] = {
    "deit_base_distilled_patch16_384": {"input_size": (64, 64)},
    "cait_m48_448": {},  # runs at 448x448 only
}


@pytest.mark.parametrize("backbone", CNN_PRESET_SIZES)
def test_cnn_presets_export_fp16_weights_with_parity(backbone: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Fastflow2D(backbone=backbone, pre_trained=False, flow_steps=2, **CNN_PRESET_SIZES[backbone])
    model = _as_if_trained(model).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
    path = model.to_openvino(tmp_path, compression_type=CompressionType.FP16)

    fp32_bytes = 4 * sum(tensor.numel() for tensor in model.state_dict().values() if tensor.is_floating_point())
    assert path.with_suffix(".bin").stat().st_size < 0.55 * fp32_bytes
    outputs = _openvino_outputs(path, images, OPENVINO_F32_CONFIG)
    assert np.abs(outputs["pred_score"] - expected.pred_score.numpy()).max() <= SCORE_TOLERANCE
    assert np.abs(outputs["anomaly_map"] - expected.anomaly_map.numpy()).max() <= MAP_TOLERANCE


@pytest.mark.parametrize("backbone", VIT_PRESET_SIZES)
def test_vit_presets_build_and_trace_to_onnx(backbone: str, tmp_path: Path) -> None:
    # The first transformer block only: the backbone's class and the export path are the preset's, at a tenth of
    # the cost.
    options = VIT_PRESET_SIZES[backbone]
    model = Fastflow2D(backbone=backbone, pre_trained=False, flow_steps=2, feature_stages=[0], **options)
    path = _as_if_trained(model).to_onnx(tmp_path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(["anomaly_map"], {"input": np.random.default_rng(0).random((2, 3, 48, 48), np.float32)})
    assert outputs[0].shape == (2, 1, *options.get("input_size", PRESETS[backbone].input_size))
    assert np.isfinite(outputs[0]).all()


def test_stock_cli_int8_export_loses_at_most_one_auroc_point_and_logs_one_line_for_the_float_nodes(
    checkpoint: Path, data_root: Path, test_images: Any, eager: dict[str, np.ndarray], tmp_path: Path
) -> None:
    command = [ANOMALIB, "export", "--model", "Fastflow2D", "--model.pre_trained=false", f"--ckpt_path={checkpoint}"]
    command += ["--export_type=openvino", "--compression_type=INT8_PTQ", f"--export_root={tmp_path}"]
    command += ["--data", "anomalib.data.MVTecAD", f"--data.root={data_root}", "--data.category=brick"]
    command += ["--data.num_workers=0", "--data.train_batch_size=8"]
    result = run(command, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in output
    # NNCF lists every node of the ignored scope; the export holds that list to one line of its own (which the
    # CLI's two log handlers print twice).
    assert "Not adding activation input quantizer" not in output
    assert "ignored nodes were found" not in output
    assert len(set(re.findall(r"INT8: kept (\d+) precision-sensitive nodes in float", output))) == 1

    path = tmp_path / "weights/openvino/model.xml"
    assert "FakeQuantize" in path.read_text()
    outputs = _openvino_outputs(path, test_images[0], OPENVINO_F32_CONFIG)
    labels = test_images[1].int()
    int8_auroc = binary_auroc(torch.from_numpy(outputs["pred_score"]).flatten(), labels)
    assert int8_auroc >= binary_auroc(torch.from_numpy(eager["pred_score"]).flatten(), labels) - 0.01


def test_stock_cli_refuses_to_export_an_untrained_model_and_keeps_the_previous_export(tmp_path: Path) -> None:
    previous = tmp_path / "results" / "weights" / "openvino" / "model.xml"
    previous.parent.mkdir(parents=True)
    previous.write_text("a good export")
    command = [ANOMALIB, "export", "--model", "Fastflow2D", "--model.pre_trained=false", "--export_type=openvino"]
    result = run(command, tmp_path)

    assert result.returncode != 0
    assert "neither trained nor loaded from a checkpoint" in " ".join(result.stderr.split())
    assert "--ckpt_path" in result.stderr
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == [previous]
    assert previous.read_text() == "a good export"


def test_export_of_a_model_trained_without_validation_is_refused(data_root: Path, tmp_path: Path) -> None:
    model = Fastflow2D(**TINY_MODEL)
    engine = Engine(max_epochs=1, limit_val_batches=0, accelerator="cpu", default_root_dir=tmp_path / "train")
    engine.fit(model, datamodule=_datamodule(data_root))
    export_root = tmp_path / "export"

    for export in (model.to_torch, model.to_onnx, model.to_openvino):
        with pytest.raises(RuntimeError, match=r"no thresholds.*--ckpt_path"):
            export(export_root)
    assert not export_root.exists()


def test_stock_cli_export_prints_a_few_lines_without_the_onnx_translation_log(checkpoint: Path, tmp_path: Path) -> None:
    command = [ANOMALIB, "export", "--model", "Fastflow2D", "--model.pre_trained=false", f"--ckpt_path={checkpoint}"]
    result = run([*command, "--export_type=openvino", f"--export_root={tmp_path}"], tmp_path)
    lines = (result.stdout + result.stderr).splitlines()

    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "weights/openvino/model.xml").is_file()
    assert [line for line in lines if "onnxscript" in line or "onnx_ir" in line] == []
    assert len(lines) < 60


def test_onnx_translation_logs_at_the_level_the_user_set(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = Fastflow2D.load_from_checkpoint(checkpoint)
    onnxscript_logger = logging.getLogger("onnxscript")
    onnxscript_logger.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            model.to_onnx(tmp_path)
    finally:
        onnxscript_logger.setLevel(logging.NOTSET)

    assert any(record.name.startswith("onnxscript") for record in caplog.records)
    assert onnxscript_logger.level == logging.NOTSET
    assert logging.getLogger("onnx_ir").level == logging.NOTSET  # restored after the export


# INT8 and bfloat16 parity on photographs: the resnet18 preset (8 flow steps) at 128x128, where quantising the flows
# flipped labels before. The tiny model's random backbone at 64x64 ranks too few images apart to measure ranking.
PHOTO_MODEL: dict[str, Any] = {"backbone": "resnet18", "pre_trained": False, "input_size": (128, 128)}


def _photo_datamodule(root: Path) -> Folder:
    # 16 normal and 16 defective test photographs; half of each become the validation set.
    folders = {"normal_dir": "normal", "normal_test_dir": "test_normal", "abnormal_dir": "abnormal"}
    return Folder(name="photo", root=root, mask_dir="mask", **folders, **LOADING)


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_photo_dataset(
        tmp_path_factory.mktemp("photos"), image_size=(96, 128), num_test_normal=16, num_test_anomalous=16
    )


@pytest.fixture(scope="module")
def photo_checkpoint(photo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed_everything(0)
    root = tmp_path_factory.mktemp("photo_train")
    engine = Engine(max_epochs=3, accelerator="cpu", default_root_dir=root, logger=False, enable_progress_bar=False)
    engine.fit(Fastflow2D(**PHOTO_MODEL), datamodule=_photo_datamodule(photo_root))
    engine.trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"


@pytest.fixture(scope="module")
def photo_test(photo_root: Path, photo_checkpoint: Path) -> dict[str, np.ndarray]:
    """The photographs' test split (images, labels, masks) and eager PyTorch's outputs on it."""
    datamodule = _photo_datamodule(photo_root)
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    images = torch.cat([batch.image for batch in batches])
    model = Fastflow2D.load_from_checkpoint(photo_checkpoint).eval()
    with torch.no_grad():
        outputs = model(images)
    masks = torch.cat([batch.gt_mask for batch in batches]).reshape(len(images), 1, *images.shape[-2:]).float()
    return {
        "images": images.numpy(),
        "labels": torch.cat([batch.gt_label for batch in batches]).int().numpy(),
        # Masks at the anomaly map's size, as the maps are compared with them.
        "masks": torch.nn.functional.interpolate(masks, size=PHOTO_MODEL["input_size"], mode="nearest").int().numpy(),
        **{name: value.numpy() for name, value in outputs._asdict().items() if value is not None},
    }


def _aurocs(outputs: dict[str, np.ndarray], photos: dict[str, np.ndarray]) -> tuple[float, float]:
    """Image and pixel AUROC of ``outputs`` on the photographs' test split."""
    image = binary_auroc(torch.from_numpy(outputs["pred_score"]).flatten(), torch.from_numpy(photos["labels"]))
    pixel = binary_auroc(
        torch.from_numpy(outputs["anomaly_map"]).flatten(), torch.from_numpy(photos["masks"]).flatten()
    )
    return float(image), float(pixel)


def _marked(path: Path) -> list[openvino.Node]:
    """The nodes of an IR that carry the float32 mark (``precise``, saved as ``DisablePrecisionConversion``)."""
    graph = openvino.Core().read_model(path).get_ordered_ops()
    return [node for node in graph if any(key.startswith("DisablePrecisionConversion") for key in node.get_rt_info())]


@pytest.mark.parametrize("compression", [CompressionType.INT8_PTQ, CompressionType.INT8_ACQ])
def test_int8_keeps_the_ranking_and_the_labels_on_photographs(
    compression: CompressionType,
    photo_root: Path,
    photo_checkpoint: Path,
    photo_test: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    path = Fastflow2D.load_from_checkpoint(photo_checkpoint).to_openvino(
        tmp_path, compression_type=compression, datamodule=_photo_datamodule(photo_root)
    )
    assert "FakeQuantize" in path.read_text()
    # The precision-sensitive nodes were NNCF's ignored scope: none of them reads a quantised value.
    sources = {source.get_node().get_type_name() for node in _marked(path) for source in node.input_values()}
    assert sources
    assert "FakeQuantize" not in sources
    image_auroc, pixel_auroc = _aurocs(photo_test, photo_test)
    assert image_auroc > 0.9  # the eager model ranks the photographs well, so a lost ranking shows
    for config in (OPENVINO_F32_CONFIG, {}):
        outputs = _openvino_outputs(path, torch.from_numpy(photo_test["images"]), config)
        int8_image_auroc, int8_pixel_auroc = _aurocs(outputs, photo_test)
        assert int8_image_auroc >= image_auroc - 0.01, config
        assert int8_pixel_auroc >= pixel_auroc - 0.01, config
        assert (outputs["pred_label"] == photo_test["pred_label"]).sum() >= 15, config


@pytest.mark.skipif(
    openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") != openvino.Type.bf16,
    reason="OpenVINO's CPU default is float32 here: there is no bfloat16 default to keep in step with PyTorch",
)
def test_cpu_default_bfloat16_keeps_the_flows_and_the_map_in_float32(
    photo_checkpoint: Path, photo_test: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = Fastflow2D.load_from_checkpoint(photo_checkpoint).to_openvino(tmp_path)
    compiled = openvino.Core().compile_model(path, "CPU")  # the stock inferencer's config: none
    layers = [node.get_rt_info() for node in compiled.get_runtime_model().get_ordered_ops()]
    runtime = {
        name: layer["runtimePrecision"].astype(str)
        for layer in layers
        for name in layer["originalLayersNames"].astype(str).split(",")
    }
    # The couplings' soft clamp and exp, the latent squares, their mean and exp, and the three scales' map resizes
    # (two matrix products each).
    graph = openvino.Core().read_model(path).get_ordered_ops()
    sensitive = [node for node in graph if node.get_type_name() in {"Tanh", "Exp", "Power", "ReduceMean", "MatMul"}]
    assert len([node for node in sensitive if node.get_type_name() == "MatMul"]) == 6
    assert {runtime[node.get_friendly_name()] for node in sensitive} == {"f32"}
    # The subnets' and the backbone's convolutions, almost all of the arithmetic, still run in bfloat16.
    convolutions = [
        layer["runtimePrecision"].astype(str) for layer in layers if layer["layerType"].astype(str) == "Convolution"
    ]
    assert convolutions.count("bf16") >= 60

    outputs = {output.any_name: value for output, value in compiled(photo_test["images"]).items()}
    np.testing.assert_array_equal(outputs["pred_label"], photo_test["pred_label"])
    assert np.abs(outputs["pred_score"] - photo_test["pred_score"]).max() <= 1e-2


def test_fp16_keeps_the_permutations_precise_and_matches_pytorch_at_the_cpu_default(
    photo_checkpoint: Path, photo_test: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model = Fastflow2D.load_from_checkpoint(photo_checkpoint)
    path = model.to_openvino(tmp_path, compression_type=CompressionType.FP16)
    # FP16 weights reach each convolution through a Convert; every coupling's 0/1 permutation blocks are still
    # marked: from each half to each of the next coupling's halves (four), to the whole latent after the last (two).
    convolutions = [node for node in _marked(path) if node.get_type_name() == "Convolution"]
    assert len(convolutions) == (4 * (model.model.config.flow_steps - 1) + 2) * len(model.model.flows)
    assert {node.input_value(1).get_node().get_type_name() for node in convolutions} == {"Convert"}

    # The CPU default, and bfloat16 (the default on CPUs with AVX512-BF16 or AMX, whichever CPU runs the test).
    for config in ({}, {"INFERENCE_PRECISION_HINT": "bf16"}):
        compiled = openvino.Core().compile_model(path, "CPU", config)
        layers = [layer.get_rt_info() for layer in compiled.get_runtime_model().get_ordered_ops()]
        runtime = {
            name: layer["runtimePrecision"].astype(str)
            for layer in layers
            for name in layer["originalLayersNames"].astype(str).split(",")
        }
        assert "bf16" not in {runtime[node.get_friendly_name()] for node in convolutions}, config
        outputs = {output.any_name: value for output, value in compiled(photo_test["images"]).items()}
        np.testing.assert_array_equal(outputs["pred_label"], photo_test["pred_label"], err_msg=str(config))
        assert np.abs(outputs["pred_score"] - photo_test["pred_score"]).max() <= 1e-2, config


class _Output(NamedTuple):
    """An output of a compiled OpenVINO model, as a key of its results."""

    any_name: str


def test_int8_acq_measures_anomalib_metrics_on_the_datamodules_batches() -> None:
    # Two images at 32x48 whose model maps are 16x16: the masks are compared at the maps' size.
    gt_mask = torch.zeros(2, 32, 48, dtype=torch.bool)
    gt_mask[1, :16] = True
    batch = ImageBatch(image=torch.rand(2, 3, 32, 48), gt_label=torch.tensor([0, 1]), gt_mask=gt_mask)
    anomaly_map = np.zeros((2, 1, 16, 16), np.float32)
    anomaly_map[1, 0, :8] = 1.0

    def compiled(images: np.ndarray) -> dict[_Output, np.ndarray]:
        assert images.shape == (2, 3, 32, 48)
        outputs = {"pred_score": np.array([[0.2], [0.9]], np.float32), "pred_label": np.array([[False], [True]])}
        outputs |= {"anomaly_map": anomaly_map, "pred_mask": anomaly_map >= 0.5}
        return {_Output(name): value for name, value in outputs.items()}

    for metric in (F1Score(fields=["pred_label", "gt_label"]), AUROC(fields=["anomaly_map", "gt_mask"])):
        # NNCF calls the validation once per model and once per batch: each call starts the metric afresh.
        assert _metric_on(metric, compiled, [batch]) == _metric_on(metric, compiled, [batch]) == 1.0


def test_int8_acq_without_validation_images_or_with_a_metric_name_says_what_to_pass(demo_root: Path) -> None:
    image = openvino.opset13.parameter([-1, 3, -1, -1], openvino.Type.f32, name="input")
    model = openvino.Model([openvino.opset13.relu(image)], [image])
    datamodule = MVTecAD(root=demo_root, category="brick", num_workers=0, val_split_mode="none")
    with pytest.raises(ValueError, match=r"no validation images.*INT8_PTQ"):
        Fastflow2DExportMixin._accuracy_control_quantization_ov(model, datamodule)
    with pytest.raises(TypeError, match=r"metric object.*--metric anomalib.metrics.AUROC"):
        Fastflow2DExportMixin._accuracy_control_quantization_ov(model, datamodule, metric="AUROC")
