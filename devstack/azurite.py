"""Azurite (Azure Storage emulator, from the project's node_modules): command line and connection string."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account (public; the same in every Azurite install).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> AzuritePorts:
        """Three ports free right now (Azurite cannot pick its own and report them)."""
        sockets = [socket.socket() for _ in range(3)]
        try:
            for sock in sockets:
                sock.bind((host, 0))
            blob, queue, table = (sock.getsockname()[1] for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        return cls(blob, queue, table)


def command(ports: AzuritePorts, location: Path | None = None, host: str = "127.0.0.1") -> list[str]:
    """Azurite for blob, queue and table; in memory unless `location` is given. Telemetry off: no traffic leaves
    the machine."""
    if not AZURITE.exists():
        raise FileNotFoundError(f"{AZURITE} is missing: run `make install` (npm ci) first")
    args = [
        str(AZURITE),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost",
        host,
        "--blobPort",
        str(ports.blob),
        "--queueHost",
        host,
        "--queuePort",
        str(ports.queue),
        "--tableHost",
        host,
        "--tablePort",
        str(ports.table),
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        args += ["--location", str(location)]
    return args


def connection_string(ports: AzuritePorts, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{ports.blob}/{ACCOUNT};QueueEndpoint=http://{host}:{ports.queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{ports.table}/{ACCOUNT};"
    )
