"""Errors as RFC 9457 problem details (`application/problem+json`): one error model for the whole HTTP API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://github.com/aoai-batch-functions/problems/"


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a request, named as the client sent it (e.g. `attributes.maxTokens`)."""

    field: str
    message: str


@dataclass
class Problem(Exception):
    """A failure to report to the client; `status` is the HTTP status, `code` a stable machine-readable name."""

    status: int
    code: str
    title: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        body.update(self.extensions)
        return body

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def validation_problem(errors: list[FieldError], detail: str | None = None) -> Problem:
    """400: the request names fields the service cannot accept; every bad field is listed."""
    fields = ", ".join(e.field for e in errors)
    return Problem(400, "validation-failed", "The request is not valid", detail or f"Invalid fields: {fields}.", errors)


def not_found(kind: str, identifier: str) -> Problem:
    return Problem(404, f"{kind}-not-found", f"{kind.capitalize()} not found", f"No {kind} '{identifier}' exists.")
