"""The local host's test app: one of each kind of function the host must run (see README.md)."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(kind: str, **data: Any) -> None:
    """Appends one JSON line to $HOST_APP_RECORD_DIR/<kind>.jsonl (O_APPEND: lines never interleave)."""
    path = Path(os.environ["HOST_APP_RECORD_DIR"]) / f"{kind}.jsonl"
    line = json.dumps({**data, "pid": os.getpid(), "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def records(kind: str) -> list[dict[str, Any]]:
    path = Path(os.environ["HOST_APP_RECORD_DIR"]) / f"{kind}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reply(body: Any, status: int = 200, **headers: str) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


# HTTP -----------------------------------------------------------------------------------------------------------------
@app.route(route="hello/{name?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name", "world")
    return reply({"greeting": f"Hello, {name}!", "params": dict(req.params), "routeParams": dict(req.route_params)})


@app.route(route="things/import", methods=["POST"])
def import_things(req: func.HttpRequest) -> func.HttpResponse:
    return reply({"route": "things/import", "method": req.method})


@app.route(route="things/{thingId}", methods=["GET", "PATCH"])
def get_thing(req: func.HttpRequest) -> func.HttpResponse:
    return reply(
        {
            "route": "things/{thingId}",
            "thingId": req.route_params["thingId"],
            "method": req.method,
            "body": req.get_body().decode(),
            "url": req.url,
            "header": req.headers.get("x-test-header"),
            "params": dict(req.params),
        }
    )


@app.route(route="things/{id:int}/parts/{*rest}", methods=["GET"])
def thing_parts(req: func.HttpRequest) -> func.HttpResponse:
    return reply({"route": "things/{id:int}/parts/{*rest}", "routeParams": dict(req.route_params)})


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return reply({"admin": True})


@app.route(route="echo", methods=["POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    status = int(req.params.get("status", "200"))
    return func.HttpResponse(
        req.get_body(),
        status_code=status,
        mimetype=req.headers.get("content-type", "application/octet-stream"),
        headers={"X-Echo": "yes", "Set-Cookie": "session=abc; Path=/"},
    )


@app.route(route="text", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def text(req: func.HttpRequest) -> str:
    return "plain text"


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("this function always fails")


@app.route(route="context", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return reply(
        {
            "invocationId": context.invocation_id,
            "functionName": context.function_name,
            "setting": os.environ.get("HOST_APP_GREETING"),
        }
    )


@app.route(route="environment", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def environment(req: func.HttpRequest) -> func.HttpResponse:
    names = req.params.get("names", "").split(",")
    return reply({name: os.environ.get(name) for name in names if name} | {"cwd": os.getcwd()})


@app.route(route="vault/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def vault(req: func.HttpRequest) -> func.HttpResponse:
    """Reads a Key Vault secret the way production code does: managed identity, default TLS trust."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(os.environ["KEY_VAULT_URL"], DefaultAzureCredential(), verify_challenge_resource=False)
    return reply({"value": client.get_secret(req.route_params["name"]).value})


# Durable client -------------------------------------------------------------------------------------------------------
@app.route(route="start/{orchestrator}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["orchestrator"], req.params.get("id"), body)
    return client.create_check_status_response(req, instance_id)


@app.route(route="client/{op}/{instanceId?}", methods=["GET", "POST", "DELETE"])
@app.durable_client_input(client_name="client")
async def client_op(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The DurableOrchestrationClient operations, over the host's RPC endpoint."""
    op, instance_id = req.route_params["op"], req.route_params.get("instanceId", "")
    flag = req.params.get
    if op == "status":
        status = await client.get_status(
            instance_id,
            show_history=flag("history") == "1",
            show_history_output=flag("output") == "1",
            show_input=flag("input") == "1",
        )
        if not status:
            return reply({"found": False}, 404)
        return reply({**status.to_json(), "historyEvents": getattr(status, "historyEvents", None)})
    if op == "list":
        statuses = [df.OrchestrationRuntimeStatus(s) for s in flag("status", "").split(",") if s]
        found = await client.get_status_by(runtime_status=statuses or None, instance_id_prefix=flag("prefix"))
        return reply([s.to_json() for s in found])
    if op == "all":
        return reply([s.to_json() for s in await client.get_status_all()])
    if op == "raise":
        await client.raise_event(instance_id, flag("event", "approval"), req.get_json())
        return reply({"raised": True}, 202)
    if op == "terminate":
        await client.terminate(instance_id, flag("reason", "no reason"))
        return reply({"terminated": True}, 202)
    if op == "suspend":
        await client.suspend(instance_id, "paused by test")
        return reply({"suspended": True}, 202)
    if op == "resume":
        await client.resume(instance_id, "resumed by test")
        return reply({"resumed": True}, 202)
    if op == "purge":
        result = await client.purge_instance_history(instance_id)
        return reply({"instancesDeleted": result.instances_deleted})
    if op == "wait":
        return await client.wait_for_completion_or_create_check_status_response(req, instance_id, 25_000, 100)
    if op == "payload":
        return reply(client.create_http_management_payload(instance_id))
    return reply({"unknown": op}, 400)


# Orchestrators --------------------------------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    names = (context.get_input() or {}).get("names", ["Tokyo", "Seattle", "London"])
    results = []
    for index, name in enumerate(names):
        results.append((yield context.call_activity("say_hello", name)))
        context.set_custom_status({"done": index + 1, "of": len(names)})
    return results


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity("say_hello", "before the failure")
    yield context.call_activity("explode", "the activity blew up")
    return "never reached"


@app.orchestration_trigger(context_name="context")
def catching(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    try:
        yield context.call_activity("explode", "caught by the orchestrator")
    except Exception as error:
        return {"caught": str(error)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    settings = context.get_input() or {}
    key = context.instance_id
    recovered = yield context.call_activity_with_retry(
        "flaky",
        df.RetryOptions(first_retry_interval_in_milliseconds=60_000, max_number_of_attempts=4),
        {"key": f"{key}-a", "failures": settings.get("failures", 2)},
    )
    try:
        yield context.call_activity_with_retry(
            "flaky",
            df.RetryOptions(first_retry_interval_in_milliseconds=1_000, max_number_of_attempts=2),
            {"key": f"{key}-b", "failures": 99},
        )
        exhausted = None
    except Exception as error:
        exhausted = str(error)
    return {"recovered": recovered, "exhausted": exhausted, "finishedAt": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def waiting(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    hours = float((context.get_input() or {}).get("hours", 1))
    started = context.current_utc_datetime
    yield context.create_timer(started + timedelta(hours=hours))
    return {"started": started.isoformat(), "resumed": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    hours = float((context.get_input() or {}).get("timeoutHours", 24))
    context.set_custom_status("waiting for approval")
    event = context.wait_for_external_event("approval")
    timeout = context.create_timer(context.current_utc_datetime + timedelta(hours=hours))
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        context.set_custom_status("approved")
        return {"approved": True, "data": event.result}
    context.set_custom_status("timed out")
    return {"approved": False, "timedOut": True}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    state = context.get_input() or {}
    n, until = int(state.get("n", 0)), int(state.get("until", 3))
    context.set_custom_status({"n": n, "execution": n + 1})
    greeting = yield context.call_activity("say_hello", f"round {n}")
    greetings = [*state.get("greetings", []), greeting]
    if n + 1 < until:
        context.continue_as_new({"n": n + 1, "until": until, "greetings": greetings})
        return None
    return {"n": n + 1, "greetings": greetings}


@app.orchestration_trigger(context_name="context")
def steps(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    settings = context.get_input() or {}
    results = []
    for index in range(int(settings.get("steps", 6))):
        if index == 2:  # a durable timer in the middle (a minute of emulated time)
            yield context.create_timer(context.current_utc_datetime + timedelta(minutes=1))
        results.append(
            (yield context.call_activity("slow_step", {"i": index, "seconds": settings.get("seconds", 0.1)}))
        )
    return results


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    settings = context.get_input() or {}
    tasks = [
        context.call_activity("sleepy", {"i": i, "seconds": settings.get("seconds", 0.2)})
        for i in range(int(settings.get("count", 4)))
    ]
    return (yield context.task_all(tasks))


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    child = yield context.call_sub_orchestrator("sequence", {"names": ["child"]})
    try:
        yield context.call_sub_orchestrator("failing", None, f"{context.instance_id}-failing-child")
        failure = None
    except Exception as error:
        failure = str(error)
    return {"child": child, "failure": failure}


@app.orchestration_trigger(context_name="context")
def raising(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity("say_hello", "then the orchestrator raises")
    raise ValueError("the orchestrator itself failed")


# Activities -----------------------------------------------------------------------------------------------------------
@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    return f"Hello {name}!"


@app.activity_trigger(input_name="message")
def explode(message: str) -> str:
    raise ValueError(message)


@app.activity_trigger(input_name="payload")
def flaky(payload: dict[str, Any]) -> dict[str, Any]:
    """Fails until it has been called `failures` times for `key`."""
    record("flaky", key=payload["key"])
    attempt = sum(1 for r in records("flaky") if r["key"] == payload["key"])
    if attempt <= payload["failures"]:
        raise ConnectionError(f"transient failure {attempt}")
    return {"attempt": attempt}


@app.activity_trigger(input_name="payload")
def slow_step(payload: dict[str, Any]) -> int:
    record("steps", i=payload["i"], phase="start")
    time.sleep(float(payload["seconds"]))
    record("steps", i=payload["i"], phase="end")
    return int(payload["i"]) ** 2


@app.activity_trigger(input_name="payload")
async def sleepy(payload: dict[str, Any]) -> int:
    import asyncio

    record("sleepy", i=payload["i"], phase="start")
    await asyncio.sleep(float(payload["seconds"]))
    record("sleepy", i=payload["i"], phase="end")
    return int(payload["i"])


# Timer ----------------------------------------------------------------------------------------------------------------
@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def tick(timer: func.TimerRequest) -> None:
    record("ticks", phase="start", pastDue=timer.past_due, status=timer.schedule_status)
    time.sleep(float(os.environ.get("TICK_SECONDS", "0")))
    record("ticks", phase="end")
