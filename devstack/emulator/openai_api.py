"""Azure OpenAI data plane: files, batches and chat completions, one base URL per resource, in two APIs.

Routes live under `/{resource}/openai/...`, so `http://HOST:PORT/{resource}` plays the part of
`https://{resource}.openai.azure.com`. Both APIs are views of the same resource (one set of files and batches):

- api-version 2024-10-21 (GA): `/openai/files`, `/openai/batches`, `/openai/deployments/{deployment}/chat/completions`,
  each with `?api-version=2024-10-21`;
- v1 (Learn, "Azure OpenAI v1 API"; Azure/azure-rest-api-specs `specification/ai/data-plane/OpenAI.v1`):
  `/openai/v1/files`, `/openai/v1/batches`, `/openai/v1/chat/completions` with the deployment in the body's `model`;
  no api-version needed (`v1` or `preview` if given), the API key also as `Authorization: Bearer <key>` (the spec's
  second apiKey scheme, what the openai SDK's `OpenAI` client sends), errors in the spec's `AzureErrorResponse`
  shape, and blob storage batches (`input_blob`, `output_folder`).

The same handlers serve both; `Surface` holds what differs.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from devstack.emulator.batches import (
    API_2024_10_21,
    API_V1,
    BatchRequest,
    BatchRequestError,
    BlobInput,
    ResourceState,
    describe_reply,
    expiry_problem,
    parse_batch_request,
    validation_error,
)
from devstack.emulator.completions import chat_request_problem, complete
from devstack.emulator.errors import ServiceError, openai_error, v1_error
from devstack.emulator.state import EmulatorState
from devstack.emulator.tokens import COGNITIVE_AUDIENCES, InvalidToken, bearer_token
from devstack.emulator.user_blobs import BlobReply

API_VERSION = API_2024_10_21
# The v1 OpenAPI's AzureAIFoundryModelsApiVersion: optional, "v1" when not given. Azure's answer to any other value
# is not documented; the emulator refuses it as it refuses an unknown route.
V1_API_VERSIONS = ("v1", "preview")
UPLOAD_PURPOSES = {"fine-tune", "assistants", "batch"}
MAX_BATCH_FILES = 500
# Learn: 500 batch files per resource without expiry, 10,000 when they are set to expire.
MAX_EXPIRING_BATCH_FILES = 10_000
# `expires_after` of a v1 upload, as multipart fields: Learn's curl sends `expires_after.seconds`, the openai SDK
# `expires_after[seconds]`.
EXPIRES_AFTER_FIELDS = {
    "expires_after[seconds]": "seconds",
    "expires_after[anchor]": "anchor",
    "expires_after.seconds": "seconds",
    "expires_after.anchor": "anchor",
}
UPLOAD_CHUNK_BYTES = 256 * 1024
KEY_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
TOKEN_DENIED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


@dataclass(frozen=True)
class Surface:
    """One API of the data plane: where its routes are, what their log names start with, which API it is."""

    api: str
    base: str
    route_prefix: str

    @property
    def v1(self) -> bool:
        return self.api == API_V1


GA = Surface(API_2024_10_21, "/{resource}/openai", "")
V1 = Surface(API_V1, "/{resource}/openai/v1", "v1.")


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
    # v1 first: the 2024-10-21 catch-all (`/openai/{tail}`) would take `/openai/v1/...` too.
    return [*_routes(DataPlane(state, V1)), *_routes(DataPlane(state, GA))]


def _routes(api: DataPlane) -> list[web.RouteDef]:
    """The named routes of one API; names are `openai:<route>` for 2024-10-21 and `openai:v1.<route>` for v1."""
    base, name = api.surface.base, f"openai:{api.surface.route_prefix}"
    chat = f"{base}/chat/completions" if api.surface.v1 else f"{base}/deployments/{{deployment}}/chat/completions"
    return [
        web.post(f"{base}/files", api.upload_file, name=f"{name}files.upload"),
        web.get(f"{base}/files", api.list_files, name=f"{name}files.list"),
        web.get(f"{base}/files/{{file_id}}", api.get_file, name=f"{name}files.get"),
        web.delete(f"{base}/files/{{file_id}}", api.delete_file, name=f"{name}files.delete"),
        web.get(f"{base}/files/{{file_id}}/content", api.file_content, name=f"{name}files.content"),
        web.post(f"{base}/batches", api.create_batch, name=f"{name}batches.create"),
        web.get(f"{base}/batches", api.list_batches, name=f"{name}batches.list"),
        web.get(f"{base}/batches/{{batch_id}}", api.get_batch, name=f"{name}batches.get"),
        web.post(f"{base}/batches/{{batch_id}}/cancel", api.cancel_batch, name=f"{name}batches.cancel"),
        web.post(chat, api.chat_completions, name=f"{name}chat.completions"),
        web.route("*", f"{base}/{{tail:.*}}", api.unknown_route, name=f"{name}unknown"),
    ]


class DataPlane:
    def __init__(self, state: EmulatorState, surface: Surface) -> None:
        self.state = state
        self.surface = surface

    def error(
        self, status: int, code: str, message: str, *, param: str | None = None, type_: str | None = None
    ) -> web.Response:
        """An error in this API's shape."""
        shape = v1_error if self.surface.v1 else openai_error
        return shape(status, code, message, param=param, type_=type_)

    def _not_found(self) -> ServiceError:
        # Azure's answer for an unknown route, a missing or an unsupported api-version alike.
        return ServiceError(self.error(404, "404", "Resource not found"))

    # Every request: the resource, its credentials, then the api-version, as the service checks them.
    def _enter(self, request: web.Request) -> ResourceState:
        resource = self.state.openai.get(request.match_info["resource"])
        if resource is None:
            raise not_found()
        self._authenticate(request, resource)
        if self.surface.v1:
            if request.query.get("api-version", "v1") not in V1_API_VERSIONS:
                raise self._not_found()
        elif request.query.get("api-version") != API_VERSION:
            raise self._not_found()
        return resource

    def _authenticate(self, request: web.Request, resource: ResourceState) -> None:
        # The front door's answers (401 bodies) are the same for both APIs.
        expected = resource.resource.api_key.encode()
        key = request.headers.get("api-key")
        if key is not None:
            if hmac.compare_digest(key.encode("utf-8", "surrogateescape"), expected):
                return
            raise ServiceError(openai_error(401, "401", KEY_DENIED))
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise ServiceError(openai_error(401, "401", KEY_DENIED))
        if self.surface.v1 and token.count(".") != 2:
            # v1 takes the API key as a bearer token too; what is not a JWT can only be a key.
            if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected):
                return
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
            return self.error(
                400, "invalidPayload", "The request must be multipart/form-data with 'purpose' and 'file'."
            )
        purpose: str | None = None
        filename: str | None = None
        content = bytearray()
        expiry: dict[str, str] = {}
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
                    return self.error(
                        400,
                        "invalidPayload",
                        f"The file exceeds the maximum upload size of {_size(limit)}.",
                        param="file",
                    )
                content = read
            elif self.surface.v1 and part.name in EXPIRES_AFTER_FIELDS:
                expiry[EXPIRES_AFTER_FIELDS[part.name]] = (await part.text()).strip()
        if purpose is None:
            return self.error(400, "invalidPayload", "The 'purpose' field is required.", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            return self.error(
                400,
                "invalidPayload",
                f"The purpose '{purpose}' is not supported. Supported values: {', '.join(sorted(UPLOAD_PURPOSES))}.",
                param="purpose",
            )
        if filename is None:
            return self.error(400, "invalidPayload", "The 'file' field is required.", param="file")
        expires_after: int | None = None
        if expiry:
            seconds = expiry.get("seconds", "")
            problem = expiry_problem(int(seconds) if seconds.isdigit() else seconds, expiry.get("anchor"))
            if problem:
                return self.error(400, "invalidPayload", f"expires_after {problem}.", param="expires_after")
            expires_after = int(seconds)
        now = self.state.clock.now()
        resource.forget_expired_files(now)
        if purpose == "batch" and (refusal := self._file_limit(resource, expires_after is not None)):
            return refusal
        stored = resource.add_file(filename, purpose, content, now, expires_after)
        request["log_entry"].extra["file"] = {"id": stored.id, "filename": filename, "bytes": len(content)}
        if self.surface.v1:
            return web.json_response(stored.to_json(now))  # the v1 spec's createFile answers 200
        location = f"{self._endpoint(request)}/openai/files/{stored.id}"
        return web.json_response(stored.to_json(now), status=201, headers={"Location": location})

    def _file_limit(self, resource: ResourceState, expiring: bool) -> web.Response | None:
        batch_files = [f for f in resource.files.values() if f.purpose == "batch"]
        if expiring:
            limit, count = MAX_EXPIRING_BATCH_FILES, len(batch_files)
        else:
            limit, count = MAX_BATCH_FILES, sum(1 for f in batch_files if f.expires_at is None)
        if count < limit:
            return None
        return self.error(
            400,
            "quotaExceeded",
            f"The resource has reached the limit of {limit} batch files. Delete files that are no longer needed.",
        )

    async def list_files(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        now = self.state.clock.now()
        resource.advance_all(now)
        purpose = request.query.get("purpose")
        data = [f.to_json(now) for f in resource.files.values() if purpose in (None, "", f.purpose)]
        if not self.surface.v1:
            return web.json_response({"data": data, "object": "list"})
        # The v1 spec's AzureListFilesResponse: one page with first_id, last_id and has_more.
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response(
            {"data": data, "first_id": first, "has_more": False, "last_id": last, "object": "list"}
        )

    def _file(self, request: web.Request) -> tuple[ResourceState, Any]:
        resource = self._enter(request)
        resource.advance_all(self.state.clock.now())
        file_id = request.match_info["file_id"]
        stored = resource.files.get(file_id)
        if stored is None:
            raise ServiceError(self.error(404, "notFound", f"File with id '{file_id}' was not found."))
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
            return self.error(400, "invalidPayload", "The request body is not valid JSON.")
        try:
            wanted = parse_batch_request(body, self.surface.api, resource.resource.blob_storage)
            blob_input = await self._read_input(resource, wanted) if wanted.input_blob is not None else None
            batch = resource.create_batch(wanted, self.state.clock.now(), blob_input)
        except BatchRequestError as exc:
            return self.error(400, exc.code, exc.message, param=exc.param)
        logged: dict[str, Any] = {"id": batch.id, "metadata": batch.metadata}
        if batch.input_blob is not None:
            logged |= {"inputBlob": batch.input_blob, "outputFolder": batch.output_folder}
        request["log_entry"].extra["batch"] = logged
        return web.json_response(batch.to_json())

    async def _read_input(self, resource: ResourceState, wanted: BatchRequest) -> BlobInput:
        """What the resource's identity finds at the batch's output folder and input blob, now: the input, or the
        error validation will fail the batch with (the codes are the emulator's own; Azure documents none)."""
        assert wanted.input_blob is not None
        assert wanted.output_folder is not None
        blobs, name = self.state.user_blobs, resource.resource.name
        folder = await blobs.container(name, wanted.output_folder.container_url)
        if not folder.ok:
            where = f"The output folder '{wanted.output_folder.url}'"
            return BlobInput(None, _blob_problem("output_folder", where, folder, "output_folder"))
        read = await blobs.read(name, wanted.input_blob.url)
        if not read.ok:
            return BlobInput(None, _blob_problem("input_blob", f"The input blob '{wanted.input_blob.url}'", read))
        return BlobInput(read.body)

    async def list_batches(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        resource.advance_all(self.state.clock.now())
        await resource.write_results(self.state.user_blobs)
        limit_text = request.query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            return self.error(400, "invalidPayload", "limit must be an integer between 1 and 100.", param="limit")
        newest_first = sorted(resource.batches.values(), key=lambda b: b.created_at, reverse=True)
        after = request.query.get("after")
        if after:
            ids = [b.id for b in newest_first]
            if after not in ids:
                return self.error(404, "notFound", f"Batch with id '{after}' was not found.", param="after")
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

    async def _batch(self, request: web.Request) -> tuple[ResourceState, Any]:
        resource = self._enter(request)
        batch_id = request.match_info["batch_id"]
        batch = resource.batches.get(batch_id)
        if batch is None:
            raise ServiceError(self.error(404, "notFound", f"Batch with id '{batch_id}' was not found."))
        resource.advance(batch, self.state.clock.now())
        await resource.write_results(self.state.user_blobs)
        return resource, batch

    async def get_batch(self, request: web.Request) -> web.Response:
        _, batch = await self._batch(request)
        return web.json_response(batch.to_json())

    async def cancel_batch(self, request: web.Request) -> web.Response:
        resource, batch = await self._batch(request)
        if batch.is_terminal:
            return self.error(409, "conflict", f"Cannot cancel a batch with status '{batch.status}'.")
        resource.cancel(batch, self.state.clock.now())
        return web.json_response(batch.to_json())

    # Chat ----------------------------------------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.Response:
        resource = self._enter(request)
        if self.surface.v1:
            # v1 names the deployment in the body's `model` (the OpenAI shape), not in the path.
            body = await self._chat_body(request)
            name = body.get("model") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name:
                return self.error(
                    400,
                    "invalid_request_error",
                    "you must provide a model parameter",
                    param="model",
                    type_="invalid_request_error",
                )
            deployment = self._chat_deployment(resource, name)
        else:
            name = request.match_info["deployment"]
            deployment = self._chat_deployment(resource, name)
            body = await self._chat_body(request)
        problem = chat_request_problem(body)
        if problem is not None:
            param, message = problem
            return self.error(400, "invalid_request_error", message, param=param, type_="invalid_request_error")
        now = self.state.clock.now()
        prompt_cache = resource.chat_prompt_cache(name, now)
        result = complete(deployment, body, int(now), self.state.config.line_failures, prompt_cache, now)
        return web.json_response(result.body, status=result.status_code)

    def _chat_deployment(self, resource: ResourceState, name: str) -> Any:
        deployment = resource.resource.deployment(name)
        if deployment is None or deployment.provisioning_state != "Succeeded":
            raise ServiceError(
                self.error(
                    404,
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If "
                    "you created the deployment within the last 5 minutes, please wait a moment and try "
                    "again.",
                )
            )
        if not deployment.is_chat:
            raise ServiceError(
                self.error(
                    400,
                    "OperationNotSupported",
                    f"The chatCompletion operation does not work with the "
                    f"specified model, {deployment.model_name}. Please choose different model and try "
                    "again. You can learn more about which models can be used with each operation here: "
                    "https://go.microsoft.com/fwlink/?linkid=2197993.",
                )
            )
        if deployment.is_batch:
            raise ServiceError(
                self.error(
                    400,
                    "OperationNotSupported",
                    f"The deployment '{name}' has SKU "
                    f"'{deployment.sku_name}', which serves batch jobs only. Submit requests through the "
                    "batch API.",
                )
            )
        return deployment

    async def _chat_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise ServiceError(
                self.error(
                    400,
                    "invalid_request_error",
                    "We could not parse the JSON body of your request.",
                    type_="invalid_request_error",
                )
            ) from exc

    async def unknown_route(self, request: web.Request) -> web.Response:
        self._enter(request)
        raise self._not_found()


def _blob_problem(what: str, subject: str, reply: BlobReply, param: str | None = None) -> dict[str, Any]:
    code = f"{what}_not_found" if reply.status == 404 else f"{what}_not_accessible"
    hint = (
        "was not found"
        if reply.status == 404
        else "could not be read with the resource's managed identity (it needs Storage Blob Data Contributor)"
    )
    return validation_error(code, f"{subject} {hint}: {describe_reply(reply)}.", param=param or what)
