"""When to look at a batch next: a pure function of what has been observed so far.

Quick while Azure validates (minutes), spaced out while a long batch runs (the finish is estimated from
request_counts progress and the next look is set at a fraction of the time left), quick again near the estimated
end and while the batch finalizes or cancels. Every delay is bounded, so a wrong estimate costs at most one
MAX_DELAY of lateness.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_DELAY = 10.0  # seconds
MAX_DELAY = 15 * 60.0
VALIDATING_DELAY = (10.0, 60.0)  # from, to: validation takes seconds to a few minutes
FINALIZING_DELAY = (10.0, 60.0)
CANCELLING_DELAY = (15.0, 60.0)  # Azure documents up to 10 minutes of cancelling
FRACTION_OF_REMAINING = 0.5  # look again half-way to the estimated end
NO_PROGRESS_FRACTION = 0.25  # before any request is done, back off with the time spent waiting


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
    if not total or not done or started is None:
        return None
    elapsed = observation.now - started
    if elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


def poll_delay(observation: Observation) -> float:
    """Seconds to wait before the next status call."""
    status = observation.status
    if status == "validating":
        return _ramp(observation.now - observation.created_at, *VALIDATING_DELAY)
    if status == "finalizing":
        return _ramp(observation.now - (observation.finalizing_at or observation.now), *FINALIZING_DELAY)
    if status == "cancelling":
        return _ramp(observation.now - (observation.cancelling_at or observation.now), *CANCELLING_DELAY)
    if status == "in_progress":
        remaining = estimated_remaining(observation)
        if remaining is None:
            waited = observation.now - (observation.in_progress_at or observation.created_at)
            return _clamp(waited * NO_PROGRESS_FRACTION)
        return _clamp(remaining * FRACTION_OF_REMAINING)
    return MIN_DELAY  # unknown or terminal statuses: the caller stops polling terminal batches anyway


def _ramp(elapsed: float, start: float, end: float) -> float:
    """From `start` growing with the time already spent in this state, up to `end`."""
    return min(end, max(start, start + 0.1 * max(0.0, elapsed)))


def _clamp(seconds: float) -> float:
    return min(MAX_DELAY, max(MIN_DELAY, seconds))
