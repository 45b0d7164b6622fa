"""Back-off and restart intensity as data, on fake time."""

from __future__ import annotations

import itertools
import random

import pytest

from supervisor.policy import Backoff, BackoffSequence, RestartIntensity


def test_back_off_doubles_from_half_a_second_up_to_thirty() -> None:
    delays = list(itertools.islice(BackoffSequence(), 10))
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_jitter_stays_within_its_band_and_under_the_cap() -> None:
    backoff = Backoff(BackoffSequence(0.5, 30), jitter=0.2, rng=random.Random(7))
    bases = list(itertools.islice(BackoffSequence(0.5, 30), 12))
    delays = [backoff.next_delay() for _ in bases]
    for base, delay in zip(bases, delays):
        assert base * 0.8 <= delay <= min(base * 1.2, 30)
    assert len(set(delays)) == len(delays), "jitter should make the delays differ"


def test_back_off_starts_over_after_reset() -> None:
    backoff = Backoff(BackoffSequence(1, 8), jitter=0)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    backoff.reset()
    assert backoff.next_delay() == 1 and backoff.attempt == 1


def test_jitter_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


def test_more_than_max_restarts_within_the_window_exceeds_the_intensity() -> None:
    intensity = RestartIntensity(max_restarts=3, window=60)
    assert [intensity.record(t) for t in (0, 1, 2)] == [False, False, False]
    assert intensity.record(3) is True


def test_restarts_outside_the_window_are_forgotten() -> None:
    intensity = RestartIntensity(max_restarts=2, window=10)
    assert not intensity.record(0)
    assert not intensity.record(5)
    assert not intensity.record(10.5)  # the one at 0 fell out of the window
    assert intensity.count(10.5) == 2
    assert not intensity.record(21)  # 5 and 10.5 are out: one restart in the window
    assert not intensity.record(21.1)
    assert intensity.record(21.2) is True


def test_zero_restarts_allowed_gives_up_on_the_first() -> None:
    assert RestartIntensity(max_restarts=0, window=60).record(0) is True
