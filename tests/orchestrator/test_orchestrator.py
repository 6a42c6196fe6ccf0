"""The orchestrator against a real local server: results, DAG edges, failures, retries,
cancellation, uploads, map, executor."""

from __future__ import annotations

import concurrent.futures
import socket

import pytest

import orchestrator
from everest_app.errors import BadRequestError
from everest_app.states import JobState
from orchestrator import DependencyFailed, JobFailed, Orchestrator, as_completed
from tests.fixtures.task_accounts import ensure_passable
from tests.fixtures.waiting import wait_for


def server_jobs(server):
    return server.client().jobs()


def test_connect_finds_the_server_and_token_in_the_environment(server, monkeypatch):
    monkeypatch.setenv("EVEREST_URL", server.url)
    monkeypatch.setenv("EVEREST_TASK_TOKEN", server.token)
    with orchestrator.connect(progress=False) as orch:
        assert orch.submit("hostname").result(60) == {"hostname": socket.gethostname()}


def test_a_result_is_the_jobs_outputs(orch):
    future = orch.submit("lorenz-lyapunov", {"r": 28, "s": 10, "b": 8 / 3, "t": 20})
    result = future.result(60)
    assert set(result) == {"L1", "L2", "L3", "cout"}
    assert result["L1"] + result["L2"] + result["L3"] == pytest.approx(-(10 + 1 + 8 / 3),
                                                                       abs=1e-3)
    assert future.state == JobState.DONE and future.job_id and not future.running()
    assert orch.submit("sleep", {"duration": 0}).result(60) == {}


def test_dag_edges_pass_outputs_and_files_along(orch, tmp_path):
    start = tmp_path / "start.txt"
    start.write_text("start\n")
    a = orch.submit("append", {"message": "one", "file": start})
    b = orch.submit("append", {"message": "two", "file": a.output("file")})
    c = orch.submit("append", {"message": "three", "file": b})  # a bare future: its one output
    assert orch.read(c.result(60)["file"]) == b"start\none\ntwo\nthree\n"
    saved = orch.download(b.result()["file"], tmp_path / "out" / "b.txt")
    assert saved.read_text() == "start\none\ntwo\n"


def test_a_plain_string_path_for_a_file_input_is_uploaded(orch, tmp_path):
    local = tmp_path / "x.txt"
    local.write_text("x\n")
    done = orch.submit("append", {"message": "y", "file": str(local)})
    assert orch.read(done.result(60)["file"]) == b"x\ny\n"
    with pytest.raises(FileNotFoundError, match="pass pathlib.Path"):
        orch.submit("append", {"message": "y", "file": str(tmp_path / "missing.txt")})


def test_a_failed_job_carries_info_and_log_and_its_dependents_are_never_submitted(orch):
    bad = orch.submit("sleep", {"duration": -1}, name="negative")
    after = orch.submit("sleep", {"duration": 0}, after=[bad])
    using = orch.submit("append", {"message": "x", "file": bad.output("file")})
    with pytest.raises(JobFailed) as failed:
        bad.result(60)
    assert failed.value.state == JobState.FAILED and failed.value.info
    assert failed.value.job_id == bad.job_id and failed.value.log_tail
    for dependent in (after, using):
        error = dependent.exception(60)
        assert isinstance(error, DependencyFailed) and error.cause is failed.value
        assert dependent.job_id is None
    assert orch.stats["submitted"] == 1


def test_refused_inputs_fail_the_future_with_the_servers_message(orch):
    future = orch.submit("sleep", {"duration": "soon"})
    error = future.exception(60)
    assert isinstance(error, BadRequestError) and "duration" in str(error)


def test_retries_resubmit_a_failed_job(orch, server, tmp_path):
    ensure_passable(tmp_path / "marker")  # the task (another account, when we are root)
    tmp_path.chmod(0o777)  # writes its marker here
    marker = tmp_path / "marker"
    flaky = orch.submit("flaky-once", {"marker": str(marker)}, retries=2)
    assert flaky.result(60) == {"attempt": "second"}
    assert flaky.attempts == 2 and orch.stats["retried"] == 1

    hopeless = orch.submit("sleep", {"duration": -1}, name="hopeless", retries=2)
    error = hopeless.exception(60)
    assert isinstance(error, JobFailed) and error.attempts == 3
    names = [j.name for j in server_jobs(server) if j.name.startswith("hopeless #")]
    assert len(names) == len(set(names)) == 3


def test_cancelling_a_running_future_cancels_its_job(orch, server):
    future = orch.submit("sleep", {"duration": 60})
    dependent = orch.submit("sleep", {"duration": 0}, after=[future])
    wait_for(lambda: future.state == JobState.RUNNING)
    assert future.cancel() and future.cancelled()
    assert server.client().wait(future.job_id, timeout=30).state == JobState.CANCELLED
    error = dependent.exception(30)
    assert isinstance(error, DependencyFailed)
    assert isinstance(error.cause, concurrent.futures.CancelledError)


def test_a_future_cancelled_before_submission_never_reaches_the_server(server):
    with Orchestrator(server.client(), max_in_flight=1, progress=False) as orch:
        first = orch.submit("sleep", {"duration": 60})
        queued = orch.submit("sleep", {"duration": 0})
        wait_for(lambda: first.running())
        assert queued.cancel()
        first.cancel()
        assert queued.job_id is None and orch.stats["submitted"] == 1


def test_files_are_uploaded_once_per_content(orch, tmp_path):
    same = tmp_path / "same.txt"
    same.write_text("x\n")
    futures = [orch.submit("append", {"message": str(i), "file": same}) for i in range(3)]
    with open(same, "rb") as fileobj:
        futures.append(orch.submit("append", {"message": "3", "file": fileobj}))
    other = tmp_path / "other.txt"
    other.write_text("y\n")
    futures.append(orch.submit("append", {"message": "4", "file": other}))
    concurrent.futures.wait(futures, timeout=60)
    assert all(f.exception() is None for f in futures)
    # same.txt as a path three times and as an open file (same name, same bytes): one upload
    assert orch.stats["uploads"] == 2


def test_map_returns_a_thousand_results_in_order(orch, server):
    results = orch.map("echo", ({"n": i} for i in range(1000)), max_in_flight=200)
    assert results == [{"n": i} for i in range(1000)]
    # one waiting listing answers for many ends (test_extensions.py: without it, lists)
    assert orch.stats["done"] == 1000 and 0 < orch.stats["poll_wait"] < 1000


def test_map_raises_the_first_failure_and_cancels_the_rest(orch, server):
    def mine():
        return [j for j in server_jobs(server) if j.name.startswith("first-failure #")]

    def inputs():
        # The failing job reaches the server first, so it has one of the server's 4 slots
        # (the submit threads may send jobs in any order: behind four sleepers it would
        # only run, and fail, once they had ended).
        yield {"duration": -1}
        wait_for(lambda: mine(), what="the failing job on the server")
        yield from [{"duration": 31}] * 5
        # map sees the failure once the inputs are read: by then three sleep and two wait
        wait_for(lambda: len(mine()) == 6, what="all six jobs on the server")

    with pytest.raises(JobFailed):
        orch.map("sleep", inputs(), max_in_flight=6, name="first-failure")

    def the_rest():
        return [j for j in mine() if j.inputs.get("duration") == 31]

    assert len(the_rest()) == 5
    wait_for(lambda: all(j.state == JobState.CANCELLED for j in the_rest()), what="the "
             "other five jobs to be cancelled")
    outcome = orch.map("sleep", [{"duration": 0}, {"duration": -1}], return_exceptions=True)
    assert outcome[0] == {} and isinstance(outcome[1], JobFailed)


def test_executor_and_as_completed(orch):
    with orch.executor("echo") as pool:
        futures = [pool.submit({"n": i}) for i in range(5)] + [pool.submit(n=5)]
        assert list(pool.map({"n": i} for i in range(3))) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert sorted(f.result()["n"] for f in as_completed(futures, timeout=60)) == list(range(6))
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(n=1)


def test_map_shows_a_progress_bar_unless_told_not_to(orch, capfd):
    orch.map("echo", [{"n": i} for i in range(3)], progress=True)
    assert "3/3" in capfd.readouterr().err
    orch.map("echo", [{"n": i} for i in range(3)], progress=False)
    assert "3/3" not in capfd.readouterr().err


def test_an_interrupted_map_cancels_the_jobs_it_submitted(orch, server):
    def mine():
        return [j for j in server_jobs(server) if j.name.startswith("interrupted #")]

    def inputs():
        for i in range(3):
            yield {"duration": 30 + i}
        wait_for(lambda: len(mine()) == 3)  # all three reached the server
        raise KeyboardInterrupt  # Ctrl-C while the map is still reading its inputs

    with pytest.raises(KeyboardInterrupt):
        orch.map("sleep", inputs(), name="interrupted")
    assert orch.stats["cancelled"] == 3
    wait_for(lambda: all(j.state == JobState.CANCELLED for j in mine()))


def test_closing_without_waiting_leaves_jobs_running_and_fails_the_futures(server):
    orch = Orchestrator(server.client(), progress=False)
    future = orch.submit("sleep", {"duration": 30})
    wait_for(future.running)
    orch.close()
    assert isinstance(future.exception(), orchestrator.OrchestratorClosed)
    client = server.client()
    assert not client.job(future.job_id).is_done  # still running: a journal re-attaches
    client.cancel(future.job_id)


def test_leaving_the_context_with_an_error_cancels_the_jobs(server):
    with pytest.raises(RuntimeError, match="boom"):
        with Orchestrator(server.client(), progress=False) as orch:
            future = orch.submit("sleep", {"duration": 30})
            wait_for(future.running)
            raise RuntimeError("boom")
    assert future.cancelled()
    assert server.client().wait(future.job_id, timeout=30).state == JobState.CANCELLED
