import logging
from pathlib import Path

import pytest

from everest_app.job import Job
from everest_app.states import (
    ACTIVE_STATES,
    JOB_TRANSITIONS,
    QUEUED_STATES,
    TERMINAL_STATES,
    JobState,
)
from everest_local.store import JobRow, Store, new_id


def test_terminal_states_are_exactly_done_failed_cancelled():
    assert TERMINAL_STATES == {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
    assert all(s.is_terminal for s in TERMINAL_STATES)
    assert not any(s.is_terminal for s in ACTIVE_STATES)


def test_unknown_or_missing_state_is_not_finished():
    for raw in ("PAUSED_BY_ADMIN", "", None, 42):
        state = JobState.parse(raw)
        assert state is JobState.UNKNOWN and not state.is_terminal


def test_parse_is_case_insensitive_and_idempotent():
    assert JobState.parse("done") is JobState.DONE
    assert JobState.parse(JobState.RUNNING) is JobState.RUNNING
    assert str(JobState.CANCELLED) == "CANCELLED"


def test_job_from_json_keeps_unknown_fields_and_tolerates_missing_ones():
    job = Job.from_json({"id": "x", "state": "DONE", "result": {"n": 2}, "extra": [1]})
    assert job.is_done and job.output("n") == 2 and job.raw["extra"] == [1]
    assert job.app_alias is None and job.inputs == {} and job.name == ""


def test_the_transition_table_names_every_state_and_ends_only_in_terminal_ones():
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert {s for s, moves in JOB_TRANSITIONS.items() if not moves} == TERMINAL_STATES
    assert all(JobState.UNKNOWN not in moves for moves in JOB_TRANSITIONS.values())
    # every queued state can reach every terminal one (a queued job can always be cancelled)
    for state in QUEUED_STATES:
        assert TERMINAL_STATES <= JOB_TRANSITIONS[state]


def _job(store: Store, state: JobState) -> str:
    job = JobRow(id=new_id(), owner="alice", name="j", app_id="a", app_alias="a",
                 app_name="a", state=state, inputs={}, resources=None, result=None,
                 info=None, attempt=0, created=0.0, updated=0.0)
    store.insert_job(job)
    return job.id


def test_the_store_refuses_and_logs_a_move_the_table_does_not_allow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path)
    try:
        job_id = _job(store, JobState.READY)
        assert store.update_job(job_id, state=JobState.SCHEDULED)
        assert store.update_job(job_id, state=JobState.RUNNING, info="on node 1")
        assert store.update_job(job_id, state=JobState.DONE, result={"n": 1})
        with caplog.at_level(logging.WARNING, logger="everest_app.states"):
            # a late report of a finished job's task must not bring it back to life
            assert not store.update_job(job_id, state=JobState.RUNNING, info="late")
            assert not store.update_job(job_id, state=JobState.CANCELLED)
        job = store.job(job_id)
        assert job is not None and job.state is JobState.DONE
        assert job.result == {"n": 1} and job.info == "on node 1"  # nothing of it written
        assert [r.getMessage() for r in caplog.records] == [
            f"job {job_id}: refused the move DONE -> RUNNING",
            f"job {job_id}: refused the move DONE -> CANCELLED"]
        queued = _job(store, JobState.READY)
        assert not store.update_job(queued, state=JobState.UNKNOWN)
        assert store.update_job(queued, info="no state: not a move")
    finally:
        store.close()


def test_ends_are_listed_after_a_cursor_once_and_stamps_grow_across_reopening(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        ended: list[int] = []
        store.on_job_end = lambda: ended.append(1)
        first, second = _job(store, JobState.READY), _job(store, JobState.READY)
        cursor = store.stamp()
        store.update_job(first, state=JobState.SCHEDULED)
        assert store.ended_stamps_since("alice", cursor, 10) == [] and ended == []
        store.update_job(first, state=JobState.CANCELLED)
        [(job_id, stamp, _)] = store.ended_stamps_since("alice", cursor, 10)
        assert job_id == first and stamp > cursor and ended == [1]
        assert store.ended_stamps_since("bob", cursor, 10) == []  # the owner's only
        assert store.ended_stamps_since("alice", stamp, 10) == []
        # a stamp from a clock ahead of this one (or before a clock step back) stays behind
        store.db.execute("UPDATE jobs SET updated=? WHERE id=?", (stamp + 1e6, first))
    finally:
        store.close()
    store = Store(tmp_path)
    try:
        store.update_job(second, state=JobState.CANCELLED)
        assert [j for j, _, _ in store.ended_stamps_since("alice", stamp + 1e6, 10)] == [second]
    finally:
        store.close()
