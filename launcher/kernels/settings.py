"""An Everest kernel's settings, declared once: the provisioner's configuration (a
kernelspec's ``metadata.kernel_provisioner.config``), the options of ``everest-jupyter
kernels install`` and ``docs/reference/kernels.md`` come from these traits. Light to
import: the CLI builds its parser from it."""

from __future__ import annotations

from traitlets import Float, Integer, List, Unicode
from traitlets.config import Configurable


class KernelSettings(Configurable):
    """Where and how an Everest kernel runs; ``None`` leaves it to the profile or the
    application's default."""

    resource = Unicode(
        None, allow_none=True,
        help="The resource to run the kernel on (an id; the local server takes names too); "
             "none: Everest's choice.").tag(config=True, metavar="NAME|ID")
    image = Unicode(
        None, allow_none=True,
        help="The container image, on a docker resource that allows it.").tag(config=True)
    packages = List(
        Unicode(), help="Extra pip packages for the kernel's environment.").tag(
        config=True, metavar="PKG")
    time_limit = Integer(
        None, allow_none=True, help="End the kernel's job after this many seconds.",
    ).tag(config=True, metavar="SECONDS", default_text="the application's")
    lease = Integer(
        120, help="The runner ends the job when the lab has not checked in for this many "
                  "seconds (a lab checks every few seconds while the kernel lives).",
    ).tag(config=True, metavar="SECONDS")
    workspace = Unicode(
        None, allow_none=True,
        help="Your workspace the kernel works in: restored into its working folder before "
             "it starts, saved while it runs and when it ends (docs/workspaces.md); none: a "
             "scratch folder that goes with the job.").tag(config=True, metavar="NAME")
    relay_url = Unicode(
        None, allow_none=True,
        help="The relay (default: EVEREST_RELAY_URL, the profile's, else the embedded one's).",
    ).tag(config=True, option="--relay", metavar="URL")
    everest_url = Unicode(
        None, allow_none=True,
        help="The Everest to submit to (the common option --everest; default: EVEREST_URL, "
             "the profile's, else the embedded local server).").tag(config=True, cli=False)
    profile = Unicode(
        None, allow_none=True,
        help="The everest-jupyter profile whose Everest, relay and token to use (the common "
             "option --profile).").tag(config=True, cli=False)
    app = Unicode(
        "jupyter-session", help="The application's id or owner/alias.").tag(config=True)
    start_timeout = Float(
        900.0, help="Give up (and cancel the job) when the kernel does not answer within "
                    "this many seconds.").tag(config=True, metavar="SECONDS")
    unreachable_after = Float(
        60.0, help="Count the kernel dead (and end its job) once its runner has not "
                   "answered for this many seconds.").tag(config=True, metavar="SECONDS")
