"""Remote kernels as Everest jobs: a kernel provisioner for any JupyterLab (issue 21).

A kernelspec whose metadata names the ``everest`` provisioner starts its kernel as an
Everest job (``jupyter-session`` in kernel mode, ``agent_scripts/runner_kernel.py``) and
presents the kernel's five ZMQ ports as ports on this machine, bridged through the relay,
so jupyter_server's kernel manager works unchanged (``docs/kernels.md``).

- :mod:`~launcher.kernels.bridge`       five local ports, each bridged to the kernel's own
                                        through the relay (an upgraded HTTP connection)
- :mod:`~launcher.kernels.job`          one kernel's job: who to ask (Everest, the relay, the
                                        token), start it, its control calls, end it
- :mod:`~launcher.kernels.ledger`       which jobs this machine's labs started, so a lab
                                        that died leaves no job running
- :mod:`~launcher.kernels.provisioner`  :class:`EverestProvisioner` (entry point
                                        ``jupyter_client.kernel_provisioners: everest``)
- :mod:`~launcher.kernels.spec`         kernelspecs: install, list, remove
"""
