"""Small pieces every devstack process needs: a listening socket, and JSON files other processes poll for."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: any free port), or OSError saying which address failed."""
    if not 0 <= port <= 65535:
        raise OSError(f"port {port} is out of range (0-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Writes the file whole or not at all, so a process polling for it never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
