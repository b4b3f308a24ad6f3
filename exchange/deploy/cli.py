"""``exchange cluster``: the three-node cluster of compose.yaml, and the same on loopback.

- ``exchange cluster init --out DIR [--hosts compose|loopback] [--client-ports A,B,C]
  [--route-ports A,B,C] [--monitoring-ports A,B,C]``: writes the secrets and configs into DIR
  (``creds/<user>/<user>.json``, ``nats/<node>/nats-server.conf``, ``routes.json``); a secret that
  exists is kept. Prints one JSON line: the users, the nodes, and which credentials were made.
- ``exchange cluster register --creds ADMIN_FILE [--nats URLS]``: registers every
  worker of the roster as admin; a re-run gets the first replies. Prints one JSON line.
- ``exchange cluster compose``: prints compose.yaml (the committed file is exactly this).

The ports options are for ``--hosts loopback`` (compose's nodes all use 4222, 6222 and 8222).
Exit statuses as the CLI's: 1 refused, 2 bad arguments, 3 no exchange answered.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import anyio
import msgspec

from exchange.daemon.creds import CredentialsFileError, read_credentials
from exchange.daemon.natsserver import NatsConfigError
from exchange.deploy import cluster
from exchange.deploy.bootstrap import (
    ClusterInitError,
    RegistrationError,
    RegistrationRefusedError,
    init_cluster,
    register_roster,
)
from exchange.render import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, parse_or_status
from protocols.logs import configure_logging


def _ports(text: str) -> tuple[int, int, int]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        ports = ()
    if len(ports) != 3 or not all(1 <= port <= 65535 for port in ports):
        raise argparse.ArgumentTypeError(f"expected three ports like 4222,4223,4224, got {text!r}")
    return ports[0], ports[1], ports[2]


def _topology_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hosts",
        choices=["compose", "loopback"],
        default="compose",
        help="compose: nodes nats-1..3 of compose.yaml (default); loopback: 127.0.0.1",
    )
    parser.add_argument("--client-ports", type=_ports, default=(4222, 4223, 4224))
    parser.add_argument("--route-ports", type=_ports, default=(6222, 6223, 6224))
    parser.add_argument("--monitoring-ports", type=_ports, default=(8222, 8223, 8224))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="write the secrets and node configs into --out")
    init.add_argument("--out", type=Path, required=True, metavar="DIR")
    _topology_options(init)
    register = sub.add_parser("register", help="register the roster's agents (as admin)")
    register.add_argument("--creds", type=Path, required=True, metavar="FILE", help="admin's")
    register.add_argument("--nats", metavar="URLS", help="default: the credentials file's")
    register.add_argument("--log-json", action="store_true")
    sub.add_parser("compose", help="print compose.yaml")
    return parser


def topology_for(args: argparse.Namespace, out_dir: Path) -> cluster.Topology:
    if args.hosts == "compose":
        return cluster.compose_topology()
    return cluster.loopback_topology(
        str(out_dir.resolve()),
        client_ports=args.client_ports,
        route_ports=args.route_ports,
        monitoring_ports=args.monitoring_ports,
    )


def _print_json(stdout: TextIO, value: object) -> None:
    stdout.write(msgspec.json.encode(value).decode() + "\n")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    configure_logs: bool = True,
) -> int:
    """``exchange cluster``; ``configure_logs=False`` leaves logging as the caller set it."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = parse_or_status(build_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if args.action == "compose":
        out.write(cluster.compose_text())
        return EXIT_OK
    if configure_logs:
        configure_logging(
            log_format="json" if getattr(args, "log_json", False) else "auto",
            level="warning",
            stream=err,
        )
    if args.action == "init":
        try:
            report = init_cluster(args.out, topology_for(args, args.out))
        except (ClusterInitError, CredentialsFileError, NatsConfigError, OSError) as exc:
            err.write(f"exchange cluster init: {exc}\n")
            return EXIT_REFUSED
        _print_json(out, report)
        return EXIT_OK
    assert args.action == "register", args
    try:
        admin = read_credentials(args.creds)
    except CredentialsFileError as exc:
        err.write(f"exchange cluster register: {exc}\n")
        return EXIT_USAGE
    if admin is None:
        err.write(
            f"exchange cluster register: no credentials at {args.creds}; `exchange cluster init` "
            "writes the admin's into DIR/creds/admin/admin.json\n"
        )
        return EXIT_USAGE
    if args.nats is not None:
        admin = msgspec.structs.replace(admin, url=args.nats)
    try:
        # The roster is the same whatever the addresses; the credentials say where to connect.
        registered = anyio.run(
            register_roster, cluster.compose_topology(), admin, backend="asyncio"
        )
    except RegistrationError as exc:
        err.write(f"exchange cluster register: {exc}\n")
        return EXIT_REFUSED if isinstance(exc, RegistrationRefusedError) else EXIT_UNREACHABLE
    _print_json(out, registered)
    return EXIT_OK
