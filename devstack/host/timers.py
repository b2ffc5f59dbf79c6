"""Timer triggers on the virtual clock, as the WebJobs TimerTrigger runs them.

One run at a time per function (a run that outlasts the interval skips the occurrences it covered, it never
overlaps itself). With the schedule monitor (`useMonitor`, on by default for schedules of a minute or more) the
last and next occurrence are kept in the host's store; when the host starts after the recorded next occurrence has
passed, the function runs at once with `past_due` true. `runOnStartup` runs it once at every start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from devstack.clock import VirtualClock
from devstack.host.functions import FunctionDef, invoke
from devstack.host.history import iso
from devstack.host.ncrontab import Schedule
from devstack.host.store import Store, TimerStatus

log = logging.getLogger("devstack.host")
NEVER = "0001-01-01T00:00:00"


class TimerTrigger:
    def __init__(
        self,
        definition: FunctionDef,
        schedule: Schedule,
        store: Store,
        clock: VirtualClock,
        executor: Executor,
        now: Callable[[], float],
    ) -> None:
        self.definition = definition
        self.schedule = schedule
        self.store = store
        self.clock = clock
        self.executor = executor
        self.now = now
        self.lock = asyncio.Lock()
        self.stop = asyncio.Event()
        monitor = definition.trigger.get("useMonitor")
        self.use_monitor = bool(monitor) if monitor is not None else schedule.min_interval >= timedelta(minutes=1)
        self.run_on_startup = bool(definition.trigger.get("runOnStartup"))
        self.last: float | None = None
        self.next: float | None = None
        self.runs = 0

    @property
    def name(self) -> str:
        return self.definition.name

    def _following(self, moment: float) -> float:
        return self.schedule.next_after(datetime.fromtimestamp(moment, UTC)).timestamp()

    def _save(self) -> None:
        if self.use_monitor:
            status = TimerStatus(self.schedule.expression, self.last, self.next, self.now())
            self.store.set_timer_status(self.name, status)

    async def run(self) -> None:
        now = self.now()
        past_due = False
        status = self.store.timer_status(self.name) if self.use_monitor else None
        if status is not None and status.schedule == self.schedule.expression:
            self.last, self.next = status.last, status.next
            past_due = self.next is not None and now > self.next
        if past_due or self.run_on_startup:
            scheduled = self.next if past_due and self.next is not None else now
            self.next = self._following(now)
            await self.fire(past_due=past_due, occurrence=scheduled)
        while not self.stop.is_set():
            now = self.now()
            if self.next is None or self.next <= now:
                self.next = self._following(now)
            self._save()
            delay = self.clock.real_delay(self.next - now)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=min(delay, 3600.0))
                return
            except TimeoutError:
                pass
            if self.now() + 1e-6 < self.next:
                continue  # woke early (long delays are slept in parts)
            occurrence = self.next
            self.next = self._following(max(self.now(), occurrence))
            await self.fire(past_due=False, occurrence=occurrence)

    async def fire(self, *, past_due: bool, occurrence: float, manual: bool = False) -> None:
        async with self.lock:
            invocation_id = str(uuid.uuid4())
            status = {
                "Last": iso(self.last) if self.last is not None else NEVER,
                "Next": iso(self.next) if self.next is not None else NEVER,
                "LastUpdated": iso(self.now()),
            }
            request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
            started = time.monotonic()
            outcome = "Succeeded"
            try:
                await invoke(
                    self.definition, {str(self.definition.trigger["name"]): request}, self.executor, invocation_id
                )
            except Exception:
                outcome = "Failed"
                log.exception("timer function %s raised", self.name)
            self.runs += 1
            if not manual:
                self.last = occurrence
                self._save()
            log.info(
                "Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms) timer pastDue=%s%s",
                self.name,
                outcome,
                invocation_id,
                (time.monotonic() - started) * 1000,
                past_due,
                " (manual)" if manual else "",
            )
