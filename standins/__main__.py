"""``python -m standins cloudrun|slack|secretmanager|sightapi|all`` -- run until signalled.

Examples::

    python -m standins cloudrun --port 8701 --cloudrun-seed dev/cloudrun.json
    python -m standins secretmanager --port 8703 --seed .local/secrets.json
    python -m standins all   # cloudrun :8701, slack :8702, secretmanager :8703, sightapi :8704

Logs one line per request to stderr; prints ``<name> listening on <url>`` per stand-in
once it accepts connections; exits 0 on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from flask import Flask

from standins import cloudrun, secretmanager, sightapi, slack
from standins._server import RunningServer, serve

DEFAULT_PORTS = {  # as `make dev`
    "cloudrun": 8701,
    "slack": 8702,
    "secretmanager": 8703,
    "sightapi": 8704,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m standins",
        description="Local stand-ins for Cloud Run Admin API v2, Slack webhooks, "
        "Secret Manager and the Sight API (see docs/standins.md).",
    )
    parser.add_argument("which", choices=["cloudrun", "slack", "secretmanager", "sightapi", "all"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=None, help="port of a single stand-in (0 = any free port)"
    )
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, dest=f"{name}_port")
    parser.add_argument(
        "--seed",
        type=Path,
        default=None,
        help='Secret Manager seed: a JSON file {"secret-name": "value"}',
    )
    parser.add_argument(
        "--cloudrun-seed",
        type=Path,
        default=None,
        help='Cloud Run seed: a JSON file {"services": [{project, location, service, image, '
        "revisions: [...], traffic: [...]}]}",
    )
    parser.add_argument(
        "--operation-polls",
        type=int,
        default=1,
        help="Cloud Run: GetOperation calls before an update is done (0 = at once)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def build_apps(args: argparse.Namespace) -> dict[str, Flask]:
    names = list(DEFAULT_PORTS) if args.which == "all" else [args.which]
    apps: dict[str, Flask] = {}
    for name in names:
        if name == "cloudrun":
            cr_state = cloudrun.CloudRunState(operation_polls=args.operation_polls)
            if args.cloudrun_seed is not None:
                cloudrun.seed_from_json(
                    cr_state, json.loads(args.cloudrun_seed.read_text(encoding="utf-8"))
                )
            apps[name] = cloudrun.create_app(cr_state)
        elif name == "slack":
            apps[name] = slack.create_app(slack.SlackState())
        elif name == "sightapi":
            apps[name] = sightapi.create_app(sightapi.SightApiState())
        else:
            sm_state = secretmanager.SecretManagerState()
            if args.seed is not None:
                sm_state.seed_file(args.seed)
            apps[name] = secretmanager.create_app(sm_state)
    return apps


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    log = logging.getLogger("standins")
    try:
        apps = build_apps(args)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.error("cannot start: %s", exc)  # noqa: TRY400 - a one-line reason is enough
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    servers: list[tuple[str, RunningServer]] = []
    try:
        for name, app in apps.items():
            port = (
                args.port
                if args.port is not None and len(apps) == 1
                else getattr(args, f"{name}_port")
            )
            server = serve(app, host=args.host, port=port)
            servers.append((name, server))
            log.info("%s listening on %s", name, server.url)
        while not stop.wait(0.5):
            pass
    except OSError as exc:
        log.error("cannot serve: %s", exc)  # noqa: TRY400
        return 2
    finally:
        for _, server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
