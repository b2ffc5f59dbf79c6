"""Calls to Azure: the one retry policy (bounded retries of transient failures, honoring Retry-After) and the one
error type (`AzureError`) for every service the app calls over HTTP."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = 30.0


class BoundedRetry(Retry):
    """urllib3's Retry, with the server's Retry-After capped so no call sleeps unboundedly."""

    max_retry_after = MAX_RETRY_AFTER_SECONDS

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_retry_after)


def retry_policy(attempts: int = 4, backoff: float = 0.5, methods: frozenset[str] = frozenset({"GET"})) -> Retry:
    """Retries of idempotent requests on 408/429/5xx and connection errors, at most `attempts` times.

    Non-idempotent requests (creating a batch) are never retried here: the caller decides, because a lost reply
    may mean the request took effect.
    """
    return BoundedRetry(
        total=attempts,
        connect=attempts,
        read=attempts,
        status=attempts,
        other=0,  # e.g. a TLS error while reading the reply: the request may have been sent, so never re-send
        backoff_factor=backoff,
        backoff_max=8.0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=methods,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def azure_session(retry: Retry | None = None) -> requests.Session:
    """A requests session for one Azure service, with the retry policy mounted for http and https."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry if retry is not None else retry_policy())
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class AzureError(Exception):
    """An Azure service refused or failed a request: `status` is the HTTP status (None when no reply came: the
    request was lost, its outcome unknown, or it could not be sent), `code` the service's error code, `message`
    its message, `retry_after` the seconds it asked to wait (Retry-After / retry-after-ms)."""

    def __init__(
        self, service: str, status: int | None, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{service}: {code}: {message}" if status is None else f"{service} {status} {code}: {message}")
        self.service = service
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttled, a server error, or no reply at all."""
        return self.status is None or self.status in TRANSIENT_STATUSES

    @classmethod
    def from_response(cls, service: str, response: requests.Response) -> AzureError:
        """The error an HTTP reply carries: `{"error": {"code", "message"}}` as ARM and Azure OpenAI send it, or the
        unwrapped `{"statusCode", "message"}` of Azure OpenAI's bearer-token failures, or the status alone."""
        retry_after = None
        for header, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
            value = response.headers.get(header)
            if value and value.replace(".", "", 1).isdigit():
                retry_after = float(value) * scale
                break
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code, message = str(error.get("code") or response.status_code), str(error.get("message") or "")
        elif isinstance(body, dict) and "message" in body:
            code, message = str(body.get("statusCode", response.status_code)), str(body["message"])
        else:
            code, message = str(response.status_code), response.reason or ""
        return cls(service, response.status_code, code, message, retry_after)
