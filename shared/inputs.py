"""A Batch Job's input: built from what a user sends, checked line by line as Azure will check it, before anything
is uploaded.

Three JSON forms become the JSONL lines Azure expects (requests, prompts, or the lines themselves), and a blob can be
read a line at a time, so an input of any size passes through in bounded memory: `InputChecker.lines` takes the raw
lines and yields each one normalized (`model` filled in), counting requests, bytes and estimated tokens, and noting
every problem by its line number.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.http import AzureError
from shared.problems import FieldError, Problem, validation_problem
from shared.runs import iso
from shared.tokens import request_tokens

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from shared.azure_openai import AzureOpenAIClient, File
    from shared.jobs import Job
    from shared.staging import Staging

MAX_REQUESTS = 100_000  # Azure's limit of requests in one batch input file
MAX_FILE_BYTES = 200 * 1024 * 1024  # and of its size
# The app's limits for one input: runs of a larger one are cut into shards within Azure's per-file limits. Its custom
# ids are held while it is checked (unique across the input), about 100 MB at this many requests.
MAX_INPUT_REQUESTS = 1_000_000
MAX_INPUT_BYTES = 2 * 1024 * 1024 * 1024
PROBLEMS_SHOWN = 20  # the first problems a refusal lists (with the total count)
MAX_CUSTOM_ID = 512
BLOB_HOST = re.compile(r"^[a-z0-9]{3,24}\.blob\.core\.windows\.net$")
FORMS = ("requests", "prompts", "blobUrl")


@dataclass(frozen=True)
class LineProblem:
    """What is wrong with one line of an input (line numbers count from 1, as Azure's do)."""

    line: int | None
    field: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class InputCheck:
    """What a pass over an input found."""

    requests: int = 0
    bytes: int = 0
    estimated_tokens: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def valid(self) -> bool:
        return self.problem_count == 0

    def refusal(self) -> Problem:
        """A 400 listing the first problems by line number, and how many there are in all."""
        shown = self.problems[:PROBLEMS_SHOWN]
        more = f" (the first {len(shown)} are listed)" if self.problem_count > len(shown) else ""
        return Problem(
            400,
            "invalid-input",
            "The input is not a valid batch input",
            f"The input has {self.problem_count} problem{'s' if self.problem_count != 1 else ''}{more}; nothing "
            "was uploaded.",
            [FieldError(f"line {p.line}.{p.field}" if p.line else p.field, p.message) for p in shown],
            extensions={"problemCount": self.problem_count, "problems": [p.to_dict() for p in shown]},
        )


class InputChecker:
    """Checks an input's lines as Azure's batch validation will, one line at a time."""

    def __init__(self, endpoint: str, deployment: str) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.check = InputCheck()
        self._custom_ids: set[str] = set()
        self._over_limit = False

    def lines(self, raw_lines: Iterable[bytes]) -> Iterator[bytes]:
        """Each valid line normalized (compact JSON, `model` filled in, newline-terminated); blank lines skipped.
        Invalid lines are noted and left out, so nothing of an invalid input is usable: callers check `valid`."""
        for number, raw in enumerate(raw_lines, start=1):
            if not raw.strip():
                continue
            line = self._line(number, raw)
            if line is None:
                continue
            encoded = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            self.check.requests += 1
            self.check.bytes += len(encoded)
            self.check.estimated_tokens += request_tokens(line["body"])
            if self.check.requests > MAX_INPUT_REQUESTS or self.check.bytes > MAX_INPUT_BYTES:
                if not self._over_limit:
                    self._over_limit = True
                    self._problem(
                        None,
                        "requests" if self.check.requests > MAX_INPUT_REQUESTS else "bytes",
                        f"the input is over the limits of one input: {MAX_INPUT_REQUESTS:,} requests and "
                        f"{MAX_INPUT_BYTES:,} bytes",
                    )
            else:
                yield encoded
        if self.check.requests == 0 and self.check.problem_count == 0:
            self._problem(None, "requests", "the input has no requests")

    def _line(self, number: int, raw: bytes) -> dict[str, Any] | None:
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            self._problem(number, "line", "starts with a byte order mark; send UTF-8 without BOM")
            return None
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._problem(number, "line", "is not valid JSON")
            return None
        if not isinstance(line, dict):
            self._problem(number, "line", "must be a JSON object")
            return None
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            self._problem(number, "custom_id", f"is required: a string of 1 to {MAX_CUSTOM_ID} characters")
            return None
        if custom_id in self._custom_ids:
            self._problem(number, "custom_id", f"'{custom_id}' is used by an earlier line; each must be unique")
            return None
        self._custom_ids.add(custom_id)
        if line.get("method") != "POST":
            self._problem(number, "method", "must be 'POST'")
            return None
        if line.get("url") != self.endpoint:
            self._problem(number, "url", f"must be the job's endpoint '{self.endpoint}'")
            return None
        body = line.get("body")
        if not isinstance(body, dict):
            self._problem(number, "body", "must be an object: the chat completions request")
            return None
        model = body.setdefault("model", self.deployment)
        if model != self.deployment:
            self._problem(number, "body.model", f"must be the job's deployment '{self.deployment}'")
            return None
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._problem(number, "body.messages", "must be a non-empty list of messages")
            return None
        unknown = sorted(set(line) - {"custom_id", "method", "url", "body"})
        if unknown:
            self._problem(number, unknown[0], "is not a field of a batch input line")
            return None
        return line

    def _problem(self, line: int | None, name: str, message: str) -> None:
        self.check.problem_count += 1
        if len(self.check.problems) < PROBLEMS_SHOWN:
            self.check.problems.append(LineProblem(line, name, message))


def lines_of(body: bytes) -> Iterator[bytes]:
    """The lines of a JSONL body (without their line breaks), found one at a time: a body of 100 MB is not held a
    second time as a list of its lines."""
    start = 0
    while (end := body.find(b"\n", start)) >= 0:
        yield body[start:end].rstrip(b"\r")
        start = end + 1
    yield body[start:].rstrip(b"\r")


def lines_from_json(
    request: dict[str, Any], endpoint: str, defaults: dict[str, Any], blob_endpoints: tuple[str, ...] = ()
) -> tuple[Iterator[bytes] | None, str | None]:
    """The lines a JSON input request describes (`requests` or `prompts`), or the blob URL it names; a 400 naming
    the field when it is none of them. `defaults` are the job's `systemPrompt`, `maxTokens` and `temperature`;
    `blob_endpoints` the blob endpoints besides Azure Storage's that the app may read from."""
    forms = [name for name in FORMS if name in request]
    if len(forms) != 1:
        raise validation_problem(
            [FieldError("body", "must have exactly one of requests, prompts or blobUrl")],
            'The body must be {"requests": [...]}, {"prompts": [...]} or {"blobUrl": "..."}.',
        )
    form = forms[0]
    allowed = {"prompts", "maxTokens", "temperature"} if form == "prompts" else {form}
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise validation_problem([FieldError(name, f"is not a field of a {form} input") for name in unknown])
    if form == "blobUrl":
        return None, check_blob_url(request["blobUrl"], blob_endpoints)
    items = request[form]
    if not isinstance(items, list) or not items:
        raise validation_problem([FieldError(form, "must be a non-empty list")])
    if len(items) > MAX_INPUT_REQUESTS:
        raise validation_problem([FieldError(form, f"has more than {MAX_INPUT_REQUESTS:,} items, an input's limit")])
    if form == "requests":
        return (_encoded(_request_line(n, item, endpoint)) for n, item in enumerate(items, start=1)), None
    settings = _prompt_settings(request, defaults)
    return (_encoded(_prompt_line(n, item, endpoint, settings)) for n, item in enumerate(items, start=1)), None


def _encoded(line: Any) -> bytes:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _request_line(number: int, item: Any, endpoint: str) -> Any:
    """`{"custom_id"?, "body"}` as a full line (an id generated when absent); anything else is passed on as it is,
    so the checker names its line."""
    if not isinstance(item, dict):
        return item
    line = {"custom_id": item.get("custom_id", f"request-{number}"), "method": "POST", "url": endpoint}
    line["body"] = item.get("body")
    line |= {k: v for k, v in item.items() if k not in ("custom_id", "body")}
    return line


def _prompt_settings(request: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    from shared.jobs import ATTRIBUTES, JobType

    specs = ATTRIBUTES[JobType.BATCH]
    settings: dict[str, Any] = {}
    errors = []
    for name in ("maxTokens", "temperature"):
        value = request.get(name, defaults.get(name))
        if value is not None and (message := specs[name].check(value)) is not None:
            errors.append(FieldError(name, message))
        settings[name] = value
    if errors:
        raise validation_problem(errors)
    settings["systemPrompt"] = defaults.get("systemPrompt")
    return settings


def _prompt_line(number: int, item: Any, endpoint: str, settings: dict[str, Any]) -> Any:
    """`{"id"?, "user", "system"?}` as a chat request line; the job's system prompt when the item has none."""
    if not isinstance(item, dict) or not isinstance(item.get("user"), str) or not item["user"].strip():
        return {"custom_id": f"prompt-{number}", "method": "POST", "url": endpoint, "body": {"messages": []}}
    messages = []
    system = item.get("system", settings["systemPrompt"])
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": item["user"]})
    body: dict[str, Any] = {"messages": messages}
    if settings["maxTokens"] is not None:
        body["max_tokens"] = settings["maxTokens"]
    if settings["temperature"] is not None:
        body["temperature"] = settings["temperature"]
    custom_id = item.get("id", f"prompt-{number}")
    return {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}


def check_blob_url(value: Any, allowed_endpoints: tuple[str, ...] = ()) -> str:
    """A blob URL the app may read with its identity: HTTPS, an Azure Storage blob host (or an endpoint the settings
    allow, such as a local emulator), a container and a blob name. Anything else is refused, so the app's token never
    goes to another host."""
    error = storage_url_error(value, "blobUrl", allowed_endpoints)
    if error is not None:
        raise validation_problem([error])
    return str(value)


def storage_url_error(
    value: Any, field: str, allowed_endpoints: tuple[str, ...] = (), *, folder: bool = False
) -> FieldError | None:
    """What is wrong with `value` as the URL of a blob (`folder`: of a container, or a folder in one), if anything:
    HTTPS, an Azure Storage blob host or an endpoint the settings allow (a local emulator's, whose path names the
    account first), then the container and, for a blob, its name; no query (no SAS), no fragment, no user."""
    shape = "<container>[/<folder>]" if folder else "<container>/<blob>"
    error = FieldError(field, f"must be https://<account>.blob.core.windows.net/{shape} (no query, no SAS)")
    if not isinstance(value, str):
        return error
    parts = urlsplit(value)
    if parts.scheme != "https" or parts.query or parts.fragment or parts.username or parts.password:
        return error
    endpoint = next((e.rstrip("/") for e in allowed_endpoints if value.startswith(e.rstrip("/") + "/")), None)
    if endpoint is not None:
        rest = value[len(endpoint) + 1 :]
    elif BLOB_HOST.fullmatch(parts.hostname or "") and parts.port in (None, 443):
        rest = parts.path.lstrip("/")
    else:
        return error
    path = (rest.rstrip("/") if folder else rest).split("/")
    if len(path) < (1 if folder else 2) or not all(path):
        return error
    return None


# Staging, uploading and keeping an input -----------------------------------------------------------------------------

PROCESSING_WAIT_SECONDS = 120.0  # how long an upload waits for Azure to process the file before answering


@dataclass(frozen=True)
class InputRecord:
    """An input the app built, checked, staged and uploaded: what `GET /api/inputs/{id}` shows."""

    id: str
    job_id: str
    resource: str
    deployment: str
    file_id: str | None  # None for an input larger than one file: its runs' shards upload their own parts
    requests: int
    bytes: int
    estimated_tokens: int
    staged_blob: str
    status: str  # Azure's file status when last seen (processed, pending, error), or `staged` when not uploaded
    created_at: str

    def to_resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "jobId": self.job_id,
            "resource": self.resource,
            "fileId": self.file_id,
            "requests": self.requests,
            "bytes": self.bytes,
            "estimatedTokens": self.estimated_tokens,
            "status": self.status,
            "createdAt": self.created_at,
        }

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": self.id,
            "RowKey": "",
            "JobId": self.job_id,
            "Resource": self.resource,
            "Deployment": self.deployment,
            "FileId": self.file_id or "",
            "Requests": self.requests,
            "Bytes": self.bytes,
            "EstimatedTokens": self.estimated_tokens,
            "StagedBlob": self.staged_blob,
            "Status": self.status,
            "CreatedAt": self.created_at,
        }

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> InputRecord:
        return cls(
            id=entity["PartitionKey"],
            job_id=entity["JobId"],
            resource=entity["Resource"],
            deployment=entity["Deployment"],
            file_id=entity["FileId"] or None,
            requests=int(entity["Requests"]),
            bytes=int(entity["Bytes"]),
            estimated_tokens=int(entity["EstimatedTokens"]),
            staged_blob=entity["StagedBlob"],
            status=entity["Status"],
            created_at=entity["CreatedAt"],
        )


INPUT_ID = re.compile(r"^[0-9a-f]{32}$")


def check_input_id(value: Any, name: str = "inputId") -> str:
    """An input id as the app gives them out (32 hex digits); else a 400 naming the field."""
    if not isinstance(value, str) or not INPUT_ID.fullmatch(value):
        raise validation_problem([FieldError(name, "is not an input id (32 hex digits, as POST .../inputs gave it)")])
    return value


class InputRecords:
    """The inputs the app built, in a table of the host's storage account (`<CATALOG_TABLE>inputs`)."""

    def __init__(self, service: Any, table_name: str) -> None:
        self.table = service.get_table_client(table_name)
        self._ready = False

    def _client(self) -> Any:
        if not self._ready:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._ready = True
        return self.table

    def add(self, record: InputRecord) -> None:
        self._client().create_entity(record.to_entity())

    def get(self, input_id: str) -> InputRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return InputRecord.from_entity(self._client().get_entity(input_id, ""))
        except ResourceNotFoundError:
            return None

    def update(self, record: InputRecord) -> None:
        self._client().update_entity(record.to_entity())

    def find(self, input_id: str) -> InputRecord:
        """The input, or a 404 naming it."""
        record = self.get(check_input_id(input_id, "id"))
        if record is None:
            raise Problem(404, "input-not-found", "Input not found", f"No input '{input_id}' exists.")
        return record


def create_input(
    job: Job,
    raw_lines: Iterable[bytes],
    *,
    staging: Staging,
    client: AzureOpenAIClient,
    records: InputRecords,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> InputRecord:
    """Checks the lines while staging them in the app's Blob Storage; an invalid input is refused (a 400 naming the
    first problems by line) with nothing uploaded. A valid one that fits one file is uploaded to the job's resource
    from the staged copy, both streamed, and waited on until Azure has processed it; a larger one stays staged only
    (`fileId` null), since only the shards of its runs fit Azure's files."""
    input_id = uuid.uuid4().hex
    checker = InputChecker(job.effective_attributes()["endpoint"], job.imported.deployment)
    blob = f"inputs/{input_id}.jsonl"
    size = staging.write(blob, checker.lines(raw_lines))
    if not checker.check.valid:
        staging.delete(blob)
        raise checker.check.refusal()
    fits_one_file = checker.check.requests <= MAX_REQUESTS and size <= MAX_FILE_BYTES
    uploaded = _uploaded(job, input_id, blob, size, staging, client, sleep) if fits_one_file else None
    record = InputRecord(
        id=input_id,
        job_id=job.external_id,
        resource=job.resource,
        deployment=job.imported.deployment,
        file_id=uploaded.id if uploaded else None,
        requests=checker.check.requests,
        bytes=size,
        estimated_tokens=checker.check.estimated_tokens,
        staged_blob=blob,
        status=uploaded.status if uploaded else "staged",
        created_at=iso(now),
    )
    records.add(record)
    return record


def _uploaded(
    job: Job, input_id: str, blob: str, size: int, staging: Staging, client: AzureOpenAIClient, sleep: Any
) -> File:
    """The staged input uploaded to the job's resource and processed there; a 502 when Azure did not take it, a 400
    when it could not process it."""
    try:
        uploaded = client.upload_file(f"input-{input_id}.jsonl", staging.chunks(blob), size)
        uploaded = _processed(client, uploaded, sleep)
    except AzureError as error:
        raise Problem(
            502,
            "upload-failed",
            "Azure OpenAI did not take the input",
            f"Uploading the input to resource '{job.resource}' failed: Azure OpenAI answered "
            f"{error.status or 'nothing'} {error.code}.",
            extensions={"upstreamStatus": error.status, "upstreamCode": error.code},
        ) from error
    if uploaded.status == "error":
        raise Problem(
            400,
            "input-rejected",
            "Azure OpenAI rejected the input",
            f"Azure OpenAI could not process the uploaded file {uploaded.id}: {uploaded.status_details or 'no detail'}",
        )
    return uploaded


def refreshed(record: InputRecord, client_of: Callable[[str], AzureOpenAIClient], records: InputRecords) -> InputRecord:
    """The input as Azure has its file now when it was last seen `pending` (the record is updated once that
    changed); as last seen when Azure cannot say (an error, or the resource is no longer configured)."""
    from shared.settings import SettingsError

    if record.status != "pending" or record.file_id is None:
        return record
    try:
        status = client_of(record.resource).get_file(record.file_id).status
    except (AzureError, SettingsError) as error:
        logger.warning("input %s: its file could not be looked at: %s", record.id, error)
        return record
    if status == record.status:
        return record
    record = replace(record, status=status)
    records.update(record)
    return record


def _processed(client: AzureOpenAIClient, uploaded: File, sleep: Callable[[float], None]) -> File:
    """The file once Azure has processed it (or gave up on it), or as it is after PROCESSING_WAIT_SECONDS."""
    waited = 0.0
    delay = 0.5
    while uploaded.status not in ("processed", "error") and waited < PROCESSING_WAIT_SECONDS:
        sleep(delay)
        waited += delay
        delay = min(delay * 2, 5.0)
        uploaded = client.get_file(uploaded.id)
    return uploaded


def upload_staged(staged: str, filename: str, staging: Staging, client: AzureOpenAIClient, deployment: str) -> str:
    """A staged input uploaded to a resource (streamed) and processed there, every line's `body.model` naming
    `deployment` (a batch runs only on the deployment its lines name, and a shard may run on another resource's
    deployment of the model); its file id. An upload that Azure could not process raises (the caller tries again).
    The input is read twice, first for the upload's length, so memory stays bounded whatever its size."""
    from shared.staging import lines

    if staging.size(staged) is None:
        raise FileNotFoundError(f"staged input {staged} is missing")

    def retargeted() -> Iterator[bytes]:
        for line in lines(staging.chunks(staged)):
            if line.strip():
                yield _naming(line, deployment)

    size = sum(len(line) for line in retargeted())
    uploaded = _processed(client, client.upload_file(filename.replace(":", "-"), retargeted(), size), time.sleep)
    if uploaded.status != "processed":
        raise RuntimeError(f"file {uploaded.id} is {uploaded.status}: {uploaded.status_details or 'no detail'}")
    return uploaded.id


def _naming(line: bytes, deployment: str) -> bytes:
    """A request line whose `body.model` is `deployment`, with its line break (untouched when it already is)."""
    request = json.loads(line)
    if request["body"].get("model") == deployment:
        return line + b"\n"
    request["body"]["model"] = deployment
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
