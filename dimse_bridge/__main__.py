"""`python -m dimse_bridge`: the same as the `webpacs-bridge` command."""

from __future__ import annotations

import sys

from dimse_bridge.cli import main

sys.exit(main())
