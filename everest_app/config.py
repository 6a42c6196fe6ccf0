"""User configuration: named profiles in a YAML file, overridden by the environment.

The file is ``$XDG_CONFIG_HOME/everest-jupyter/config.yaml`` (``~/.config/...`` by default)::

    default_profile: public
    profiles:
      public:
        url: https://everest.distcomp.org
        token_file: ~/.config/everest-jupyter/tokens/public   # written 0600 by `login`
        relay_url: https://relay.example.org
        launch: {time_limit: 3600, idle_timeout: 1800, packages: [numpy]}

Precedence, highest first: explicit arguments (command-line flags), environment variables
(``EVEREST_URL``, ``EVEREST_TOKEN``, ``EVEREST_TASK_TOKEN``, ``EVEREST_RELAY_URL``,
``EVEREST_PROFILE``), the chosen profile, built-in defaults.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from everest_app.errors import EverestError

log = logging.getLogger(__name__)

APP_DIR_NAME = "everest-jupyter"
TOKEN_ENV_VARS = ("EVEREST_TOKEN", "EVEREST_TASK_TOKEN")


class ConfigError(EverestError):
    """The configuration file is unreadable or names a profile that does not exist."""


def config_dir() -> Path:
    """The folder holding config.yaml and token files (not created here)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / APP_DIR_NAME


def data_dir() -> Path:
    """The folder for state: the embedded server's data, the relay's state, journals."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / APP_DIR_NAME


def config_path() -> Path:
    return config_dir() / "config.yaml"


@dataclass
class Profile:
    """One named way to reach an Everest: its URL, where its token lives, its relay.

    ``token`` is resolved at load time from the environment or ``token_file``;
    ``None`` means the user has not logged in.
    """

    name: str
    url: str | None = None
    token_file: Path | None = None
    token: str | None = None
    relay_url: str | None = None
    launch: dict[str, Any] = field(default_factory=dict)

    def default_token_file(self) -> Path:
        return self.token_file or config_dir() / "tokens" / self.name


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The parsed config file, or ``{}`` when there is none.

    Raises :class:`ConfigError` when the file exists but is not a YAML mapping.
    """
    path = path or config_path()
    if not path.exists():
        return {}
    import yaml  # here: a command on the embedded default (no file) never needs it

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}. Fix or remove the file.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping with a 'profiles' key.")
    return data


def load_profile(name: str | None = None, *, url: str | None = None) -> Profile:
    """Resolve the profile to use.

    ``name`` defaults to ``EVEREST_PROFILE``, then the file's ``default_profile``, then
    ``"default"``. A name given explicitly must exist in the file (else :class:`ConfigError`);
    the implicit default may be absent, giving an empty profile. ``url`` overrides the URL;
    when it differs from the profile's, the profile's token is not used for it.
    """
    data = read_config_file()
    profiles = data.get("profiles") or {}
    explicit = name or os.environ.get("EVEREST_PROFILE")
    chosen = explicit or data.get("default_profile") or "default"
    if explicit and chosen not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"No profile '{chosen}' in {config_path()} (known: {known}).")
    raw = profiles.get(chosen) or {}
    token_file = raw.get("token_file")
    profile = Profile(
        name=chosen,
        url=raw.get("url"),
        token_file=Path(token_file).expanduser() if token_file else None,
        relay_url=raw.get("relay_url"),
        launch=dict(raw.get("launch") or {}),
    )
    _apply_environment(profile, url)
    return profile


def _apply_environment(profile: Profile, url: str | None) -> None:
    env_url = os.environ.get("EVEREST_URL")
    profile_url = profile.url
    profile.url = (url or env_url or profile_url or None)
    profile.relay_url = os.environ.get("EVEREST_RELAY_URL") or profile.relay_url
    env_token = next((os.environ[v] for v in TOKEN_ENV_VARS if os.environ.get(v)), None)
    if env_token:
        profile.token = env_token
    elif profile.url == profile_url or profile_url is None:
        profile.token = read_token(profile.default_token_file())


def read_token(path: Path) -> str | None:
    """The token stored in ``path``, or ``None`` when the file does not exist or is empty."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(profile: Profile, *, token: str | None = None, make_default: bool = True) -> Path:
    """Store ``profile`` in the config file and, when given, its token (0600).

    Other profiles and keys in the file are kept. Returns the config file's path.
    """
    data = read_config_file()
    profiles = data.setdefault("profiles", {})
    entry = profiles.setdefault(profile.name, {})
    if profile.url:
        entry["url"] = profile.url
    if profile.relay_url:
        entry["relay_url"] = profile.relay_url
    if profile.launch:
        entry["launch"] = profile.launch
    if token is not None:
        token_file = profile.default_token_file()
        write_private(token_file, token + "\n")
        entry["token_file"] = str(token_file)
    if make_default:
        data["default_profile"] = profile.name
    import yaml

    write_private(config_path(), yaml.safe_dump(data, sort_keys=False))
    return config_path()


def forget_token(profile: Profile) -> bool:
    """Delete the profile's token file; True when there was one."""
    path = profile.default_token_file()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
