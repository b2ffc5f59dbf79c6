"""HTTP API of inputs: build a Batch Job's input from requests, prompts, JSONL or a blob; check, stage and upload it."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func

from blueprints.http import api_base, json_body, json_response, problems_as_responses
from shared.problems import FieldError, Problem

bp = func.Blueprint()

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-lines")
# The Functions host takes request bodies up to 100 MB; larger inputs come as a blob (`blobUrl`).
MAX_INPUT_BODY = 100 * 1024 * 1024


@bp.route(route="jobs/{externalId}/inputs", methods=["POST"])
@problems_as_responses
def create_input(req: func.HttpRequest) -> func.HttpResponse:
    """Builds a Batch Job's input from a JSONL body, or JSON `requests`, `prompts` or `blobUrl`; checks every line
    as Azure will, stages a copy and uploads it to the job's resource. 201 with the input; 400 listing the first
    problems by line (nothing uploaded)."""
    from shared import services
    from shared.inputs import create_input as create
    from shared.inputs import lines_from_json, lines_of
    from shared.jobs import JobType, check_external_id
    from shared.settings import get_settings

    external_id = check_external_id(req.route_params["externalId"])
    job = services.catalog().find_job(external_id, req.params.get("resource"))
    if job.job_type is not JobType.BATCH:
        raise Problem(
            409,
            "not-a-batch-job",
            "Inputs are for Batch Jobs",
            f"Job '{external_id}' is a {job.job_type.display_name}; inputs belong to Batch Jobs "
            "('<deployment>::batch').",
        )
    media_type = (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if media_type in JSONL_TYPES:
        body = req.get_body() or b""
        if len(body) > MAX_INPUT_BODY:
            raise _too_large(len(body))
        raw_lines = lines_of(body)
    elif media_type == "application/json":
        settings = get_settings()
        request = json_body(req, max_bytes=MAX_INPUT_BODY)
        built, blob_url = lines_from_json(
            request, job.effective_attributes()["endpoint"], job.attributes, settings.input_blob_endpoints
        )
        if blob_url is not None:
            from shared.staging import blob_chunks, lines

            raw_lines = lines(blob_chunks(blob_url, services.credential()))
        else:
            assert built is not None
            raw_lines = built
    else:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported body type",
            "Send the input as application/jsonl (or application/x-ndjson) lines, or as application/json with "
            "requests, prompts or blobUrl.",
            [FieldError("Content-Type", "must be application/jsonl, application/x-ndjson or application/json")],
        )
    record = create(
        job,
        raw_lines,
        staging=services.staging(),
        client=services.openai_client(job.resource),
        records=services.input_records(),
        now=datetime.now(UTC),
    )
    location = f"{api_base(req.url)}/inputs/{record.id}"
    return json_response(record.to_resource(), status=201, headers={"Location": location})


def _too_large(size: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        "The body is too large",
        f"The body has {size:,} bytes; an input sent in the body is at most {MAX_INPUT_BODY:,}. Put a larger input "
        'in a blob and send {"blobUrl": "https://<account>.blob.core.windows.net/<container>/<blob>"}.',
        [FieldError("body", f"must be at most {MAX_INPUT_BODY:,} bytes")],
    )


@bp.route(route="inputs/{inputId}", methods=["GET"])
@problems_as_responses
def get_input(req: func.HttpRequest) -> func.HttpResponse:
    from shared import services
    from shared.inputs import refreshed

    records = services.input_records()
    record = records.find(req.route_params["inputId"])
    return json_response(refreshed(record, services.openai_client, records).to_resource())
