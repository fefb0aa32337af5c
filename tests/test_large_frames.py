# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""A full-resolution model (1,024 px frames, trained on crops) through the stock export, against eager PyTorch.

The score differences these tests log (``pytest tests/test_large_frames.py --log-cli-level=INFO``) are the ones in
``docs/deployment.md``, "Large frames".
"""

import logging
from pathlib import Path

import numpy as np
import onnxruntime
import openvino
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from PIL import Image

from anomalib_fastflow2d import Fastflow2D
from anomalib_fastflow2d.export import OPENVINO_F32_CONFIG
from fastflow2d_demo_data import generate_large_frame_dataset

FRAME = (1024, 1024)
"""The frames' size and the model's ``input_size``: scored at full resolution."""

LARGE_MODEL = {"backbone": "resnet18", "pre_trained": False, "flow_steps": 2, "input_size": FRAME}
LARGE_MODEL |= {"train_crop_size": (256, 256)}
"""Crop mode keeps training at a 256 px frame's cost; validation and export see whole frames."""

SCORE_TOLERANCE = 5e-3
"""Largest normalised score difference from PyTorch at float32 (the f32 hint, and ONNX Runtime).

Looser than the 1e-3 of the small models in ``test_export.py``: the exported graph standardises each frame's features
in one float32 reduction over all their values (4.2 million at 1,024 px), which rounds more than PyTorch's.
"""

CPU_DEFAULT_SCORE_TOLERANCE = 1e-2
"""The same under OpenVINO's CPU default, which is bfloat16 on CPUs with AVX512-BF16 or AMX (docs/deployment.md)."""

MAP_TOLERANCE = 1e-2
"""Largest normalised anomaly-map difference at float32."""

log = logging.getLogger(__name__)

pytestmark = pytest.mark.slow  # one epoch on 1,024 px frames and two exports: a few minutes on 2 cores


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> MVTecAD:
    """Four normal training frames; two normal and two defective test frames, half of each kind for validation."""
    root = generate_large_frame_dataset(
        tmp_path_factory.mktemp("large_frames"), frame_size=FRAME, num_train=4, num_test_normal=2, num_test_anomalous=2
    )
    # Thresholds come from the validation half, so no test frame's score sits on one.
    return MVTecAD(
        root=root,
        category="brick",
        train_batch_size=4,
        eval_batch_size=1,
        num_workers=0,
        val_split_mode="from_test",
        val_split_ratio=0.5,
        seed=0,
    )


@pytest.fixture(scope="module")
def engine(datamodule: MVTecAD, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    seed_everything(0)
    engine = Engine(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path_factory.mktemp("large_train"),
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(Fastflow2D(**LARGE_MODEL), datamodule=datamodule)
    return engine


@pytest.fixture(scope="module")
def frames(engine: Engine, datamodule: MVTecAD) -> dict[str, np.ndarray]:
    """The test split's frames ``(N, H, W, 3)`` in ``[0, 1]``, as ``OpenVINOInferencer`` reads them, and PyTorch's
    outputs for them."""
    paths = sorted(datamodule.test_data.samples.image_path)
    images = np.stack([read_image(path) for path in paths]).astype(np.float32)
    model = engine.model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    eager = {name: value.numpy() for name, value in outputs._asdict().items() if value is not None}
    return {"images": images, **eager}


def _score_difference(outputs: dict[str, np.ndarray], eager: dict[str, np.ndarray]) -> float:
    np.testing.assert_array_equal(outputs["pred_label"].reshape(-1), eager["pred_label"].reshape(-1))
    return float(np.abs(outputs["pred_score"].reshape(-1) - eager["pred_score"].reshape(-1)).max())


def test_training_on_crops_of_large_frames_gives_full_resolution_maps(frames: dict[str, np.ndarray]) -> None:
    assert frames["anomaly_map"].shape == (2, 1, *FRAME)
    # Parity only means something if the two test frames get different labels.
    assert sorted(frames["pred_label"].reshape(-1).tolist()) == [False, True]


def test_openvino_export_at_a_fixed_1024_px_input_matches_pytorch(
    engine: Engine, frames: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = engine.export(engine.model, ExportType.OPENVINO, tmp_path, input_size=FRAME)
    assert str(openvino.Core().read_model(path).input(0).partial_shape) == f"[?,3,{FRAME[0]},{FRAME[1]}]"

    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes its compile cache to ./openvino_cache
    differences = {}
    for name, config in {"f32 hint": OPENVINO_F32_CONFIG, "CPU default": None}.items():
        inferencer = OpenVINOInferencer(path, device="CPU", config=config)
        predictions = [inferencer.predict(image) for image in frames["images"]]
        outputs = {
            field: np.concatenate([getattr(prediction, field) for prediction in predictions])
            for field in ("pred_score", "pred_label", "anomaly_map")
        }
        assert outputs["anomaly_map"].shape == frames["anomaly_map"].shape
        differences[name] = _score_difference(outputs, frames)
        if name == "f32 hint":
            assert np.abs(outputs["anomaly_map"] - frames["anomaly_map"]).max() <= MAP_TOLERANCE
    default_precision = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    log.info("OpenVINO IR vs PyTorch, max |score diff|: %s (CPU default: %s)", differences, default_precision)
    assert differences["f32 hint"] <= SCORE_TOLERANCE
    assert differences["CPU default"] <= CPU_DEFAULT_SCORE_TOLERANCE


def test_onnx_export_with_dynamic_height_and_width_matches_pytorch(
    engine: Engine, frames: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = engine.export(engine.model, ExportType.ONNX, tmp_path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch_size", 3, "height", "width"]
    names = [output.name for output in session.get_outputs()]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
        return dict(zip(names, session.run(None, {"input": batch}), strict=True))

    difference = _score_difference(run(frames["images"]), frames)
    log.info("ONNX Runtime vs PyTorch, max |score diff|: %.1e", difference)
    assert difference <= SCORE_TOLERANCE
    # Another frame size is resized to the model's input_size inside the graph: the maps come out at 1,024 px.
    wide = np.asarray(Image.fromarray(np.uint8(frames["images"][0] * 255)).resize((1280, 768)), np.float32) / 255
    assert run(wide[None])["anomaly_map"].shape == (1, 1, *FRAME)
