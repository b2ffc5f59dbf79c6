"""The Durable Functions HTTP API: the public webhooks under /runtime/webhooks/durabletask (system key) and the
local RPC endpoint the Python DurableOrchestrationClient calls (rpcBaseUrl, loopback only). Both are served by the
same handler, as in the extension's HttpApiHandler: same routes, status codes and payloads."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any
from urllib.parse import quote, unquote_plus

from aiohttp import web

from devstack.host.durable import BadRequest, Conflict, Durable
from devstack.host.history import TERMINAL, iso_seconds, parse_jtoken, parse_time, status_history

WEBHOOK_PATH = "/runtime/webhooks/durabletask"
RPC_PATH = "/durabletask"
CONNECTION = "Storage"
DEFAULT_PAGE_SIZE = 100
RUNTIME_STATUSES = (
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Canceled",
    "Terminated",
    "Pending",
    "Suspended",
)


class Links:
    """The URLs the extension hands out: creation and management payloads, the client binding."""

    def __init__(self, task_hub: str, system_key: str) -> None:
        self.task_hub = task_hub
        self.system_key = system_key

    def _suffix(self) -> str:
        return f"taskHub={quote(self.task_hub)}&connection={CONNECTION}&code={quote(self.system_key)}"

    def management(self, origin: str, instance_id: str, *, encode: bool = True) -> dict[str, str]:
        base = f"{origin}{WEBHOOK_PATH}/instances/{quote(instance_id, safe='') if encode else instance_id}"
        suffix = self._suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{base}?{suffix}",
            "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{suffix}",
            "terminatePostUri": f"{base}/terminate?reason={{text}}&{suffix}",
            "rewindPostUri": f"{base}/rewind?reason={{text}}&{suffix}",
            "purgeHistoryDeleteUri": f"{base}?{suffix}",
            "restartPostUri": f"{base}/restart?{suffix}",
            "suspendPostUri": f"{base}/suspend?reason={{text}}&{suffix}",
            "resumePostUri": f"{base}/resume?reason={{text}}&{suffix}",
        }

    def client_binding(self, origin: str, task_hub: str | None = None) -> str:
        """The JSON string the durableClient input binding gives the Python function."""
        base = f"{origin}{WEBHOOK_PATH}"
        creation = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        code = f"code={quote(self.system_key)}"
        return json.dumps(
            {
                "taskHubName": task_hub or self.task_hub,
                "creationUrls": {
                    "createNewInstancePostUri": f"{creation}?{code}",
                    "createAndWaitOnNewInstancePostUri": (
                        f"{creation}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{code}"
                    ),
                },
                "managementUrls": self.management(origin, "INSTANCEID", encode=False),
                "baseUrl": base,
                "requiredQueryStringParameters": code,
                "rpcBaseUrl": f"{origin}{RPC_PATH}/",
                "httpBaseUrl": "",
                "maxGrpcMessageSizeInBytes": 0,
                "grpcHttpClientTimeout": "00:01:40",
            }
        )

    def check_status(self, origin: str, instance_id: str) -> web.Response:
        """CreateCheckStatusResponse: 202 with the management URLs and a Location header."""
        links = self.management(origin, instance_id)
        body = {k: v for k, v in links.items() if k != "rewindPostUri"}
        return web.json_response(
            body, status=202, headers={"Location": links["statusQueryGetUri"], "Retry-After": "10"}
        )


def _error(status: int, message: str, exception: str | None = None) -> web.Response:
    body: dict[str, Any] = {"Message": message}
    if exception is not None:
        body.update({"ExceptionMessage": exception, "ExceptionType": "System.ArgumentException"})
    return web.json_response(body, status=status)


def _query(request: web.Request) -> dict[str, str]:
    """Query parameters as .NET's NameValueCollection reads them: case-insensitive names, repeats comma-joined."""
    values: dict[str, list[str]] = {}
    for key, value in request.query.items():
        values.setdefault(key.lower(), []).append(value)
    return {key: ",".join(items) for key, items in values.items()}


def _bool(query: dict[str, str], name: str, default: bool) -> bool:
    value = query.get(name.lower(), "").strip().lower()
    return {"true": True, "false": False}.get(value, default)


def _time(query: dict[str, str], name: str) -> float | None:
    value = query.get(name.lower())
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _statuses(query: dict[str, str]) -> list[str] | None:
    wanted = [s.strip() for s in query.get("runtimestatus", "").split(",") if s.strip() in RUNTIME_STATUSES]
    return wanted or None


def status_payload(
    durable: Durable, instance_id: str, *, history: bool, output: bool, show_input: bool
) -> dict[str, Any] | None:
    instance = durable.store.get_instance(instance_id)
    if instance is None:
        return None
    payload: dict[str, Any] = {
        "name": instance.name,
        "instanceId": instance.instance_id,
        "runtimeStatus": instance.status,
        "input": parse_jtoken(instance.input) if show_input else None,
        "customStatus": parse_jtoken(instance.custom_status),
        "output": parse_jtoken(instance.output),
        "createdTime": iso_seconds(instance.created),
        "lastUpdatedTime": iso_seconds(instance.updated),
    }
    if history and instance.status != "Pending":
        payload["historyEvents"] = status_history(durable.store.history(instance_id), output)
    return payload


class DurableApi:
    def __init__(self, durable: Durable, links: Links) -> None:
        self.durable = durable
        self.links = links

    async def handle(self, request: web.Request, base_path: str) -> web.Response:
        path = unquote_plus(request.rel_url.raw_path)[len(base_path) :].strip("/")
        parts = path.split("/") if path else []
        method = request.method.upper()
        origin = f"{request.scheme}://{request.host}"
        try:
            if parts and parts[0].lower() == "orchestrators" and len(parts) in (2, 3):
                if method != "POST":
                    return web.Response(status=404)
                return await self._start(request, origin, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0].lower() == "instances":
                if len(parts) == 1:
                    if method == "GET":
                        return self._list(request)
                    if method == "DELETE":
                        return self._purge_where(request)
                    return web.Response(status=404)
                instance_id = parts[1]
                if len(parts) == 2:
                    if method == "GET":
                        return await self._status(request, instance_id)
                    if method == "DELETE":
                        return self._purge(instance_id)
                    return web.Response(status=404)
                if len(parts) == 3 and method == "POST":
                    return await self._operation(request, origin, instance_id, parts[2].lower())
                if len(parts) == 4 and parts[2].lower() == "raiseevent" and method == "POST":
                    return await self._raise(request, instance_id, parts[3])
            return web.Response(status=404)
        except BadRequest as exc:
            return _error(400, str(exc), str(exc))

    async def _start(self, request: web.Request, origin: str, name: str, instance_id: str | None) -> web.Response:
        body = await request.read()
        input_text = body.decode("utf-8") if body else None
        if input_text is not None:
            try:
                json.loads(input_text)
            except ValueError:
                return _error(400, "Invalid JSON content", "The request body is not valid JSON.")
        try:
            started = self.durable.start(name, instance_id or None, input_text)
        except Conflict as exc:
            return _error(409, str(exc))
        query = _query(request)
        timeout, interval = query.get("timeout"), query.get("pollinginterval")
        if timeout and interval:
            try:
                return await self._wait(request, origin, started, float(timeout), float(interval))
            except ValueError:
                pass
        return self.links.check_status(origin, started)

    async def _wait(
        self, request: web.Request, origin: str, instance_id: str, timeout: float, interval: float
    ) -> web.Response:
        """WaitForCompletionOrCreateCheckStatusResponseAsync."""
        deadline = time.monotonic() + timeout
        while True:
            instance = self.durable.store.get_instance(instance_id)
            if instance is not None and instance.status in TERMINAL:
                if instance.status == "Completed":
                    return web.json_response(parse_jtoken(instance.output))
                return await self._status(request, instance_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.links.check_status(origin, instance_id)
            await asyncio.sleep(min(interval, remaining))

    async def _status(self, request: web.Request, instance_id: str) -> web.Response:
        query = _query(request)
        payload = status_payload(
            self.durable,
            instance_id,
            history=_bool(query, "showHistory", False),
            output=_bool(query, "showHistoryOutput", False),
            show_input=_bool(query, "showInput", True),
        )
        if payload is None:
            return web.Response(status=404)
        status = payload["runtimeStatus"]
        headers = {}
        if status in ("Running", "Pending", "ContinuedAsNew", "Suspended"):
            code = 202
            headers = {"Location": str(request.url), "Retry-After": "5"}
        elif status == "Failed":
            code = 500 if _bool(query, "returnInternalServerErrorOnFailure", False) else 200
        else:
            code = 200
        return web.json_response(payload, status=code, headers=headers)

    def _list(self, request: web.Request) -> web.Response:
        query = _query(request)
        try:
            page_size = int(query.get("top", DEFAULT_PAGE_SIZE))
        except ValueError:
            page_size = DEFAULT_PAGE_SIZE
        page_size = page_size if page_size > 0 else DEFAULT_PAGE_SIZE
        after = None
        token = request.headers.get("x-ms-continuation-token")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                return _error(400, "The continuation token is not valid.")
        found = self.durable.store.query_instances(
            statuses=_statuses(query),
            created_from=_time(query, "createdTimeFrom"),
            created_to=_time(query, "createdTimeTo"),
            prefix=query.get("instanceidprefix"),
            after=after,
            limit=page_size + 1,
        )
        page = found[:page_size]
        show_input = _bool(query, "showInput", True)  # OrchestrationStatusQueryCondition.ShowInput defaults to true
        body = [
            status_payload(self.durable, i.instance_id, history=False, output=False, show_input=show_input)
            for i in page
        ]
        headers = {}
        if len(found) > page_size:
            headers["x-ms-continuation-token"] = base64.urlsafe_b64encode(page[-1].instance_id.encode()).decode()
        return web.json_response(body, headers=headers)

    def _purge(self, instance_id: str) -> web.Response:
        instance = self.durable.store.get_instance(instance_id)
        if instance is None:
            return web.Response(status=404)
        if instance.status not in TERMINAL:
            return web.json_response(
                "Only orchestrations in a terminal state can be purged, but the orchestration with instance ID "
                f"{instance_id} has status {instance.status}",
                status=412,
            )
        return web.json_response({"instancesDeleted": self.durable.purge(instance_id)})

    def _purge_where(self, request: web.Request) -> web.Response:
        query = _query(request)
        created_from = _time(query, "createdTimeFrom")
        if created_from is None:
            return web.json_response("Please provide value for 'createdTimeFrom' parameter.", status=400)
        created_to = _time(query, "createdTimeTo")
        deleted = self.durable.purge_where(
            created_from, created_to if created_to is not None else self.durable.now(), _statuses(query)
        )
        if deleted == 0:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})

    async def _operation(self, request: web.Request, origin: str, instance_id: str, operation: str) -> web.Response:
        query = _query(request)
        reason = query.get("reason")
        if operation == "terminate":
            return web.Response(status=self.durable.terminate(instance_id, reason))
        if operation == "suspend":
            return web.Response(status=self.durable.suspend(instance_id, reason))
        if operation == "resume":
            return web.Response(status=self.durable.resume(instance_id, reason))
        if operation == "restart":
            try:
                new_id = self.durable.restart(instance_id, _bool(query, "restartWithNewInstanceId", True))
            except Conflict:
                return _error(409, "A non-terminal instance with this instance ID already exists.")
            return self.links.check_status(origin, new_id)
        if operation == "rewind":
            instance = self.durable.store.get_instance(instance_id)
            if instance is None:
                return web.json_response(f'No orchestration with instance ID "${instance_id}" found.', status=404)
            if instance.status != "Failed":
                return web.json_response(
                    f"This orchestration has status {instance.status}, but only orchestrations in the "
                    '"Failed" state can be rewound.',
                    status=412,
                )
            return _error(501, "Rewind is not supported by the underlying storage provider.")
        return web.Response(status=404)

    async def _raise(self, request: web.Request, instance_id: str, event_name: str) -> web.Response:
        instance = self.durable.store.get_instance(instance_id)
        if instance is None:
            return web.Response(status=404)
        if instance.status in TERMINAL:
            return web.Response(status=410)
        if request.content_type.lower() != "application/json":
            return _error(400, "Only application/json request content is supported")
        text = (await request.read()).decode("utf-8")
        try:
            data = json.loads(text)
        except ValueError:
            return _error(400, "Invalid JSON content")
        # The extension parses the body to a JSON token and serializes it again as the event's input: a JSON string
        # body (what the Python client sends: json.dumps of the data) reaches the orchestrator as that string.
        return web.Response(status=self.durable.raise_event(instance_id, event_name, json.dumps(data)))
