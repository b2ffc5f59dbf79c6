"""The one retry policy for calls to Azure: bounded retries of transient failures, honoring Retry-After."""

from __future__ import annotations

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
