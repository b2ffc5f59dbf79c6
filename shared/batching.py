"""What the batch-run activities do: resolve the input secret, submit exactly once, check, cancel.

Each takes its step (see `shared.batch_run`) and answers with what it observed. Submitting is exactly-once: every
batch carries its run id and attempt in `metadata`, and every attempt first looks for a batch that already carries
them, so an attempt whose reply was lost (timeout, crash, 5xx after sending) is re-attached to instead of paid for
twice.
"""

from __future__ import annotations

from shared.azure_openai import AzureOpenAIClient
from shared.batch_run import (
    BatchChecked,
    BatchSnapshot,
    CancelAnswered,
    CancelBatch,
    Check,
    InputResolved,
    ResolveInput,
    Submit,
    SubmitAnswered,
    SubmitOutcome,
    redact_input_file_id,
)
from shared.http import AzureError
from shared.runs import Failure, parse_iso
from shared.secrets import SecretReader, SecretRef, SecretUnavailable

# How far before the run's request time a batch of this run may carry its created_at (clock skew).
REATTACH_SLACK_SECONDS = 600


class SubmitUnknown(Exception):
    """The submit's outcome is unknown or transiently failed; retrying is safe because it re-attaches first."""


def resolve_input(step: ResolveInput, secrets: SecretReader) -> InputResolved:
    """Checks the input secret exists and pins its version; its value stays in the vault. A vault that is busy or
    unreachable raises (the run tries again); a missing or unreadable secret is an answer."""
    try:
        ref = secrets.latest(step.secret)
    except SecretUnavailable as error:
        if error.transient:
            raise
        return InputResolved(refusal=Failure.of("input_secret_unavailable", str(error), param="inputFileSecret"))
    return InputResolved(version=ref.version)


def submit(
    step: Submit, client: AzureOpenAIClient, secrets: SecretReader | None, cancel_requested: bool
) -> SubmitAnswered:
    """Creates the run's batch, or finds the one an earlier attempt created (see `SubmitOutcome`)."""
    requested = int(parse_iso(step.requested_at).timestamp())
    try:
        existing = client.find_batch(step.identity, requested - REATTACH_SLACK_SECONDS)
    except AzureError as error:
        raise SubmitUnknown(f"could not look for an earlier batch: {error.code}") from error
    if existing is not None:
        return SubmitAnswered(outcome=SubmitOutcome.REATTACHED, batch=BatchSnapshot.of(existing))
    if cancel_requested:
        return SubmitAnswered(outcome=SubmitOutcome.CANCELLED, cancel_requested=True)
    if step.lookup_only:
        return SubmitAnswered(outcome=SubmitOutcome.NOT_CREATED)
    input_file_id = step.input_file_id
    if step.input_file_secret:
        assert secrets is not None
        assert step.secret_version
        try:
            input_file_id = secrets.value(SecretRef(step.input_file_secret, step.secret_version))
        except SecretUnavailable as error:  # the message names the secret, never its value
            if error.transient:
                raise
            refusal = Failure.of("input_secret_unavailable", str(error), param="inputFileSecret")
            return SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=refusal)
    assert input_file_id
    metadata = {**step.metadata, **step.identity}
    try:
        batch = client.create_batch(input_file_id, step.endpoint, step.completion_window, metadata)
    except AzureError as error:
        if error.code == "token_limit_exceeded":
            return SubmitAnswered(outcome=SubmitOutcome.QUOTA)
        if error.transient:
            raise SubmitUnknown(f"submit outcome unknown ({error.status or 'no reply'} {error.code})") from error
        message = redact_input_file_id(error.message, input_file_id) or f"Azure OpenAI answered {error.status}."
        return SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=Failure.of(error.code, message))
    return SubmitAnswered(outcome=SubmitOutcome.SUBMITTED, batch=BatchSnapshot.of(batch))


def check(step: Check, client: AzureOpenAIClient, cancel_requested: bool) -> BatchChecked:
    return BatchChecked(batch=BatchSnapshot.of(client.get_batch(step.batch_id)), cancel_requested=cancel_requested)


def cancel(step: CancelBatch, client: AzureOpenAIClient) -> CancelAnswered:
    """Asks Azure to cancel; a batch that already ended is returned as it is (Azure answers 409)."""
    try:
        return CancelAnswered(batch=BatchSnapshot.of(client.cancel_batch(step.batch_id)))
    except AzureError as error:
        if error.status == 409:
            return CancelAnswered(batch=BatchSnapshot.of(client.get_batch(step.batch_id)))
        raise
