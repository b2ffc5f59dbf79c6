"""`python -m devstack host`: serves an app's functions over HTTP and runs its timers and orchestrations.

What `func start` (Core Tools) does for a Python v2 app, in one process: app settings from local.settings.json,
HTTP triggers under /api with the Functions host's routing and keys, timer triggers, and the Durable Functions
extension (HTTP API, client binding, orchestration and activity dispatch) on a SQLite task hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from aiohttp import web

from devstack.clock import EPOCH_ENV, SCALE_ENV, VirtualClock
from devstack.host import appenv, ncrontab
from devstack.host.appenv import HostConfigError
from devstack.host.durable import Durable
from devstack.host.durable_api import RPC_PATH, WEBHOOK_PATH, DurableApi, Links
from devstack.host.functions import FunctionDef, IndexError_, index_app, invoke
from devstack.host.history import iso
from devstack.host.routing import RouteError, Router
from devstack.host.store import Store
from devstack.host.timers import TimerTrigger
from devstack.plumbing import bind_socket, write_json_atomically

log = logging.getLogger("devstack.host")
DEFAULT_PORT = 7071
MAX_BODY = 100 * 1024 * 1024  # the Functions host's request size limit
DEFAULT_HUB = "TestHubName"


@dataclass
class HostOptions:
    app_dir: Path = Path(".")
    host: str = "127.0.0.1"
    port: int | None = None
    state_dir: Path = Path(".devstack")
    settings_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    function_key: str | None = None
    master_key: str | None = None
    time_scale: float | None = None
    activity_concurrency: int | None = None
    endpoints_file: Path | None = None
    info_file: Path | None = None
    method_not_allowed: int = 404


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or DEFAULT_HUB


class Host:
    def __init__(self, options: HostOptions) -> None:
        self.options = options
        self.functions: list[FunctionDef] = []
        self.router = Router()
        self.timers: dict[str, TimerTrigger] = {}
        self.http_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="http")
        self.started = time.monotonic()
        self.lock_file: IO[str] | None = None
        self.runner: web.AppRunner | None = None
        self.background: list[asyncio.Task[Any]] = []
        self.durable: Durable
        self.store: Store
        self.base_url = ""

    # start -------------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        options = self.options
        app_dir = options.app_dir.resolve()
        state_dir = options.state_dir.resolve()
        endpoints_file = (options.endpoints_file or state_dir / "endpoints.json").resolve()
        self.info_file = (options.info_file or state_dir / "functions.json").resolve()
        if not app_dir.is_dir():
            raise HostConfigError(f"app directory {app_dir} does not exist")

        settings = appenv.load_settings(app_dir, options.settings_file, options.env)
        port = options.port if options.port is not None else (settings.local_http_port or DEFAULT_PORT)
        sock = bind_socket(options.host, port)
        # URLs handed to function code must be reachable from here, also when listening on every address
        reachable = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(options.host, options.host)  # noqa: S104
        shown = f"[{reachable}]" if ":" in reachable else reachable
        self.base_url = f"http://{shown}:{sock.getsockname()[1]}"

        notes = list(settings.notes)
        notes += appenv.apply_settings(settings, options.env)
        notes += appenv.wire_devstack(appenv.read_endpoints(endpoints_file), state_dir / "functions" / "ca-bundle.pem")
        host_json = appenv.read_host_json(app_dir)
        extensions = host_json.get("extensions") or {}
        hub_setting = str(((extensions.get("durableTask") or {}).get("hubName")) or DEFAULT_HUB)
        try:
            self.task_hub = appenv.resolve(hub_setting)
        except KeyError as exc:
            raise HostConfigError(
                f"host.json durableTask.hubName {hub_setting!r}: app setting {exc} is not set"
            ) from exc
        self.route_prefix = str((extensions.get("http") or {}).get("routePrefix", "api")).strip("/")

        self.store = Store(state_dir / "functions" / f"{_safe_name(self.task_hub)}.sqlite")
        self._lock(self.store.path.with_suffix(".lock"))
        clock = self._clock()
        os.environ.update(clock.to_env())
        os.environ.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
        os.environ["WEBSITE_HOSTNAME"] = self.base_url.split("//", 1)[1]
        os.environ["AzureWebJobsScriptRoot"] = str(app_dir)  # noqa: SIM112 (the host's own spelling)
        self.keys = self._keys()

        os.chdir(app_dir)
        try:
            self.functions = index_app(app_dir)
        except IndexError_ as exc:
            raise HostConfigError(str(exc)) from exc
        self._disable_from_settings()
        self.links = Links(self.task_hub, self.keys["system"])
        self.durable = Durable(
            self.store,
            clock,
            self.functions,
            task_hub=self.task_hub,
            activity_concurrency=self._activity_concurrency(extensions),
        )
        self._register(clock)

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.api = DurableApi(self.durable, self.links)
        self.durable.client_binding = lambda task_hub: self.links.client_binding(self.base_url, task_hub)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

        loop = asyncio.get_running_loop()
        self.background.append(loop.create_task(self.durable.run()))
        for timer in self.timers.values():
            self.background.append(loop.create_task(timer.run()))
        for task in self.background:
            task.add_done_callback(_report_crash)
        self.published = {
            "baseUrl": self.base_url,
            "apiBaseUrl": f"{self.base_url}/{self.route_prefix}".rstrip("/"),
            "key": self.keys["default"],
            "masterKey": self.keys["master"],
            "systemKey": self.keys["system"],
            "taskHub": self.task_hub,
            "durableTaskWebhook": f"{self.base_url}{WEBHOOK_PATH}",
            "rpcBaseUrl": f"{self.base_url}{RPC_PATH}/",
            "store": str(self.store.path),
            "pid": os.getpid(),
            "clock": clock.to_env(),
            "functions": sorted(f.name for f in self.functions if not f.problem),
        }
        write_json_atomically(self.info_file, self.published)
        self._announce(notes, clock)

    def _lock(self, path: Path) -> None:
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise HostConfigError(f"another host is running on {path.parent} (task hub {self.task_hub})") from exc
        self.lock_file = handle

    def _clock(self) -> VirtualClock:
        """The shared virtual clock; without DEVSTACK_EPOCH the task hub keeps its own epoch, so that emulated
        time carries on across restarts instead of starting over."""
        if not os.environ.get(EPOCH_ENV):
            stored = self.store.get_meta("epoch")
            if stored is None:
                stored = repr(time.time())
                with self.store.transaction():
                    self.store.set_meta("epoch", stored)
            os.environ[EPOCH_ENV] = stored
        if self.options.time_scale is None and not os.environ.get(SCALE_ENV):
            stored_scale = self.store.get_meta("scale")
            if stored_scale:
                os.environ[SCALE_ENV] = stored_scale
        try:
            clock = VirtualClock.from_env(self.options.time_scale)
        except ValueError as exc:
            raise HostConfigError(str(exc)) from exc
        last = self.store.get_meta("last_now")
        if last is not None and clock.now() < float(last) - 60:
            log.warning(
                "emulated time (%s) is behind this task hub's (%s): another epoch or a slower --time-scale than "
                "before. Durable timers already set wait for the task hub's timeline; keep DEVSTACK_EPOCH and "
                "--time-scale, or delete %s to start afresh.",
                iso(clock.now()),
                iso(float(last)),
                self.store.path,
            )
        with self.store.transaction():
            self.store.set_meta("scale", repr(clock.scale))
        return clock

    def _keys(self) -> dict[str, str]:
        """Host keys as the Functions host keeps them (generated once, kept in the task hub's store)."""
        keys = {}
        with self.store.transaction():
            for name in ("default", "master", "system"):
                stored = self.store.get_meta(f"key.{name}")
                if stored is None:
                    stored = secrets.token_urlsafe(30)
                    self.store.set_meta(f"key.{name}", stored)
                keys[name] = stored
        if self.options.function_key:
            keys["default"] = self.options.function_key
        if self.options.master_key:
            keys["master"] = self.options.master_key
        return keys

    def _activity_concurrency(self, extensions: dict[str, Any]) -> int:
        if self.options.activity_concurrency is not None:
            return self.options.activity_concurrency
        configured = (extensions.get("durableTask") or {}).get("maxConcurrentActivityFunctions")
        try:
            return max(1, int(configured)) if configured is not None else 10
        except (TypeError, ValueError):
            return 10

    def _disable_from_settings(self) -> None:
        """`AzureWebJobs.<name>.Disabled` app settings, as the host reads them."""
        for definition in self.functions:
            flag = os.environ.get(f"AzureWebJobs.{definition.name}.Disabled", "").strip().lower()
            if flag in ("true", "1") and not definition.problem:
                definition.problem = "disabled by app setting"

    def _register(self, clock: VirtualClock) -> None:
        for definition in self.functions:
            if definition.problem:
                continue
            if definition.kind == "http":
                try:
                    route = str(definition.trigger.get("route") or definition.name)
                    self.router.add(route, definition.trigger.get("methods"), definition)
                except RouteError as exc:
                    definition.problem = f"route: {exc}"
            elif definition.kind == "timer":
                try:
                    schedule = ncrontab.parse(appenv.resolve(str(definition.trigger.get("schedule") or "")))
                except KeyError as exc:
                    definition.problem = (
                        f"schedule {definition.trigger.get('schedule')!r}: app setting {exc} is not set"
                    )
                    continue
                except ncrontab.ScheduleError as exc:
                    definition.problem = f"schedule: {exc}"
                    continue
                self.timers[definition.name] = TimerTrigger(
                    definition, schedule, self.store, clock, self.http_pool, self.durable.now
                )

    def _announce(self, notes: list[str], clock: VirtualClock) -> None:
        lines = [f"Functions host is up (Ctrl-C stops it): {self.base_url}  task hub {self.task_hub}"]
        lines += [f"  note: {note}" for note in notes]
        lines.append("Functions:")
        for definition in sorted(self.functions, key=lambda f: f.name):
            if definition.problem:
                lines.append(f"  {definition.name}: NOT LOADED ({definition.problem})")
            elif definition.kind == "http":
                methods = ",".join(definition.trigger.get("methods") or ["ALL"])
                route = str(definition.trigger.get("route") or definition.name)
                lines.append(f"  {definition.name}: [{methods}] {self.published['apiBaseUrl']}/{route}")
            elif definition.kind == "timer":
                timer = self.timers[definition.name]
                lines.append(f"  {definition.name}: timerTrigger {timer.schedule.expression!r}")
            else:
                lines.append(f"  {definition.name}: {definition.trigger.get('type')}")
        lines.append(
            f"Keys: function {self.keys['default']}  master {self.keys['master']}  system {self.keys['system']}"
        )
        lines.append(f"Durable: {self.published['durableTaskWebhook']}  store {self.store.path}  x{clock.scale:g} time")
        print("\n".join(lines), flush=True)

    # requests ------------------------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        lowered = path.lower()
        if lowered.startswith("/admin/"):
            return await self._admin(request)
        if lowered.startswith(WEBHOOK_PATH + "/") or lowered == WEBHOOK_PATH:
            if not self._key_ok(request, ("system", "master")):
                return web.Response(status=401)
            return await self.api.handle(request, WEBHOOK_PATH)
        if lowered.startswith(RPC_PATH + "/"):
            if not _loopback(request):
                return web.Response(status=403)
            return await self.api.handle(request, RPC_PATH)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if prefix and not (lowered == prefix.lower() or lowered.startswith(prefix.lower() + "/")):
            if path == "/":
                return web.Response(text="Your Functions 4.0 app (devstack local host) is up and running.")
            return web.Response(status=404)
        return await self._http_trigger(request, path[len(prefix) :])

    def _key_ok(self, request: web.Request, kinds: tuple[str, ...]) -> bool:
        given = request.query.get("code") or request.headers.get("x-functions-key")
        return given is not None and any(secrets.compare_digest(given, self.keys[k]) for k in kinds)

    async def _http_trigger(self, request: web.Request, rest: str) -> web.StreamResponse:
        segments = [unquote(part) for part in rest.strip("/").split("/")] if rest.strip("/") else []
        matches = self.router.match(segments)
        allowed = [(route, values) for route, values in matches if route.allows(request.method)]
        if not allowed:
            status = self.options.method_not_allowed if matches else 404
            headers = {}
            if status == 405:
                methods = sorted({m for route, _ in matches for m in (route.methods or {"*"})})
                headers["Allow"] = ", ".join(methods)
            return web.Response(status=status, headers=headers)
        route, values = allowed[0]
        definition: FunctionDef = route.target
        level = str(definition.trigger.get("authLevel") or "function").lower()
        if level != "anonymous" and not self._key_ok(
            request, ("master",) if level == "admin" else ("default", "master")
        ):
            return web.Response(status=401)
        return await self._invoke_http(request, definition, values)

    async def _invoke_http(
        self, request: web.Request, definition: FunctionDef, values: dict[str, str]
    ) -> web.StreamResponse:
        import azure.functions as func
        from azure.functions.http import HttpRequest, HttpResponseConverter

        body = await request.read()
        headers = {key: ", ".join(request.headers.getall(key)) for key in request.headers}
        params = {key: ",".join(request.query.getall(key)) for key in request.query}
        http_request = HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=params,
            route_params=values,
            body_type="bytes",
            body=body,
        )
        inputs: dict[str, Any] = {str(definition.trigger["name"]): http_request}
        for binding in definition.bindings:
            if binding.get("type") == "durableClient":
                inputs[binding["name"]] = self.links.client_binding(self.base_url, binding.get("taskHub"))
        invocation_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            invocation = await invoke(definition, inputs, self.http_pool, invocation_id)
            outputs = [b["name"] for b in definition.bindings if b.get("type") == "http" and b.get("direction") == 1]
            result = invocation.result
            if outputs and outputs[0] != "$return":
                result = invocation.outputs[outputs[0]].get()
            if result is None:
                response = web.Response(status=204)
            else:
                datum = HttpResponseConverter.encode(result, expected_type=None)
                response = _to_response(datum, func)
            outcome = "Succeeded"
        except Exception:
            log.exception("Executed 'Functions.%s' failed", definition.name)
            response = web.Response(status=500)
            outcome = "Failed"
        log.info(
            "Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms) %s %s -> %s",
            definition.name,
            outcome,
            invocation_id,
            (time.monotonic() - started) * 1000,
            request.method,
            request.rel_url.path,
            response.status,
        )
        return response

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.path.rstrip("/").lower()
        if path == "/admin/host/ping":
            return web.Response(status=200)
        if not self._key_ok(request, ("master",)):
            return web.Response(status=401)
        if path == "/admin/host/status":
            return web.json_response(
                {
                    "id": self.task_hub,
                    "state": "Running",
                    "version": "4.x (devstack local host)",
                    "processUptime": int((time.monotonic() - self.started) * 1000),
                    "functions": self.published["functions"],
                    "errors": [f"{f.name}: {f.problem}" for f in self.functions if f.problem],
                    "durable": {
                        "taskHub": self.task_hub,
                        "episodes": self.durable.stats.episodes,
                        "activityRuns": self.durable.stats.activity_runs,
                        "mostActivitiesAtOnce": self.durable.stats.concurrent_activities,
                        "activityConcurrency": self.durable.activity_concurrency,
                    },
                }
            )
        if path == "/admin/functions" and request.method == "GET":
            return web.json_response(
                [
                    {"name": f.name, "config": {"bindings": f.bindings}, "isDisabled": bool(f.problem)}
                    for f in self.functions
                ]
            )
        if path.startswith("/admin/functions/") and request.method == "POST":
            name = request.rel_url.path.rstrip("/").split("/")[-1]
            timer = next((t for n, t in self.timers.items() if n.lower() == name.lower()), None)
            if timer is None:
                return web.Response(status=404)
            asyncio.get_running_loop().create_task(
                timer.fire(past_due=False, occurrence=self.durable.now(), manual=True)
            )
            return web.Response(status=202)
        return web.Response(status=404)

    # stop ----------------------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.info_file.read_text()).get("pid") == os.getpid():
                self.info_file.unlink()
        for timer in self.timers.values():
            timer.stop.set()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.durable.stop(grace=2.0)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.http_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the host failed: a background loop stopped", exc_info=task.exception())


def _loopback(request: web.Request) -> bool:
    remote = request.remote or ""
    return remote in ("127.0.0.1", "::1", "localhost") or remote.startswith("127.")


def _to_response(datum: Any, func: Any) -> web.Response:
    if datum.type == "string":
        return web.Response(text=datum.value, content_type="text/plain")
    value = datum.value
    response = web.Response(status=int(value["status_code"].value), body=value["body"].value)
    for name, header in value["headers"].items():
        if name.lower() == "content-length":
            continue
        response.headers.add(name, header.value)
    for cookie in value.get("cookies") or []:
        for morsel in cookie.values():
            response.headers.add("Set-Cookie", morsel.OutputString())
    return response


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


async def serve(options: HostOptions) -> None:
    _configure_logging()
    host = Host(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await host.start()
    try:
        await stop.wait()
    finally:
        await host.stop()


def run(options: HostOptions) -> int:
    try:
        asyncio.run(serve(options))
    except HostConfigError as exc:
        print(f"devstack host: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"devstack host: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    # Sync function code may still hold worker threads; nothing they do can be recorded any more.
    os._exit(0)
