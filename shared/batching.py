"""What the batch-run activities do: resolve the input secret, submit exactly once, check, cancel.

Submitting is exactly-once: every batch carries its run id in `metadata`, and every attempt first looks for a
batch that already carries it, so an attempt whose reply was lost (timeout, crash, 5xx after sending) is
re-attached to instead of paid for twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.azure_openai import AzureOpenAIClient, AzureOpenAIError
from shared.runs import BatchRunState, BatchSnapshot, redact_input_file_id
from shared.secrets import SecretReader, SecretRef

RUN_ID_METADATA = "runId"
# Which batch of the run this is: a batch that Azure failed for quota (token_limit_exceeded at validation) is
# followed by another, and re-attaching must find the current one, not the failed one.
RUN_ATTEMPT_METADATA = "runAttempt"
# How far before the run's request time a batch of this run may carry its created_at (clock skew).
REATTACH_SLACK_SECONDS = 600


class SubmitUnknown(Exception):
    """The submit's outcome is unknown or transiently failed; retrying is safe because it re-attaches first."""


def resolve_input(state: BatchRunState, secrets: SecretReader) -> dict[str, str]:
    """Checks the input secret exists and pins its version; its value stays in the vault."""
    assert state.input_file_secret
    ref = secrets.latest(state.input_file_secret)
    return {"name": ref.name, "version": ref.version}


def submit(
    state: BatchRunState, client: AzureOpenAIClient, secrets: SecretReader | None, cancel_requested: bool
) -> dict[str, Any]:
    """Creates the run's batch, or finds the one an earlier attempt created. Returns an outcome:
    `submitted` / `reattached` (with the batch), `quota` (token_limit_exceeded: try again later),
    `rejected` (Azure refused the request for good), `cancelled` (cancel asked before any batch existed), or
    `not_created` (the run asked only to look, and no batch of it exists)."""
    requested = int(datetime.fromisoformat(state.requested_at.replace("Z", "+00:00")).timestamp())
    try:
        existing = client.find_batch(identity_metadata(state), requested - REATTACH_SLACK_SECONDS)
    except AzureOpenAIError as error:
        raise SubmitUnknown(f"could not look for an earlier batch: {error.code}") from error
    if existing is not None:
        return {"outcome": "reattached", "batch": BatchSnapshot.from_azure(existing).to_dict()}
    if cancel_requested:
        return {"outcome": "cancelled"}
    if state.lookup_only:
        return {"outcome": "not_created"}
    input_file_id = state.input_file_id
    if state.input_file_secret:
        assert secrets is not None
        assert state.secret_version
        input_file_id = secrets.value(SecretRef(state.input_file_secret, state.secret_version))
    assert input_file_id
    metadata = {**state.metadata, **identity_metadata(state)}
    try:
        batch = client.create_batch(input_file_id, state.endpoint, state.completion_window, metadata)
    except AzureOpenAIError as error:
        message = redact_input_file_id(error.message, input_file_id)
        if error.code == "token_limit_exceeded":
            return {"outcome": "quota", "message": message}
        if error.transient:
            raise SubmitUnknown(f"submit outcome unknown ({error.status or 'no reply'} {error.code})") from error
        return {"outcome": "rejected", "error": {"code": error.code, "message": message, "status": error.status}}
    return {"outcome": "submitted", "batch": BatchSnapshot.from_azure(batch).to_dict()}


def identity_metadata(state: BatchRunState) -> dict[str, str]:
    """The metadata that ties a batch to its run and attempt."""
    return {RUN_ID_METADATA: state.run_id, RUN_ATTEMPT_METADATA: str(state.attempt)}


def check(batch_id: str, client: AzureOpenAIClient) -> dict[str, Any]:
    return BatchSnapshot.from_azure(client.get_batch(batch_id)).to_dict()


def cancel(batch_id: str, client: AzureOpenAIClient) -> dict[str, Any]:
    """Asks Azure to cancel; a batch that already ended is returned as it is (Azure answers 409)."""
    try:
        return BatchSnapshot.from_azure(client.cancel_batch(batch_id)).to_dict()
    except AzureOpenAIError as error:
        if error.status == 409:
            return check(batch_id, client)
        raise
