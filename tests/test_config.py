"""Profiles, precedence of environment over file, private token files."""

from __future__ import annotations

import stat

import pytest

from everest_app import config


def test_no_file_gives_an_empty_default_profile(home):
    profile = config.load_profile()
    assert (profile.name, profile.url, profile.token) == ("default", None, None)


def test_saved_profile_round_trips_and_keeps_others(home):
    config.save_profile(config.Profile("a", url="http://a", relay_url="http://ra"), token="ta")
    config.save_profile(config.Profile("b", url="http://b", launch={"time_limit": 60}),
                        token="tb", make_default=False)
    a, b = config.load_profile(), config.load_profile("b")
    assert (a.name, a.url, a.token, a.relay_url) == ("a", "http://a", "ta", "http://ra")
    assert (b.url, b.token, b.launch) == ("http://b", "tb", {"time_limit": 60})
    for path in (config.config_path(), a.default_token_file()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_environment_overrides_the_file(home, monkeypatch):
    config.save_profile(config.Profile("a", url="http://a"), token="ta")
    monkeypatch.setenv("EVEREST_URL", "http://env")
    monkeypatch.setenv("EVEREST_TOKEN", "te")
    monkeypatch.setenv("EVEREST_RELAY_URL", "http://relay-env")
    profile = config.load_profile()
    assert (profile.url, profile.token, profile.relay_url) == ("http://env", "te",
                                                               "http://relay-env")


def test_a_profile_token_is_not_sent_to_another_url(home):
    config.save_profile(config.Profile("a", url="http://a"), token="ta")
    assert config.load_profile(url="http://elsewhere").token is None
    assert config.load_profile(url="http://a").token == "ta"


def test_unknown_profile_names_the_known_ones(home):
    config.save_profile(config.Profile("a", url="http://a"))
    with pytest.raises(config.ConfigError, match=r"No profile 'zz'.*known: a"):
        config.load_profile("zz")


def test_a_broken_file_is_a_clear_error(home):
    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_text("- just\n- a list\n")
    with pytest.raises(config.ConfigError, match="must hold a YAML mapping"):
        config.load_profile()
