"""``python -m launcher.cli``: the ``everest-jupyter`` command."""

import sys

from launcher.cli.root import main

sys.exit(main())
