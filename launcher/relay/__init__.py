"""The session relay: the rendezvous between a session's job and its user, and the far end
of its tunnel. A service of its own (``python -m launcher.relay``, ``deploy/``), or a plugin
of the local server (``--plugin launcher.relay.plugin``).

What clients import (no tornado, no asyncssh):

- :mod:`~launcher.relay.state`          a relay session's states, their one transition
                                        table, and why a runner stopped
- :mod:`~launcher.relay.deadlines`      when a session ends (its runner's report), and the
                                        warning banner its pages get
- :mod:`~launcher.relay.options`        checks of a session's options (default URL, prefix)
- :mod:`~launcher.relay.client`         the relay's REST API as a Python client

The service, bottom up:

- :mod:`~launcher.relay.config`         every setting, declared once (traitlets, with help)
- :mod:`~launcher.relay.store`          sessions, tickets and keys in SQLite (versioned)
- :mod:`~launcher.relay.workspaces`     users' workspaces: the store interface and its folder
                                        store (working copies, snapshots, quota)
- :mod:`~launcher.relay.auth`           users by their Everest token, checked against Everest
- :mod:`~launcher.relay.sign_in`        the page's sign-in: throttled per browser address, and
                                        that address signed for the local server
- :mod:`~launcher.relay.ssh`            the SSH server: enrolled keys, their virtual forwards
- :mod:`~launcher.relay.sftp`           a session's workspace over SFTP on that connection
- :mod:`~launcher.relay.websocket`      the same SSH server inside a WebSocket (/api/tunnel)
- :mod:`~launcher.relay.handlers`       what every HTTP handler shares: JSON errors, the caller
- :mod:`~launcher.relay.api`            the session API's handlers and the page
- :mod:`~launcher.relay.workspace_api`  the workspace API (list, history, zip download,
                                        upload, delete)
- :mod:`~launcher.relay.openapi`        their OpenAPI description (``/api/openapi.json``)
- :mod:`~launcher.relay.proxy`          every session under ``/session/<id>/`` (or its own
                                        host) through its tunnel
- :mod:`~launcher.relay.app`            the route table: every URL and its handler
- :mod:`~launcher.relay.service`        :class:`~launcher.relay.service.Relay`: the above in
                                        one asyncio process; ``serve`` and ``run``
- :mod:`~launcher.relay.plugin`         the relay inside the local server, and the
                                        ``jupyter-session`` web-form hooks
- ``__main__``                          ``python -m launcher.relay``

Nothing here imports upward (``launcher.cli``, ``launcher.hub``, ``launcher.kernels``); this
package imports only ``everest_app`` of ours (``python -m tests.tools.layers`` checks).
"""
