"""The app's environment as Core Tools and App Service give it: app settings from local.settings.json, host.json,
managed identity and the certificates the local Key Vault needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SETTING_REFERENCE = re.compile(r"%([^%]+)%")


class HostConfigError(Exception):
    """The host cannot start with this app or these options; the message says why (exit code 2)."""


@dataclass
class AppSettings:
    values: dict[str, str]
    source: Path | None = None
    local_http_port: int | None = None
    notes: list[str] = field(default_factory=list)


def load_settings(app_dir: Path, settings_file: Path | None, overrides: dict[str, str]) -> AppSettings:
    """local.settings.json `Values` (created from local.settings.sample.json when missing, as Core Tools users do;
    an explicit --settings file must exist), then the --env overrides."""
    notes: list[str] = []
    path = settings_file
    if path is None:
        path = app_dir / "local.settings.json"
        sample = app_dir / "local.settings.sample.json"
        if not path.exists() and sample.exists():
            shutil.copyfile(sample, path)
            notes.append(f"created {path} from {sample.name}")
    elif not path.exists():
        raise HostConfigError(f"settings file {path} does not exist")
    values: dict[str, str] = {}
    port: int | None = None
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise HostConfigError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise HostConfigError(f"{path} must hold a JSON object")
        if data.get("IsEncrypted"):
            raise HostConfigError(f"{path} is encrypted (IsEncrypted: true); decrypt it first")
        raw = data.get("Values") or {}
        if not isinstance(raw, dict):
            raise HostConfigError(f"{path}: Values must be an object")
        for key, value in raw.items():
            if not isinstance(value, str):
                raise HostConfigError(f"{path}: Values.{key} must be a string, not {json.dumps(value)}")
            values[key] = value
        host = data.get("Host") or {}
        if isinstance(host, dict) and host.get("LocalHttpPort") is not None:
            try:
                port = int(host["LocalHttpPort"])
            except (TypeError, ValueError) as exc:
                raise HostConfigError(f"{path}: Host.LocalHttpPort must be a port number") from exc
    else:
        notes.append(f"no {path.name} in {app_dir}: running without app settings")
    return AppSettings({**values, **overrides}, path if path.exists() else None, port, notes)


def apply_settings(settings: AppSettings, overrides: dict[str, str]) -> list[str]:
    """Puts the app settings into os.environ. As with Core Tools, a variable already set in the environment wins
    over local.settings.json; --env wins over both."""
    notes = []
    for key, value in settings.values.items():
        if key in overrides:
            os.environ[key] = value
        elif key in os.environ and os.environ[key] != value:
            notes.append(f"skipping '{key}' from local.settings.json: already set in the environment")
        else:
            os.environ[key] = value
    return notes


def resolve(text: str) -> str:
    """`%NAME%` references to app settings, as the host resolves binding properties; KeyError names a missing one."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(name)
        return os.environ[name]

    return SETTING_REFERENCE.sub(lookup, text)


def read_host_json(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "host.json"
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except ValueError:
        try:  # host.json tolerates // comments
            data = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
        except ValueError as exc:
            raise HostConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise HostConfigError(f"{path} must hold a JSON object")
    return data


def read_endpoints(path: Path) -> dict[str, Any]:
    """The devstack's endpoints.json, or {} when the emulators are not running."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def wire_devstack(endpoints: dict[str, Any], bundle_path: Path) -> list[str]:
    """Managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER) from this stack's identity emulator — always, as the
    platform sets them whatever the app's environment says (an inherited pair would point at another emulator whose
    tokens this stack refuses) — and REQUESTS_CA_BUNDLE/SSL_CERT_FILE pointing at a bundle of the CAs trusted so
    far plus the local Key Vault's CA, so that unchanged Azure SDK code authenticates and trusts the local vault.
    The stack's user-storage account (`devstack up`) is added to INPUT_BLOB_ENDPOINTS, so that `blobUrl` inputs and
    blob runs may name it as they name `<account>.blob.core.windows.net` in Azure."""
    notes = []
    identity = endpoints.get("identity") or {}
    if identity.get("endpoint") and identity.get("header"):
        os.environ["IDENTITY_ENDPOINT"] = str(identity["endpoint"])
        os.environ["IDENTITY_HEADER"] = str(identity["header"])
        notes.append(f"managed identity: {identity['endpoint']}")
    user_blobs = str((endpoints.get("userStorage") or {}).get("blobEndpoint") or "").rstrip("/")
    if user_blobs:
        allowed = [e.strip() for e in os.environ.get("INPUT_BLOB_ENDPOINTS", "").split(",") if e.strip()]
        if user_blobs not in (e.rstrip("/") for e in allowed):
            os.environ["INPUT_BLOB_ENDPOINTS"] = ",".join([*allowed, user_blobs])
        notes.append(f"blob inputs may come from the user storage: {user_blobs}")
    ca = (endpoints.get("keyVault") or {}).get("caBundle")
    if ca and Path(ca).exists():
        parts = [_trusted_cas(), Path(ca).read_text()]
        bundle_path.parent.mkdir(parents=True, exist_ok=True)
        bundle_path.write_text("".join(p.strip() + "\n" for p in parts if p.strip()))
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle_path)
        os.environ["SSL_CERT_FILE"] = str(bundle_path)
        notes.append(f"CA bundle with the local Key Vault CA: {bundle_path}")
    return notes


def _trusted_cas() -> str:
    """The CAs HTTPS clients would trust without us: the bundles REQUESTS_CA_BUNDLE / SSL_CERT_FILE already name
    (a corporate proxy's CA, say), else certifi's bundle (what requests uses), else OpenSSL's default file."""
    named = []
    for variable in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(variable)
        if path and Path(path).is_file() and path not in named:
            named.append(path)
    if named:
        return "".join(Path(path).read_text() + "\n" for path in named)
    try:
        import certifi

        return Path(certifi.where()).read_text()
    except (ImportError, OSError):
        pass
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).exists():
        return Path(cafile).read_text()
    return ""
