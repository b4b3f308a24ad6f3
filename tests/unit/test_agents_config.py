"""Worker configuration without NATS: credentials files, runtime bounds, and the command line."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agents import cli
from agents.bounded import BoundedDict, BoundedSet
from agents.config import DEFAULT_NATS_URL, RuntimeConfig, load_credentials
from agents.demo import AUCTION_DEMO, DEMO_SEED, DemoAgent
from agents.errors import ConfigError
from agents.prices import PriceBook, quantize
from protocols.client_errors import RefusedError
from protocols.credentials import Credentials
from protocols.results import ErrorBody


def _write_creds(path: Path, **fields: object) -> Path:
    path.write_text(json.dumps(fields), encoding="utf-8")
    return path


def test_credentials_file(tmp_path: Path) -> None:
    path = _write_creds(
        tmp_path / "exec-a.json",
        url="nats://127.0.0.1:4222",
        user="exec-a",
        password="secret",
        inbox_prefix="_INBOX_exec-a",
        extra="ignored",
    )
    creds = load_credentials(path)
    assert creds == Credentials(
        url="nats://127.0.0.1:4222", user="exec-a", password="secret", inbox_prefix="_INBOX_exec-a"
    )
    assert "secret" not in repr(creds)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read"), ("not json", "not a credentials file"), ("{}", "not a credentials")],
)
def test_bad_credentials_files(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        load_credentials(path)


@pytest.mark.parametrize(
    "changes",
    [
        {"agent_id": "Bad.Id"},
        {"heartbeat_interval_ms": 0},
        {"request_timeout_ms": 0},
        {"request_attempts": 0},
        {"request_attempts": 1000},
        {"reconnect_attempts": -2},
        {"reconnect_attempts": 0},
        {"shutdown_grace_ms": -1},
    ],
)
def test_runtime_config_bounds(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {"agent_id": "exec-a", "role": "executor"} | changes
    with pytest.raises(ConfigError):
        RuntimeConfig(**fields)  # type: ignore[arg-type]


def test_refused_error_carries_the_code() -> None:
    error = RefusedError("task.announce", ErrorBody(code="insufficient_funds", message="no money"))
    assert (error.code, error.message) == ("insufficient_funds", "no money")
    assert "task.announce refused: insufficient_funds" in str(error)


@pytest.mark.parametrize("role", sorted(cli.ROLES))
def test_every_role_builds_from_its_defaults(role: str) -> None:
    args = cli.build_parser().parse_args([role, "--id", "agent-1", "--seed", "3"])
    config, built = cli.prepare(args, seed=3)
    assert config.agent_id == "agent-1"
    assert config.role == cli.ROLES[role].exchange_role
    assert config.credentials == Credentials(url=DEFAULT_NATS_URL)
    assert hasattr(built.worker, "setup")


def test_connection_options(tmp_path: Path) -> None:
    creds = _write_creds(tmp_path / "x.json", url="nats://h:1", user="x", password="p")
    args = cli.build_parser().parse_args(["oracle", "--id", "x", "--creds", str(creds)])
    assert cli.prepare(args, seed=0)[0].credentials.user == "x"
    (tmp_path / "creds").mkdir()
    _write_creds(tmp_path / "creds" / "y.json", url="nats://h:2", user="y", password="p")
    args = cli.build_parser().parse_args(["oracle", "--id", "y", "--data", str(tmp_path)])
    assert cli.prepare(args, seed=0)[0].credentials.url == "nats://h:2"
    args = cli.build_parser().parse_args(["oracle", "--id", "z", "--nats", "nats://h:3"])
    assert cli.prepare(args, seed=0)[0].credentials == Credentials(url="nats://h:3")


def test_executor_capabilities_reach_the_heartbeat() -> None:
    args = cli.build_parser().parse_args(
        ["executor", "--id", "e", "--capabilities", "execute,hedge", "--heartbeat-ms", "100"]
    )
    config, built = cli.prepare(args, seed=0)
    assert config.capabilities == built.capabilities == ("execute", "hedge")
    assert config.heartbeat_interval_ms == 100


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == cli.EXIT_OK
    assert cli.main(["nobody", "--id", "x"]) == cli.EXIT_USAGE
    assert cli.main(["oracle"]) == cli.EXIT_USAGE
    assert cli.main(["oracle", "--id", "x", "--nats", "u", "--creds", "f"]) == cli.EXIT_USAGE
    missing = str(tmp_path / "missing.json")
    assert cli.main(["oracle", "--id", "x", "--creds", missing]) == cli.EXIT_USAGE
    assert cli.main(["oracle", "--id", "x", "--tick-ms", "0"]) == cli.EXIT_USAGE
    assert cli.main(["scout", "--id", "X!"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot read credentials file" in err
    assert "tick_ms must be" in err
    assert "agent id must match" in err


def test_bounded_containers_forget_the_oldest() -> None:
    mapping: BoundedDict[str, int] = BoundedDict(2)
    mapping["a"], mapping["b"] = 1, 2
    mapping["a"] = 3  # refreshed: now the newest
    mapping["c"] = 4
    assert list(mapping) == ["a", "c"]
    assert mapping.pop("zz") is None
    members: BoundedSet[int] = BoundedSet(3)
    for member in range(5):
        members.add(member)
    assert len(members) == 3 and 0 not in members and 4 in members


def test_price_book_is_bounded_and_ignores_bad_prices() -> None:
    book = PriceBook(history_max=2, assets_max=2)
    for at_ns, asset in enumerate(["A", "B", "C"]):
        book.observe(asset, Decimal(1), at_ns)
    assert book.assets() == ["B", "C"]
    book.observe("B", Decimal(-1), 9)
    book.observe("B", Decimal("NaN"), 9)
    for at_ns in range(5):
        book.observe("B", Decimal(at_ns + 2), at_ns)
    assert [p.price for p in book.between("B", 0, 100)] == [Decimal(5), Decimal(6)]
    latest = book.latest("B")
    assert latest is not None and latest.price == Decimal(6)


@pytest.mark.parametrize(
    ("value", "text"),
    [("51000", "51000"), ("10.000", "10"), ("0.1234565", "0.123456"), ("1E+3", "1000"), ("0", "0")],
)
def test_quantized_prices_are_plain_decimals(value: str, text: str) -> None:
    assert str(quantize(Decimal(value))) == text


@pytest.mark.parametrize("member", AUCTION_DEMO, ids=lambda m: m.agent)
def test_the_demo_roster_parses_and_builds(member: DemoAgent) -> None:
    args = cli.build_parser().parse_args(member.argv("--nats", "nats://127.0.0.1:4222"))
    config, built = cli.prepare(args, seed=DEMO_SEED)
    assert config.role == member.exchange_role == member.registration()["role"]
    assert built.capabilities == member.capabilities
