"""The local server's web UI: HTML page shells and the static assets they load.

The server mounts :func:`routes` after its API routes. Every page is a small server-rendered
shell (a tornado template) that loads one ES module from ``static/js/``; the module talks to
the REST API with ``fetch(..., {credentials: "same-origin"})``. The session is the HttpOnly
``access_token`` cookie that ``POST /api/auth/access_token`` sets, so page JavaScript never
sees a token; unsafe requests are protected by the server's Origin check plus SameSite cookies.

Pages (none under ``/api/``):

``/`` → ``/apps``; ``/login``; ``/apps`` (catalogue and search); ``/apps/<id or owner/alias>``
(the form rendered from the application's description); ``/jobs`` (the caller's jobs);
``/jobs/<id>`` (live state, inputs, results, log, cancel, delete). Assets are under
``/assets/``.

Seam for JupyterLab sessions (issue 4): when a job's JSON carries a ``session`` object, e.g.
``{"url": "http://127.0.0.1:8822/s/ab12/lab?token=...", "state": "ready"}``, the job page
shows its state and, once ``url`` is set, an "Open JupyterLab" link. Nothing else is needed
from the web side: the server only has to add that object to the job it returns. (Once
the job has ended the box says the session ended and shows no link.)

Seam for inputs the server supplies: an input whose description carries
``"filledByServer": true`` is optional in the form and sits in a closed "Filled in by the
server" section; left empty it is not sent, so the server's input preparer can fill it
(e.g. ``relay`` and ``ticket`` of ``jupyter-session`` on the local server). The server adds
the marker to the description it serves; a value the user types is sent as is.
"""

from __future__ import annotations

from everest_local.web.pages import routes

__all__ = ["routes"]
