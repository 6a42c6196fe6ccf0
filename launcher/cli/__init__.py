"""The ``everest-jupyter`` command line.

- :mod:`~launcher.cli.root`     the root parser, common options, error handling, exit codes
- :mod:`~launcher.cli.session`  sessions: ``launch``, ``sessions``, ``stop``, ``ui``,
                                ``server start``, ``relay``
- :mod:`~launcher.cli.everest`  the Everest client: ``login``, ``apps``, ``jobs``, ``files``, ...
- :mod:`~launcher.cli.output`   tables and JSON for the terminal
- ``__main__``                  ``python -m launcher.cli``

The local server's own subcommands (``server``) come from :mod:`everest_local.cli`.
"""

from launcher.cli.root import build_parser, main

__all__ = ["build_parser", "main"]
