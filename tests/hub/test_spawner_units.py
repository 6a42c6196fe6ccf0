"""EverestSpawner's parts without a hub: profiles and their form, failures a user can read,
versioned state, ``poll()`` against an Everest that does not answer, internal_ssl refused,
what the orphan sweep cancels."""

from __future__ import annotations

import time

import pytest
from jupyterhub.spawner import Spawner

from launcher.hub import profiles as prof
from launcher.hub import spawner as spawner_module
from launcher.hub import sweep as sweep_module
from launcher.hub.api import JsonApi
from launcher.hub.jobs import JobCache, Snapshot
from launcher.hub.spawner import STATE_VERSION, EverestSpawner, spawn_failure
from tests.fixtures.loops import run_coroutine
from tests.harness.processes import free_port


class _User:
    def __init__(self, name: str = "zed"):
        self.name = name

    async def get_auth_state(self):
        return None


def _spawner(user: str = "zed", **config) -> EverestSpawner:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return EverestSpawner(user=_User(user), everest_url=dead, relay_url=dead, everest_token="t",
                          http_request_timeout=1.0, **config)


PROFILES = [{"display_name": "Small <VM>", "resource": "vm", "time_limit": 60},
            {"display_name": "GPU", "slug": "gpu", "packages": ["torch"], "default": True}]


def test_profiles_are_checked_and_chosen() -> None:
    profiles = prof.parse_profiles(PROFILES)
    assert [p.slug for p in profiles] == ["small-vm", "gpu"]
    assert prof.choose(profiles, {}).slug == "gpu"  # the default one
    assert prof.choose(profiles, {"profile": "small-vm"}).resource == "vm"
    for options, said in (({"profile": "huge"}, "no profile 'huge'"),
                          ({"profile": "gpu", "image": "x"}, r"unknown options \['image'\]")):
        with pytest.raises(prof.ProfileError, match=said):
            prof.choose(profiles, options)
    with pytest.raises(prof.ProfileError, match="offers no profiles"):
        prof.choose([], {"profile": "gpu"})
    for bad, said in (([{"slug": "x"}], "display_name"), ([{"display_name": "a", "cpu": 1}],
                      "unknown keys"), ([{"display_name": "a", "time_limit": "1h"}],
                      "time_limit"), ([{"display_name": "a", "packages": ["--index-url=x"]}],
                      "packages"), ([{"display_name": "a"}, {"display_name": "A"}], "distinct")):
        with pytest.raises(prof.ProfileError, match=said):
            prof.parse_profiles(bad)


def test_the_form_offers_the_profiles_escaped() -> None:
    form = prof.options_form(prof.parse_profiles(PROFILES), chosen="small-vm")
    assert "Small &lt;VM&gt;" in form and "<VM>" not in form
    assert 'value="small-vm" checked' in form and 'value="gpu">' in form
    assert prof.options_from_form({"profile": ["gpu"], "other": ["x"]}) == {"profile": "gpu"}
    with pytest.raises(Exception, match="display_name"):
        _spawner(profiles=[{"resource": "x"}])  # an admin's mistake stops the hub's start


def test_failures_carry_the_message_the_user_sees() -> None:
    exc = spawn_failure("Your job failed: quota <exceeded>", log_message="job 42: raw detail")
    assert exc.jupyterhub_message == "Your job failed: quota <exceeded>"
    assert exc.jupyterhub_html_message == "Your job failed: quota &lt;exceeded&gt;"
    assert "raw detail" in str(exc.log_message)


def test_state_is_versioned_and_cleared() -> None:
    spawner = _spawner()
    assert "job_id" not in spawner.get_state()
    spawner.job_id, spawner.session_id = "j1", "s1"
    state = spawner.get_state()
    assert state["everest_spawner_version"] == STATE_VERSION and state["job_id"] == "j1"
    other = _spawner()
    other.load_state(state)
    assert (other.job_id, other.session_id) == ("j1", "s1")
    other.clear_state()
    assert other.job_id is None and "job_id" not in other.get_state()


def test_poll_never_raises_and_gives_up_only_after_its_grace() -> None:
    spawner = _spawner(poll_grace=60)
    spawner.job_id = "j1"
    assert run_coroutine(spawner.poll()) is None  # Everest unreachable: still running
    spawner.poll_grace = 0
    assert run_coroutine(spawner.poll()) == 1
    assert run_coroutine(_spawner().poll()) == 0  # no job, no Everest: not running


def test_internal_ssl_is_refused() -> None:
    spawner = _spawner()
    spawner.internal_ssl = True
    with pytest.raises(Exception) as info:
        run_coroutine(spawner.start())
    assert "internal_ssl" in info.value.jupyterhub_message
    with pytest.raises(Exception, match="internal_ssl"):
        run_coroutine(spawner.move_certs({}))
    assert issubclass(EverestSpawner, Spawner)


def test_the_sweep_cancels_what_no_server_owns_or_is_starting(monkeypatch) -> None:
    owner, starting = _spawner("amy", hub_id="h"), _spawner("bob", hub_id="h")
    owner.job_id = "owned"
    starting._starting = True  # submitted, Everest's answer not yet read
    jobs = {"owned": {"name": owner.job_name, "state": "RUNNING"},
            "starting": {"name": starting.job_name, "state": "SUBMITTED"},
            "ghost": {"name": "jupyterhub:h/ghost/", "state": "SUBMITTED"},
            "ended": {"name": "jupyterhub:h/old/", "state": "CANCELLED"},
            "other hub": {"name": "jupyterhub:elsewhere/a/", "state": "RUNNING"}}
    cache = JobCache(JsonApi(f"http://127.0.0.1:{free_port()}", "t"))
    cancelled: list[str] = []

    async def cancel(everest, job_id):
        cancelled.append(job_id)

    monkeypatch.setattr(sweep_module, "all_caches", lambda: [cache])
    monkeypatch.setattr(sweep_module, "cancel_job", cancel)

    def sweep(suspects: set[str]) -> set[str]:
        cache.snapshot = Snapshot(jobs, time.monotonic())
        return run_coroutine(sweep_module.sweep_once("jupyterhub:h/", suspects, 3600,
                                                     spawner_module._owners()))

    suspects = sweep(set())
    assert suspects == {"ghost"} and cancelled == []  # seen once: only suspected
    suspects = sweep(sweep(suspects))
    assert suspects == {"ghost"} and cancelled == ["ghost", "ghost"]
    starting._starting = False  # the start ended without owning its job: swept like any
    assert sweep(sweep(set())) == {"ghost", "starting"}
    assert sorted(cancelled[2:]) == ["ghost", "starting"]


def test_each_server_names_its_workspace_unless_switched_off(monkeypatch) -> None:
    assert _spawner("zed").workspace_name == "zed"
    off = _spawner("zed", workspaces=False)
    assert off.workspace_name is None
    assert off.launch_options(None).inputs("http://r", "t", "http://e")["workspace"] == ""
    monkeypatch.setattr(EverestSpawner, "name", property(lambda self: "gpu"))  # a named one
    assert _spawner("zed").workspace_name == "zed/gpu"
