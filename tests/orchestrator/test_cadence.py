"""The poller's interval controller: resets, growth, rate targeting, bounds, backoff."""

import pytest

from orchestrator.cadence import Cadence


def test_few_jobs_reset_then_stretch_geometrically():
    c = Cadence(0.01, 2.0, growth=1.5)
    c.interval = 1.0
    c.on_new_jobs()
    assert c.interval == 0.01
    seen = [c.after_tick(finished=0, in_flight=1, elapsed=0.01, listing=False)
            for _ in range(3)]
    assert seen == pytest.approx([0.015, 0.0225, 0.03375])


def test_few_jobs_halve_when_one_finishes():
    c = Cadence(0.01, 2.0)
    c.interval = 0.4
    assert c.after_tick(finished=1, in_flight=2, elapsed=0.4, listing=False) == 0.2


def test_interval_stays_within_bounds():
    c = Cadence(0.05, 0.5)
    for _ in range(20):
        c.after_tick(finished=0, in_flight=1, elapsed=0.1, listing=False)
    assert c.interval == 0.5
    for _ in range(20):
        c.after_tick(finished=1, in_flight=1, elapsed=0.1, listing=False)
    assert c.interval == 0.05


def test_listing_converges_to_target_jobs_per_tick():
    # 100 jobs/s finishing steadily, 200 in flight: aim at 16 per tick -> 0.16 s
    c = Cadence(0.01, 2.0, target_per_tick=16)
    interval = 0.01
    for _ in range(30):
        finished = round(100 * interval)
        interval = c.after_tick(finished=finished, in_flight=200, elapsed=interval,
                                listing=True)
    assert interval == pytest.approx(0.16, rel=0.1)


def test_listing_target_shrinks_with_few_in_flight():
    c = Cadence(0.01, 2.0, target_per_tick=16)
    interval = 0.05
    for _ in range(30):
        finished = max(1, round(100 * interval))
        interval = c.after_tick(finished=finished, in_flight=8, elapsed=interval,
                                listing=True)
    assert interval < 0.05  # 8 // 4 = 2 jobs per tick at 100/s is 0.02 s


def test_listing_changes_at_most_twofold_per_tick():
    c = Cadence(0.001, 10.0)
    c.interval = 0.1
    c.rate = 0.0
    assert c.after_tick(finished=1, in_flight=100, elapsed=0.1, listing=True) <= 0.2
    c.interval = 1.0
    c.rate = 10000.0
    assert c.after_tick(finished=1000, in_flight=100, elapsed=0.1, listing=True) >= 0.5


def test_listing_stretches_while_nothing_finishes():
    c = Cadence(0.01, 2.0, growth=1.5)
    c.interval = 0.1
    for _ in range(40):
        c.after_tick(finished=0, in_flight=5000, elapsed=c.interval, listing=True)
    assert c.interval == 2.0


def test_errors_back_off_to_the_floor_then_double():
    c = Cadence(0.01, 3.0, error_floor=0.25)
    assert c.after_error() == 0.25
    assert c.after_error() == 0.5
    for _ in range(10):
        c.after_error()
    assert c.interval == 3.0


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Cadence(0.5, 0.1)
    with pytest.raises(ValueError):
        Cadence(0, 1)
