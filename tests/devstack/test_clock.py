"""The virtual clock, in process: emulated time runs `scale` times faster than real time from a shared epoch."""

from __future__ import annotations

import math

import pytest

from devstack import clock as clock_module
from devstack.clock import EPOCH_ENV, SCALE_ENV, VirtualClock


@pytest.fixture
def real_time(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Real time under the test's control: set `real_time[0]`."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(clock_module.time, "time", lambda: now[0])
    return now


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(EPOCH_ENV, raising=False)
    monkeypatch.delenv(SCALE_ENV, raising=False)
    return monkeypatch


def test_now_equals_the_epoch_at_the_epoch(real_time: list[float]) -> None:
    clock = VirtualClock(epoch=real_time[0], scale=20)
    assert clock.now() == real_time[0]


def test_now_runs_scale_times_faster_than_real_time_from_the_epoch(real_time: list[float]) -> None:
    epoch = real_time[0]
    clock = VirtualClock(epoch=epoch, scale=20)
    real_time[0] = epoch + 1.5
    assert clock.now() == pytest.approx(epoch + 30.0)
    real_time[0] = epoch + 3600
    assert clock.now() == pytest.approx(epoch + 72_000.0)


def test_scale_one_is_real_time(real_time: list[float]) -> None:
    clock = VirtualClock(epoch=real_time[0] - 100)
    assert clock.scale == 1.0
    assert clock.now() == real_time[0]


def test_a_clock_started_earlier_is_further_ahead(real_time: list[float]) -> None:
    # Emulated time is a function of the epoch, not of when a process started: 10 real s after the epoch at x60.
    clock = VirtualClock(epoch=real_time[0] - 10, scale=60)
    assert clock.now() == pytest.approx(real_time[0] - 10 + 600)


def test_real_delay_is_the_virtual_duration_divided_by_the_scale() -> None:
    clock = VirtualClock(epoch=0.0, scale=20)
    assert clock.real_delay(10) == pytest.approx(0.5)
    assert clock.real_delay(24 * 3600) == pytest.approx(4320.0)
    assert clock.real_delay(0) == 0.0


def test_real_delay_of_a_moment_already_past_is_zero() -> None:
    assert VirtualClock(epoch=0.0, scale=20).real_delay(-5) == 0.0


@pytest.mark.parametrize("scale", [0, -1, -0.5, math.inf, math.nan])
def test_a_non_positive_or_non_finite_scale_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="time scale must be a positive"):
        VirtualClock(epoch=0.0, scale=scale)


def test_a_non_finite_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch"):
        VirtualClock(epoch=math.nan)


def test_to_env_and_from_env_round_trip(clean_env: pytest.MonkeyPatch) -> None:
    original = VirtualClock(epoch=1_795_000_000.123456789, scale=12.5)
    environment = original.to_env()
    assert environment == {EPOCH_ENV: repr(1_795_000_000.123456789), SCALE_ENV: "12.5"}
    for name, value in environment.items():
        clean_env.setenv(name, value)
    assert VirtualClock.from_env() == original


def test_from_env_without_variables_starts_now_at_real_speed(
    clean_env: pytest.MonkeyPatch, real_time: list[float]
) -> None:
    assert VirtualClock.from_env() == VirtualClock(epoch=real_time[0], scale=1.0)


def test_an_explicit_scale_overrides_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(EPOCH_ENV, "1795000000.5")
    clean_env.setenv(SCALE_ENV, "3")
    assert VirtualClock.from_env(scale=40.0) == VirtualClock(epoch=1_795_000_000.5, scale=40.0)


def test_two_clocks_from_the_same_environment_agree(clean_env: pytest.MonkeyPatch, real_time: list[float]) -> None:
    clean_env.setenv(EPOCH_ENV, repr(real_time[0] - 2))
    clean_env.setenv(SCALE_ENV, "20")
    first, second = VirtualClock.from_env(), VirtualClock.from_env()
    real_time[0] += 1
    assert first.now() == second.now() == pytest.approx(real_time[0] - 3 + 60)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (EPOCH_ENV, "yesterday", "DEVSTACK_EPOCH must be a number, not 'yesterday'"),
        (EPOCH_ENV, "nan", "DEVSTACK_EPOCH must be a finite Unix time"),
        (SCALE_ENV, "fast", "DEVSTACK_TIME_SCALE must be a number, not 'fast'"),
        (SCALE_ENV, "0", "DEVSTACK_TIME_SCALE must be a positive number, not '0'"),
        (SCALE_ENV, "-2", "DEVSTACK_TIME_SCALE must be a positive number, not '-2'"),
    ],
)
def test_a_malformed_environment_variable_is_an_error_naming_it(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        VirtualClock.from_env()
