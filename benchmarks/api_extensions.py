"""The orchestrator with the local server's API extensions and without, alternated.

One local server (the applications of ``benchmarks/orchestrator.py``); each round runs, with
``Orchestrator(extensions=True)`` (batch submission, waiting listings: docs/api-extensions.md)
and then ``extensions=False`` (one POST per job, polling: what it does against Everest), a bag
of ``--jobs`` no-op jobs and a chain of ``--chain`` dependent ``echo`` jobs. Alternating
under the same load makes the two comparable on a shared machine; medians over the rounds.
Reported per side: no-op jobs/s, requests per job, chain ms/hop, requests per hop, and the
server's CPU per no-op job. Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/api_extensions.py [--rounds 3] [--jobs 300] [--chain 30]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator import Orchestrator  # noqa: E402

_spec = importlib.util.spec_from_file_location("orchestrator_benchmark",
                                               Path(__file__).with_name("orchestrator.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def bag(server, extensions: bool, jobs: int) -> tuple[float, float, float]:
    """(jobs/s, requests/job, server CPU ms/job)."""
    reqs, cpu = server.requests(), server.cpu_seconds()
    start = time.perf_counter()
    with Orchestrator(server.client(), progress=False, extensions=extensions) as orch:
        orch.map("noop", [{"i": i} for i in range(jobs)])
    seconds = time.perf_counter() - start
    return (jobs / seconds, (server.requests() - reqs) / jobs,
            (server.cpu_seconds() - cpu) / jobs * 1000)


def chain(server, extensions: bool, hops: int) -> tuple[float, float]:
    """(ms/hop, requests/hop)."""
    reqs = server.requests()
    start = time.perf_counter()
    with Orchestrator(server.client(), progress=False, extensions=extensions) as orch:
        prev = orch.submit("echo", {"n": 0})
        for _ in range(hops - 1):
            prev = orch.submit("echo", {"n": prev.output("n")})
        assert prev.result() == {"n": 0}
    return ((time.perf_counter() - start) / hops * 1000,
            (server.requests() - reqs) / hops)


def main() -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--chain", type=int, default=30)
    ap.add_argument("--slots", type=int, default=4)
    args = ap.parse_args()
    before = _common.load()
    runs: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        server = bench.Server(Path(tmp), args.slots)
        try:
            for r in range(args.rounds):
                for ext in (True, False):
                    row = (*bag(server, ext, args.jobs), *chain(server, ext, args.chain))
                    runs[ext].append(row)
                    print(f"round {r + 1} extensions={ext}: " + ", ".join(
                        f"{v:.2f}" for v in row), flush=True)
        finally:
            server.close()
    med = {ext: [statistics.median(col) for col in zip(*rows, strict=True)]
           for ext, rows in runs.items()}
    on, off = med[True], med[False]
    lines = _common.head("Orchestrator with and without the server's API extensions", before,
                         f"; {args.rounds} alternating rounds on one server with {args.slots} "
                         f"slots; {args.jobs} no-op jobs (map) and a {args.chain}-hop "
                         "chain of `echo` per side and round; medians.")
    lines += ["| side | no-op jobs/s | requests/job | server CPU ms/job | chain ms/hop "
              "| requests/hop |", "| --- | --- | --- | --- | --- | --- |"]
    for name, m in (("extensions (batch + waiting listing)", on),
                    ("plain (one POST per job, polling)", off)):
        lines.append(f"| {name} | {m[0]:.1f} | {m[1]:.2f} | {m[2]:.2f} | {m[3]:.1f} | "
                     f"{m[4]:.2f} |")
    lines += ["", f"Extensions ÷ plain: jobs/s **{on[0] / off[0]:.2f}×**, requests/job "
              f"{on[1] / off[1]:.2f}×, server CPU/job {on[2] / off[2]:.2f}×, hop time "
              f"**{on[3] / off[3]:.2f}×** ({on[3] - off[3]:+.1f} ms/hop).", ""]
    _common.record(args, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
