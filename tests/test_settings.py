"""Each setting is declared once: the command-line options, config files and the reference
pages in docs/reference/ all come from the traitlets declarations."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from everest_app.options import from_options, load_config, settings
from everest_local.settings import ServerSettings
from launcher.cli.root import build_parser
from launcher.launch_options import LaunchOptions
from launcher.reference_docs import REFERENCE, pages
from launcher.relay.config import RelayConfig


def _help(capsys: pytest.CaptureFixture, command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_the_committed_reference_pages_are_the_generated_ones() -> None:
    for name, text in pages().items():
        assert (REFERENCE / name).read_text() == text, (
            f"docs/reference/{name} is stale: run python -m launcher.reference_docs")


@pytest.mark.parametrize(("command", "cls", "page"), [
    ("server", ServerSettings, "server.md"), ("relay", RelayConfig, "relay.md"),
    ("launch", LaunchOptions, "launch.md")])
def test_help_and_docs_say_the_same_of_every_setting(capsys: pytest.CaptureFixture,
                                                     command: str, cls: type,
                                                     page: str) -> None:
    text = _help(capsys, command)
    doc = " ".join((REFERENCE / page).read_text().split())
    for name, trait in settings(cls):
        words = " ".join(trait.help.split())
        assert f"## `{name}`" in (REFERENCE / page).read_text() and words in doc, name
        if trait.metadata.get("cli") is not False:
            option = trait.metadata.get("option") or "--" + name.replace("_", "-")
            assert re.search(rf"{option}\b", text), name
            assert words.replace(" ", "") in text.replace(" ", ""), name  # help wraps lines


def test_config_file_then_command_line_then_default(tmp_path: Path) -> None:
    config = tmp_path / "server_config.py"
    config.write_text("c.ServerSettings.slots = 7\nc.ServerSettings.port = 1234\n"
                      f"c.ServerSettings.data_dir = {str(tmp_path / 'd')!r}\n")
    args = build_parser().parse_args(["server", "--config", str(config), "--port", "0"])
    s = from_options(ServerSettings, args)
    assert (s.slots, s.port, s.data_dir, s.kill_grace) == (7, 0, tmp_path / "d", 5.0)
    assert s.plugins == ["launcher.relay.plugin"]  # the CLI's own, as before
    relay = build_parser().parse_args(["relay", "--http", "0.0.0.0:9000", "--hub-service-account",
                                       "hub", "--hub-service-account", "hub2"])
    cfg = from_options(RelayConfig, relay, everest_url="http://e")
    assert (cfg.http_host, cfg.http_port, cfg.ssh_port) == ("0.0.0.0", 9000, 8022)
    assert cfg.hub_service_accounts == ["hub", "hub2"] and cfg.everest_url == "http://e"


def test_the_generated_config_file_names_every_setting_and_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for command, cls in (("server", ServerSettings), ("relay", RelayConfig)):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([command, "--generate-config"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for name, _ in settings(cls):
            assert f"c.{cls.__name__}.{name}" in text
        (tmp_path / f"{command}.py").write_text(text)
        assert load_config(tmp_path / f"{command}.py") is not None


def test_bad_values_are_refused_with_the_setting_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="slots must be at least 1"):
        ServerSettings(data_dir=tmp_path, slots=0)
    with pytest.raises(Exception, match="HOST:PORT"):
        RelayConfig(http="nowhere")
    with pytest.raises(ValueError, match="no config file"):
        load_config(tmp_path / "missing.py")
    args = argparse.Namespace(config=None, port=0)
    assert from_options(ServerSettings, args, data_dir=tmp_path).port == 0


def test_launch_takes_the_profile_s_defaults_and_the_command_line_wins() -> None:
    from launcher.cli.session import _options

    profile = {"time_limit": 60, "packages": "numpy scipy", "resource": "r1"}
    args = build_parser().parse_args(["launch", "--time-limit", "30", "--image", "img"])
    opts = _options(args, profile)
    assert (opts.time_limit, opts.packages, opts.resource, opts.image, opts.app) == (
        30, ["numpy", "scipy"], "r1", "img", "jupyter-session")
    inputs = opts.inputs("http://relay", "t", "http://everest")
    assert inputs["time_limit"] == 30 and inputs["packages"] == "numpy scipy"
    assert "idle_timeout" not in inputs  # left to the application's default
