"""Azure OpenAI data-plane client (api-version 2024-10-21): batches and chat completions.

Reads (GET) are retried by the shared retry policy. Creating a batch is never retried here: when its reply is
lost the caller must first look for the batch it may have created (see `find_batch`), or it could pay twice.
A chat completion is retried only when it was throttled (429: Azure did not run it), honoring Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests
from azure.core.exceptions import ClientAuthenticationError

from shared.arm import TokenCredential
from shared.http import DEFAULT_TIMEOUT_SECONDS, MAX_RETRY_AFTER_SECONDS, TRANSIENT_STATUSES, azure_session

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
THROTTLE_RETRIES = 4  # further attempts of a throttled (429) chat completion
THROTTLE_BACKOFF = 0.5  # seconds before the first retry when Azure names no Retry-After; doubles each time


class AzureOpenAIError(Exception):
    """The service refused or failed a request. `status` is None when Azure gave no reply: the request was lost
    (its outcome is unknown) or could not be sent (no token); both are worth retrying."""

    def __init__(self, status: int | None, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"Azure OpenAI {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttled, a server error, or no reply at all."""
        return self.status is None or self.status in TRANSIENT_STATUSES


class AzureOpenAIClient:
    def __init__(
        self,
        endpoint: str,
        api_version: str,
        *,
        credential: TokenCredential | None = None,
        api_key: str | None = None,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if (credential is None) == (api_key is None):
            raise ValueError("give exactly one of credential and api_key")
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self.credential = credential
        self.api_key = api_key
        self.session = session or azure_session()
        self.timeout = timeout

    # Batches -------------------------------------------------------------------------------------------------
    def create_batch(
        self, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST /openai/batches with exactly Azure's body; one attempt, never retried."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "batches", json=body)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"batches/{batch_id}/cancel")

    def list_batches(self, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, str] = {"limit": str(limit)}
        if after:
            params["after"] = after
        return self._call("GET", "batches", params=params)

    def iter_batches(self) -> Iterator[dict[str, Any]]:
        """Every batch of the resource, newest first, paging with `after` behind the scenes."""
        after = None
        while True:
            page = self.list_batches(after=after)
            yield from page.get("data") or []
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = page["last_id"]

    def find_batch(self, metadata: dict[str, str], created_since: int) -> dict[str, Any] | None:
        """The newest batch whose metadata has every pair of `metadata`, looking back to `created_since`."""
        for batch in self.iter_batches():
            found = batch.get("metadata") or {}
            if all(found.get(key) == value for key, value in metadata.items()):
                return batch
            created = batch.get("created_at")
            if created and int(created) < created_since:
                return None
        return None

    # Chat ----------------------------------------------------------------------------------------------------
    def chat_completion(self, deployment: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST …/chat/completions. A 429 means Azure did not run the request, so it is retried (at most
        THROTTLE_RETRIES times, waiting as Retry-After says, capped); any other failure is raised at once."""
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                return self._call("POST", f"deployments/{deployment}/chat/completions", json=body)
            except AzureOpenAIError as error:
                if error.status != 429 or attempt == THROTTLE_RETRIES:
                    raise
                wait = error.retry_after if error.retry_after is not None else THROTTLE_BACKOFF * 2**attempt
                time.sleep(min(wait, MAX_RETRY_AFTER_SECONDS))
        raise AssertionError("unreachable")  # pragma: no cover

    # Plumbing ------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"api-key": self.api_key}
        assert self.credential is not None
        try:
            token = self.credential.get_token(COGNITIVE_SCOPE).token
        except ClientAuthenticationError as exc:
            # Not Azure's 401: nothing was sent, and an identity endpoint that failed may well answer next time.
            raise AzureOpenAIError(
                None, "CredentialUnavailable", "could not get a token for Azure OpenAI from the identity"
            ) from exc
        return {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        params = {"api-version": self.api_version, **kwargs.pop("params", {})}
        try:
            response = self.session.request(
                method,
                f"{self.endpoint}/openai/{path}",
                allow_redirects=False,  # an api-key header would follow a redirect to another host
                params=params,
                headers=self._headers(),
                timeout=self.timeout,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise AzureOpenAIError(None, "NoReply", f"no reply from Azure OpenAI ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise _error(response)
        body: dict[str, Any] = response.json()
        return body


def _error(response: requests.Response) -> AzureOpenAIError:
    retry_after = None
    for header, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = response.headers.get(header)
        if value and value.replace(".", "", 1).isdigit():
            retry_after = float(value) * scale
            break
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code") or response.status_code), str(error.get("message") or "")
    elif isinstance(body, dict) and "message" in body:  # the unwrapped 401 body of bearer-token failures
        code, message = str(body.get("statusCode", response.status_code)), str(body["message"])
    else:
        code, message = str(response.status_code), response.reason or ""
    return AzureOpenAIError(response.status_code, code, message, retry_after)
