"""`/_emulator/...`: control routes for tests and tools — faults, request log, batches, deployments, clock, reset.

These routes are the emulator's own (Azure has no such thing) and need no credentials: the emulator listens on
loopback only.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from aiohttp import web

from devstack.emulator.config import ConfigError, Deployment, parse_blob_storage, parse_quota_check
from devstack.emulator.errors import arm_error, keyvault_error, openai_error
from devstack.emulator.faults import FaultRule, FaultRuleError, RequestLog
from devstack.emulator.state import EmulatorState


def routes(state: EmulatorState) -> list[web.RouteDef]:
    api = Control(state)
    base = "/_emulator"
    return [
        web.get(f"{base}/health", api.health, name="control:health"),
        web.get(f"{base}/clock", api.clock, name="control:clock"),
        web.post(f"{base}/reset", api.reset, name="control:reset"),
        web.get(f"{base}/faults", api.list_faults, name="control:faults.list"),
        web.post(f"{base}/faults", api.add_fault, name="control:faults.add"),
        web.delete(f"{base}/faults", api.clear_faults, name="control:faults.clear"),
        web.delete(f"{base}/faults/{{fault_id}}", api.remove_fault, name="control:faults.remove"),
        web.get(f"{base}/requests", api.list_requests, name="control:requests.list"),
        web.delete(f"{base}/requests", api.clear_requests, name="control:requests.clear"),
        web.get(f"{base}/resources/{{resource}}/batches", api.list_batches, name="control:batches.list"),
        web.get(f"{base}/resources/{{resource}}/deployments", api.list_deployments, name="control:deployments.list"),
        web.put(
            f"{base}/resources/{{resource}}/deployments/{{deployment}}",
            api.put_deployment,
            name="control:deployments.put",
        ),
        web.delete(
            f"{base}/resources/{{resource}}/deployments/{{deployment}}",
            api.delete_deployment,
            name="control:deployments.delete",
        ),
        web.patch(f"{base}/resources/{{resource}}/speeds", api.patch_speeds, name="control:speeds.patch"),
        web.patch(f"{base}/resources/{{resource}}", api.patch_resource, name="control:resource.patch"),
    ]


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response({"status": status, "detail": detail}, status=status)


async def _json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 problem saying what was expected."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"status": 400, "detail": f"the body must be {what} in JSON: {exc}"}),
            content_type="application/json",
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"status": 400, "detail": f"the body must be {what} (a JSON object)"}),
            content_type="application/json",
        )
    return body


class Control:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "resources": sorted(self.state.openai)})

    async def clock(self, request: web.Request) -> web.Response:
        clock = self.state.clock
        return web.json_response({"now": clock.now(), "epoch": clock.epoch, "scale": clock.scale})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"status": "reset"})

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [rule.to_json() for rule in self.state.faults.rules]})

    async def add_fault(self, request: web.Request) -> web.Response:
        body = await _json_object(request, "a fault rule")
        try:
            rule: FaultRule = self.state.faults.add(body)
        except FaultRuleError as exc:
            return _problem(400, f"bad fault rule: {exc}")
        return web.json_response(rule.to_json(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.state.faults.clear()
        return web.Response(status=204)

    async def remove_fault(self, request: web.Request) -> web.Response:
        if not self.state.faults.remove(request.match_info["fault_id"]):
            return _problem(404, f"no fault rule {request.match_info['fault_id']!r}")
        return web.Response(status=204)

    async def list_requests(self, request: web.Request) -> web.Response:
        unknown = set(request.query) - set(RequestLog.FILTERS)
        if unknown:
            return _problem(400, f"unknown filters {sorted(unknown)}; filter by {', '.join(RequestLog.FILTERS)}")
        filters = {key: request.query.get(key) for key in RequestLog.FILTERS}
        return web.json_response({"value": self.state.log.query(**filters)})

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.state.log.clear()
        return web.Response(status=204)

    def _resource(self, request: web.Request) -> Any:
        name = request.match_info["resource"]
        if name not in self.state.openai:
            raise web.HTTPNotFound(
                text=json.dumps({"status": 404, "detail": f"no resource {name}"}), content_type="application/json"
            )
        return self.state.openai[name]

    async def list_batches(self, request: web.Request) -> web.Response:
        """Every batch the resource holds, with metadata, regardless of credentials: how tests count batches."""
        resource = self._resource(request)
        resource.advance_all(self.state.clock.now())
        await resource.write_results(self.state.user_blobs)
        batches = [
            {**batch.to_json(), "deployment": batch.deployment, "enqueuedTokens": batch.enqueued_tokens}
            for batch in resource.batches.values()
        ]
        return web.json_response({"value": batches})

    async def list_deployments(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        return web.json_response({"value": [d.to_json() for d in resource.resource.deployments.values()]})

    async def put_deployment(self, request: web.Request) -> web.Response:
        """Adds or replaces a deployment, as creating or updating it in the portal would."""
        resource = self._resource(request)
        body = await _json_object(request, "a deployment")
        try:
            deployment = Deployment.from_json({**body, "name": request.match_info["deployment"]})
        except ConfigError as exc:
            return _problem(400, str(exc))
        created = deployment.name not in resource.resource.deployments
        resource.resource.deployments[deployment.name] = deployment
        return web.json_response(deployment.to_json(), status=201 if created else 200)

    async def delete_deployment(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        if resource.resource.deployments.pop(request.match_info["deployment"], None) is None:
            return _problem(404, f"no deployment {request.match_info['deployment']!r}")
        return web.Response(status=204)

    async def patch_resource(self, request: web.Request) -> web.Response:
        """Changes how the resource behaves: `{"quotaCheck": "create" | "validation", "blobStorage": bool}` (every
        setting given, or none of them)."""
        resource = self._resource(request)
        settings = resource.resource
        body = await _json_object(request, "resource settings")
        unknown = set(body) - {"quotaCheck", "blobStorage"}
        if unknown:
            return _problem(400, f"unknown resource settings: {sorted(unknown)}")
        try:
            quota_check = parse_quota_check(body.get("quotaCheck", settings.quota_check), settings.name)
            blob_storage = parse_blob_storage(body.get("blobStorage", settings.blob_storage), settings.name)
        except ConfigError as exc:
            return _problem(400, str(exc))
        settings.quota_check, settings.blob_storage = quota_check, blob_storage
        return web.json_response({"quotaCheck": settings.quota_check, "blobStorage": settings.blob_storage})

    async def patch_speeds(self, request: web.Request) -> web.Response:
        """Changes how fast new batches of this resource move (batches already created keep their speeds)."""
        resource = self._resource(request)
        body = await _json_object(request, "speed settings")
        try:
            resource.resource.speeds.update(body)
        except ConfigError as exc:
            return _problem(400, str(exc))
        return web.json_response(resource.resource.speeds.to_json())


# Injected 4xx replies other than 429: each service's usual code and message for them.
OPENAI_CLIENT_ERRORS = {
    401: (
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
        "key for an active subscription and use a correct regional API endpoint for your resource.",
    ),
    403: ("403", "Access denied due to Virtual Network/Firewall rules."),
    404: ("404", "Resource not found"),
}
ARM_CLIENT_ERRORS = {
    401: ("InvalidAuthenticationToken", "The access token is invalid."),
    403: (
        "AuthorizationFailed",
        "The client does not have authorization to perform this action over this scope or "
        "the scope is invalid. If access was recently granted, please refresh your credentials.",
    ),
    404: (
        "ResourceNotFound",
        "The Resource was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    ),
    409: ("Conflict", "The request conflicts with the current state of the resource."),
}
KEYVAULT_CLIENT_ERRORS = {
    401: ("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
    403: ("Forbidden", "The user, group or application does not have secrets get permission on key vault."),
    404: ("SecretNotFound", "A secret with this name was not found in this key vault."),
}


def fault_response(service: str, rule: FaultRule) -> web.Response:
    """An injected failure, in the shape the emulated service uses for it. Retry-After (whole seconds, rounded up)
    and, for Azure OpenAI, retry-after-ms are sent when the rule has retryAfter."""
    status = rule.status or 500
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(rule.retry_after)))
        if service == "openai":
            headers["retry-after-ms"] = str(round(rule.retry_after * 1000))
    wait = headers.get("Retry-After", "1")
    unavailable = "The service is temporarily unable to process your request. Please try again later."
    if service == "openai":
        if status == 429:
            return openai_error(
                429,
                "429",
                "Requests to the Batch Operation under Azure OpenAI API version 2024-10-21 "
                f"have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry "
                f"after {wait} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would "
                "like to further increase the default rate limit.",
                headers=headers,
            )
        if status == 503:
            return openai_error(503, "ServiceUnavailable", unavailable, headers=headers)
        if status >= 500:
            return openai_error(
                status,
                "InternalServerError",
                "The server had an error while processing your request. Sorry about that!",
                headers=headers,
            )
        code, message = OPENAI_CLIENT_ERRORS.get(status, (str(status), "The request was refused."))
        return openai_error(status, code, message, headers=headers)
    if service == "arm":
        if status == 429:
            message = (
                "Number of 'read' requests for subscription exceeded. Please try again after "
                f"'{wait}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling "
                "for additional information."
            )
            return arm_error(429, "SubscriptionRequestsThrottled", message, headers=headers)
        if status == 503:
            return arm_error(503, "ServiceUnavailable", unavailable, headers=headers)
        if status >= 500:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            return arm_error(
                status,
                "InternalServerError",
                "Encountered internal server error. Diagnostic "
                f"information: timestamp '{stamp}', tracking id '{uuid.uuid4()}'.",
                headers=headers,
            )
        code, message = ARM_CLIENT_ERRORS.get(status, ("BadRequest", "The request was refused."))
        return arm_error(status, code, message, headers=headers)
    if service == "keyvault":
        if status == 429:
            return keyvault_error(
                429,
                "Throttled",
                "Request was not allowed because application has exceeded the maximum request rate.",
                headers=headers,
            )
        if status == 503:
            return keyvault_error(503, "ServiceUnavailable", unavailable, headers=headers)
        if status >= 500:
            return keyvault_error(
                status, "InternalServerError", "The service encountered an internal error.", headers=headers
            )
        code, message = KEYVAULT_CLIENT_ERRORS.get(status, ("BadParameter", "The request was refused."))
        return keyvault_error(status, code, message, headers=headers)
    # Managed identity (IMDS-like): no "error" wrapper.
    return web.json_response(
        {
            "statusCode": status,
            "message": "An unexpected error occured while fetching the AAD Token.",
            "correlationId": str(uuid.uuid4()),
        },
        status=status,
        headers=headers,
    )
