"""Job slots over the GPUs of a study: the one scheduler the quality and same-document studies share."""

import itertools
import threading

_NO_DEVICE = object()  # None is the CPU "device"
PLACEMENTS = ("pack", "spread")


class GpuSlots:
    """``per_device`` job slots on each device (``[None]`` with one slot: the CPU). A job takes
    ``units`` slots of one device (all of them: the GPU to itself, so that its words/s and peak
    memory are its own) and waits its turn: of the waiting jobs that fit somewhere, the one with the
    lowest priority number goes first.

    ``placement``: "pack" takes the fitting device with the fewest free slots, so that whole GPUs
    stay whole for later jobs that need all slots; "spread" takes the one with the most (the least
    loaded), so that a few shared jobs do not crowd one GPU while another idles."""

    def __init__(self, devices, per_device, placement="pack"):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement {placement!r}: one of {', '.join(PLACEMENTS)}")
        self.per_device = per_device
        self.free = {device: per_device for device in devices}
        self.choose = min if placement == "pack" else max  # ties: the first device listed
        self.cond = threading.Condition()
        self.waiting = []  # (priority, ticket, units)
        self.tickets = itertools.count()

    def _fits(self, units):
        fitting = [d for d, free in self.free.items() if free >= units]
        return self.choose(fitting, key=lambda d: self.free[d]) if fitting else _NO_DEVICE

    def acquire(self, units, priority):
        """Blocks until the job's turn; returns (device, units taken)."""
        units = min(units, self.per_device)
        with self.cond:
            me = (priority, next(self.tickets), units)
            self.waiting.append(me)
            while True:
                first = min((w for w in self.waiting if self._fits(w[2]) is not _NO_DEVICE), default=None)
                if first == me:
                    break
                self.cond.wait()
            self.waiting.remove(me)
            device = self._fits(units)
            self.free[device] -= units
            self.cond.notify_all()  # another waiter may fit what is left
            return device, units

    def release(self, device, units):
        with self.cond:
            self.free[device] += units
            self.cond.notify_all()
