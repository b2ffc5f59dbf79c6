"""Azurite (Azure Storage emulator, from the project's node_modules): command lines and connection strings.

Two kinds: the app's own storage (blob, queue and table over HTTP, `UseDevelopmentStorage=true`), and a "user
storage" account, blob only, over HTTPS with the local CA's certificate, that accepts OAuth bearer tokens as Azure
Storage does — where a user keeps input blobs that the app reads with its managed identity.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
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


def user_storage_command(
    port: int, certificate: Path, private_key: Path, location: Path | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """Azurite's blob service over HTTPS with this certificate, accepting bearer tokens with `--oauth basic` (it
    checks a token's issuer, audience and lifetime, not its signature) as well as the account key; in memory unless
    `location` is given."""
    if not AZURITE_BLOB.exists():
        raise FileNotFoundError(f"{AZURITE_BLOB} is missing: run `make install` (npm ci) first")
    args = [
        str(AZURITE_BLOB),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        "--oauth",
        "basic",
        "--cert",
        str(certificate),
        "--key",
        str(private_key),
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        args += ["--location", str(location)]
    return args


def user_storage_endpoint(port: int, host: str = "127.0.0.1") -> str:
    """The account's blob endpoint: `https://<account>.blob.core.windows.net` in Azure, path-style here."""
    return f"https://{host}:{port}/{ACCOUNT}"


def user_storage_connection_string(port: int, host: str = "127.0.0.1") -> str:
    """Shared-key access over HTTPS, for putting test data there (the app itself reads with its identity)."""
    return (
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={user_storage_endpoint(port, host)};"
    )


def user_storage_answers(port: int, ca_bundle: Path, host: str = "127.0.0.1") -> bool:
    """Whether the user-storage Azurite answers HTTPS with a certificate the CA bundle verifies."""
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        urllib.request.urlopen(f"https://{host}:{port}/{ACCOUNT}?comp=list", timeout=1, context=context)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (it wants credentials) means the blob service is listening
    except OSError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
