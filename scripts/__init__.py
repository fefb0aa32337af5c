# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Scripts that make the README's figures and numbers from a real training run on the demo data."""
