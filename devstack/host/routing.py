"""HTTP trigger routes as the Functions host matches them (ASP.NET Core route templates in a tree router).

A template is `/`-separated segments: literals (matched case-insensitively), parameters `{name}`, optional
parameters `{name?}`, defaults `{name=value}`, inline constraints `{id:int}`, `{code:regex(^[a-z]+$)}`,
`{n:range(1,10)}`, and a catch-all `{*rest}` as the last segment. `{{` and `}}` are literal braces.

When several routes match a path, the more specific one wins, segment by segment: a literal beats a constrained
parameter, which beats a plain parameter, which beats a catch-all (ASP.NET's inbound route precedence). A route
whose methods do not include the request's is skipped, so the next candidate may still take the request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RouteError(ValueError):
    """A route template the host refuses; the function is not indexed."""


@dataclass
class Parameter:
    name: str
    constraints: list[tuple[str, list[str]]] = field(default_factory=list)
    optional: bool = False
    default: str | None = None
    catch_all: bool = False


@dataclass
class Segment:
    parts: list[str | Parameter]

    @property
    def literal(self) -> str | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], str) else None

    @property
    def parameter(self) -> Parameter | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], Parameter) else None

    def precedence(self) -> int:
        """ASP.NET Core's inbound precedence digit: 1 literal, 2 constrained or complex, 3 parameter, 4-5 catch-all."""
        if len(self.parts) > 1:
            return 2
        part = self.parts[0]
        if isinstance(part, str):
            return 1
        digit = 5 if part.catch_all else 3
        return digit - 1 if part.constraints else digit


def _int_in(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return low <= int(value) <= high
        except ValueError:
            return False

    return check


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in {"nan", "inf", "-inf", "infinity", "-infinity"}


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


INT32 = _int_in(-(2**31), 2**31 - 1)
INT64 = _int_in(-(2**63), 2**63 - 1)


def _constraint(name: str, args: list[str]) -> Callable[[str], bool]:
    """The check for one inline constraint; RouteError for one the host does not know or whose arguments are bad."""
    lowered = name.lower()
    simple: dict[str, Callable[[str], bool]] = {
        "int": INT32,
        "long": INT64,
        "bool": lambda v: v.lower() in {"true", "false"},
        "datetime": _is_datetime,
        "decimal": _is_float,
        "double": _is_float,
        "float": _is_float,
        "guid": _is_guid,
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "required": lambda v: v != "",
    }
    try:
        if lowered in simple:
            if args:
                raise RouteError(f"constraint {name!r} takes no arguments")
            return simple[lowered]
        numbers = [int(a) for a in args] if lowered != "regex" else []
        if lowered == "minlength" and len(numbers) == 1:
            return lambda v: len(v) >= numbers[0]
        if lowered == "maxlength" and len(numbers) == 1:
            return lambda v: len(v) <= numbers[0]
        if lowered == "length" and len(numbers) in (1, 2):
            low, high = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
            return lambda v: low <= len(v) <= high
        if lowered == "min" and len(numbers) == 1:
            return _int_in(numbers[0], 2**63 - 1)
        if lowered == "max" and len(numbers) == 1:
            return _int_in(-(2**63), numbers[0])
        if lowered == "range" and len(numbers) == 2:
            return _int_in(numbers[0], numbers[1])
        if lowered == "regex" and len(args) == 1:
            pattern = re.compile(args[0], re.IGNORECASE)
            return lambda v: pattern.search(v) is not None
    except (ValueError, re.error) as exc:
        raise RouteError(f"constraint {name!r} has bad arguments {args!r}: {exc}") from exc
    raise RouteError(f"unknown route constraint {name!r} (arguments {args!r})")


def _parse_parameter(text: str) -> Parameter:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    # name[:constraint[(args)]]...[?][=default]
    match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)", text)
    if not match:
        raise RouteError(f"bad route parameter {{{text}}}")
    parameter = Parameter(match.group(1), catch_all=catch_all)
    rest = text[match.end() :]
    while rest.startswith(":"):
        constraint = re.match(r"^:([A-Za-z]+)", rest)
        if not constraint:
            raise RouteError(f"bad constraint in route parameter {{{text}}}")
        rest = rest[constraint.end() :]
        args: list[str] = []
        if rest.startswith("("):
            depth, index = 0, -1
            for position, char in enumerate(rest):
                depth += char == "("
                depth -= char == ")"
                if depth == 0:
                    index = position
                    break
            if index < 0:
                raise RouteError(f"unbalanced parentheses in route parameter {{{text}}}")
            inner = rest[1:index]
            args = [inner] if constraint.group(1).lower() == "regex" else [a.strip() for a in inner.split(",")]
            rest = rest[index + 1 :]
        parameter.constraints.append((constraint.group(1), args))
    if rest.startswith("?"):
        parameter.optional = True
        rest = rest[1:]
    if rest.startswith("="):
        parameter.default = rest[1:]
        parameter.optional = True
        rest = ""
    if rest:
        raise RouteError(f"unexpected {rest!r} in route parameter {{{text}}}")
    return parameter


def _parse_segment(text: str) -> Segment:
    parts: list[str | Parameter] = []
    literal = []
    index = 0
    while index < len(text):
        char = text[index]
        if text.startswith("{{", index) or text.startswith("}}", index):
            literal.append(char)
            index += 2
        elif char == "{":
            depth, end, inner = 0, index + 1, []
            while end < len(text):
                if text.startswith("}}", end) or text.startswith("{{", end):
                    inner.append(text[end])
                    end += 2
                    continue
                if text[end] == "(":
                    depth += 1
                elif text[end] == ")":
                    depth -= 1
                elif text[end] == "}" and depth <= 0:
                    break
                inner.append(text[end])
                end += 1
            else:
                raise RouteError(f"unclosed '{{' in route segment {text!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_parameter("".join(inner)))
            index = end + 1
        elif char == "}":
            raise RouteError(f"unmatched '}}' in route segment {text!r}")
        else:
            literal.append(char)
            index += 1
    if literal:
        parts.append("".join(literal))
    if not parts:
        raise RouteError("empty route segment")
    return Segment(parts)


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template
        text = template.strip().strip("/")
        self.segments = [_parse_segment(part) for part in text.split("/")] if text else []
        names: set[str] = set()
        for position, segment in enumerate(self.segments):
            for part in segment.parts:
                if not isinstance(part, Parameter):
                    continue
                if part.name.lower() in names:
                    raise RouteError(f"route {template!r} uses parameter {part.name!r} twice")
                names.add(part.name.lower())
                if part.catch_all and (position != len(self.segments) - 1 or len(segment.parts) > 1):
                    raise RouteError(f"catch-all {{*{part.name}}} must be the whole last segment of {template!r}")
        self._checks = {
            part.name: [_constraint(name, args) for name, args in part.constraints]
            for segment in self.segments
            for part in segment.parts
            if isinstance(part, Parameter)
        }
        self._complex = {
            position: re.compile(
                "".join(
                    re.escape(part) if isinstance(part, str) else f"(?P<p{index}>.+)"
                    for index, part in enumerate(segment.parts)
                ),
                re.IGNORECASE,
            )
            for position, segment in enumerate(self.segments)
            if len(segment.parts) > 1
        }
        self.precedence = tuple(segment.precedence() for segment in self.segments)

    def _accepts(self, parameter: Parameter, value: str) -> bool:
        return all(check(value) for check in self._checks[parameter.name])

    def match(self, path: list[str]) -> dict[str, str] | None:
        """Route values for a path already split into decoded segments, or None when the route does not match."""
        values: dict[str, str] = {}
        for position, segment in enumerate(self.segments):
            parameter = segment.parameter
            if parameter is not None and parameter.catch_all:
                rest = "/".join(path[position:])
                if rest == "" and parameter.default is not None:
                    rest = parameter.default
                if rest and not self._accepts(parameter, rest):
                    return None
                if rest:
                    values[parameter.name] = rest
                return values
            if position >= len(path) or path[position] == "":
                # Nothing left in the path: only optional parameters (or defaults) may remain.
                if parameter is None or not parameter.optional:
                    return None
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                continue
            value = path[position]
            literal = segment.literal
            if literal is not None:
                if value.lower() != literal.lower():
                    return None
            elif parameter is not None:
                if not self._accepts(parameter, value):
                    return None
                values[parameter.name] = value
            else:
                match = self._complex[position].fullmatch(value)
                if not match:
                    return None
                for index, part in enumerate(segment.parts):
                    if isinstance(part, Parameter):
                        captured = match.group(f"p{index}")
                        if not self._accepts(part, captured):
                            return None
                        values[part.name] = captured
        if len(path) > len(self.segments) and any(path[len(self.segments) :]):
            return None
        return values


@dataclass
class Route:
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: Any

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


class Router:
    """Routes in precedence order; `match` gives every route whose template matches, best first."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, template: str, methods: list[str] | None, target: Any) -> Route:
        route = Route(RouteTemplate(template), frozenset(m.upper() for m in methods) if methods else None, target)
        self.routes.append(route)
        self.routes.sort(key=lambda r: (r.template.precedence, r.template.template.lower()))
        return route

    def match(self, path: list[str]) -> list[tuple[Route, dict[str, str]]]:
        found = []
        for route in self.routes:
            values = route.template.match(path)
            if values is not None:
                found.append((route, values))
        return found
