"""Timer trigger schedules as Azure Functions reads them: NCRONTAB with six fields, or a TimeSpan.

NCRONTAB: `{second} {minute} {hour} {day} {month} {day-of-week}`, each `*`, a value, a range `a-b`, a step `*/n`,
`a-b/n` or `a/n`, or a comma-separated list of those; months and days of the week also by name (`JAN`, `MON`).
Days of the week run 0-6 from Sunday. As in the NCrontab library the host uses, a day must match both the day
field and the day-of-week field. Times are UTC (WEBSITE_TIME_ZONE is not supported on Linux plans).

TimeSpan (`hh:mm:ss`, App Service plans only): the interval between the end of one run and the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MONTHS = {name: number for number, name in enumerate(MONTH_NAMES, 1)}
DAYS = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 6, DAYS),
)
# How far ahead a schedule may first fire: a schedule that never fires (30 February) is refused.
HORIZON = timedelta(days=366 * 8)
TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class ScheduleError(ValueError):
    """A schedule the Functions host would refuse; the message says which part is wrong."""


def _value(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise ScheduleError(f"{field} field: {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise ScheduleError(f"{field} field: {number} is outside {low}-{high}")
    return number


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{field} field: empty list item in {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field} field: bad step in {item!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, field, low, high, names), _value(last, field, low, high, names)
            if start > end:
                raise ScheduleError(f"{field} field: range {base!r} runs backwards")
        else:
            start = _value(base, field, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (an aware datetime; the result is UTC)."""
        current = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = current + HORIZON
        while current < limit:
            if current.month not in self.months:
                year, month = (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
                current = current.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif current.day not in self.days or (current.weekday() + 1) % 7 not in self.weekdays:
                current = current.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif current.hour not in self.hours:
                current = current.replace(minute=0, second=0) + timedelta(hours=1)
            elif current.minute not in self.minutes:
                current = current.replace(second=0) + timedelta(minutes=1)
            elif current.second not in self.seconds:
                current += timedelta(seconds=1)
            else:
                return current
        raise ScheduleError(f"schedule {self.expression!r} never fires")

    @property
    def min_interval(self) -> timedelta:
        """A lower bound on the time between two occurrences (the host turns the schedule monitor off below 1 min)."""
        if len(self.seconds) > 1:
            return timedelta(seconds=1)
        if len(self.minutes) > 1:
            return timedelta(minutes=1)
        return timedelta(hours=1)


@dataclass(frozen=True)
class IntervalSchedule:
    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) + self.interval

    @property
    def min_interval(self) -> timedelta:
        return self.interval


Schedule = CronSchedule | IntervalSchedule


def parse(expression: str) -> Schedule:
    """The schedule of a timer trigger; ScheduleError for one the Functions host would refuse."""
    text = expression.strip()
    if match := TIMESPAN.match(text):
        days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan schedule {expression!r} must be positive")
        return IntervalSchedule(expression, interval)
    parts = text.split()
    if len(parts) != 6:
        raise ScheduleError(
            f"NCRONTAB schedule {expression!r} must have six fields "
            "({second} {minute} {hour} {day} {month} {day-of-week}), not " + str(len(parts))
        )
    sets = [_field(part, *spec) for part, spec in zip(parts, FIELDS, strict=True)]
    schedule = CronSchedule(text, *sets)
    schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # refuses a schedule that never fires
    return schedule
