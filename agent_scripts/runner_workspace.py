"""The session's workspace: restored before anyone reaches it, saved while it runs, saved last.

The relay keeps the user's workspace (its ``launcher.relay.workspaces``) and serves it to this
session alone over SFTP, on an SSH connection like the tunnel's — same key, same pinned host
key, to the relay's SSH port or inside its WebSocket (:class:`runner_websocket.Route`) — so
it works wherever the tunnel does, whichever tunnel client the runner uses.

- :meth:`Workspace.restore` copies the workspace into the notebook folder (JupyterLab's root)
  while JupyterLab boots; the runner opens its tunnel only after it, so nobody reaches the
  folder half-restored. Links come back as links.
- :meth:`Workspace.keep_saving` scans the folder every ``save_interval`` seconds (names,
  sizes, mtimes: ``lstat`` only, no reading — near-zero CPU when nothing changes) and sends
  what changed: each changed file to a temporary name beside it, then renamed over the old
  one (the relay never has half a file under its name), removed files and folders removed,
  links as links. Work at risk when the resource dies: about one interval plus one upload.
- :meth:`Workspace.final_save` does one more pass at every graceful end; its outcome goes to
  ``summary.json`` and the relay (:meth:`Workspace.report`).

``.everestignore`` in the workspace's root (gitignore syntax) names what is not saved; without
one, :data:`DEFAULT_IGNORE`. Names the relay refuses (quota, file size) are logged and said in
the report; they do not stop the session, and are tried again when they change.

Python >= 3.8; needs asyncssh (the bootstrap provides it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import secrets
import stat
import time

import asyncssh

from runner_relay import Grant, SessionKey
from runner_websocket import Route, socket_through

log = logging.getLogger("session_runner.workspace")

IGNORE_FILE = ".everestignore"
DEFAULT_IGNORE = [".ipynb_checkpoints/", "__pycache__/", ".venv/"]
TMP_PREFIX = ".everest-saving-"
CHUNK = 256 * 1024
RESTORE_PARALLEL = 16  # files in flight during a restore


class WorkspaceError(RuntimeError):
    """The workspace could not be restored or saved; the message says why."""


# -- .everestignore ---------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> str:
    """A gitignore glob as a regex over a '/'-separated relative path."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class IgnoreRules:
    """gitignore-syntax rules: ``#`` comments, ``!`` re-includes, a trailing ``/`` matches
    folders only, a ``/`` elsewhere anchors the pattern at the root, ``*``, ``?``, ``[...]``,
    ``**``. The last matching rule wins; what is inside an ignored folder is ignored."""

    def __init__(self, lines: list[str]):
        self.rules = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            line = line.rstrip(" ") if not line.endswith("\\ ") else line
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            regex = _pattern_regex(line)
            regex = ("^" if anchored else "^(?:.*/)?") + regex + "$"
            self.rules.append((re.compile(regex, re.S), negate, dir_only))

    @classmethod
    def for_folder(cls, root: str) -> IgnoreRules:
        """The rules of ``root/.everestignore``, else the default ones."""
        try:
            with open(os.path.join(root, IGNORE_FILE), encoding="utf-8") as f:
                return cls(f.readlines())
        except (OSError, UnicodeDecodeError):
            return cls(DEFAULT_IGNORE)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` (its parents already found not ignored) is left out."""
        verdict = False
        for regex, negate, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if regex.match(rel):
                verdict = not negate
        return verdict


# -- the local tree -----------------------------------------------------------------------------

def scan(root: str, rules: IgnoreRules) -> dict[str, tuple]:
    """What the folder holds now: ``{rel: ("d",) | ("f", size, mtime_ns) | ("l", target)}``,
    never following links, leaving out what ``rules`` ignore and the runner's temporary
    names."""
    found: dict[str, tuple] = {}
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            if entry.name.startswith(TMP_PREFIX):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if rules.ignored(rel, True):
                    continue
                found[rel] = ("d",)
                stack.append((rel + "/", entry.path))
            elif rules.ignored(rel, False):
                continue
            elif stat.S_ISLNK(st.st_mode):
                try:
                    found[rel] = ("l", os.readlink(entry.path))
                except OSError:
                    continue
            elif stat.S_ISREG(st.st_mode):
                found[rel] = ("f", st.st_size, st.st_mtime_ns)
    return found


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and "\x00" not in rel and not rel.startswith("/") and \
        all(p not in ("", ".", "..") for p in parts)


class Workspace:
    """The session's workspace (see the module docstring), from the grant's ``workspace``:
    ``{"name", "read_only", "snapshot", "save_interval", "max_file"}``."""

    def __init__(self, grant: Grant, key: SessionKey, root: str, route_choice: str = "auto"):
        doc = grant.workspace or {}
        self.grant = grant
        self.name = str(doc.get("name") or "default")
        self.read_only = bool(doc.get("read_only"))
        self.snapshot = doc.get("snapshot")
        self.save_interval = max(0.5, float(doc.get("save_interval") or 5.0))
        self.max_file = int(doc.get("max_file") or 0)
        self.root = root
        self.key = asyncssh.import_private_key(key.private_openssh)
        self.host_key = asyncssh.import_public_key(grant.host_key)
        self.route = Route(grant.ssh_host, grant.ssh_port, grant.websocket_url, route_choice)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._known: dict[str, tuple] = {}  # what the relay holds, as last synced
        self._failed: dict[str, str] = {}  # rel -> why the relay refused it (last time)
        self._lock = asyncio.Lock()
        self.restored = False
        self.saves = 0
        self.last_error: str | None = None
        self.final: bool | None = None  # the final save's outcome, once made
        self.save_latencies: list[float] = []

    # -- connection ---------------------------------------------------------------------

    async def _client(self) -> asyncssh.SFTPClient:
        if self._sftp is not None and self._conn is not None and \
                not self._conn.is_closed():
            return self._sftp
        await self._drop()
        g = self.grant
        sock = None
        if await self.route.pick() == "websocket":
            sock = await socket_through(self.route.websocket_url)
        self._conn = await asyncssh.connect(
            g.ssh_host, g.ssh_port, sock=sock, username=g.username, client_keys=[self.key],
            known_hosts=([self.host_key], [], []), config=None, agent_path=None,
            preferred_auth="publickey", keepalive_interval=10, keepalive_count_max=3,
            connect_timeout=15, compression_algs=None)
        self._sftp = await self._conn.start_sftp_client()
        return self._sftp

    async def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 2.0)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass

    async def close(self) -> None:
        await self._drop()

    # -- restore ------------------------------------------------------------------------

    async def restore(self, attempts: int = 5) -> tuple[int, int]:
        """Copy the workspace into ``root``; returns (files, bytes). Retries a lost
        connection from the start; raises :class:`WorkspaceError` when it cannot."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                result = await self._restore_once()
                self.restored = True
                return result
            except asyncssh.PermissionDenied:
                raise WorkspaceError("the relay refused this session's key for its workspace "
                                     "(the session ended)") from None
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                log.warning("restoring the workspace failed (%s), attempt %d of %d",
                            exc or type(exc).__name__, attempt, attempts)
                await self._drop()
                if attempt == attempts:
                    raise WorkspaceError(f"could not restore workspace {self.name!r}: "
                                         f"{exc or type(exc).__name__}") from None
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _restore_once(self) -> tuple[int, int]:
        sftp = await self._client()
        os.makedirs(self.root, exist_ok=True)
        known: dict[str, tuple] = {}
        files: list[tuple[str, str, object]] = []
        stack = [""]
        while stack:  # the tree first (folders and links made as found) ...
            prefix = stack.pop()
            for entry in await sftp.readdir(prefix or "."):
                name = entry.filename
                if name in (".", ".."):
                    continue
                rel = prefix + name
                if not _safe_rel(rel) or name.startswith(TMP_PREFIX):
                    continue
                local = os.path.join(self.root, *rel.split("/"))
                kind = entry.attrs.type
                if kind == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    os.makedirs(local, exist_ok=True)
                    known[rel] = ("d",)
                    stack.append(rel + "/")
                elif kind == asyncssh.FILEXFER_TYPE_SYMLINK:
                    target = await sftp.readlink(rel)
                    if os.path.lexists(local):
                        os.remove(local)
                    os.symlink(target, local)
                    known[rel] = ("l", target)
                elif kind == asyncssh.FILEXFER_TYPE_REGULAR:
                    files.append((rel, local, entry.attrs.mtime))
        # ... then the files, several at once: one at a time, each small file would cost
        # its round trips (open, read, close) alone
        gate = asyncio.Semaphore(RESTORE_PARALLEL)

        async def fetch(rel: str, local: str, mtime: object) -> None:
            async with gate:
                await self._download(sftp, rel, local)
            if mtime is not None:
                os.utime(local, (mtime, mtime))
            st = os.lstat(local)
            known[rel] = ("f", st.st_size, st.st_mtime_ns)

        await asyncio.gather(*(fetch(*f) for f in files))
        self._known = known
        return self.totals()

    async def _download(self, sftp: asyncssh.SFTPClient, rel: str, local: str) -> None:
        """One file into a temporary name beside it, then renamed into place."""
        folder, name = os.path.split(local)
        tmp = os.path.join(folder, TMP_PREFIX + secrets.token_hex(4) + "-" + name)
        try:
            async with sftp.open(rel, "rb") as src:
                with open(tmp, "wb") as dst:
                    while True:
                        data = await src.read(1 << 20)
                        if not data:
                            break
                        dst.write(data)
            os.replace(tmp, local)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)

    # -- saving -------------------------------------------------------------------------

    async def keep_saving(self) -> None:
        """Save what changed every ``save_interval`` seconds until cancelled."""
        if self.read_only:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(self.save_interval)
            try:
                await self.save()
            except WorkspaceError as exc:
                log.warning("%s (trying again in %.0f s)", exc, self.save_interval)

    async def save(self) -> bool:
        """One pass: send every change since the last one. True when everything went
        through; raises :class:`WorkspaceError` when the relay could not be reached."""
        if self.read_only or not self.restored:
            return True
        async with self._lock:
            start = time.monotonic()
            rules = IgnoreRules.for_folder(self.root)
            loop = asyncio.get_event_loop()
            now = await loop.run_in_executor(None, scan, self.root, rules)
            if now == self._known and not self._failed:
                return True
            try:
                sftp = await self._client()
                ok = await self._send(sftp, now)
            except asyncssh.PermissionDenied:
                raise WorkspaceError("the relay no longer accepts this session's key for its "
                                     "workspace") from None
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                await self._drop()
                raise WorkspaceError(f"saving the workspace failed: "
                                     f"{exc or type(exc).__name__}") from None
            self.saves += 1
            self.save_latencies.append(time.monotonic() - start)
            return ok

    async def _send(self, sftp: asyncssh.SFTPClient, now: dict[str, tuple]) -> bool:
        known = self._known
        ok = True
        # folders first (parents before children), then files and links, then removals
        # (children before parents)
        for rel in sorted(r for r, v in now.items() if v[0] == "d" and known.get(r) != v):
            if rel in known:  # a file or link became a folder
                await self._remove_remote(sftp, rel, known[rel])
                known.pop(rel, None)
            try:
                await sftp.mkdir(rel)
            except asyncssh.SFTPFailure:
                pass  # it exists already (a retry)
            known[rel] = ("d",)
        for rel in sorted(r for r, v in now.items() if v[0] != "d" and known.get(r) != v):
            old = known.get(rel)
            if old is not None and old[0] == "d":
                await self._remove_tree(sftp, rel)
            # until it is sent, the relay may hold anything under this name: if the file
            # goes away meanwhile, the next pass removes whatever landed there
            known[rel] = ("?",)
            try:
                if now[rel][0] == "l":
                    await self._put_link(sftp, rel, now[rel][1], old is not None)
                    known[rel] = now[rel]
                else:
                    sent = await self._put_file(sftp, rel)
                    if sent is not None:
                        known[rel] = sent
                self._failed.pop(rel, None)
            except asyncssh.SFTPFailure as exc:
                ok = False
                reason = exc.reason or str(exc)
                if self._failed.get(rel) != reason:
                    log.error("workspace: %s not saved: %s", rel, reason)
                self._failed[rel] = reason
                self.last_error = f"{rel}: {reason}"
            except asyncssh.SFTPNoSuchFile:
                ok = False  # its folder went away meanwhile: the next pass sees it
        gone = sorted((r for r in known if r not in now), key=lambda r: r.count("/"),
                      reverse=True)
        for rel in gone:
            await self._remove_remote(sftp, rel, known[rel])
            known.pop(rel, None)
            self._failed.pop(rel, None)
        for rel in [r for r in self._failed if r not in now]:
            self._failed.pop(rel, None)
        if ok and not self._failed:
            self.last_error = None
        return ok and not self._failed

    async def _remove_remote(self, sftp: asyncssh.SFTPClient, rel: str, what: tuple) -> None:
        try:
            if what[0] == "d":
                await self._remove_tree(sftp, rel)
            else:
                await sftp.remove(rel)
        except asyncssh.SFTPNoSuchFile:
            pass

    async def _remove_tree(self, sftp: asyncssh.SFTPClient, rel: str) -> None:
        for entry in await sftp.readdir(rel):
            if entry.filename in (".", ".."):
                continue
            child = rel + "/" + entry.filename
            if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                await self._remove_tree(sftp, child)
            else:
                await sftp.remove(child)
        await sftp.rmdir(rel)
        for name in [k for k in self._known if k.startswith(rel + "/")]:
            self._known.pop(name, None)

    async def _put_link(self, sftp: asyncssh.SFTPClient, rel: str, target: str,
                        existed: bool) -> None:
        if existed:
            try:
                await sftp.remove(rel)
            except asyncssh.SFTPNoSuchFile:
                pass
        await sftp.symlink(target, rel)

    async def _put_file(self, sftp: asyncssh.SFTPClient, rel: str) -> tuple | None:
        """Send one file (temporary name, then rename); its state as sent, or None if it
        changed while being read (the next pass sends it again)."""
        local = os.path.join(self.root, *rel.split("/"))
        try:
            before = os.lstat(local)
        except FileNotFoundError:
            return None
        if self.max_file and before.st_size > self.max_file:
            raise asyncssh.SFTPFailure(f"file too large: {before.st_size} bytes, over the "
                                       f"limit of {self.max_file} bytes per file")
        try:
            src = open(local, "rb")
        except FileNotFoundError:
            return None  # gone since the scan (an editor's temporary file, say)
        folder, name = posixpath.split(rel)
        tmp = posixpath.join(folder, TMP_PREFIX + secrets.token_hex(4) + "-" + name)
        try:
            async with sftp.open(tmp, "wb") as dst:
                with src:
                    offset = 0
                    while True:
                        data = src.read(CHUNK)
                        if not data:
                            break
                        await dst.write(data, offset)
                        offset += len(data)
                await dst.utime((before.st_atime, before.st_mtime))
            await sftp.posix_rename(tmp, rel)
        except BaseException:
            src.close()
            try:
                await sftp.remove(tmp)
            except (asyncssh.Error, OSError):
                pass
            raise
        try:
            after = os.lstat(local)
        except FileNotFoundError:
            return None
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return None
        return ("f", before.st_size, before.st_mtime_ns)

    async def final_save(self, timeout: float = 60.0) -> bool:
        """The last pass at a graceful end; its outcome is kept for :meth:`report`."""
        if self.read_only or not self.restored:
            self.final = self.read_only and self.restored
            return bool(self.final)
        try:
            self.final = await asyncio.wait_for(self.save(), timeout)
            if self.final is True:
                # a file that changed while it was sent goes once more
                self.final = await asyncio.wait_for(self.save(), timeout)
        except WorkspaceError as exc:
            self.final = False
            self.last_error = str(exc)
        except asyncio.TimeoutError:
            self.final = False
            self.last_error = f"the final save took longer than {timeout:.0f} s"
        if self.final:
            log.info("workspace %r saved (%d files, %d bytes)", self.name, *self.totals())
        else:
            log.error("workspace %r NOT fully saved: %s", self.name, self.last_error)
        return bool(self.final)

    def totals(self) -> tuple[int, int]:
        files = [v for v in self._known.values() if v[0] == "f"]
        return len(files), sum(v[1] for v in files)

    def report(self) -> dict[str, object]:
        """``summary.json``'s ``workspace`` and what the relay is told at the end."""
        files, size = self.totals()
        doc: dict[str, object] = {
            "name": self.name, "snapshot": self.snapshot, "read_only": self.read_only,
            "restored": self.restored, "files": files, "bytes": size,
            "saved": bool(self.final), "saves": self.saves}
        if self.last_error:
            doc["error"] = self.last_error
        return doc
