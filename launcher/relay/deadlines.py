"""When a session ends, as its runner reports it, and the warning JupyterLab shows before.

The runner knows its two deadlines: the time limit (fixed) and the idle timeout (moves with
activity). It reports them as *seconds left* — with its ticket at redeem (``runner.time_left``)
and later ``POST /api/sessions/<id>/deadlines`` with its end token whenever the idle deadline
moves — and the relay turns them into times on its own clock, so the resource's clock may be
wrong. They are kept in the session's ``runner`` document under ``deadlines``.

The warning: the relay adds a small script to the HTML pages the session serves through it
(JupyterLab's ``/lab``, Notebook's ``/tree``...). The script asks
``<session prefix>_everest/time-left?key=K`` every half minute (``K`` is a key of that
session the relay put into the page; the request goes to the relay, never to JupyterLab, so it
is no activity) and, once the end is closer than the relay's ``time_warning``, shows a banner
counting down. Why this and not a JupyterLab extension: a labextension must be compiled and
installed on every resource, and a ``jupyter_server`` extension cannot draw in JupyterLab's
page; appending a script to the served page touches no JupyterLab internals (only the
``</body>`` of an HTML answer), works for hub servers, JupyterLab and Notebook alike, needs
nothing on the resource and survives JupyterLab upgrades. A page with a Content-Security-Policy
that forbids inline scripts simply shows no banner.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

TIME_PATH = "_everest/time-left"
"""Under a session's URL prefix: the banner's question (answered by the relay itself)."""

_MAX_SECONDS = 10 * 365 * 86400.0
_BY = {"time_limit_at": "time limit", "idle_at": "idle timeout"}


def check_seconds(value: Any, name: str) -> float | None:
    """``value`` as seconds left (``None`` for no such deadline); ``ValueError`` naming
    ``name`` when it is not a number in 0..10 years."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        raise ValueError(f"'{name}' must be seconds left (0 to 10 years) or null")
    return float(value)


def with_deadlines(runner: dict[str, Any], time_limit_left: float | None,
                   idle_left: float | None, now: float | None = None) -> dict[str, Any]:
    """``runner`` with its ``deadlines`` set from seconds left at ``now`` (relay time)."""
    now = time.time() if now is None else now
    out = dict(runner)
    out["deadlines"] = {
        "time_limit_at": None if time_limit_left is None else round(now + time_limit_left, 3),
        "idle_at": None if idle_left is None else round(now + idle_left, 3),
        "reported": round(now, 3)}
    return out


def from_redeem(runner: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A runner document as given at redeem, its ``time_left`` turned into ``deadlines``
    (a malformed one is dropped: the deadlines are a courtesy, never a reason to refuse)."""
    runner = dict(runner)
    given = runner.pop("time_left", None)
    if not isinstance(given, dict):
        return runner
    try:
        limit = check_seconds(given.get("time_limit"), "time_limit")
        idle = check_seconds(given.get("idle"), "idle")
    except ValueError:
        return runner
    return with_deadlines(runner, limit, idle, now)


def time_left(runner: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``{"ends_at", "ends_by", "time_left"}`` of a live session: the nearer deadline, what
    it is (``time limit``/``idle timeout``) and the seconds to it; all ``None`` when the
    runner reported none."""
    now = time.time() if now is None else now
    deadlines = runner.get("deadlines") if isinstance(runner, dict) else None
    found = [(at, _BY[key]) for key, at in (deadlines or {}).items()
             if key in _BY and isinstance(at, int | float)]
    if not found:
        return {"ends_at": None, "ends_by": None, "time_left": None}
    at, by = min(found)
    return {"ends_at": at, "ends_by": by, "time_left": max(0, round(at - now))}


_SCRIPT = """<script data-everest-relay="time-left">(function () {
  "use strict";
  var cfg = %s, endsAt = null, by = "", bar = null;
  function fmt(s) { var m = Math.floor(s / 60), r = s %% 60;
    return m ? m + " min " + (r < 10 ? "0" : "") + r + " s" : r + " s"; }
  function poll() {
    fetch(cfg.url, {credentials: "omit", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) { by = d.ends_by || "";
        endsAt = d.time_left === null ? null : Date.now() + d.time_left * 1000; } })
      .catch(function () {});
  }
  function tick() {
    var left = endsAt === null ? null : Math.max(0, Math.round((endsAt - Date.now()) / 1000));
    if (left === null || left > cfg.warn) { if (bar) { bar.remove(); bar = null; } return; }
    if (!bar) {
      bar = document.createElement("div");
      bar.id = "everest-time-left"; bar.setAttribute("role", "alert");
      bar.style.cssText = "position:fixed;top:0;left:50%%;transform:translateX(-50%%);" +
        "z-index:100000;background:#b45309;color:#fff;padding:6px 14px;font:13px/1.4 " +
        "sans-serif;border-radius:0 0 6px 6px;box-shadow:0 2px 6px rgba(0,0,0,.3)";
      document.body.appendChild(bar);
    }
    bar.textContent = "This session ends in " + fmt(left) + " (" + by + "). " +
      (by === "idle timeout" ? "Any activity keeps it open. " : "") + "Save your work.";
  }
  poll(); setInterval(poll, cfg.every * 1000); setInterval(tick, 1000);
})();</script>"""


def banner_script(url: str, warn: float, every: float = 30.0) -> str:
    """The script a session's page gets: it asks ``url`` (with its key) for the time left and
    shows a banner once fewer than ``warn`` seconds are left."""
    cfg = json.dumps({"url": url, "warn": warn, "every": every}).replace("</", "<\\/")
    return _SCRIPT % cfg


def inject(html: bytes, script: str) -> bytes:
    """``html`` with ``script`` before its last ``</body>`` (or at its end)."""
    at = html.lower().rfind(b"</body>")
    data = script.encode("utf-8")
    return html + data if at < 0 else html[:at] + data + html[at:]
