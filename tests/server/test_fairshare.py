"""The fair-share order of one queue (everest_local/fairshare.py), without a server."""

from __future__ import annotations

from collections import Counter

from everest_local.fairshare import FairQueue


def _drain(queue: FairQueue, running: Counter, slots: int, cap: int = 0) -> list[str]:
    """Start jobs while ``slots`` are free; return the ids in start order."""
    started = []
    while queue and sum(running.values()) < slots:
        picked = queue.take(lambda user: running[user], cap)
        if picked is None:
            break
        started.append(picked[0])
        running[picked[1]] += 1
    return started


def test_users_take_turns_and_a_newcomer_goes_first():
    queue = FairQueue()
    for job in ("a1", "a2", "a3"):
        queue.append(job, "alice")
    running: Counter = Counter()
    assert _drain(queue, running, 1) == ["a1"]
    queue.append("b1", "bob")
    order = []
    for _ in range(3):  # one slot: each end starts the next
        running.clear()
        order += _drain(queue, running, 1)
    assert order == ["b1", "a2", "a3"]


def test_running_counts_stay_even_and_the_cap_holds():
    queue = FairQueue()
    for i in range(4):
        queue.append(f"a{i}", "alice")
        queue.append(f"b{i}", "bob")
    queue.append("c0", "carol")
    running: Counter = Counter()
    assert _drain(queue, running, 3) == ["a0", "b0", "c0"]
    # six slots, at most two each: alice and bob get one more, then both are at the cap
    assert _drain(queue, running, 6, cap=2) == ["a1", "b1"]
    assert queue.take(lambda user: running[user], cap=2) is None
    assert len(queue) == 4 and "a2" in queue
    queue.remove("a3")
    assert "a3" not in queue and len(queue) == 3
    running["alice"] -= 1  # one of alice's ends: her next job keeps its place
    assert _drain(queue, running, 6, cap=2) == ["a2"]
