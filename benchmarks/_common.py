"""What every benchmark shares: its command-line flags, the lines that say how and where it
ran, and the one writer of ``benchmarks/RESULTS.md``.

A benchmark builds its parser with :func:`parser`, its section's head with :func:`head` and
hands the finished section to :func:`record`, which prints it and appends it to RESULTS.md
unless ``--no-record`` was given. Servers and relays come from ``tests/harness/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
_NOT_RECORDED = ("--no-record", "--no-write")

if str(REPO) not in sys.path:  # run as `python benchmarks/x.py`: our packages and tests.harness
    sys.path.insert(0, str(REPO))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser (its description is the first paragraph of ``doc``), with
    ``--no-record`` (old name ``--no-write``): print the section, do not append it."""
    made = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    made.add_argument(*_NOT_RECORDED, dest="no_record", action="store_true",
                      help="print the results without appending them to benchmarks/RESULTS.md")
    return made


def command() -> str:
    """The command that reproduces this run, as RESULTS.md shows it."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return "python " + shlex.join([str(script)] + [a for a in sys.argv[1:]
                                                    if a not in _NOT_RECORDED])


def load() -> str:
    """The load averages now (1/5/15 min): the machine is shared, so every section says."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def head(title: str, load_before: str, note: str = "") -> list[str]:
    """A section's first lines: title and time, the command, and the machine."""
    return [f"## {title} ({datetime.now():%Y-%m-%d %H:%M})", "",
            f"Command: `{command()}`  ",
            f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
            f"{platform.python_version()}, load average before/after {load_before} / "
            f"{load()} (a shared machine: compare ratios within a run){note}", ""]


def record(args: argparse.Namespace, text: str) -> None:
    """Print a finished section and append it to RESULTS.md (unless ``--no-record``)."""
    text = text.strip("\n") + "\n"
    print(text)
    if not getattr(args, "no_record", False):
        with open(RESULTS, "a", encoding="utf-8") as out:
            out.write("\n" + text)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
