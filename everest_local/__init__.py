"""The Everest-compatible local server: REST API, job execution on this machine, SQLite.

Run it with ``everest-jupyter server`` or ``python -m everest_local`` (options: ``--host``,
``--port`` (0 = any free port), ``--data-dir``, ``--apps PATH...``, ``--slots N``,
``--service-slots N``, ``--kill-grace S``, ``--plugin MODULE``); add users with
``server add-user NAME --data-dir DIR --password-stdin``; stop it with ``server stop`` or
SIGINT/SIGTERM. While it runs, ``<data-dir>/server.json`` holds ``{"pid", "url"}``. In a
program: ``everest_local.app.LocalServer(ServerSettings(...))`` (``await start()`` /
``await stop()``); tests use the fixtures of ``tests/fixtures/local_server.py``.

Modules, one noun each: ``app`` (the server object, the tornado application),
``handlers`` (REST routes), ``core`` (job operations), ``executor`` (queues, slots,
processes, recovery), ``staging`` (work dirs, commands, outputs), ``processes`` (the task
wrapper, pids), ``store`` (SQLite), ``auth`` (passwords, tokens), ``files`` (uploads, job
files), ``catalog`` (applications), ``hooks`` (plugins), ``settings``, ``cli``.

Where Everest's behaviour is not public, this server guesses (``docs/architecture.md`` lists
the guesses); the choices made here:

- 401 for a missing, bad, expired or revoked token; 403 for a cross-site request; 400 for
  bad bodies and inputs, with a message naming the input; 404 for unknown ids and other
  users' jobs and files alike; 405 for an unsupported method. Every error is
  ``{"message": ...}``.
- Token info (``GET /api/auth/access_token``): ``username``, ``label``, ``created``,
  ``expires`` (ISO 8601), ``task`` (true for a job's task token) and ``job``.
- Applications have owner ``local`` and a stable id (from ``owner/alias``); a bare alias
  is accepted too. ``GET /api/apps`` lists summaries (``id, alias, owner, name, annotation,
  keywords, version, jobs``); ``GET /api/apps/<id>`` is application.json plus ``id`` and
  ``owner``. Search: ``pagenum`` counts from 1, ``pagesize`` defaults to 20 when paging,
  ``sortBy`` is ``jobs`` or ``name``; the answer is a plain list.
- A job's ``name`` defaults to the application's name; ``appAlias`` is the bare alias;
  ``result`` is null until the job ends and always an object for DONE and FAILED (the
  official Python client reads it for both); ``resources`` are kept but ignored (one
  resource: this machine); unknown inputs are kept. Extra fields: ``submitted`` (ISO 8601)
  and whatever a plugin's job decorator adds (``session``).
- Cancel of a finished job changes nothing (200); cancel of a queued job is immediate;
  a running one turns CANCELLED when its process has ended. Delete stops a running
  task and removes the job, its log and its files. ``DELETE`` answers ``{}`` (or
  ``{"deleted": n}`` for the bulk deletes).
- Upload URIs are ``/api/files/temp/<id>/<name>``; file inputs must be files of the caller
  on this server (no fetching of other URLs). Uploads stream to disk (64 GiB max).
- Log lines: ``YYYY-MM-DD HH:MM:SS.fff <event>`` in the server's local time.
- One task per job; task ids ``<jobId>-0-<attempt>`` counting from 0. States: READY (queued)
  -> SCHEDULED (staging) -> RUNNING -> DONE | FAILED | CANCELLED.
- ``timeLimit`` is seconds. ``retryFailedTasks`` retries a task that exits non-zero or is
  lost, up to ``--max-attempts`` (3) tries; a time-limit stop is not retried.
- String outputs are the file's text as is (cut at 1 MiB); numbers are parsed after the
  optional ``pattern`` (group 1 if it has one); a missing non-required output is left out,
  a missing required one fails the job.
"""
