"""The JupyterHub plugin: each hub user's server as an Everest job, reached through the relay.

- :mod:`~launcher.hub.spawner`        ``EverestSpawner`` (entry point ``everest``)
- :mod:`~launcher.hub.authenticator`  ``EverestAuthenticator``: sign in with an Everest account
- :mod:`~launcher.hub.profiles`       the spawn form's profiles and their options
- :mod:`~launcher.hub.jobs`           one shared cache of job states for every spawner's poll
- :mod:`~launcher.hub.api`            a small async JSON client for Everest and the relay
"""
