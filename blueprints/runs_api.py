"""HTTP API of runs: start a job's run, read runs, cancel a batch run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.durable_functions as df
import azure.functions as func

from blueprints.http import api_base, json_body, json_response, next_link, problems_as_responses
from shared.problems import Problem

if TYPE_CHECKING:
    from shared.runs import RunId

bp = df.Blueprint()
logger = logging.getLogger(__name__)


@bp.route(route="jobs/{externalId}/runs", methods=["POST"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Starts a run of a Batch Job (body may override attributes) or a Chat Completion Job (body has prompts).
    With an `Idempotency-Key`, a retried request answers 200 with the run the first one started."""
    from shared import services
    from shared.jobs import check_external_id
    from shared.run_requests import new_run, pool_of
    from shared.runs import RunId
    from shared.settings import get_settings

    external_id = check_external_id(req.route_params["externalId"])
    job = services.catalog().find_job(external_id, req.params.get("resource"))
    body = json_body(req) if req.get_body() else {}
    key = req.headers.get("Idempotency-Key")
    settings = get_settings()
    inputs, pool = None, None
    if "inputId" in body:
        inputs = services.input_records()
        batch_jobs = (
            services.catalog().list_jobs(job_type="batch", status="active") if job.attributes.get("pool") else []
        )
        pool = pool_of(job, batch_jobs, settings.resources)
    resource = settings.resource(job.resource)
    run = new_run(job, body, resource, key, datetime.now(UTC), inputs, pool, settings.input_blob_endpoints)
    run_id = RunId.parse(run.run_id)
    earlier = await _find(client, run_id) if key else None
    if earlier is None:
        _preflight(run)
        earlier = await _start(client, _orchestrator_of(run), run_id, run.to_dict(), bool(key))
    view = earlier or _starting_view(run)
    if earlier is None:
        _index(view)
    view |= _links(req, run_id)
    return json_response(view, status=200 if earlier else 202, headers={"Location": view["statusUrl"]})


def _preflight(run: Any) -> None:
    """A batch run's input is checked on Azure before its orchestration starts (a refusal leaves nothing behind)."""
    from shared import services
    from shared.batch_run import BatchRun
    from shared.run_requests import check_batch_input

    if isinstance(run, BatchRun):
        secrets = services.secret_reader() if run.input_file_secret else None
        check_batch_input(run, services.openai_client(run.resource), secrets)


def _index(view: dict[str, Any]) -> None:
    """Lists the run at once (the orchestration writes its row too, so a failure here only delays the listing)."""
    from shared import services

    try:
        services.run_index().add(view)
    except Exception:
        logger.warning("run %s is not in the run index yet", view["id"], exc_info=True)


def _orchestrator_of(run: Any) -> str:
    from shared.batch_run import BatchRun
    from shared.batch_set import BatchSet

    return "batch_set" if isinstance(run, BatchSet) else "batch_run" if isinstance(run, BatchRun) else "chat_run"


def _starting_view(run: Any) -> dict[str, Any]:
    from shared.chat import ChatRun
    from shared.runs import RunStatus

    view: dict[str, Any] = run.resource_view(RunStatus.STARTING) if isinstance(run, ChatRun) else run.resource_view()
    return view


async def _start(
    client: df.DurableOrchestrationClient,
    orchestrator: str,
    run_id: RunId,
    started_with: dict[str, Any],
    idempotent: bool,
) -> dict[str, Any] | None:
    """Starts the orchestration. With an Idempotency-Key, returns instead the run a concurrent request with the
    same key started first (never a second run, never a restart of a finished one)."""
    try:
        await client.start_new(orchestrator, str(run_id), started_with)
    except Exception:  # a concurrent twin started it first (the host answers 409)
        if idempotent and (existing := await _find(client, run_id)) is not None:
            return existing
        raise
    return None


async def _find(client: df.DurableOrchestrationClient, run_id: RunId) -> dict[str, Any] | None:
    """The run resource, or None when no orchestration has this id."""
    from shared.runs import run_resource

    status = await client.get_status(str(run_id), show_input=True)
    if not status or not status.instance_id:
        return None
    runtime = getattr(status.runtime_status, "value", status.runtime_status)
    return run_resource(run_id, str(runtime), status.custom_status, status.output, status.input_)


async def _existing(client: df.DurableOrchestrationClient, text: str) -> tuple[RunId, dict[str, Any]]:
    """The run id in the route and its run resource; 400 for an id outside the grammar, 404 for none."""
    from shared.problems import not_found
    from shared.runs import RunId

    run_id = RunId.parse(text)
    view = await _find(client, run_id)
    if view is None:
        raise not_found("run", str(run_id))
    return run_id, view


def _links(req: func.HttpRequest, run_id: RunId) -> dict[str, str]:
    from shared.jobs import JobType

    base = api_base(req.url)
    links = {"statusUrl": f"{base}/runs/{run_id}"}
    if run_id.job_type is JobType.BATCH:
        links["cancelUrl"] = f"{base}/runs/{run_id}/cancel"
        links["resultsUrl"] = f"{base}/runs/{run_id}/results"
    return links


@bp.route(route="runs/{runId}/results", methods=["GET"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def get_results(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A batch run's results, one JSON object per request (`application/x-ndjson`), a page at a time: `status=failed`
    for the failed ones only, `format=raw` for Azure's lines untouched; a `Link: <…>; rel="next"` header while more
    follow."""
    import asyncio

    from shared import services
    from shared.results import encode_offset, page
    from shared.run_requests import results_query

    run_id, view = await _existing(client, req.route_params["runId"])
    query = results_query(run_id, view, req.params)
    found = await asyncio.to_thread(page, services.staging(), query.staged, query.offset, query.top)
    if found is None:
        raise Problem(
            404,
            "no-results",
            "No results",
            f"The results of run '{run_id}' could not be read when it ended (Azure OpenAI's output files may have "
            "expired there, or, for a run of an inputBlob, the app's identity may not read the output folder).",
        )
    headers = {"Cache-Control": "no-store"}
    if found.next_offset is not None:
        following = next_link(req, continuationToken=encode_offset(query.kind, found.next_offset))
        headers["Link"] = f'<{following}>; rel="next"'
    body = b"".join(line + b"\n" for line in found.lines)
    return func.HttpResponse(body, status_code=200, mimetype="application/x-ndjson", headers=headers)


@bp.route(route="runs/{runId}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def get_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    run_id, view = await _existing(client, req.route_params["runId"])
    return json_response(view | _links(req, run_id))


@bp.route(route="runs", methods=["GET"])
@problems_as_responses
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """One page of runs, newest first, from the run index: filtered by job, resource, status and request time on the
    server, with `nextLink` (absent on the last page) to carry on."""
    from shared import services
    from shared.run_requests import list_query
    from shared.runs import RunId

    where, top, after = list_query(req.params)
    page = services.run_index().page(where, top=top, after=after)
    runs = [view | _links(req, RunId.parse(view["id"])) for view in page.runs]
    body: dict[str, Any] = {"value": runs, "count": len(runs)}
    if page.continuation_token:
        body["nextLink"] = next_link(req, continuationToken=page.continuation_token)
    return json_response(body)


@bp.route(route="maintenance/rebuild-run-index", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def rebuild_run_index(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Writes the run index's rows again from the task hub (the source of truth), a page of instances at a time,
    for at most REBUILD_SECONDS a request: the reply's `nextLink` goes on where this one stopped. A row the
    orchestration wrote since the task hub was read stays. Needs the host's master key."""
    import time
    from datetime import timedelta

    import aiohttp

    from blueprints.batch_sets import task_hub_pages
    from shared import services
    from shared.problems import FieldError, validation_problem
    from shared.runs import RunId, parse_iso, run_resource

    token = req.params.get("continuationToken")
    try:
        after = _task_hub_token(token) if token is not None else None
    except ValueError:
        raise validation_problem([FieldError("continuationToken", "is not a token this operation gave")]) from None
    index = services.run_index()
    rebuilt, stop_at = 0, time.monotonic() + REBUILD_SECONDS
    try:
        async for instances, following in task_hub_pages(client, after=after):
            for instance in instances:
                try:
                    run_id = RunId.parse(str(instance.get("instanceId")))
                except Problem:
                    continue  # not a run: another orchestration in the task hub
                view = run_resource(
                    run_id,
                    str(instance.get("runtimeStatus")),
                    instance.get("customStatus"),
                    instance.get("output"),
                    instance.get("input"),
                )
                if view.get("requestedAt"):  # the task hub's time is on whole seconds: the run as of that second's end
                    index.record(view, at=parse_iso(str(instance["lastUpdatedTime"])) + timedelta(seconds=1))
                    rebuilt += 1
            if following and time.monotonic() >= stop_at:
                link = next_link(req, continuationToken=_token_of(following))
                return json_response({"rebuilt": rebuilt, "nextLink": link})
    except aiohttp.ClientResponseError as exc:
        if token is not None and exc.status < 500:
            raise validation_problem([FieldError("continuationToken", "is not a token this operation gave")]) from None
        raise
    return json_response({"rebuilt": rebuilt})


REBUILD_SECONDS = 60.0  # a rebuild request's share of work: well within the 230 s an HTTP request may take on Azure


def _token_of(task_hub_token: str) -> str:
    """The task hub's continuation token as the client passes it back: base64url, nothing to escape or read."""
    import base64

    return base64.urlsafe_b64encode(task_hub_token.encode()).decode().rstrip("=")


def _task_hub_token(token: str) -> str:
    """The task hub's continuation token inside a token from _token_of; ValueError for anything else."""
    import base64
    import binascii

    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not base64url") from exc
    if not decoded or not decoded.isprintable():
        raise ValueError("not a task hub token")
    return decoded


@bp.route(route="runs/{runId}/cancel", methods=["POST"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Asks a batch run to cancel: a durable cancel record first (the run's activities read it), then the `cancel`
    event (so a waiting run acts at once); 409 when the run already ended or cannot be cancelled."""
    from blueprints.batch_runs import CANCEL_EVENT
    from shared import services
    from shared.jobs import JobType
    from shared.runs import iso

    run_id, view = await _existing(client, req.route_params["runId"])
    if run_id.job_type is not JobType.BATCH:
        raise Problem(
            409,
            "cannot-cancel",
            "Run cannot be cancelled",
            "Chat Completion runs are synchronous and cannot be cancelled.",
        )
    _refuse_if_ended(run_id, view)
    first = services.catalog().request_cancel(str(run_id), datetime.now(UTC))
    if first:  # one event per run: a repeated cancel would only lengthen the run's history
        try:
            await client.raise_event(str(run_id), CANCEL_EVENT, {"requestedAt": iso(datetime.now(UTC))})
        except Exception:  # the run ended between the status read and the event (the host answers 410)
            _, ended = await _existing(client, str(run_id))
            _refuse_if_ended(run_id, ended)
            raise
    return json_response(view | {"cancelRequested": True} | _links(req, run_id), status=202)


def _refuse_if_ended(run_id: RunId, view: dict[str, Any]) -> None:
    from shared.runs import RunStatus

    if RunStatus(view.get("status", RunStatus.STARTING.value)).is_terminal:
        raise Problem(409, "run-finished", "Run already finished", f"Run '{run_id}' already ended {view['status']}.")
