"""The journal: keys to job ids and intents survive reopening; torn lines; exclusive use."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.journal import Journal, JournalInUse

REPO = Path(__file__).resolve().parents[2]


def test_records_survive_reopening(tmp_path):
    path = tmp_path / "run.journal"
    with Journal(path) as j:
        run_id = j.run_id
        j.record_intent("k1", "job one #k1")
        j.record_job("k1", "a" * 24)
        j.record_intent("k2", "job two #k2")
    with Journal(path) as j:
        assert j.run_id == run_id
        assert j.job_for("k1") == "a" * 24
        assert j.intended("k1") is None  # has an id: nothing to look for
        assert j.intended("k2") == "job two #k2"
        assert j.job_for("k2") is None
        assert len(j) == 1


def test_new_journals_get_distinct_run_ids(tmp_path):
    with Journal(tmp_path / "a") as a, Journal(tmp_path / "b") as b:
        assert a.run_id != b.run_id


def test_a_torn_last_line_is_skipped_and_later_entries_still_load(tmp_path):
    path = tmp_path / "j"
    with Journal(path) as j:
        j.record_job("k1", "id1")
    with open(path, "a") as f:
        f.write('{"job": "k2", "id": "id')  # the process died mid-write
    with Journal(path) as j:
        assert j.job_for("k1") == "id1"
        assert j.job_for("k2") is None
        j.record_job("k3", "id3")
    with Journal(path) as j:
        assert j.job_for("k3") == "id3"
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"job": "k3", "id": "id3"}


def test_entries_are_on_disk_before_the_process_dies(tmp_path):
    path = tmp_path / "j"
    code = (
        "import os, sys\n"
        "from orchestrator.journal import Journal\n"
        f"j = Journal({str(path)!r})\n"
        "j.record_job('k', 'the-id')\n"
        "os._exit(9)  # no close, no flush at exit\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path,
                   env={"PYTHONPATH": str(REPO)})
    with Journal(path) as j:
        assert j.job_for("k") == "the-id"


def test_a_journal_open_elsewhere_is_refused(tmp_path):
    path = tmp_path / "j"
    code = (
        "import sys, time\n"
        "from orchestrator.journal import Journal\n"
        f"j = Journal({str(path)!r})\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(JournalInUse, match="open in another process"):
            Journal(path)
    finally:
        holder.communicate("")
    with Journal(path) as j:  # released when that process ended
        assert j.run_id
