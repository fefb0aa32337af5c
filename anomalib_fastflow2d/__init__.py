# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Fastflow2D: FastFlow anomaly detection with 2D normalizing flows, as a plugin model for anomalib.

Importing the package registers the model with anomalib, so ``anomalib train --model Fastflow2D`` and
``get_model("Fastflow2D")`` work.

Paper:
    FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, Yu et al. 2021,
    https://arxiv.org/abs/2111.07677
"""

from . import seeding
from .anomaly_map import AnomalyMapGenerator, ImageScore
from .backbones import BackboneWeightsUnavailableError, FeatureExtractor
from .explain import Explanation, explain
from .flows import Flow2D
from .lightning_model import Fastflow2D
from .loss import Fastflow2DLoss
from .presets import PRESETS, BackboneKind, BackbonePreset, FeatureNorm, FlowConfig, resolve, resolve_preset
from .registration import register
from .torch_model import Fastflow2DModel

register()
seeding.install_if_loaded()

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AnomalyMapGenerator",
    "BackboneKind",
    "BackbonePreset",
    "BackboneWeightsUnavailableError",
    "Explanation",
    "Fastflow2D",
    "Fastflow2DLoss",
    "Fastflow2DModel",
    "FeatureExtractor",
    "FeatureNorm",
    "Flow2D",
    "FlowConfig",
    "ImageScore",
    "explain",
    "register",
    "resolve",
    "resolve_preset",
]
