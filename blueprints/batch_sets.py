"""A batch run split into shards: an orchestrator that carries out the steps `shared.batch_set.decide_set` chooses,
and the activities that plan, start, watch, cancel and merge the shards (each shard is a `batch_run` of its own)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator
from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()
logger = logging.getLogger(__name__)

ACTIVITIES = {
    "PlanShards": "plan_shards",
    "StartShards": "start_shards",
    "WatchShards": "watch_shards",
    "CancelShards": "cancel_shards",
    "PlanRetries": "plan_retries",
    "MergeResults": "merge_results",
    "IndexRun": "index_run",
}
TASK_HUB_PAGE = 100


@bp.orchestration_trigger(context_name="context")
def batch_set(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    from blueprints.batch_runs import carry_out
    from shared.batch_set import BatchSet, decide_set

    run = BatchSet.from_dict(context.get_input())
    return (
        yield from carry_out(context, run, decide_set, ACTIVITIES, lambda ended: ended.resource_view(with_shards=True))
    )


@bp.activity_trigger(input_name="step")
def plan_shards(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import seen_to_dict
    from shared.batch_set import PlanShards, ShardsPlanned, too_many_shards
    from shared.runs import Failure
    from shared.shards import TooManyShards
    from shared.shards import plan_shards as plan

    request: PlanShards = PlanShards.from_dict(step)
    try:
        planned = plan(request.run_id, request.staged_input, request.token_budget, services.staging())
    except TooManyShards as refused:
        why = too_many_shards(refused.at_least, request.token_budget)
        return seen_to_dict(ShardsPlanned(shards=[], refusal=Failure.of("too_many_shards", why)))
    return seen_to_dict(ShardsPlanned(shards=planned))


@bp.activity_trigger(input_name="step")
@bp.durable_client_input(client_name="client")
async def start_shards(step: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """Starts each shard's batch run; one that already exists (this activity ran before) is left as it is."""
    from shared.batch_run import seen_to_dict
    from shared.batch_set import ShardsStarted, StartShards
    from shared.runs import RunId

    request: StartShards = StartShards.from_dict(step)
    started = []
    for child in request.children:
        run_id = child["run_id"]
        existing = await client.get_status(run_id)
        if not (existing and existing.instance_id):
            try:
                await client.start_new("batch_run", run_id, child)
            except Exception:  # a twin of this activity started it first (the host answers 409)
                again = await client.get_status(run_id)
                if not (again and again.instance_id):
                    raise
        started.append(RunId.parse(run_id).shard)
    return seen_to_dict(ShardsStarted(indexes=[i for i in started if i is not None]))


@bp.activity_trigger(input_name="step")
@bp.durable_client_input(client_name="client")
async def watch_shards(step: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """What the set's shards report, read from the task hub a page of instances at a time."""
    from shared.batch_run import seen_to_dict
    from shared.batch_set import ShardsObserved, WatchShards
    from shared.runs import RunId, run_resource
    from shared.shards import report_of

    request: WatchShards = WatchShards.from_dict(step)
    wanted = set(request.indexes)
    views: dict[int, dict[str, Any]] = {}
    async for instance in task_hub_instances(client, prefix=RunId.parse(request.run_id).shards_prefix):
        run_id = RunId.parse(str(instance.get("instanceId")))
        if run_id.shard in wanted:
            views[run_id.shard] = run_resource(
                run_id,
                str(instance.get("runtimeStatus")),
                instance.get("customStatus"),
                instance.get("output"),
                instance.get("input"),
            )
    return seen_to_dict(ShardsObserved(shards=[report_of(i, views.get(i)) for i in request.indexes]))


@bp.activity_trigger(input_name="step")
@bp.durable_client_input(client_name="client")
async def cancel_shards(step: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """Asks every running shard to cancel: its durable cancel record, then its `cancel` event."""
    from datetime import UTC, datetime

    from blueprints.batch_runs import CANCEL_EVENT
    from shared import services
    from shared.batch_run import seen_to_dict
    from shared.batch_set import CancelShards, ShardsCancelled
    from shared.runs import RunId, iso

    request: CancelShards = CancelShards.from_dict(step)
    catalog = services.catalog()
    run_id = RunId.parse(request.run_id)
    for index in request.indexes:
        shard_id = str(run_id.shard_of(index))
        if catalog.request_cancel(shard_id, datetime.now(UTC)):
            try:
                await client.raise_event(shard_id, CANCEL_EVENT, {"requestedAt": iso(datetime.now(UTC))})
            except Exception:  # it ended meanwhile (the host answers 410); its record stays, harmless
                logger.info("shard %s ended before its cancel event", shard_id)
    return seen_to_dict(ShardsCancelled())


@bp.activity_trigger(input_name="step")
def plan_retries(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import seen_to_dict
    from shared.batch_set import PlanRetries, ShardsPlanned
    from shared.shards import plan_retries as plan

    request: PlanRetries = PlanRetries.from_dict(step)
    planned = plan(request.run_id, request.round, request.shards, request.next_index, services.staging())
    return seen_to_dict(ShardsPlanned(shards=planned))


@bp.activity_trigger(input_name="step")
def merge_results(step: dict[str, Any]) -> dict[str, Any]:
    from shared import services
    from shared.batch_run import ResultsCollected, seen_to_dict
    from shared.batch_set import MergeResults
    from shared.results import estimated_cost
    from shared.settings import get_settings
    from shared.shards import merge_results as merge

    request: MergeResults = MergeResults.from_dict(step)
    collected = merge(request.run_id, request.shards, services.staging())
    cost = estimated_cost(collected.usage, get_settings().prices, request.model, request.model_version)
    answer = ResultsCollected(
        succeeded=collected.succeeded, failed=collected.failed, usage=collected.usage.to_dict(), estimated_cost=cost
    )
    return seen_to_dict(answer)


async def task_hub_instances(client: df.DurableOrchestrationClient, prefix: str | None = None) -> AsyncIterator[Any]:
    """Every instance of the task hub (with `prefix`, those whose id starts so)."""
    async for instances, _ in task_hub_pages(client, prefix=prefix):
        for instance in instances:
            yield instance


async def task_hub_pages(
    client: df.DurableOrchestrationClient, *, prefix: str | None = None, after: str | None = None
) -> AsyncIterator[tuple[list[Any], str | None]]:
    """The task hub's instances a page at a time, each with the continuation token of the pages after it (None
    after the last), from `after` on: the Durable Functions HTTP API's list, whose continuation the Python client
    does not follow (it reads one page)."""
    from urllib.parse import quote

    import aiohttp

    status_url = client.create_http_management_payload("x")["statusQueryGetUri"]
    base, query = status_url.split("?", 1)
    list_url = f"{base.rsplit('/', 1)[0]}?{query}&top={TASK_HUB_PAGE}&showInput=true"
    if prefix:
        list_url += f"&instanceIdPrefix={quote(prefix, safe='')}"
    token = after
    async with aiohttp.ClientSession() as session:
        while True:
            headers: dict[str, str] = {"x-ms-continuation-token": token} if token else {}
            async with session.get(list_url, headers=headers) as response:
                response.raise_for_status()
                instances = await response.json()
                token = response.headers.get("x-ms-continuation-token") or None
            yield instances, token
            if not token:
                return
