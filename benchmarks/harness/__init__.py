# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""What the benchmark scripts share, written once so that every script times, records and reports alike.

- :mod:`~benchmarks.harness.timing`: interleaved timing of several callables.
- :mod:`~benchmarks.harness.memory`: peak memory since a reset, CPU or CUDA.
- :mod:`~benchmarks.harness.records`: measured records, ratios, markdown tables and the JSON report.
- :mod:`~benchmarks.harness.environment`: seed, versions, machine and commit id of a run.
- :mod:`~benchmarks.harness.adapters`: the models under test (Fastflow2D and anomalib's Fastflow) behind one
  interface, and the flow settings they share.
- :mod:`~benchmarks.harness.settings`: how long, on what data and on which device ``speed.py`` measures.
- :mod:`~benchmarks.harness.training`: the ``train`` and ``test`` modes, epochs timed by a Lightning callback.
- :mod:`~benchmarks.harness.modes`: every side-by-side mode of ``speed.py`` (training and test, eager, training
  step, OpenVINO) in one call.
"""
