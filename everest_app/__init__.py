"""The Everest model shared by every layer: REST client, job states, application descriptors.

Nothing here imports from ``launcher``, ``orchestrator``, ``everest_local`` or
``agent_scripts``: this package is the bottom layer.
"""

__version__ = "0.1.0"
