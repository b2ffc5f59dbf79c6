"""Runs the emulators: plain HTTP for Azure OpenAI, ARM, managed identity and control; HTTPS for Key Vault."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from devstack.clock import VirtualClock
from devstack.emulator import arm_api, control, identity_api, keyvault_api, openai_api
from devstack.emulator.config import ConfigError, EmulatorConfig
from devstack.emulator.faults import SERVICES, FaultRuleError, emulation_middleware
from devstack.emulator.state import EmulatorState
from devstack.plumbing import bind_socket, write_json_atomically

UPLOAD_LIMIT = 256 * 1024 * 1024
# Every handler answers in milliseconds; what a stop would otherwise wait for is aiohttp reading and dropping the rest
# of an upload answered early (too large), for up to 10 s even when its client has gone.
SHUTDOWN_GRACE_SECONDS = 2.0


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8480
    keyvault_port: int | None = None
    config: Path | None = None
    time_scale: float | None = None
    state_dir: Path = Path(".devstack")
    endpoints_file: Path | None = None
    fault_seed: int | None = None


def build_apps(state: EmulatorState) -> tuple[web.Application, web.Application]:
    """The main application (OpenAI, ARM, identity, control) and the Key Vault application.

    Fault rules are checked against the routes and resources these serve from now on; the configured rules are
    checked again here (FaultRuleError for one that matches nothing)."""
    middleware = emulation_middleware(state.faults, state.log, state.clock, control.fault_response)
    main = web.Application(middlewares=[middleware], client_max_size=UPLOAD_LIMIT)
    main.add_routes(control.routes(state))
    main.add_routes(arm_api.routes(state))
    main.add_routes(identity_api.routes(state))
    main.add_routes(openai_api.routes(state))
    vault_middleware = emulation_middleware(
        state.faults, state.log, state.clock, control.fault_response, default_resource=state.config.key_vault.name
    )
    vault = web.Application(middlewares=[vault_middleware])
    vault.add_routes(keyvault_api.routes(state))

    routes: dict[str, set[str]] = {service: set() for service in SERVICES}
    for app in (main, vault):
        for name in app.router.named_resources():
            service, _, route = name.partition(":")
            if service in routes:
                routes[service].add(route)
    accounts = set(state.config.resources)
    state.faults.set_targets(
        routes, {"openai": accounts, "arm": accounts, "keyvault": {state.config.key_vault.name}, "identity": set()}
    )
    state.faults.replace(state.config.faults)
    return main, vault


@dataclass(frozen=True)
class LocalTls:
    """The local CA (made at start) and the server certificate it issued for localhost, 127.0.0.1 and ::1.

    Key Vault serves with it; other local HTTPS services (the user-storage Azurite of `up`) take its PEM files, so
    that one CA bundle is all a client must trust."""

    context: ssl.SSLContext
    ca_bundle: Path
    certificate: Path
    private_key: Path

    def to_json(self) -> dict[str, str]:
        return {
            "caBundle": str(self.ca_bundle.resolve()),
            "certificate": str(self.certificate.resolve()),
            "privateKey": str(self.private_key.resolve()),
        }


def issue_tls(state_dir: Path) -> LocalTls:
    """A CA and a server certificate for localhost, made at start; the CA bundle is what clients must trust."""
    authority = trustme.CA(organization_name="devstack local Key Vault CA")
    certificate = authority.issue_cert("localhost", "127.0.0.1", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    state_dir.mkdir(parents=True, exist_ok=True)
    bundle = state_dir / "keyvault-ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    chain = state_dir / "localhost-cert.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in certificate.cert_chain_pems))
    key = state_dir / "localhost-key.pem"
    key.touch(mode=0o600)
    key.chmod(0o600)  # the key of a certificate every local client trusts: for this user only
    certificate.private_key_pem.write_to_path(str(key))
    return LocalTls(context, bundle, chain, key)


def endpoints(state: EmulatorState, base_url: str, vault_url: str, tls: LocalTls) -> dict[str, Any]:
    """Every base URL and credential a client needs (the contract of .devstack/endpoints.json)."""
    config = state.config
    return {
        "openai": {
            name: {"endpoint": f"{base_url}/{name}", "apiKey": resource.api_key}
            for name, resource in config.resources.items()
        },
        "arm": {"endpoint": base_url, "subscriptionId": config.subscription_id, "resourceGroup": config.resource_group},
        "keyVault": {"url": vault_url, "caBundle": str(tls.ca_bundle.resolve()), "name": config.key_vault.name},
        "identity": {"endpoint": f"{base_url}/msi/token", "header": config.identity_header},
        "tenantId": config.tenant_id,
        "emulator": {"control": f"{base_url}/_emulator", "clock": state.clock.to_env()},
        "tls": tls.to_json(),
    }


async def serve(options: Options) -> None:
    """Runs the emulators until SIGINT or SIGTERM. ConfigError for an unusable configuration (config file, fault
    rules, time settings), OSError when a port cannot be had; either way nothing is written before."""
    config = EmulatorConfig.load(options.config)
    try:
        clock = VirtualClock.from_env(options.time_scale)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    state = EmulatorState(config, clock, fault_seed=options.fault_seed)
    try:
        main_app, vault_app = build_apps(state)
    except FaultRuleError as exc:
        raise ConfigError(f"fault rule: {exc}") from exc

    # Ports first: a second emulator started by mistake on the same ports and state directory must fail before it
    # overwrites the CA bundle and endpoints.json of the one already running.
    main_sock = bind_socket(options.host, options.port)
    vault_port = (
        options.keyvault_port if options.keyvault_port is not None else (options.port + 1 if options.port else 0)
    )
    try:
        vault_sock = bind_socket(options.host, vault_port)
    except OSError:
        main_sock.close()
        raise
    tls = issue_tls(options.state_dir)
    # The user-storage account (blob batches) serves a certificate from this CA; the resources' identity trusts it.
    state.user_blobs.ssl = ssl.create_default_context(cafile=str(tls.ca_bundle))
    runners = [
        web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS) for app in (main_app, vault_app)
    ]
    for runner in runners:
        await runner.setup()
    await web.SockSite(runners[0], main_sock).start()
    await web.SockSite(runners[1], vault_sock, ssl_context=tls.context).start()

    shown_host = f"[{options.host}]" if ":" in options.host else options.host
    base_url = f"http://{shown_host}:{main_sock.getsockname()[1]}"
    vault_url = f"https://{shown_host}:{vault_sock.getsockname()[1]}"
    published = endpoints(state, base_url, vault_url, tls)
    endpoints_file = options.endpoints_file or options.state_dir / "endpoints.json"
    # Stop on a signal before announcing readiness: whoever reads endpoints.json may stop us at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    write_json_atomically(endpoints_file, published)
    _announce(published, clock)
    try:
        await stop.wait()
    finally:
        # Once the emulators are gone, their endpoints.json would only mislead whoever waits for the next start.
        with contextlib.suppress(OSError, ValueError):
            if json.loads(endpoints_file.read_text()) == published:
                endpoints_file.unlink()
        for runner in runners:
            await runner.cleanup()


def _announce(published: dict[str, Any], clock: VirtualClock) -> None:
    lines = ["Azure emulators are up (Ctrl-C stops them):"]
    for name, resource in published["openai"].items():
        lines.append(f"  Azure OpenAI  {name:<32} {resource['endpoint']}  api-key {resource['apiKey']}")
    lines.append(
        f"  ARM           {published['arm']['endpoint']}  subscription {published['arm']['subscriptionId']}"
        f"  resource group {published['arm']['resourceGroup']}"
    )
    lines.append(f"  Key Vault     {published['keyVault']['url']}  CA bundle {published['keyVault']['caBundle']}")
    identity = published["identity"]
    lines.append(f"  Identity      {identity['endpoint']}  X-IDENTITY-HEADER {identity['header']}")
    lines.append(f"  Control       {published['emulator']['control']}  time scale x{clock.scale:g}")
    print("\n".join(lines), flush=True)
