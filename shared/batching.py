"""What the batch-run activities do: resolve the input secret, submit exactly once, check, cancel.

Each takes its step (see `shared.batch_run`) and answers with what it observed. Submitting is exactly-once: a
conditional write in the submit ledger decides which try creates the batch, and records which batch it created;
every batch also carries its run id and attempt in `metadata`, so a try whose reply was lost (timeout, crash, 5xx
after sending) is found in Azure's list and re-attached to instead of paid for twice. A batch with blob storage
cannot carry metadata: it is found by its input blob instead, among the batches no other run owns in the ledger
(docs/exactly-once.md says how near that comes).
"""

from __future__ import annotations

from datetime import timedelta

from shared.azure_openai import AzureOpenAIClient, Batch
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
from shared.submit_ledger import Intent, SubmitClaimed, SubmitLedger

# How far before a claim a batch of its attempt may carry its created_at (clocks of the host and Azure differ).
CLOCK_SKEW = timedelta(minutes=10)
# How long a claim without an outcome holds off other tries: far longer than a create can take (one POST, 30 s
# timeout), so a copy that crashed after claiming is taken over, and one still creating is not.
CLAIM_TIMEOUT = timedelta(minutes=5)


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
    step: Submit,
    client: AzureOpenAIClient,
    ledger: SubmitLedger,
    secrets: SecretReader | None,
    cancel_requested: bool,
) -> SubmitAnswered:
    """Creates the run's batch exactly once, or finds the one an earlier try created (see `SubmitOutcome`).

    The ledger says whether a try of this attempt claimed the create and what came of it; Azure's batch list is
    searched only when a claim has no recorded outcome, and only back to the claim. A copy that may still be creating
    (a twin running at once, or one that crashed moments ago) is left to finish: this one raises SubmitUnknown and the
    run tries again later, taking the claim over once the other copy ended or CLAIM_TIMEOUT passed."""
    at = parse_iso(step.decided_at)
    intent = ledger.intent(step.run_id, step.attempt)
    if intent is not None and intent.batch_id:
        return SubmitAnswered(
            outcome=SubmitOutcome.REATTACHED, batch=BatchSnapshot.of(client.get_batch(intent.batch_id))
        )
    if intent is not None:
        try:
            existing = _find_earlier(step, intent, client, ledger)
        except AzureError as error:
            raise SubmitUnknown(f"could not look for an earlier batch: {error.code}") from error
        if existing is not None:
            ledger.record(intent, existing.id)
            return SubmitAnswered(outcome=SubmitOutcome.REATTACHED, batch=BatchSnapshot.of(existing))
        if not intent.ended_unknown and at - intent.claimed_at < CLAIM_TIMEOUT:
            raise SubmitUnknown("another copy of this submit may still be creating the batch")
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
    assert input_file_id or step.input_blob
    try:
        claim = ledger.claim(step.run_id, step.attempt, at, over=intent)
    except SubmitClaimed as error:
        raise SubmitUnknown(str(error)) from error
    try:
        batch = _create(step, client, input_file_id)
    except AzureError as error:
        if error.transient:
            ledger.ended_unknown(claim)
            raise SubmitUnknown(f"submit outcome unknown ({error.status or 'no reply'} {error.code})") from error
        ledger.release(claim)  # Azure refused: no batch exists, a later try may create
        if error.code == "token_limit_exceeded":
            return SubmitAnswered(outcome=SubmitOutcome.QUOTA)
        message = redact_input_file_id(error.message, input_file_id) or f"Azure OpenAI answered {error.status}."
        return SubmitAnswered(outcome=SubmitOutcome.REJECTED, refusal=Failure.of(error.code, message))
    if step.input_blob and not ledger.own(step.resource, batch.id, step.run_id, step.attempt):
        # Another run's search for its lost reply took this batch in the moment before this write, and tracks it now.
        # This run looks again (finding that run's batch, if it exists) or, once the claim may be taken over, creates.
        ledger.ended_unknown(claim)
        raise SubmitUnknown(f"batch {batch.id} was taken by another run reading the same input blob")
    ledger.record(claim, batch.id)
    return SubmitAnswered(outcome=SubmitOutcome.SUBMITTED, batch=BatchSnapshot.of(batch))


def _create(step: Submit, client: AzureOpenAIClient, input_file_id: str | None) -> Batch:
    """The create call itself: a batch of the input file carrying the run in its metadata, or one with blob storage
    (Azure takes no metadata there; the ledger's owner row ties it to the run)."""
    if step.input_blob:
        assert step.output_folder
        return client.create_batch(
            None, step.endpoint, step.completion_window, input_blob=step.input_blob, output_folder=step.output_folder
        )
    return client.create_batch(input_file_id, step.endpoint, step.completion_window, {**step.metadata, **step.identity})


def _find_earlier(step: Submit, intent: Intent, client: AzureOpenAIClient, ledger: SubmitLedger) -> Batch | None:
    """The batch an earlier try of this attempt created without recording it, looking back to its intent: the one
    carrying the run's metadata; for a blob batch (which carries none), the one nearest the intent in time among
    those reading the run's input blob that no other run owns and whose results, if it ended, went to the run's
    output folder — owned by this run from now on."""
    since = int((intent.claimed_at - CLOCK_SKEW).timestamp())
    if not step.input_blob:
        return client.find_batch(step.identity, since)
    assert step.output_folder
    folder = step.output_folder.rstrip("/") + "/"
    claimed = intent.claimed_at.timestamp()
    candidates = [
        batch
        for batch in client.find_blob_batches(step.input_blob, since)
        if not batch.output_blob or batch.output_blob.startswith(folder)
    ]
    candidates.sort(key=lambda batch: abs((batch.created_at or claimed) - claimed))
    return next((b for b in candidates if ledger.own(step.resource, b.id, step.run_id, step.attempt)), None)


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
