"""The batch set's activities on Azurite: cutting an input into shards, a follow-up round of the transiently failed
requests, and merging the shards' results with each request's last outcome and attempts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import services
from shared.inputs import MAX_REQUESTS
from shared.results import staged_name
from shared.shards import TooManyShards, is_transient, merge_results, plan_retries, plan_shards, shard_input_name
from shared.tokens import request_tokens
from tests.conftest import RunningEmulator
from tests.devstack.conftest import DataPlane

pytestmark = pytest.mark.usefixtures("app_settings")

RUN = "gpt-4o-batch::batch::0123456789abcdef0123456789abcdef"


def line(custom_id: str, text: str = "hello") -> dict[str, Any]:
    body = {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/chat/completions", "body": body}


def stage(name: str, lines: list[dict[str, Any]]) -> None:
    services.staging().write(name, [(json.dumps(x, separators=(",", ":")) + "\n").encode() for x in lines])


def staged(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in b"".join(services.staging().chunks(name)).splitlines() if x.strip()]


def result(custom_id: str, status_code: int, code: str | None = None, tokens: int = 5) -> dict[str, Any]:
    """A line of Azure's output or error file."""
    if status_code == 200:
        body = {
            "choices": [{"message": {"content": f"answer {custom_id}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1},
        }
        return {"custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}
    if code in ("batch_expired", "batch_cancelled"):
        return {"custom_id": custom_id, "response": None, "error": {"code": code, "message": "not run"}}
    return {"custom_id": custom_id, "response": {"status_code": status_code, "body": {"error": {"code": code}}}}


def stage_results(shard_id: str, lines: list[dict[str, Any]]) -> None:
    """A shard's staged results, as its run's collect step leaves them."""
    from shared.results import result_of

    stage(staged_name(shard_id, "raw"), lines)
    stage(staged_name(shard_id, "failed"), [r for r in (result_of(x) for x in lines) if r["status"] == "failed"])


def test_an_input_is_cut_into_shards_within_the_token_budget_in_order() -> None:
    requests = [line(f"r{i}", "word " * (i % 7 + 1)) for i in range(50)]
    stage("inputs/x.jsonl", requests)
    budget = 60

    planned = plan_shards(RUN, "inputs/x.jsonl", budget, services.staging())

    assert [p["index"] for p in planned] == list(range(len(planned)))
    assert len(planned) > 1
    cut = [staged(p["staged_input"]) for p in planned]
    assert [x["custom_id"] for shard in cut for x in shard] == [x["custom_id"] for x in requests]
    for shard, plan in zip(cut, planned, strict=True):
        tokens = sum(request_tokens(x["body"]) for x in shard)
        assert tokens == plan["estimated_tokens"] <= budget
        assert len(shard) == plan["requests"]
    assert planned[0]["staged_input"] == shard_input_name(RUN, 0)


@pytest.mark.parametrize("max_shards", [4, 5])
def test_an_input_needing_more_shards_than_a_set_takes_is_refused_as_soon_as_that_is_known(max_shards: int) -> None:
    stage("inputs/many.jsonl", [line(f"r{i}", "word " * 10) for i in range(10)])
    budget = 2 * request_tokens(line("r0", "word " * 10)["body"])  # two requests a shard: five shards

    run = f"gpt-4o-batch::batch::{max_shards:032x}"

    if max_shards == 5:  # exactly the limit: cut
        assert len(plan_shards(run, "inputs/many.jsonl", budget, services.staging(), max_shards=max_shards)) == 5
        return
    with pytest.raises(TooManyShards) as refused:
        plan_shards(run, "inputs/many.jsonl", budget, services.staging(), max_shards=max_shards)
    assert refused.value.at_least == 5
    assert services.staging().size(shard_input_name(run, 3)) is not None
    assert services.staging().size(shard_input_name(run, 4)) is None  # the one over the limit is never written


def test_without_a_budget_one_shard_takes_up_to_azures_request_limit() -> None:
    stage("inputs/y.jsonl", [line(f"r{i}") for i in range(10)])

    planned = plan_shards(RUN, "inputs/y.jsonl", None, services.staging())

    assert [(p["requests"], p["round"]) for p in planned] == [(10, 0)]
    assert MAX_REQUESTS == 100_000


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (result("a", 429, "429"), True),
        (result("a", 500, "server_error"), True),
        (result("a", 503, "ServiceUnavailable"), True),
        (result("a", 408, "request_timeout"), True),
        (result("a", 0, "batch_expired"), True),
        (result("a", 0, "batch_cancelled"), True),
        (result("a", 400, "content_filter"), False),
        (result("a", 400, "invalid_request"), False),
        (result("a", 200), False),
    ],
)
def test_which_failures_are_worth_another_try(failure: dict[str, Any], transient: bool) -> None:
    from shared.results import result_of

    assert is_transient(result_of(failure)) is transient


def test_a_follow_up_takes_the_transient_failures_of_each_shard_as_they_were_sent() -> None:
    stage(shard_input_name(RUN, 0), [line("a", "A"), line("b", "B"), line("c", "C"), line("d", "D")])
    stage_results(
        f"{RUN}::s0",
        [
            result("a", 200),
            result("b", 500, "server_error"),
            result("c", 400, "content_filter"),
            result("d", 0, "batch_expired"),
        ],
    )
    stage(shard_input_name(RUN, 1), [line("e")])
    stage_results(f"{RUN}::s1", [result("e", 200)])
    sources = [{"index": i, "staged_input": shard_input_name(RUN, i), "id": f"{RUN}::s{i}"} for i in (0, 1)]

    planned = plan_retries(RUN, 0, sources, 2, services.staging())

    assert [(p["index"], p["round"], p["source"], p["requests"]) for p in planned] == [(2, 1, 0, 2)]
    assert staged(planned[0]["staged_input"]) == [line("b", "B"), line("d", "D")]


def test_merged_results_keep_each_requests_last_outcome_and_count_every_attempts_usage() -> None:
    stage_results(
        f"{RUN}::s0", [result("a", 200, tokens=5), result("b", 500, "server_error"), result("c", 400, "content_filter")]
    )
    stage_results(f"{RUN}::s1", [result("d", 200, tokens=7)])
    stage_results(f"{RUN}::s2", [result("b", 200, tokens=11)])  # the follow-up of s0's transient failure
    shards = [
        {"id": f"{RUN}::s0", "round": 0, "superseded": True},
        {"id": f"{RUN}::s1", "round": 0, "superseded": False},
        {"id": f"{RUN}::s2", "round": 1, "superseded": False},
    ]

    collected = merge_results(RUN, shards, services.staging())

    merged = {r["custom_id"]: r for r in staged(staged_name(RUN, "all"))}
    assert sorted(merged) == ["a", "b", "c", "d"]
    assert (merged["b"]["status"], merged["b"]["attempts"], merged["b"]["content"]) == ("succeeded", 2, "answer b")
    assert (merged["c"]["status"], merged["c"]["attempts"]) == ("failed", 1)  # content filtering is final
    assert merged["a"]["attempts"] == 1
    assert (collected.succeeded, collected.failed) == (3, 1)
    assert collected.usage.prompt_tokens == 5 + 7 + 11
    assert [r["custom_id"] for r in staged(staged_name(RUN, "failed"))] == ["c"]
    assert sorted(r["custom_id"] for r in staged(staged_name(RUN, "raw"))) == ["a", "b", "c", "d"]


def test_a_shard_stays_within_a_files_bytes_whichever_deployment_of_the_pool_runs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shared.shards

    monkeypatch.setattr(shared.shards, "MAX_FILE_BYTES", 2_000)
    stage("inputs/b.jsonl", [line(f"r{i}", "word " * 10) for i in range(40)])
    longest = "d" * 64  # Azure's longest deployment name

    planned = plan_shards(RUN, "inputs/b.jsonl", None, services.staging())

    assert len(planned) > 1
    for plan in planned:
        renamed = [x | {"body": x["body"] | {"model": longest}} for x in staged(plan["staged_input"])]
        assert sum(len(json.dumps(x, separators=(",", ":"))) + 1 for x in renamed) <= 2_000
    # Without that room the shards would be fuller: a shard filled to the limit would overflow once renamed.
    monkeypatch.setattr(shared.shards, "DEPLOYMENT_NAME_ROOM", 0)
    assert len(plan_shards(RUN, "inputs/b.jsonl", None, services.staging())) < len(planned)


def test_a_shards_input_is_uploaded_naming_the_deployment_that_runs_it(emulator: RunningEmulator) -> None:
    from shared.inputs import upload_staged

    stage("inputs/u.jsonl", [line("a", "héllo"), line("b")])
    client = services.openai_client("aoai-devstack-eastus")

    file_id = upload_staged("inputs/u.jsonl", "s0.jsonl", services.staging(), client, "gpt-4o-other")
    same_id = upload_staged("inputs/u.jsonl", "s0.jsonl", services.staging(), client, "gpt-4o-batch")

    target = emulator.resource("aoai-devstack-eastus")
    plane = DataPlane(target["endpoint"], target["apiKey"])
    uploaded = plane.content_lines(file_id)
    assert [(x["custom_id"], x["body"]["model"]) for x in uploaded] == [("a", "gpt-4o-other"), ("b", "gpt-4o-other")]
    assert uploaded[0]["body"]["messages"][0]["content"] == "héllo"
    as_is = plane.request("GET", f"files/{same_id}/content").content  # already named: uploaded byte for byte
    assert as_is == b"".join(services.staging().chunks("inputs/u.jsonl"))


def test_an_input_larger_than_one_file_is_cut_at_azures_request_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.shards

    monkeypatch.setattr(shared.shards, "MAX_REQUESTS", 4)
    stage("inputs/big.jsonl", [line(f"r{i}") for i in range(10)])

    planned = plan_shards(RUN, "inputs/big.jsonl", None, services.staging())

    assert [p["requests"] for p in planned] == [4, 4, 2]
    assert [x["custom_id"] for p in planned for x in staged(p["staged_input"])] == [f"r{i}" for i in range(10)]
