from everest_app.job import Job
from everest_app.states import ACTIVE_STATES, TERMINAL_STATES, JobState


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
