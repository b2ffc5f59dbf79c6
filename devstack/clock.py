"""The virtual clock shared by the emulators and the local host.

Emulated time runs `scale` times faster than real time from a shared real-time `epoch`, so a 24-hour batch can
be simulated in seconds. Both processes read the epoch and scale from the environment, so they agree on "now".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

EPOCH_ENV = "DEVSTACK_EPOCH"
SCALE_ENV = "DEVSTACK_TIME_SCALE"


@dataclass(frozen=True)
class VirtualClock:
    epoch: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("time scale must be positive")

    def now(self) -> float:
        """Emulated Unix time, in seconds."""
        return self.epoch + (time.time() - self.epoch) * self.scale

    def real_delay(self, virtual_seconds: float) -> float:
        """Real seconds that pass while `virtual_seconds` of emulated time go by."""
        return max(0.0, virtual_seconds) / self.scale

    def to_env(self) -> dict[str, str]:
        return {EPOCH_ENV: repr(self.epoch), SCALE_ENV: repr(self.scale)}

    @classmethod
    def from_env(cls, scale: float | None = None) -> VirtualClock:
        """The clock described by the environment; a new epoch (now) when none is set."""
        epoch = float(os.environ.get(EPOCH_ENV) or time.time())
        if scale is None:
            scale = float(os.environ.get(SCALE_ENV) or 1.0)
        return cls(epoch=epoch, scale=scale)
