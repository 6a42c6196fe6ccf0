"""The user's side of everest-jupyter: everything that is not the Everest model
(:mod:`everest_app`), the local server (:mod:`everest_local`) or the task on a resource
(``agent_scripts``).

- :mod:`launcher.cli`             the ``everest-jupyter`` command line
- :mod:`launcher.launch`          one session started and followed from the terminal
- :mod:`launcher.launch_options`  a session's choices (resource, time limit, packages, ...),
                                  declared once; the job inputs are built only here
- :mod:`launcher.embedded`        the embedded default: a local server and relay in the
                                  background, signed in as the OS user
- :mod:`launcher.relay`           the relay, a service of its own (a package with its map)
- :mod:`launcher.hub`             the JupyterHub plugin: spawner and authenticator
- :mod:`launcher.kernels`         Everest kernels for any JupyterLab: the ``everest`` kernel
                                  provisioner and its kernelspecs
- :mod:`launcher.session_start`   a session's start written once: the step both the launch
                                  and the spawner drive
- :mod:`launcher.reference_docs`  ``docs/reference/`` generated from the declared settings

Imports go down: ``cli`` may import anything here; ``hub`` and ``launch`` import ``relay``'s
client modules; ``relay`` imports nothing of ``launcher`` outside itself.
"""
