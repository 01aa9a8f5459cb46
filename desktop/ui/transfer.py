"""Download progress as people read it: bytes, a smoothed speed and the time left."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Transfer:
    done: int
    total: int | None
    speed: float | None = None  # bytes per second over the last few seconds
    eta: float | None = None  # seconds left at that speed

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return max(0, min(100, self.done * 100 // self.total))


class TransferMeter:
    """Speed over a sliding window, so one slow or fast chunk does not swing the estimate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 3.0) -> None:
        self._clock = clock
        self._window = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def reset(self) -> None:
        self._samples.clear()

    def update(self, done: int, total: int | None) -> Transfer:
        now = self._clock()
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()  # the download started over
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        elapsed = now - first_t
        speed = (done - first_done) / elapsed if elapsed >= 0.5 and done > first_done else None
        eta = (total - done) / speed if speed and total and total >= done else None
        return Transfer(done, total, speed, eta)
