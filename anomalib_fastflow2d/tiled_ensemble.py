# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's tiled ensemble with Fastflow2D: one model per tile position, trained and evaluated from one config.

anomalib 2.7 ships the pipeline (:mod:`anomalib.pipelines.tiled_ensemble`: train every tile position, predict,
merge the tiles, smooth the seams, post-processing statistics, normalisation, thresholds, metrics) but no command
for it and no config in its wheel. Run as ``python -m anomalib_fastflow2d.tiled_ensemble --config FILE``, this
module runs the pipeline's own stages, unpatched, with three differences that its ``Pipeline.run`` needs for
Fastflow2D to finish:

- Every stage builds its models with ``get_model(model_args, pre_processor=...)``, which adds the pre-processor to
  the config's ``init_args``; OmegaConf refuses a module there, so any ``init_args`` fail, for every model. The
  model section is handed over as an OmegaConf node that allows objects.
- The metrics stage builds a model only for its evaluator, at ``input_size (10, 10)``, below Fastflow2D's minimum
  (the backbone's coarsest stride, 16). Here it builds it at the tile size, as every other stage does.
- ``Pipeline.run`` logs a failed stage and runs the next one on nothing, and exits 0. Here a failed stage stops the
  run, and the command exits 1.

Each tile model's ``predict`` writes its own tile's scores to ``predictions.csv``; the run ends by writing the
merged, normalised and thresholded image scores there instead.

Examples:
    >>> import yaml
    >>> config = yaml.safe_load(open("configs/tiled_ensemble/demo.yaml"))  # doctest: +SKIP
    >>> result = run_tiled_ensemble(config)  # doctest: +SKIP
    >>> sorted(result.metrics)  # doctest: +SKIP
    ['image_AUROC', 'image_F1Score', 'pixel_AUROC', 'pixel_F1Score']
"""

import argparse
import csv
import logging
import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator
from anomalib.pipelines.components.base import Runner
from anomalib.pipelines.components.runners.parallel import ParallelExecutionError
from anomalib.pipelines.components.runners.serial import SerialExecutionError
from anomalib.pipelines.tiled_ensemble import EvalTiledEnsemble, TrainTiledEnsemble
from anomalib.pipelines.tiled_ensemble.components import MetricsCalculationJobGenerator
from anomalib.pipelines.tiled_ensemble.components.metrics_calculation import MetricsCalculationJob
from anomalib.pipelines.tiled_ensemble.components.utils import NormalizationStage, ThresholdingStage
from anomalib.pipelines.tiled_ensemble.components.utils.helper_functions import (
    get_ensemble_model,
    get_threshold_values,
)
from anomalib.pipelines.types import PREV_STAGE_RESULT
from omegaconf import OmegaConf

from .predictions import PREDICTIONS_FILE, PredictionTable

log = logging.getLogger(__name__)

REQUIRED_KEYS = (
    "seed",
    "accelerator",
    "default_root_dir",
    "tiling.image_size",
    "tiling.tile_size",
    "tiling.stride",
    "normalization_stage",
    "thresholding_stage",
    "data.class_path",
    "data.init_args.val_split_mode",
    "data.init_args.test_split_mode",
    "SeamSmoothing.apply",
    "TrainModels.model.class_path",
)
"""The keys anomalib's tiled-ensemble stages read without a default (``configs/tiled_ensemble/demo.yaml`` has each)."""


@dataclass(frozen=True)
class TiledEnsembleResult:
    """What a tiled-ensemble run leaves.

    Args:
        root_dir: The run's folder: ``weights/lightning/`` (one checkpoint per tile position and ``stats.json``),
            ``images/``, ``metric_results.csv`` and ``predictions.csv``.
        metrics: The test metrics of the merged predictions, by name.
    """

    root_dir: Path
    metrics: dict[str, float]


class TileSizedMetricsJobGenerator(MetricsCalculationJobGenerator):
    """anomalib's metrics stage, with its evaluator taken from a model built at the tile size.

    Args:
        accelerator: Device the metrics are computed on.
        root_dir: The run's folder, which receives ``metric_results.csv``.
        model_args: The config's ``TrainModels.model``.
        tile_size: ``tiling.tile_size``: each tile model's input size.
    """

    def __init__(self, accelerator: str, root_dir: Path, model_args: Any, tile_size: int | Sequence[int]) -> None:  # noqa: ANN401 - an OmegaConf node
        super().__init__(accelerator=accelerator, root_dir=root_dir, model_args=model_args)
        self.tile_size = tile_size if isinstance(tile_size, int) else (int(tile_size[0]), int(tile_size[1]))

    def generate_jobs(
        self,
        args: dict | None = None,
        prev_stage_result: PREV_STAGE_RESULT = None,
    ) -> Generator[MetricsCalculationJob, None, None]:
        """Yield the one job that computes the metrics of the merged predictions.

        Raises:
            TypeError: The model has no ``Evaluator``.
        """
        del args
        model = get_ensemble_model(
            self.model_args, input_size=self.tile_size, normalization_stage=NormalizationStage.IMAGE
        )
        if not isinstance(model.evaluator, Evaluator):
            msg = "The tiled ensemble's metrics come from the model's Evaluator: remove `evaluator` from init_args."
            raise TypeError(msg)
        yield MetricsCalculationJob(
            accelerator=self.accelerator,
            predictions=prev_stage_result,
            root_dir=self.root_dir,
            evaluator=model.evaluator,
        )


def run_tiled_ensemble(config: dict[str, Any]) -> TiledEnsembleResult:
    """Train a tiled ensemble, then evaluate it on the test split, with anomalib's own stages.

    Args:
        config: anomalib's tiled-ensemble config, as read from YAML (see ``configs/tiled_ensemble/demo.yaml``).

    Returns:
        The run's folder and the test metrics.

    Raises:
        ValueError: A key the stages read is missing, the test split is off, or the model sets ``input_size``,
            which the tile size decides.
        SerialExecutionError: A stage failed (its jobs' errors are logged); ``ParallelExecutionError`` on CUDA.
    """
    args = _checked(config)
    train = TrainTiledEnsemble()
    _run_stages(train._setup_runners(args), args)  # noqa: SLF001 - the pipeline's own stages
    evaluation = EvalTiledEnsemble(train.root_dir)
    stages = evaluation._setup_runners(args)  # noqa: SLF001
    for stage in stages:
        if isinstance(stage.generator, MetricsCalculationJobGenerator):
            stage.generator = TileSizedMetricsJobGenerator(
                args["accelerator"], evaluation.root_dir, args["TrainModels"]["model"], args["tiling"]["tile_size"]
            )
    *_, predictions, metrics = _run_stages(stages, args)
    _write_predictions(predictions, args, evaluation.root_dir)
    return TiledEnsembleResult(root_dir=evaluation.root_dir, metrics=dict(metrics))


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its model section as an OmegaConf node that may hold the pre-processor the stages add.

    Raises:
        ValueError: See :func:`run_tiled_ensemble`.
    """
    missing = [key for key in REQUIRED_KEYS if not _has(config, key.split("."))]
    if missing:
        msg = f"The tiled-ensemble config lacks {missing}; configs/tiled_ensemble/demo.yaml shows each key."
        raise ValueError(msg)
    if config["data"]["init_args"]["test_split_mode"] == "none":
        msg = "The tiled ensemble is evaluated on the test split: set data.init_args.test_split_mode to from_dir."
        raise ValueError(msg)
    model = config["TrainModels"]["model"]
    if "input_size" in (model.get("init_args") or {}):
        msg = (
            "tiling.tile_size is each tile model's input size: remove input_size from TrainModels.model.init_args "
            "(tiling.image_size is the frames' size)."
        )
        raise ValueError(msg)
    models = {**config["TrainModels"], "model": OmegaConf.create(model, flags={"allow_objects": True})}
    return {**config, "TrainModels": models}


def _has(config: Any, keys: list[str]) -> bool:  # noqa: ANN401 - nested YAML
    return not keys or (isinstance(config, dict) and keys[0] in config and _has(config[keys[0]], keys[1:]))


def _run_stages(stages: list[Runner], args: dict[str, Any]) -> list[Any]:
    """Run the stages in order, each on the previous one's results, and stop at the first that fails.

    ``Pipeline.run`` would log a failed stage and go on; a stage's runner raises once its jobs have run.

    Returns:
        Each stage's results.
    """
    results: list[Any] = [None]
    for stage in stages:
        results.append(stage.run(args.get(stage.generator.job_class.name) or {}, results[-1]))
    return results[1:]


def _write_predictions(predictions: list[ImageBatch], args: dict[str, Any], root_dir: Path) -> None:
    """Write the merged image scores, labels and the image threshold to ``predictions.csv`` in the run's folder.

    The columns are :class:`~anomalib_fastflow2d.predictions.PredictionTable`'s. The threshold is the one the
    thresholding stage applied to the merged scores; with ``thresholding_stage: tile`` each tile model's own
    threshold decided its tile's label, so the column stays empty.
    """
    threshold = ""
    if ThresholdingStage(args["thresholding_stage"]) is ThresholdingStage.IMAGE:
        image_threshold, _ = get_threshold_values(NormalizationStage(args["normalization_stage"]), root_dir)
        threshold = f"{image_threshold:g}"
    path = root_dir / PREDICTIONS_FILE
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(PredictionTable.COLUMNS)
        for batch in predictions:
            scores = batch.pred_score.flatten().tolist() if batch.pred_score is not None else []
            labels = batch.pred_label.flatten().tolist() if batch.pred_label is not None else [None] * len(scores)
            for image_path, score, label in zip(batch.image_path or [], scores, labels, strict=True):
                writer.writerow((image_path, f"{score:.6f}", "" if label is None else int(label), threshold))
    log.info("Wrote the merged scores of the tiled ensemble to %s.", path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train and test a tiled ensemble; exit 2 on a bad config, 1 on a failed stage."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_fastflow2d.tiled_ensemble",
        description="Train and test anomalib's tiled ensemble (one model per tile position) from one YAML config.",
    )
    parser.add_argument("--config", type=Path, required=True, help="e.g. configs/tiled_ensemble/demo.yaml")
    options = parser.parse_args(argv)
    if not options.config.is_file():
        parser.error(f"no such file: {options.config}")
    try:
        result = run_tiled_ensemble(yaml.safe_load(options.config.read_text(encoding="utf-8")))
    except ValueError as error:
        parser.error(str(error))
    except (SerialExecutionError, ParallelExecutionError) as error:
        sys.stderr.write(f"error: {error}; the log above says why.\n")
        return 1
    # The metrics stage printed the metrics.
    sys.stdout.write(f"Checkpoints, images, metric_results.csv and {PREDICTIONS_FILE} in {result.root_dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
