"""``exchange``: the command line. ``up`` runs the daemon; every other verb is a client or a reader.

Owns: the argument parser, and for each verb the one thing it does: ``up`` (the daemon, until
SIGINT/SIGTERM), the network verbs of ``verbs.py`` (a query, or a command with a fresh UUID
request id kept across retries; as admin, or with ``--creds FILE`` as that file's user),
``doctor`` and ``export`` (the journal, read-only), ``creds`` and ``config show`` (files of the
data directory), ``simulate`` (``exchange.sim.cli``, when present), ``dashboard``
(``exchange.dashboard.cli``), ``completion`` (a shell
script from this parser); ``--version``. ``agent register`` is parsed here, ``agent ROLE`` (a
worker) is handed to ``agents.cli``. Tables are shaped per verb in ``views.py``.
Every verb but ``completion`` takes ``--json``: the result object on success (``up``: one ready
line); ``{"error": {"code", "message"}}`` and a non-zero status otherwise (see render.py for the
statuses).
Must not: hold business rules, or print anything but results to stdout.
"""

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from exchange.cli import verbs
from exchange.cli.completion import SHELLS, completion_script
from exchange.cli.failures import failure_line, leaf_exceptions
from exchange.cli.views import VIEWS
from exchange.core.config import ConfigError, default_toml, parse_config
from exchange.daemon import limits
from exchange.daemon.creds import CredentialsFileError, read_credentials
from exchange.daemon.endpoint import EndpointFileError, read_endpoint
from exchange.daemon.settings import DataPaths, Settings
from exchange.errors import ExchangeError
from exchange.journal import (
    ExportFormat,
    Journal,
    JournalError,
    export_postings,
    high_water_path,
)
from exchange.locate import DATA_DIR_DEFAULT, LocateError, acting_credentials
from exchange.render import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Output,
    parse_or_status,
)
from protocols.client import connect
from protocols.client_errors import ClientError, ExchangeUnavailableError
from protocols.credentials import Credentials, credentials_fields
from protocols.ids import ADMIN
from protocols.logs import configure_logging
from protocols.units import NS_PER_US, US_PER_S

if TYPE_CHECKING:
    from exchange.cli.doctor import DoctorReport
    from exchange.daemon.app import ExchangeHandle

# 128 + SIGPIPE, what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE = 141

log = structlog.get_logger()


def _common(parser: argparse.ArgumentParser, *, network: bool) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA_DIR_DEFAULT,
        metavar="DIR",
        help="the exchange's data directory (default ./.exchange)",
    )
    if network:
        parser.add_argument(
            "--nats", metavar="URL", help="the NATS server (default: EXCHANGE_NATS_URL, else DIR)"
        )
        parser.add_argument("--timeout-s", type=float, default=5.0, help="per attempt")
        parser.add_argument(
            "--creds",
            type=Path,
            metavar="FILE",
            help="act as this file's user (DATA/creds/<agent>.json) instead of admin",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange", description="Agent Exchange: payments and coordination for agent swarms."
    )
    parser.add_argument("--version", action="version", version=f"exchange {_version()}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = sub.add_parser("up", help="run the exchange (and its own nats-server)")
    _common(up, network=False)
    where = up.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=limits.nats_port_default, help="embedded")
    where.add_argument("--nats", metavar="URL", help="join this NATS server instead")
    up.add_argument(
        "--host", default="127.0.0.1", help="the embedded server's address (secure mode only)"
    )
    up.add_argument("--open", action="store_true", help="no authentication (loopback only)")
    up.add_argument(
        "--passwords",
        action="store_true",
        help="new users get plaintext passwords, not nkeys (for clients without nkey support)",
    )
    tls = up.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls-generate",
        action="store_true",
        help="require TLS: a CA and a server certificate made once in DATA/tls/",
    )
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="require TLS with this cert")
    up.add_argument("--tls-key", type=Path, metavar="FILE", help="the key of --tls-cert")
    up.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="the CA clients verify --tls-cert with"
    )
    up.add_argument(
        "--journal",
        choices=["sqlite", "jetstream"],
        default="sqlite",
        help="sqlite: a file in --data (default); jetstream: a replicated stream on --nats",
    )
    up.add_argument(
        "--replicas", type=_positive_int, default=3, metavar="R", help="jetstream replicas (3)"
    )
    up.add_argument(
        "--standby", action="store_true", help="jetstream: follow the leader, take over if it dies"
    )
    up.add_argument(
        "--cluster-name", default="exchange", metavar="NAME", help="jetstream: names its streams"
    )
    up.add_argument(
        "--lease-ttl",
        type=float,
        default=limits.lease_ttl_s_default,
        metavar="S",
        help="jetstream: how long a silent leader keeps the lease (failover time)",
    )
    up.add_argument(
        "--nats-creds", type=Path, metavar="FILE", help="credentials to join --nats with"
    )
    up.add_argument("--config", type=Path, metavar="FILE", help="economy TOML for a new journal")
    up.add_argument("--log-json", action="store_true", help="JSON logs even on a terminal")
    up.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="P",
        help="serve Prometheus metrics on http://HOST:P/metrics",
    )
    up.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the metrics endpoint's address (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.add_argument(
        "--snapshot-every",
        type=_positive_int,
        default=limits.snapshot_every_commands,
        metavar="N",
        help="snapshot the state every N commands (a restart replays at most N)",
    )
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for verb in verbs.NET_VERBS:
        target = sub
        if len(verb.words) == 2:
            if verb.words[0] not in groups:
                group = sub.add_parser(
                    verb.words[0], help=_GROUP_HELP.get(verb.words[0], f"{verb.words[0]} verbs")
                )
                groups[verb.words[0]] = group.add_subparsers(
                    dest="subverb", required=True, metavar="SUBVERB"
                )
            target = groups[verb.words[0]]
        child = target.add_parser(verb.words[-1], help=verb.help)
        _common(child, network=True)
        verb.add_arguments(child)
        if verb.mutating:
            child.add_argument("--request-id", help="reuse an id to retry (default: a new UUID)")
        child.set_defaults(net_verb=verb)
    doctor = sub.add_parser("doctor", help="check the journal: chain, replay, digest, invariants")
    _common(doctor, network=False)
    doctor.add_argument(
        "--journal",
        choices=["sqlite", "jetstream"],
        default="sqlite",
        help="jetstream: check the replicated journal on --nats instead of DATA's file",
    )
    doctor.add_argument("--nats", metavar="URL", help="the cluster (with --journal jetstream)")
    doctor.add_argument("--cluster-name", default="exchange", metavar="NAME")
    doctor.add_argument("--creds", type=Path, metavar="FILE", help="credentials for --nats")
    export = sub.add_parser("export", help="the transaction history (postings) as CSV or JSON")
    _common(export, network=False)
    export.add_argument("--format", choices=["csv", "json"], help="default csv (json with --json)")
    export.add_argument("--agent", help="only postings to or from this account")
    export.add_argument("--since", help="RFC 3339 time or integer ns since the epoch")
    export.add_argument("--output", type=Path, help="write here instead of stdout")
    imported = sub.add_parser(
        "import",
        help="a new exchange in --data with the balances and history of an export, or the "
        "balances of seed-1 wallet files",
    )
    _common(imported, network=False)
    imported.add_argument(
        "source", type=Path, help="an export (.csv, .json), a .wallet file, or seed 1's .exchange/"
    )
    imported.add_argument("--config", type=Path, help="the economy's TOML (default: the defaults)")
    imported.add_argument(
        "--balances-only",
        action="store_true",
        help="an export's balances alone (one opening entry per agent), not its history",
    )
    creds = sub.add_parser("creds", help="what a NATS client needs to connect as AGENT")
    _common(creds, network=False)
    creds.add_argument("agent")
    config = sub.add_parser("config", help="the economy's configuration")
    config_sub = config.add_subparsers(dest="subverb", required=True, metavar="SUBVERB")
    _common(
        config_sub.add_parser("show", help="print the active (or default) config"), network=False
    )
    completion = sub.add_parser(
        "completion", help='a shell completion script: eval "$(exchange completion bash)"'
    )
    completion.add_argument("shell", choices=SHELLS)
    for name, text in _DELEGATED_HELP.items():
        if name not in groups:  # `agent`: `agent register` is parsed here, `agent ROLE` delegated
            sub.add_parser(name, help=text, add_help=False)
    return parser


def _version() -> str:
    """The installed package's version (``unknown`` when run from a tree that is not installed)."""
    try:
        return package_version("agent-exchange")
    except PackageNotFoundError:
        return "unknown"


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    configure_logs: bool = True,
) -> int:
    """Runs one CLI verb; returns the exit status. Tests pass their own streams."""
    out_stream = stdout or sys.stdout
    try:
        return _main(argv, out_stream, stderr or sys.stderr, configure_logs)
    except BrokenPipeError:
        # The reader went away (`exchange tasks | head`): stop quietly, as Unix tools do, and
        # keep the interpreter's final flush from raising again on the closed pipe.
        if out_stream is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(
    argv: Sequence[str] | None, out_stream: TextIO, err_stream: TextIO, configure_logs: bool
) -> int:
    args_list = _limits_show(list(sys.argv[1:] if argv is None else argv))
    if args_list[:1] and args_list[0] in _DELEGATED_HELP and args_list[:2] != ["agent", "register"]:
        # These commands own their arguments and output; they run their own parsers.
        if configure_logs and args_list[0] in ("hook", "issues"):
            configure_logging(level="warning", stream=err_stream)
        return _delegate(args_list[0], args_list[1:], out_stream, err_stream, configure_logs)
    args = parse_or_status(build_parser(), args_list)
    if isinstance(args, int):
        return args
    output = Output(json_mode=getattr(args, "json", False), stdout=out_stream, stderr=err_stream)
    if configure_logs:
        configure_logging(
            log_format="json" if getattr(args, "log_json", False) else "auto",
            level=getattr(args, "log_level", "warning"),
            stream=err_stream,
        )
    try:
        return _dispatch(args, output)
    except BrokenPipeError:
        raise  # main's: not a file the CLI failed to read
    except (CredentialsFileError, EndpointFileError, OSError) as exc:
        return output.error({"code": "local_file_unreadable", "message": str(exc)})


def _dispatch(args: argparse.Namespace, output: Output) -> int:
    if args.verb == "up":
        return _up(args, output)
    if hasattr(args, "net_verb"):
        return anyio.run(_network, args, output, backend="asyncio")
    if args.verb == "doctor":
        return _doctor(args, output)
    if args.verb == "export":
        return _export(args, output)
    if args.verb == "import":
        return _import(args, output)
    if args.verb == "creds":
        return _creds(args, output)
    if args.verb == "completion":
        output.stdout.write(completion_script(build_parser(), args.shell))
        return EXIT_OK
    assert args.verb == "config" and args.subverb == "show", args
    return _config_show(args, output)


def _limits_show(argv: list[str]) -> list[str]:
    """``limits AGENT`` is short for ``limits show AGENT`` (``limits set AGENT`` changes them)."""
    if argv[:1] == ["limits"] and len(argv) > 1 and argv[1] not in ("show", "set", "-h", "--help"):
        return ["limits", "show", *argv[1:]]
    return argv


def _credentials(args: argparse.Namespace) -> Credentials:
    """Admin's (``locate``), or the ``--creds`` file's, its URL replaced by ``--nats``.

    Raises LocateError, CredentialsFileError, EndpointFileError.
    """
    return acting_credentials(args.nats, args.data, args.creds)


def _sender(request: verbs.CommandRequest, user: str | None) -> str:
    """Who sends ``request``: the agent it names, else the acting user (``--creds``) or admin.

    Raises ValueError when it names an agent other than the ``--creds`` user (the server would
    refuse the publish; this says why in one line).
    """
    if user is None:
        return request.sender or ADMIN
    if request.sender is not None and request.sender != user:
        raise ValueError(
            f"--creds acts as {user!r}, but this command would be sent by {request.sender!r}: "
            f"name {user!r}, or drop --creds to act as admin"
        )
    return user


async def _network(args: argparse.Namespace, output: Output) -> int:
    verb: verbs.NetVerb = args.net_verb
    title = " ".join(verb.words)
    try:
        request = verb.request(args)  # ValueError: an option the verb cannot send
        credentials = _credentials(args)
        sender = None
        if isinstance(request, verbs.CommandRequest):
            sender = _sender(request, credentials.user if args.creds else None)
    except LocateError as exc:
        return output.error(
            {"code": "exchange_not_found", "message": str(exc)}, status=EXIT_UNREACHABLE
        )
    except ValueError as exc:
        return output.error({"code": "invalid_argument", "message": str(exc)}, status=EXIT_USAGE)
    try:
        # One short call: no reconnecting (a first connection that fails then fails at once);
        # retries happen per request, with the same request id.
        async with connect(
            credentials, request_timeout_s=args.timeout_s, reconnect=False
        ) as client:
            # The envelope as it came: --json prints the result, or the refusal, unchanged.
            if sender is None:
                assert isinstance(request, verbs.QueryRequest), request
                envelope = await client.query_envelope(request.verb, request.body)
            else:
                envelope = await client.command_envelope(
                    sender, request.verb, request.body, request_id=args.request_id
                )
    except LocateError as exc:
        return output.error(
            {"code": "exchange_not_found", "message": str(exc)}, status=EXIT_UNREACHABLE
        )
    except ExchangeUnavailableError as exc:
        return output.error(
            {"code": "exchange_unreachable", "message": str(exc)}, status=EXIT_UNREACHABLE
        )
    except ClientError as exc:
        return output.error({"code": "reply_malformed", "message": str(exc)})
    if envelope.ok:
        status = output.result(envelope.result, title=title, view=VIEWS.get(title))
        if title == "agent register":
            _point_at_credentials(args, output)
        return status
    assert envelope.error is not None
    return output.error(msgspec.to_builtins(envelope.error))


def _point_at_credentials(args: argparse.Namespace, output: Output) -> None:
    """After ``agent register``, one line on stderr: where the new agent's credentials are."""
    paths = DataPaths(args.data)
    path = paths.creds(args.agent)
    if path.is_file():
        line = f"credentials: {path}"
    else:
        endpoint = read_endpoint(paths.endpoint)
        if endpoint is not None and not endpoint.secure:
            line = "open mode: the agent connects with no credentials (--nats URL)"
        else:
            line = f"credentials: creds/{args.agent}.json in the exchange's data directory"
    output.errors.print(line, markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------------- up


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _journal_problem(args: argparse.Namespace) -> str | None:
    """Why the journal options of ``up`` do not go together, or None."""
    if args.journal == "jetstream" and args.nats is None:
        return (
            "--journal jetstream keeps the journal on a NATS cluster: give it with --nats URL "
            "(comma-separated for several nodes)"
        )
    if args.journal == "sqlite" and args.standby:
        return "--standby follows a replicated journal: add --journal jetstream --nats URL"
    return None


def _tls_problem(args: argparse.Namespace) -> str | None:
    """Why the TLS options of ``up`` do not go together, or None."""
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    if args.tls_ca is not None and args.tls_cert is None:
        return "--tls-ca names the CA of --tls-cert; pass both (--tls-generate makes its own)"
    if (args.tls_generate or args.tls_cert is not None) and (args.open or args.nats):
        return "TLS is for the embedded server in secure mode: drop --open or --nats"
    return None


def _up(args: argparse.Namespace, output: Output) -> int:
    try:
        config_text = None if args.config is None else args.config.read_text(encoding="utf-8")
        if config_text is not None:
            parse_config(config_text)
    except (OSError, ConfigError) as exc:
        return output.error({"code": "config_invalid", "message": f"--config: {exc}"})
    if (problem := _tls_problem(args) or _journal_problem(args)) is not None:
        return output.error({"code": "invalid_argument", "message": problem}, status=EXIT_USAGE)
    settings = Settings(
        data_dir=args.data,
        nats_url=args.nats,
        nats_host=args.host,
        nats_port=args.port,
        open_mode=args.open,
        passwords=args.passwords,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_ca_file=args.tls_ca,
        tls_generate=args.tls_generate,
        config_text=config_text,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        snapshot_every_commands=args.snapshot_every,
        journal_backend=args.journal,
        replicas=args.replicas,
        standby=args.standby,
        cluster_name=args.cluster_name,
        lease_ttl_s=args.lease_ttl,
        nats_creds_file=args.nats_creds,
    )
    if settings.embedded and settings.open_mode:
        output.errors.print(
            "[bold red]WARNING: open mode. Authentication is OFF: any local process can act as "
            "any agent. For development on loopback only.[/]"
        )
    failed = False
    try:
        anyio.run(_serve_until_signalled, settings, output, backend="asyncio")
    except* (ExchangeError, OSError) as group:
        failed = True
        # The cause sits inside the task groups' nested ExceptionGroups; the first one is what
        # stopped the exchange, and anything after it happened while it was stopping.
        cause, *also = leaf_exceptions(group)
        log.error(
            "exchange_failed",
            error=failure_line(cause),
            error_type=type(cause).__name__,
            **({"also": [failure_line(other) for other in also]} if also else {}),
        )
        if output.json_mode:
            # The ready line's counterpart: a program reading stdout learns why there is none.
            output.stdout.write(
                msgspec.json.encode(
                    {"error": {"code": "exchange_failed", "message": failure_line(cause)}}
                ).decode()
                + "\n"
            )
    return EXIT_REFUSED if failed else EXIT_OK


async def _serve_until_signalled(settings: Settings, output: Output) -> None:
    """Runs the exchange; the first SIGINT/SIGTERM stops it cleanly, a second one at once. With
    ``--json``, one line on stdout says it is ready (what ``exchange_ready`` logs)."""
    from exchange.daemon.app import ExchangeHandle
    from exchange.daemon.run import run_daemon

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def run(*, task_status: TaskStatus[ExchangeHandle]) -> None:
                await run_daemon(settings, task_status=task_status)
                tg.cancel_scope.cancel()

            handle: ExchangeHandle = await tg.start(run)
            if output.json_mode:
                _print_ready_line(output, handle)
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    log.warning("exchange_stop_forced", signal=name)
                    tg.cancel_scope.cancel()
                    return
                log.info("signal_received", signal=name)
                stopping = True
                handle.stop()


def _print_ready_line(output: Output, handle: "ExchangeHandle") -> None:
    ready = {
        "url": handle.url,
        "data_dir": str(handle.data_dir),
        "secure": handle.secure,
        "seq": handle.seq_at_ready,
        "digest": handle.digest_at_ready,
        "service_id": handle.service_id,
    }
    output.stdout.write(msgspec.json.encode(ready).decode() + "\n")
    output.stdout.flush()


# ----------------------------------------------------------------------------------- readers


def _doctor(args: argparse.Namespace, output: Output) -> int:
    # Imported here: the core and the journal cost a network verb's startup nothing.
    from exchange.cli.doctor import run_doctor, run_stream_doctor

    paths = DataPaths(args.data)
    if args.journal == "jetstream":
        if args.nats is None:
            return output.error(
                {
                    "code": "invalid_argument",
                    "message": "--journal jetstream reads the journal from a cluster: give --nats",
                },
                status=EXIT_USAGE,
            )
        return _doctor_report(run_stream_doctor(args.nats, args.cluster_name, args.creds), output)
    if not paths.journal.exists() and not high_water_path(paths.journal).exists():
        return output.error(
            {
                "code": "journal_not_found",
                "message": f"no journal at {paths.journal}: pass --data the exchange's data "
                "directory (`exchange up` makes it)",
            }
        )
    return _doctor_report(run_doctor(args.data), output)


def _doctor_report(report: "DoctorReport", output: Output) -> int:
    if output.json_mode:
        output.json(report)
    else:
        output.console.print(
            f"journal {report.journal}: {report.entries} entries, hash chain "
            f"{'sound' if report.entries or report.ok else 'unchecked'}, "
            f"{report.snapshots_checked} snapshot(s) checked",
            markup=False,
        )
        if report.latest_snapshot_seq is not None:
            output.console.print(
                f"latest snapshot at seq {report.latest_snapshot_seq}", markup=False
            )
        output.console.print(
            f"replayed {report.entries_replayed} entries from genesis; digest {report.digest}; "
            f"supply {report.supply}",
            markup=False,
        )
        for problem in report.problems:
            output.errors.print(f"PROBLEM: {problem}", markup=False)
        output.console.print(
            "doctor: all checks passed" if report.ok else "doctor: problems found", markup=False
        )
    return EXIT_OK if report.ok else EXIT_REFUSED


def _since_ns(text: str) -> int:
    """Integer nanoseconds, or an RFC 3339 time (exact to the microsecond). Raises ValueError."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"--since {text!r} needs a time zone, e.g. 2026-01-02T03:04:05Z")
    whole_s = int(moment.timestamp() // 1)
    return (whole_s * US_PER_S + moment.microsecond) * NS_PER_US


def _export(args: argparse.Namespace, output: Output) -> int:
    fmt: ExportFormat = (
        "json" if args.format == "json" or (args.json and not args.format) else "csv"
    )
    try:
        since_ns = None if args.since is None else _since_ns(args.since)
    except ValueError as exc:
        return output.error({"code": "invalid_argument", "message": f"--since: {exc}"})
    paths = DataPaths(args.data)
    if not paths.journal.is_file():
        return output.error(
            {"code": "journal_not_found", "message": f"no journal at {paths.journal}; pass --data"}
        )
    try:
        with Journal.open(paths.journal, read_only=True) as journal:
            if args.output is None:
                export_postings(journal, output.stdout, fmt, agent=args.agent, since_ns=since_ns)
            else:
                with args.output.open("w", encoding="utf-8", newline="") as file:
                    count = export_postings(journal, file, fmt, agent=args.agent, since_ns=since_ns)
                output.errors.print(f"{count} postings written to {args.output}", markup=False)
    except JournalError as exc:
        return output.error({"code": "journal_unreadable", "message": str(exc)})
    return EXIT_OK


def _import(args: argparse.Namespace, output: Output) -> int:
    import dataclasses
    import time

    from exchange.cli.importing import import_exchange
    from exchange.daemon.errors import DaemonError

    try:
        config_text = None if args.config is None else args.config.read_text(encoding="utf-8")
        report = import_exchange(
            args.source,
            args.data,
            config_text=config_text,
            now_ns=time.time_ns(),
            balances_only=args.balances_only,
        )
    except ConfigError as exc:
        return output.error({"code": "invalid_config", "message": f"--config: {exc}"})
    except (JournalError, DaemonError) as exc:
        return output.error({"code": "import_refused", "message": str(exc)})
    fields = dataclasses.asdict(report) | {"data_dir": str(report.data_dir)}
    return output.result(fields, title=f"imported into {report.data_dir}")


def _creds(args: argparse.Namespace, output: Output) -> int:
    paths = DataPaths(args.data)
    found = read_credentials(paths.creds(args.agent))
    if found is None:
        endpoint = read_endpoint(paths.endpoint)
        if endpoint is not None and not endpoint.secure:
            found = Credentials(url=endpoint.url)
        else:
            return output.error(
                {
                    "code": "unknown_agent",
                    "message": f"no credentials for {args.agent!r} in {paths.creds_dir}: an agent "
                    "gets them when it is registered on a secure exchange "
                    "(`exchange agent register`)",
                }
            )
    return output.result(credentials_fields(found), title=f"credentials of {args.agent}")


def _config_show(args: argparse.Namespace, output: Output) -> int:
    path = DataPaths(args.data).economy_config
    try:
        text, source = path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        text, source = default_toml(), "defaults"
    if output.json_mode:
        try:
            config = msgspec.to_builtins(parse_config(text))
        except ConfigError as exc:
            return output.error({"code": "config_invalid", "message": f"{source}: {exc}"})
        output.json({"source": source, "toml": text, "config": config})
    else:
        output.stdout.write(text)
    return EXIT_OK


_GROUP_HELP: Final = {
    "agent": "run a worker: agent ROLE --id ID; add one: agent register ID",
    "limits": "rate limits: limits AGENT; limits set AGENT --daily N",
}
_DELEGATED_HELP: Final = {
    "simulate": "run the 24-hour economy simulation (exchange simulate --help)",
    "demo": "exchange demo auction: the whole system live (exchange demo auction --help)",
    "dashboard": "the live web dashboard, or a simulation's (exchange dashboard --help)",
    "gateway": "the metering OpenAI-compatible gateway and its keys (exchange gateway --help)",
    "cluster": "the three-node cluster of compose.yaml: init, register (exchange cluster --help)",
    "agent": "run a worker: exchange agent ROLE --id ID (exchange agent --help)",
    "hook": "git post-commit rewards (exchange hook --help)",
    "issues": "beads issue rewards (exchange issues --help)",
}


def _delegate(
    verb: str, argv: list[str], stdout: TextIO, stderr: TextIO, configure_logs: bool
) -> int:
    """Hands the rest of the command line to the module that owns ``verb`` (imported lazily, so
    plain verbs do not pay for the simulator's or the demo's imports). ``configure_logs=False``
    (an in-process caller, such as the tests) keeps them from reconfiguring logging."""
    if verb == "simulate":
        from exchange.sim.cli import main as simulate_main

        return simulate_main(argv)
    if verb == "demo":
        if argv[:1] != ["auction"]:
            stderr.write("usage: exchange demo auction [options] (exchange demo auction --help)\n")
            return EXIT_USAGE
        from exchange.demo.auction import main as demo_main

        return demo_main(argv[1:], stdout=stdout)
    if verb == "dashboard":
        from exchange.dashboard.cli import main as dashboard_main

        return dashboard_main(argv, stdout=stdout, configure_logs=configure_logs)
    if verb == "gateway":
        from exchange.gateway.cli import main as gateway_main

        return gateway_main(argv, stdout=stdout, configure_logs=configure_logs)
    if verb == "cluster":
        from exchange.deploy.cli import main as cluster_main

        return cluster_main(argv, stdout=stdout, stderr=stderr, configure_logs=configure_logs)
    if verb == "agent":
        from agents.cli import main as agent_main

        return agent_main(argv, prog="exchange agent")
    from exchange.integrations.cli import hook_main, issues_main

    handler = hook_main if verb == "hook" else issues_main
    return handler(argv, stdout=stdout, stderr=stderr)


if __name__ == "__main__":
    sys.exit(main())
