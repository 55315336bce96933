"""The studies' GPU job slots (examples.common.gpu_slots): placement, and the order waiters start in.
Waiters are threads started one at a time; each start is awaited before the next, so the order is
the slots', not the threads' luck."""

import threading
import time

import pytest

from examples.common.gpu_slots import GpuSlots


def until(condition):
    for _ in range(2000):  # a hang guard, not a timing claim
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("the waiters never got there")


class Waiters:
    def __init__(self, slots):
        self.slots, self.got, self.lock = slots, [], threading.Lock()

    def waiting(self):
        with self.slots.cond:
            return len(self.slots.waiting)

    def start(self, units, priority):
        """A job asking for ``units`` slots; returns once it waits (or has its slots)."""
        before = self.waiting() + len(self.taken())

        def take():
            device, _ = self.slots.acquire(units, priority)
            with self.lock:
                self.got.append((priority, device))

        threading.Thread(target=take, daemon=True).start()
        until(lambda: self.waiting() + len(self.taken()) > before)

    def taken(self):
        with self.lock:
            return list(self.got)


def test_pack_fills_a_started_gpu_and_spread_the_least_loaded():
    pack = GpuSlots(["0", "1"], per_device=2)
    assert [pack.acquire(1, 0)[0], pack.acquire(1, 0)[0]] == ["0", "0"]  # "1" stays whole
    assert pack.acquire(2, 0) == ("1", 2)
    spread = GpuSlots(["0", "1"], per_device=2, placement="spread")
    assert [spread.acquire(1, 0)[0] for _ in range(3)] == ["0", "1", "0"]
    with pytest.raises(ValueError, match="placement"):
        GpuSlots(["0"], 2, placement="fill")


def test_a_whole_gpu_job_never_shares():
    s = GpuSlots(["0", "1"], per_device=2, placement="spread")
    assert s.acquire(2, 0) == ("0", 2)
    assert [s.acquire(1, 1)[0], s.acquire(1, 2)[0]] == ["1", "1"]  # not beside the lone run
    s.release("0", 2)
    assert s.acquire(1, 3)[0] == "0"


def test_cpu_is_one_slot_on_device_none():
    s = GpuSlots([None], per_device=1, placement="spread")
    assert s.acquire(2, 0) == (None, 1)  # a whole "GPU" is its one slot
    w = Waiters(s)
    w.start(1, 1)
    assert w.taken() == []
    s.release(None, 1)
    until(lambda: w.taken())
    assert w.taken() == [(1, None)]


def test_waiters_start_by_priority_not_arrival():
    s = GpuSlots(["0"], per_device=1)
    s.acquire(1, 0)
    w = Waiters(s)
    for priority in (3, 1, 2):
        w.start(1, priority)
    for expected in (1, 2, 3):
        s.release("0", 1)
        until(lambda: len(w.taken()) == expected)
    assert [p for p, _ in w.taken()] == [1, 2, 3]


def test_a_waiter_that_fits_nowhere_does_not_hold_back_one_that_fits():
    s = GpuSlots(["0"], per_device=2)
    s.acquire(1, 0)
    w = Waiters(s)
    w.start(2, 1)  # the whole GPU: waits for the first job
    w.start(1, 2)  # fits beside it now
    until(lambda: len(w.taken()) == 1)
    assert w.taken() == [(2, "0")]
    s.release("0", 1)
    s.release("0", 1)
    until(lambda: len(w.taken()) == 2)
    assert w.taken()[1] == (1, "0")


@pytest.mark.parametrize("placement", ["pack", "spread"])
def test_a_whole_gpu_job_is_not_overtaken_by_shared_jobs(placement):
    # the same-document study's order: whole-GPU jobs first, then shared ones; with every GPU held
    # whole, the next whole-GPU job gets the first GPU freed and the shared jobs wait for the next
    s = GpuSlots(["0", "1"], per_device=2, placement=placement)
    assert [s.acquire(2, 0)[0], s.acquire(2, 1)[0]] == ["0", "1"]
    w = Waiters(s)
    w.start(1, 3)
    w.start(2, 2)
    w.start(1, 4)
    s.release("1", 2)
    until(lambda: len(w.taken()) == 1)
    assert w.taken() == [(2, "1")] and w.waiting() == 2
    s.release("0", 2)
    until(lambda: len(w.taken()) == 3)
    assert w.taken()[1:] == [(3, "0"), (4, "0")]
