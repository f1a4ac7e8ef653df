"""``python -m standins cloudrun|slack|secretmanager|sightapi|monitoring|logging|storage|all``
-- run until signalled; ``python -m standins traffic`` -- send traffic for a while.

Examples::

    python -m standins cloudrun --port 8701 --cloudrun-seed dev/cloudrun.json
    python -m standins secretmanager --port 8703 --seed .local/secrets.json
    python -m standins all   # cloudrun :8701, slack :8702, secretmanager :8703, sightapi :8704
    python -m standins cloudrun --route-to http://127.0.0.1:8704   # serve revisions from it
    python -m standins monitoring   # admin http://127.0.0.1:8705, MetricService gRPC :8706
    python -m standins storage --storage-dir .local/gcs --storage-bucket sight-backups  # :8707
    python -m standins logging      # admin http://127.0.0.1:8708, LoggingServiceV2 gRPC :8709

With ``all``, the Cloud Monitoring, Cloud Logging and Cloud Storage stand-ins listen on
free ports unless ``--monitoring-port`` / ``--monitoring-grpc-port`` / ``--logging-port``
/ ``--logging-grpc-port`` / ``--storage-port`` are given (docs/standins.md).

With ``all``, the Cloud Run stand-in serves its services' URIs and tag URLs itself and
forwards them to the Sight API stand-in (docs/standins.md, "Serving revisions"), and
records every request a revision answers (status, measured latency) into the Cloud
Monitoring stand-in, which then accepts alignment periods down to 1 s (the local
canary's; the real API's minimum, 60 s, stays the default of ``monitoring`` alone), and
into the Cloud Logging stand-in as Cloud Run's request log entries.

``python -m standins traffic --url URL --rps N --duration S`` sends steady traffic to a
URL (standins/traffic.py) and prints what came back.

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

from standins import cloudrun, monitoring, secretmanager, sightapi, slack, storage
from standins import logging as logging_standin
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
        "Secret Manager, the Sight API, Cloud Monitoring, Cloud Logging and Cloud Storage "
        "(see docs/standins.md).",
    )
    parser.add_argument(
        "which",
        choices=[
            "cloudrun",
            "slack",
            "secretmanager",
            "sightapi",
            "monitoring",
            "logging",
            "storage",
            "all",
            "traffic",
        ],
    )
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
    parser.add_argument(
        "--route-to",
        default=None,
        help="Cloud Run: serve revisions by forwarding to this URL (with `all`: the Sight API "
        "stand-in)",
    )
    parser.add_argument(
        "--route-seed", type=int, default=None, help="Cloud Run: seed of the traffic split"
    )
    parser.add_argument(
        "--monitoring-port",
        type=int,
        default=None,
        help="Cloud Monitoring admin API (HTTP); default 8705, with `all` any free port",
    )
    parser.add_argument(
        "--monitoring-grpc-port",
        type=int,
        default=None,
        help="Cloud Monitoring MetricService (gRPC); default 8706, with `all` any free port",
    )
    parser.add_argument(
        "--monitoring-min-alignment-s",
        type=float,
        default=None,
        help="Cloud Monitoring: the smallest alignmentPeriod accepted; default 60 (the real "
        "API's), with `all` 1 (the local canary's)",
    )
    parser.add_argument(
        "--logging-port",
        type=int,
        default=None,
        help="Cloud Logging admin API (HTTP); default 8708, with `all` any free port",
    )
    parser.add_argument(
        "--logging-grpc-port",
        type=int,
        default=None,
        help="Cloud Logging LoggingServiceV2 (gRPC); default 8709, with `all` any free port",
    )
    parser.add_argument(
        "--storage-port",
        type=int,
        default=None,
        help="Cloud Storage JSON API; default 8707, with `all` any free port",
    )
    parser.add_argument(
        "--storage-dir",
        type=Path,
        default=None,
        help="Cloud Storage: keep object bytes in files under this directory (default: memory)",
    )
    parser.add_argument(
        "--storage-bucket",
        action="append",
        default=[],
        metavar="NAME",
        help="Cloud Storage: create this bucket at start (uniform access; repeatable)",
    )
    traffic = parser.add_argument_group("traffic (standins/traffic.py)")
    traffic.add_argument("--url", default=None, help="where to send it, e.g. a service URI")
    traffic.add_argument("--rps", type=float, default=10.0, help="requests per second")
    traffic.add_argument("--duration", type=float, default=60.0, help="seconds (Ctrl-C: sooner)")
    traffic.add_argument(
        "--path", action="append", default=None, help="path to request (repeat: random pick)"
    )
    traffic.add_argument("--traffic-seed", type=int, default=None, help="seed of the path pick")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _monitoring_ports(args: argparse.Namespace) -> None:
    """Fixed ports alone, free ports in `all` unless given: a caller that names only the
    other stand-ins' ports (two stacks side by side) must not collide on 8705-8709."""
    alone = args.which == "monitoring"
    if args.monitoring_port is None:
        args.monitoring_port = 8705 if alone else 0
    if args.monitoring_grpc_port is None:
        args.monitoring_grpc_port = 8706 if alone else 0
    if args.logging_port is None:
        args.logging_port = 8708 if args.which == "logging" else 0
    if args.logging_grpc_port is None:
        args.logging_grpc_port = 8709 if args.which == "logging" else 0
    if args.storage_port is None:
        args.storage_port = 8707 if args.which == "storage" else 0


def build_apps(args: argparse.Namespace) -> dict[str, Flask]:
    names = (
        [*DEFAULT_PORTS, "monitoring", "logging", "storage"]
        if args.which == "all"
        else [args.which]
    )
    apps: dict[str, Flask] = {}
    for name in names:
        if name == "cloudrun":
            cr_state = cloudrun.CloudRunState(
                operation_polls=args.operation_polls, route_seed=args.route_seed
            )
            if args.cloudrun_seed is not None:
                cloudrun.seed_from_json(
                    cr_state, json.loads(args.cloudrun_seed.read_text(encoding="utf-8"))
                )
            apps[name] = cloudrun.create_app(cr_state)
        elif name == "slack":
            apps[name] = slack.create_app(slack.SlackState())
        elif name == "sightapi":
            apps[name] = sightapi.create_app(sightapi.SightApiState())
        elif name == "monitoring":
            minimum = args.monitoring_min_alignment_s
            if minimum is None:
                minimum = 1.0 if args.which == "all" else 60.0
            apps[name] = monitoring.create_app(
                monitoring.MonitoringState(min_alignment_period_s=minimum)
            )
        elif name == "logging":
            apps[name] = logging_standin.create_app(logging_standin.LoggingState())
        elif name == "storage":
            gcs_state = storage.StorageState(storage_dir=args.storage_dir)
            for bucket in args.storage_bucket:
                gcs_state.create_bucket(bucket)
            apps[name] = storage.create_app(gcs_state)
        else:
            sm_state = secretmanager.SecretManagerState()
            if args.seed is not None:
                sm_state.seed_file(args.seed)
            apps[name] = secretmanager.create_app(sm_state)
    recorders = [apps[n].extensions["standin"] for n in ("monitoring", "logging") if n in apps]
    if "cloudrun" in apps and recorders:
        # Cloud Run's request metrics and request logs come from the requests its router
        # answers
        apps["cloudrun"].extensions["standin"].record_to(cloudrun.Recorders(*recorders))
    return apps


def _route(servers: dict[str, RunningServer], route_to: str | None) -> None:
    """Let the Cloud Run stand-in serve revisions at its own URL, forwarding to the Sight
    API stand-in (``all``) or to ``--route-to``."""
    running = servers.get("cloudrun")
    sight = servers.get("sightapi")
    upstream = route_to or (sight.url if sight is not None else None)
    if running is None or upstream is None:
        return
    state = running.app.extensions["standin"]
    state.configure(serve_base=running.url, upstream=upstream)


def _traffic(args: argparse.Namespace, log: logging.Logger) -> int:
    """Send steady traffic for ``--duration`` seconds (or until signalled); print the
    report as JSON on stdout."""
    if not args.url or not args.url.startswith(("http://", "https://")):
        log.error("traffic needs --url http(s)://...")
        return 2
    from standins.traffic import Traffic

    try:
        sender = Traffic(args.url, args.rps, path=args.path or ["/health"], seed=args.traffic_seed)
    except ValueError as exc:
        log.error("cannot start: %s", exc)  # noqa: TRY400 - a one-line reason is enough
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("traffic: %g requests/s to %s for %gs", args.rps, args.url, args.duration)
    sender.start(args.duration)
    stop.wait(args.duration)
    report = sender.stop()
    print(json.dumps(report.to_json(), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _monitoring_ports(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    log = logging.getLogger("standins")
    if args.which == "traffic":
        return _traffic(args, log)
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
    grpc_servers: list[monitoring.GrpcServer] = []
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
        for name, serve_grpc in (
            ("monitoring", monitoring.serve_grpc),
            ("logging", logging_standin.serve_grpc),
        ):
            if name in apps:
                state = apps[name].extensions["standin"]
                grpc_servers.append(
                    serve_grpc(state, args.host, getattr(args, f"{name}_grpc_port"))
                )
                log.info("%s gRPC listening on %s", name, grpc_servers[-1].target)
        _route(dict(servers), args.route_to)
        while not stop.wait(0.5):
            pass
    except OSError as exc:
        log.error("cannot serve: %s", exc)  # noqa: TRY400
        return 2
    finally:
        for _, server in servers:
            server.stop()
        for grpc_server in grpc_servers:
            grpc_server.stop()
        if "storage" in apps:
            apps["storage"].extensions["standin"].close()  # its files under --storage-dir
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
