"""When to look at a batch next: a pure function of what has been observed so far.

Every status call costs a request against the resource and a few storage transactions for the orchestration's
history, and users care more about those than about seeing the end a minute sooner. So the policy looks often only
where it pays: every 2 minutes while the batch validates (minutes), a little quicker while it finalizes (the end
that matters: the batch turns completed there), and while it is in progress it waits a share of the time left,
estimated from `request_counts` at the average rate since the batch started running. That estimate understates the
rate after a queue or a plateau, so it is never trusted beyond a multiple of the time already spent running (the
wait grows at most geometrically with the run), and no in-progress wait is shorter than `near_end`: a batch still
finalizes for a minute or more after its last request, so looking every few minutes near the end rarely sees it late,
and a slow tail of requests does not turn into a poll every few seconds. Every wait is bounded by `longest`, so a
wrong estimate costs at most one `longest` of lateness, and none ends more than `after_expiry` past the completion
window's end (`expires_at`), where Azure expires the batch. `bench/polling.py` measures the policy against a fixed
60-second poller and prints the trade-off (calls against detection delay) for a few settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_DELAY = 10.0  # seconds; no delay is ever shorter
MAX_DELAY = 60 * 60.0  # nor longer: a wrong estimate may cost this much lateness (the run's deadline and a cancel
# still end any wait early, see shared/batch_run.py)


@dataclass(frozen=True)
class PollingPolicy:
    """The settings of `poll_delay` (seconds, or shares); `DEFAULT_POLICY` is what the orchestrator uses.

    A ramp (from, to) starts at `from` on entering the state and grows by `ramp_rate` seconds per second spent in it,
    up to `to`: a state seen late (after a long wait) is already old and needs no quick first look.
    """

    validating: tuple[float, float] = (120.0, 120.0)  # Azure validates in seconds to several minutes: every 2 min
    finalizing: tuple[float, float] = (60.0, 90.0)  # the end users wait for: minutes of writing the output files
    cancelling: tuple[float, float] = (15.0, 60.0)  # Azure documents up to 10 minutes; the user asked, so look soon
    ramp_rate: float = 0.25
    share_of_remaining: float = 0.5  # in progress: look again this far to the estimated end
    trust_in_running: float = 1.5  # the estimate is capped at this many times the time already running
    no_progress_share: float = 0.5  # in progress with nothing done yet: wait this share of the time running
    near_end: float = 180.0  # the shortest in-progress wait
    longest: float = 30 * 60.0  # the longest in-progress wait
    after_expiry: float = 60.0  # look this long after `expires_at` at the latest

    def __post_init__(self) -> None:
        """Refuses settings that would break the bounds: every delay stays within [MIN_DELAY, MAX_DELAY]."""
        waits = (*self.validating, *self.finalizing, *self.cancelling, self.near_end, self.longest, self.after_expiry)
        if not all(MIN_DELAY <= wait <= MAX_DELAY for wait in waits):
            raise ValueError(f"every wait must be within [{MIN_DELAY}, {MAX_DELAY}] seconds")
        ramps = (self.validating, self.finalizing, self.cancelling, (self.near_end, self.longest))
        if any(low > high for low, high in ramps):
            raise ValueError("a range's lower end is above its upper end")
        shares = (self.ramp_rate, self.share_of_remaining, self.trust_in_running, self.no_progress_share)
        if not all(0.0 <= share < math.inf for share in shares):
            raise ValueError("shares and rates must be finite and not negative")


DEFAULT_POLICY = PollingPolicy()


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
    expires_at: float | None = None  # the end of the completion window: Azure expires the batch there

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


def poll_delay(observation: Observation, policy: PollingPolicy = DEFAULT_POLICY) -> float:
    """Seconds to wait before the next status call, always within [MIN_DELAY, MAX_DELAY]."""
    status, now = observation.status, observation.now
    rate = policy.ramp_rate
    if status == "validating":
        delay = _ramp(now - observation.created_at, *policy.validating, rate)
    elif status == "finalizing":
        delay = _ramp(now - (observation.finalizing_at or now), *policy.finalizing, rate)
    elif status == "cancelling":
        delay = _ramp(now - (observation.cancelling_at or now), *policy.cancelling, rate)
    elif status == "in_progress":
        delay = _in_progress_delay(observation, policy)
    else:
        return MIN_DELAY  # unknown or terminal statuses: the caller stops polling terminal batches anyway
    return _clamp(min(delay, _until_expiry(observation, policy)))


def _in_progress_delay(observation: Observation, policy: PollingPolicy) -> float:
    """A share of the estimated time left (capped by the time running), within [near_end, longest]."""
    running = max(0.0, observation.now - (observation.in_progress_at or observation.created_at))
    remaining = estimated_remaining(observation)
    if remaining is None:  # nothing done yet (queued), or no counts: back off with the time already waited
        wait = running * policy.no_progress_share
    else:
        wait = min(remaining, running * policy.trust_in_running) * policy.share_of_remaining
    return _clamp(wait, policy.near_end, policy.longest)


def _until_expiry(observation: Observation, policy: PollingPolicy) -> float:
    """The longest wait that still looks `after_expiry` past the completion window's end (MAX_DELAY without one).

    Past the window's end Azure is expiring the batch: look again within `near_end`.
    """
    if observation.expires_at is None:
        return MAX_DELAY
    left = observation.expires_at - observation.now
    if math.isnan(left):
        return MAX_DELAY
    return left + policy.after_expiry if left >= 0 else policy.near_end


def _ramp(elapsed: float, start: float, end: float, rate: float) -> float:
    """From `start` growing with the time already spent in this state, up to `end`; `start` if the clocks disagree."""
    return _clamp(start + rate * elapsed, start, end)


def _clamp(seconds: float, low: float = MIN_DELAY, high: float = MAX_DELAY) -> float:
    """`seconds` within [low, high] and within [MIN_DELAY, MAX_DELAY]; `low` when it is not a number."""
    low, high = max(MIN_DELAY, low), min(MAX_DELAY, high)
    return low if math.isnan(seconds) else min(high, max(low, seconds))
