"""Settings declared once, as traitlets, and everything made from the declaration.

A component's settings are the ``config=True`` traits of a ``traitlets.config.Configurable``
(the way kubespawner declares its own); each trait's ``help`` is its documentation. From that
one declaration come:

- the command-line options (:func:`add_options`, :func:`from_options`): ``--slots N`` for
  the trait ``slots``, typed and with the help text; ``--config FILE`` reads a traitlets
  config file (``c.ServerSettings.slots = 8``, Python or JSON); command line over file over
  the declared default;
- a commented config file (``--generate-config``, :func:`config_file`);
- the reference documentation in ``docs/reference/`` (:func:`reference`).

Metadata a trait may carry (``.tag(...)``): ``option`` (the flag, when not ``--<name>``),
``aliases`` (more flags, such as ``-r``), ``dest`` (its attribute on the parsed command
line), ``metavar``, ``default_text`` (the default as documented, for a default computed at
run time), ``append=True`` (a list given by repeating the option), ``cli=False`` (config
file only: set by the program, such as the Everest URL a plugin passes).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from traitlets import Bool, Float, Integer, List, TraitError, TraitType, Unicode
from traitlets.config import Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

C = TypeVar("C", bound=Configurable)


class PathTrait(TraitType):
    """A file system path: given as text or a path, held as an absolute ``Path``."""

    info_text = "a path"

    def validate(self, obj: Any, value: Any) -> Path | None:
        if value is None and self.allow_none:
            return None
        if isinstance(value, str | os.PathLike):
            return Path(value).expanduser().resolve()
        self.error(obj, value)
        return None


class HostPort(Unicode):
    """``HOST:PORT`` (the host may be empty: 127.0.0.1), e.g. ``0.0.0.0:8765``."""

    info_text = "HOST:PORT"

    def validate(self, obj: Any, value: Any) -> str | None:
        value = super().validate(obj, value)
        if value is not None:
            split_host_port(value, self.name)
        return value


def split_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """``("host", port)`` of ``HOST:PORT``; an empty host is 127.0.0.1, brackets go."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise TraitError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def settings(cls: type[Configurable]) -> list[tuple[str, TraitType]]:
    """The declared settings of ``cls``, in declaration order."""
    traits = cls.class_traits(config=True)
    order = [name for klass in reversed(cls.__mro__) for name in vars(klass)
             if name in traits]
    return [(name, traits[name]) for name in dict.fromkeys(order)]


def dest(name: str, trait: TraitType) -> str:
    """The attribute of a parsed command line that holds the setting."""
    return trait.metadata.get("dest") or name


def option_name(name: str, trait: TraitType) -> str:
    return trait.metadata.get("option") or "--" + name.replace("_", "-")


def default_text(cls: type[Configurable], trait: TraitType) -> str:
    """The default as documented: the declared text, else the static default's value."""
    if "default_text" in trait.metadata:
        return trait.metadata["default_text"]
    value = trait.default()
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls: type[Configurable], *,
                only: Iterable[str] | None = None, config_file: bool = True,
                title: str | None = None) -> None:
    """Add an option per declared setting of ``cls`` (or the ``only`` ones) to ``parser``.

    Options left out of a command line are absent from its namespace, so a config file's
    value (or the declared default) applies; see :func:`from_options`.
    """
    wanted = set(only) if only is not None else None
    group = parser.add_argument_group(title or f"{cls.__name__} settings") \
        if only is None else parser
    for name, trait in settings(cls):
        if (wanted is not None and name not in wanted) or trait.metadata.get("cli") is False:
            continue
        kwargs: dict[str, Any] = {"dest": dest(name, trait), "default": argparse.SUPPRESS,
                                  "help": f"{trait.help} (default: {default_text(cls, trait)})"
                                  .replace("%", "%%")}
        if isinstance(trait, Bool):
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = trait.metadata.get("metavar") or _metavar(name, trait)
            if isinstance(trait, List):
                kwargs["type"] = _value_type(trait._trait)
                if trait.metadata.get("append"):
                    kwargs["action"] = "append"
                else:
                    kwargs["nargs"] = "+"
            else:
                kwargs["type"] = _value_type(trait)
        group.add_argument(option_name(name, trait), *trait.metadata.get("aliases", ()),
                           **kwargs)
    if config_file and only is None:
        parser.add_argument("--config", metavar="FILE", type=Path, default=None,
                            help=f"read settings from FILE (c.{cls.__name__}.<name> = value; "
                                 "Python or JSON); the command line wins")
        parser.add_argument("--generate-config", action=_GenerateConfig, cls=cls,
                            help="print a config file of every setting, commented, and exit")


def from_options(cls: type[C], args: argparse.Namespace, *, config: Config | None = None,
                 **given: Any) -> C:
    """An instance of ``cls`` from ``config`` (defaults from elsewhere, such as a profile),
    the config file (``args.config``) over it, and the options on ``args`` over both;
    ``given`` (values the program decides) override everything."""
    config = Config(config or {})
    if getattr(args, "config", None):
        config.merge(load_config(args.config))
    values = {name: getattr(args, dest(name, trait)) for name, trait in settings(cls)
              if hasattr(args, dest(name, trait))}
    values.update(given)
    return cls(config=config, **values)


def load_config(path: str | os.PathLike) -> Config:
    """A traitlets config file (``.py`` or ``.json``); ``ValueError`` when it is unusable."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"no config file {path}")
    loader_cls = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
    try:
        return loader_cls(path.name, str(path.parent)).load_config()
    except Exception as exc:  # the loaders raise whatever the file's code raised
        raise ValueError(f"config file {path}: {exc}") from exc


def reference(cls: type[Configurable], *, title: str, command: str, intro: str,
              config_file: bool = True) -> str:
    """Markdown reference of ``cls``'s settings (``docs/reference/``), from the declaration."""
    lines = [f"# {title}", "", intro.strip(), ""]
    if config_file:
        lines += [f"Each setting is a command-line option of `{command}` and a line of a "
                  "config file", f"read with `--config FILE` (`c.{cls.__name__}.<name> = "
                  "value`); the command line", "wins over the file, the file over the "
                  "default. `--generate-config` prints a file", "with every setting."]
    else:
        lines += [f"Each setting is a command-line option of `{command}`."]
    lines += ["This page is generated from the settings' declarations",
              "(`python -m launcher.reference_docs`); do not edit it by hand.", ""]
    for name, trait in settings(cls):
        cli = trait.metadata.get("cli") is not False
        flag = option_name(name, trait)
        if cli and not isinstance(trait, Bool):
            flag += " " + (trait.metadata.get("metavar") or _metavar(name, trait))
        flag = "`, `".join([flag, *trait.metadata.get("aliases", ())])
        lines += [f"## `{name}`", ""]
        lines += [f"- option: `{flag}`" + (", repeatable" if trait.metadata.get("append")
                                           else "") if cli else "- option: none (not on the "
                  "command line)"]
        if config_file:
            lines += [f"- config: `c.{cls.__name__}.{name}`"]
        lines += [f"- type: {_type_text(trait)}",
                  f"- default: {default_text(cls, trait)}", "", trait.help.strip(), ""]
    return "\n".join(lines)


def config_file(cls: type[Configurable], prog: str) -> str:
    """A config file for ``cls`` with every setting commented out at its default."""
    lines = [f"# Configuration file for {prog}: uncomment and change what you need.",
             "# Read with --config FILE; the command line wins over this file.", "",
             "c = get_config()  # noqa", ""]
    for name, trait in settings(cls):
        lines += ["## " + line for line in textwrap.wrap(" ".join(trait.help.split()), 86)]
        if "default_text" in trait.metadata:
            lines += [f"#  Default: {trait.metadata['default_text']}",
                      f"# c.{cls.__name__}.{name} = ...", ""]
        else:
            lines += [f"# c.{cls.__name__}.{name} = {trait.default()!r}", ""]
    return "\n".join(lines)


def _metavar(name: str, trait: TraitType) -> str:
    inner = trait._trait if isinstance(trait, List) else trait
    if isinstance(inner, Integer):
        return "N"
    if isinstance(inner, Float):
        return "SECONDS" if name.endswith(("grace", "timeout", "ttl", "after", "hold", "max",
                                           "cache")) else "X"
    if isinstance(inner, PathTrait):
        return "PATH"
    if isinstance(inner, HostPort):
        return "HOST:PORT"
    return name.upper().rstrip("S") if isinstance(trait, List) else "TEXT"


def _value_type(trait: TraitType) -> Any:
    if isinstance(trait, Integer):
        return int
    if isinstance(trait, Float):
        return float
    if isinstance(trait, PathTrait):
        return Path
    return str


def _type_text(trait: TraitType) -> str:
    if isinstance(trait, List):
        return f"list of {_type_text(trait._trait)}"
    names = {Bool: "on/off", Integer: "integer", Float: "number", PathTrait: "path",
             HostPort: "HOST:PORT", Unicode: "text"}
    return next(text for kind, text in names.items() if isinstance(trait, kind)) + \
        (" or none" if trait.allow_none else "")


class _GenerateConfig(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, cls: type[Configurable],
                 **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.cls = cls

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(config_file(self.cls, parser.prog))
        parser.exit()
