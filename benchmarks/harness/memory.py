# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Peak memory since a reset: resident set on CPU, allocated memory on CUDA."""

import resource
import sys
from pathlib import Path

import torch

MIB = 2**20
"""Bytes in a MiB."""

_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Peak memory since the last :meth:`reset`: resident set (CPU, Linux) or allocated CUDA memory.

    On CPU, Linux resets the process's high-water mark through ``/proc/self/clear_refs``; elsewhere the peak is
    the process's lifetime peak, as :attr:`kind` says.

    Args:
        device: The device whose memory is measured.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = device.type == "cuda" or _CLEAR_REFS.exists()

    @property
    def kind(self) -> str:
        """What :meth:`peak_mib` measures, for the JSON."""
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        return "peak resident set size" + ("" if self.resettable else " over the process lifetime")

    def reset(self) -> None:
        """Start a new peak."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            _CLEAR_REFS.write_text("5", encoding="ascii")

    def peak_mib(self) -> float:
        """The peak since the last reset, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        if self.resettable:
            return self._status_kib("VmHWM:") / 1024
        # ru_maxrss is in bytes on macOS, in KiB elsewhere.
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB

    @staticmethod
    def _status_kib(field: str) -> int:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))
