"""The virtual clock shared by the emulators and the local host.

Emulated time runs `scale` times faster than real time from a shared real-time `epoch`, so a 24-hour batch can
be simulated in seconds. Both processes read the epoch and scale from the environment, so they agree on "now".
"""

from __future__ import annotations

import math
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
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise ValueError(f"time scale must be a number, not {self.scale!r}")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"time scale must be a positive finite number, not {self.scale!r}")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int | float) or not math.isfinite(self.epoch):
            raise ValueError(f"epoch must be a finite Unix time, not {self.epoch!r}")

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
        """The clock described by the environment (`scale`, when given, overrides $DEVSTACK_TIME_SCALE); a new
        epoch (now) when none is set. A malformed variable is a ValueError that names it."""
        epoch = _number(EPOCH_ENV, os.environ[EPOCH_ENV]) if os.environ.get(EPOCH_ENV) else time.time()
        if scale is None and os.environ.get(SCALE_ENV):
            scale = _number(SCALE_ENV, os.environ[SCALE_ENV])
            if not math.isfinite(scale) or scale <= 0:
                raise ValueError(f"{SCALE_ENV} must be a positive number, not {os.environ[SCALE_ENV]!r}")
        if not math.isfinite(epoch):
            raise ValueError(f"{EPOCH_ENV} must be a finite Unix time, not {os.environ[EPOCH_ENV]!r}")
        return cls(epoch=epoch, scale=1.0 if scale is None else scale)


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
