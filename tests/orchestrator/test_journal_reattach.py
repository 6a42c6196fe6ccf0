"""Re-attaching after the orchestrator's process dies: no job lost, none submitted twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from everest_app.states import JobState
from orchestrator import Orchestrator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run(server, journal: Path, kill_after: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVEREST_TOKEN": server.token, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(HERE / "journal_run.py"), server.url,
                           str(journal), str(kill_after)], env=env, capture_output=True,
                          text=True, timeout=240)


def journal_job_ids(journal: Path) -> list[str]:
    entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return [e["id"] for e in entries if "job" in e]


def test_a_killed_run_is_resumed_from_its_journal(server, tmp_path):
    journal = tmp_path / "run.journal"
    first = run(server, journal, kill_after=4)
    assert first.returncode == -9, first.stderr
    before = journal_job_ids(journal)
    assert 4 <= len(before) < 8  # max_in_flight=4 held the rest back

    second = run(server, journal, kill_after=0)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    stats = report["stats"]
    assert stats["reattached"] == len(before)
    assert stats.get("submitted", 0) + stats.get("adopted", 0) == 8 - len(before)
    assert set(before) <= set(report["ids"]) and report["results"] == [{}] * 8

    names = Counter(j.name.split(" #")[0] for j in server.client().jobs()
                    if j.name.startswith("journal-job-"))
    assert names == Counter({f"journal-job-{i}": 1 for i in range(8)})

    third = run(server, journal, kill_after=0)  # everything finished: pure re-attach
    stats = json.loads(third.stdout)["stats"]
    assert stats["reattached"] == 8 and stats.get("submitted", 0) == 0


def test_a_submission_sent_but_not_recorded_is_found_by_name(server, tmp_path):
    journal = tmp_path / "j"
    with Orchestrator(server.client(), journal=journal, progress=False) as orch:
        first = orch.submit("sleep", {"duration": 0}, name="unrecorded")
        job_id = first.job_id if first.result(60) == {} else None
    # the process died after sending the submission, before writing down the job's id
    kept = [line for line in journal.read_text().splitlines() if '"job"' not in line]
    journal.write_text("\n".join(kept) + "\n")
    with Orchestrator(server.client(), journal=journal, progress=False) as orch:
        again = orch.submit("sleep", {"duration": 0}, name="unrecorded")
        assert again.result(60) == {} and again.job_id == job_id
        assert orch.stats["adopted"] == 1 and orch.stats.get("submitted", 0) == 0
    assert server.client().job(job_id).state == JobState.DONE


def test_re_attaching_uploads_nothing_and_keeps_dag_edges(server, tmp_path):
    journal, start = tmp_path / "j", tmp_path / "start.txt"
    start.write_text("start\n")

    def program(orch):
        a = orch.submit("append", {"message": "a", "file": start})
        b = orch.submit("append", {"message": "b", "file": a.output("file")})
        return orch.read(b.result(60)["file"]), [a.job_id, b.job_id]

    with Orchestrator(server.client(), journal=journal, progress=False) as orch:
        first, ids = program(orch)
        assert orch.stats["uploads"] == 1 and orch.stats["submitted"] == 2
    with Orchestrator(server.client(), journal=journal, progress=False) as orch:
        again, same_ids = program(orch)
        assert orch.stats["uploads"] == 0 and orch.stats.get("submitted", 0) == 0
        assert orch.stats["reattached"] == 2
    assert first == again == b"start\na\nb\n" and same_ids == ids
