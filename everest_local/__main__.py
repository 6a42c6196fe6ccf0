"""``python -m everest_local [--host H] [--port P] [--data-dir D] [--apps ...] [--slots N]``."""

import sys

from everest_local.cli import main

sys.exit(main())
