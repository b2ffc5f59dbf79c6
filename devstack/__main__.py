"""`python -m devstack <command>`: local Azure for development and tests."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535)")
    return port


def _time_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(scale) or scale <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return scale


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    emulators = commands.add_parser("emulators", help="run the Azure OpenAI, ARM, Key Vault and identity emulators")
    emulators.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    emulators.add_argument(
        "--port",
        type=_port,
        default=8480,
        help="HTTP port for Azure OpenAI, ARM, identity and control (0: any free port)",
    )
    emulators.add_argument(
        "--keyvault-port",
        type=_port,
        default=None,
        help="HTTPS port for Key Vault (default: --port + 1, or any free port with --port 0)",
    )
    emulators.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON file with resources, keys, deployments, quotas, speeds and faults",
    )
    emulators.add_argument(
        "--time-scale",
        type=_time_scale,
        default=None,
        help="emulated time runs N times faster (default: $DEVSTACK_TIME_SCALE or 1)",
    )
    emulators.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devstack"),
        help="where endpoints.json, the local CA bundle and the localhost certificate it issued are written",
    )
    emulators.add_argument(
        "--endpoints-file",
        type=Path,
        default=None,
        help="where to write endpoints.json (default: STATE_DIR/endpoints.json)",
    )
    emulators.add_argument("--fault-seed", type=int, default=None, help="seed for probabilistic fault rules")

    stack = commands.add_parser("up", help="run Azurite, the emulators and the Functions host together until Ctrl-C")
    stack.add_argument("--port", type=_port, default=8480, help="HTTP port of the emulators (Key Vault: port + 1)")
    stack.add_argument("--time-scale", type=_time_scale, default=1.0, help="emulated time runs N times faster")
    stack.add_argument(
        "--state-dir", type=Path, default=Path(".devstack"), help="where data, logs and endpoints.json live"
    )
    stack.add_argument("--config", type=Path, default=None, help="emulator config file")
    stack.add_argument(
        "--functions-port",
        type=_port,
        default=None,
        help="HTTP port of the Functions host (default: 7071; any free port with --port 0)",
    )
    stack.add_argument("--app", type=Path, default=None, help="the Functions app to host (default: the project)")
    stack.add_argument("--no-functions", action="store_true", help="do not start the Functions host")

    host = commands.add_parser(
        "host", help="run a Functions app (function_app.py) with HTTP, timer and Durable Functions triggers"
    )
    host.add_argument("--app", type=Path, default=Path("."), help="the app directory (default: the current one)")
    host.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    host.add_argument(
        "--port",
        type=_port,
        default=None,
        help="HTTP port (default: local.settings.json Host.LocalHttpPort, else 7071; 0: any free port)",
    )
    host.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devstack"),
        help="where the task hub (SQLite), functions.json and the CA bundle live (default: .devstack)",
    )
    host.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="app settings file (default: APP/local.settings.json, created from local.settings.sample.json)",
    )
    host.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an app setting that overrides the settings file and the environment (repeatable)",
    )
    host.add_argument("--function-key", default=None, help="the host's default function key (default: generated)")
    host.add_argument("--master-key", default=None, help="the host's master key (default: generated)")
    host.add_argument(
        "--time-scale",
        type=_time_scale,
        default=None,
        help="emulated time runs N times faster (default: $DEVSTACK_TIME_SCALE, else the task hub's last, else 1)",
    )
    host.add_argument(
        "--activity-concurrency",
        type=_positive_int,
        default=None,
        help="activities run at once (default: host.json maxConcurrentActivityFunctions, else 10)",
    )
    host.add_argument(
        "--endpoints-file",
        type=Path,
        default=None,
        help="the devstack endpoints.json to take identity and Key Vault CA from (default: STATE_DIR/endpoints.json)",
    )
    host.add_argument(
        "--info-file",
        type=Path,
        default=None,
        help="where to publish the base URL and keys (default: STATE_DIR/functions.json)",
    )
    host.add_argument(
        "--method-not-allowed",
        type=int,
        choices=(404, 405),
        default=404,
        help="status for a known route called with another method (Azure answers 404; default 404)",
    )

    demo = commands.add_parser("demo", help="run the main job end to end on the local stack (what `make demo` does)")
    demo.add_argument("--state-dir", type=Path, default=Path(".devstack"), help="where the stack keeps its data")
    demo.add_argument("--time-scale", type=_time_scale, default=20.0, help="emulated time runs N times faster")

    upload = commands.add_parser(
        "upload-input",
        help="upload a JSONL batch input file to the emulated Azure OpenAI resource and print its file id",
    )
    upload.add_argument("file", type=Path, help="the JSONL input file (one batch request per line)")
    upload.add_argument("--secret", default=None, help="also store the file id in the local Key Vault under this name")
    upload.add_argument(
        "--resource", default=None, help="the Azure OpenAI resource (default: the stack's first, the app's)"
    )
    upload.add_argument(
        "--endpoints-file",
        type=Path,
        default=Path(".devstack/endpoints.json"),
        help="the running stack's endpoints.json (default: .devstack/endpoints.json)",
    )

    args = parser.parse_args(argv)
    if args.command == "upload-input":
        from devstack.inputs import main as upload_input

        return upload_input(args.file, args.secret, args.resource, args.endpoints_file)
    if args.command == "demo":
        from devstack.demo import main as run_demo

        return run_demo(args.state_dir, args.time_scale)
    if args.command == "host":
        from devstack.host.server import HostOptions, run

        return run(
            HostOptions(
                app_dir=args.app,
                host=args.host,
                port=args.port,
                state_dir=args.state_dir,
                settings_file=args.settings,
                env=dict(args.env),
                function_key=args.function_key,
                master_key=args.master_key,
                time_scale=args.time_scale,
                activity_concurrency=args.activity_concurrency,
                endpoints_file=args.endpoints_file,
                info_file=args.info_file,
                method_not_allowed=args.method_not_allowed,
            )
        )
    if args.command == "up":
        from devstack.stack import USER_STORAGE_PORT, StackOptions, up

        functions_port = args.functions_port
        if functions_port is None:
            functions_port = 0 if args.port == 0 else 7071
        return up(
            StackOptions(
                port=args.port,
                time_scale=args.time_scale,
                state_dir=args.state_dir,
                config=args.config,
                functions_port=None if args.no_functions else functions_port,
                app=args.app,
                user_storage_port=0 if args.port == 0 else USER_STORAGE_PORT,
            )
        )
    if args.command == "emulators":
        from devstack.emulator.config import ConfigError
        from devstack.emulator.server import Options, serve

        if args.keyvault_port is None and args.port == 65535:
            emulators.error("--port 65535 leaves no port for Key Vault: give --keyvault-port")
        options = Options(
            host=args.host,
            port=args.port,
            keyvault_port=args.keyvault_port,
            config=args.config,
            time_scale=args.time_scale,
            state_dir=args.state_dir,
            endpoints_file=args.endpoints_file,
            fault_seed=args.fault_seed,
        )
        try:
            asyncio.run(serve(options))
        except ConfigError as exc:
            print(f"devstack: bad emulator config: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"devstack: cannot start the emulators: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C before the emulators were up to handle it
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
