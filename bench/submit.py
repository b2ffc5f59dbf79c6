"""Submit at scale: 1,000 runs submitting at once, the old exactly-once submit (scan Azure's batch list before every
create) against today's (a conditional intent in the submit ledger; the list searched only for an intent without
an outcome).

Starts Azurite (in memory) and the Azure emulators (the default config, quota raised so that every run gets its
batch, validation slowed so no batch finishes meanwhile), uploads one input file, then submits `--runs` runs from
`--workers` threads, as many activity workers of a scaled-out app would, once per path, each on a fresh resource
state. It counts the list calls Azure OpenAI received, per run, and checks that each run has exactly one batch.
Then it repeats the burst with every create's reply lost once (the batch created, the reply cut), so that every run
needs a second try, which is when today's submit searches the list.

    .venv/bin/python bench/submit.py [--runs 1000] [--workers 32]

"before" is a frozen copy (below) of the submit at commit 688d40d: `find_batch` over the whole list, newest first,
back to ten minutes before the run was requested, before every create.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from azure.data.tables import TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import start_azurite, start_emulators, stop
from devstack.inputs import upload_input
from shared.azure_openai import AzureOpenAIClient
from shared.batch_run import RUN_ATTEMPT_METADATA, RUN_ID_METADATA, Submit
from shared.batching import SubmitUnknown, submit
from shared.http import AzureError
from shared.submit_ledger import SubmitLedger

ROOT = Path(__file__).resolve().parent.parent
RESOURCE = "aoai-devstack-eastus"
DEPLOYMENT = "gpt-4o-batch"
SubmitPath = Callable[[Submit, AzureOpenAIClient, SubmitLedger], str]


# "before": the submit as it was at commit 688d40d -------------------------------------------------------------------


def submit_before(step: Submit, client: AzureOpenAIClient, ledger: SubmitLedger) -> str:
    requested = int(datetime.fromisoformat(step.requested_at.replace("Z", "+00:00")).timestamp())
    try:
        existing = client.find_batch(step.identity, requested - 600)
    except AzureError as error:
        raise SubmitUnknown(error.code) from error
    if existing is not None:
        return "reattached"
    try:
        client.create_batch(str(step.input_file_id), step.endpoint, step.completion_window, step.identity)
    except AzureError as error:
        raise SubmitUnknown(error.code) from error
    return "submitted"


# "after": the submit as it is now -----------------------------------------------------------------------------------


def submit_after(step: Submit, client: AzureOpenAIClient, ledger: SubmitLedger) -> str:
    return submit(step, client, ledger, None, cancel_requested=False).outcome.value


PATHS: dict[str, SubmitPath] = {"before (688d40d)": submit_before, "after": submit_after}


# The benchmark ------------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    list_calls: int
    creates: int
    batches_per_run: set[int]
    seconds: float


def step_for(run: int, file_id: str, at: datetime) -> Submit:
    return Submit(
        run_id=f"{DEPLOYMENT}::batch::{uuid.uuid4().hex}",
        attempt=1,
        resource=RESOURCE,
        endpoint="/chat/completions",
        completion_window="24h",
        requested_at=at.isoformat().replace("+00:00", "Z"),
        metadata={"bench": str(run)},
        input_file_id=file_id,
        input_file_secret=None,
        secret_version=None,
        lookup_only=False,
        decided_at=at.isoformat().replace("+00:00", "Z"),
    )


def burst(
    path: SubmitPath, runs: int, workers: int, endpoints: dict[str, Any], ledger: SubmitLedger, lose: bool
) -> Burst:
    control = endpoints["emulator"]["control"]
    resource = endpoints["openai"][RESOURCE]
    requests.post(f"{control}/reset", timeout=30).raise_for_status()
    requests.patch(f"{control}/resources/{RESOURCE}/speeds", json={"validationSeconds": 86_400}, timeout=10)
    client = AzureOpenAIClient(resource["endpoint"], "2024-10-21", api_key=resource["apiKey"])
    line = {"custom_id": "1", "method": "POST", "url": "/chat/completions"}
    line |= {"body": {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}}
    # Waits until the file reads `processed`: Azure refuses a batch from a file still `pending`.
    input_file_id = upload_input(endpoints, (json.dumps(line) + "\n").encode(), "input.jsonl", RESOURCE)
    now = datetime.now(UTC)
    steps = [step_for(n, input_file_id, now) for n in range(runs)]
    if lose:
        rule = {"service": "openai", "route": "batches.create", "status": 500, "afterHandler": True, "times": runs}
        requests.post(f"{control}/faults", json=rule, timeout=10).raise_for_status()

    def until_known(step: Submit) -> str:
        for _ in range(10):  # the run's own tries, without the waits between them
            try:
                return path(step, client, ledger)
            except SubmitUnknown:
                continue
        raise RuntimeError(f"run {step.run_id} never learned its outcome")

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(until_known, steps))
    seconds = time.perf_counter() - started
    log = requests.get(f"{control}/requests", params={"service": "openai"}, timeout=60).json()["value"]
    batches = requests.get(f"{control}/resources/{RESOURCE}/batches", timeout=60).json()["value"]
    per_run: dict[str, int] = {}
    for batch in batches:
        metadata = batch.get("metadata") or {}
        if metadata.get(RUN_ATTEMPT_METADATA) == "1":
            per_run[metadata[RUN_ID_METADATA]] = per_run.get(metadata[RUN_ID_METADATA], 0) + 1
    return Burst(
        list_calls=sum(1 for r in log if r["route"] == "batches.list"),
        creates=sum(1 for r in log if r["route"] == "batches.create"),
        batches_per_run={per_run.get(step.run_id, 0) for step in steps},
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory)
        (state / "azurite").mkdir()
        (state / "emulators").mkdir()
        storage, connection = start_azurite(state / "azurite")
        emulators, endpoints = start_emulators(
            state / "emulators", ROOT / "devstack" / "emulator" / "default-config.json"
        )
        try:
            rows = []
            for lose in (False, True):
                for name, path in PATHS.items():
                    ledger = SubmitLedger(
                        TableServiceClient.from_connection_string(connection), f"s{uuid.uuid4().hex[:12]}"
                    )
                    result = burst(path, options.runs, options.workers, endpoints, ledger, lose)
                    if result.batches_per_run != {1}:
                        raise SystemExit(
                            f"{name}: runs with {sorted(result.batches_per_run)} batches: not exactly once"
                        )
                    rows.append((name, lose, result))
        finally:
            stop(emulators)
            stop(storage)
    print(f"{options.runs} runs submitting at once from {options.workers} workers; every run got exactly one batch.\n")
    print("| path | create replies | list calls per run | list calls | creates | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for name, lose, result in rows:
        replies = "each lost once" if lose else "all arrive"
        print(
            f"| {name} | {replies} | {result.list_calls / options.runs:.2f} | {result.list_calls:,} | "
            f"{result.creates:,} | {result.seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
