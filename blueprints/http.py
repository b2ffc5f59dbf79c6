"""What every HTTP trigger shares: JSON replies, problem+json errors, and the catch-all that hides internals."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem
from shared.settings import SettingsError

logger = logging.getLogger(__name__)

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def problem_response(problem: Problem) -> func.HttpResponse:
    return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_CONTENT_TYPE)


def json_body(req: func.HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    try:
        body = json.loads(req.get_body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "malformed-body",
            "The body is not JSON",
            "The request body must be a JSON object.",
            [FieldError("body", "is not valid JSON")],
        ) from exc
    if not isinstance(body, dict):
        raise Problem(
            400,
            "malformed-body",
            "The body is not a JSON object",
            "The request body must be a JSON object.",
            [FieldError("body", "must be a JSON object")],
        )
    return body


def problems_as_responses(handler: Handler) -> Handler:
    """Turns a Problem into its problem+json reply; anything unexpected becomes a 500 without internals."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except Problem as problem:
            return problem_response(problem)
        except SettingsError as exc:
            logger.error("app settings are invalid: %s", exc)
            return problem_response(Problem(500, "misconfigured", "The app is misconfigured", str(exc)))
        except Exception:
            logger.exception("unhandled error in %s", handler.__name__)
            return problem_response(
                Problem(
                    500,
                    "internal-error",
                    "Internal error",
                    "The request failed unexpectedly; the error has been logged.",
                )
            )

    return wrapper
