"""Batch sets end to end, over HTTP: an input larger than one deployment's quota cut into shards that run on two
resources of a pool, failed requests tried again, a resource's refusal moving a shard, a cancel reaching every shard.

The host of this module configures both resources' enqueued-token limits (`tokenLimits`), so a set's shards are cut
to fit them and started only where the configured quota is free; the emulated deployments carry the same limits, so
a shard placed where there is no room would fail with `token_limit_exceeded`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shared.batch_set import MAX_SHARDS
from shared.tokens import request_tokens
from tests.conftest import RunningAzurite, RunningEmulator, wait_for
from tests.devstack.conftest import DataPlane
from tests.e2e.conftest import RESOURCE, App, start_host
from tests.e2e.test_inputs_results import results
from tests.host.conftest import RunningHost

JOB = "gpt-4o-batch::batch"
OTHER = "aoai-devstack-swedencentral"
OTHER_DEPLOYMENT = "gpt-4o-batch-se"
PER_SHARD = 10  # requests a shard holds at most under the configured limits
# Every prompt costs the same estimate: a failing one carries the emulator's marker where the others have "[[pass]]".
PROMPT = "Question {:03d}: name a prime number. [[pass]]"
REQUEST_TOKENS = request_tokens({"messages": [{"role": "user", "content": PROMPT.format(0)}]})
LIMIT = PER_SHARD * REQUEST_TOKENS


def prompts(count: int, failing: tuple[int, ...] = ()) -> list[dict[str, str]]:
    """`count` prompts; those in `failing` carry the emulator's marker for a request that fails with a 500."""
    made = []
    for n in range(count):
        text = PROMPT.format(n)
        if n in failing:
            text = text.replace("[[pass]]", "[[fail]]")
        made.append({"id": f"q{n:03d}", "user": text})
    estimates = {request_tokens({"messages": [{"role": "user", "content": p["user"]}]}) for p in made}
    assert len(estimates) == 1, "the shards' sizes below assume every prompt costs the same estimate"
    return made


@pytest.fixture(scope="module")
def pool_host(
    tmp_path_factory: pytest.TempPathFactory, emulator_process: RunningEmulator, azurite: RunningAzurite
) -> Iterator[RunningHost]:
    limits = {RESOURCE: {"tokenLimits": {"gpt-4o-batch": LIMIT}}, OTHER: {"tokenLimits": {OTHER_DEPLOYMENT: LIMIT}}}
    host = start_host(
        tmp_path_factory.mktemp("pool-host"), emulator_process, azurite, f"pool{os.urandom(3).hex()}", limits
    )
    yield host
    host.stop()


def batch_deployment(emulator: RunningEmulator, resource: str, name: str, limit: int) -> None:
    emulator.put_deployment(
        resource,
        name,
        model={"format": "OpenAI", "name": "gpt-4o", "version": "1"},
        sku={"name": "GlobalBatch", "capacity": 1},
        capabilities={"chatCompletion": "true"},
        enqueuedTokenLimit=limit,
    )


@pytest.fixture
def app(pool_host: RunningHost, emulator: RunningEmulator) -> App:
    """The pool host's app: gpt-4o batch deployments on both resources with the configured limits, imported, and
    the eastus job allowed to use the other resource."""
    batch_deployment(emulator, RESOURCE, "gpt-4o-batch", LIMIT)
    batch_deployment(emulator, OTHER, OTHER_DEPLOYMENT, LIMIT)
    for resource in (RESOURCE, OTHER):
        emulator.set_speeds(resource, validationSeconds=2, finalizingSeconds=2, requestsPerSecond=5)
    application = App(pool_host, emulator)
    application.import_jobs()
    patched = application.call("PATCH", f"jobs/{JOB}", json={"attributes": {"pool": [OTHER]}})
    assert patched.status_code == 200, patched.text
    return application


def start(app: App, items: list[dict[str, str]]) -> dict[str, Any]:
    built = app.call("POST", f"jobs/{JOB}/inputs", json={"prompts": items})
    assert built.status_code == 201, built.text
    return app.start(JOB, {"inputId": built.json()["id"]})


def batches(app: App, run_id: str) -> dict[str, list[dict[str, Any]]]:
    return {resource: app.batches_of(run_id, resource) for resource in (RESOURCE, OTHER)}


def test_an_input_beyond_one_quota_runs_as_shards_on_both_resources_with_failed_requests_retried(app: App) -> None:
    run = app.wait(start(app, prompts(31, failing=(17,)))["id"], timeout=180)

    assert run["status"] == "Success", run["failure"]
    shards = run["outputs"]["shards"]
    first_round = [s for s in shards if s["round"] == 0]
    assert [s["requests"] for s in first_round] == [10, 10, 10, 1]  # each within the configured quota
    assert {s["resource"] for s in first_round} == {RESOURCE, OTHER}  # both resources took shards
    # Request q017 failed with a 500 each time: tried again in two follow-up rounds (maxRequestRetries 2), each a
    # batch of its own on the resource other than the one where it had just failed.
    follow_ups = [s for s in shards if s["round"] > 0]
    assert [(s["round"], s["requests"]) for s in follow_ups] == [(1, 1), (2, 1)]
    source = next(s for s in first_round if int(s["id"].rsplit("::s", 1)[1]) == 1)  # q010..q019
    assert [s["resource"] for s in follow_ups] == [
        OTHER if source["resource"] == RESOURCE else RESOURCE,
        source["resource"],
    ]
    assert (run["shardCount"], run["round"]) == (6, 2)
    listed = app.call("GET", "runs", params={"parentRun": run["id"]}).json()["value"]
    assert sorted(r["id"] for r in listed) == sorted(s["id"] for s in shards)
    assert {r["parentRun"] for r in listed} == {run["id"]}
    top_level = app.call("GET", "runs", params={"jobId": JOB}).json()["value"]
    assert [r["id"] for r in top_level] == [run["id"]]

    # One batch per shard attempt, each tagged with its shard; none refused for quota.
    made = batches(app, run["id"])
    every = made[RESOURCE] + made[OTHER]
    assert sorted(b["metadata"]["runId"] for b in every) == sorted(s["id"] for s in shards)
    assert {b["id"] for b in every} == {s["runId"] for s in shards}
    assert all(b["status"] == "completed" for b in every)
    for resource, listed in made.items():
        assert {s["id"] for s in shards if s["resource"] == resource} == {b["metadata"]["runId"] for b in listed}

    # Each shard uploaded its input where it ran, and deleted it once its batch had ended (files count against a
    # resource's limit); the batch still names the file it read.
    for resource in (RESOURCE, OTHER):
        target = app.emulator.resource(resource)
        files = DataPlane(target["endpoint"], target["apiKey"]).request("GET", "files").json()["data"]
        assert not [f for f in files if str(f["filename"]).startswith(run["id"].replace(":", "-"))], resource
    assert all(b["input_file_id"] for b in every)

    # The results: every request once, its last outcome and how many times it was sent.
    every_result, _ = results(app, run["id"], top="1000")
    assert sorted(r["custom_id"] for r in every_result) == [f"q{n:03d}" for n in range(31)]
    failed = [r for r in every_result if r["status"] == "failed"]
    assert [(r["custom_id"], r["attempts"], r["error"]["code"]) for r in failed] == [("q017", 3, "server_error")]
    assert {r["attempts"] for r in every_result if r["status"] == "succeeded"} == {1}
    outputs = run["outputs"]
    assert (outputs["request_counts_total"], outputs["request_counts_completed"]) == (31, 30)
    assert outputs["request_counts_failed"] == 1
    assert run["progress"] == {"total": 31, "completed": 30, "failed": 1, "percent": 100.0}
    assert outputs["prompt_tokens"] == sum((r["usage"] or {}).get("prompt_tokens", 0) for r in every_result) > 0


@pytest.mark.parametrize("quota_check", ["create", "validation"])
def test_a_resource_that_refuses_for_quota_sends_the_shard_to_the_other(
    app: App, emulator: RunningEmulator, quota_check: str
) -> None:
    # The configured limit says eastus has room, but its deployment's real quota is nearly used up elsewhere: Azure
    # refuses the batch (at create, or at validation with a failed batch), and the shard moves to the
    # pool's other resource, its input uploaded there.
    batch_deployment(emulator, RESOURCE, "gpt-4o-batch", REQUEST_TOKENS // 2)
    response = requests.patch(f"{emulator.control}/resources/{RESOURCE}", json={"quotaCheck": quota_check}, timeout=10)
    response.raise_for_status()

    run = app.wait(start(app, prompts(3))["id"], timeout=120)

    assert run["status"] == "Success", run["failure"]
    [shard] = run["outputs"]["shards"]
    assert shard["resource"] == OTHER
    made = batches(app, run["id"])
    [ran] = made[OTHER]
    assert (ran["status"], ran["id"], ran["metadata"]["runId"]) == ("completed", shard["runId"], shard["id"])
    assert ran["input_file_id"] == shard["inputFileId"]
    creates = emulator.requests_log(service="openai", resource=RESOURCE, route="batches.create")
    if quota_check == "create":
        assert made[RESOURCE] == []
        assert [e["status"] for e in creates] == [400]
    else:
        [refused] = made[RESOURCE]
        assert (refused["status"], refused["errors"]["data"][0]["code"]) == ("failed", "token_limit_exceeded")
        assert refused["input_file_id"] != ran["input_file_id"]  # each resource's own upload
        assert [e["status"] for e in creates] == [200]


def test_a_cancel_reaches_every_running_shard(app: App, emulator: RunningEmulator) -> None:
    for resource in (RESOURCE, OTHER):
        emulator.set_speeds(resource, requestsPerSecond=0.05)
    started = start(app, prompts(40))

    def both_running() -> bool:
        made = batches(app, started["id"])
        return all(any(b["status"] == "in_progress" for b in listed) for listed in made.values())

    wait_for(both_running, timeout=60, what="a shard's batch in progress on each resource")
    assert app.call("POST", f"runs/{started['id']}/cancel").status_code == 202
    run = app.wait(started["id"], timeout=120)

    assert run["status"] == "Cancelled"
    made = batches(app, run["id"])
    assert sorted(b["status"] for listed in made.values() for b in listed) == ["cancelled", "cancelled"]
    statuses = sorted(s["status"] for s in run["outputs"]["shards"])
    assert statuses == ["Cancelled"] * 4  # two ran and were cancelled; two never started
    every_result, _ = results(app, run["id"], top="1000")
    assert {r["error"]["code"] for r in every_result if r["status"] == "failed"} == {"batch_cancelled"}


def test_an_input_needing_more_than_1000_shards_is_refused_at_start_or_fails_the_set_once_cut(
    app: App, emulator: RunningEmulator
) -> None:
    """At the start, when its estimated tokens alone need more shards than a set takes; otherwise when cutting it
    finds out (here each request holds more than half a shard's budget, so each is a shard of its own)."""

    def runs() -> int:
        return len(app.call("GET", "runs", params={"jobId": JOB, "top": "1000"}).json()["value"])

    many = [
        {"id": f"q{n:05d}", "user": PROMPT.replace("{:03d}", f"{n:05d}")} for n in range(PER_SHARD * MAX_SHARDS + 1)
    ]
    tokens = sum(request_tokens({"messages": [{"role": "user", "content": p["user"]}]}) for p in many)
    at_least = -(-tokens // LIMIT)
    assert at_least > MAX_SHARDS
    needs_more = app.call("POST", f"jobs/{JOB}/inputs", json={"prompts": many})
    assert needs_more.status_code == 201, needs_more.text
    before = runs()

    refused = app.call("POST", f"jobs/{JOB}/runs", json={"inputId": needs_more.json()["id"]})

    assert refused.status_code == 400, refused.text
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    [problem] = refused.json()["errors"]
    assert problem["field"] == "inputId"
    assert f"at least {at_least:,} shards at the token limit of {LIMIT:,}" in problem["message"]
    assert runs() == before

    text = "Name a prime number. "
    while request_tokens({"messages": [{"role": "user", "content": text}]}) <= LIMIT // 2:
        text += "And another. "
    big = [{"id": f"b{n:04d}", "user": f"{n:04d} {text}"} for n in range(MAX_SHARDS + 1)]
    started = start(app, big)  # estimated at fewer than 1,000 budgets' worth: started
    run = app.wait(started["id"], timeout=120)

    assert run["status"] == "Failed"
    assert run["failure"]["code"] == "too_many_shards"
    assert "at least 1,001 shards" in run["failure"]["message"]
    assert not any(app.batches_of(run["id"], resource) for resource in (RESOURCE, OTHER))
    assert emulator.requests_log(service="openai", route="batches.create") == []
