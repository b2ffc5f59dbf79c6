"""Sets at scale: a 1,000,000-request job on the emulator, time-scaled, its shards placed over a pool of three Azure
OpenAI resources against one resource: emulated wall time, the enqueued-token quota in use over time, status calls.

The job is one input of all the requests (up to `shared.inputs.MAX_INPUT_REQUESTS`), started as one run: a batch set
that cuts it into shards. `--inputs 10` splits it into ten inputs started as ten runs at once, as a user had to when
an input held one file's worth (the earlier measurement). For each layout a fresh stack: Azurite (on disk), the
emulators (three resources with a gpt-4o GlobalBatch deployment each, the same enqueued-token limit on all, the host's
`tokenLimits` equal to it), a user's storage account (the user-storage Azurite, on disk) and the local Functions host
with this app. The job is `gpt-4o-batch::batch` on the first resource; with the pool, its `pool` attribute names the
other two. The requests are written to JSONL files as they are generated; each file is streamed to the user's storage
and the input posted as its `blobUrl` (1,000,000 requests are past the 100 MB an input's body may carry), which the
app reads with its managed identity: neither the bench nor the API ever holds the whole job in memory.

Emulated wall time runs from the first start request to the last run's end, on the emulators' clock. Enqueued
tokens come from the emulator's own batches (each holds its tokens from create to its end), status calls from its
request log, activity counts from the host's log.

    nice -n 10 .venv/bin/python bench/sets.py [--requests 1000000] [--inputs 1] [--time-scale 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import UserStorage, start_azurite, start_emulators, start_host, start_user_storage, stop
from devstack.clock import VirtualClock
from shared.inputs import MAX_INPUT_REQUESTS

RESOURCES = ("aoai-bench-1", "aoai-bench-2", "aoai-bench-3")
DEPLOYMENT = "gpt-4o-batch"
JOB = f"{DEPLOYMENT}::batch"
FUNCTION_KEY = "bench-function-key"
CONTAINER = "inputs"  # the user's container holding the job's JSONL
# The emulated service, per batch (the emulator runs every batch at its own pace: on a deployment, only the
# enqueued-token quota limits how many run at once).
SPEEDS = {
    "validationSeconds": 600.0,  # 10 minutes
    "requestsPerSecond": 2000 / 60,  # 2,000 requests an emulated minute: 100,000 in 50 minutes
    "finalizingSeconds": 300.0,  # 5 minutes
    "fileProcessingSeconds": 60.0,
    "cancellingSeconds": 60.0,
}
# Four of the inputs' batches fit at once (the emulator counts 3.1M tokens for 100,000 of these requests): one resource
# holds 40% of the job, three hold all of it.
TOKEN_LIMIT = 13_000_000
LAYOUTS = {"pool of three": RESOURCES, "one resource": RESOURCES[:1]}
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
SLICE_MINUTES = 15
BARS = " ▁▂▃▄▅▆▇█"
EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \((\w+), Id=[^,]*, Duration=(\d+)ms\) (activity|orchestrator)")


# The job: short chat requests, written a line at a time -------------------------------------------------------------


def write_inputs(directory: Path, requests_count: int, inputs: int) -> list[Path]:
    """The job's requests in `inputs` JSONL files of (nearly) equal lines, written as they are generated."""
    per_input = math.ceil(requests_count / inputs)
    paths: list[Path] = []
    for first in range(0, requests_count, per_input):
        paths.append(directory / f"input-{len(paths):03d}.jsonl")
        with paths[-1].open("w") as output:
            for index in range(first, min(first + per_input, requests_count)):
                output.write(request_line(index))
    return paths


def request_line(index: int) -> str:
    prompt = f"Classify the sentiment of review {index:07d}: the parcel came late but the support team was kind."
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 50}
    line = {"custom_id": f"request-{index:07d}", "method": "POST", "url": "/chat/completions", "body": body}
    return json.dumps(line, separators=(",", ":")) + "\n"


# The stack ----------------------------------------------------------------------------------------------------------


def emulator_config() -> dict[str, Any]:
    deployment = {
        "name": DEPLOYMENT,
        "model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
        "sku": {"name": "GlobalBatch", "capacity": 250},
        "capabilities": {"chatCompletion": "true"},
        "enqueuedTokenLimit": TOKEN_LIMIT,
    }
    resources = [{"name": name, "location": "eastus", "deployments": [deployment]} for name in RESOURCES]
    return {"speeds": SPEEDS, "resources": resources, "faults": []}


def host_settings(endpoints: dict[str, Any], connection: str, user_storage: UserStorage) -> dict[str, str]:
    arm = endpoints["arm"]
    resources = [
        {
            "name": name,
            "endpoint": endpoints["openai"][name]["endpoint"],
            "subscriptionId": arm["subscriptionId"],
            "resourceGroup": arm["resourceGroup"],
            "tenantId": endpoints["tenantId"],
            "tokenLimits": {DEPLOYMENT: TOKEN_LIMIT},
        }
        for name in RESOURCES
    ]
    return {
        "AzureWebJobsStorage": connection,
        "DURABLE_TASK_HUB": "benchsets",
        "AZURE_OPENAI_RESOURCES": json.dumps(resources),
        "ARM_ENDPOINT": arm["endpoint"],
        "CATALOG_TABLE": "benchsets",
        "KEY_VAULT_URL": endpoints["keyVault"]["url"],
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "DEPLOYMENT_SYNC_SCHEDULE": "0 0 0 1 1 *",  # once a year: no import while the bench runs
        # The user's storage the app may read `blobUrl` inputs from (its identity and the emulators' CA come from
        # the endpoints file, as `python -m devstack up` gives them).
        "INPUT_BLOB_ENDPOINTS": user_storage.blob_endpoint,
    }


class App:
    """The app's HTTP API and the Durable Functions status API, as a user and an operator call them."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.base = f"{info['baseUrl']}/api"
        self.webhook = str(info["durableTaskWebhook"])
        self.system_key = str(info["systemKey"])
        self.session = requests.Session()
        self.session.headers["x-functions-key"] = FUNCTION_KEY

    def call(self, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base}/{path}", timeout=900, **kwargs)
        if response.status_code != expected:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json()

    def instance(self, instance_id: str) -> dict[str, Any]:
        response = self.session.get(
            f"{self.webhook}/instances/{instance_id}", params={"code": self.system_key}, timeout=60
        )
        response.raise_for_status()
        return dict(response.json())


# One layout ---------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    layout: str
    places: tuple[str, ...]
    upload_seconds: float  # real time to put the inputs' JSONL in the user's storage (not part of the run)
    inputs_seconds: float  # real time to build the inputs from there (not part of the run)
    real_seconds: float  # real time from the first start request to the last run's end
    started_at: float  # emulated
    ended_at: list[float]  # emulated, each run's end
    statuses: list[str]
    shards: int
    completed: int
    failed: int
    batches: list[dict[str, Any]]  # the emulator's, every resource's, with `resource`
    log: Counter[tuple[str, str, int | None]]  # (route, resource, status) → requests
    activities: Counter[str] = field(default_factory=Counter)
    activity_ms: Counter[str] = field(default_factory=Counter)
    episodes: int = 0
    estimated_tokens: int = 0

    @property
    def wall(self) -> float:
        return max(self.ended_at) - self.started_at

    @property
    def enqueued_tokens(self) -> int:
        return sum(int(batch.get("enqueuedTokens") or 0) for batch in self.batches)

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return values | {"log": [[*key, n] for key, n in self.log.items()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        values = {"upload_seconds": 0.0} | data  # outcomes kept before inputs came as blobs
        values |= {"places": tuple(data["places"]), "log": Counter({tuple(e[:3]): e[3] for e in data["log"]})}
        return cls(**values | {"activities": Counter(data["activities"]), "activity_ms": Counter(data["activity_ms"])})


def run_layout(layout: str, places: tuple[str, ...], inputs: list[Path], time_scale: float, scratch: Path) -> Outcome:
    """The job on a fresh stack, its shards allowed on `places` (the job's own resource first)."""
    state = scratch / layout.replace(" ", "-")
    for part in ("azurite", "azurite-data", "emulators", "user-storage-data", "host"):
        (state / part).mkdir(parents=True)
    config = state / "emulator-config.json"
    config.write_text(json.dumps(emulator_config()))
    storage, connection = start_azurite(state / "azurite", state / "azurite-data")
    processes = [storage]
    try:
        emulators, endpoints = start_emulators(state / "emulators", config, time_scale)
        processes.append(emulators)
        user_blobs, user_storage = start_user_storage(state / "emulators", endpoints, state / "user-storage-data")
        processes.append(user_blobs)
        settings = host_settings(endpoints, connection, user_storage)
        host, info = start_host(state / "host", settings, state / "emulators" / "endpoints.json", FUNCTION_KEY)
        processes.append(host)
        published = endpoints["emulator"]["clock"]
        clock = VirtualClock(float(published["DEVSTACK_EPOCH"]), float(published["DEVSTACK_TIME_SCALE"]))
        control = endpoints["emulator"]["control"]
        app = App(info)
        app.call("POST", "jobs/import")
        home = {"resource": places[0]}
        if len(places) > 1:
            app.call("PATCH", f"jobs/{JOB}", params=home, json={"attributes": {"pool": list(places[1:])}})

        began = time.perf_counter()
        blob_urls = put_in_user_storage(user_storage, inputs)
        upload_seconds = time.perf_counter() - began
        began = time.perf_counter()
        input_ids = [
            build_input(app, url, home, f"{layout}: input {n}/{len(inputs)}") for n, url in enumerate(blob_urls, 1)
        ]
        inputs_seconds = time.perf_counter() - began
        requests.delete(f"{control}/requests", timeout=60).raise_for_status()  # the inputs' uploads are not the runs'

        began, started_at = time.perf_counter(), clock.now()
        run_ids = [
            app.call("POST", f"jobs/{JOB}/runs", 202, params=home, json={"inputId": input_id})["id"]
            for input_id in input_ids
        ]
        finals = wait_for(app, run_ids, lambda: f"{layout}: at {(clock.now() - started_at) / 60:,.0f} emulated min")
        real_seconds = time.perf_counter() - began

        batches = []
        for name in RESOURCES:
            listed = requests.get(f"{control}/resources/{name}/batches", timeout=120).json()["value"]
            batches += [batch | {"resource": name} for batch in listed]
        logged = requests.get(f"{control}/requests", params={"service": "openai"}, timeout=300).json()["value"]
    finally:
        for process in reversed(processes):
            stop(process)
        for data in ("azurite-data", "user-storage-data"):  # some GB of inputs and results: nothing reads them again
            shutil.rmtree(state / data)

    outputs = [status["output"] or {} for status in finals]
    outcome = Outcome(
        layout=layout,
        places=places,
        upload_seconds=upload_seconds,
        inputs_seconds=inputs_seconds,
        real_seconds=real_seconds,
        started_at=started_at,
        ended_at=[_emulated(status["lastUpdatedTime"]) for status in finals],
        statuses=[str(output.get("status")) for output in outputs],
        shards=sum(int(output.get("shardCount") or 0) for output in outputs),
        completed=sum(int((output.get("outputs") or {}).get("request_counts_completed") or 0) for output in outputs),
        failed=sum(int((output.get("outputs") or {}).get("request_counts_failed") or 0) for output in outputs),
        batches=batches,
        log=Counter((entry["route"], entry["resource"], entry["status"]) for entry in logged),
        estimated_tokens=sum(int(output.get("estimatedTokens") or 0) for output in outputs),
    )
    for match in EXECUTED.finditer((state / "host" / "functions.log").read_text()):
        if match[4] == "activity":
            outcome.activities[match[1]] += 1
            outcome.activity_ms[match[1]] += int(match[3])
        else:
            outcome.episodes += 1
    return outcome


def put_in_user_storage(user_storage: UserStorage, paths: list[Path]) -> list[str]:
    """The JSONL files as blobs of the user's storage, each streamed from disk in blocks, as a user uploads them
    (with the account key); their URLs."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        user_storage.connection_string, connection_verify=user_storage.ca_bundle
    )
    container = service.create_container(CONTAINER)
    for path in paths:
        with path.open("rb") as data:
            container.upload_blob(path.name, data, length=path.stat().st_size, max_concurrency=2)
    return [user_storage.blob_url(CONTAINER, path.name) for path in paths]


def build_input(app: App, blob_url: str, home: dict[str, str], what: str) -> str:
    """An input built from a blob the app reads with its identity; its id."""
    began = time.perf_counter()
    built = app.call("POST", f"jobs/{JOB}/inputs", 201, params=home, json={"blobUrl": blob_url})
    print(
        f"  {what} built in {time.perf_counter() - began:,.0f} s: {built['requests']:,} requests, "
        f"{built['bytes'] / 1e6:,.0f} MB, {built['status']}",
        flush=True,
    )
    return str(built["id"])


def wait_for(app: App, run_ids: list[str], when: Callable[[], str]) -> list[dict[str, Any]]:
    """Each run's Durable status once it has ended, in the order of `run_ids`."""
    finals: dict[str, dict[str, Any]] = {}
    while len(finals) < len(run_ids):
        time.sleep(3.0)  # the end times come from the task hub, not from when this loop sees them
        for run_id in run_ids:
            if run_id not in finals and (status := app.instance(run_id))["runtimeStatus"] in TERMINAL:
                finals[run_id] = status
                print(f"  {when()}: run {len(finals)}/{len(run_ids)} ended", flush=True)
    return [finals[run_id] for run_id in run_ids]


def _emulated(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# What the emulator saw ----------------------------------------------------------------------------------------------


def ended_at(batch: dict[str, Any]) -> float | None:
    ends = [batch.get(name) for name in ("completed_at", "failed_at", "cancelled_at", "expired_at")]
    return min((float(end) for end in ends if end), default=None)


def held(outcome: Outcome, resource: str, *, estimated: bool = False) -> list[tuple[float, int]]:
    """The resource's enqueued tokens as a step function: (emulated seconds since the start, tokens from then on); by
    the emulator's count, or (`estimated`) each batch holding the app's estimate for the job divided evenly."""
    changes: Counter[float] = Counter()
    for batch in outcome.batches:
        if batch["resource"] != resource or not batch.get("enqueuedTokens"):
            continue
        tokens = _batch_estimate(outcome) if estimated else int(batch["enqueuedTokens"])
        end = ended_at(batch)
        changes[float(batch["created_at"]) - outcome.started_at] += tokens
        if end is not None:
            changes[end - outcome.started_at] -= tokens
    steps, level = [(0.0, 0)], 0
    for moment in sorted(changes):
        level += changes[moment]
        steps.append((moment, level))
    return steps


def average_between(steps: list[tuple[float, int]], start: float, end: float) -> float:
    """The time-weighted mean of a step function over [start, end)."""
    total = 0.0
    for (moment, level), (following, _) in zip(steps, [*steps[1:], (math.inf, 0)], strict=True):
        overlap = min(following, end) - max(moment, start)
        if overlap > 0:
            total += level * overlap
    return total / (end - start) if end > start else 0.0


def level_at(steps: list[tuple[float, int]], moment: float) -> int:
    return next((level for at, level in reversed(steps) if at <= moment), 0)


def unused_room(outcome: Outcome, *, estimated: bool = False) -> float:
    """Emulated seconds, from the first batch created to the last, during which a waiting shard's batch would have
    fit within the limit on some resource of the run's places (by the emulator's count, or by the app's estimate),
    but none was created."""
    if estimated:
        tokens = _batch_estimate(outcome)
    else:
        tokens = min(int(b["enqueuedTokens"]) for b in outcome.batches if b.get("enqueuedTokens"))
    first, last = min(_created(outcome)) - outcome.started_at, max(_created(outcome)) - outcome.started_at
    steps = [held(outcome, resource, estimated=estimated) for resource in outcome.places]
    moments = sorted({first, last} | {at for place in steps for at, _ in place if first < at < last})
    return sum(
        following - moment
        for moment, following in itertools.pairwise(moments)
        if any(level_at(place, moment) + tokens <= TOKEN_LIMIT for place in steps)
    )


def _batch_estimate(outcome: Outcome) -> int:
    """The app's estimate for the job spread evenly over its batches (its shards are of equal size here)."""
    return outcome.estimated_tokens // max(1, len(outcome.batches))


def count(outcome: Outcome, route: str, status: int | None = None) -> int:
    return sum(n for (r, _, s), n in outcome.log.items() if r == route and (status is None or s == status))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:,.0f} min"


def report(outcomes: list[Outcome], requests_count: int, inputs: int, time_scale: float) -> None:
    started = "one input started as one run" if inputs == 1 else f"{inputs} inputs started as {inputs} runs at once"
    print(
        f"\n{requests_count:,} requests as {started}; emulated time {time_scale:g} times real time; "
        f"enqueued-token limit {TOKEN_LIMIT / 1e6:,.0f}M per resource\n"
    )
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, value: Callable[[Outcome], str]) -> None:
        rows.append((name, [value(o) for o in outcomes]))

    row("resources", lambda o: ", ".join(o.places))
    row("runs ended Success", lambda o: f"{o.statuses.count('Success')} of {len(o.statuses)}")
    row("requests completed / failed", lambda o: f"{o.completed:,} / {o.failed:,}")
    row("**emulated wall time**, start → last Success", lambda o: f"**{minutes(o.wall)}**")
    row("  a run's time, median", lambda o: minutes(statistics.median(e - o.started_at for e in o.ended_at)))
    row("  start → first batch created", lambda o: minutes(min(_created(o)) - o.started_at))
    row("  start → last batch created", lambda o: minutes(max(_created(o)) - o.started_at))
    row("  first batch created → last batch ended", lambda o: minutes(max(_ends(o)) - min(_created(o))))
    row("  last batch ended → last Success", lambda o: minutes(max(o.ended_at) - max(_ends(o))))
    row("quota free for a waiting shard, unused", lambda o: minutes(unused_room(o)))
    row("  by the app's estimate", lambda o: minutes(unused_room(o, estimated=True)))
    row("shards / batches created", lambda o: f"{o.shards} / {len(o.batches)}")
    row("creates refused (token_limit_exceeded)", lambda o: f"{count(o, 'batches.create', 400)}")
    row("input uploads (files.upload)", lambda o: f"{count(o, 'files.upload')}")
    row("input files deleted (files.delete)", lambda o: f"{count(o, 'files.delete')}")
    row("**status calls** (batches.get)", lambda o: f"**{count(o, 'batches.get'):,}**")
    row("  per batch", lambda o: f"{count(o, 'batches.get') / max(1, len(o.batches)):.1f}")
    row("batch list calls (batches.list)", lambda o: f"{count(o, 'batches.list')}")
    row(
        "tokens: the app's estimate / the emulator's count",
        lambda o: f"{_m(o.estimated_tokens)} / {_m(o.enqueued_tokens)}",
    )
    for resource in RESOURCES:
        row(f"enqueued tokens on {resource}: peak", partial(_peak, resource=resource))
        row("  mean over the wall time", partial(_mean, resource=resource))
    row("app activities", lambda o: f"{sum(o.activities.values()):,}")
    names = sorted({name for o in outcomes for name in o.activities}, key=lambda n: (-outcomes[0].activities[n], n))
    for name in names:
        row(f"  {name} (real seconds, summed)", partial(_activity, name=name))
    row("orchestrator episodes", lambda o: f"{o.episodes:,}")
    row("real time of the runs", lambda o: f"{o.real_seconds:,.0f} s")
    row("real time to put the JSONL in user storage, before the runs", lambda o: f"{o.upload_seconds:,.0f} s")
    row("real time to build the inputs from it (POST …/inputs)", lambda o: f"{o.inputs_seconds:,.0f} s")
    print("| | " + " | ".join(o.layout for o in outcomes) + " |")
    print("|---|" + "---:|" * len(outcomes))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nBatches, emulated minutes from the start: created → ended (on resource n)\n")
    for outcome in outcomes:
        spans = sorted((float(b["created_at"]), ended_at(b) or math.nan, b["resource"]) for b in outcome.batches)
        cells = [
            f"{(c - outcome.started_at) / 60:.0f} → {(e - outcome.started_at) / 60:.0f} ({r[-1]})" for c, e, r in spans
        ]
        print(f"- {outcome.layout}: {', '.join(cells)}")
    print(f"\nEnqueued tokens over emulated time, share of the limit, a column every {SLICE_MINUTES} minutes\n")
    print("```")
    for line in chart(outcomes):
        print(line)
    print("```")


def chart(outcomes: list[Outcome]) -> list[str]:
    """A row per layout and resource, a character per slice of emulated time: its mean share of the limit in eighths
    (· none, █ all of it), blank once the layout has ended."""
    width = SLICE_MINUTES * 60
    slices = math.ceil(max(o.wall for o in outcomes) / width)
    lines = []
    for outcome in outcomes:
        lines.append(outcome.layout)
        for resource in RESOURCES:
            steps = held(outcome, resource)
            cells = []
            for n in range(slices):
                start, end = n * width, min((n + 1) * width, outcome.wall)
                share = average_between(steps, start, end) / TOKEN_LIMIT if end > start else None
                cells.append(" " if share is None else "·" if not share else BARS[max(1, round(share * 8))])
            lines.append(f"  {resource:14} |{''.join(cells)}|")
    hour = 3600 // width
    lines.append(" " * 18 + "".join(f"{f'{n // hour}h':<{hour}}" for n in range(0, slices, hour)))
    return lines


def _created(outcome: Outcome) -> list[float]:
    return [float(b["created_at"]) for b in outcome.batches]


def _ends(outcome: Outcome) -> list[float]:
    return [end for b in outcome.batches if (end := ended_at(b)) is not None]


def _peak(outcome: Outcome, resource: str) -> str:
    return _of_limit(max(level for _, level in held(outcome, resource)))


def _mean(outcome: Outcome, resource: str) -> str:
    return _of_limit(average_between(held(outcome, resource), 0, outcome.wall))


def _activity(outcome: Outcome, name: str) -> str:
    return f"{outcome.activities[name]:,} ({outcome.activity_ms[name] / 1000:,.0f})"


def _m(tokens: float) -> str:
    return f"{tokens / 1e6:,.1f}M"


def _of_limit(tokens: float) -> str:
    return f"{_m(tokens)} ({tokens / TOKEN_LIMIT:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--inputs", type=int, default=1, help="inputs the job is split into, each started as a run")
    parser.add_argument("--time-scale", type=float, default=20.0, help="emulated seconds per real second")
    parser.add_argument("--layout", choices=list(LAYOUTS), action="append", help="only these layouts")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' logs and outcomes.json")
    parser.add_argument("--report", type=Path, help="print the tables of a kept outcomes.json again, run nothing")
    options = parser.parse_args()
    if not 0 < options.inputs <= options.requests or math.ceil(options.requests / options.inputs) > MAX_INPUT_REQUESTS:
        parser.error(f"--inputs must be 1 to --requests, each input at most {MAX_INPUT_REQUESTS:,} requests")
    if options.report:
        saved = json.loads(options.report.read_text())
        outcomes = [Outcome.from_json(o) for o in saved.pop("outcomes")]
        report(outcomes, **saved)
        return
    outcomes = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-sets-"))
    try:
        (scratch / "job").mkdir()
        inputs = write_inputs(scratch / "job", options.requests, options.inputs)
        for layout in options.layout or list(LAYOUTS):
            print(f"{layout}: {len(inputs)} input{'s' if len(inputs) > 1 else ''}", flush=True)
            outcomes.append(run_layout(layout, LAYOUTS[layout], inputs, options.time_scale, scratch))
    finally:
        if options.keep:
            shutil.rmtree(scratch / "job")  # the requests: regenerated the same at every run
            saved = {"requests_count": options.requests, "inputs": len(inputs), "time_scale": options.time_scale}
            (scratch / "outcomes.json").write_text(json.dumps(saved | {"outcomes": [o.to_json() for o in outcomes]}))
            print(f"data, logs and outcomes.json kept in {scratch}", flush=True)
        else:
            shutil.rmtree(scratch)
    report(outcomes, options.requests, len(inputs), options.time_scale)


if __name__ == "__main__":
    main()
