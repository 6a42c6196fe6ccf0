"""Deprecated name of :mod:`launcher.relay.plugin`, kept for one release so that
``--plugin launcher.relay_plugin`` in existing deploy files and server configs still loads
the relay. Name ``launcher.relay.plugin`` instead."""

import warnings

from launcher.relay.plugin import SessionRelayPlugin, setup

__all__ = ["SessionRelayPlugin", "setup"]

warnings.warn("launcher.relay_plugin is now launcher.relay.plugin; the old name goes in the "
              "next release", DeprecationWarning, stacklevel=2)
