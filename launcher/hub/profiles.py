"""Admin presets a user picks from when starting a server: the options form and its checks.

A profile is what an admin allows, never what a user types: where the job runs (an
Everest resource id), for how long, with which extra packages. The form offers the
profiles by name; a choice arriving through the form or the REST API (``user_options``)
must name one of them, and nothing else is accepted.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

_SLUG = re.compile(r"[^a-z0-9]+")
_KEYS = {"slug", "display_name", "description", "resource", "time_limit", "packages",
         "default"}


class ProfileError(ValueError):
    """A profile or a user's choice is not acceptable; the message says why."""


@dataclass(frozen=True)
class Profile:
    """One preset. ``resource`` None lets Everest choose; ``time_limit`` None keeps the
    spawner's own."""

    slug: str
    display_name: str
    description: str = ""
    resource: str | None = None
    time_limit: int | None = None
    packages: tuple[str, ...] = field(default_factory=tuple)
    default: bool = False


def parse_profiles(raw: list[dict[str, Any]]) -> list[Profile]:
    """Validate the admin's list (see ``EverestSpawner.profiles``). Raises ProfileError."""
    profiles = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ProfileError(f"profile {i}: must be a dict, got {item!r}")
        unknown = set(item) - _KEYS
        if unknown:
            raise ProfileError(f"profile {i}: unknown keys {sorted(unknown)}; allowed: "
                               f"{sorted(_KEYS)}")
        name = item.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise ProfileError(f"profile {i}: 'display_name' is required")
        slug = item.get("slug") or _SLUG.sub("-", name.lower()).strip("-")
        limit = item.get("time_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ProfileError(f"profile {slug!r}: 'time_limit' must be seconds (an int >= 0)")
        packages = item.get("packages") or []
        if not isinstance(packages, list | tuple) or not all(
                isinstance(p, str) and p and not p.startswith("-") for p in packages):
            raise ProfileError(f"profile {slug!r}: 'packages' must be a list of requirements")
        resource = item.get("resource")
        if resource is not None and not isinstance(resource, str):
            raise ProfileError(f"profile {slug!r}: 'resource' must be an Everest resource id")
        profiles.append(Profile(slug=slug, display_name=name.strip(),
                                description=str(item.get("description") or ""),
                                resource=resource or None, time_limit=limit,
                                packages=tuple(packages), default=bool(item.get("default"))))
    slugs = [p.slug for p in profiles]
    if len(set(slugs)) != len(slugs):
        raise ProfileError(f"profiles need distinct slugs, got {slugs}")
    return profiles


def options_form(profiles: list[Profile], chosen: str | None = None) -> str:
    """The HTML of the spawn form: one radio button per profile ('' without profiles)."""
    if not profiles:
        return ""
    chosen = chosen or next((p.slug for p in profiles if p.default), profiles[0].slug)
    rows = []
    for p in profiles:
        checked = " checked" if p.slug == chosen else ""
        desc = f"<br><small>{html.escape(p.description)}</small>" if p.description else ""
        rows.append(
            f'<div class="radio"><label><input type="radio" name="profile" '
            f'value="{html.escape(p.slug)}"{checked}> {html.escape(p.display_name)}'
            f"{desc}</label></div>")
    return "<fieldset><legend>Where and how long</legend>\n" + "\n".join(rows) + \
        "\n</fieldset>"


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, Any]:
    """The form's fields as ``user_options`` (only ``profile``; checked in :func:`choose`)."""
    values = formdata.get("profile") or []
    return {"profile": values[0]} if values else {}


def choose(profiles: list[Profile], user_options: dict[str, Any]) -> Profile | None:
    """The profile ``user_options`` picks (the default one when it names none); None when
    there are no profiles. Raises ProfileError for anything else."""
    options = dict(user_options or {})
    slug = options.pop("profile", None)
    if options:
        raise ProfileError(f"unknown options {sorted(options)}: only 'profile' can be chosen")
    if not profiles:
        if slug is not None:
            raise ProfileError("this hub offers no profiles to choose from")
        return None
    if slug is None:
        return next((p for p in profiles if p.default), profiles[0])
    for p in profiles:
        if p.slug == slug:
            return p
    names = ", ".join(p.slug for p in profiles)
    raise ProfileError(f"no profile {slug!r} here; choose one of: {names}")
