"""The relay session's state machine: the one transition table, walked through the store."""

from __future__ import annotations

import importlib.util
import itertools
import logging
from pathlib import Path

import pytest
import requests

from launcher.relay.state import (
    FINAL_STATES,
    LIVE_STATES,
    TRANSITIONS,
    SessionState,
    StopReason,
)
from launcher.relay.store import RelayStore, new_ticket

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):
    store = RelayStore(tmp_path / "relay.sqlite")
    yield store
    store.close()


def _session_in(store: RelayStore, state: SessionState) -> str:
    record = store.create(owner="alice", ticket=new_ticket(), ttl=60, listen_port=1,
                          mode="lab")
    # put it there directly: the walk tests moves *from* every state, reachable or not
    store._db.execute("UPDATE sessions SET state=? WHERE id=?", (state.value, record.id))
    return record.id


def test_every_move_the_table_allows_is_made_and_every_other_refused_and_logged(
        store: RelayStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="launcher.relay.state")
    for old, new in itertools.product(SessionState, SessionState):
        sid = _session_in(store, old)
        caplog.clear()
        moved = store.set_state(sid, new)
        assert moved == (new in TRANSITIONS[old]), (old, new)
        assert store.get(sid).state is (new if moved else old)
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == (0 if moved else 1), (old, new)
        if not moved:
            assert sid in refusals[0].getMessage()


def test_the_table_covers_every_state_and_every_live_state_can_end() -> None:
    assert set(TRANSITIONS) == set(SessionState)
    assert FINAL_STATES == {SessionState.ENDED, SessionState.EXPIRED}
    assert LIVE_STATES | FINAL_STATES == set(SessionState)
    for state in LIVE_STATES:
        assert SessionState.ENDED in TRANSITIONS[state] and state.live
    # every state is reachable from a new session
    seen, todo = {SessionState.WAITING}, [SessionState.WAITING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(SessionState)


def test_the_store_keeps_its_own_moves_inside_the_table(store: RelayStore) -> None:
    record = store.create(owner="alice", ticket="t", ttl=-1, listen_port=1, mode="lab")
    assert store.get(record.id).state is SessionState.WAITING
    assert store.expire_tickets() == [record.id]
    assert store.get(record.id).state is SessionState.EXPIRED
    assert not store.set_state(record.id, SessionState.ENDED)  # expired is final
    live = store.create(owner="alice", ticket="u", ttl=60, listen_port=2, mode="lab")
    assert store.redeem("u", "ssh-ed25519 AAAA", "tok", {}).state is SessionState.STARTING
    assert store.set_state(live.id, SessionState.CONNECTED)
    assert store.set_state(live.id, SessionState.READY)
    assert store.reset_connections() == [live.id]
    assert store.get(live.id).state is SessionState.DISCONNECTED


def _runner_stop_reason() -> type:
    spec = importlib.util.spec_from_file_location(
        "runner_stop", ROOT / "agent_scripts" / "runner_stop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StopReason


def test_the_relay_knows_every_stop_reason_the_runner_sends() -> None:
    runner = _runner_stop_reason()
    assert {r.value for r in runner} == {r.value for r in StopReason} - {"unknown"}
    for reason in runner:
        assert StopReason.parse(reason.value).name == reason.name
    assert StopReason.parse("a-newer-reason") is StopReason.UNKNOWN
    assert StopReason.parse(None) is StopReason.UNKNOWN


def test_the_runner_says_why_it_stopped_and_the_session_keeps_it(relay, alice) -> None:
    """Through a real relay: ``POST .../ended`` with a ``stop`` ends the session and keeps
    the reason in its view; a reason this relay does not know is kept as ``unknown``."""
    from tests.harness.runner import new_key, public_text, redeem

    views = {}
    for stop in ("idle", "a-newer-reason", 42):
        session = alice.new_session()
        grant = redeem(relay.url, session["ticket"], public_text(new_key())).json()
        ended = requests.post(f"{relay.url}/api/sessions/{session['id']}/ended", timeout=30,
                              json={"end_token": grant["end_token"], "stop": stop,
                                    "reason": "idle for 3 s (idle timeout 3 s)"})
        views[stop] = (ended.status_code, alice.session(session["id"]))
    assert views["idle"][0] == 200 and views["idle"][1]["state"] == "ended"
    assert views["idle"][1]["stop_reason"] == "idle"
    assert views["a-newer-reason"][1]["stop_reason"] == "unknown"
    assert views[42][0] == 400 and views[42][1]["state"] == "starting"  # refused, unchanged
