"""Durable Functions on the local host: orchestrations replayed by the real SDK, the HTTP API and the client binding."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

from tests.conftest import wait_for_clock
from tests.host.conftest import RunningHost, unique

# Emulated timestamps in the status API have microseconds; a reading of the clock may round the other way.
CLOCK_ROUNDING = 0.001


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_orchestration_started_over_http_runs_to_completion(host: RunningHost) -> None:
    response = host.api("POST", "start/sequence", json={"names": ["Tokyo", "Seattle"]})
    instance_id = response.json()["id"]

    status = host.wait(instance_id)

    assert response.status_code == 202
    assert response.headers["Location"] == response.json()["statusQueryGetUri"]
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!"]
    assert status["customStatus"] == {"done": 2, "of": 2}


def test_check_status_urls_are_the_extensions_and_work(host: RunningHost) -> None:
    payload = host.api("POST", "start/sequence", json={"names": ["x"]}).json()
    instance_id = payload["id"]
    host.wait(instance_id)

    status = host.session.get(payload["statusQueryGetUri"], timeout=10)

    assert set(payload) >= {
        "id",
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    }
    assert payload["statusQueryGetUri"].startswith(f"{host.webhook}/instances/{instance_id}?taskHub=hostapptests")
    assert "connection=Storage" in payload["statusQueryGetUri"]
    assert "{eventName}" in payload["sendEventPostUri"]
    assert status.status_code == 200
    assert status.json()["runtimeStatus"] == "Completed"


def test_status_fields_as_the_extension_returns_them(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["A"]}, unique("fields"))
    status = host.wait(instance_id)

    without_input = host.status(instance_id, showInput="false")

    assert set(status) == {
        "name",
        "instanceId",
        "runtimeStatus",
        "input",
        "customStatus",
        "output",
        "createdTime",
        "lastUpdatedTime",
    }
    assert status["name"] == "sequence"
    assert status["instanceId"] == instance_id
    # the Python client posts its input JSON-encoded once more, so the status shows it as a JSON string
    assert json.loads(status["input"]) == {"names": ["A"]}
    assert status["createdTime"].endswith("Z")
    assert len(status["createdTime"]) == 20
    assert _time(status["lastUpdatedTime"]) >= _time(status["createdTime"])
    assert without_input["input"] is None


def test_a_running_instance_answers_202_with_location(host: RunningHost) -> None:
    instance_id = host.start("approval", {"timeoutHours": 1000}, unique("running"))
    host.wait(instance_id, ("Running",))

    response = host.durable("GET", f"instances/{instance_id}")

    assert response.status_code == 202
    assert response.headers["Location"].startswith(f"{host.webhook}/instances/{instance_id}")
    assert response.headers["Retry-After"] == "5"
    assert response.json()["customStatus"] == "waiting for approval"
    host.durable("POST", f"instances/{instance_id}/terminate", params={"reason": "cleanup"})


def test_history_is_shown_when_asked_and_results_only_with_history_output(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["H"]}, unique("history"))
    host.wait(instance_id)

    plain = host.status(instance_id)
    history = host.status(instance_id, showHistory="true")["historyEvents"]
    with_output = host.status(instance_id, showHistory="true", showHistoryOutput="true")["historyEvents"]

    assert "historyEvents" not in plain
    assert [e["EventType"] for e in history] == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    assert history[0]["FunctionName"] == "sequence"
    assert history[1]["FunctionName"] == "say_hello"
    assert "ScheduledTime" in history[1]
    assert "Result" not in history[1]
    assert with_output[1]["Result"] == "Hello H!"
    assert with_output[2]["OrchestrationStatus"] == "Completed"
    assert with_output[2]["Result"] == ["Hello H!"]


def test_the_durable_client_binding_reads_status_over_the_rpc_endpoint(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["rpc"]}, unique("rpc"))
    host.wait(instance_id)

    status = host.api("GET", f"client/status/{instance_id}", params={"history": "1", "output": "1"}).json()
    missing = host.api("GET", "client/status/no-such-instance")

    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello rpc!"]
    assert status["historyEvents"][1]["Result"] == "Hello rpc!"
    assert missing.status_code == 404


def test_listing_filters_by_status_prefix_and_created_time_and_pages(host: RunningHost) -> None:
    prefix = unique("list")
    done = [host.start("sequence", {"names": ["L"]}, f"{prefix}-done-{i}") for i in range(3)]
    waiting = host.start("approval", {"timeoutHours": 1000}, f"{prefix}-waiting")
    for instance_id in done:
        host.wait(instance_id)
    host.wait(waiting, ("Running",))
    created = [_time(host.status(i)["createdTime"]) for i in [*done, waiting]]

    def listing(**params: str) -> list[str]:
        return [s["instanceId"] for s in host.durable("GET", "instances", params=params).json()]

    completed = listing(instanceIdPrefix=prefix, runtimeStatus="Completed")
    running = listing(instanceIdPrefix=prefix, runtimeStatus="Running,Pending")
    early = (min(created) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = (max(created) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    in_range = listing(instanceIdPrefix=prefix, createdTimeFrom=early, createdTimeTo=late)
    before = listing(instanceIdPrefix=prefix, createdTimeTo=early)
    first_page = host.durable("GET", "instances", params={"instanceIdPrefix": prefix, "top": "2"})
    second_page = host.durable(
        "GET",
        "instances",
        params={"instanceIdPrefix": prefix, "top": "2"},
        headers={"x-ms-continuation-token": first_page.headers["x-ms-continuation-token"]},
    )
    without_input = host.durable("GET", "instances", params={"instanceIdPrefix": prefix, "showInput": "false"}).json()

    assert completed == sorted(done)
    assert running == [waiting]
    assert sorted(in_range) == sorted([*done, waiting])
    assert before == []
    assert len(first_page.json()) == 2
    assert len(second_page.json()) == 2
    assert "x-ms-continuation-token" not in second_page.headers
    assert {s["instanceId"] for s in first_page.json() + second_page.json()} == {*done, waiting}
    assert all(s["input"] is not None for s in first_page.json())  # shown unless showInput=false
    assert all(s["input"] is None for s in without_input)
    host.durable("POST", f"instances/{waiting}/terminate")


def test_the_client_binding_lists_by_status_and_prefix(host: RunningHost) -> None:
    prefix = unique("clientlist")
    instance_id = host.start("sequence", {"names": ["C"]}, f"{prefix}-1")
    host.wait(instance_id)

    found = host.api("GET", "client/list", params={"status": "Completed", "prefix": prefix}).json()
    everything = host.api("GET", "client/all").json()

    assert [s["instanceId"] for s in found] == [instance_id]
    assert found[0]["runtimeStatus"] == "Completed"
    assert instance_id in {s["instanceId"] for s in everything}


def test_an_activity_exception_fails_the_orchestration_with_its_message(host: RunningHost) -> None:
    instance_id = host.start("failing", None, unique("failing"))

    status = host.wait(instance_id)
    history = host.status(instance_id, showHistory="true")["historyEvents"]

    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith("Orchestrator function 'failing' failed: Activity function 'explode' failed:")
    assert "ValueError: the activity blew up" in status["output"]
    failed = [e for e in history if e["EventType"] == "TaskFailed"]
    assert failed[0]["FunctionName"] == "explode"
    assert "ValueError: the activity blew up" in failed[0]["Reason"]
    assert history[-1]["OrchestrationStatus"] == "Failed"
    assert (
        host.durable(
            "GET", f"instances/{instance_id}", params={"returnInternalServerErrorOnFailure": "true"}
        ).status_code
        == 500
    )


def test_an_orchestrator_can_catch_an_activity_failure(host: RunningHost) -> None:
    status = host.wait(host.start("catching", None, unique("catching")))

    assert status["runtimeStatus"] == "Completed"
    assert "Activity function 'explode' failed" in status["output"]["caught"]
    assert "caught by the orchestrator" in status["output"]["caught"]


def test_an_exception_in_the_orchestrator_fails_it_with_the_message(host: RunningHost) -> None:
    status = host.wait(host.start("raising", None, unique("raising")))

    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == "Orchestrator function 'raising' failed: the orchestrator itself failed"


def test_retries_follow_the_retry_options_on_durable_timers(host: RunningHost) -> None:
    instance_id = host.start("retrying", {"failures": 2}, unique("retrying"))

    status = host.wait(instance_id)
    history = host.status(instance_id, showHistory="true")["historyEvents"]
    attempts = Counter(r["key"] for r in host.records("flaky") if r["key"].startswith(instance_id))

    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["recovered"] == {"attempt": 3}
    assert attempts == {f"{instance_id}-a": 3, f"{instance_id}-b": 2}
    assert "ConnectionError: transient failure 2" in status["output"]["exhausted"]
    kinds = [e["EventType"] for e in history]
    # a: fail, timer, fail, timer, success; b: fail, timer, fail, timer (the extra timer DTFx waits on)
    assert kinds.count("TimerCreated") == 4
    assert kinds.count("TaskFailed") == 4
    created = [_time(e["Timestamp"]) for e in history if e["EventType"] == "TimerCreated"]
    fire_at = [_time(e["FireAt"]) for e in history if e["EventType"] == "TimerCreated"]
    assert [round((f - c).total_seconds()) for f, c in zip(fire_at, created, strict=True)] == [60, 60, 1, 1]


def test_a_one_hour_durable_timer_fires_after_an_emulated_hour_not_a_real_one(host: RunningHost) -> None:
    clock = host.clock()
    before = clock.now()
    instance_id = host.start("waiting", {"hours": 1}, unique("timer"))

    status = host.wait(instance_id)  # within a minute: a real hour would be 3600 s
    after = clock.now()

    started, resumed = _time(status["output"]["started"]), _time(status["output"]["resumed"])
    assert status["runtimeStatus"] == "Completed"
    assert timedelta(hours=1) <= resumed - started
    assert before - CLOCK_ROUNDING <= started.timestamp()
    assert resumed.timestamp() <= after + CLOCK_ROUNDING


def test_raising_the_event_before_the_timeout_approves(host: RunningHost) -> None:
    instance_id = host.start("approval", {"timeoutHours": 1000}, unique("approve"))
    host.wait(instance_id, ("Running",))

    raised = host.durable("POST", f"instances/{instance_id}/raiseEvent/approval", json={"by": "curl"})
    status = host.wait(instance_id)

    assert raised.status_code == 202
    assert status["output"] == {"approved": True, "data": {"by": "curl"}}
    assert status["customStatus"] == "approved"


def test_an_event_raised_through_the_python_client_arrives_as_json_text(host: RunningHost) -> None:
    """As in Azure: DurableOrchestrationClient.raise_event posts json.dumps(data), which the extension keeps as a
    JSON string, so the orchestrator receives the data's JSON text (azure-functions-durable-python#295)."""
    instance_id = host.start("approval", {"timeoutHours": 1000}, unique("clientraise"))
    host.wait(instance_id, ("Running",))

    host.api("POST", f"client/raise/{instance_id}", json={"by": "client"})
    status = host.wait(instance_id)

    assert status["output"]["approved"] is True
    assert json.loads(status["output"]["data"]) == {"by": "client"}


def test_without_the_event_the_timeout_wins(host: RunningHost) -> None:
    status = host.wait(host.start("approval", {"timeoutHours": 1}, unique("timeout")))

    assert status["output"] == {"approved": False, "timedOut": True}
    assert status["customStatus"] == "timed out"


def test_raise_event_errors(host: RunningHost) -> None:
    done = host.start("sequence", {"names": ["E"]}, unique("eventdone"))
    host.wait(done)

    assert host.durable("POST", "instances/nobody/raiseEvent/approval", json=1).status_code == 404
    assert host.durable("POST", f"instances/{done}/raiseEvent/approval", json=1).status_code == 410
    waiting = host.start("approval", {"timeoutHours": 1000}, unique("eventtext"))
    not_json = host.durable(
        "POST", f"instances/{waiting}/raiseEvent/approval", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status_code == 400
    host.durable("POST", f"instances/{waiting}/terminate")


def test_terminate_ends_a_running_instance_with_the_reason(host: RunningHost) -> None:
    instance_id = host.start("approval", {"timeoutHours": 1000}, unique("terminate"))
    host.wait(instance_id, ("Running",))

    response = host.durable("POST", f"instances/{instance_id}/terminate", params={"reason": "no longer needed"})
    status = host.wait(instance_id)
    again = host.durable("POST", f"instances/{instance_id}/terminate", params={"reason": "twice"})
    history = host.status(instance_id, showHistory="true")["historyEvents"]

    assert response.status_code == 202
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "no longer needed"
    assert again.status_code == 410
    assert "ExecutionTerminated" in [e["EventType"] for e in history]
    assert host.durable("POST", "instances/nobody/terminate").status_code == 404


def test_terminate_suspend_resume_and_purge_through_the_client_binding(host: RunningHost) -> None:
    instance_id = host.start("approval", {"timeoutHours": 1000}, unique("clientops"))
    host.wait(instance_id, ("Running",))

    host.api("POST", f"client/suspend/{instance_id}")
    suspended = host.wait(instance_id, ("Suspended",))
    host.api("POST", f"client/raise/{instance_id}", json="while suspended")
    host.api("POST", f"client/resume/{instance_id}")
    resumed = host.wait(instance_id)
    purged = host.api("DELETE", f"client/purge/{instance_id}").json()

    assert suspended["runtimeStatus"] == "Suspended"
    assert resumed["runtimeStatus"] == "Completed"
    assert json.loads(resumed["output"]["data"]) == "while suspended"
    assert purged == {"instancesDeleted": 1}
    assert host.durable("GET", f"instances/{instance_id}").status_code == 404


def test_purge_by_id_and_by_filter(host: RunningHost) -> None:
    prefix = unique("purge")
    first = host.start("sequence", {"names": ["P"]}, f"{prefix}-1")
    second = host.start("sequence", {"names": ["P"]}, f"{prefix}-2")
    running = host.start("approval", {"timeoutHours": 1000}, f"{prefix}-3")
    for instance_id in (first, second):
        host.wait(instance_id)
    host.wait(running, ("Running",))
    created = host.status(second)["createdTime"]

    refused = host.durable("DELETE", f"instances/{running}")
    by_id = host.durable("DELETE", f"instances/{first}")
    by_filter = host.durable("DELETE", "instances", params={"createdTimeFrom": created, "runtimeStatus": "Completed"})
    none_left = host.durable("DELETE", "instances", params={"createdTimeFrom": created, "runtimeStatus": "Completed"})

    assert refused.status_code == 412
    assert by_id.json() == {"instancesDeleted": 1}
    assert by_filter.status_code == 200
    assert by_filter.json()["instancesDeleted"] >= 1
    assert host.durable("GET", f"instances/{second}").status_code == 404
    assert host.durable("GET", f"instances/{running}").status_code == 202
    assert none_left.status_code == 404
    assert host.durable("DELETE", "instances").status_code == 400
    host.durable("POST", f"instances/{running}/terminate")


def test_continue_as_new_starts_new_executions_until_done(host: RunningHost) -> None:
    instance_id = host.start("counter", {"n": 0, "until": 4}, unique("counter"))

    status = host.wait(instance_id)
    history = host.status(instance_id, showHistory="true")["historyEvents"]

    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"n": 4, "greetings": [f"Hello round {i}!" for i in range(4)]}
    assert status["customStatus"] == {"n": 3, "execution": 4}
    assert json.loads(status["input"]) == {
        "n": 3,
        "until": 4,
        "greetings": [f"Hello round {i}!" for i in range(3)],
    }
    # only the last execution's history is kept
    assert [e["EventType"] for e in history] == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]


def test_starting_an_id_that_is_running_is_a_conflict_and_a_finished_one_is_replaced(host: RunningHost) -> None:
    instance_id = unique("conflict")
    host.start("approval", {"timeoutHours": 1000}, instance_id)

    conflict = host.durable("POST", f"orchestrators/approval/{instance_id}", json={})
    host.durable("POST", f"instances/{instance_id}/terminate")
    host.wait(instance_id)
    replaced = host.durable("POST", f"orchestrators/sequence/{instance_id}", json={"names": ["again"]})
    status = host.wait(instance_id)

    assert conflict.status_code == 409
    assert replaced.status_code == 202
    assert status["name"] == "sequence"
    assert status["output"] == ["Hello again!"]


def test_the_http_api_starts_orchestrations_and_refuses_bad_requests(host: RunningHost) -> None:
    started = host.durable("POST", "orchestrators/sequence", json={"names": ["api"]})
    unknown = host.durable("POST", "orchestrators/no_such_orchestrator", json={})
    bad_id = host.durable("POST", "orchestrators/sequence/@entity", json={})
    bad_json = host.durable("POST", "orchestrators/sequence", data=b"{not json")
    no_key = host.session.post(f"{host.webhook}/orchestrators/sequence", json={}, timeout=10)
    waited = host.durable(
        "POST", "orchestrators/sequence", json={"names": ["wait"]}, params={"timeout": "25", "pollingInterval": "0.1"}
    )

    assert started.status_code == 202
    assert host.wait(started.json()["id"])["output"] == ["Hello api!"]
    assert unknown.status_code == 400
    assert "doesn't exist" in unknown.json()["ExceptionMessage"]
    assert bad_id.status_code == 400
    assert bad_json.status_code == 400
    assert no_key.status_code == 401
    assert waited.status_code == 200
    assert waited.json() == ["Hello wait!"]


def test_restart_runs_the_same_input_again(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["R"]}, unique("restart"))
    host.wait(instance_id)

    response = host.durable("POST", f"instances/{instance_id}/restart", params={"restartWithNewInstanceId": "false"})
    status = host.wait(instance_id)

    assert response.status_code == 202
    assert response.json()["id"] == instance_id
    assert status["output"] == ["Hello R!"]


def test_rewind_is_refused_as_by_a_provider_without_it(host: RunningHost) -> None:
    failed = host.start("failing", None, unique("rewind"))
    host.wait(failed)

    assert host.durable("POST", f"instances/{failed}/rewind", params={"reason": "x"}).status_code == 501
    assert host.durable("POST", "instances/nobody/rewind").status_code == 404


def test_sub_orchestrations_complete_and_fail_into_the_parent(host: RunningHost) -> None:
    instance_id = host.start("parent", None, unique("parent"))

    status = host.wait(instance_id)
    child = host.status(f"{instance_id}:0")

    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["child"] == ["Hello child!"]
    assert "Orchestrator function 'failing' failed" in status["output"]["failure"]
    assert child["runtimeStatus"] == "Completed"
    assert host.status(f"{instance_id}-failing-child")["runtimeStatus"] == "Failed"


def test_activities_run_at_most_activity_concurrency_at_once(host: RunningHost) -> None:
    instance_id = host.start("fan_out", {"count": 6, "seconds": 0.25}, unique("fanout"))

    status = host.wait(instance_id)

    assert status["output"] == list(range(6))
    events = sorted(
        ((r["at"], 1 if r["phase"] == "start" else -1) for r in host.records("sleepy")), key=lambda e: (e[0], e[1])
    )
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2


def test_wait_for_completion_through_the_client_binding(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["W"]}, unique("wait"))

    response = host.api("GET", f"client/wait/{instance_id}")

    assert response.status_code == 200
    assert response.json() == ["Hello W!"]


def test_management_payload_from_the_client_binding(host: RunningHost) -> None:
    payload = host.api("GET", "client/payload/some-id").json()

    assert payload["id"] == "some-id"
    assert payload["statusQueryGetUri"].startswith(f"{host.webhook}/instances/some-id?")


def test_the_rpc_endpoint_needs_no_key_but_the_webhooks_do(host: RunningHost) -> None:
    instance_id = host.start("sequence", {"names": ["K"]}, unique("rpckey"))
    host.wait(instance_id)

    rpc = host.session.get(f"{host.info['rpcBaseUrl']}instances/{instance_id}", timeout=10)
    webhook = host.session.get(f"{host.webhook}/instances/{instance_id}", timeout=10)

    assert rpc.status_code == 200
    assert webhook.status_code == 401


def test_emulated_time_runs_through_current_utc_datetime(host: RunningHost) -> None:
    """context.current_utc_datetime is emulated time: the host's virtual clock (3600x) when the episode ran."""
    clock = host.clock()
    before = clock.now()
    first = host.wait(host.start("waiting", {"hours": 0}, unique("now1")))
    first_started = _time(first["output"]["started"]).timestamp()
    wait_for_clock(clock.now, first_started + 3600, what="an emulated hour (about a real second) to pass")
    second = host.wait(host.start("waiting", {"hours": 0}, unique("now2")))
    after = clock.now()

    second_started = _time(second["output"]["started"]).timestamp()
    assert before - CLOCK_ROUNDING <= first_started
    assert first_started + 3600 <= second_started <= after + CLOCK_ROUNDING
