# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Measured records, their ratios, markdown tables and the JSON report every script writes."""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import Environment


@dataclass(frozen=True)
class Record:
    """The measures of one model (or runtime) in one mode.

    Attributes:
        model: What was measured, e.g. ``"Fastflow2D"`` or ``"Fastflow2D / Fastflow"``.
        mode: How it was measured, e.g. ``"eager_batch1"``.
        values: Each measure's value, by measure name.
        details: What explains the values but is no measure (a flag, an error message, a loss curve); neither
            tabulated nor divided. Defaults to none.
    """

    model: str
    mode: str
    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Flat record: ``{"model": ..., "mode": ..., measure: value, ..., detail: value, ...}``."""
        return {"model": self.model, "mode": self.mode, **self.values, **self.details}


def non_finite(records: Sequence[Record]) -> list[tuple[str, str, str]]:
    """``(model, mode, measure)`` of every value that is NaN or infinite: a measurement that failed."""
    return [
        (record.model, record.mode, measure)
        for record in records
        for measure, value in record.values.items()
        if not math.isfinite(value)
    ]


def ratios(records: Sequence[Record], numerator: str, denominator: str) -> list[Record]:
    """``numerator / denominator`` of every measure of every mode, as records of the model ``"A / B"``.

    A zero denominator gives NaN rather than an error, so that the table still shows the other ratios.
    """
    by_key = {(record.model, record.mode): record.values for record in records}
    modes = dict.fromkeys(record.mode for record in records)
    return [
        Record(
            f"{numerator} / {denominator}",
            mode,
            {
                measure: _ratio(value, by_key[denominator, mode][measure])
                for measure, value in by_key[numerator, mode].items()
            },
        )
        for mode in modes
    ]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Sequence[bool] = ()) -> str:
    """A markdown table of formatted cells; columns are left-aligned unless ``right_aligned`` says otherwise."""
    alignment = [right_aligned[index] if index < len(right_aligned) else False for index in range(len(header))]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "".join("---:|" if right else "---|" for right in alignment),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def measure_table(records: Sequence[Record], labels: Mapping[str, str]) -> str:
    """One row per mode and measure (in the order of ``labels``), one column per model."""
    models = list(dict.fromkeys(record.model for record in records))
    by_key = {(record.model, record.mode): record.values for record in records}
    rows = [
        [mode, label, *(format_number(by_key[model, mode][measure]) for model in models)]
        for mode in dict.fromkeys(record.mode for record in records)
        for measure, label in labels.items()
        if measure in by_key[models[0], mode]
    ]
    return markdown_table(["mode", "measure", *models], rows, [False, False, *[True] * len(models)])


def format_number(value: float) -> str:
    """Four significant digits, or whole thousands-separated numbers from 10,000 on."""
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"  # noqa: PLR2004 - switch to thousands


def write_report(
    path: Path, environment: Environment, records: Sequence[Record], sections: Mapping[str, Any] | None = None
) -> None:
    """Write the run's JSON: the environment, any script-specific ``sections``, then the records."""
    report = {**environment.as_json(), **(sections or {}), "records": [record.as_json() for record in records]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
