"""The poll-interval policy: quick when something is about to change, spaced out while a long batch runs."""

from __future__ import annotations

import math
import random

import pytest

from shared.polling import (
    CANCELLING_DELAY,
    FINALIZING_DELAY,
    FRACTION_OF_REMAINING,
    IN_PROGRESS_MIN_DELAY,
    MAX_DELAY,
    MIN_DELAY,
    NO_PROGRESS_FRACTION,
    VALIDATING_DELAY,
    Observation,
    estimated_remaining,
    poll_delay,
)

T0 = 1_730_000_000.0  # Azure's created_at, whole seconds
MINUTE, HOUR = 60.0, 3600.0
STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "expired", "cancelled")


def running(after: float, done: int | None, total: int | None = 1000, failed: int | None = 0) -> Observation:
    """An in_progress batch `after` seconds into running (it validated for a minute), `done` requests completed."""
    return Observation(
        "in_progress",
        now=T0 + MINUTE + after,
        created_at=T0,
        in_progress_at=T0 + MINUTE,
        total=total,
        completed=done,
        failed=failed,
    )


def random_observation(rng: random.Random) -> Observation:
    """Anything a status call could show, including clock skew, odd counts and missing stamps."""

    def stamp() -> float | None:
        return rng.choice([None, T0 + rng.uniform(-HOUR, 30 * HOUR)])

    def count() -> int | None:
        return rng.choice([None, 0, rng.randint(0, 100_000), rng.randint(-5, 5)])

    return Observation(
        status=rng.choice([*STATUSES, "", "queued"]),
        now=T0 + rng.choice([rng.uniform(-HOUR, 30 * HOUR), rng.uniform(-5, 5), 0.0]),
        created_at=T0,
        in_progress_at=stamp(),
        finalizing_at=stamp(),
        cancelling_at=stamp(),
        total=count(),
        completed=count(),
        failed=count(),
    )


# Validating


def test_validating_is_polled_quickly_at_first() -> None:
    assert poll_delay(Observation("validating", now=T0, created_at=T0)) == VALIDATING_DELAY[0] == MIN_DELAY


def test_validating_delay_grows_with_the_time_spent_validating() -> None:
    delays = [poll_delay(Observation("validating", now=T0 + t, created_at=T0)) for t in range(0, 3600, 5)]
    assert delays == sorted(delays)
    assert delays[0] < delays[12] < delays[60]  # grows within the first minutes
    assert poll_delay(Observation("validating", now=T0 + 2 * MINUTE, created_at=T0)) == pytest.approx(22.0)


def test_validating_delay_is_bounded_however_long_validation_takes() -> None:
    for hours in (0.25, 1, 6, 24, 1000):
        assert poll_delay(Observation("validating", now=T0 + hours * HOUR, created_at=T0)) == VALIDATING_DELAY[1]


def test_a_ten_minute_validation_failure_is_seen_within_a_minute() -> None:
    t, seen_at = 0.0, None
    while seen_at is None:
        t += poll_delay(Observation("validating", now=T0 + t, created_at=T0))
        seen_at = t if t >= 10 * MINUTE else None
    assert seen_at - 10 * MINUTE <= VALIDATING_DELAY[1]


# In progress


def test_in_progress_next_look_is_a_fraction_of_the_estimated_remaining_time() -> None:
    observation = running(after=20 * MINUTE, done=800)  # 800 of 1000 in 20 minutes: 5 minutes to go
    assert estimated_remaining(observation) == pytest.approx(5 * MINUTE)
    assert poll_delay(observation) == pytest.approx(FRACTION_OF_REMAINING * 5 * MINUTE) == 150.0


@pytest.mark.parametrize(
    ("after", "done", "remaining"),
    [(HOUR, 900, 400.0), (2 * HOUR, 750, 2400.0), (30 * MINUTE, 600, 1200.0)],
)
def test_estimated_remaining_comes_from_the_average_rate_so_far(after: float, done: int, remaining: float) -> None:
    observation = running(after=after, done=done)
    assert estimated_remaining(observation) == pytest.approx(remaining)
    assert poll_delay(observation) == pytest.approx(min(MAX_DELAY, FRACTION_OF_REMAINING * remaining))


def test_failed_requests_count_as_progress() -> None:
    assert estimated_remaining(running(after=HOUR, done=600, failed=300)) == pytest.approx(400.0)
    assert poll_delay(running(after=HOUR, done=600, failed=300)) == poll_delay(running(after=HOUR, done=900))


def test_long_batch_in_progress_is_spaced_out_to_the_longest_delay() -> None:
    for after, done in ((3 * HOUR, 300), (6 * HOUR, 500), (12 * HOUR, 700), (20 * HOUR, 900)):
        assert poll_delay(running(after=after, done=done)) == MAX_DELAY


def test_estimate_is_not_trusted_beyond_the_time_already_running() -> None:
    # 10% in 10 minutes estimates 90 minutes to go, but a batch that sat queued may be done in 10: wait 5 minutes.
    observation = running(after=10 * MINUTE, done=100)
    assert estimated_remaining(observation) == pytest.approx(90 * MINUTE)
    assert poll_delay(observation) == pytest.approx(FRACTION_OF_REMAINING * 10 * MINUTE)


def test_quick_again_near_the_estimated_end() -> None:
    assert poll_delay(running(after=5 * HOUR, done=990)) == pytest.approx(FRACTION_OF_REMAINING * 10 * 5 * HOUR / 990)
    assert poll_delay(running(after=5 * HOUR, done=999)) == IN_PROGRESS_MIN_DELAY  # 18 s to go
    assert poll_delay(running(after=5 * HOUR, done=1000)) == IN_PROGRESS_MIN_DELAY
    assert poll_delay(running(after=5 * HOUR, done=1000, total=1000_000)) == MAX_DELAY  # same time, far from done


def test_in_progress_delay_shrinks_as_the_batch_nears_its_end() -> None:
    for after in (5 * MINUTE, HOUR, 6 * HOUR, 20 * HOUR):
        delays = [poll_delay(running(after=after, done=done)) for done in range(1, 1001)]
        assert delays == sorted(delays, reverse=True)
        assert delays[-1] == IN_PROGRESS_MIN_DELAY


def test_no_progress_yet_backs_off_with_the_time_already_waited() -> None:
    waits = (0.0, 30.0, 60.0, 10 * MINUTE, 20 * MINUTE, HOUR, 10 * HOUR)
    delays = [poll_delay(running(after=w, done=0)) for w in waits]
    assert delays == sorted(delays)
    expected = [min(MAX_DELAY, max(IN_PROGRESS_MIN_DELAY, NO_PROGRESS_FRACTION * w)) for w in waits]
    assert delays == pytest.approx(expected)
    assert delays[3] == pytest.approx(300.0)
    assert delays[-1] == MAX_DELAY


def test_zero_total_while_in_progress_is_treated_as_no_progress() -> None:
    assert estimated_remaining(running(after=HOUR, done=0, total=0)) is None
    assert poll_delay(running(after=HOUR, done=0, total=0)) == poll_delay(running(after=HOUR, done=0))


def test_null_request_counts_are_tolerated() -> None:
    nulls = running(after=20 * MINUTE, done=None, total=None, failed=None)
    assert estimated_remaining(nulls) is None
    assert poll_delay(nulls) == pytest.approx(NO_PROGRESS_FRACTION * 20 * MINUTE)
    assert poll_delay(running(after=20 * MINUTE, done=None, total=1000, failed=None)) == poll_delay(nulls)
    # what a batch that failed validation reports, should the caller ask anyway
    assert poll_delay(Observation("failed", now=T0 + MINUTE, created_at=T0)) == MIN_DELAY


def test_in_progress_without_its_stamp_counts_from_creation() -> None:
    observation = Observation("in_progress", now=T0 + 20 * MINUTE, created_at=T0, total=1000, completed=500, failed=0)
    assert estimated_remaining(observation) is None
    assert poll_delay(observation) == pytest.approx(NO_PROGRESS_FRACTION * 20 * MINUTE)


def test_in_progress_wait_never_exceeds_half_the_time_running() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        after, total = rng.uniform(0, 24 * HOUR), rng.randint(1, 100_000)
        delay = poll_delay(running(after=after, done=rng.randint(0, total), total=total))
        assert IN_PROGRESS_MIN_DELAY <= delay <= max(IN_PROGRESS_MIN_DELAY, min(MAX_DELAY, 0.5 * after)) + 1e-6


def test_a_steady_day_long_batch_is_seen_finishing_within_a_minute_with_a_tenth_of_a_fixed_pollers_calls() -> None:
    validating, run, finalizing, total = 5 * MINUTE, 23 * HOUR, 5 * MINUTE, 50_000
    end = validating + run + finalizing
    t, calls = 0.0, 0
    while t < end:
        if t < validating:
            observation = Observation("validating", now=T0 + t, created_at=T0, total=0, completed=0, failed=0)
        elif t < validating + run:
            done = int(total * (t - validating) / run)
            observation = Observation(
                "in_progress", T0 + t, T0, in_progress_at=T0 + validating, total=total, completed=done, failed=0
            )
        else:
            observation = Observation(
                "finalizing", T0 + t, T0, in_progress_at=T0 + validating, finalizing_at=T0 + validating + run
            )
        t += poll_delay(observation)
        calls += 1
    assert t - end <= FINALIZING_DELAY[1]
    assert calls <= 1440 / 10  # a fixed 60-second poller makes 1440


# Finalizing and cancelling


@pytest.mark.parametrize(("status", "bounds"), [("finalizing", FINALIZING_DELAY), ("cancelling", CANCELLING_DELAY)])
def test_finalizing_and_cancelling_are_polled_quickly(status: str, bounds: tuple[float, float]) -> None:
    start, end = bounds
    at = T0 + HOUR

    def since(entered: float, now: float) -> Observation:
        return Observation(
            status,
            now=now,
            created_at=T0,
            in_progress_at=T0 + MINUTE,
            finalizing_at=entered if status == "finalizing" else None,
            cancelling_at=entered if status == "cancelling" else None,
        )

    delays = [poll_delay(since(at, at + t)) for t in range(0, 4 * 3600, 10)]
    assert delays[0] == start
    assert delays == sorted(delays)
    assert max(delays) == end <= 60.0
    # seen late (after a long in_progress wait), the state is already old: no need to start from the quickest
    assert poll_delay(since(at, at + 5 * MINUTE)) > start


@pytest.mark.parametrize(("status", "bounds"), [("finalizing", FINALIZING_DELAY), ("cancelling", CANCELLING_DELAY)])
def test_finalizing_and_cancelling_without_their_stamp_start_quick(status: str, bounds: tuple[float, float]) -> None:
    assert poll_delay(Observation(status, now=T0 + HOUR, created_at=T0)) == bounds[0]


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "queued", ""])
def test_terminal_and_unknown_statuses_get_the_shortest_delay(status: str) -> None:
    assert poll_delay(Observation(status, now=T0 + HOUR, created_at=T0)) == MIN_DELAY


# For every observation


def test_every_delay_is_bounded_by_min_and_max_delay() -> None:
    rng = random.Random(20241021)
    for _ in range(20_000):
        observation = random_observation(rng)
        delay = poll_delay(observation)
        assert isinstance(delay, float)
        assert MIN_DELAY <= delay <= MAX_DELAY, observation


def test_delay_is_never_negative_even_with_clock_skew() -> None:
    # the orchestrator's clock behind Azure's: stamps in the future
    for status in STATUSES:
        observation = Observation(
            status,
            now=T0 - 30,
            created_at=T0,
            in_progress_at=T0 + 60,
            finalizing_at=T0 + 90,
            cancelling_at=T0 + 90,
            total=100,
            completed=50,
            failed=0,
        )
        assert poll_delay(observation) >= MIN_DELAY > 0
    assert estimated_remaining(running(after=-10, done=10)) is None


def test_odd_counts_and_non_finite_times_stay_bounded() -> None:
    odd = [
        running(after=HOUR, done=2000),  # more done than total
        running(after=HOUR, done=-5),
        running(after=HOUR, done=10, total=-1),
        running(after=math.inf, done=10),
        running(after=math.inf, done=1000),
        running(after=math.nan, done=10),
        Observation("validating", now=math.nan, created_at=T0),
        Observation("finalizing", now=math.inf, created_at=T0, finalizing_at=T0),
        Observation("cancelling", now=T0, created_at=T0, cancelling_at=math.nan),
    ]
    for observation in odd:
        delay = poll_delay(observation)
        assert MIN_DELAY <= delay <= MAX_DELAY, observation


def test_delay_is_deterministic() -> None:
    rng = random.Random(3)
    observations = [random_observation(rng) for _ in range(2000)]
    first = [poll_delay(o) for o in observations]
    again = [poll_delay(o) for o in reversed(observations)][::-1]
    copies = [poll_delay(Observation(**vars(o))) for o in observations]
    assert first == again == copies
