"""Fault injection and the request log, applied to every emulated route by one aiohttp middleware.

A fault rule matches requests by service, resource and route name, and answers some share of them with a status
(429 with Retry-After, 500, 503, …), adds latency, or drops the connection. With `afterHandler` the request is
processed first and only the reply is lost: the client cannot know whether its request took effect, which is how
tests prove that a client never submits a batch twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.clock import VirtualClock
from devstack.emulator.errors import ServiceError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICES = ("openai", "arm", "keyvault", "identity")
# Request fields never written to the request log (secret values, keys).
REDACTED_BODY_FIELDS = {"value"}


class FaultRuleError(ValueError):
    """A fault rule that cannot be applied; the message names the field."""


@dataclass
class FaultRule:
    id: str
    service: str = "*"
    resource: str = "*"
    route: str = "*"
    method: str = "*"
    status: int | None = None
    retry_after: float | None = None
    latency_ms: int = 0
    drop: bool = False
    after_handler: bool = False
    probability: float = 1.0
    times: int | None = None
    hits: int = 0

    FIELDS = {
        "service": "service", "resource": "resource", "route": "route", "method": "method", "status": "status",
        "retryAfter": "retry_after", "latencyMs": "latency_ms", "drop": "drop", "afterHandler": "after_handler",
        "probability": "probability", "times": "times",
    }

    @classmethod
    def from_json(cls, rule_id: str, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict):
            raise FaultRuleError("a fault rule must be a JSON object")
        unknown = set(data) - set(cls.FIELDS) - {"id"}
        if unknown:
            raise FaultRuleError(f"unknown fault rule fields: {sorted(unknown)}")
        rule = cls(id=str(data.get("id") or rule_id))
        for key, attr in cls.FIELDS.items():
            if key in data:
                setattr(rule, attr, data[key])
        if rule.service != "*" and rule.service not in SERVICES:
            raise FaultRuleError(f"service must be one of {', '.join(SERVICES)} or '*'")
        if rule.status is not None and (not isinstance(rule.status, int) or not 400 <= rule.status <= 599):
            raise FaultRuleError("status must be an HTTP error status (400-599)")
        if not isinstance(rule.probability, int | float) or not 0 <= rule.probability <= 1:
            raise FaultRuleError("probability must be between 0 and 1")
        if rule.times is not None and (not isinstance(rule.times, int) or rule.times < 0):
            raise FaultRuleError("times must be a non-negative integer")
        if not isinstance(rule.latency_ms, int) or rule.latency_ms < 0:
            raise FaultRuleError("latencyMs must be a non-negative integer")
        if rule.status is None and not rule.drop and not rule.latency_ms:
            raise FaultRuleError("a fault rule needs status, drop or latencyMs")
        return rule

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, attr) for key, attr in self.FIELDS.items()}
        return {"id": self.id, **data, "hits": self.hits}

    def matches(self, service: str, resource: str, route: str, method: str) -> bool:
        return (
            self.service in ("*", service)
            and self.resource in ("*", resource)
            and self.route in ("*", route)
            and self.method.upper() in ("*", method)
            and (self.times is None or self.hits < self.times)
        )


class FaultInjector:
    def __init__(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        self._ids = itertools.count(1)
        self._random = random.Random(seed)
        self.rules: list[FaultRule] = []
        for rule in rules:
            self.add(rule)

    def add(self, data: dict[str, Any]) -> FaultRule:
        rule = FaultRule.from_json(f"fault-{next(self._ids)}", data)
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [rule for rule in self.rules if rule.id != rule_id]
        return len(self.rules) < before

    def clear(self) -> None:
        self.rules.clear()

    def replace(self, rules: list[dict[str, Any]]) -> None:
        self.rules = []
        for rule in rules:
            self.add(rule)

    def pick(self, service: str, resource: str, route: str, method: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(service, resource, route, method) and self._random.random() < rule.probability:
                rule.hits += 1
                return rule
        return None


@dataclass
class LoggedRequest:
    seq: int
    time: float
    service: str
    resource: str
    route: str
    method: str
    path: str
    query: dict[str, str]
    auth: str
    body: Any = None
    status: int | None = None
    fault: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": self.time, "service": self.service, "resource": self.resource,
            "route": self.route, "method": self.method, "path": self.path, "query": self.query, "auth": self.auth,
            "body": self.body, "status": self.status, "fault": self.fault, **self.extra,
        }


class RequestLog:
    """What each emulated resource received, in order; read by tests through /_emulator/requests."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.entries: list[LoggedRequest] = []

    def record(self, entry_fields: dict[str, Any]) -> LoggedRequest:
        entry = LoggedRequest(seq=next(self._seq), **entry_fields)
        self.entries.append(entry)
        return entry

    def query(self, **filters: str) -> list[dict[str, Any]]:
        return [
            entry.to_json() for entry in self.entries
            if all(value in (None, "", getattr(entry, key)) for key, value in filters.items())
        ]

    def clear(self) -> None:
        self.entries.clear()


FaultResponder = Callable[[str, FaultRule], web.Response]


def emulation_middleware(
    faults: FaultInjector, log: RequestLog, clock: VirtualClock, respond: FaultResponder
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Logs every request to an emulated route and applies the first fault rule that matches it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_name = request.match_info.route.name or ""
        service, _, route = route_name.partition(":")
        if service not in SERVICES:
            return await handler(request)
        resource = request.match_info.get("resource") or request.match_info.get("account") or "*"
        entry = log.record({
            "time": clock.now(), "service": service, "resource": resource, "route": route,
            "method": request.method, "path": request.path, "query": dict(request.query),
            "auth": _auth_kind(request), "body": await _loggable_body(request),
        })
        request["log_entry"] = entry
        rule = faults.pick(service, resource, route, request.method)
        if rule is not None:
            entry.fault = rule.id
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
        if rule is not None and not rule.after_handler:
            if rule.drop:
                _drop(request)
            if rule.status is not None:
                entry.status = rule.status
                return respond(service, rule)
        try:
            response = await handler(request)
        except ServiceError as error:
            response = error.response
        entry.status = response.status
        if rule is not None and rule.after_handler:
            if rule.drop:
                _drop(request)
            if rule.status is not None:
                entry.extra["handledStatus"] = response.status
                entry.status = rule.status
                return respond(service, rule)
        return response

    return middleware


def _drop(request: web.Request) -> None:
    """Cuts the connection without a reply, as a network failure would."""
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionResetError("connection dropped by fault injection")


def _auth_kind(request: web.Request) -> str:
    if request.headers.get("api-key"):
        return "api-key"
    if request.headers.get("Authorization"):
        return "bearer"
    return "none"


async def _loggable_body(request: web.Request) -> Any:
    if request.content_type != "application/json" or not request.can_read_body:
        return None
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return "<invalid json>"
    if isinstance(body, dict):
        return {key: ("<redacted>" if key in REDACTED_BODY_FIELDS else value) for key, value in body.items()}
    return body
