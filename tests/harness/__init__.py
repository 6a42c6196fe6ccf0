"""One harness for tests and benchmarks: real processes of ours and of the engines, started
one way each.

- :mod:`~tests.harness.processes`  the checkout, a child's environment, the CLI command,
                                   ``free_port`` for programs that cannot bind 0 themselves
- :mod:`~tests.harness.server`     the local Everest server (:class:`ServerProcess`)
- :mod:`~tests.harness.relay`      the relay (:class:`RelayProcess`)
- :mod:`~tests.harness.runner`     the session runner, and :class:`FakeRunner` (an SSH peer)
- the engines (a private dockerd, sshd, one-node Slurm) are in ``tests/fixtures/``
  (``docker_engine``, ``sshd``, ``slurm``) beside their fixtures

Everything here is a plain class or function (no pytest fixtures), so benchmarks use it as it
is; the fixtures over it are in ``tests/fixtures/``. A test that starts any of these requests
the ``real_components`` fixture (directly or through another fixture), which is how it is
marked end-to-end.
"""
