"""Azure OpenAI data plane (api-version 2024-10-21): files, batches and chat completions, one base URL per resource.

Routes live under `/{resource}/openai/...`, so `http://HOST:PORT/{resource}` plays the part of
`https://{resource}.openai.azure.com`.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import BodyPartReader, web

from devstack.emulator.batches import BatchRequestError, ResourceState
from devstack.emulator.completions import chat_request_problem, complete
from devstack.emulator.errors import ServiceError, openai_error
from devstack.emulator.state import EmulatorState
from devstack.emulator.tokens import COGNITIVE_AUDIENCES, InvalidToken, bearer_token

API_VERSION = "2024-10-21"
UPLOAD_PURPOSES = {"fine-tune", "assistants", "batch"}
MAX_BATCH_FILES = 500
UPLOAD_CHUNK_BYTES = 256 * 1024
KEY_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
TOKEN_DENIED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


def not_found() -> ServiceError:
    # Azure's answer for an unknown route, a missing or an unsupported api-version alike.
    return ServiceError(openai_error(404, "404", "Resource not found"))


async def read_upload(part: BodyPartReader, limit: int) -> bytearray | None:
    """The bytes of an uploaded file, read a chunk at a time into the one buffer that is stored; None as soon as they
    pass `limit` bytes (what was read is dropped, and the rest is never kept)."""
    content = bytearray()
    while chunk := await part.read_chunk(UPLOAD_CHUNK_BYTES):
        if len(content) + len(chunk) > limit:
            return None
        content += chunk
    return content


def _size(limit: int) -> str:
    mebibytes, rest = divmod(limit, 1024 * 1024)
    return f"{mebibytes} MB" if mebibytes and not rest else f"{limit:,} bytes"


def routes(state: EmulatorState) -> list[web.RouteDef]:
    api = DataPlane(state)
    base = "/{resource}/openai"
    return [
        web.post(f"{base}/files", api.upload_file, name="openai:files.upload"),
        web.get(f"{base}/files", api.list_files, name="openai:files.list"),
        web.get(f"{base}/files/{{file_id}}", api.get_file, name="openai:files.get"),
        web.delete(f"{base}/files/{{file_id}}", api.delete_file, name="openai:files.delete"),
        web.get(f"{base}/files/{{file_id}}/content", api.file_content, name="openai:files.content"),
        web.post(f"{base}/batches", api.create_batch, name="openai:batches.create"),
        web.get(f"{base}/batches", api.list_batches, name="openai:batches.list"),
        web.get(f"{base}/batches/{{batch_id}}", api.get_batch, name="openai:batches.get"),
        web.post(f"{base}/batches/{{batch_id}}/cancel", api.cancel_batch, name="openai:batches.cancel"),
        web.post(
            f"{base}/deployments/{{deployment}}/chat/completions", api.chat_completions, name="openai:chat.completions"
        ),
        web.route("*", f"{base}/{{tail:.*}}", api.unknown_route, name="openai:unknown"),
    ]


class DataPlane:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # Every request: the resource, its credentials, then the api-version, as the service checks them.
    def _enter(self, request: web.Request) -> ResourceState:
        resource = self.state.openai.get(request.match_info["resource"])
        if resource is None:
            raise not_found()
        self._authenticate(request, resource)
        if request.query.get("api-version") != API_VERSION:
            raise not_found()
        return resource

    def _authenticate(self, request: web.Request, resource: ResourceState) -> None:
        key = request.headers.get("api-key")
        if key is not None:
            if hmac.compare_digest(key.encode("utf-8", "surrogateescape"), resource.resource.api_key.encode()):
                return
            raise ServiceError(openai_error(401, "401", KEY_DENIED))
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise ServiceError(openai_error(401, "401", KEY_DENIED))
        try:
            self.state.issuer.verify(token, COGNITIVE_AUDIENCES)
        except InvalidToken as exc:
            # This 401 body is not wrapped in "error", unlike every other data-plane error.
            raise ServiceError(web.json_response({"statusCode": 401, "message": TOKEN_DENIED}, status=401)) from exc

    def _endpoint(self, request: web.Request) -> str:
        return f"{request.url.origin()}/{request.match_info['resource']}"

    # Files ---------------------------------------------------------------------------------------------------
    async def upload_file(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        if not request.content_type.startswith("multipart/"):
            return openai_error(
                400, "invalidPayload", "The request must be multipart/form-data with 'purpose' and 'file'."
            )
        purpose: str | None = None
        filename: str | None = None
        content = bytearray()
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or "file"
                limit = self.state.config.max_file_bytes
                read = await read_upload(part, limit)
                if read is None:
                    return openai_error(
                        400,
                        "invalidPayload",
                        f"The file exceeds the maximum upload size of {_size(limit)}.",
                        param="file",
                    )
                content = read
        if purpose is None:
            return openai_error(400, "invalidPayload", "The 'purpose' field is required.", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            return openai_error(
                400,
                "invalidPayload",
                f"The purpose '{purpose}' is not supported. Supported values: {', '.join(sorted(UPLOAD_PURPOSES))}.",
                param="purpose",
            )
        if filename is None:
            return openai_error(400, "invalidPayload", "The 'file' field is required.", param="file")
        if purpose == "batch" and sum(1 for f in resource.files.values() if f.purpose == "batch") >= MAX_BATCH_FILES:
            return openai_error(
                400,
                "quotaExceeded",
                f"The resource has reached the limit of {MAX_BATCH_FILES} batch "
                "files. Delete files that are no longer needed.",
            )
        now = self.state.clock.now()
        stored = resource.add_file(filename, purpose, content, now)
        request["log_entry"].extra["file"] = {"id": stored.id, "filename": filename, "bytes": len(content)}
        location = f"{self._endpoint(request)}/openai/files/{stored.id}"
        return web.json_response(stored.to_json(now), status=201, headers={"Location": location})

    async def list_files(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        now = self.state.clock.now()
        resource.advance_all(now)
        purpose = request.query.get("purpose")
        data = [f.to_json(now) for f in resource.files.values() if purpose in (None, "", f.purpose)]
        return web.json_response({"data": data, "object": "list"})

    def _file(self, request: web.Request) -> tuple[ResourceState, Any]:
        resource = self._enter(request)
        resource.advance_all(self.state.clock.now())
        file_id = request.match_info["file_id"]
        stored = resource.files.get(file_id)
        if stored is None:
            raise ServiceError(openai_error(404, "notFound", f"File with id '{file_id}' was not found."))
        return resource, stored

    async def get_file(self, request: web.Request) -> web.Response:
        _, stored = self._file(request)
        return web.json_response(stored.to_json(self.state.clock.now()))

    async def delete_file(self, request: web.Request) -> web.Response:
        resource, stored = self._file(request)
        del resource.files[stored.id]
        return web.json_response({"deleted": True, "id": stored.id, "object": "file"})

    async def file_content(self, request: web.Request) -> web.Response:
        _, stored = self._file(request)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    # Batches -------------------------------------------------------------------------------------------------
    async def create_batch(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            return openai_error(400, "invalidPayload", "The request body is not valid JSON.")
        try:
            batch = resource.create_batch(body, self.state.clock.now())
        except BatchRequestError as exc:
            return openai_error(400, exc.code, exc.message, param=exc.param)
        request["log_entry"].extra["batch"] = {"id": batch.id, "metadata": batch.metadata}
        return web.json_response(batch.to_json())

    async def list_batches(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        resource.advance_all(self.state.clock.now())
        limit_text = request.query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            return openai_error(400, "invalidPayload", "limit must be an integer between 1 and 100.", param="limit")
        newest_first = sorted(resource.batches.values(), key=lambda b: b.created_at, reverse=True)
        after = request.query.get("after")
        if after:
            ids = [b.id for b in newest_first]
            if after not in ids:
                return openai_error(404, "notFound", f"Batch with id '{after}' was not found.", param="after")
            newest_first = newest_first[ids.index(after) + 1 :]
        page = newest_first[: int(limit_text)]
        return web.json_response(
            {
                "data": [b.to_json() for b in page],
                "first_id": page[0].id if page else None,
                "has_more": len(newest_first) > len(page),
                "last_id": page[-1].id if page else None,
                "object": "list",
            }
        )

    def _batch(self, request: web.Request) -> tuple[ResourceState, Any]:
        resource = self._enter(request)
        batch_id = request.match_info["batch_id"]
        batch = resource.batches.get(batch_id)
        if batch is None:
            raise ServiceError(openai_error(404, "notFound", f"Batch with id '{batch_id}' was not found."))
        resource.advance(batch, self.state.clock.now())
        return resource, batch

    async def get_batch(self, request: web.Request) -> web.Response:
        _, batch = self._batch(request)
        return web.json_response(batch.to_json())

    async def cancel_batch(self, request: web.Request) -> web.Response:
        resource, batch = self._batch(request)
        if batch.is_terminal:
            return openai_error(409, "conflict", f"Cannot cancel a batch with status '{batch.status}'.")
        resource.cancel(batch, self.state.clock.now())
        return web.json_response(batch.to_json())

    # Chat ----------------------------------------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        name = request.match_info["deployment"]
        deployment = resource.resource.deployment(name)
        if deployment is None or deployment.provisioning_state != "Succeeded":
            return openai_error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If "
                "you created the deployment within the last 5 minutes, please wait a moment and try "
                "again.",
            )
        if not deployment.is_chat:
            return openai_error(
                400,
                "OperationNotSupported",
                f"The chatCompletion operation does not work with the "
                f"specified model, {deployment.model_name}. Please choose different model and try "
                "again. You can learn more about which models can be used with each operation here: "
                "https://go.microsoft.com/fwlink/?linkid=2197993.",
            )
        if deployment.is_batch:
            return openai_error(
                400,
                "OperationNotSupported",
                f"The deployment '{name}' has SKU "
                f"'{deployment.sku_name}', which serves batch jobs only. Submit requests through the "
                "batch API.",
            )
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            return openai_error(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request.",
                type_="invalid_request_error",
            )
        problem = chat_request_problem(body)
        if problem is not None:
            param, message = problem
            return openai_error(400, "invalid_request_error", message, param=param, type_="invalid_request_error")
        now = self.state.clock.now()
        prompt_cache = resource.chat_prompt_cache(name, now)
        result = complete(deployment, body, int(now), self.state.config.line_failures, prompt_cache, now)
        return web.json_response(result.body, status=result.status_code)

    async def unknown_route(self, request: web.Request) -> web.Response:
        self._enter(request)
        raise not_found()
