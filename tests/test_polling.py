"""The poll-interval policy: few status calls, quick only where the end is near, every wait bounded."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import replace
from typing import Any

import pytest

from bench import polling as bench
from shared.polling import (
    DEFAULT_POLICY,
    MAX_DELAY,
    MIN_DELAY,
    Observation,
    PollingPolicy,
    estimated_remaining,
    poll_delay,
)

T0 = 1_730_000_000.0  # Azure's created_at, whole seconds
MINUTE, HOUR = 60.0, 3600.0
STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "expired", "cancelled")
P = DEFAULT_POLICY
RAMPED = PollingPolicy(validating=(10.0, 60.0), finalizing=(10.0, 60.0), cancelling=(15.0, 60.0), ramp_rate=0.1)


def running(
    after: float,
    done: int | None,
    total: int | None = 1000,
    failed: int | None = 0,
    expires_at: float | None = None,
) -> Observation:
    """An in_progress batch `after` seconds into running (it validated for a minute), `done` requests completed."""
    return Observation(
        "in_progress",
        now=T0 + MINUTE + after,
        created_at=T0,
        in_progress_at=T0 + MINUTE,
        total=total,
        completed=done,
        failed=failed,
        expires_at=expires_at,
    )


def random_observation(rng: random.Random) -> Observation:
    """Anything a status call could show, including clock skew, odd counts and missing stamps."""

    def stamp() -> float | None:
        return rng.choice([None, T0 + rng.uniform(-HOUR, 30 * HOUR), math.nan])

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
        expires_at=rng.choice([None, T0 + 24 * HOUR, T0 + rng.uniform(-HOUR, 30 * HOUR), math.nan, math.inf]),
    )


def random_policy(rng: random.Random) -> PollingPolicy:
    """Any valid setting."""

    def wait() -> float:
        return rng.choice([MIN_DELAY, MAX_DELAY, rng.uniform(MIN_DELAY, MAX_DELAY)])

    def span() -> tuple[float, float]:
        low, high = sorted((wait(), wait()))
        return low, high

    near_end, longest = span()
    return PollingPolicy(
        validating=span(),
        finalizing=span(),
        cancelling=span(),
        ramp_rate=rng.choice([0.0, rng.uniform(0, 2)]),
        share_of_remaining=rng.choice([0.0, rng.uniform(0, 2)]),
        trust_in_running=rng.choice([0.0, rng.uniform(0, 5)]),
        no_progress_share=rng.choice([0.0, rng.uniform(0, 2)]),
        near_end=near_end,
        longest=longest,
        after_expiry=wait(),
    )


# The settings


def test_the_default_settings_are_the_benchmarked_ones() -> None:
    # bench/README.md shows what these cost and buy; a change here needs a new bench run
    assert (MIN_DELAY, MAX_DELAY) == (10.0, 3600.0)
    benchmarked = PollingPolicy(
        validating=(120.0, 120.0),
        finalizing=(60.0, 90.0),
        cancelling=(15.0, 60.0),
        ramp_rate=0.25,
        share_of_remaining=0.5,
        trust_in_running=1.5,
        no_progress_share=0.5,
        near_end=180.0,
        longest=1800.0,
        after_expiry=60.0,
    )
    assert benchmarked == DEFAULT_POLICY


def test_poll_delay_uses_the_default_policy_unless_given_one() -> None:
    observation = running(after=HOUR, done=100)
    assert poll_delay(observation) == poll_delay(observation, DEFAULT_POLICY) == P.longest
    assert poll_delay(observation, replace(P, longest=10 * MINUTE)) == 10 * MINUTE


@pytest.mark.parametrize(
    "changes",
    [
        {"near_end": MIN_DELAY - 1},
        {"longest": MAX_DELAY + 1},
        {"after_expiry": 0.0},
        {"validating": (5.0, 60.0)},
        {"finalizing": (60.0, MAX_DELAY * 2)},
        {"cancelling": (60.0, 30.0)},  # lower end above the upper end
        {"near_end": 600.0, "longest": 300.0},
        {"share_of_remaining": -0.1},
        {"trust_in_running": math.inf},
        {"ramp_rate": math.nan},
        {"no_progress_share": -1.0},
        {"longest": math.nan},
    ],
)
def test_settings_that_would_break_the_bounds_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be|lower end"):
        replace(P, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"near_end": MIN_DELAY, "longest": MAX_DELAY, "after_expiry": MIN_DELAY},
        {"validating": (MAX_DELAY, MAX_DELAY), "share_of_remaining": 0.0, "ramp_rate": 0.0},
    ],
)
def test_settings_at_the_bounds_are_accepted(changes: dict[str, Any]) -> None:
    assert replace(P, **changes) != P


# Validating


def test_validating_is_looked_at_every_two_minutes() -> None:
    for elapsed in (0.0, 30.0, 2 * MINUTE, 10 * MINUTE, 24 * HOUR):
        assert poll_delay(Observation("validating", now=T0 + elapsed, created_at=T0)) == 120.0


def test_a_ramped_validating_delay_grows_with_the_time_spent_validating() -> None:
    delays = [poll_delay(Observation("validating", now=T0 + t, created_at=T0), RAMPED) for t in range(0, 3600, 5)]
    assert delays[0] == MIN_DELAY
    assert delays == sorted(delays)
    assert delays[0] < delays[12] < delays[60]  # grows within the first minutes
    assert poll_delay(Observation("validating", now=T0 + 2 * MINUTE, created_at=T0), RAMPED) == pytest.approx(22.0)
    assert max(delays) == 60.0


def test_a_ten_minute_validation_failure_is_seen_within_two_minutes_in_five_calls() -> None:
    t, calls = 0.0, 0
    while t < 10 * MINUTE:
        t += poll_delay(Observation("validating", now=T0 + t, created_at=T0))
        calls += 1
    assert t - 10 * MINUTE <= P.validating[1] == 120.0
    assert calls == 5  # a fixed 60-second poller makes 10


# In progress


def test_in_progress_next_look_is_half_way_to_the_estimated_end() -> None:
    observation = running(after=2 * HOUR, done=900)  # 900 of 1000 in 2 hours: 800 s to go
    assert estimated_remaining(observation) == pytest.approx(800.0)
    assert poll_delay(observation) == pytest.approx(400.0)


@pytest.mark.parametrize(
    ("after", "done", "remaining"),
    [(HOUR, 900, 400.0), (2 * HOUR, 750, 2400.0), (30 * MINUTE, 600, 1200.0), (HOUR, 500, HOUR)],
)
def test_estimated_remaining_comes_from_the_average_rate_so_far(after: float, done: int, remaining: float) -> None:
    observation = running(after=after, done=done)
    assert estimated_remaining(observation) == pytest.approx(remaining)
    expected = min(P.longest, max(P.near_end, P.share_of_remaining * remaining))
    assert poll_delay(observation) == pytest.approx(expected)


def test_failed_requests_count_as_progress() -> None:
    assert estimated_remaining(running(after=HOUR, done=600, failed=300)) == pytest.approx(400.0)
    assert poll_delay(running(after=HOUR, done=600, failed=300)) == poll_delay(running(after=HOUR, done=900))


def test_long_batch_in_progress_is_spaced_out_to_half_an_hour_and_no_more() -> None:
    for after, done in ((3 * HOUR, 300), (6 * HOUR, 500), (12 * HOUR, 700), (20 * HOUR, 900)):
        assert poll_delay(running(after=after, done=done)) == P.longest == 30 * MINUTE
    assert poll_delay(running(after=20 * HOUR, done=900), replace(P, longest=HOUR)) == HOUR


def test_estimate_is_not_trusted_beyond_one_and_a_half_times_the_time_already_running() -> None:
    # 10% in 20 minutes estimates 3 hours to go, but a batch that sat queued may be done in 20 minutes: trust 30
    observation = running(after=20 * MINUTE, done=100)
    assert estimated_remaining(observation) == pytest.approx(3 * HOUR)
    assert poll_delay(observation) == pytest.approx(0.5 * 30 * MINUTE)
    assert poll_delay(observation, replace(P, trust_in_running=1.0)) == pytest.approx(0.5 * 20 * MINUTE)


def test_in_progress_waits_at_least_three_minutes_however_near_the_estimated_end() -> None:
    assert poll_delay(running(after=5 * HOUR, done=950)) == pytest.approx(0.5 * 50 * 5 * HOUR / 950)  # 474 s
    assert poll_delay(running(after=5 * HOUR, done=990)) == P.near_end == 180.0  # 182 s to go, 91 s at half
    assert poll_delay(running(after=5 * HOUR, done=1000)) == P.near_end
    assert poll_delay(running(after=2 * MINUTE, done=10)) == P.near_end  # just started: the wait grows from here
    assert poll_delay(running(after=5 * HOUR, done=1000, total=1000_000)) == P.longest  # same time, far from done


def test_a_slow_tail_of_requests_is_not_polled_every_few_seconds() -> None:
    # 99.9% done after 10 hours, the last request takes another 4: the estimate says 36 s each time
    delays = [poll_delay(running(after=10 * HOUR + t, done=999)) for t in range(0, 4 * 3600, 60)]
    assert min(delays) == P.near_end
    assert 4 * HOUR / min(delays) <= 80  # the old policy's 30 s floor: 480 looks


def test_in_progress_delay_shrinks_as_the_batch_nears_its_end() -> None:
    for after in (5 * MINUTE, HOUR, 6 * HOUR, 20 * HOUR):
        delays = [poll_delay(running(after=after, done=done)) for done in range(1, 1001)]
        assert delays == sorted(delays, reverse=True)
        assert delays[-1] == P.near_end
        assert delays[0] == min(P.longest, max(P.near_end, after * 0.75))


def test_in_progress_delay_grows_with_the_time_running_at_the_same_share_done() -> None:
    for done in (1, 100, 500, 900, 999):
        delays = [poll_delay(running(after=t, done=done)) for t in range(0, 24 * 3600, 60)]
        assert delays == sorted(delays)
        assert delays[0] == P.near_end


def test_no_progress_yet_backs_off_with_the_time_already_waited() -> None:
    waits = (0.0, 30.0, 60.0, 10 * MINUTE, 20 * MINUTE, HOUR, 10 * HOUR)
    delays = [poll_delay(running(after=w, done=0)) for w in waits]
    assert delays == sorted(delays)
    expected = [min(P.longest, max(P.near_end, P.no_progress_share * w)) for w in waits]
    assert delays == pytest.approx(expected)
    assert delays[:3] == [P.near_end] * 3
    assert delays[4] == pytest.approx(600.0)
    assert delays[-1] == P.longest


def test_zero_total_while_in_progress_is_treated_as_no_progress() -> None:
    assert estimated_remaining(running(after=HOUR, done=0, total=0)) is None
    assert poll_delay(running(after=HOUR, done=0, total=0)) == poll_delay(running(after=HOUR, done=0))


def test_null_request_counts_are_tolerated() -> None:
    nulls = running(after=20 * MINUTE, done=None, total=None, failed=None)
    assert estimated_remaining(nulls) is None
    assert poll_delay(nulls) == pytest.approx(P.no_progress_share * 20 * MINUTE)
    assert poll_delay(running(after=20 * MINUTE, done=None, total=1000, failed=None)) == poll_delay(nulls)
    # what a batch that failed validation reports, should the caller ask anyway
    assert poll_delay(Observation("failed", now=T0 + MINUTE, created_at=T0)) == MIN_DELAY


def test_in_progress_without_its_stamp_counts_from_creation() -> None:
    observation = Observation("in_progress", now=T0 + 20 * MINUTE, created_at=T0, total=1000, completed=500, failed=0)
    assert estimated_remaining(observation) is None
    assert poll_delay(observation) == pytest.approx(P.no_progress_share * 20 * MINUTE)


def test_in_progress_wait_never_exceeds_three_quarters_of_the_time_running_nor_half_an_hour() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        after, total = rng.uniform(0, 24 * HOUR), rng.randint(1, 100_000)
        delay = poll_delay(running(after=after, done=rng.randint(0, total), total=total))
        assert P.near_end <= delay <= max(P.near_end, min(P.longest, 0.75 * after)) + 1e-6


def simulate_steady_day() -> tuple[list[tuple[str, float]], float]:
    """A 23-hour steady batch between 5 minutes of validating and of finalizing: (status, wait) per call, the end."""
    validating, run, finalizing, total = 5 * MINUTE, 23 * HOUR, 5 * MINUTE, 50_000
    end = validating + run + finalizing
    t, calls = 0.0, []
    while t < end:
        expires_at = T0 + 24 * HOUR
        if t < validating:
            observation = Observation("validating", T0 + t, T0, total=0, completed=0, failed=0, expires_at=expires_at)
        elif t < validating + run:
            done = int(total * (t - validating) / run)
            observation = Observation(
                "in_progress", T0 + t, T0, in_progress_at=T0 + validating, total=total, completed=done, failed=0
            )
        else:
            observation = Observation(
                "finalizing", T0 + t, T0, in_progress_at=T0 + validating, finalizing_at=T0 + validating + run
            )
        delay = poll_delay(observation)
        calls.append((observation.status, delay))
        t += delay
    return calls, t - end


def test_a_steady_day_long_batch_is_seen_finishing_within_90_s_in_60_calls() -> None:
    calls, late = simulate_steady_day()
    assert 0 <= late <= P.finalizing[1] == 90.0
    assert len(calls) <= 60  # a fixed 60-second poller makes 1440; the policy before issue 10, 120
    waits = [delay for status, delay in calls if status == "in_progress"]
    ramp_up = waits[: waits.index(P.longest)]
    assert ramp_up == sorted(ramp_up)  # grows with the run...
    assert all(later >= 1.5 * earlier for earlier, later in itertools.pairwise(ramp_up[1:]))  # quickly
    ramp_down = waits[len(waits) - 1 - waits[::-1].index(P.longest) :]
    assert ramp_down == sorted(ramp_down, reverse=True)  # ...and shrinks towards the estimated end
    assert ramp_down[-1] == P.near_end  # the end is crossed by a near-end wait, so finalizing is seen in time


# Finalizing and cancelling


@pytest.mark.parametrize(
    ("status", "bounds"), [("finalizing", P.finalizing), ("cancelling", P.cancelling), ("finalizing", (10.0, 60.0))]
)
def test_finalizing_and_cancelling_are_polled_quickly(status: str, bounds: tuple[float, float]) -> None:
    start, end = bounds
    policy = replace(P, finalizing=bounds) if status == "finalizing" else P
    at = T0 + HOUR

    def since(entered: float, now: float) -> Observation:
        return Observation(
            status,
            now=now,
            created_at=T0,
            in_progress_at=T0 + MINUTE,
            finalizing_at=entered if status == "finalizing" else None,
            cancelling_at=entered if status == "cancelling" else None,
            expires_at=T0 + 24 * HOUR,
        )

    delays = [poll_delay(since(at, at + t), policy) for t in range(0, 4 * 3600, 10)]
    assert delays[0] == start
    assert delays == sorted(delays)
    assert max(delays) == end <= 90.0
    assert poll_delay(since(at, at + 20), policy) == pytest.approx(min(end, start + P.ramp_rate * 20))
    # seen late (after a long in_progress wait), the state is already old: no need to start from the quickest
    assert poll_delay(since(at, at + 5 * MINUTE), policy) == end > start


def test_finalizing_is_looked_at_a_minute_after_it_starts_then_every_90_s() -> None:
    def finalizing(after: float) -> Observation:
        return Observation("finalizing", now=T0 + HOUR + after, created_at=T0, finalizing_at=T0 + HOUR)

    assert [poll_delay(finalizing(after)) for after in (0, 60, 120, 600)] == [60.0, 75.0, 90.0, 90.0]


@pytest.mark.parametrize(("status", "bounds"), [("finalizing", P.finalizing), ("cancelling", P.cancelling)])
def test_finalizing_and_cancelling_without_their_stamp_start_quick(status: str, bounds: tuple[float, float]) -> None:
    assert poll_delay(Observation(status, now=T0 + HOUR, created_at=T0)) == bounds[0]


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "queued", ""])
def test_terminal_and_unknown_statuses_get_the_shortest_delay(status: str) -> None:
    assert poll_delay(Observation(status, now=T0 + HOUR, created_at=T0, expires_at=T0 + HOUR)) == MIN_DELAY


# The completion window


def test_no_wait_runs_more_than_a_minute_past_the_completion_windows_end() -> None:
    # far from done, the estimate says hours to go: but Azure expires the batch at expires_at
    expires_at = T0 + 24 * HOUR
    for left in (0.0, 1.0, 5 * MINUTE, 10 * MINUTE, 20 * MINUTE):
        observation = running(after=24 * HOUR - MINUTE - left, done=500, expires_at=expires_at)
        assert poll_delay(observation) == max(MIN_DELAY, left + P.after_expiry)
    assert poll_delay(running(after=20 * HOUR, done=500, expires_at=expires_at)) == P.longest  # 4 hours left


def test_past_the_windows_end_the_expiring_batch_is_looked_at_every_three_minutes() -> None:
    for past in (1.0, MINUTE, HOUR):
        observation = running(after=24 * HOUR - MINUTE + past, done=500, expires_at=T0 + 24 * HOUR)
        assert poll_delay(observation) == P.near_end


@pytest.mark.parametrize(("status", "usual"), [("validating", 120.0), ("finalizing", 60.0), ("cancelling", 15.0)])
def test_the_windows_end_caps_every_states_wait_but_past_it_hurries_none_below_its_usual_pace(
    status: str, usual: float
) -> None:
    def at(expires_at: float) -> float:
        return poll_delay(
            Observation(status, now=T0 + HOUR, created_at=T0, finalizing_at=T0 + HOUR, expires_at=expires_at)
        )

    assert at(T0 + 24 * HOUR) == at(T0 - HOUR) == at(T0 + HOUR - 1) == usual  # far ahead, or already past
    assert at(T0 + HOUR + 10) == min(usual, 10 + P.after_expiry)  # 10 s left: look 70 s from now at the latest


def test_a_missing_or_broken_window_end_changes_nothing() -> None:
    plain = running(after=20 * HOUR, done=500)
    for expires_at in (None, math.nan, math.inf):
        assert poll_delay(replace(plain, expires_at=expires_at)) == poll_delay(plain) == P.longest
    assert poll_delay(replace(plain, expires_at=-math.inf)) == P.near_end


# For every observation and every setting


def test_every_delay_is_bounded_by_min_and_max_delay() -> None:
    rng = random.Random(20241021)
    policies = [DEFAULT_POLICY, RAMPED, *(random_policy(rng) for _ in range(50))]
    for _ in range(20_000):
        observation, policy = random_observation(rng), rng.choice(policies)
        delay = poll_delay(observation, policy)
        assert isinstance(delay, float)
        assert MIN_DELAY <= delay <= MAX_DELAY, (observation, policy)


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
            expires_at=T0 + 24 * HOUR,
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
        running(after=HOUR, done=10, expires_at=math.nan),
        Observation("validating", now=math.nan, created_at=T0),
        Observation("finalizing", now=math.inf, created_at=T0, finalizing_at=T0),
        Observation("cancelling", now=T0, created_at=T0, cancelling_at=math.nan),
    ]
    for observation in odd:
        for policy in (DEFAULT_POLICY, RAMPED, replace(P, ramp_rate=0.0, trust_in_running=0.0)):
            delay = poll_delay(observation, policy)
            assert MIN_DELAY <= delay <= MAX_DELAY, observation
    # a time that is not a number looks again at the quick end of the range, a time in the future too
    assert poll_delay(Observation("validating", now=math.nan, created_at=T0), RAMPED) == RAMPED.validating[0]
    assert poll_delay(Observation("validating", now=T0 - HOUR, created_at=T0), RAMPED) == RAMPED.validating[0]
    assert poll_delay(running(after=math.inf, done=10), replace(P, share_of_remaining=0.0)) == P.near_end


def test_delay_is_deterministic() -> None:
    rng = random.Random(3)
    observations = [random_observation(rng) for _ in range(2000)]
    first = [poll_delay(o) for o in observations]
    again = [poll_delay(o) for o in reversed(observations)][::-1]
    copies = [poll_delay(Observation(**vars(o))) for o in observations]
    assert first == again == copies


# The benchmark's mix (bench/polling.py): the targets of issue 10


def test_on_the_benchmarks_mix_a_batch_costs_at_most_25_calls_and_is_seen_ending_within_a_minute_median() -> None:
    rng = random.Random(11)
    batches = [bench.make_batch(rng) for _ in range(1500)]
    outcomes = [bench.run(batch, poll_delay, T0 + rng.randrange(86_400)) for batch in batches]
    delays = [outcome.detection_delay for outcome in outcomes]
    assert statistics.fmean(outcome.calls for outcome in outcomes) <= 25
    assert bench.percentile(delays, 0.5) <= 60
    assert bench.percentile(delays, 0.95) <= 180
    assert max(delays) <= P.longest  # a wrong estimate costs at most one longest wait
    assert min(delays) >= 0
