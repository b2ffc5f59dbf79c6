"""When to look at a batch next: a pure function of what has been observed so far.

Quick while Azure validates (minutes), spaced out while a long batch runs (the finish is estimated from
request_counts progress and the next look is set at a fraction of the time left), quick again near the estimated
end and while the batch finalizes or cancels. The estimate comes from the average rate since the batch started
running, which understates the rate after a queue or a plateau; so it is never trusted beyond the time already spent
running, and the wait grows at most geometrically with the run. Every delay is bounded, so a wrong estimate costs at
most one MAX_DELAY of lateness. `bench/polling.py` measures the policy against a fixed 60-second poller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_DELAY = 10.0  # seconds; no delay is ever shorter
MAX_DELAY = 15 * 60.0  # nor longer
VALIDATING_DELAY = (10.0, 60.0)  # from, to: validation takes seconds to a few minutes
FINALIZING_DELAY = (10.0, 60.0)
CANCELLING_DELAY = (15.0, 60.0)  # Azure documents up to 10 minutes of cancelling
IN_PROGRESS_MIN_DELAY = 30.0  # near the estimated end: finalizing still follows, and it is polled quickly
FRACTION_OF_REMAINING = 0.5  # look again half-way to the estimated end (estimate capped at the time running)
NO_PROGRESS_FRACTION = 0.5  # before any request is done, back off with the time spent waiting
RAMP_RATE = 0.1  # validating/finalizing/cancelling: delay grows by this many seconds per second spent in the state


@dataclass(frozen=True)
class Observation:
    """What one status call showed (times in seconds; `now` and the stamps from the same clock)."""

    status: str
    now: float
    created_at: float
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    cancelling_at: float | None = None
    total: int | None = None
    completed: int | None = None
    failed: int | None = None

    @property
    def done(self) -> int:
        return (self.completed or 0) + (self.failed or 0)


def estimated_remaining(observation: Observation) -> float | None:
    """Seconds until all requests are done, from the average rate so far; None without progress to go on."""
    total, done, started = observation.total, observation.done, observation.in_progress_at
    if not total or done <= 0 or started is None:
        return None
    elapsed = observation.now - started
    if not elapsed > 0:  # also when a stamp is NaN
        return None
    return max(0.0, (total - done) * elapsed / done)


def poll_delay(observation: Observation) -> float:
    """Seconds to wait before the next status call, always within [MIN_DELAY, MAX_DELAY]."""
    status, now = observation.status, observation.now
    if status == "validating":
        return _ramp(now - observation.created_at, *VALIDATING_DELAY)
    if status == "finalizing":
        return _ramp(now - (observation.finalizing_at or now), *FINALIZING_DELAY)
    if status == "cancelling":
        return _ramp(now - (observation.cancelling_at or now), *CANCELLING_DELAY)
    if status == "in_progress":
        running = max(0.0, now - (observation.in_progress_at or observation.created_at))
        remaining = estimated_remaining(observation)
        if remaining is None:
            return _clamp(running * NO_PROGRESS_FRACTION, IN_PROGRESS_MIN_DELAY)
        return _clamp(min(remaining, running) * FRACTION_OF_REMAINING, IN_PROGRESS_MIN_DELAY)
    return MIN_DELAY  # unknown or terminal statuses: the caller stops polling terminal batches anyway


def _ramp(elapsed: float, start: float, end: float) -> float:
    """From `start` growing with the time already spent in this state, up to `end`."""
    return _clamp(start + RAMP_RATE * max(0.0, elapsed), start, end)


def _clamp(seconds: float, low: float = MIN_DELAY, high: float = MAX_DELAY) -> float:
    """`seconds` within [low, high] and within [MIN_DELAY, MAX_DELAY]; `low` when it is not a number."""
    low, high = max(MIN_DELAY, low), min(MAX_DELAY, high)
    return low if math.isnan(seconds) else min(high, max(low, seconds))
