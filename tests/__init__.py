# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of anomalib-fastflow2d; the files mirror the package modules."""
