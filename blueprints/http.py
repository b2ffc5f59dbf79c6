"""What every HTTP trigger shares: JSON replies, problem+json errors, and the catch-all that hides internals."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import azure.functions as func

from shared.problems import PROBLEM_CONTENT_TYPE, FieldError, Problem
from shared.settings import SettingsError

logger = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def next_link(req: func.HttpRequest, **params: str) -> str:
    """The request's own absolute URL with `params` set: the link to the next page of a listing, with the
    client's other query parameters kept. The function key (`code`) is left out, since a secret in a reply
    body ends up in logs: the client sends its key with the next request as with any other."""
    parts = urlsplit(str(req.url))
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params and k != "code"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([*kept, *params.items()]), ""))


def problem_response(problem: Problem) -> func.HttpResponse:
    return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_CONTENT_TYPE)


MAX_JSON_BODY = 1024 * 1024  # bytes: a start request or a job's attributes, never a whole input
MAX_JSON_DEPTH = 32  # nesting levels: no request of this API needs more


def json_body(req: func.HttpRequest, max_bytes: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object, or a 413 / 400 saying why it is not one."""
    raw = req.get_body() or b""
    if len(raw) > max_bytes:
        raise Problem(
            413,
            "body-too-large",
            "The body is too large",
            f"The request body has {len(raw):,} bytes; this operation takes at most {max_bytes:,}.",
            [FieldError("body", f"must be at most {max_bytes:,} bytes")],
        )
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        too_deep = isinstance(exc, RecursionError)
        raise Problem(
            400,
            "malformed-body",
            "The body is not JSON",
            f"The request body is nested more than {MAX_JSON_DEPTH} levels deep."
            if too_deep
            else "The request body must be a JSON object.",
            [FieldError("body", "is nested too deeply" if too_deep else "is not valid JSON")],
        ) from None
    if not isinstance(body, dict):
        raise Problem(
            400,
            "malformed-body",
            "The body is not a JSON object",
            "The request body must be a JSON object.",
            [FieldError("body", "must be a JSON object")],
        )
    if _depth(body) > MAX_JSON_DEPTH:
        raise Problem(
            400,
            "malformed-body",
            "The body is nested too deeply",
            f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.",
            [FieldError("body", "is nested too deeply")],
        )
    return body


def _depth(value: Any) -> int:
    """How deeply JSON containers nest in `value` (without recursion, whatever the depth)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:  # beyond that the answer is already known
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def api_base(url: str) -> str:
    """The API's base URL (…/api) from a request URL, for links in replies."""
    path = url.split("?", 1)[0]
    return path[: path.index("/api/") + 4] if "/api/" in path else ""


def problems_as_responses(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a Problem into its problem+json reply; anything unexpected becomes a 500 without internals.
    Works for plain and for async triggers (durable-client triggers are async)."""

    def reply_for(error: Exception) -> func.HttpResponse:
        if isinstance(error, Problem):
            return problem_response(error)
        if isinstance(error, SettingsError):
            logger.error("app settings are invalid: %s", error)
            return problem_response(Problem(500, "misconfigured", "The app is misconfigured", str(error)))
        logger.error("unhandled error in %s", handler.__name__, exc_info=error)
        return problem_response(
            Problem(
                500, "internal-error", "Internal error", "The request failed unexpectedly; the error has been logged."
            )
        )

    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def async_wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
            try:
                response: func.HttpResponse = await handler(*args, **kwargs)
            except Exception as error:
                return reply_for(error)
            return response

        return async_wrapper

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            response: func.HttpResponse = handler(*args, **kwargs)
        except Exception as error:
            return reply_for(error)
        return response

    return wrapper
