"""Run a JupyterLab session as an Everest task and tunnel it back through the relay.

This is the ``jupyter-session`` application's program. On the resource it:

1. reads its inputs (the files Everest wrote, or command-line options);
2. makes sure JupyterLab and asyncssh are importable, else creates a cached virtualenv and
   runs itself again there (``--no-bootstrap`` / input ``bootstrap=false`` switches this off);
3. makes a fresh SSH key and redeems its one-time ticket at the relay;
4. starts JupyterLab on 127.0.0.1 with its own token under the session's base URL, the
   notebook folder its root — before step 3 when the inputs name that URL (``base_url``,
   which the launcher fills in with the ticket; started again should the relay's grant
   name another) — and while it boots restores the user's workspace (when the
   relay's grant names one) into that folder (:mod:`runner_workspace`) and clones the
   requested git repository into it; waits until it answers;
5. opens the SSH tunnel once the restore is complete (nobody reaches the notebook before it
   is: its folder is never seen half-restored), asking for exactly its granted listener,
   and keeps it up — with OpenSSH's ``ssh`` when the resource has a usable one (much
   cheaper per request), else with asyncssh; to the relay's SSH port when it answers, else
   inside a WebSocket on the relay's HTTP(S) port (networks that let only HTTP(S) out);
6. stops on the time limit, the idle timeout, SIGINT/SIGTERM (CTRL_BREAK on Windows), or when
   the relay ends the session — shutting JupyterLab and its kernels down cleanly;
   saving the workspace's changes every few seconds meanwhile, and once more at the end;
7. writes ``session.log`` and ``summary.json`` (the application's outputs; ``workspace``
   says how its final save went — a session whose final save failed exits 1).

Kernels inherit ``EVEREST_URL`` and ``EVEREST_TASK_TOKEN`` from the task (``EVEREST_URL`` from
the ``everest_url`` input where the platform does not set it).

Python >= 3.8, Linux and Windows; standard library plus asyncssh; imports nothing of the
everest-jupyter packages.

Exit codes: 0 the session ran and ended normally, 1 it failed, 2 bad inputs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner_bootstrap  # noqa: E402
import runner_inputs  # noqa: E402
from runner_stop import StopReason  # noqa: E402

log = logging.getLogger("session_runner")

# asyncio (with the ssl and concurrent.futures it brings) takes tens of milliseconds to
# import: main() imports it once JupyterLab is starting (Session.start_early)
asyncio = None

LOG_FILE = "session.log"
SUMMARY_FILE = "summary.json"
NOTEBOOK_LOG = "jupyterlab.log"
NOTEBOOK_DIR = "notebooks"


def setup_logging(workdir: str) -> None:
    """Log to stderr (the task's ``stderr`` file) and to ``session.log`` (an output)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger("session_runner")
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(os.path.join(workdir, LOG_FILE), encoding="utf-8")):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def write_summary(workdir: str, summary: dict[str, object]) -> None:
    """Write ``summary.json`` atomically (temp file, then rename)."""
    path = os.path.join(workdir, SUMMARY_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_failure(workdir: str, stop: StopReason, error: str) -> None:
    """The summary of a runner that failed before its session began."""
    reason = "bad input" if stop is StopReason.BAD_INPUT else "error"
    write_summary(workdir, {"stop": stop.value, "reason": reason, "error": error})


def repository_folder(url: str) -> str:
    """The folder a clone of ``url`` goes to: its last path part, made safe."""
    name = re.split(r"[/:\\]", url.rstrip("/"))[-1]
    if name.endswith(".git"):
        name = name[:-4]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "repository"


def clone_repository(url: str, parent: str) -> str:
    """``git clone --depth 1`` ``url`` into ``parent``; returns the folder.

    The URL is one argument after ``--`` (never an option, never a shell word); git's
    ``ext::`` transport, which runs commands, is refused. Raises ``RuntimeError``.
    """
    dest = os.path.join(parent, repository_folder(url))
    cmd = ["git", "-c", "protocol.ext.allow=never", "clone", "--depth", "1", "--quiet",
           "--", url, dest]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"git clone {url} failed: {exc}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"git clone {url} failed: {proc.stderr.strip()[-1000:]}")
    return dest


async def loop_executor(func, *args):
    """Run blocking ``func`` in the default thread pool (``asyncio.to_thread`` is 3.9+)."""
    return await asyncio.get_event_loop().run_in_executor(None, func, *args)


class Stopped(Exception):
    """The session was asked to stop while it was starting."""


class Session:
    """One session's life, from ticket to summary (see the module docstring)."""

    def __init__(self, settings: runner_inputs.Settings):
        self.settings = settings
        self.token = secrets.token_urlsafe(32)  # JupyterLab's; the relay learns it at redeem
        self.stop_event: asyncio.Event | None = None
        self.stop_reason: StopReason | None = None
        self.stop_detail = ""
        self.notebook = None
        self.kernel = None  # kernel mode: runner_kernel.KernelProcess
        self.control = None
        self.grant = None
        self.tunnel = None
        self.route = None
        self.workspace = None  # runner_workspace.Workspace, when the grant names one
        self.summary: dict[str, object] = {
            "mode": settings.mode, "started": time.time(), "ended": None, "stop": None,
            "reason": None, "error": None, "session_id": None,
            "repository": settings.repository or None,
            "packages": settings.packages, "python": sys.executable,
            "tunnel": {"kind": None, "route": None, "connects": 0, "disconnects": 0},
            "notebook": {"port": None, "exit_code": None},
            "workspace": None,
        }

    def request_stop(self, reason: StopReason, detail: str) -> None:
        """Stop the session for ``reason`` (``detail`` says it to a person); the first wins."""
        if self.stop_event is not None and not self.stop_event.is_set():
            log.info("stopping: %s", detail)
            self.stop_reason, self.stop_detail = reason, detail
            self.stop_event.set()

    def _ended(self, reason: StopReason, detail: str) -> None:
        self.summary["stop"] = reason.value
        self.summary["reason"] = detail

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        names = ["SIGINT", "SIGTERM", "SIGBREAK"]
        for name in names:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            detail = f"interrupted ({name})"
            if os.name == "nt":
                signal.signal(sig, lambda *_a, d=detail: loop.call_soon_threadsafe(
                    self.request_stop, StopReason.INTERRUPTED, d))
            else:
                loop.add_signal_handler(sig, self.request_stop, StopReason.INTERRUPTED, detail)

    async def _step(self, func, *args):
        """Run blocking ``func`` in a thread; raise :class:`Stopped` if a stop comes first."""
        loop = asyncio.get_event_loop()
        work = loop.run_in_executor(None, func, *args)
        stop = asyncio.ensure_future(self.stop_event.wait())
        done, _ = await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            stop.cancel()
            return work.result()
        raise Stopped()

    async def _await(self, coro):
        """Await ``coro``; raise :class:`Stopped` (cancelling it) if a stop comes first."""
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.stop_event.wait())
        done, _ = await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            stop.cancel()
            return work.result()
        work.cancel()
        raise Stopped()

    async def run(self) -> int:
        """Run the session to its end; returns the process exit code."""
        loop = asyncio.get_event_loop()
        self.stop_event = asyncio.Event()
        self._install_signals(loop)
        code = 0
        try:
            code = await self._run()
        except Stopped:
            self._ended(self.stop_reason, self.stop_detail)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the summary
            log.error("session failed: %s", exc)
            log.debug("details", exc_info=True)
            self._ended(StopReason.ERROR, "error")
            self.summary["error"] = str(exc)
            code = 1
        finally:
            await self._shutdown()
        ws = self.summary.get("workspace")
        if code == 0 and isinstance(ws, dict) and not ws.get("read_only") and \
                not ws.get("saved"):
            code = 1  # the user's work is not all kept: never a quiet success
        return code

    def _lab(self, base_url: str, token: str, **hub):
        """The session's notebook server (not started) under ``base_url``; ``hub``:
        :class:`runner_notebook.Notebook`'s hub-mode arguments."""
        import runner_notebook

        s = self.settings
        root = os.path.join(s.workdir, NOTEBOOK_DIR)
        os.makedirs(root, exist_ok=True)
        env = dict(os.environ)
        if s.everest_url and not env.get("EVEREST_URL"):
            env["EVEREST_URL"] = s.everest_url
        return runner_notebook.Notebook(base_url, token, root,
                                        os.path.join(s.workdir, NOTEBOOK_LOG),
                                        default_url=s.default_url, env=env, **hub)

    def start_early(self) -> None:
        """Start JupyterLab now if the inputs name the session's path (``base_url``, which
        comes with the ticket): it boots while the rest of the runner loads and the ticket
        is redeemed. The relay's grant decides the path (checked in :meth:`_run`)."""
        s = self.settings
        if s.mode == "lab" and s.base_url:
            self.notebook = self._lab(s.base_url, self.token)
            self.notebook.start()

    async def _run(self) -> int:
        s = self.settings
        token = self.token
        import runner_notebook
        import runner_relay

        key = runner_relay.SessionKey()
        grant = await self._step(runner_relay.redeem, s.relay, s.ticket, key.public_openssh,
                                 token, runner_relay.runner_info(
                                     s.mode, self._time_limit_left(),
                                     float(s.idle_timeout) if s.idle_timeout > 0 else None))
        runner_inputs.forget_ticket_file(s.workdir)
        self.grant = grant
        self.summary["session_id"] = grant.session_id
        log.info("session %s enrolled at %s", grant.session_id, s.relay)
        early = self.notebook
        if early is not None and (grant.mode != "lab" or grant.base_url != early.base_url):
            log.warning("the relay serves this session at %s, not at %s: starting JupyterLab "
                        "again", grant.base_url, early.base_url)
            self.notebook = None
            await loop_executor(early.stop)
            early = None
        if s.mode == "kernel":
            return await self._run_kernel(grant, key, token)

        root = os.path.join(s.workdir, NOTEBOOK_DIR)
        hub = grant.mode == "hub"
        hub_port = runner_notebook.free_port() if hub and grant.hub_api else None
        self.notebook = nb = early or self._lab(
            grant.base_url, token, hub_env=grant.hub_env if hub else None,
            hub_api_port=hub_port)
        tunnel_task = None
        if hub:
            await self._open_workspace(grant, key, root)
            # jupyterhub-singleuser asks the hub's API at once and gives up after ~45 s:
            # the tunnel (with its forward to the hub) comes first
            nb.port = runner_notebook.free_port()
            self.tunnel = self._make_tunnel(grant, key, nb.port, hub_port)
            tunnel_task = asyncio.ensure_future(self._keep_tunnel(grant, key, nb.port,
                                                                  hub_port))
            await self._wait_connected(tunnel_task)
        if early is None:
            nb.start()
        self.summary["notebook"]["port"] = nb.port
        if not hub:
            # JupyterLab takes seconds to boot, so it starts first and everything else
            # happens meanwhile: the workspace is restored into its root, then the tunnel
            # connects (the relay asks the notebook for its status through it until it
            # answers). Nobody reaches the notebook before the tunnel is up, so nobody sees
            # its folder before the restore is complete.
            self.tunnel = self._make_tunnel(grant, key, nb.port)
            await self._open_workspace(grant, key, root)
            tunnel_task = asyncio.ensure_future(self._keep_tunnel(grant, key, nb.port))
        try:
            if s.repository:
                try:
                    folder = await self._step(clone_repository, s.repository, root)
                    log.info("cloned %s into %s", s.repository, folder)
                except RuntimeError as exc:
                    log.warning("%s; the session goes on without it", exc)
                    self.summary["error"] = str(exc)
            await self._step(nb.wait_ready)
        except BaseException:
            tunnel_task.cancel()
            raise
        # the relay probes through the tunnel on a timer; saying so saves up to one interval
        await loop_executor(runner_relay.report_answering, s.relay, grant)
        return await self._watch(tunnel_task, self._watch_notebook(), self._watch_idle())

    async def _open_workspace(self, grant, key, root: str) -> None:
        """Make the notebook folder ``root``; restore the user's workspace into it when the
        grant names one (it is saved while the session runs and once more at its end)."""
        os.makedirs(root, exist_ok=True)
        if grant.workspace is not None:
            import runner_workspace

            self.workspace = runner_workspace.Workspace(grant, key, root,
                                                        self.settings.route)
            started = time.monotonic()
            files, size = await self._await(self.workspace.restore())
            log.info("workspace %r restored%s: %d files, %d bytes in %.1f s",
                     self.workspace.name, " read-only" if self.workspace.read_only else "",
                     files, size, time.monotonic() - started)

    async def _run_kernel(self, grant, key, token: str) -> int:
        """Kernel mode (:mod:`runner_kernel`): an ipykernel and its control endpoint, which
        the tunnel forwards; the lab's checking in is the session's activity."""
        import runner_kernel

        s = self.settings
        env = dict(os.environ)
        if s.everest_url and not env.get("EVEREST_URL"):
            env["EVEREST_URL"] = s.everest_url
        root = os.path.join(s.workdir, NOTEBOOK_DIR)
        await self._open_workspace(grant, key, root)  # the kernel works in it
        self.kernel = kernel = runner_kernel.KernelProcess(
            os.path.join(s.workdir, runner_kernel.KERNEL_DIR), root, env)
        self.control = runner_kernel.Control(
            kernel, grant.base_url, token,
            lambda: self.request_stop(StopReason.INTERRUPTED, "the lab shut the kernel down"))
        port = await self.control.start()
        self.summary["notebook"]["port"] = port
        self.tunnel = self._make_tunnel(grant, key, port)  # while the kernel starts
        await self._step(kernel.start)
        tunnel_task = asyncio.ensure_future(self._keep_tunnel(grant, key, port))
        lease = runner_kernel.watch_lease(
            self.control, s.idle_timeout,
            lambda detail: self.request_stop(StopReason.IDLE, detail))
        return await self._watch(tunnel_task, lease)

    async def _watch(self, tunnel_task, *watches) -> int:
        """Serve until the tunnel ends, a stop is asked for, the time limit passes or one of
        ``watches`` returns; returns the exit code."""
        import runner_relay

        watchers = [tunnel_task]
        watchers += [asyncio.ensure_future(c) for c in (
            self.stop_event.wait(), self._watch_time_limit(), *watches)]
        saver = asyncio.ensure_future(self.workspace.keep_saving()) if self.workspace \
            else None
        try:
            done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if saver is not None:
                saver.cancel()
            await self.tunnel.close()
            for task in watchers:
                task.cancel()
            self.summary["tunnel"] = {"kind": self.summary["tunnel"]["kind"],
                                      "route": self.route.used or None,
                                      "connects": self.tunnel.connects,
                                      "disconnects": self.tunnel.disconnects}
        finished = done.pop()
        if watchers[0] is finished:
            exc = finished.exception()
            if isinstance(exc, runner_relay.SessionEnded):
                self._ended(StopReason.RELAY_ENDED, f"relay ended the session ({exc})")
                return 0
            raise exc or RuntimeError("the tunnel stopped")
        self._ended(self.stop_reason, self.stop_detail)
        return 1 if self.stop_reason.failed else 0

    async def _wait_connected(self, tunnel_task, timeout: float = 60.0) -> None:
        """Wait until the tunnel has connected once (raising what it raised if it ended);
        after ``timeout`` go on anyway: it keeps trying, and the server retries too."""
        deadline = time.monotonic() + timeout
        while not self.tunnel.connects and time.monotonic() < deadline:
            if tunnel_task.done():
                tunnel_task.result()
                raise RuntimeError("the tunnel stopped before it connected")
            if self.stop_event.is_set():
                raise Stopped()
            await asyncio.sleep(0.05)

    def _make_tunnel(self, grant, key, port: int, hub_port: int | None = None):
        """OpenSSH's ``ssh`` when it is there and takes our options (``--tunnel auto`` or
        ``openssh``), else asyncssh. ``hub_port``: the local end of the hub API forward."""
        import runner_openssh
        import runner_websocket

        self.route = runner_websocket.Route(grant.ssh_host, grant.ssh_port,
                                            grant.websocket_url, self.settings.route)
        self.route.prefetch()  # is the SSH port reachable? (while JupyterLab boots)
        kind = self.settings.tunnel
        ssh = runner_openssh.find_ssh() if kind in ("auto", "openssh") else None
        if ssh:
            tunnel = runner_openssh.OpenSSHTunnel(grant, key, port, ssh, self.settings.workdir,
                                                  self.route, hub_port=hub_port)
            if tunnel.usable():
                self.summary["tunnel"]["kind"] = "openssh"
                return tunnel
            tunnel.cleanup()
        if kind == "openssh":
            raise RuntimeError("--tunnel openssh: no usable ssh client on this resource")
        import runner_tunnel

        self.summary["tunnel"]["kind"] = "asyncssh"
        return runner_tunnel.Tunnel(grant, key, port, self.route, hub_port=hub_port)

    async def _keep_tunnel(self, grant, key, port: int, hub_port: int | None = None) -> None:
        """Run the tunnel; if ``ssh`` turns out unusable here, carry on with asyncssh."""
        import runner_openssh

        try:
            await self.tunnel.run()
        except runner_openssh.TunnelUnusable as exc:
            if self.settings.tunnel == "openssh":
                raise
            log.warning("%s; using asyncssh instead", exc)
            await self.tunnel.close()
            import runner_tunnel

            self.summary["tunnel"]["kind"] = "asyncssh"
            self.tunnel = runner_tunnel.Tunnel(grant, key, port, self.route, hub_port=hub_port)
            await self.tunnel.run()

    async def _watch_notebook(self) -> None:
        while self.notebook.exited() is None:
            await asyncio.sleep(1.0)
        self.request_stop(StopReason.NOTEBOOK_EXITED,
                          f"JupyterLab exited on its own (code {self.notebook.exited()})")

    def _time_limit_left(self) -> float | None:
        """Seconds to the time limit, ``None`` without one."""
        if self.settings.time_limit <= 0:
            return None
        elapsed = time.time() - float(self.summary["started"])
        return max(0.0, self.settings.time_limit - elapsed)

    async def _watch_time_limit(self) -> None:
        if self.settings.time_limit > 0:
            await asyncio.sleep(self._time_limit_left())
            self.request_stop(StopReason.TIME_LIMIT,
                              f"time limit of {self.settings.time_limit} s reached")
        else:
            await asyncio.Event().wait()

    async def _watch_idle(self) -> None:
        limit = self.settings.idle_timeout
        if limit <= 0:
            await asyncio.Event().wait()
        interval = min(60.0, max(0.5, limit / 10.0))
        reported = time.time() + limit  # the idle deadline the relay has (from the redeem)
        while True:
            await asyncio.sleep(interval)
            try:
                idle = await loop_executor(self.notebook.idle_seconds)
                if idle >= limit and await loop_executor(self.notebook.busy_kernels):
                    idle = 0.0  # a kernel computing quietly is not idle
            except (OSError, ValueError, KeyError) as exc:
                log.warning("could not read JupyterLab's activity: %s", exc)
                continue
            idle_at = time.time() + max(0.0, limit - idle)
            if abs(idle_at - reported) >= max(1.0, min(30.0, limit / 10.0)):
                # the user was active (or the first estimate was off): the relay shows the
                # time left, and JupyterLab's banner warns by it
                import runner_relay

                if await loop_executor(runner_relay.report_deadlines, self.settings.relay,
                                       self.grant, self._time_limit_left(),
                                       max(0.0, idle_at - time.time())):
                    reported = idle_at
            if idle >= limit:
                self.request_stop(StopReason.IDLE,
                                  f"idle for {idle:.0f} s (idle timeout {limit} s)")
                return

    async def _report_end(self) -> None:
        if self.grant is not None:
            import runner_relay

            await loop_executor(runner_relay.report_end, self.settings.relay, self.grant,
                                self.summary["stop"], str(self.summary["reason"] or "stopped"),
                                self.summary["workspace"])

    async def _shutdown(self) -> None:
        if self.tunnel is not None:
            await self.tunnel.close()  # again after a normal end: it is idempotent
        if self.control is not None:
            await self.control.close()
        if self.kernel is not None:
            code = await loop_executor(self.kernel.stop)
            self.summary["notebook"]["exit_code"] = code
            log.info("kernel stopped (exit code %s)", code)
        reported = False
        ws = self.workspace
        if ws is not None:
            # the final save, and telling the relay, come before JupyterLab's shutdown: a
            # cancel's kill grace is short, and what the user saved is on disk already
            await ws.final_save()
            await ws.close()
            report = ws.report()
            self.summary["workspace"] = report
            if not report["saved"] and not report["read_only"]:
                why = report.get("error") or "not restored"
                self.summary["reason"] = (f"{self.summary['reason'] or 'stopped'}; workspace "
                                          f"{ws.name!r} NOT saved: {why}")
                self.summary["error"] = self.summary["error"] or \
                    f"workspace {ws.name!r} not saved: {why}"
            await self._report_end()
            reported = True
            write_summary(self.settings.workdir, self.summary)  # again below, if time allows
        if self.notebook is not None:
            code = await loop_executor(self.notebook.stop)
            self.summary["notebook"]["exit_code"] = code
            log.info("JupyterLab stopped (exit code %s)", code)
        if not reported:
            await self._report_end()
        self.summary["ended"] = time.time()
        self.summary["duration"] = round(self.summary["ended"] - self.summary["started"], 3)
        write_summary(self.settings.workdir, self.summary)


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    argv = sys.argv[1:] if argv is None else argv
    parser_args = runner_inputs.build_parser().parse_args(argv)
    workdir = os.path.abspath(parser_args.workdir)
    setup_logging(workdir)
    try:
        settings = runner_inputs.load_settings(argv)
    except runner_inputs.InputError as exc:
        log.error("%s", exc)
        write_failure(workdir, StopReason.BAD_INPUT, str(exc))
        return 2
    required = {"hub": runner_bootstrap.HUB_REQUIRED,
                "kernel": runner_bootstrap.KERNEL_REQUIRED}.get(settings.mode,
                                                                runner_bootstrap.REQUIRED)
    if not runner_bootstrap.already_bootstrapped():
        try:
            chosen = runner_bootstrap.choose_python(settings.packages, settings.venv_cache,
                                                    required) if settings.bootstrap else None
        except runner_bootstrap.BootstrapError as exc:
            error = f"could not prepare the environment: {exc}"
            log.error("%s", error)
            write_failure(workdir, StopReason.ERROR, error)
            return 1
        if chosen:
            log.info("running the session in %s", chosen[0])
            return runner_bootstrap.reexec(chosen[0], argv, chosen[1])
    missing = runner_bootstrap.missing_modules(required=required)
    if missing and runner_bootstrap.already_bootstrapped():
        error = ("{} still missing for {} after the bootstrap prepared it; remove that "
                 "environment to have it made again".format(" and ".join(missing),
                                                            sys.executable))
        log.error("%s", error)
        write_failure(workdir, StopReason.ERROR, error)
        return 1
    if missing:
        error = ("{} not installed for {} and bootstrap is off; install them or allow the "
                 "bootstrap".format(" and ".join(missing), sys.executable))
        log.error("%s", error)
        write_failure(workdir, StopReason.ERROR, error)
        return 1
    if settings.packages and not settings.bootstrap:
        log.warning("bootstrap is off: extra packages %s are not installed", settings.packages)
    session = Session(settings)
    session.start_early()
    global asyncio
    import asyncio

    return asyncio.run(session.run())


if __name__ == "__main__":
    sys.exit(main())
