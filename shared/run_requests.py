"""Starting a run: what a start request may say, checked against its job, and the run it becomes.

Every refusal is a Problem raised before any orchestration starts, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.batch_run import RESERVED_METADATA, BatchRun, Phase
from shared.batch_set import MAX_SHARDS, BatchSet, SetPhase, token_budget, too_many_shards
from shared.chat import ChatRun
from shared.http import AzureError
from shared.inputs import MAX_REQUESTS, InputRecord, InputRecords, check_input_id, storage_url_error
from shared.jobs import BATCH_SKUS, DEPLOYMENT_NAME, Job, JobStatus, JobType, deployment_of, merge_attributes
from shared.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, TablePosition, decode_continuation_token
from shared.problems import FieldError, Problem, validation_problem
from shared.run_index import RunFilter
from shared.runs import RunId, RunStatus, iso
from shared.secrets import SecretReader, SecretUnavailable
from shared.settings import RESOURCE_NAME, OpenAIResource

if TYPE_CHECKING:
    from shared.azure_openai import AzureOpenAIClient

BATCH_FIELDS = (
    "inputId",
    "inputFileId",
    "inputFileSecret",
    "inputBlob",
    "outputFolder",
    "endpoint",
    "completionWindow",
    "metadata",
)
BLOB_FIELDS = ("inputBlob", "outputFolder")  # a batch with blob storage: Azure reads the blob, writes to the folder
# The run's status carries both URLs and the result blobs' (the folder's, longer): within Durable's 16 KB, whatever
# else it says.
MAX_BLOB_URL = 512
# The characters RFC 3986 lets a URL hold; any other (a space, a quote, non-ASCII) is percent-encoded.
URL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
CHAT_FIELDS = ("user_prompt", "system_prompt")
AZURE_METADATA_PAIRS = 16  # Azure's limit on a batch's metadata
MAX_USER_METADATA = AZURE_METADATA_PAIRS - len(RESERVED_METADATA)  # the others tie the batch to its run
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# A chat run's prompts travel in the orchestration's input and history: long documents belong in a Batch Job.
MAX_PROMPT_CHARACTERS = 100_000


def new_run(
    job: Job,
    body: dict[str, Any],
    resource: OpenAIResource | None,
    idempotency_key: str | None,
    now: datetime,
    inputs: InputRecords | None = None,
    pool: list[dict[str, Any]] | None = None,
    blob_endpoints: tuple[str, ...] = (),
) -> BatchRun | BatchSet | ChatRun:
    """The run that `body` asks of `job` (`resource` is the job's resource as configured, None when it is no
    longer configured; `inputs` where an `inputId` is looked up; `pool` the places that may run its shards;
    `blob_endpoints` the blob endpoints besides Azure Storage's that `inputBlob` and `outputFolder` may name), or the
    Problem saying why it cannot start. A Batch Job's run of an input the app built is a batch set (shards, pools,
    retries); of an input file made elsewhere, or of a user's blob, one batch."""
    if job.status is JobStatus.RETIRED:
        raise Problem(
            410,
            "job-retired",
            "Job retired",
            f"Job '{job.external_id}' was retired on {job.retired_at}: its deployment no longer exists.",
        )
    if job.job_type is JobType.BATCH:
        return _batch_run(job, body, resource, idempotency_key, now, inputs, pool, blob_endpoints)
    if job.job_type is JobType.CHAT_COMPLETION:
        return _chat_run(job, body, resource, idempotency_key, now)
    raise Problem(
        409,
        "job-not-runnable",
        "Job not runnable",
        f"Job '{job.external_id}' is a {job.job_type.display_name}, which this app does not run: {job.imported.reason}",
    )


def _batch_run(
    job: Job,
    body: dict[str, Any],
    resource: OpenAIResource | None,
    idempotency_key: str | None,
    now: datetime,
    inputs: InputRecords | None,
    pool: list[dict[str, Any]] | None,
    blob_endpoints: tuple[str, ...] = (),
) -> BatchRun | BatchSet:
    if not job.imported.batch_capable:
        raise Problem(
            409,
            "sku-cannot-batch",
            "Deployment cannot run batches",
            f"Deployment '{job.imported.deployment}' has SKU {job.imported.sku or 'unknown'}; only "
            f"{' and '.join(sorted(BATCH_SKUS))} deployments run batch jobs.",
        )
    _require_active(job)
    unknown = sorted(set(body) - set(BATCH_FIELDS))
    if unknown:
        raise validation_problem(
            [FieldError(name, f"is not one of {', '.join(BATCH_FIELDS)}") for name in unknown],
            f"Unknown fields: {', '.join(unknown)}.",
        )
    overrides = {k: v for k, v in body.items() if k not in ("metadata", "inputId", *BLOB_FIELDS)}
    blob = _blob_locations(job, body, resource, blob_endpoints) if set(BLOB_FIELDS) & set(body) else None
    if "inputId" in body and ("inputFileId" in overrides or "inputFileSecret" in overrides):
        raise validation_problem([FieldError("inputId", "give one of inputId, inputFileId or inputFileSecret")])
    built = _input_of(job, body.get("inputId"), inputs) if "inputId" in body else None
    attributes = _batch_attributes(job, overrides, input_given=blob is not None or built is not None)
    if blob is None and built is None and not attributes.get("inputFileId") and not attributes.get("inputFileSecret"):
        raise Problem(
            400,
            "no-input-file",
            "No input file",
            "The job has no OpenAI Input File ID: set the job's inputFileId or inputFileSecret attribute, or pass "
            "one in the body.",
            [FieldError("inputFileId", "is required (or inputFileSecret)")],
        )
    metadata = check_metadata(body.get("metadata"))
    configured = _configured(job, resource)
    if built is not None:
        places = pool or [_place(job, configured)]
        _check_shard_count(built, places)
        return BatchSet(
            run_id=str(RunId.new(job.resource, job.imported.deployment, JobType.BATCH, idempotency_key)),
            resource=job.resource,
            external_id=job.external_id,
            deployment=job.imported.deployment,
            endpoint=attributes.get("endpoint") or "/chat/completions",
            completion_window=attributes.get("completionWindow") or "24h",
            requested_at=iso(now),
            monitor_url=configured.portal_url,
            input_id=built.id,
            staged_input=built.staged_blob,
            requests=built.requests,
            estimated_tokens=built.estimated_tokens,
            model=job.imported.model_name,
            model_version=job.imported.model_version,
            metadata=metadata,
            places=places,
            max_request_retries=int(attributes.get("maxRequestRetries", 2)),
        )
    return BatchRun(
        run_id=str(RunId.new(job.resource, job.imported.deployment, JobType.BATCH, idempotency_key)),
        resource=job.resource,
        external_id=job.external_id,
        deployment=job.imported.deployment,
        endpoint=attributes.get("endpoint") or "/chat/completions",
        completion_window=attributes.get("completionWindow") or "24h",
        requested_at=iso(now),
        monitor_url=configured.portal_url,
        input_file_id=attributes.get("inputFileId"),
        input_file_secret=attributes.get("inputFileSecret"),
        metadata=metadata,
        input_id=built.id if built else None,
        input_blob=blob[0] if blob else None,
        output_folder=blob[1] if blob else None,
        estimated_tokens=built.estimated_tokens if built else None,
        model=job.imported.model_name,
        model_version=job.imported.model_version,
    )


def _check_shard_count(built: InputRecord, places: list[dict[str, Any]]) -> None:
    """Refuses an input whose set would need more than MAX_SHARDS shards: at least one per file's worth of requests
    and one per token budget of estimated tokens (short only if single requests exceed the budget, which no
    deployment could take anyway). The set's planning enforces the exact count."""
    budget = token_budget(places)
    at_least = max(-(-built.requests // MAX_REQUESTS), -(-built.estimated_tokens // budget) if budget else 0)
    if at_least > MAX_SHARDS:
        raise validation_problem([FieldError("inputId", too_many_shards(at_least, budget))])


def _input_of(job: Job, input_id: Any, inputs: InputRecords | None) -> InputRecord:
    """The input a run names by `inputId`: one built for this job on its resource."""
    assert inputs is not None, "looking up an inputId needs the input records"
    record = inputs.get(check_input_id(input_id))
    if record is None:
        raise Problem(
            404,
            "input-not-found",
            "Input not found",
            f"No input '{input_id}' exists.",
            [FieldError("inputId", "not found")],
        )
    if (record.job_id, record.resource) != (job.external_id, job.resource):
        raise Problem(
            409,
            "input-of-another-job",
            "Input of another job",
            f"Input '{input_id}' was built for job '{record.job_id}' on resource '{record.resource}'; build one for "
            f"'{job.external_id}' on '{job.resource}' (its lines name that job's deployment).",
            [FieldError("inputId", "belongs to another job")],
        )
    return record


def check_batch_input(run: BatchRun, client: AzureOpenAIClient, secrets: SecretReader | None) -> None:
    """Pre-flight, before any orchestration starts: the input file is on the job's resource, a batch input, and
    processed; a Key Vault secret naming it exists (its value is still read at run time). A Problem naming the field
    otherwise."""
    if run.input_file_id:
        field = "inputId" if run.input_id else "inputFileId"
        try:
            found = client.get_file(run.input_file_id)
        except AzureError as error:
            if error.status == 404:
                raise Problem(
                    404,
                    "input-file-not-found",
                    "Input file not found",
                    f"Resource '{run.resource}' has no file '{run.input_file_id}'. Files belong to the resource "
                    "that uploaded them: upload the input to this job's resource.",
                    [FieldError(field, "is not a file of the job's resource")],
                ) from error
            raise _upstream("Azure OpenAI", error.status, error.code) from error
        if found.purpose != "batch":
            raise Problem(
                400,
                "not-a-batch-input",
                "Not a batch input file",
                f"File '{found.id}' has purpose '{found.purpose}'; a batch reads a file uploaded with purpose 'batch'.",
                [FieldError(field, "is not a batch input file")],
            )
        if found.status == "error":
            raise Problem(
                400,
                "input-file-rejected",
                "Input file rejected",
                f"Azure OpenAI could not process file '{found.id}': {found.status_details or 'no detail given'}.",
                [FieldError(field, "was rejected by Azure OpenAI")],
            )
        if found.status != "processed":
            raise Problem(
                409,
                "input-file-not-ready",
                "Input file not processed yet",
                f"File '{found.id}' is {found.status}: Azure OpenAI is still processing it. Start the run once it "
                "is processed.",
                [FieldError(field, f"is {found.status}, not processed")],
            )
    if run.input_file_secret:
        assert secrets is not None
        try:
            secrets.latest(run.input_file_secret)
        except SecretUnavailable as error:
            if error.transient:
                raise _upstream("Key Vault", None, "unavailable") from error
            missing = "was not found" in str(error)
            raise Problem(
                404 if missing else 502,
                "input-secret-not-found" if missing else "input-secret-unreadable",
                "Input secret not found" if missing else "Input secret unreadable",
                str(error) + ("." if missing else ": check the app's role on the vault (Key Vault Secrets User)."),
                [FieldError("inputFileSecret", "not found in the vault" if missing else "not readable by the app")],
            ) from error


def _upstream(service: str, status: int | None, code: str) -> Problem:
    return Problem(
        502 if status else 503,
        "upstream-failed",
        f"{service} failed",
        f"{service} answered {status or 'nothing'} {code} while the run's input was checked; try again.",
        extensions={"upstreamStatus": status, "upstreamCode": code},
    )


def _blob_locations(
    job: Job, body: dict[str, Any], resource: OpenAIResource | None, blob_endpoints: tuple[str, ...]
) -> tuple[str, str]:
    """`inputBlob` and `outputFolder` (the folder without a trailing '/'), or a 400 naming the field at fault: both
    are needed, with no other input and no metadata (Azure takes none on such a batch), on a resource configured
    for batches with blob storage."""
    others = [name for name in ("inputId", "inputFileId", "inputFileSecret") if name in body]
    if others:
        raise validation_problem(
            [FieldError("inputBlob", f"give one input: inputBlob (with outputFolder) or {', '.join(others)}")]
        )
    missing = [name for name in BLOB_FIELDS if name not in body]
    if missing:
        given = next(name for name in BLOB_FIELDS if name in body)
        raise validation_problem([FieldError(missing[0], f"is required with {given}")])
    configured = _configured(job, resource)
    if not configured.batch_blob_storage:
        raise validation_problem(
            [
                FieldError(
                    "inputBlob",
                    f"resource '{configured.name}' does not take batches with blob storage (its entry in "
                    'AZURE_OPENAI_RESOURCES needs "apiVersion": "v1" and "batchBlobStorage": true)',
                )
            ]
        )
    if body.get("metadata"):
        raise validation_problem(
            [FieldError("metadata", "is not supported with inputBlob: Azure takes no metadata on such a batch")]
        )
    errors = [
        error
        for name, folder in (("inputBlob", False), ("outputFolder", True))
        if (error := _blob_url_error(body[name], name, blob_endpoints, folder=folder)) is not None
    ]
    if errors:
        raise validation_problem(errors, "Invalid blob locations.")
    return str(body["inputBlob"]), str(body["outputFolder"]).rstrip("/")


def _blob_url_error(value: Any, name: str, blob_endpoints: tuple[str, ...], *, folder: bool) -> FieldError | None:
    if isinstance(value, str) and (len(value) > MAX_BLOB_URL or not set(value) <= URL_CHARACTERS):
        return FieldError(
            name, f"must be a URL of at most {MAX_BLOB_URL} characters, spaces, quotes and non-ASCII percent-encoded"
        )
    return storage_url_error(value, name, blob_endpoints, folder=folder)


def _batch_attributes(job: Job, overrides: dict[str, Any], *, input_given: bool = False) -> dict[str, Any]:
    """The job's attributes with the body's overrides; an input given in the body replaces either stored one."""
    current = dict(job.attributes)
    if input_given or "inputFileId" in overrides or "inputFileSecret" in overrides:
        current.pop("inputFileId", None)
        current.pop("inputFileSecret", None)
    try:
        return merge_attributes(JobType.BATCH, current, overrides)
    except Problem as problem:  # name the body's fields, not the stored attributes'
        raise validation_problem(
            [FieldError(e.field.removeprefix("attributes."), e.message) for e in problem.errors]
        ) from None


def check_metadata(value: Any) -> dict[str, str]:
    """The user's batch metadata: strings to strings, within Azure's limits, none of the run's own keys."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise validation_problem(
            [FieldError("metadata", "must be an object of string values")], "metadata must map strings to strings."
        )
    errors = []
    if len(value) > MAX_USER_METADATA:
        errors.append(
            FieldError(
                "metadata",
                f"has {len(value)} pairs; at most {MAX_USER_METADATA} (Azure allows {AZURE_METADATA_PAIRS}, "
                f"{len(RESERVED_METADATA)} tie the batch to its run)",
            )
        )
    errors += [
        FieldError(
            f"metadata.{key[:MAX_METADATA_KEY]}",
            f"keys are at most {MAX_METADATA_KEY} characters and values at most {MAX_METADATA_VALUE}",
        )
        for key, text in value.items()
        if len(key) > MAX_METADATA_KEY or len(text) > MAX_METADATA_VALUE
    ]
    errors += [
        FieldError(f"metadata.{key}", "is reserved: it ties the batch to its run")
        for key in RESERVED_METADATA
        if key in value
    ]
    if errors:
        raise validation_problem(errors, "Invalid metadata.")
    return dict(value)


def _chat_run(
    job: Job, body: dict[str, Any], resource: OpenAIResource | None, idempotency_key: str | None, now: datetime
) -> ChatRun:
    _require_active(job)
    errors = [
        FieldError(name, "is not an input of a Chat Completion Job") for name in sorted(set(body) - set(CHAT_FIELDS))
    ]
    user_prompt = body.get("user_prompt")
    if not isinstance(user_prompt, str) or not user_prompt.strip():
        errors.append(FieldError("user_prompt", "is required and must be a non-empty string"))
    elif len(user_prompt) > MAX_PROMPT_CHARACTERS:
        errors.append(FieldError("user_prompt", f"must be at most {MAX_PROMPT_CHARACTERS:,} characters"))
    system_prompt = body.get("system_prompt", job.attributes.get("systemPrompt"))
    if system_prompt is not None and not isinstance(system_prompt, str):
        errors.append(FieldError("system_prompt", "must be a string"))
    elif system_prompt is not None and len(system_prompt) > MAX_PROMPT_CHARACTERS:
        errors.append(FieldError("system_prompt", f"must be at most {MAX_PROMPT_CHARACTERS:,} characters"))
    if errors:
        raise validation_problem(errors, "Invalid run inputs.")
    configured = _configured(job, resource)
    return ChatRun(
        run_id=str(RunId.new(job.resource, job.imported.deployment, JobType.CHAT_COMPLETION, idempotency_key)),
        resource=job.resource,
        external_id=job.external_id,
        deployment=job.imported.deployment,
        user_prompt=str(user_prompt),
        requested_at=iso(now),
        monitor_url=configured.portal_url,
        system_prompt=system_prompt,
        max_tokens=job.attributes.get("maxTokens"),
        temperature=job.attributes.get("temperature"),
    )


def _require_active(job: Job) -> None:
    if job.status is not JobStatus.ACTIVE:
        raise Problem(409, "job-not-runnable", "Job not runnable", job.imported.reason or "The job cannot run.")


def _configured(job: Job, resource: OpenAIResource | None) -> OpenAIResource:
    """The job's resource as configured; 409 when it is no longer configured (nothing to run against)."""
    if resource is None:
        raise Problem(
            409,
            "resource-not-configured",
            "Resource not configured",
            f"The job's resource '{job.resource}' is no longer in AZURE_OPENAI_RESOURCES.",
        )
    return resource


def list_query(params: Mapping[str, str]) -> tuple[RunFilter, int, TablePosition | None]:
    """A run listing's query: `jobId`, `resource`, `status`, `requestedFrom` / `requestedTo` (ISO 8601 times with a
    zone), `parentRun` (a batch set's shards instead of the runs users started), `top` and `continuationToken`, or a
    400 naming every bad parameter."""
    errors: list[FieldError] = []
    job_id, status = params.get("jobId"), params.get("status")
    if job_id and not DEPLOYMENT_NAME.fullmatch(deployment_of(job_id)):
        errors.append(FieldError("jobId", "is not a job id (a deployment name, with '::batch' for a Batch Job)"))
    if status and status not in {s.value for s in RunStatus}:
        errors.append(FieldError("status", f"must be one of {', '.join(s.value for s in RunStatus)}"))
    resource = params.get("resource")
    if resource and not RESOURCE_NAME.fullmatch(resource):
        errors.append(FieldError("resource", "is not a valid resource name (2-64 letters, digits and '-')"))
    times: dict[str, datetime | None] = {}
    for name in ("requestedFrom", "requestedTo"):
        times[name] = None
        if text := params.get(name):
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                moment = None
            if moment is None or moment.tzinfo is None:
                errors.append(
                    FieldError(name, "must be an ISO 8601 date and time with a zone, e.g. 2026-11-29T00:00:00Z")
                )
            else:
                times[name] = moment
    parent_run = params.get("parentRun") or ""
    if parent_run:
        try:
            RunId.parse(parent_run)
        except Problem:
            errors.append(FieldError("parentRun", "is not a run id"))
    top = _whole_number(params.get("top", str(DEFAULT_PAGE_SIZE)))
    if top is None or not 1 <= top <= MAX_PAGE_SIZE:
        errors.append(FieldError("top", f"must be a whole number from 1 to {MAX_PAGE_SIZE}"))
    after = None
    if token := params.get("continuationToken"):
        try:
            after = decode_continuation_token(token)
        except ValueError:
            errors.append(FieldError("continuationToken", "is not a token from a nextLink of this API; pass it as is"))
    if errors:
        raise validation_problem(errors, "Invalid query parameters.")
    assert top is not None
    where = RunFilter(
        job_id or None, resource or None, status or None, times["requestedFrom"], times["requestedTo"], parent_run
    )
    return where, top, after


def _whole_number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 10 else None


@dataclass(frozen=True)
class ResultsQuery:
    kind: str
    staged: str  # the staged copy's blob name
    offset: int
    top: int


def results_query(run_id: RunId, view: dict[str, Any], params: Mapping[str, str]) -> ResultsQuery:
    """Which page of a run's results a request asks for: `status` (`failed`), `format` (`raw`), `top` and
    `continuationToken`; a Problem when the run has no results to read yet, or a parameter is not valid."""
    from shared.results import decode_offset, staged_name

    if run_id.job_type is not JobType.BATCH:
        raise Problem(
            409,
            "no-results",
            "Results are for batch runs",
            "A Chat Completion run's answer is in its outputs (GET /api/runs/{runId}).",
        )
    errors = []
    status, form = params.get("status"), params.get("format")
    if status not in (None, "failed"):
        errors.append(FieldError("status", "must be 'failed' (or left out for every result)"))
    if form not in (None, "raw"):
        errors.append(FieldError("format", "must be 'raw' (or left out for one result object per request)"))
    top = _whole_number(params.get("top", str(DEFAULT_PAGE_SIZE)))
    if top is None or not 1 <= top <= MAX_PAGE_SIZE:
        errors.append(FieldError("top", f"must be a whole number from 1 to {MAX_PAGE_SIZE}"))
    if errors:
        raise validation_problem(errors, "Invalid query parameters.")
    assert top is not None
    ended = RunStatus(view.get("status", RunStatus.STARTING)).is_terminal
    if not ended or view.get("phase") in (Phase.COLLECTING, SetPhase.COLLECTING):
        raise Problem(
            409,
            "results-not-ready",
            "Results not ready",
            f"Run '{run_id}' is {view.get('status')}: its results can be read once it has ended.",
        )
    if not view.get("runId") and not view.get("shardCount"):
        raise Problem(404, "no-results", "No results", f"Run '{run_id}' ended without a batch, so it has no results.")
    kind = ("raw-" if form == "raw" else "") + ("failed" if status == "failed" else "all")
    kind = "raw" if kind == "raw-all" else kind
    token = params.get("continuationToken")
    offset = decode_offset(token, kind) if token else 0
    return ResultsQuery(kind, staged_name(str(run_id), kind), offset, top)


def _place(job: Job, resource: OpenAIResource) -> dict[str, Any]:
    return {
        "resource": resource.name,
        "deployment": job.imported.deployment,
        "monitorUrl": resource.portal_url,
        "tokenLimit": resource.token_limit(job.imported.deployment),
    }


def pool_of(job: Job, batch_jobs: Iterable[Job], resources: Iterable[OpenAIResource]) -> list[dict[str, Any]]:
    """Where a Batch Job's shards may run: its own deployment first, then, for each resource its `pool` attribute
    names, that resource's active batch deployment of the same model and version with the same SKU (a DataZoneBatch
    deployment only in the same data zone)."""
    configured = {r.name: r for r in resources}
    own = configured.get(job.resource)
    places = [_place(job, own)] if own else []
    for name in job.attributes.get("pool") or []:
        other = configured.get(name)
        if other is None or name == job.resource:
            continue
        if job.imported.sku == "DataZoneBatch" and (not own or other.data_zone != own.data_zone or not own.data_zone):
            continue
        for candidate in batch_jobs:
            same = (candidate.imported.model_name, candidate.imported.model_version, candidate.imported.sku) == (
                job.imported.model_name,
                job.imported.model_version,
                job.imported.sku,
            )
            if candidate.resource == name and same and candidate.status is JobStatus.ACTIVE:
                places.append(_place(candidate, other))
                break
    return places
