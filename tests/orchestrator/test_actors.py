"""Templet-style actors on a real local server: the master/worker sweep and the diamond."""

from __future__ import annotations

import pytest
from actor_samples import SweepMaster, SweepWorker, diamond

from everest_app.errors import BadRequestError
from everest_app.states import JobState
from orchestrator import Actor


def test_master_worker_sweep_bounds_jobs_by_workers_and_collects_every_result(orch):
    params = [{"r": float(r), "s": 10.0, "b": 8 / 3, "t": 5} for r in range(10, 22)]
    params.append({"r": 28.0, "s": 10.0, "b": 8 / 3, "t": -1})  # refused by the server
    workers = [SweepWorker("lorenz-lyapunov") for _ in range(3)]
    master = SweepMaster(params, workers)
    orch.run([master, *workers])
    assert len(master.results) == len(params) and master.peak == 3
    assert sorted(p["r"] for p, _ in master.results) == sorted(p["r"] for p in params)
    for p, future in master.results:
        if p["t"] < 0:
            assert isinstance(future.exception(), BadRequestError)  # delivered, run went on
            continue
        out = future.result()
        assert out["L1"] + out["L2"] + out["L3"] == pytest.approx(-(p["s"] + 1 + p["b"]),
                                                                  abs=1e-3)
    assert orch.stats["submitted"] == len(params) - 1


def test_diamond_joins_both_branches(orch, tmp_path):
    start = tmp_path / "start.txt"
    start.write_text("start\n")

    def a(_):
        return "append", {"message": "a", "file": start}

    def b(msgs):
        return "append", {"message": "b", "file": msgs["A"].output("file")}

    def c(msgs):
        return "append", {"message": "c", "file": msgs["A"].output("file")}

    def d(msgs):  # D uses data of both branches: B's file, and the last line of C's file
        last_of_c = orch.read(msgs["C"].result()["file"]).decode().splitlines()[-1]
        return "append", {"message": "d+" + last_of_c, "file": msgs["B"].output("file")}

    nodes, events = diamond(a, b, c, d)
    orch.run(nodes)
    final = nodes[3].future.result()["file"]
    assert orch.read(final) == b"start\na\nb\nd+c\n"
    order = [f"{n}:{e}" for n, e in events]
    assert order[:3] == ["A:submit", "A:done", "B:submit"] and order[3] == "C:submit"
    assert order.index("D:submit") > max(order.index("B:done"), order.index("C:done"))
    assert order[-1] == "D:done"


class Recorder(Actor):
    """Submits a job at start, gets a message meanwhile: the message must wait for it."""

    def __init__(self, log):
        self.log = log

    def start(self):
        self.submit("sleep", {"duration": 0.3})
        self.send(self, "hello")
        self.log.append("sent")

    def on_job(self, future):
        self.log.append("job " + str(future.state))

    def receive(self, message, sender):
        self.log.append(f"{message} from {'self' if sender is self else sender}")


def test_a_suspended_actor_gets_its_messages_after_its_job(orch):
    log: list[str] = []
    orch.run([Recorder(log)])
    assert log == ["sent", "job DONE", "hello from self"]


class Broken(Actor):
    def start(self):
        self.future = self.submit("sleep", {"duration": 60}, then=self.ignore)
        self.send(Other(), "x")  # not part of the run

    def ignore(self, future):
        pass


class Other(Actor):
    pass


def test_a_handler_error_stops_the_run_and_cancels_its_jobs(orch, server):
    actor = Broken()
    with pytest.raises(ValueError, match="not an actor of this run"):
        orch.run([actor])
    assert actor.future.cancelled()
    job_id = actor.future.job_id
    if job_id is not None:  # it may have been cancelled before it was even submitted
        assert server.client().wait(job_id, timeout=30).state == JobState.CANCELLED


class Stopper(Actor):
    def start(self):
        self.futures = [self.submit("sleep", {"duration": 60}) for _ in range(2)]
        self.submit("sleep", {"duration": 0}, then=lambda f: self.stop())


def test_stop_ends_the_run_and_cancels_the_rest(orch):
    actor = Stopper()
    orch.run([actor])
    assert all(f.cancelled() for f in actor.futures)
