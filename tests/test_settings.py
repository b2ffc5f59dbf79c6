"""App settings: parsed into one typed object, and every one of them listed in local.settings.sample.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import DEFAULT_ARM_ENDPOINT, SETTING_NAMES, Settings, SettingsError

SAMPLE = json.loads((Path(__file__).resolve().parent.parent / "local.settings.sample.json").read_text())["Values"]


def test_every_setting_the_code_reads_is_in_the_sample() -> None:
    assert set(SETTING_NAMES) <= set(SAMPLE)


def test_the_sample_parses_and_points_at_the_devstack() -> None:
    settings = Settings.from_environment(SAMPLE)

    assert [r.name for r in settings.resources] == ["aoai-devstack-eastus"]
    resource = settings.resources[0]
    assert resource.endpoint == "http://127.0.0.1:8480/aoai-devstack-eastus"
    assert resource.api_version == "2024-10-21"
    assert settings.arm_endpoint == "http://127.0.0.1:8480"
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.sync_schedule == "0 */30 * * * *"


def test_defaults_apply_when_settings_are_absent() -> None:
    settings = Settings.from_environment({})

    assert settings.resources == ()
    assert settings.arm_endpoint == DEFAULT_ARM_ENDPOINT
    assert settings.catalog_table == "jobs"
    assert settings.key_vault_verify_challenge_resource is True
    assert settings.sync_schedule == "0 */30 * * * *"


def test_resource_defaults_api_version_and_builds_portal_link() -> None:
    settings = Settings.from_environment(
        {
            "AZURE_OPENAI_RESOURCES": json.dumps(
                [
                    {
                        "name": "aoai-prod",
                        "endpoint": "https://aoai-prod.openai.azure.com/",
                        "subscriptionId": "sub",
                        "resourceGroup": "rg",
                        "tenantId": "tenant",
                    }
                ]
            )
        }
    )

    resource = settings.resources[0]
    assert resource.api_version == "2024-10-21"
    assert resource.endpoint == "https://aoai-prod.openai.azure.com"
    assert resource.portal_url == (
        "https://portal.azure.com/#@tenant/resource/subscriptions/sub/resourceGroups/rg"
        "/providers/Microsoft.CognitiveServices/accounts/aoai-prod/overview"
    )


@pytest.mark.parametrize("version", ["v1", "2024-10-21", "2025-04-01-preview"])
def test_a_resource_may_use_the_v1_api_or_a_dated_api_version(version: str) -> None:
    entry = {"name": "aoai-next", "endpoint": "https://x", "subscriptionId": "s", "resourceGroup": "g"}

    settings = Settings.from_environment({"AZURE_OPENAI_RESOURCES": json.dumps([entry | {"apiVersion": version}])})

    assert settings.resources[0].api_version == version


def test_a_v1_resource_may_take_batches_with_blob_storage_and_others_do_not_by_default() -> None:
    entry = {"name": "aoai-next", "endpoint": "https://x", "subscriptionId": "s", "resourceGroup": "g"}
    entries = [entry | {"apiVersion": "v1", "batchBlobStorage": True}, entry | {"name": "aoai-old"}]

    settings = Settings.from_environment({"AZURE_OPENAI_RESOURCES": json.dumps(entries)})

    assert [r.batch_blob_storage for r in settings.resources] == [True, False]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batchBlobStorage": True}, r'AZURE_OPENAI_RESOURCES\[0\]\.batchBlobStorage needs "apiVersion": "v1"'),
        ({"batchBlobStorage": True, "apiVersion": "2025-04-01-preview"}, 'needs "apiVersion": "v1"'),
        ({"batchBlobStorage": "yes", "apiVersion": "v1"}, "batchBlobStorage must be true or false"),
    ],
)
def test_batch_blob_storage_is_refused_off_the_v1_api_or_when_not_a_boolean(
    change: dict[str, object], message: str
) -> None:
    entry = {"name": "aoai-old", "endpoint": "https://x", "subscriptionId": "s", "resourceGroup": "g"} | change

    with pytest.raises(SettingsError, match=message):
        Settings.from_environment({"AZURE_OPENAI_RESOURCES": json.dumps([entry])})


def test_identity_based_storage_connection() -> None:
    settings = Settings.from_environment(
        {"AzureWebJobsStorage__accountName": "staoai", "AzureWebJobsStorage__clientId": "client"}
    )

    assert settings.storage.connection_string is None
    assert settings.storage.table_service_uri == "https://staoai.table.core.windows.net"
    assert settings.storage.client_id == "client"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "JSON array"),
        ('{"name": "x"}', "JSON array"),
        ('[{"name": "x"}]', "missing endpoint, subscriptionId, resourceGroup"),
        ('[{"name": "bad name", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g"}]', "name"),
        (
            '[{"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g"},'
            ' {"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g"}]',
            "twice",
        ),
        ('[{"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g", "apiVersion": "v2"}]', "v1"),
        ('[{"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g", "apiVersion": 1}]', "dated"),
        ('[{"name": "ab\\n", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g"}]', "name"),
        ('[{"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g", "apiVersion": "v1\\n"}]', "v1"),
        (
            '[{"name": "ab", "endpoint": "e", "subscriptionId": "s", "resourceGroup": "g", "apiVersion": "2024-10"}]',
            "apiVersion",
        ),
    ],
)
def test_malformed_resources_setting_names_the_problem(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_environment({"AZURE_OPENAI_RESOURCES": value})


def test_malformed_flag_is_refused() -> None:
    with pytest.raises(SettingsError, match="KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"):
        Settings.from_environment({"KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "maybe"})


PRICES = {
    "currency": "EUR",
    "batchDiscount": 0.5,
    "models": {
        "gpt-4o": {"input": 2.0, "cachedInput": 1.0, "output": 8.0},
        "gpt-4o-mini": {"input": 0.2, "output": 0.8, "batchDiscount": 0.25},
    },
}


def test_a_model_may_have_its_own_batch_discount_and_the_others_take_the_tables() -> None:
    prices = Settings.from_environment({"PRICES": json.dumps(PRICES)}).prices

    assert prices is not None
    assert prices.batch_discount == 0.5
    assert prices.models["gpt-4o"].batch_discount == 0.5
    assert prices.models["gpt-4o-mini"].batch_discount == 0.25
    assert prices.models["gpt-4o-mini"].cached_input == 0.2  # the input price when none is given


def test_the_cost_takes_the_models_batch_discount_or_else_the_tables() -> None:
    from shared.results import Usage, estimated_cost

    prices = Settings.from_environment({"PRICES": json.dumps(PRICES)}).prices
    usage = Usage(prompt_tokens=3_000_000, completion_tokens=1_000_000, total_tokens=4_000_000, cached_tokens=1_000_000)

    # 2 M uncached at 2.0, 1 M cached at 1.0, 1 M out at 8.0: 13.0 at the standard price, less the table's 0.5
    assert estimated_cost(usage, prices, "gpt-4o", "2024-08-06") == {"amount": 6.5, "currency": "EUR"}
    # 3 M in at 0.2 (cached at the input price), 1 M out at 0.8: 1.4, less the model's own 0.25
    assert estimated_cost(usage, prices, "gpt-4o-mini", "2024-07-18") == {"amount": 1.05, "currency": "EUR"}
    assert estimated_cost(usage, prices, "gpt-35-turbo", "0125") is None


@pytest.mark.parametrize("discount", [1, -0.1, "half", None])
def test_a_batch_discount_outside_0_to_1_is_refused_for_the_table_or_a_model(discount: object) -> None:
    per_model = {**PRICES, "models": {"gpt-4o": {"input": 1, "output": 2, "batchDiscount": discount}}}
    for table in ({**PRICES, "batchDiscount": discount}, per_model):
        with pytest.raises(SettingsError, match="PRICES"):
            Settings.from_environment({"PRICES": json.dumps(table)})


def test_a_staging_container_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SettingsError, match="STAGING_CONTAINER"):
        Settings.from_environment({"STAGING_CONTAINER": "aoaibatch-staging\n"})


@pytest.mark.parametrize("currency", ["dollars", "usd", "", 5, "US$"])
def test_a_price_table_names_its_currency_by_its_iso_code(currency: object) -> None:
    table = {"currency": currency, "batchDiscount": 0.5, "models": {"gpt-4o": {"input": 2.5, "output": 10.0}}}

    with pytest.raises(SettingsError, match="ISO 4217"):
        Settings.from_environment({"PRICES": json.dumps(table)})
    prices = Settings.from_environment({"PRICES": json.dumps(table | {"currency": "EUR"})}).prices
    assert prices is not None
    assert prices.currency == "EUR"
