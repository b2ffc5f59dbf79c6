"""Results in bounded memory: a 100,000-request batch's output and error files staged by `shared.results.collect`
(streamed a chunk at a time into block blobs) against the usual way (each file downloaded whole with the openai SDK,
every line parsed into a list, then the copies written), and the staged results read through `page()` against the
whole staged blob read at once.

Starts Azurite (in memory) and the Azure emulators (the default config), and runs a real batch of `--requests`
requests on the emulator, its speeds raised through the control API (no validation or finalizing wait, a million
requests a second); one prompt in 100 carries the emulator's failure marker, so the error file has lines too. Each
path then runs in a fresh interpreter of its own, one at a time, so that neither inherits the other's heap: wall
time and lines per second, the process's RSS high-water (VmHWM, reset after the imports) and its growth over the RSS
before the work; and, in a separate run of each path, tracemalloc's peak (tracing slows Python down, so that run is
not timed). Each round checks that both paths staged the same four copies, byte for byte.

    .venv/bin/python bench/results.py [--requests 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.azure_openai import AzureOpenAIClient
from shared.paging import DEFAULT_PAGE_SIZE
from shared.results import KINDS, collect, page, result_of, staged_name
from shared.staging import Staging

ROOT = Path(__file__).resolve().parent.parent
RESOURCE = "aoai-devstack-eastus"
DEPLOYMENT = "gpt-4o-batch"
API_VERSION = "2024-10-21"
CONTAINER = "bench-results"
PAGE_TOP = 1000


# The batch: a real one, on the emulator -------------------------------------------------------------------------


def input_lines(requests_count: int) -> bytes:
    lines = []
    for index in range(requests_count):
        marker = " [[fail]]" if index % 100 == 99 else ""
        prompt = (
            f"Classify the sentiment of review {index}: the parcel came late but the support team was kind.{marker}"
        )
        body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": prompt}], "max_tokens": 50}
        line = {"custom_id": f"request-{index:06d}", "method": "POST", "url": "/chat/completions", "body": body}
        lines.append(json.dumps(line, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def run_batch(endpoints: dict[str, Any], requests_count: int) -> list[str]:
    """The output and error file ids of a completed batch of `requests_count` requests."""
    control = endpoints["emulator"]["control"]
    speeds = {"validationSeconds": 0, "requestsPerSecond": 1_000_000, "finalizingSeconds": 0}
    requests.patch(f"{control}/resources/{RESOURCE}/speeds", json=speeds | {"fileProcessingSeconds": 0}, timeout=10)
    account = endpoints["openai"][RESOURCE]
    client = AzureOpenAIClient(account["endpoint"], API_VERSION, api_key=account["apiKey"])
    content = input_lines(requests_count)
    uploaded = client.upload_file("bench-input.jsonl", [content], len(content))
    batch = client.create_batch(uploaded.id, "/chat/completions", "24h", {"bench": "results"})
    deadline = time.monotonic() + 600
    while batch.status != "completed":
        if batch.status in {"failed", "expired", "cancelled"} or time.monotonic() > deadline:
            raise RuntimeError(f"the bench's batch ended {batch.status}: {batch}")
        time.sleep(1)
        batch = client.get_batch(batch.id)
    return [file_id for file_id in (batch.output_file_id, batch.error_file_id) if file_id]


# The paths, each run in a child process -------------------------------------------------------------------------


@dataclass
class Setup:
    endpoint: str
    api_key: str
    connection: str
    file_ids: list[str]
    run_id: str  # where the staged copies go (collect paths) or come from (read paths)

    def openai(self) -> AzureOpenAIClient:
        return AzureOpenAIClient(self.endpoint, API_VERSION, api_key=self.api_key)

    def staging(self) -> Staging:
        from azure.storage.blob import BlobServiceClient

        return Staging(BlobServiceClient.from_connection_string(self.connection), CONTAINER)


def collect_ours(setup: Setup) -> int:
    client = setup.openai()
    collected = collect(setup.run_id, (client.file_content(f) for f in setup.file_ids), setup.staging())
    return collected.succeeded + collected.failed


def collect_usual(setup: Setup) -> int:
    """What a results endpoint usually does: the SDK's whole file as text, every line parsed into a list, the
    results built from the list, each copy written in one upload."""
    from openai import AzureOpenAI

    sdk = AzureOpenAI(azure_endpoint=setup.endpoint, api_key=setup.api_key, api_version=API_VERSION, max_retries=0)
    raws: list[str] = []
    lines: list[Any] = []
    for file_id in setup.file_ids:
        for raw in sdk.files.content(file_id).text.split("\n"):
            raw = raw.rstrip("\r")
            if raw.strip():
                raws.append(raw)
                lines.append(json.loads(raw))
    results = [result_of(line if isinstance(line, dict) else {}) for line in lines]
    encoded = [json.dumps(result, ensure_ascii=False, separators=(",", ":")) for result in results]
    failed = [index for index, result in enumerate(results) if result["status"] == "failed"]
    copies = {
        "all": "".join(line + "\n" for line in encoded),
        "failed": "".join(encoded[index] + "\n" for index in failed),
        "raw": "".join(raw + "\n" for raw in raws),
        "raw-failed": "".join(raws[index] + "\n" for index in failed),
    }
    container = setup.staging()._client()
    for kind, text in copies.items():
        container.upload_blob(
            staged_name(setup.run_id, kind), text.encode("utf-8"), overwrite=True, content_settings=_ndjson()
        )
    return len(results)


def _ndjson() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/x-ndjson")


def read_pages(setup: Setup, top: int = PAGE_TOP) -> int:
    """Every page of the staged `all` copy through `page()`, as the results API serves them."""
    staging, name, lines = setup.staging(), staged_name(setup.run_id, "all"), 0
    offset: int | None = 0
    while offset is not None:
        found = page(staging, name, offset, top)
        assert found is not None, name
        lines += len(found.lines)
        offset = found.next_offset
    return lines


def read_default_pages(setup: Setup) -> int:
    return read_pages(setup, DEFAULT_PAGE_SIZE)


def read_whole(setup: Setup) -> int:
    """The staged `all` copy downloaded at once and split into lines."""
    blob = setup.staging()._client().get_blob_client(staged_name(setup.run_id, "all"))
    data = blob.download_blob().readall()
    return sum(1 for line in data.split(b"\n") if line)


COLLECT_PATHS: dict[str, Callable[[Setup], int]] = {
    "ours: collect(), streamed": collect_ours,
    "usual: whole file, json.loads into a list": collect_usual,
}
READ_PATHS: dict[str, Callable[[Setup], int]] = {
    f"page(), top={PAGE_TOP}, every page": read_pages,
    f"page(), top={DEFAULT_PAGE_SIZE} (the API's default), every page": read_default_pages,
    "whole blob at once": read_whole,
}
PATHS = COLLECT_PATHS | READ_PATHS


@dataclass
class Measurement:
    lines: int
    seconds: float
    rss_before: int  # bytes
    rss_peak: int  # bytes: the process's high-water mark
    traced_peak: int | None  # bytes allocated by Python at the peak, when traced


def status(field: str) -> int:
    """A size from /proc/self/status, in bytes: VmRSS (now) or VmHWM (the high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str, setup: Setup, trace: bool) -> Measurement:
    """One path, in this (fresh) process."""
    import azure.storage.blob  # noqa: F401  # imports are not the work: both paths have them loaded first
    import openai  # noqa: F401

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again here, after the imports
    before = status("VmRSS")
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    lines = PATHS[path](setup)
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    # Not getrusage's ru_maxrss: Linux carries it over exec from the parent, so it starts at the bench's own RSS.
    return Measurement(lines, seconds, before, status("VmHWM"), traced)


def measure(path: str, setup: Setup, trace: bool) -> Measurement:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--setup", json.dumps(asdict(setup))]
    if trace:
        command.append("--trace")
    output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if output.returncode:
        raise RuntimeError(f"{path} failed: {output.stderr[-3000:]}")
    return Measurement(**json.loads(output.stdout.strip().splitlines()[-1]))


# The benchmark ----------------------------------------------------------------------------------------------------


def digests(staging: Staging, run_id: str) -> dict[str, str]:
    found = {}
    for kind in KINDS:
        digest = hashlib.sha256()
        for chunk in staging.chunks(staged_name(run_id, kind)):
            digest.update(chunk)
        found[kind] = digest.hexdigest()
    return found


def remove(staging: Staging, run_id: str) -> None:
    for kind in KINDS:
        staging.delete(staged_name(run_id, kind))


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:,.0f}"


def report(title: str, results: dict[str, list[Measurement]], traced: dict[str, Measurement]) -> None:
    print(f"\n{title}\n")
    print("| path | lines | seconds | lines/s | RSS high-water, MiB | RSS growth, MiB | tracemalloc peak, MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        seconds = statistics.median(r.seconds for r in runs)
        growth = statistics.median(r.rss_peak - r.rss_before for r in runs)
        peak = statistics.median(r.rss_peak for r in runs)
        trace = traced[name].traced_peak or 0
        print(
            f"| {name} | {runs[0].lines:,} | {seconds:.2f} | {runs[0].lines / seconds:,.0f} | {mib(peak)} | "
            f"{mib(growth)} | {mib(trace)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(asdict(child(options.child, Setup(**json.loads(options.setup)), options.trace))))
        return

    from bench.stack import start_azurite, start_emulators, stop

    with tempfile.TemporaryDirectory(prefix="bench-results-") as scratch:
        state = Path(scratch)
        (state / "azurite").mkdir()
        (state / "emulators").mkdir()
        storage, connection = start_azurite(state / "azurite")
        emulators, endpoints = start_emulators(
            state / "emulators", ROOT / "devstack" / "emulator" / "default-config.json"
        )
        try:
            started = time.perf_counter()
            file_ids = run_batch(endpoints, options.requests)
            account = endpoints["openai"][RESOURCE]
            files = [
                AzureOpenAIClient(account["endpoint"], API_VERSION, api_key=account["apiKey"]).get_file(file_id)
                for file_id in file_ids
            ]
            sizes = ", ".join(f"{(file.bytes or 0) / 1024 / 1024:,.1f} MiB" for file in files)
            seconds = time.perf_counter() - started
            print(f"a batch of {options.requests:,} requests on the emulator in {seconds:.0f} s: files of {sizes}")

            def setup(run_id: str) -> Setup:
                return Setup(account["endpoint"], account["apiKey"], connection, file_ids, run_id)

            staging = setup("-").staging()
            collected: dict[str, list[Measurement]] = {name: [] for name in COLLECT_PATHS}
            for round_number in range(options.rounds):
                order = list(COLLECT_PATHS) if round_number % 2 == 0 else list(reversed(COLLECT_PATHS))
                copies = {}
                for name in order:
                    run_id = f"r{round_number}-{list(COLLECT_PATHS).index(name)}"
                    collected[name].append(measure(name, setup(run_id), trace=False))
                    copies[name] = digests(staging, run_id)
                    remove(staging, run_id)
                if len({json.dumps(c, sort_keys=True) for c in copies.values()}) != 1:
                    raise RuntimeError(f"the paths staged different copies: {copies}")
                cells = ", ".join(f"{name} {runs[-1].seconds:.1f} s" for name, runs in collected.items())
                print(f"round {round_number + 1}: {cells}", flush=True)
            traced_collect = {}
            for index, name in enumerate(COLLECT_PATHS):
                traced_collect[name] = measure(name, setup(f"traced-{index}"), trace=True)
                remove(staging, f"traced-{index}")

            measure(next(iter(COLLECT_PATHS)), setup("pages"), trace=False)  # the copies the reads read
            read: dict[str, list[Measurement]] = {name: [] for name in READ_PATHS}
            for round_number in range(options.rounds):
                order = list(READ_PATHS) if round_number % 2 == 0 else list(reversed(READ_PATHS))
                for name in order:
                    read[name].append(measure(name, setup("pages"), trace=False))
            traced_read = {name: measure(name, setup("pages"), trace=True) for name in READ_PATHS}
            size = staging.size(staged_name("pages", "all")) or 0
        finally:
            stop(emulators)
            stop(storage)

    report(
        f"Staging the results of {options.requests:,} requests (median of {options.rounds} rounds, each path in a "
        "fresh interpreter)",
        collected,
        traced_collect,
    )
    report(f"Reading the staged `all` copy ({mib(size)} MiB) back", read, traced_read)


if __name__ == "__main__":
    main()
