"""openapi.yaml is valid OpenAPI 3.1 and describes exactly the HTTP routes the app serves."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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


def test_each_operation_documents_the_key_its_auth_level_asks_for() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    asked = {
        "anonymous": [],
        "function": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
        "admin": [{"adminKeyHeader": []}, {"adminKeyQuery": []}],
    }
    levels = set()
    for function in functions_by_name().values():
        for binding in function.get_bindings_dict()["bindings"]:
            if binding["type"] != "httpTrigger":
                continue
            level = str(binding["authLevel"].value)
            levels.add(level)
            for method in binding["methods"]:
                operation = SPEC["paths"][f"/{binding['route']}"][str(method.value).lower()]
                assert operation.get("security", SPEC["security"]) == asked[level], (binding["route"], method)

    assert levels == set(asked)
    assert all("master key" in schemes[name]["description"] for name in ("adminKeyHeader", "adminKeyQuery"))


def test_every_protected_operation_documents_401() -> None:
    protected = [
        (path, method)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("security") != []
    ]

    assert protected
    assert [op for op in protected if "401" not in SPEC["paths"][op[0]][op[1]]["responses"]] == []


def schema(name: str) -> dict[str, Any]:
    return dict(SPEC["components"]["schemas"][name])


def test_the_documented_limits_and_patterns_are_the_codes() -> None:
    from shared.jobs import BATCH_SUFFIX, DEPLOYMENT_NAME
    from shared.run_requests import (
        MAX_BLOB_URL,
        MAX_METADATA_KEY,
        MAX_METADATA_VALUE,
        MAX_PROMPT_CHARACTERS,
        MAX_USER_METADATA,
    )
    from shared.runs import MAX_FAILURE_MESSAGE
    from shared.settings import RESOURCE_NAME

    parameters = SPEC["components"]["parameters"]
    metadata = schema("BatchRunRequest")["properties"]["metadata"]
    prompts = schema("ChatRunRequest")["properties"]

    assert parameters["Resource"]["schema"]["pattern"] == RESOURCE_NAME.pattern
    assert schema("ExternalId")["pattern"] == DEPLOYMENT_NAME.pattern.removesuffix("$") + f"({BATCH_SUFFIX})?$"
    assert (metadata["maxProperties"], metadata["propertyNames"]["maxLength"]) == (MAX_USER_METADATA, MAX_METADATA_KEY)
    assert metadata["additionalProperties"]["maxLength"] == MAX_METADATA_VALUE
    assert prompts["user_prompt"]["maxLength"] == prompts["system_prompt"]["maxLength"] == MAX_PROMPT_CHARACTERS
    assert schema("Failure")["properties"]["message"]["maxLength"] == MAX_FAILURE_MESSAGE
    blob_run = schema("BatchRunRequest")["properties"]
    assert blob_run["inputBlob"]["maxLength"] == blob_run["outputFolder"]["maxLength"] == MAX_BLOB_URL
    assert f"at most {MAX_USER_METADATA} pairs" in SPEC["paths"]["/jobs/{externalId}/runs"]["post"]["description"]


def test_the_documented_input_limits_are_the_codes() -> None:
    from blueprints.inputs_api import MAX_INPUT_BODY
    from shared.inputs import (
        MAX_FILE_BYTES,
        MAX_INPUT_BYTES,
        MAX_INPUT_REQUESTS,
        MAX_REQUESTS,
        PROBLEMS_SHOWN,
        PROCESSING_WAIT_SECONDS,
    )

    operation = SPEC["paths"]["/jobs/{externalId}/inputs"]["post"]
    forms = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    described = " ".join(operation["description"].split())
    per_file = " ".join(schema("Input")["properties"]["fileId"]["description"].split())

    assert [form["properties"][form["required"][0]].get("maxItems") for form in forms] == [
        MAX_INPUT_REQUESTS,
        MAX_INPUT_REQUESTS,
        None,  # blobUrl
    ]
    assert f"at most {MAX_INPUT_REQUESTS:,} requests and {MAX_INPUT_BYTES / 2**30:g} GiB an input" in described
    assert f"({MAX_REQUESTS:,} requests, {MAX_FILE_BYTES / 2**20:g} MB)" in described
    assert f"({MAX_REQUESTS:,} requests, {MAX_FILE_BYTES / 2**20:g} MB)" in per_file
    assert f"at most {MAX_INPUT_BODY / 2**20:g} MB)" in described
    assert f"for at most {PROCESSING_WAIT_SECONDS:g} s" in described
    assert f"(at most {PROBLEMS_SHOWN})" in schema("Problem")["properties"]["problems"]["description"]


@pytest.mark.parametrize("status", ["processed", "pending", "error", "staged"])
def test_an_inputs_reply_is_what_the_spec_documents_staged_or_uploaded(status: str) -> None:
    from shared.inputs import InputRecord

    staged = status == "staged"
    record = InputRecord(
        id="0" * 32,
        job_id="gpt-4o-batch::batch",
        resource="aoai-devstack-eastus",
        deployment="gpt-4o-batch",
        file_id=None if staged else "file-0123",
        requests=100_001 if staged else 3,
        bytes=12_345_678,
        estimated_tokens=900_000,
        staged_blob=f"inputs/{'0' * 32}.jsonl",
        status=status,
        created_at="2026-11-29T18:00:00Z",
    )

    for validator in (
        reply_validator("/jobs/{externalId}/inputs", "post", "201"),
        reply_validator("/inputs/{inputId}", "get"),
    ):
        assert [e.message for e in validator.iter_errors(record.to_resource())] == []
    assert list(reply_validator("/inputs/{inputId}", "get").iter_errors(record.to_resource() | {"status": "failed"}))


def test_an_invalid_inputs_refusal_is_what_the_spec_documents() -> None:
    from shared.inputs import InputChecker

    checker = InputChecker("/chat/completions", "gpt-4o-batch")
    list(checker.lines([b"{not json", b'{"custom_id": "a"}'] * 15))
    refusal = checker.check.refusal().to_dict()
    problem = schema_validator(
        "/paths/~1jobs~1{externalId}~1inputs/post/responses/400/content/application~1problem+json/schema"
    )

    assert (refusal["problemCount"], len(refusal["problems"])) == (30, 20)
    assert [e.message for e in problem.iter_errors(refusal)] == []
    assert set(refusal) <= set(schema("Problem")["properties"])  # every member the refusal has is documented


def test_the_run_id_pattern_accepts_exactly_what_the_app_accepts() -> None:
    from shared.problems import Problem
    from shared.runs import RunId

    pattern = SPEC["components"]["parameters"]["RunId"]["schema"]["pattern"]
    candidates = [
        f"gpt-4o-batch::batch::{'a' * 32}",
        f"gpt-4o::chat::{'0' * 32}",
        f"gpt-4o::chat::{'0' * 31}",
        f"x::chat::{'0' * 32}",
        f"gpt-4o::embedding::{'0' * 32}",
        "x/../instances",
        f"{'d' * 64}::batch::{'f' * 32}",
        f"{'d' * 65}::batch::{'f' * 32}",
        f"gpt-4o-batch::batch::{'a' * 32}::s0",
        f"gpt-4o-batch::batch::{'a' * 32}::s01",
        f"gpt-4o::chat::{'0' * 32}::s1",
        f"gpt-4o::chat::{'0' * 32}\n",
        f"gpt-4o\n::chat::{'0' * 32}",
        f"\ngpt-4o::chat::{'0' * 32}",
        f"gpt-4o-batch::batch::{'a' * 32}::s1\n",
    ]
    for text in candidates:
        try:
            RunId.parse(text)
            accepted = True
        except Problem:
            accepted = False
        assert matches_as_json_schema(pattern, text) == accepted, repr(text)


def matches_as_json_schema(pattern: str, text: str) -> bool:
    """Whether `text` matches `pattern` as JSON Schema says (ECMA-262, unanchored search), where `$` is the end of
    the text only, never the place before a final newline as in Python."""
    ecma = re.sub(r"(?<!\\)\$", r"\\Z", pattern)
    return re.search(ecma, text) is not None


def test_json_schema_patterns_end_only_at_the_end_of_the_text() -> None:
    assert matches_as_json_schema("^ab$", "ab")
    assert not matches_as_json_schema("^ab$", "ab\n")
    assert matches_as_json_schema(r"^a\$$", "a$")


def schema_validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at `pointer` in openapi.yaml (a JSON pointer), its $refs resolved in the spec."""
    registry: Registry[Any] = Registry().with_resource(
        "urn:openapi", Resource.from_contents(SPEC, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"urn:openapi#{pointer}"}, registry=registry)


def run_schema_validator() -> Draft202012Validator:
    return schema_validator("/components/schemas/Run")


def problem_validator(path: str, method: str, status: str) -> Draft202012Validator:
    """A validator for the problem+json an operation documents for `status` (its response inline or a $ref)."""
    response = SPEC["paths"][path][method]["responses"][status]
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = (
        response["$ref"].removeprefix("#") if "$ref" in response else f"/paths/{escaped}/{method}/responses/{status}"
    )
    return schema_validator(f"{pointer}/content/application~1problem+json/schema")


def reply_validator(path: str, method: str, status: str = "200") -> Draft202012Validator:
    escaped = path.replace("~", "~0").replace("/", "~1")
    return schema_validator(f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema")


def test_run_replies_are_exactly_what_the_spec_documents() -> None:
    from shared.batch_run import BatchSnapshot, Phase
    from shared.chat import ChatRun
    from shared.runs import Failure, RunId, RunStatus, run_resource
    from tests.test_runs import largest_batch_run, largest_batch_set

    batch_run = largest_batch_run()
    links = {"statusUrl": "https://x/api/runs/r", "cancelUrl": "https://x/api/runs/r/cancel", "cancelRequested": True}
    chat = ChatRun(f"gpt-4o::chat::{'0' * 32}", "r", "gpt-4o", "gpt-4o", "hi", "2026-11-29T18:00:00Z", "https://p")
    outputs = {"response": "7", "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "finish_reason": "stop"}
    views = [
        batch_run.resource_view() | links | {"orchestrationStatus": "Running"},
        replace(batch_run, batch=None, failure=None, phase=Phase.QUOTA).resource_view(),
        replace(batch_run, batch=BatchSnapshot("b", "in_progress", total=3, completed=1, failed=0)).resource_view(),
        chat.resource_view(RunStatus.STARTING),
        chat.resource_view(RunStatus.SUCCESS, outputs=outputs, started_at="2026-11-29T18:00:00Z"),
        chat.resource_view(RunStatus.FAILED, failure=Failure.of("content_filter", "Filtered.")),
        run_resource(RunId.parse(chat.run_id), "Failed", None, "Traceback", None),
        largest_batch_set().resource_view(with_shards=True),
    ]
    validator = run_schema_validator()

    for view in views:
        assert list(validator.iter_errors(view)) == [], view
    assert list(validator.iter_errors(views[0] | {"undocumented": 1}))  # the schema is closed


def documented(schema: str) -> dict[str, object]:
    """A schema of the spec's components, with the components beside it for its $refs."""
    return {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}


@pytest.mark.usefixtures("app_settings")
def test_list_jobs_replies_and_parameters_are_the_documented_ones() -> None:
    operation = SPEC["paths"]["/jobs"]["get"]
    names = {
        SPEC["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"] if "$ref" in p else p["name"]
        for p in operation["parameters"]
    }
    assert names == {"resource", "type", "status", "top", "continuationToken"}
    call_http("import_jobs", "POST", "jobs/import")

    first = json_of(call_http("list_jobs", "GET", "jobs", params={"top": "5"}))
    refused = call_http("list_jobs", "GET", "jobs", params={"top": "0"})

    assert "nextLink" in first
    validate_instance(first, documented("JobPage"))
    assert refused.status_code == 400
    validate_instance(json_of(refused), documented("Problem"))
