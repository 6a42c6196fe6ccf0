"""``python -m launcher.reference_docs``: write ``docs/reference/`` from the settings'
declarations (:class:`everest_local.settings.ServerSettings`,
:class:`launcher.relay.config.RelayConfig`, :class:`launcher.launch_options.LaunchOptions`,
:class:`launcher.kernels.settings.KernelSettings`);
a test checks the committed pages are up to date."""

from __future__ import annotations

import sys
from pathlib import Path

from everest_app.options import reference

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference"


def pages() -> dict[str, str]:
    """File name -> Markdown text of every generated reference page."""
    from everest_local.settings import ServerSettings
    from launcher.kernels.settings import KernelSettings
    from launcher.launch_options import LaunchOptions
    from launcher.relay.config import RelayConfig

    return {
        "server.md": reference(
            ServerSettings, title="Local server settings", command="everest-jupyter server",
            intro="The Everest-compatible local server (`everest-jupyter server`, "
                  "`python -m everest_local`): where it keeps its data, how many tasks it "
                  "runs at once, how it treats sign-ins."),
        "relay.md": reference(
            RelayConfig, title="Relay settings", command="everest-jupyter relay",
            intro="The session relay (`everest-jupyter relay`, `python -m launcher.relay`): "
                  "the rendezvous between a session's job and its user, and the far end of "
                  "its tunnel. The local server runs one inside itself with its own ports."),
        "launch.md": reference(
            LaunchOptions, title="Session options", command="everest-jupyter launch",
            intro="What `everest-jupyter launch` asks for: where the session runs, for how "
                  "long, with what. A profile sets defaults for any of them under `launch:` "
                  "in `~/.config/everest-jupyter/config.yaml`; the command line wins.",
            config_file=False),
        "kernels.md": reference(
            KernelSettings, title="Everest kernel settings",
            command="everest-jupyter kernels install",
            intro="What an Everest kernel's kernelspec says (`metadata.kernel_provisioner."
                  "config` of a kernelspec whose provisioner is `everest`; docs/kernels.md). "
                  "`everest-jupyter kernels install` writes them.",
            config_file=False),
    }


def main(argv: list[str] | None = None) -> int:
    folder = Path(argv[0]) if argv else REFERENCE
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (folder / name).write_text(text)
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
