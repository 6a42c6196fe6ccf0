"""The session start's one step function: the words and rules both ways in share (the
launch command and the hub spawner drive it; their end-to-end tests are in tests/session and
tests/hub)."""

from __future__ import annotations

import pytest

from everest_app.states import QUEUED_STATES, JobState
from launcher.relay.state import SessionState
from launcher.session_start import WORDS, Failure, Milestone, step

M = Milestone


def test_a_queued_job_is_said_to_be_queued_and_nothing_more() -> None:
    for job_state in QUEUED_STATES:
        outcome = step(job_state, SessionState.WAITING)
        assert outcome.reached == (M.SUBMITTED, M.QUEUED) and not outcome.finished


def test_the_relay_seeing_the_runner_implies_the_job_runs_whatever_everest_said() -> None:
    outcome = step(JobState.SCHEDULED, SessionState.STARTING)
    assert outcome.reached == (M.SUBMITTED, M.QUEUED, M.RUNNING, M.RUNNER)
    assert step(None, SessionState.CONNECTED).reached == (M.SUBMITTED, M.RUNNING, M.RUNNER,
                                                          M.TUNNEL)


def test_the_tunnel_comes_before_the_notebook_in_the_words_too() -> None:
    assert M.TUNNEL.value < M.READY.value
    assert "tunnel up" in WORDS[M.TUNNEL] and "notebook up" in WORDS[M.READY]
    assert [m.value for m in Milestone] == sorted(m.value for m in Milestone)


def test_ready_with_a_url_finishes_with_it() -> None:
    outcome = step(JobState.RUNNING, SessionState.READY, "http://relay/session/x/?token=t")
    assert outcome.url == "http://relay/session/x/?token=t" and outcome.failure is None
    assert outcome.reached[-1] is M.READY
    assert not step(JobState.RUNNING, SessionState.READY, None).finished


@pytest.mark.parametrize("session_state", list(SessionState) + [None])
def test_a_finished_job_fails_the_start_whatever_the_relay_last_saw(session_state) -> None:
    for job_state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        outcome = step(job_state, session_state, "http://x/")
        assert outcome.failure is Failure.JOB_ENDED and outcome.url is None
        assert f"ended {job_state}" in outcome.failure.message(job_state, "why")


def test_an_ended_or_expired_session_of_a_running_job_names_why() -> None:
    assert step(JobState.RUNNING, SessionState.ENDED).failure is Failure.RUNNER_STOPPED
    assert step(JobState.READY, SessionState.EXPIRED).failure is Failure.TICKET_EXPIRED
    assert "ticket expired" in Failure.TICKET_EXPIRED.message()


def test_unknown_states_keep_waiting() -> None:
    outcome = step(JobState.UNKNOWN, None)
    assert outcome.reached == (M.SUBMITTED,) and not outcome.finished


def test_the_words_fill_in_the_job_and_where() -> None:
    assert M.SUBMITTED.text(job_id="j1", session_id="s1") == \
        "submitted to Everest as job j1, relay session s1"
    assert M.QUEUED.text() == "queued on a resource"
    assert M.QUEUED.text(where="gpu") == "queued on gpu"
