"""``python -m launcher.relay``: the relay as a service, without the rest of the CLI."""

import sys

from launcher.relay.service import main

sys.exit(main())
