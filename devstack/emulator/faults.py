"""Fault injection and the request log, applied to every emulated route by one aiohttp middleware.

A fault rule matches requests by service, resource and route name, and answers some share of them with a status
(429 with Retry-After, 500, 503, …), adds latency, or drops the connection. With `afterHandler` the request is
processed first and only the reply is lost: the client cannot know whether its request took effect, which is how
tests prove that a client never submits a batch twice.

`resource` and `route` may be glob patterns (`batches.*`, `secrets.get*`). Once the emulator knows its routes and
resources (`FaultInjector.set_targets`), a rule whose service, resource or route matches nothing is refused, so a
typo cannot silently disable a fault.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from devstack.clock import VirtualClock
from devstack.emulator.errors import ServiceError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICES = ("openai", "arm", "keyvault", "identity")
# Request body fields never written to the request log, at any depth (secret values, keys, tokens).
REDACTED_BODY_FIELDS = frozenset({"value", "apiKey", "api_key", "access_token", "client_secret", "password"})
REDACTED = "<redacted>"


class FaultRuleError(ValueError):
    """A fault rule that cannot be applied; the message names the field."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class FaultRule:
    id: str
    service: str = "*"
    resource: str = "*"
    route: str = "*"
    method: str = "*"
    status: int | None = None
    retry_after: float | None = None
    latency_ms: float = 0
    drop: bool = False
    after_handler: bool = False
    probability: float = 1.0
    times: int | None = None
    hits: int = 0

    FIELDS: ClassVar[dict[str, str]] = {
        "service": "service",
        "resource": "resource",
        "route": "route",
        "method": "method",
        "status": "status",
        "retryAfter": "retry_after",
        "latencyMs": "latency_ms",
        "drop": "drop",
        "afterHandler": "after_handler",
        "probability": "probability",
        "times": "times",
    }

    @classmethod
    def from_json(cls, rule_id: str, data: Any) -> FaultRule:
        """A rule from its JSON form, or FaultRuleError naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise FaultRuleError("a fault rule must be a JSON object")
        unknown = set(data) - set(cls.FIELDS) - {"id"}
        if unknown:
            raise FaultRuleError(f"unknown fault rule fields: {sorted(unknown)} (known: id, {', '.join(cls.FIELDS)})")
        explicit_id = data.get("id")
        if explicit_id is not None and (not isinstance(explicit_id, str) or not explicit_id.strip()):
            raise FaultRuleError("id must be a non-empty string")
        rule = cls(id=explicit_id or rule_id)
        for key, attr in cls.FIELDS.items():
            if key in data and data[key] is not None:
                setattr(rule, attr, data[key])
        for key in ("service", "resource", "route", "method"):
            value = getattr(rule, key)
            if not isinstance(value, str) or not value:
                raise FaultRuleError(f"{key} must be a non-empty string")
        rule.method = rule.method.upper()
        if rule.service != "*" and rule.service not in SERVICES:
            raise FaultRuleError(f"service must be one of {', '.join(SERVICES)} or '*', not {rule.service!r}")
        if rule.status is not None and (not _is_int(rule.status) or not 400 <= rule.status <= 599):
            raise FaultRuleError(f"status must be an HTTP error status (400-599), not {rule.status!r}")
        if rule.retry_after is not None and (not _is_number(rule.retry_after) or rule.retry_after < 0):
            raise FaultRuleError(f"retryAfter must be a non-negative number of seconds, not {rule.retry_after!r}")
        if not _is_number(rule.latency_ms) or rule.latency_ms < 0:
            raise FaultRuleError(f"latencyMs must be a non-negative number, not {rule.latency_ms!r}")
        for key in ("drop", "afterHandler"):
            if not isinstance(getattr(rule, cls.FIELDS[key]), bool):
                raise FaultRuleError(f"{key} must be true or false")
        if not _is_number(rule.probability) or not 0 <= rule.probability <= 1:
            raise FaultRuleError(f"probability must be a number between 0 and 1, not {rule.probability!r}")
        if rule.times is not None and (not _is_int(rule.times) or rule.times < 0):
            raise FaultRuleError(f"times must be a non-negative integer, not {rule.times!r}")
        if rule.status is None and not rule.drop and not rule.latency_ms:
            raise FaultRuleError("a fault rule needs status, drop or latencyMs")
        if rule.drop and rule.status is not None:
            raise FaultRuleError("a fault rule either drops the connection or answers with a status, not both")
        if rule.after_handler and rule.status is None and not rule.drop:
            raise FaultRuleError("afterHandler needs status or drop: it replaces or drops the handled reply")
        return rule

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, attr) for key, attr in self.FIELDS.items()}
        return {"id": self.id, **data, "hits": self.hits}

    def matches(self, service: str, resource: str, route: str, method: str) -> bool:
        return (
            self.service in ("*", service)
            and fnmatch.fnmatchcase(resource, self.resource)
            and fnmatch.fnmatchcase(route, self.route)
            and self.method in ("*", method.upper())
            and (self.times is None or self.hits < self.times)
        )

    def check_targets(self, routes: dict[str, set[str]], resources: dict[str, set[str]]) -> None:
        """FaultRuleError unless some service has both a route and a resource this rule matches (a rule that can
        never fire is a typo)."""
        services = SERVICES if self.service == "*" else (self.service,)
        if self.route != "*":
            services = tuple(s for s in services if fnmatch.filter(routes.get(s, ()), self.route))
            if not services:
                scope = SERVICES if self.service == "*" else (self.service,)
                known = sorted(f"{s}:{r}" for s in scope for r in routes.get(s, ()))
                raise FaultRuleError(
                    f"route {self.route!r} matches no route of service {self.service!r} (routes: {', '.join(known)})"
                )
        if self.resource != "*" and not any(fnmatch.filter(resources.get(s, ()), self.resource) for s in services):
            known = sorted({r for s in services for r in resources.get(s, ())})
            where = f"service {self.service!r}" if self.route == "*" else f"the services with route {self.route!r}"
            listed = ", ".join(known) or "none: use *"
            raise FaultRuleError(f"resource {self.resource!r} matches no resource of {where} (resources: {listed})")


class FaultInjector:
    def __init__(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        self._seed = seed
        self._ids = itertools.count(1)
        self._random = random.Random(seed)
        self._routes: dict[str, set[str]] | None = None
        self._resources: dict[str, set[str]] = {}
        self.rules: list[FaultRule] = []
        for rule in rules:
            self.add(rule)

    def set_targets(self, routes: dict[str, Iterable[str]], resources: dict[str, Iterable[str]]) -> None:
        """The route and resource names of each service: rules added from now on must match some of them."""
        self._routes = {service: set(names) for service, names in routes.items()}
        self._resources = {service: set(names) for service, names in resources.items()}

    def check(self, data: Any) -> FaultRule:
        """The rule `data` describes, validated (against the known routes and resources) but not added."""
        rule = FaultRule.from_json("fault-?", data)
        if self._routes is not None:
            rule.check_targets(self._routes, self._resources)
        return rule

    def add(self, data: Any) -> FaultRule:
        rule = self.check(data)
        in_use = {r.id for r in self.rules}
        if isinstance(data, dict) and data.get("id") is not None:
            if rule.id in in_use:
                raise FaultRuleError(f"a fault rule with id {rule.id!r} already exists")
        else:
            rule.id = next(rule_id for rule_id in (f"fault-{n}" for n in self._ids) if rule_id not in in_use)
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [rule for rule in self.rules if rule.id != rule_id]
        return len(self.rules) < before

    def clear(self) -> None:
        self.rules.clear()

    def replace(self, rules: list[dict[str, Any]]) -> None:
        """Starts over with `rules` (the configured ones, on reset): ids count from fault-1 again and the random
        generator is re-seeded, so a seeded run draws the same faults after every reset."""
        self.rules = []
        self._ids = itertools.count(1)
        self._random = random.Random(self._seed)
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
            "seq": self.seq,
            "time": self.time,
            "service": self.service,
            "resource": self.resource,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "auth": self.auth,
            "body": self.body,
            "status": self.status,
            "fault": self.fault,
            **self.extra,
        }


class RequestLog:
    """What each emulated resource received, in order; read by tests through /_emulator/requests."""

    FILTERS = ("service", "resource", "route", "method", "fault")

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.entries: list[LoggedRequest] = []

    def record(self, entry_fields: dict[str, Any]) -> LoggedRequest:
        entry = LoggedRequest(seq=next(self._seq), **entry_fields)
        self.entries.append(entry)
        return entry

    def query(self, **filters: str | None) -> list[dict[str, Any]]:
        """Entries whose fields equal every filter given (None or "" means any); method is case-insensitive."""
        wanted = {key: value for key, value in filters.items() if value not in (None, "")}
        unknown = set(wanted) - set(self.FILTERS)
        if unknown:
            raise ValueError(f"unknown request log filters: {sorted(unknown)}")
        if "method" in wanted:
            wanted["method"] = str(wanted["method"]).upper()
        return [
            entry.to_json()
            for entry in self.entries
            if all(getattr(entry, key) == value for key, value in wanted.items())
        ]

    def clear(self) -> None:
        self.entries.clear()


FaultResponder = Callable[[str, FaultRule], web.Response]


def emulation_middleware(
    faults: FaultInjector,
    log: RequestLog,
    clock: VirtualClock,
    respond: FaultResponder,
    *,
    default_resource: str = "*",
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Logs every request to an emulated route and applies the first fault rule that matches it.

    `default_resource` names the resource of routes whose path does not (the Key Vault application passes the
    vault's name)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_name = request.match_info.route.name or ""
        service, _, route = route_name.partition(":")
        if service not in SERVICES:
            return await handler(request)
        resource = request.match_info.get("resource") or request.match_info.get("account") or default_resource
        entry = log.record(
            {
                "time": clock.now(),
                "service": service,
                "resource": resource,
                "route": route,
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "auth": _auth_kind(request),
            }
        )
        request["log_entry"] = entry
        try:
            entry.body = await _loggable_body(request)
        except web.HTTPException as exc:  # a body over the size limit: 413, logged as such
            entry.status = exc.status
            raise
        except ConnectionResetError:
            return _client_gone(request, entry)
        rule = faults.pick(service, resource, route, request.method)
        if rule is not None:
            entry.fault = rule.id
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if not rule.after_handler:
                if rule.drop:
                    entry.extra["dropped"] = True
                    return _drop(request)
                if rule.status is not None:
                    entry.status = rule.status
                    return respond(service, rule)
        try:
            response = await handler(request)
        except ServiceError as error:
            response = error.response
        except web.HTTPException as exc:
            entry.status = exc.status
            if rule is None or not rule.after_handler:
                raise
            response = exc
        except ConnectionResetError:
            return _client_gone(request, entry)
        entry.status = response.status
        if rule is not None and rule.after_handler:
            entry.extra["handledStatus"] = response.status
            if rule.drop:
                entry.status = None
                entry.extra["dropped"] = True
                return _drop(request)
            entry.status = rule.status
            return respond(service, rule)
        return response

    return middleware


def _drop(request: web.Request) -> web.StreamResponse:
    """Cuts the connection without a reply, as a network failure would. The response returned is never sent:
    aiohttp finds the transport closed and treats it as a client that went away (no error is logged)."""
    if request.transport is not None:
        request.transport.abort()
    response = web.Response(status=499)
    response.force_close()
    return response


def _client_gone(request: web.Request, entry: LoggedRequest) -> web.StreamResponse:
    """The client went away before its body arrived in full (a process killed while it sent): there is nobody to
    answer, and nothing of the request took effect. Logged as nginx's 499 "client closed request", not as an error
    of the emulator."""
    entry.status = 499
    entry.extra["clientGone"] = True
    return _drop(request)


def _auth_kind(request: web.Request) -> str:
    """How the request authenticates ("api-key", "bearer", "other" or "none"); never the credential itself."""
    if request.headers.get("api-key"):
        return "api-key"
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return "bearer"
    return "other" if authorization else "none"


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: REDACTED if key in REDACTED_BODY_FIELDS else _redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


async def _loggable_body(request: web.Request) -> Any:
    """The request's JSON body with secret fields redacted; None for other bodies (uploads are logged by the
    handler as file metadata)."""
    if request.content_type != "application/json" or not request.can_read_body:
        return None
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return "<invalid json>"
    return _redact(body)
