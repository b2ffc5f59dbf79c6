"""HTTP API of runs: start a job's run, read runs, cancel a batch run."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from blueprints.http import json_body, json_response, problems_as_responses
from shared.problems import FieldError, Problem

bp = df.Blueprint()

BATCH_OVERRIDES = ("inputFileId", "inputFileSecret", "endpoint", "completionWindow", "metadata")
MAX_USER_METADATA = 14  # Azure allows 16 pairs; two tie the batch to its run (runId, runAttempt)
RESERVED_METADATA = ("runId", "runAttempt")
RUN_STATUSES = ("Starting", "Running", "Success", "Failed", "Cancelled")


def new_run_id(deployment: str, kind: str, req: func.HttpRequest, resource: str) -> str:
    """Readable in the portal's instance list: deployment, job type, then a unique part. With an
    `Idempotency-Key` header the unique part comes from the key, so a retried request names the same run."""
    key = req.headers.get("Idempotency-Key")
    if key:
        if not 1 <= len(key) <= 255:
            raise Problem(
                400,
                "validation-failed",
                "The request is not valid",
                "Idempotency-Key is too long.",
                [FieldError("Idempotency-Key", "must be 1-255 characters")],
            )
        unique = hashlib.sha256(f"{resource}|{deployment}|{kind}|{key}".encode()).hexdigest()[:32]
    else:
        unique = uuid.uuid4().hex
    return f"{deployment}::{kind}::{unique}"


async def _start(
    client: df.DurableOrchestrationClient, orchestrator: str, run_id: str, state: dict[str, Any], req: func.HttpRequest
) -> dict[str, Any] | None:
    """Starts the orchestration, or returns the view of the run an earlier request with the same Idempotency-Key
    already started (never a second run, never a restart of a finished one)."""
    if req.headers.get("Idempotency-Key"):
        existing = await client.get_status(run_id, show_input=True)
        if existing and existing.instance_id:
            return run_view(existing)
        try:
            await client.start_new(orchestrator, run_id, state)
        except Exception:  # a concurrent twin started it first (the host answers 409)
            existing = await client.get_status(run_id, show_input=True)
            if existing and existing.instance_id:
                return run_view(existing)
            raise
        return None
    await client.start_new(orchestrator, run_id, state)
    return None


def _base(req: func.HttpRequest) -> str:
    url = req.url.split("?", 1)[0]
    return url[: url.index("/api/") + 4] if "/api/" in url else ""


def _links(req: func.HttpRequest, run_id: str, kind: str) -> dict[str, str]:
    base = _base(req)
    links = {"statusUrl": f"{base}/runs/{run_id}"}
    if kind == "batch":
        links["cancelUrl"] = f"{base}/runs/{run_id}/cancel"
    return links


@bp.route(route="jobs/{externalId}/runs", methods=["POST"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Starts a run of a Batch Job (body may override attributes) or a Chat Completion Job (body has prompts)."""
    from shared import services
    from shared.jobs import JobStatus, JobType, check_external_id

    external_id = check_external_id(req.route_params["externalId"])
    job = services.catalog().find_job(external_id, req.params.get("resource"))
    if job.status is JobStatus.RETIRED:
        raise Problem(
            410,
            "job-retired",
            "Job retired",
            f"Job '{external_id}' was retired on {job.retired_at}: its deployment no longer exists.",
        )
    body = json_body(req) if req.get_body() else {}
    if job.job_type is JobType.BATCH:
        return await _start_batch(req, client, job, body)
    if job.job_type is JobType.CHAT_COMPLETION:
        return await _start_chat(req, client, job, body)
    raise Problem(
        409,
        "job-not-runnable",
        "Job not runnable",
        f"Job '{external_id}' is a {job.job_type.display_name}, which this app does not run: {job.imported.reason}",
    )


async def _start_batch(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, job: Any, body: dict[str, Any]
) -> func.HttpResponse:
    from shared.jobs import BATCH_SKUS, JobType, merge_attributes
    from shared.runs import BatchRunState

    if not job.imported.batch_capable:
        raise Problem(
            409,
            "sku-cannot-batch",
            "Deployment cannot run batches",
            f"Deployment "
            f"'{job.imported.deployment}' has SKU {job.imported.sku or 'unknown'}; only "
            f"{' and '.join(sorted(BATCH_SKUS))} deployments run batch jobs.",
        )
    if job.status.value != "active":
        raise Problem(409, "job-not-runnable", "Job not runnable", job.imported.reason or "The job cannot run.")
    unknown = sorted(set(body) - set(BATCH_OVERRIDES))
    if unknown:
        raise Problem(
            400,
            "validation-failed",
            "The request is not valid",
            f"Unknown fields: {', '.join(unknown)}.",
            [FieldError(name, f"is not one of {', '.join(BATCH_OVERRIDES)}") for name in unknown],
        )
    overrides = {k: v for k, v in body.items() if k != "metadata"}
    current = dict(job.attributes)
    if "inputFileId" in overrides:
        current.pop("inputFileSecret", None)
    if "inputFileSecret" in overrides:
        current.pop("inputFileId", None)
    try:
        attributes = merge_attributes(JobType.BATCH, current, overrides)
    except Problem as problem:  # name the body's fields, not the stored attributes'
        problem.errors = [FieldError(e.field.removeprefix("attributes."), e.message) for e in problem.errors]
        problem.detail = f"Invalid fields: {', '.join(e.field for e in problem.errors)}."
        raise
    if not attributes.get("inputFileId") and not attributes.get("inputFileSecret"):
        raise Problem(
            400,
            "no-input-file",
            "No input file",
            "The job has no OpenAI Input File ID: set the job's "
            "inputFileId or inputFileSecret attribute, or pass one in the body.",
            [FieldError("inputFileId", "is required (or inputFileSecret)")],
        )
    metadata = _metadata(body.get("metadata"))
    resource = _configured_resource(job.resource)
    now = datetime.now(UTC)
    window = attributes.get("completionWindow") or "24h"
    state = BatchRunState(
        run_id=new_run_id(job.imported.deployment, "batch", req, job.resource),
        resource=job.resource,
        external_id=job.external_id,
        deployment=job.imported.deployment,
        endpoint=attributes.get("endpoint") or "/chat/completions",
        completion_window=window,
        requested_at=_iso(now),
        deadline="",  # set by the orchestration from its own clock
        monitor_url=resource.portal_url,
        input_file_id=attributes.get("inputFileId"),
        input_file_secret=attributes.get("inputFileSecret"),
        metadata=metadata,
    )
    earlier = await _start(client, "batch_run", state.run_id, state.to_dict(), req)
    view = (earlier or state.resource_view()) | _links(req, state.run_id, "batch")
    return json_response(view, status=200 if earlier else 202, headers={"Location": view["statusUrl"]})


async def _start_chat(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, job: Any, body: dict[str, Any]
) -> func.HttpResponse:
    from shared.chat import ChatRun

    if job.status.value != "active":
        raise Problem(409, "job-not-runnable", "Job not runnable", job.imported.reason or "The job cannot run.")
    errors = []
    unknown = sorted(set(body) - {"user_prompt", "system_prompt"})
    errors += [FieldError(name, "is not an input of a Chat Completion Job") for name in unknown]
    user_prompt = body.get("user_prompt")
    if not isinstance(user_prompt, str) or not user_prompt.strip():
        errors.append(FieldError("user_prompt", "is required and must be a non-empty string"))
    system_prompt = body.get("system_prompt", job.attributes.get("systemPrompt"))
    if system_prompt is not None and not isinstance(system_prompt, str):
        errors.append(FieldError("system_prompt", "must be a string"))
    if errors:
        raise Problem(400, "validation-failed", "The request is not valid", "Invalid run inputs.", errors)
    resource = _configured_resource(job.resource)
    monitor = resource.portal_url
    run = ChatRun(
        run_id=new_run_id(job.imported.deployment, "chat", req, job.resource),
        resource=job.resource,
        external_id=job.external_id,
        deployment=job.imported.deployment,
        user_prompt=str(user_prompt),
        requested_at=_iso(datetime.now(UTC)),
        monitor_url=monitor,
        system_prompt=system_prompt,
        max_tokens=job.attributes.get("maxTokens"),
        temperature=job.attributes.get("temperature"),
    )
    earlier = await _start(client, "chat_run", run.run_id, run.to_dict(), req)
    view = (earlier or run.resource_view("Starting")) | _links(req, run.run_id, "chat")
    return json_response(view, status=200 if earlier else 202, headers={"Location": view["statusUrl"]})


def _configured_resource(name: str) -> Any:
    """The job's resource from the settings; 409 when it is no longer configured (nothing to run against)."""
    from shared.settings import get_settings

    resource = get_settings().resource(name)
    if resource is None:
        raise Problem(
            409,
            "resource-not-configured",
            "Resource not configured",
            f"The job's resource '{name}' is no longer in AZURE_OPENAI_RESOURCES.",
        )
    return resource


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise Problem(
            400,
            "validation-failed",
            "The request is not valid",
            "metadata must map strings to strings.",
            [FieldError("metadata", "must be an object of string values")],
        )
    problems = []
    if len(value) > MAX_USER_METADATA:
        problems.append(
            FieldError(
                "metadata",
                f"has {len(value)} pairs; at most {MAX_USER_METADATA} (Azure allows 16, two tie the batch to its run)",
            )
        )
    problems += [
        FieldError(f"metadata.{k}", "keys are at most 64 characters and values at most 512")
        for k, v in value.items()
        if len(k) > 64 or len(v) > 512
    ]
    problems += [
        FieldError(f"metadata.{key}", "is reserved: it ties the batch to its run")
        for key in RESERVED_METADATA
        if key in value
    ]
    if problems:
        raise Problem(400, "validation-failed", "The request is not valid", "Invalid metadata.", problems)
    return dict(value)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Reading and cancelling runs ----------------------------------------------------------------------------------------


def _pending_view(status: Any) -> dict[str, Any]:
    """Before the orchestration's first episode has published anything: the run as it was started."""
    from shared.chat import ChatRun
    from shared.runs import BatchRunState

    started = status.input_
    if isinstance(started, str):
        try:
            started = json.loads(started)
        except ValueError:
            started = None
    if isinstance(started, dict) and "::batch::" in str(status.instance_id):
        return BatchRunState.from_dict(started).resource_view()
    if isinstance(started, dict):
        return ChatRun.from_dict(started).resource_view("Starting")
    return {"id": status.instance_id, "runId": None, "status": "Starting"}


def run_view(status: Any) -> dict[str, Any]:
    """The run resource from the orchestration's status: its custom status, or its output once it finished."""
    runtime = getattr(status.runtime_status, "value", status.runtime_status)
    view = status.output if runtime == "Completed" and isinstance(status.output, dict) else status.custom_status
    view = dict(view) if isinstance(view, dict) else _pending_view(status)
    if runtime == "Failed":
        view["status"] = "Failed"
        view["failure"] = view.get("failure") or {
            "code": "orchestration_failed",
            "message": str(status.output),
            "line": None,
            "param": None,
            "hint": None,
        }
    elif runtime == "Terminated":
        view["status"] = "Cancelled"
        view["failure"] = {
            "code": "terminated",
            "message": "The orchestration was terminated.",
            "line": None,
            "param": None,
            "hint": None,
        }
    view["orchestrationStatus"] = runtime
    return view


async def _status(client: df.DurableOrchestrationClient, run_id: str) -> Any:
    status = await client.get_status(run_id, show_input=True)
    if not status or not status.instance_id:
        raise Problem(404, "run-not-found", "Run not found", f"No run '{run_id}' exists.")
    return status


@bp.route(route="runs/{runId}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def get_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    run_id = req.route_params["runId"]
    status = await _status(client, run_id)
    kind = "batch" if "::batch::" in run_id else "chat"
    return json_response(run_view(status) | _links(req, run_id, kind))


@bp.route(route="runs", methods=["GET"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def list_runs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Runs, newest first, filtered by `jobId` (and `resource`) and `status`."""
    job_id, status, resource = req.params.get("jobId"), req.params.get("status"), req.params.get("resource")
    if status and status not in RUN_STATUSES:
        raise Problem(
            400,
            "validation-failed",
            "The request is not valid",
            "Invalid query parameters.",
            [FieldError("status", f"must be one of {', '.join(RUN_STATUSES)}")],
        )
    # A job's runs share an instance-id prefix, so the task hub filters them itself (the Durable client reads one
    # page of at most 100 instances per query).
    prefix = None
    if job_id:
        from shared.jobs import BATCH_SUFFIX, check_external_id, deployment_of

        check_external_id(job_id)
        prefix = f"{deployment_of(job_id)}::{'batch' if job_id.endswith(BATCH_SUFFIX) else 'chat'}::"
    instances = await (client.get_status_by(instance_id_prefix=prefix) if prefix else client.get_status_all())
    views = []
    for instance in instances:
        if "::batch::" not in str(instance.instance_id) and "::chat::" not in str(instance.instance_id):
            continue
        view = run_view(instance)
        if (status and view.get("status") != status) or (resource and view.get("resource") not in (None, resource)):
            continue
        views.append(view)
    views.sort(key=lambda v: v.get("requestedAt") or "", reverse=True)
    return json_response({"value": views, "count": len(views)})


@bp.route(route="runs/{runId}/cancel", methods=["POST"])
@bp.durable_client_input(client_name="client")
@problems_as_responses
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from blueprints.batch_runs import CANCEL_EVENT
    from shared import services

    run_id = req.route_params["runId"]
    status = await _status(client, run_id)
    view = run_view(status)
    if "::batch::" not in run_id:
        raise Problem(
            409,
            "cannot-cancel",
            "Run cannot be cancelled",
            "Chat Completion runs are synchronous and cannot be cancelled.",
        )
    if view.get("status") in ("Success", "Failed", "Cancelled"):
        raise Problem(409, "run-finished", "Run already finished", f"Run '{run_id}' already ended {view['status']}.")
    services.catalog().request_cancel(run_id, datetime.now(UTC))
    try:
        await client.raise_event(run_id, CANCEL_EVENT, {"requestedAt": _iso(datetime.now(UTC))})
    except Exception as error:  # the run ended between the status read and the event (the host answers 410)
        ended = run_view(await _status(client, run_id))
        if ended.get("status") in ("Success", "Failed", "Cancelled"):
            raise Problem(
                409, "run-finished", "Run already finished", f"Run '{run_id}' already ended {ended['status']}."
            ) from error
        raise
    return json_response(view | {"cancelRequested": True} | _links(req, run_id, "batch"), status=202)
