"""Reconnect delays: capped exponential backoff with full jitter (pure).

"Full jitter" (a uniformly random delay in ``[0, min(cap, base * 2**attempt)]``) spreads a fleet
of devices that all lost the broker at the same moment, so the broker is not hit by every device
again at the same instant when it comes back (the thundering herd). ``floor`` keeps a device from
spinning on a broker that refuses it at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.05
    rand: Callable[[], float] = field(default=random.random, repr=False)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < floor <= base <= cap, found {self.floor}, {self.base}, {self.cap}")

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return max(self.floor, ceiling * self.rand())

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``base`` again."""
        self.attempt = 0
