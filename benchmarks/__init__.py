# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Benchmark scripts, run from the repository root (``python benchmarks/speed.py``); a package so tests import them."""
