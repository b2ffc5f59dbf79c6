"""Everything one emulator process holds: configuration, clock, token issuer, resources, vault, faults, log."""

from __future__ import annotations

import copy

from devstack.clock import VirtualClock
from devstack.emulator.batches import ResourceState
from devstack.emulator.config import EmulatorConfig
from devstack.emulator.faults import FaultInjector, RequestLog
from devstack.emulator.tokens import TokenIssuer
from devstack.emulator.user_blobs import UserBlobs
from devstack.emulator.vault import SecretStore


class EmulatorState:
    def __init__(self, config: EmulatorConfig, clock: VirtualClock, fault_seed: int | None = None) -> None:
        self._pristine = copy.deepcopy(config)
        self.config = config
        self.clock = clock
        self.issuer = TokenIssuer(config.tenant_id)
        self.user_blobs = UserBlobs(self.issuer)
        self.faults = FaultInjector([], seed=fault_seed)
        self.log = RequestLog()
        self.openai: dict[str, ResourceState] = {}
        self.vault = SecretStore()
        self.reset()

    def reset(self) -> None:
        """Back to the configured start: deployments, speeds, secrets and faults as configured, no files, batches
        or logged requests; keys stay the same."""
        self.config = copy.deepcopy(self._pristine)
        self.openai = {name: ResourceState(resource, self.config) for name, resource in self.config.resources.items()}
        self.vault = SecretStore()
        for name, value in self.config.key_vault.secrets.items():
            self.vault.set(name, value)
        self.faults.replace(self.config.faults)
        self.log.clear()
