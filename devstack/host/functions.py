"""Indexing an app's functions and calling them, as the Python worker does for the v2 programming model.

The worker imports the script file (function_app.py, or $PYTHON_SCRIPT_FILE_NAME), finds the one FunctionRegister
(FunctionApp / DFApp) at module level, calls `get_functions()` once, and invokes each user function with its
bindings as keyword arguments (plus `context` when the function declares it). Sync functions run on a thread
pool, async functions on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib
import inspect
import os
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import _abc

TRIGGER_KINDS = {
    "httpTrigger": "http",
    "timerTrigger": "timer",
    "orchestrationTrigger": "orchestrator",
    "activityTrigger": "activity",
    "entityTrigger": "entity",
}
SUPPORTED_INPUTS = {"durableClient"}
SUPPORTED_OUTPUTS = {"http"}


def plain(value: Any) -> Any:
    """Binding metadata without enums (AuthLevel.FUNCTION -> "function")."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


@dataclass
class FunctionDef:
    name: str
    kind: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    fn: Callable[..., Any]
    is_async: bool
    parameters: set[str]
    directory: str
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def durable_name(self) -> str:
        """The name orchestrations and activities are called by (the trigger's own name, else the function's)."""
        return str(self.trigger.get("orchestration") or self.trigger.get("activity") or self.name)


class IndexError_(Exception):
    """The app cannot be indexed (import error, no app object, two app objects)."""


def index_app(app_dir: Path) -> list[FunctionDef]:
    script = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
    module_name = Path(script).stem
    if not (app_dir / script).exists():
        raise IndexError_(f"{app_dir / script} does not exist")
    sys.path.insert(0, str(app_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise IndexError_(f"importing {script} failed: {type(exc).__name__}: {exc}") from exc
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if not apps:
        raise IndexError_(f"Could not find top level function app instances in {script}.")
    if len({id(a) for a in apps}) > 1:
        raise IndexError_(
            f"More than one FunctionApp or other top level function app instances are defined in {script}."
        )
    try:
        functions = apps[0].get_functions()
    except Exception as exc:
        raise IndexError_(f"indexing {script} failed: {type(exc).__name__}: {exc}") from exc
    return [_describe(function, str(app_dir)) for function in functions]


def _describe(function: Any, directory: str) -> FunctionDef:
    bindings = plain(function.get_bindings_dict()["bindings"])
    trigger: dict[str, Any] = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), {})
    fn = function.get_user_function()
    try:
        parameters = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        parameters = set()
    definition = FunctionDef(
        name=function.get_function_name(),
        kind=TRIGGER_KINDS.get(str(trigger.get("type")), "unsupported"),
        trigger=trigger,
        bindings=bindings,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        parameters=parameters,
        directory=directory,
    )
    if definition.kind == "unsupported":
        definition.problem = f"trigger type '{trigger.get('type')}' is not supported by the local host"
    elif definition.kind == "entity":
        definition.problem = "durable entities are not supported by the local host"
    for binding in bindings:
        if binding is trigger:
            continue
        kind, direction = binding.get("type"), binding.get("direction")
        if direction == 0 and kind not in SUPPORTED_INPUTS:
            definition.problem = f"input binding '{kind}' is not supported by the local host"
        elif direction == 1 and kind not in SUPPORTED_OUTPUTS:
            definition.problem = f"output binding '{kind}' is not supported by the local host"
    return definition


class TraceContext(_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class InvocationContext(func.Context):
    """What the worker passes as `context`."""

    _local = threading.local()

    def __init__(self, definition: FunctionDef, invocation_id: str) -> None:
        self._definition = definition
        self._invocation_id = invocation_id
        self._trace = TraceContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._definition.name

    @property
    def function_directory(self) -> str:
        return self._definition.directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return None


class Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass
class Invocation:
    result: Any
    outputs: dict[str, Out]


async def invoke(
    definition: FunctionDef,
    inputs: dict[str, Any],
    executor: Executor,
    invocation_id: str,
) -> Invocation:
    """Calls the user function with its bindings (`inputs`, by binding name), output bindings as Out objects and
    `context` when declared; sync functions run on `executor`."""
    kwargs = dict(inputs)
    outputs: dict[str, Out] = {}
    for binding in definition.bindings:
        if binding.get("direction") == 1 and binding.get("name") != "$return":
            outputs[binding["name"]] = kwargs[binding["name"]] = Out()
    if "context" in definition.parameters and "context" not in kwargs:
        kwargs["context"] = InvocationContext(definition, invocation_id)
    kwargs = {key: value for key, value in kwargs.items() if key in definition.parameters}
    if definition.is_async:
        result = await definition.fn(**kwargs)
    else:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(executor, functools.partial(definition.fn, **kwargs))
    return Invocation(result, outputs)
