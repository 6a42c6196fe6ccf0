"""The job object Everest returns, as a small immutable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from everest_app.states import JobState


@dataclass(frozen=True)
class Job:
    """One Everest job as the server last described it.

    ``raw`` keeps the server's JSON untouched, so fields this model does not name are
    never lost. ``result`` is ``None`` until the server reports one.
    """

    id: str
    name: str
    state: JobState
    app_id: str | None = None
    app_alias: str | None = None
    app_name: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    info: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Build a job from the server's JSON object.

        Raises ``KeyError`` when ``id`` is missing: without it the object is not a job.
        """
        return cls(
            id=data["id"],
            name=data.get("name") or "",
            state=JobState.parse(data.get("state")),
            app_id=data.get("appId"),
            app_alias=data.get("appAlias"),
            app_name=data.get("appName"),
            inputs=data.get("inputs") or {},
            result=data.get("result"),
            info=data.get("info"),
            raw=dict(data),
        )

    @property
    def is_done(self) -> bool:
        """True once the job is in a terminal state."""
        return self.state.is_terminal

    def output(self, name: str) -> Any:
        """One named output of a DONE job; ``KeyError`` if the result lacks it."""
        return (self.result or {})[name]
