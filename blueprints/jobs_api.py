"""HTTP API of the job catalogue: import now, list, get, and set attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from blueprints.http import json_body, json_response, next_link, problems_as_responses
from shared.problems import FieldError, Problem, validation_problem

bp = func.Blueprint()


@bp.route(route="jobs/import", methods=["POST"])
@problems_as_responses
def import_jobs(req: func.HttpRequest) -> func.HttpResponse:
    """Imports the deployments of every configured resource (or of `?resource=`) now."""
    from shared import services
    from shared.importing import import_deployments
    from shared.jobs import check_resource_name
    from shared.settings import get_settings

    settings = get_settings()
    resources = settings.resources
    if name := check_resource_name(req.params.get("resource")):
        chosen = settings.resource(name)
        if chosen is None:
            raise Problem(
                404,
                "resource-not-found",
                "Resource not configured",
                f"No Azure OpenAI resource "
                f"'{name}' is configured; known: {', '.join(r.name for r in resources) or 'none'}.",
                [FieldError("resource", "is not a configured resource")],
            )
        resources = (chosen,)
    if not resources:
        raise Problem(
            500,
            "not-configured",
            "No resources configured",
            "Set AZURE_OPENAI_RESOURCES to the Azure OpenAI resources whose deployments become jobs.",
        )
    report = import_deployments(resources, services.arm_client(), services.catalog(), datetime.now(UTC))
    if report.failures:
        first = report.failures[0].error
        assert first is not None
        raise Problem(
            502,
            "arm-failed",
            "Azure Resource Manager failed",
            f"Listing deployments failed: ARM answered {first.status or 'nothing'} {first.code}.",
            extensions={"upstreamStatus": first.status, "upstreamCode": first.code, **report.to_dict()},
        )
    if report.busy and len(report.busy) == len(report.resources):
        raise Problem(
            409,
            "import-in-progress",
            "Import already running",
            f"Another import of {', '.join(item.resource for item in report.busy)} is running; try again when it ends.",
        )
    return json_response(report.to_dict())


@bp.route(route="jobs", methods=["GET"])
@problems_as_responses
def list_jobs(req: func.HttpRequest) -> func.HttpResponse:
    """One page of the jobs in the catalogue, filtered by `resource`, `type` and `status`, by resource then external
    id; `nextLink` (absent on the last page) carries on where the page ends."""
    from shared import services
    from shared.jobs import JobStatus, JobType, check_resource_name
    from shared.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_continuation_token

    check_resource_name(req.params.get("resource"))
    errors = []
    job_type, status = req.params.get("type"), req.params.get("status")
    if job_type and job_type not in {t.value for t in JobType}:
        errors.append(FieldError("type", f"must be one of {', '.join(t.value for t in JobType)}"))
    if status and status not in {s.value for s in JobStatus}:
        errors.append(FieldError("status", f"must be one of {', '.join(s.value for s in JobStatus)}"))
    top = _whole_number(req.params.get("top", str(DEFAULT_PAGE_SIZE)))
    if top is None or not 1 <= top <= MAX_PAGE_SIZE:
        errors.append(FieldError("top", f"must be a whole number from 1 to {MAX_PAGE_SIZE}"))
    after = None
    if token := req.params.get("continuationToken"):
        try:
            after = decode_continuation_token(token)
        except ValueError:
            errors.append(FieldError("continuationToken", "is not a token from a nextLink of this API; pass it as is"))
    if errors:
        raise validation_problem(errors, "Invalid query parameters.")
    assert top is not None  # for mypy: checked above
    page = services.catalog().list_jobs_page(req.params.get("resource"), job_type, status, top=top, after=after)
    body: dict[str, Any] = {"value": [job.to_resource() for job in page.jobs], "count": len(page.jobs)}
    if page.continuation_token:
        body["nextLink"] = next_link(req, continuationToken=page.continuation_token)
    return json_response(body)


@bp.route(route="jobs/{externalId}", methods=["GET"])
@problems_as_responses
def get_job(req: func.HttpRequest) -> func.HttpResponse:
    from shared import services
    from shared.jobs import check_external_id

    external_id = check_external_id(req.route_params["externalId"])
    job = services.catalog().find_job(external_id, req.params.get("resource"))
    return json_response(job.to_resource())


@bp.route(route="jobs/{externalId}", methods=["PATCH"])
@problems_as_responses
def set_job_attributes(req: func.HttpRequest) -> func.HttpResponse:
    """Sets attributes (`{"attributes": {...}}`; null removes one); import never overwrites them."""
    from shared import services
    from shared.jobs import check_external_id, merge_attributes

    external_id = check_external_id(req.route_params["externalId"])
    body = json_body(req)
    unknown = sorted(set(body) - {"attributes"})
    if unknown or "attributes" not in body:
        raise validation_problem(
            [FieldError(name, "is not a settable field") for name in unknown]
            or [FieldError("attributes", "is required")],
            'The body must be {"attributes": {...}}.',
        )
    catalog = services.catalog()
    job = catalog.find_job(external_id, req.params.get("resource"))
    attributes = merge_attributes(job.job_type, job.attributes, body["attributes"])
    return json_response(catalog.set_attributes(job, attributes, datetime.now(UTC)).to_resource())


def _whole_number(text: str) -> int | None:
    """The number `text` spells in ASCII digits (int() would also take "+5", " 5", "1_0" and other scripts' digits)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None
