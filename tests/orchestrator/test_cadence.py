"""The poller's pause rules: per-job schedules that learn durations, list-mode rate
targeting, bounds, error backoff."""

import pytest

from orchestrator.cadence import Cadence


def test_an_unknown_application_is_asked_soon_then_geometrically():
    c = Cadence(0.01, 2.0, growth=1.5)
    assert c.first_poll("app") == 0.01
    assert c.next_poll("app", 0.1) == pytest.approx(0.05)   # 50 % of the time run so far
    assert c.next_poll("app", 0.001) == 0.01                # never below the minimum
    assert c.next_poll("app", 100) == 2.0                   # nor above the maximum


def test_a_known_application_is_first_asked_near_its_fastest_duration():
    c = Cadence(0.01, 5.0)
    for seconds in (1.0, 1.2, 0.9, 1.1):
        c.record_duration("lorenz", seconds)
    assert c.first_poll("lorenz") == pytest.approx(0.72)    # 0.8 x fastest
    assert c.first_poll("other") == 0.01
    # while the answer is due (within twice the median) the pause grows by 20 % ...
    assert c.next_poll("lorenz", 1.0) == pytest.approx(0.2)
    # ... and by 50 % once the job runs far longer than usual
    assert c.next_poll("lorenz", 3.0) == pytest.approx(1.5)


def test_durations_are_remembered_for_the_last_few_jobs_only():
    c = Cadence(0.01, 5.0, memory=3)
    c.record_duration("a", 0.1)
    for _ in range(3):
        c.record_duration("a", 1.0)
    assert c.first_poll("a") == pytest.approx(0.8)


def test_listing_converges_to_target_jobs_per_tick():
    # 100 jobs/s finishing steadily, 200 in flight: aim at 16 per tick -> 0.16 s
    c = Cadence(0.01, 2.0, target_per_tick=16)
    c.start_listing()
    interval = c.interval
    for _ in range(30):
        finished = round(100 * interval)
        interval = c.after_list_tick(finished=finished, in_flight=200, elapsed=interval)
    assert interval == pytest.approx(0.16, rel=0.1)


def test_listing_target_shrinks_with_few_in_flight():
    c = Cadence(0.01, 2.0, target_per_tick=16)
    c.start_listing()
    interval = 0.05
    for _ in range(30):
        finished = max(1, round(100 * interval))
        interval = c.after_list_tick(finished=finished, in_flight=8, elapsed=interval)
    assert interval < 0.05  # 8 // 4 = 2 jobs per tick at 100/s is 0.02 s


def test_listing_changes_at_most_twofold_per_tick():
    c = Cadence(0.001, 10.0)
    c.interval, c.rate = 0.1, 0.0
    assert c.after_list_tick(finished=1, in_flight=100, elapsed=0.1) <= 0.2
    c.interval, c.rate = 1.0, 10000.0
    assert c.after_list_tick(finished=1000, in_flight=100, elapsed=0.1) >= 0.5


def test_listing_stretches_to_the_maximum_while_nothing_finishes():
    c = Cadence(0.01, 2.0, growth=1.5)
    c.start_listing()
    for _ in range(40):
        c.after_list_tick(finished=0, in_flight=5000, elapsed=c.interval)
    assert c.interval == 2.0


def test_errors_back_off_doubling_and_reset_after_success():
    c = Cadence(0.01, 3.0, error_floor=0.25)
    assert [c.after_error() for _ in range(3)] == [0.25, 0.5, 1.0]
    for _ in range(10):
        c.after_error()
    assert c.after_error() == 3.0
    c.after_success()
    assert c.after_error() == 0.25


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Cadence(0.5, 0.1)
    with pytest.raises(ValueError):
        Cadence(0, 1)
