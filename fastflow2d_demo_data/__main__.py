# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""``python -m fastflow2d_demo_data``: the ``fastflow2d-demo-data`` command."""

import sys

from fastflow2d_demo_data import main

sys.exit(main())
