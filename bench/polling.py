"""Benchmark of the poll-interval policy (shared/polling.py) against a fixed 60-second poller.

Run: `.venv/bin/python bench/polling.py [--batches N] [--seed S]` (stdlib only, a few seconds, deterministic).

Each simulated batch lives on Azure's timeline: validating (1-10 min) → in_progress (request_counts follow a
progress curve: linear, slow start then steady, bursty with plateaus, or a slow tail) → finalizing (1-10 min) →
completed; some fail validation instead (request_counts then null). Batches take 5 minutes to 24 hours in all
(log-uniform). The poller does what the orchestrator in blueprints/batch_runs.py does: the create reply is the first
observation; then wait the policy's delay, make a status call, observe, and again, until a terminal status is seen.
Measured per batch: status calls made, and the detection delay (from the batch entering its terminal state to the
status call that saw it). Every observation carries expires_at (created_at + 24 h), as Azure's replies do.

Prints two tables: the default policy beside a fixed 60-second poller, by duration bucket; then the frontier of calls
against detection delay for a few settings of the same policy (the default with one knob turned, and the settings
before issue 10), on the same batches.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.polling import DEFAULT_POLICY, Observation, PollingPolicy, poll_delay

MINUTE, HOUR = 60.0, 3600.0
SHORTEST, LONGEST = 5 * MINUTE, 24 * HOUR
WINDOW = 24 * HOUR  # the completion window ("24h", the only one Azure offers): expires_at = created_at + WINDOW
FAILED_VALIDATION_SHARE = 0.1
# Duration buckets for the table: each batch goes to the nearest label on a log scale.
BUCKETS = (("5 min", 5 * MINUTE), ("1 h", HOUR), ("6 h", 6 * HOUR), ("24 h", 24 * HOUR))
SHAPES = ("linear", "slow start", "bursty", "slow tail")

Policy = Callable[[Observation], float]


@dataclass(frozen=True)
class Batch:
    """One batch's timeline on Azure's clock (seconds from its creation; Azure stamps whole seconds)."""

    validation: float  # created → in_progress (or → failed)
    running: float  # in_progress → finalizing; 0 when validation fails
    finalizing: float  # finalizing → completed
    total: int  # requests
    failed_share: float  # of the requests done, the share that failed
    knots_x: tuple[float, ...]  # progress curve: share of the running time → share of requests done
    knots_y: tuple[float, ...]
    shape: str

    @property
    def fails_validation(self) -> bool:
        return self.running == 0.0

    @property
    def duration(self) -> float:
        return self.validation + self.running + self.finalizing

    def done_share(self, x: float) -> float:
        """Share of the requests done at share x of the running time (piecewise linear between knots)."""
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0
        i = bisect.bisect_right(self.knots_x, x)
        x0, x1, y0, y1 = self.knots_x[i - 1], self.knots_x[i], self.knots_y[i - 1], self.knots_y[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1

    def observe(self, t: float, created_at: float) -> Observation:
        """What a status call at `t` seconds after creation shows."""

        def stamp(seconds: float) -> float:
            return float(math.floor(created_at + seconds))

        now, expires_at = created_at + t, created_at + WINDOW  # Azure returns expires_at on every call
        if self.fails_validation:
            if t < self.validation:
                return Observation("validating", now, created_at, total=0, completed=0, failed=0, expires_at=expires_at)
            return Observation("failed", now, created_at, expires_at=expires_at)  # Azure's quirk: null request_counts
        started, finalizing, ended = self.validation, self.validation + self.running, self.duration
        if t < started:
            return Observation("validating", now, created_at, total=0, completed=0, failed=0, expires_at=expires_at)
        done = self.total if t >= finalizing else math.floor(self.total * self.done_share((t - started) / self.running))
        failed = math.floor(done * self.failed_share)
        status = "in_progress" if t < finalizing else "finalizing" if t < ended else "completed"
        return Observation(
            status,
            now,
            created_at,
            in_progress_at=stamp(started),
            finalizing_at=stamp(finalizing) if t >= finalizing else None,
            total=self.total,
            completed=done - failed,
            failed=failed,
            expires_at=expires_at,
        )


def make_batch(rng: random.Random) -> Batch:
    if rng.random() < FAILED_VALIDATION_SHARE:
        return Batch(rng.uniform(1, 10) * MINUTE, 0.0, 0.0, 0, 0.0, (0.0, 1.0), (0.0, 1.0), "failed validation")
    duration = math.exp(rng.uniform(math.log(SHORTEST), math.log(LONGEST)))
    # Validation and finalizing take 1-10 minutes each, and leave at least a third of a short batch to running.
    side = min(10 * MINUTE, duration / 3)
    validation, finalizing = rng.uniform(MINUTE, side), rng.uniform(MINUTE, side)
    running = duration - validation - finalizing
    shape = rng.choice(SHAPES)
    knots = progress_curve(shape, rng)
    total = int(math.exp(rng.uniform(math.log(50), math.log(100_000))))
    failed_share = rng.choice((0.0, 0.0, 0.01, 0.05))
    return Batch(
        validation,
        running,
        finalizing,
        total,
        failed_share,
        tuple(x for x, _ in knots),
        tuple(y for _, y in knots),
        shape,
    )


def progress_curve(shape: str, rng: random.Random) -> list[tuple[float, float]]:
    """Knots (share of running time, share of requests done) from (0, 0) to (1, 1), non-decreasing."""
    if shape == "linear":
        return [(0.0, 0.0), (1.0, 1.0)]
    if shape == "slow start":  # queued with nothing done, a ramp-up, then a steady rate
        idle, ramp = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.2)
        at_ramp_end = rng.uniform(0.02, 0.1)
        return [(0.0, 0.0), (idle, 0.0), (idle + ramp, at_ramp_end), (1.0, 1.0)]
    if shape == "bursty":  # bursts of work between plateaus where request_counts stand still
        cuts = sorted(rng.uniform(0.0, 1.0) for _ in range(2 * rng.randint(2, 5)))
        xs = [0.0, *cuts, 1.0]
        work = [rng.random() if i % 2 == 0 else 0.0 for i in range(len(xs) - 1)]  # even segments burst
        scale = sum(work) or 1.0
        knots, y = [(0.0, 0.0)], 0.0
        for x, w in zip(xs[1:], work, strict=True):
            y += w / scale
            knots.append((x, min(1.0, y)))
        knots[-1] = (1.0, 1.0)
        return knots
    if shape == "slow tail":  # the last few requests (retries, long generations) take a good part of the time
        last, tail = rng.uniform(0.005, 0.05), rng.uniform(0.1, 0.4)
        return [(0.0, 0.0), (1.0 - tail, 1.0 - last), (1.0, 1.0)]
    raise ValueError(shape)


@dataclass(frozen=True)
class Outcome:
    calls: int
    detection_delay: float


def run(batch: Batch, policy: Policy, created_at: float) -> Outcome:
    """The orchestrator's loop: the create reply is the first observation; wait, call, observe, until terminal."""
    ended = batch.validation if batch.fails_validation else batch.duration
    t, calls = 0.0, 0
    observation = batch.observe(t, created_at)
    while observation.status not in ("completed", "failed", "expired", "cancelled"):
        delay = policy(observation)
        assert delay >= 0, (delay, observation)
        t += delay
        calls += 1
        observation = batch.observe(t, created_at)
    return Outcome(calls, t - ended)


def fixed_60s(observation: Observation) -> float:
    return 60.0


def bucket_of(batch: Batch) -> str:
    if batch.fails_validation:
        return "failed validation"
    return min(BUCKETS, key=lambda b: abs(math.log(batch.duration / b[1])))[0]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


# Settings for the frontier table: the default, the policy before issue 10 (the same function with its old
# constants: it reproduces the old figures), and the default with one knob turned either way.
DEFAULT_LABEL = "default"
BEFORE = PollingPolicy(
    validating=(10.0, 60.0),
    finalizing=(10.0, 60.0),
    cancelling=(15.0, 60.0),
    ramp_rate=0.1,
    share_of_remaining=0.5,
    trust_in_running=1.0,
    no_progress_share=0.5,
    near_end=30.0,
    longest=15 * MINUTE,
)
SETTINGS: tuple[tuple[str, PollingPolicy], ...] = (
    ("before: 10→60 s ramps, near end 30 s, longest 15 min", BEFORE),
    ("default, near end 1 min", replace(DEFAULT_POLICY, near_end=MINUTE)),
    ("default, longest 15 min", replace(DEFAULT_POLICY, longest=15 * MINUTE)),
    ("default, validating 1→2 min", replace(DEFAULT_POLICY, validating=(60.0, 120.0))),
    ("default, finalizing every 60 s", replace(DEFAULT_POLICY, finalizing=(60.0, 60.0))),
    ("default, finalizing 1→2 min", replace(DEFAULT_POLICY, finalizing=(60.0, 120.0))),
    ("default, share of remaining 1/3", replace(DEFAULT_POLICY, share_of_remaining=1 / 3)),
    (DEFAULT_LABEL, DEFAULT_POLICY),
    ("default, validating every 3 min", replace(DEFAULT_POLICY, validating=(180.0, 180.0))),
    ("default, share of remaining 2/3", replace(DEFAULT_POLICY, share_of_remaining=2 / 3)),
    ("default, near end 5 min", replace(DEFAULT_POLICY, near_end=5 * MINUTE)),
    ("default, longest 60 min", replace(DEFAULT_POLICY, longest=HOUR)),
)


def with_policy(policy: PollingPolicy) -> Policy:
    """`poll_delay` with these settings, as the orchestrator would call it."""
    return lambda observation: poll_delay(observation, policy)


def print_table(header: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """A Markdown table: labels left-aligned, figures right-aligned."""
    width = max(len(header[0]), *(len(label) for label, _ in rows))
    cols = [max(len(header[i + 1]), *(len(cells[i]) for _, cells in rows)) for i in range(len(header) - 1)]
    print(f"| {header[0]:<{width}} | " + " | ".join(f"{h:>{w}}" for h, w in zip(header[1:], cols, strict=True)) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (w + 1) + ":" for w in cols) + "|")
    for label, cells in rows:
        print(f"| {label:<{width}} | " + " | ".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=20241021)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    batches = [make_batch(rng) for _ in range(args.batches)]
    created = [1_730_000_000.0 + rng.randrange(86_400) for _ in batches]  # whole seconds, as Azure stamps them

    def simulate(policy: Policy) -> list[Outcome]:
        return [run(b, policy, c) for b, c in zip(batches, created, strict=True)]

    results = {"ours": simulate(poll_delay), "fixed 60 s": simulate(fixed_60s)}
    policies = list(results)

    rows: list[tuple[str, list[str]]] = []

    def calls_row(label: str, bucket: str | None) -> None:
        chosen = [i for i, b in enumerate(batches) if bucket in (None, bucket_of(b))]
        cells = [f"{statistics.fmean(results[name][i].calls for i in chosen):.1f}" for name in policies]
        rows.append((f"{label} (n={len(chosen)})", cells))

    calls_row("status calls per batch, mean, all", None)
    for label, _ in BUCKETS:
        calls_row(f"  batches of ≈{label}", label)
    calls_row("  failed validation", "failed validation")
    for label, share in (("median", 0.5), ("p95", 0.95), ("max", 1.0)):
        cells = [f"{percentile([o.detection_delay for o in results[name]], share):.0f} s" for name in policies]
        rows.append((f"detection delay, {label}", cells))
    for label, seconds in (("60 s", 60.0), ("3 min", 3 * MINUTE)):
        late = [f"{statistics.fmean(o.detection_delay > seconds for o in results[name]):.1%}" for name in policies]
        rows.append((f"seen more than {label} after the end", late))
    print_table(["", *policies], rows)
    print(
        f"\n{args.batches} simulated batches (seed {args.seed}), 5 min to 24 h log-uniform, "
        f"{FAILED_VALIDATION_SHARE:.0%} failing validation;\nprogress shapes: {', '.join(SHAPES)}. "
        "Detection delay: from the batch entering its terminal state\nto the status call that sees it. "
        "Buckets: the nearest label on a log scale (≈5 min is 5-17 min, ≈1 h 17 min-2.4 h,\n"
        "≈6 h 2.4-12 h, ≈24 h 12-24 h)."
    )

    # The frontier: calls against detection delay for a few settings of the same policy, fewest calls last.
    measured = {DEFAULT_LABEL: results["ours"], "fixed 60 s (reference)": results["fixed 60 s"]}
    for label, policy in SETTINGS:
        measured.setdefault(label, simulate(with_policy(policy)))
    figures = {
        label: (
            statistics.fmean(o.calls for o in outcomes),
            percentile([o.detection_delay for o in outcomes], 0.5),
            percentile([o.detection_delay for o in outcomes], 0.95),
            max(o.detection_delay for o in outcomes),
        )
        for label, outcomes in measured.items()
    }

    def dominated(label: str) -> bool:
        """Another setting is at least as good on every column (calls, median, p95, max) and better on one."""
        mine = figures[label]
        return any(
            all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine
            for name, other in figures.items()
            if name != label
        )

    frontier = []
    for label in sorted(figures, key=lambda name: -figures[name][0]):
        calls, median, p95, longest = figures[label]
        name = f"**{label}** ◀" if label == DEFAULT_LABEL else label
        name += " (dominated)" if dominated(label) else ""
        frontier.append((name, [f"{calls:.1f}", f"{median:.0f} s", f"{p95:.0f} s", f"{longest:.0f} s"]))
    print()
    print_table(["setting (◀ the default)", "calls/batch", "median", "p95", "max"], frontier)
    print("\n" + textwrap.fill(f"The same batches. Default: {DEFAULT_POLICY}.", width=116))
    print("Dominated: another setting makes no more calls and sees the end no later (median, p95 and max).")


if __name__ == "__main__":
    main()
