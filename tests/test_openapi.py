"""openapi.yaml is valid OpenAPI 3.1 and describes exactly the HTTP routes the app serves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import validate

from tests.functions import call_http, functions_by_name, json_of

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text())


def test_spec_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def served_operations() -> set[tuple[str, str]]:
    operations = set()
    for function in functions_by_name().values():
        for binding in function.get_bindings_dict()["bindings"]:
            if binding["type"] == "httpTrigger":
                for method in binding["methods"]:
                    operations.add((f"/{binding['route']}", str(method.value).lower()))
    return operations


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    documented = {
        (path, method)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }

    assert documented == served_operations()


def test_anonymous_routes_are_the_ones_without_security() -> None:
    anonymous = set()
    for function in functions_by_name().values():
        for binding in function.get_bindings_dict()["bindings"]:
            if binding["type"] == "httpTrigger" and str(binding["authLevel"].value) == "anonymous":
                anonymous.add(f"/{binding['route']}")
    documented_open = {
        path
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("security") == []
    }

    assert documented_open == anonymous


def documented(schema: str) -> dict[str, object]:
    """A schema of the spec's components, with the components beside it for its $refs."""
    return {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}


@pytest.mark.usefixtures("app_settings")
def test_list_jobs_replies_and_parameters_are_the_documented_ones() -> None:
    operation = SPEC["paths"]["/jobs"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"resource", "type", "status", "top", "continuationToken"}
    call_http("import_jobs", "POST", "jobs/import")

    first = json_of(call_http("list_jobs", "GET", "jobs", params={"top": "5"}))
    refused = call_http("list_jobs", "GET", "jobs", params={"top": "0"})

    assert "nextLink" in first
    validate_instance(first, documented("JobPage"))
    assert refused.status_code == 400
    validate_instance(json_of(refused), documented("Problem"))
