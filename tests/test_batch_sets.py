"""The batch set's one decision, `decide_set(run, seen, now)`: planning, placing shards where quota is free,
watching, cancelling, retry rounds, merging, the outcome rules, and bounded history for 1,000 shards (through the
real replay engine)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.batch_run import (
    MAX_EPISODE_EVENTS,
    ActivityFailed,
    Began,
    CancelArrived,
    ContinueAsNew,
    Finish,
    Indexed,
    IndexRun,
    ResultsCollected,
    Seen,
    Step,
    TimerFired,
    Wait,
    seen_from_dict,
    seen_to_dict,
)
from shared.batch_set import (
    MAX_SHARDS,
    MAX_STARTS_PER_STEP,
    MAX_STEP_FAILURES,
    BatchSet,
    CancelShards,
    MergeResults,
    PlanRetries,
    PlanShards,
    SetPhase,
    Shard,
    ShardsCancelled,
    ShardsObserved,
    ShardsPlanned,
    ShardsStarted,
    StartShards,
    WatchShards,
    decide_set,
    too_many_shards,
)
from shared.runs import Failure, RunStatus
from tests.replay import Replay

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RUN_ID = "gpt-4o-batch::batch::0123456789abcdef0123456789abcdef"
EAST = {"resource": "east", "deployment": "gpt-4o-batch", "monitorUrl": "https://p/east", "tokenLimit": 1000}
WEST = {"resource": "west", "deployment": "gpt-4o-batch-w", "monitorUrl": "https://p/west", "tokenLimit": 600}
SET = BatchSet(
    run_id=RUN_ID,
    resource="east",
    external_id="gpt-4o-batch::batch",
    deployment="gpt-4o-batch",
    endpoint="/chat/completions",
    completion_window="24h",
    requested_at="2026-11-29T12:00:00Z",
    monitor_url="https://p/east",
    input_id="f" * 32,
    staged_input="inputs/x.jsonl",
    requests=40,
    estimated_tokens=2000,
    model="gpt-4o",
    places=[EAST, WEST],
    indexed_status="Starting",
)


def planned(count: int, tokens: int = 400, requests: int = 10, round_: int = 0, first: int = 0) -> list[dict[str, Any]]:
    return [
        {"index": first + i, "round": round_, "staged_input": f"shards/x/s{first + i}.jsonl", "requests": requests}
        | {"estimated_tokens": tokens}
        for i in range(count)
    ]


def shards(count: int, **changes: Any) -> list[Shard]:
    return [replace(Shard.from_dict(p), **changes) for p in planned(count)]


def decided(run: BatchSet, seen: Seen, now: datetime = NOW) -> tuple[BatchSet, Step]:
    """The decision, past the index write that comes first whenever the set's status changed."""
    run, step = decide_set(run, seen, now)
    if isinstance(step, IndexRun):
        run, step = decide_set(run, Indexed(status=step.view["status"]), now)
    return run, step


def report(index: int, status: str = "Running", phase: str = "polling", **fields: Any) -> dict[str, Any]:
    return {"index": index, "status": status, "phase": phase, "resource": "east", "completed": 0, "failed": 0} | fields


def test_a_new_set_first_cuts_its_input_with_the_smallest_quota_as_budget() -> None:
    run, step = decided(SET, Began())

    assert step == PlanShards(RUN_ID, "inputs/x.jsonl", 600)
    assert run.phase is SetPhase.PLANNING
    assert decided(replace(SET, places=[{"resource": "east", "deployment": "d"}]), Began())[1] == PlanShards(
        RUN_ID, "inputs/x.jsonl", None
    )


def test_an_input_needing_more_shards_than_a_set_takes_fails_the_set_saying_why() -> None:
    why = too_many_shards(MAX_SHARDS + 1, 600)
    planned = seen_from_dict(seen_to_dict(ShardsPlanned(shards=[], refusal=Failure.of("too_many_shards", why))))

    run, step = decided(replace(SET, phase=SetPhase.PLANNING), planned)

    assert step == Finish()
    assert run.status is RunStatus.FAILED
    assert run.failure is not None
    assert (run.failure.code, run.failure.message) == ("too_many_shards", why)
    assert "1,001 shards at the token limit of 600" in why
    assert "at most 1,000" in why
    assert run.shards == []


def test_shards_start_where_quota_is_free_and_the_rest_wait_for_room() -> None:
    run, step = decided(SET, ShardsPlanned(shards=planned(5)))  # 5 x 400 tokens; east holds 1000, west 600

    assert isinstance(step, StartShards)
    placed = [(c["run_id"].rsplit("::s", 1)[1], c["resource"]) for c in step.children]
    assert placed == [("0", "east"), ("1", "east"), ("2", "west")]  # most quota free first; ties in the pool's order
    assert [c["places"][0]["resource"] for c in step.children] == ["east", "east", "west"]
    assert {len(c["places"]) for c in step.children} == {2}  # each may move to the other place on a refusal
    assert step.children[2]["deployment"] == "gpt-4o-batch-w"  # the other resource's own deployment
    assert all(c["parent_id"] == RUN_ID and c["staged_input"].startswith("shards/") for c in step.children)
    run, step = decided(run, ShardsStarted(indexes=[0, 1, 2]))
    assert isinstance(step, Wait)  # the started shards are looked at after a while
    assert [s.status for s in run.shards] == ["running"] * 3 + ["pending"] * 2


@pytest.mark.parametrize(
    ("counted", "completed", "started"),
    [
        (None, 10, [("1", "east"), ("2", "east"), ("3", "west")]),  # nothing ended yet: by the estimate (400 a shard)
        # 220 a shard: four on east's 1000, two on west's 600, each to the place with the most room left
        (200, 10, [("1", "east"), ("2", "east"), ("3", "west"), ("4", "east"), ("5", "west"), ("6", "east")]),
        # the same per request when half the requests completed (usage counts only those)
        (100, 5, [("1", "east"), ("2", "east"), ("3", "west"), ("4", "east"), ("5", "west"), ("6", "east")]),
        (300, 10, [("1", "east"), ("2", "east"), ("3", "west"), ("4", "east")]),  # 330 a shard, with the 10% margin
        (800, 10, [("1", "east"), ("2", "east"), ("3", "west")]),  # Azure counted more: never more than the estimate
    ],
)
def test_shards_are_placed_by_what_the_ended_ones_counted_against_their_estimate(
    counted: int | None, completed: int, started: list[tuple[str, str]]
) -> None:
    usage = (
        {"prompt_tokens": counted, "completion_tokens": 50, "total_tokens": (counted or 0) + 50} if counted else None
    )
    ended = replace(
        shards(1)[0], status="ended", run_status="Success", resource="east", completed=completed, usage=usage
    )
    waiting = [replace(s, index=s.index + 1) for s in shards(8)]
    run = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, indexed_status="Running")

    run, step = decided(replace(run, shards=[ended, *waiting]), TimerFired())

    assert isinstance(step, StartShards)
    assert [(c["run_id"].rsplit("::s", 1)[1], c["resource"]) for c in step.children] == started


def test_a_shard_that_fits_nowhere_still_starts_when_nothing_runs() -> None:
    run = replace(SET, phase=SetPhase.RUNNING, shards=shards(1, estimated_tokens=5000))

    run, step = decided(run, TimerFired())

    assert isinstance(step, StartShards)
    assert step.children[0]["resource"] == "east"


def test_starting_is_done_in_slices_so_each_step_stays_small() -> None:
    unlimited = [{"resource": "east", "deployment": "gpt-4o-batch"}]

    run, step = decided(replace(SET, places=unlimited), ShardsPlanned(shards=planned(120)))

    assert isinstance(step, StartShards)
    assert len(step.children) == MAX_STARTS_PER_STEP
    run, step = decided(run, ShardsStarted(indexes=list(range(MAX_STARTS_PER_STEP))))
    assert isinstance(step, StartShards)
    assert step.children[0]["run_id"].endswith(f"::s{MAX_STARTS_PER_STEP}")


def test_a_timer_brings_a_look_and_ended_shards_free_their_quota() -> None:
    east = {"resource": "east", "deployment": "gpt-4o-batch", "tokenLimit": 800}
    run = replace(SET, places=[east], phase=SetPhase.RUNNING, shards=shards(3, status="running", resource="east"))
    run.shards[2] = replace(run.shards[2], status="pending", resource=None)  # 800 tokens are held: it waits

    run, step = decided(run, TimerFired())
    assert step == WatchShards(RUN_ID, [0, 1])
    run, step = decided(run, ShardsObserved(shards=[report(0, "Success", "done", completed=10), report(1)]))

    assert [s.status for s in run.shards] == ["ended", "running", "pending"]
    assert run.status is RunStatus.RUNNING
    assert isinstance(step, StartShards)  # shard 0's quota is free again: shard 2 takes it
    assert step.children[0]["run_id"].endswith("::s2")


def test_a_shard_that_has_its_status_but_is_not_done_yet_is_still_watched() -> None:
    # A shard ends Success, then deletes the input files it uploaded: only then is it done, its files no longer needed.
    run = replace(ended_round(), shards=ended_round().shards[:1])

    run, step = decided(run, ShardsObserved(shards=[report(0, "Success", "collecting", completed=10)]))

    assert (run.shards[0].status, run.shards[0].run_status) == ("running", "Success")
    assert isinstance(step, Wait)


def test_nothing_changed_spaces_the_looks_out() -> None:
    run = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, shards=shards(1, status="running"))
    run = replace(run, indexed_status="Running")
    waits = []
    for _ in range(4):
        run, step = decided(run, ShardsObserved(shards=[report(0)]))
        assert isinstance(step, Wait)
        waits.append((datetime.fromisoformat(step.until.replace("Z", "+00:00")) - NOW).total_seconds())

    assert waits == sorted(waits)
    assert waits[-1] > waits[0]


def test_progress_alone_still_spaces_the_looks_out_and_a_shard_moving_on_brings_them_back() -> None:
    run = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, shards=shards(2, status="running"))
    run = replace(run, indexed_status="Running")

    def look(*reports: dict[str, Any]) -> float:
        nonlocal run
        run, step = decided(run, ShardsObserved(shards=list(reports)))
        assert isinstance(step, Wait)
        return (datetime.fromisoformat(step.until.replace("Z", "+00:00")) - NOW).total_seconds()

    first = look(report(0, batchId="batch_0"), report(1))
    waits = [look(report(0, batchId="batch_0", completed=n), report(1, completed=2 * n)) for n in range(1, 5)]
    moved_on = look(report(0, batchId="batch_0", completed=5), report(1, batchId="batch_1", completed=10))

    assert [first, *waits] == sorted([first, *waits])
    assert waits[-1] > first
    assert moved_on == first
    assert [s.completed for s in run.shards] == [5, 10]  # the counts are kept all the same


def ended_round(**changes: Any) -> BatchSet:
    run = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, indexed_status="Running")
    return replace(run, shards=shards(2, status="running", resource="east"), **changes)


def test_a_round_with_unfinished_requests_plans_a_follow_up_round() -> None:
    run, step = decided(
        ended_round(),
        ShardsObserved(
            shards=[report(0, "Success", "done", completed=10), report(1, "Failed", "done", completed=4, failed=6)]
        ),
    )

    assert step == PlanRetries(RUN_ID, 0, [{"index": 1, "staged_input": "shards/x/s1.jsonl", "id": f"{RUN_ID}::s1"}], 2)
    assert run.phase is SetPhase.RETRYING
    follow_up = planned(1, requests=6, round_=1, first=2)[0] | {"source": 1}
    run, step = decided(run, ShardsPlanned(shards=[follow_up]))
    assert (run.round, run.shards[1].retried_by) == (1, 2)
    assert isinstance(step, StartShards)
    # Its requests failed on east, which has the most quota free: the follow-up goes to west, and may move back.
    assert [p["resource"] for p in step.children[0]["places"]] == ["west", "east"]


def test_a_follow_up_goes_back_where_its_requests_failed_when_no_other_place_has_room() -> None:
    run = replace(ended_round(), phase=SetPhase.RETRYING)
    run.shards[0] = replace(run.shards[0], status="running", resource="west")  # 400 of west's 600 are held
    run.shards[1] = replace(run.shards[1], status="ended", run_status="Failed", completed=4, failed=6)
    follow_up = planned(1, requests=6, round_=1, first=2)[0] | {"source": 1}

    run, step = decided(run, ShardsPlanned(shards=[follow_up]))

    assert isinstance(step, StartShards)
    assert [p["resource"] for p in step.children[0]["places"]] == ["east", "west"]


def test_no_transient_failures_after_all_goes_straight_to_merging() -> None:
    run = replace(ended_round(), phase=SetPhase.RETRYING)

    run, step = decided(run, ShardsPlanned(shards=[]))

    assert isinstance(step, MergeResults)
    assert run.round == 0


def test_after_the_last_retry_round_the_results_are_merged_and_the_outcome_decided() -> None:
    run = ended_round(round=2)
    run.shards = [replace(s, round=2) for s in run.shards]

    run, step = decided(
        run,
        ShardsObserved(
            shards=[report(0, "Success", "done", completed=9, failed=1), report(1, "Success", "done", completed=10)]
        ),
    )
    assert isinstance(step, MergeResults)
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "cached_tokens": 0}
    run, step = decided(run, ResultsCollected(succeeded=19, failed=1, usage=usage))

    assert (step, run.status, run.phase) == (Finish(), RunStatus.SUCCESS, SetPhase.DONE)
    view = run.resource_view(with_shards=True)
    assert view["outputs"]["total_tokens"] == 12
    assert [s["id"] for s in view["outputs"]["shards"]] == [f"{RUN_ID}::s0", f"{RUN_ID}::s1"]


def test_a_shard_is_listed_with_its_runs_status_and_as_starting_before_it_started() -> None:
    pending, running, ended = shards(3)
    listed = [pending, replace(running, status="running"), replace(ended, status="ended", run_status="Failed")]

    summaries = replace(SET, shards=listed).resource_view(with_shards=True)["outputs"]["shards"]

    assert [s["status"] for s in summaries] == ["Starting", "Running", "Failed"]


def concluded(statuses: list[tuple[str, str | None]], **changes: Any) -> BatchSet:
    run = replace(SET, phase=SetPhase.COLLECTING, status=RunStatus.RUNNING, indexed_status="Running", **changes)
    run.shards = [
        replace(s, status="ended", run_status=status, failure={"code": code} if code else None)
        for s, (status, code) in zip(shards(len(statuses)), statuses, strict=True)
    ]
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}
    return decided(run, ResultsCollected(succeeded=0, failed=0, usage=usage))[0]


@pytest.mark.parametrize(
    ("statuses", "status", "code"),
    [
        ([("Success", None), ("Success", None)], RunStatus.SUCCESS, None),
        ([("Success", None), ("Failed", "expired")], RunStatus.FAILED, "expired"),
        ([("Failed", "input_file_not_found"), ("Failed", "expired")], RunStatus.FAILED, "shards_failed"),
        ([("Success", None), ("Cancelled", None)], RunStatus.FAILED, "shards_failed"),
    ],
)
def test_the_outcome_rules(statuses: list[tuple[str, str | None]], status: RunStatus, code: str | None) -> None:
    run = concluded(statuses)

    assert run.status is status
    assert (run.failure.code if run.failure else None) == code
    if run.failure:
        assert "shards did not succeed" in run.failure.message


def test_a_shard_retried_by_a_follow_up_is_judged_by_its_follow_up() -> None:
    run = concluded([("Failed", "expired"), ("Success", None)])
    assert run.status is RunStatus.FAILED

    run = replace(SET, phase=SetPhase.COLLECTING, status=RunStatus.RUNNING, indexed_status="Running")
    run.shards = [
        replace(shards(1)[0], status="ended", run_status="Failed", retried_by=1),
        replace(shards(2)[1], status="ended", run_status="Success", round=1),
    ]
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}
    run, _ = decided(run, ResultsCollected(succeeded=10, failed=0, usage=usage))
    assert run.status is RunStatus.SUCCESS


def test_a_cancel_reaches_every_running_shard_and_drops_the_pending_ones() -> None:
    run = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, indexed_status="Running")
    run.shards = [*shards(3, status="running"), replace(shards(4)[3], status="pending")]

    run, step = decided(run, CancelArrived())
    assert step == CancelShards(RUN_ID, [0, 1, 2])
    assert run.shards[3].status == "ended"
    run, step = decided(run, ShardsCancelled())
    assert isinstance(step, Wait)
    run, step = decided(run, TimerFired())
    assert step == WatchShards(RUN_ID, [0, 1, 2])
    run, step = decided(run, ShardsObserved(shards=[report(i, "Cancelled", "done", completed=3) for i in range(3)]))
    assert isinstance(step, MergeResults)  # no retries of a cancel a user asked for
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}
    run, step = decided(run, ResultsCollected(succeeded=9, failed=31, usage=usage))
    assert (step, run.status) == (Finish(), RunStatus.CANCELLED)


def test_a_cancel_while_planning_ends_the_set_with_no_shard() -> None:
    run, step = decided(SET, Began(cancel_requested=True))

    assert (step, run.status) == (Finish(), RunStatus.CANCELLED)


def test_an_activity_failing_is_tried_again_then_fails_the_set_saying_what() -> None:
    run = SET
    for tries in range(1, MAX_STEP_FAILURES):
        run, step = decided(run, ActivityFailed(step=PlanShards))
        if isinstance(step, ContinueAsNew):  # a long storm continues as new too; the next episode takes the step
            run, step = decided(run, Began())
        assert isinstance(step, Wait), tries
        run, step = decided(run, TimerFired())
        if isinstance(step, ContinueAsNew):
            run, step = decided(run, Began())
        assert isinstance(step, PlanShards)

    run, step = decided(run, ActivityFailed(step=PlanShards))

    assert (step, run.status) == (Finish(), RunStatus.FAILED)
    assert run.failure is not None
    assert run.failure.message == f"The run could not cut its input into shards ({MAX_STEP_FAILURES} tries)."


def test_the_view_sums_the_shards_and_keeps_custom_status_small_for_1000_shards() -> None:
    import json

    run = replace(SET, phase=SetPhase.RUNNING, shards=shards(1000, status="running", completed=3, failed=1))

    view = run.resource_view()

    assert view["shardCount"] == 1000
    assert view["progress"] == {"total": 10_000, "completed": 3000, "failed": 1000, "percent": 40.0}
    assert "shards" not in view["outputs"]
    assert len(json.dumps(view)) < 4000
    assert len(run.resource_view(with_shards=True)["outputs"]["shards"]) == 1000


# History for 1,000 shards, through the real replay engine ----------------------------------------------------------


def test_a_set_of_1000_shards_keeps_every_episode_within_the_history_limit() -> None:
    places = [{"resource": "east", "deployment": "gpt-4o-batch"}]
    replay = Replay("batch_set", replace(SET, places=places).to_dict(), instance_id=RUN_ID)
    replay.run()
    longest, started, ended, indexed = 0, set(), set(), {"Starting"}
    for _ in range(2000):
        if replay.continued:
            replay.continue_as_new()
        pending = [p for p in replay.pending if p.kind == "activity"]
        if not pending:
            if replay.done:
                break
            replay.fire_timer()
        else:
            task = pending[0]
            if task.name == "index_run":
                indexed.add(task.input["view"]["status"])
                replay.complete("index_run", seen_to_dict(Indexed(status=task.input["view"]["status"])))
            elif task.name == "plan_shards":
                replay.complete("plan_shards", seen_to_dict(ShardsPlanned(shards=planned(1000))))
            elif task.name == "start_shards":
                indexes = [int(c["run_id"].rsplit("::s", 1)[1]) for c in task.input["children"]]
                started.update(indexes)
                replay.complete("start_shards", seen_to_dict(ShardsStarted(indexes=indexes)))
            elif task.name == "watch_shards":
                done = [i for i in task.input["indexes"] if i not in ended][:200]  # 200 end per look
                ended.update(done)
                reports = [
                    report(i, "Success", "done", completed=10) if i in ended else report(i)
                    for i in task.input["indexes"]
                ]
                replay.complete("watch_shards", seen_to_dict(ShardsObserved(shards=reports)))
            elif task.name == "merge_results":
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cached_tokens": 0}
                replay.complete(
                    "merge_results", seen_to_dict(ResultsCollected(succeeded=10_000, failed=0, usage=usage))
                )
            else:
                raise AssertionError(task.name)
        longest = max(longest, len(replay.history))
        # The portal and the API never show a status the run index does not have yet, across continue-as-new too.
        assert replay.custom_status is None or replay.custom_status["status"] in indexed

    assert replay.done
    assert not replay.continued
    assert replay.output["status"] == "Success"
    assert len(replay.output["outputs"]["shards"]) == 1000
    assert started == set(range(1000))
    assert longest <= MAX_EPISODE_EVENTS
    assert replay.executions > 1


def test_a_status_is_indexed_before_it_shows_and_before_any_continue_as_new() -> None:
    """The set's final status is indexed in the episode that decides it, so no one sees it first — not in the custom
    status, and not in a new execution's input (which the API shows until that execution publishes a status): each
    number of idle looks moves the history limit against the end, so every position is tried."""
    continues = 0
    for idle_looks in range(24):
        running = replace(SET, phase=SetPhase.RUNNING, status=RunStatus.RUNNING, indexed_status="Running")
        running = replace(running, places=[EAST], shards=shards(1, status="running", resource="east"))
        replay = Replay("batch_set", running.to_dict(), instance_id=RUN_ID)
        replay.run()
        looks, indexed = 0, {"Running"}
        while True:
            if replay.continued:
                carried = replay.continued_with
                assert carried["status"] == carried["indexed_status"], idle_looks  # a new execution starts indexed
                continues += 1
                replay.continue_as_new()
            elif replay.done:
                break
            elif not replay.activity_pending:
                replay.fire_timer()
            elif (task := replay.activity()).name == "index_run":
                indexed.add(task.input["view"]["status"])
                replay.complete("index_run", seen_to_dict(Indexed(status=task.input["view"]["status"])))
            elif task.name == "watch_shards":
                looks += 1
                ended = looks > idle_looks
                shard = report(0, "Success", "done", completed=10) if ended else report(0)
                replay.complete("watch_shards", seen_to_dict(ShardsObserved(shards=[shard])))
            else:
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cached_tokens": 0}
                replay.complete(task.name, seen_to_dict(ResultsCollected(succeeded=10, failed=0, usage=usage)))
            assert replay.custom_status is None or replay.custom_status["status"] in indexed, idle_looks
        assert replay.output["status"] == "Success"
    assert continues  # the sweep crossed the history limit
