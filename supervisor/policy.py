"""Restart policy as data: the back-off sequence and the restart-intensity window.

Both are pure and take time as an argument, so tests drive them with fake clocks.

* :class:`Backoff` — exponential delays (``initial``, ×``factor`` each time, capped at ``maximum``) with
  multiplicative jitter, reset after a run that lasted long enough to count as stable.
* :class:`RestartIntensity` — Erlang's supervisor intensity: more than ``max_restarts`` restarts within
  ``window`` seconds means the child is crash-looping and flanneld gives up.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffSequence:
    """The delays before consecutive restarts, without jitter."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def __iter__(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield min(delay, self.maximum)
            delay = min(delay * self.factor, self.maximum)


@dataclass
class Backoff:
    """Stateful back-off: :meth:`next_delay` walks the sequence, :meth:`reset` starts it over.

    Jitter multiplies each delay by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` (the
    result never exceeds ``sequence.maximum``), so that children restarting together spread out.
    """

    sequence: BackoffSequence = field(default_factory=BackoffSequence)
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _steps: Iterator[float] = field(init=False, repr=False)
    attempt: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        self.reset()

    def reset(self) -> None:
        self._steps = iter(self.sequence)
        self.attempt = 0

    def next_delay(self) -> float:
        base = next(self._steps)
        self.attempt += 1
        factor = 1 + self.rng.uniform(-self.jitter, self.jitter)
        return min(base * factor, self.sequence.maximum)


@dataclass
class RestartIntensity:
    """Counts restarts in a sliding window; :meth:`record` says whether the limit is exceeded."""

    max_restarts: int = 5
    window: float = 60.0
    _times: deque[float] = field(init=False, default_factory=deque, repr=False)

    def record(self, now: float) -> bool:
        """Record a restart at ``now``; True when more than ``max_restarts`` fall within the window."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) > self.max_restarts

    def count(self, now: float) -> int:
        """Restarts within the window ending at ``now``."""
        return sum(1 for t in self._times if t > now - self.window)
