"""Batch sets with the host killed with SIGKILL at fan-out, in follow-up rounds and at fan-in, again and again: every
run ends with every request's result once, and each shard attempt has exactly one batch.

Three runs of 30 prompts go at once, on a host whose configured enqueued-token limits cut each input into three
shards (the smallest limit holds ten prompts; eastus has room for two shards, swedencentral for one, so a set starts
its three together) that run on both resources of the job's pool. One or two prompts of each run fail with a 500
every time, so each run has two follow-up rounds of them before it merges its shards' results.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.tokens import request_tokens
from tests.conftest import RunningAzurite, RunningEmulator, wait_for
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.e2e.test_inputs_results import results
from tests.host.conftest import RunningHost

JOB = "gpt-4o-batch::batch"
OTHER = "aoai-devstack-swedencentral"
OTHER_DEPLOYMENT = "gpt-4o-batch-se"
RESOURCES = (RESOURCE, OTHER)
PROMPTS = 30
PER_SHARD = 10
FIRST_ROUND = PROMPTS // PER_SHARD  # shards s0..s2; the follow-ups are numbered on from there
# Every prompt costs the same estimate: a failing one carries the emulator's marker where the others have "[[pass]]".
PROMPT = "Question {:03d}: name a prime number. [[pass]]"
LIMIT = PER_SHARD * request_tokens({"messages": [{"role": "user", "content": PROMPT.format(0)}]})
FAILING: tuple[tuple[int, ...], ...] = (
    (5,),
    (5, 25),
    (15,),
)  # each run's prompts that fail every time (the second's in two shards)
ROUNDS = 3  # the first round and two follow-ups (maxRequestRetries 2)
ENDED = ("Completed", "Failed", "Terminated")


def prompts(failing: tuple[int, ...]) -> list[dict[str, str]]:
    made = []
    for n in range(PROMPTS):
        text = PROMPT.format(n)
        if n in failing:
            text = text.replace("[[pass]]", "[[fail]]")
        made.append({"id": f"q{n:03d}", "user": text})
    estimates = {request_tokens({"messages": [{"role": "user", "content": p["user"]}]}) for p in made}
    assert len(estimates) == 1, "the shards' sizes below assume every prompt costs the same estimate"
    return made


@dataclass
class Sets:
    """The runs under test and where to look at them: the host's store and the emulator's request log."""

    host: RunningHost
    emulator: RunningEmulator
    failing: dict[str, tuple[int, ...]]  # by run id

    @property
    def runs(self) -> list[str]:
        return list(self.failing)

    def round_of(self, shard_id: str) -> int:
        """A shard's round, by its number: the first round's three, then one shard per failing prompt a round."""
        run_id, index = shard_id.rsplit("::s", 1)
        return 0 if int(index) < FIRST_ROUND else (int(index) - FIRST_ROUND) // len(self.failing[run_id]) + 1

    def creations(self) -> list[dict[str, Any]]:
        """The batch creations the emulator received (their body read), on both resources."""
        calls = self.emulator.requests_log(service="openai", route="batches.create")
        return [call for call in calls if call["body"] is not None]

    def creating(self, round_: int) -> bool:
        """Whether the emulator holds a creation of a batch of `round_`, not yet answered."""
        calls = self.creations()
        return any(c["status"] is None and self.round_of(c["body"]["metadata"]["runId"]) == round_ for c in calls)

    def creations_answered(self) -> bool:
        """Whether the emulator has answered every batch creation it received (a dead host's too)."""
        return all(c["status"] is not None for c in self.emulator.requests_log(route="batches.create"))

    def submits_unsent(self) -> bool:
        """Whether a shard's submit is queued or running whose batch creation the emulator has not received: it may
        be about to claim the creation in the submit ledger. A kill between that claim and the creation leaves a claim
        whose copy may still be creating, which the submit after the restart waits out (five emulated minutes) before
        it takes over: correct, only slow, so the kills avoid it."""
        received = {call["body"]["metadata"]["runId"] for call in self.creations()}
        submits = self.host.query("SELECT instance_id FROM activities WHERE name = 'submit_batch'")
        return any(instance not in received for (instance,) in submits)

    def unfinished(self) -> list[str]:
        """The runs whose orchestration the host has not committed as ended."""
        marks = ", ".join("?" * len(self.runs))
        sql = f"SELECT instance_id, status FROM instances WHERE instance_id IN ({marks})"  # noqa: S608
        ended = {instance for instance, status in self.host.query(sql, *self.runs) if status in ENDED}
        return [run for run in self.runs if run not in ended]

    def shards_started(self) -> int:
        return int(self.host.query("SELECT COUNT(*) FROM instances WHERE instance_id LIKE '%::s%'")[0][0])

    def starting_shards(self) -> bool:
        """Whether a set's `start_shards` activity is queued or running (its completion not committed)."""
        return bool(self.host.query("SELECT COUNT(*) FROM activities WHERE name = 'start_shards'")[0][0])

    def last_activity(self) -> int:
        """The id of the last activity the host scheduled (ids are never reused)."""
        rows = self.host.query("SELECT seq FROM sqlite_sequence WHERE name = 'activities'")
        return int(rows[0][0]) if rows else 0

    def merging(self, since: int = 0) -> bool:
        """Whether a set's merge of its shards' results, scheduled after activity `since`, has not completed."""
        sql = "SELECT COUNT(*) FROM activities WHERE name = 'merge_results' AND id > ?"
        return bool(self.host.query(sql, since)[0][0])

    def collecting(self) -> bool:
        """Whether a set that has not completed is in its last phase: merging its shards' results, then saying so."""
        marks = ", ".join("?" * len(self.runs))
        sql = f"SELECT status, custom_status FROM instances WHERE instance_id IN ({marks})"  # noqa: S608
        return any(
            status not in ENDED and json.loads(custom or "{}").get("phase") == "collecting"
            for status, custom in self.host.query(sql, *self.runs)
        )


@dataclass(frozen=True)
class KillPoint:
    """Where a kill lands: `reached` tells (from what the host then running did) that the host got there, and
    `landed` (read once the host is dead) that the kill fell inside it."""

    name: str
    reached: Callable[[Sets, int], bool]  # given the last activity the dead host had scheduled
    landed: Callable[[Sets], bool]


def creating_batch(round_: int) -> Callable[[Sets, int], bool]:
    return lambda sets, _: sets.creating(round_) and not sets.submits_unsent()


# Each is reached by progress that the host then running made (never after a real-time pause): the sets starting
# their shards (the runs start one after another, so some sets have started theirs and others not yet), a first-round
# batch's creation held by the emulator, the same in each follow-up round, and a set merging its shards' results
# (scheduled by the host then running). The emulator holds every batch creation a real second, so that the kills
# land inside them.
KILL_POINTS = (
    KillPoint(
        "the sets starting their shards",
        lambda sets, _: sets.starting_shards() or sets.shards_started() > 0,
        lambda sets: sets.starting_shards() or 0 < sets.shards_started() < len(sets.runs) * FIRST_ROUND,
    ),
    KillPoint("a first-round batch being created", creating_batch(0), lambda sets: sets.creating(0)),
    KillPoint("a first follow-up batch being created", creating_batch(1), lambda sets: sets.creating(1)),
    KillPoint("a second follow-up batch being created", creating_batch(2), lambda sets: sets.creating(2)),
    KillPoint("a set merging its shards' results", Sets.merging, Sets.collecting),
)


def due(point: KillPoint, sets: Sets, scheduled: int) -> bool:
    """Whether the host reached `point`, or has nothing left to do."""
    return point.reached(sets, scheduled) or not sets.unfinished()


def batch_deployment(emulator: RunningEmulator, resource: str, name: str) -> None:
    emulator.put_deployment(
        resource,
        name,
        model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
        sku={"name": "GlobalBatch", "capacity": 1},
        capabilities={"chatCompletion": "true"},
        enqueuedTokenLimit=100 * LIMIT,  # Azure's quota holds every shard: only the configured limits cut them
    )


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(300)  # generous: each kill point waits for progress, which a busy machine slows down
def test_batch_sets_survive_repeated_kill_9_at_fan_out_follow_ups_and_fan_in(
    tmp_path: Path, emulator: RunningEmulator, azurite: RunningAzurite
) -> None:
    for resource, deployment in ((RESOURCE, "gpt-4o-batch"), (OTHER, OTHER_DEPLOYMENT)):
        batch_deployment(emulator, resource, deployment)
        emulator.set_speeds(resource, validationSeconds=2, finalizingSeconds=2, requestsPerSecond=5)
        emulator.add_fault(service="openai", resource=resource, route="batches.create", latencyMs=1000)
    limits = {RESOURCE: {"tokenLimits": {"gpt-4o-batch": 2 * LIMIT}}, OTHER: {"tokenLimits": {OTHER_DEPLOYMENT: LIMIT}}}
    table, state = f"crashsets{os.urandom(3).hex()}", tmp_path / "host"
    host = start_host(state, emulator, azurite, table, limits)
    landed: list[str] = []
    try:
        app = App(host, emulator)
        app.import_jobs()
        patched = app.call("PATCH", f"jobs/{JOB}", json={"attributes": {"pool": [OTHER]}})
        assert patched.status_code == 200, patched.text
        failing: dict[str, tuple[int, ...]] = {}
        for fails in FAILING:
            built = app.call("POST", f"jobs/{JOB}/inputs", json={"prompts": prompts(fails)})
            assert built.status_code == 201, built.text
            failing[app.start(JOB, {"inputId": built.json()["id"]})["id"]] = fails
        sets = Sets(host, emulator, failing)

        scheduled = 0  # the last activity the previous host scheduled
        for point in KILL_POINTS:
            wait_for(functools.partial(due, point, sets, scheduled), timeout=120, interval=0.01, what=point.name)
            host.kill()
            if sets.unfinished() and point.landed(sets):
                landed.append(point.name)
            wait_for(sets.creations_answered, what="the batches the dead host asked for")
            scheduled = sets.last_activity()
            host = sets.host = start_host(state, emulator, azurite, table, limits)
            app = App(host, emulator)

        finished = [app.wait(run_id, timeout=120) for run_id in sets.runs]
        read = {run_id: results(app, run_id, top="1000")[0] for run_id in sets.runs}
    finally:
        host.stop()

    assert landed == [point.name for point in KILL_POINTS], "a kill fell outside the point it was meant for"
    assert [run["status"] for run in finished] == ["Success"] * len(FAILING), [run["failure"] for run in finished]
    shard_count = 0
    for run in finished:
        fails = failing[run["id"]]
        shards = run["outputs"]["shards"]
        assert [s["round"] for s in shards] == [0] * FIRST_ROUND + [1] * len(fails) + [2] * len(fails)
        # One batch per shard attempt, tagged with its shard, on the resource the shard reports.
        made = {resource: app.batches_of(run["id"], resource) for resource in RESOURCES}
        every = made[RESOURCE] + made[OTHER]
        assert sorted(b["metadata"]["runId"] for b in every) == sorted(s["id"] for s in shards)
        assert {b["id"] for b in every} == {s["runId"] for s in shards}
        assert {(b["metadata"]["runAttempt"], b["status"]) for b in every} == {("1", "completed")}
        for resource, listed in made.items():
            assert {b["metadata"]["runId"] for b in listed} == {s["id"] for s in shards if s["resource"] == resource}
        # Every request's result once: those failing every time tried three times, the others once.
        every_result = read[run["id"]]
        assert sorted(r["custom_id"] for r in every_result) == [f"q{n:03d}" for n in range(PROMPTS)]
        failed = sorted((r["custom_id"], r["attempts"]) for r in every_result if r["status"] == "failed")
        assert failed == [(f"q{n:03d}", ROUNDS) for n in fails]
        assert {r["attempts"] for r in every_result if r["status"] == "succeeded"} == {1}
        assert run["progress"] == {"total": PROMPTS, "completed": PROMPTS - len(fails), "failed": len(fails)} | {
            "percent": 100.0
        }
        shard_count += len(shards)
    assert sum(len(emulator.batches(resource)) for resource in RESOURCES) == shard_count
    # Not even asked for twice: a submit after a kill found the batch the dead host's had created.
    assert len(sets.creations()) == shard_count
