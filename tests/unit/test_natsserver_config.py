"""The nats-server config as text: quoting, open and secure mode, and each agent's permissions,
checked against the list in docs/trust-boundary.md and against the subjects protocols/subjects.py
builds. No I/O.
"""

import re
from types import FunctionType
from typing import Final

import pytest

from exchange.daemon import discovery, natsserver
from exchange.daemon.natsserver import (
    ClusterConfig,
    NatsConfigError,
    NatsServerConfig,
    NatsUser,
    TlsFiles,
    agent_inbox_prefix,
    permissions_for,
    render_config,
)
from protocols import subjects


def _matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` is one or more."""
    pattern_tokens, subject_tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or token not in ("*", subject_tokens[index]):
            return False
    return len(subject_tokens) == len(pattern_tokens)


def _allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(_matches(pattern, subject) for pattern in patterns)


def _user(name: str) -> NatsUser:
    return NatsUser(name=name, password="secret")


def test_matcher_follows_nats_wildcards() -> None:
    assert _matches("a.>", "a.b.c")
    assert not _matches("a.>", "a")
    assert _matches("a.*.c", "a.b.c")
    assert not _matches("a.*.c", "a.b.b.c")
    assert not _matches("a.b", "a.b.c")


def test_agent_permissions_are_protocol_md_verbatim() -> None:
    permissions = permissions_for("alice")
    assert permissions.publish_allow == (
        "exchange.cmd.alice.>",
        "exchange.query.>",
        "swarm.signal.alice.>",
        "swarm.task.*.propose.alice",
        "swarm.task.*.refuse.alice",
        "swarm.task.*.inform.alice",
        "swarm.task.*.failure.alice",
        "swarm.vote.*.cast.alice",
        "$SRV.PING",
        "$SRV.PING.exchange",
        "$SRV.PING.exchange.*",
        "$SRV.INFO",
        "$SRV.INFO.exchange",
        "$SRV.INFO.exchange.*",
        "$SRV.STATS",
        "$SRV.STATS.exchange",
        "$SRV.STATS.exchange.*",
    )
    assert permissions.subscribe_allow == ("swarm.>", "exchange.event.>", "_INBOX_alice.>")


def test_an_agent_may_ask_the_exchange_s_service_api_and_nothing_else_under_srv() -> None:
    alice = permissions_for("alice").publish_allow
    for verb in discovery.VERBS:
        for pattern in discovery.control_subjects("abc123"):
            subject = pattern.replace("*", verb, 1)
            assert _allowed(alice, subject), subject
    for subject in (
        "$SRV.PING.other",
        "$SRV.PING.exchange.abc123.more",
        "$SRV.RESET",
        "$SRV.RESET.exchange",
        "$SRV.>",
        "$SRV.*",
        "$SYS.REQ.SERVER.PING",
    ):
        assert not _allowed(alice, subject), subject


@pytest.mark.parametrize("name", ["exchange", "admin"])
def test_exchange_and_admin_may_do_everything(name: str) -> None:
    permissions = permissions_for(name)
    assert permissions.publish_allow == (">",)
    assert permissions.subscribe_allow == (">",)


def _sent_by(agent: str) -> list[str]:
    """One subject of each kind an agent sends, built where subjects are built."""
    return [
        subjects.command(agent, "transfer"),
        subjects.command(agent, "pool.contribute"),
        subjects.signal(agent, "buy", "btc"),
        *(subjects.task_message("t1", kind, agent) for kind in ("propose", "refuse", "inform")),
        subjects.task_message("t1", "failure", agent),
        subjects.vote_cast("p1", agent),
    ]


def test_an_agent_may_send_as_itself_and_not_as_another() -> None:
    alice = permissions_for("alice").publish_allow
    for subject in _sent_by("alice"):
        assert _allowed(alice, subject), subject
    for subject in _sent_by("bob"):
        assert not _allowed(alice, subject), subject
    assert _allowed(alice, subjects.query("balance"))


def test_an_agent_may_not_publish_what_only_the_exchange_sends() -> None:
    alice = permissions_for("alice").publish_allow
    for subject in (
        subjects.event("alice", "credited"),
        subjects.task_cfp("research"),
        subjects.task_award("t1"),
        subjects.task_closed("t1"),
        subjects.vote_open("p1"),
        subjects.vote_closed("p1"),
        subjects.price("btc"),
        "_INBOX_bob.x.y",
    ):
        assert not _allowed(alice, subject), subject


def test_an_agent_may_listen_to_the_swarm_and_its_own_inbox_only() -> None:
    alice = permissions_for("alice").subscribe_allow
    for subject in (
        subjects.task_award("t1"),
        subjects.event("bob", "credited"),
        "_INBOX_alice.a.b",
    ):
        assert _allowed(alice, subject), subject
    for subject in (subjects.command("bob", "transfer"), "_INBOX.a.b", "_INBOX_bob.a.b"):
        assert not _allowed(alice, subject), subject


def test_inbox_prefix_is_per_agent() -> None:
    assert agent_inbox_prefix("alice") == "_INBOX_alice"
    with pytest.raises(NatsConfigError, match="agent id"):
        agent_inbox_prefix("a.b")


def test_open_mode_renders_no_authorization_and_random_ports() -> None:
    text = render_config(NatsServerConfig(port=0, monitoring_port=0))
    assert 'host: "127.0.0.1"\n' in text
    assert "port: -1\n" in text
    assert "http_port: -1\n" in text
    assert "max_payload: 1048576\n" in text
    assert "authorization {" not in text
    assert "jetstream {" not in text


def test_secure_mode_renders_each_user_with_its_permissions() -> None:
    users = (_user("exchange"), _user("alice"))
    text = render_config(NatsServerConfig(users=users))
    assert text.count("user: ") == 2
    assert 'user: "alice"' in text
    expected = (
        '        publish: { allow: ["exchange.cmd.alice.>", "exchange.query.>", '
        '"swarm.signal.alice.>", "swarm.task.*.propose.alice", "swarm.task.*.refuse.alice", '
        '"swarm.task.*.inform.alice", "swarm.task.*.failure.alice", "swarm.vote.*.cast.alice", '
        '"$SRV.PING", "$SRV.PING.exchange", "$SRV.PING.exchange.*", "$SRV.INFO", '
        '"$SRV.INFO.exchange", "$SRV.INFO.exchange.*", "$SRV.STATS", "$SRV.STATS.exchange", '
        '"$SRV.STATS.exchange.*"] }\n'
        '        subscribe: { allow: ["swarm.>", "exchange.event.>", "_INBOX_alice.>"] }\n'
    )
    assert expected in text
    assert 'publish: { allow: [">"] }' in text


_NKEY: Final = "U" + "A" * 55


def test_an_nkey_user_is_rendered_by_its_public_key_alone() -> None:
    users = (NatsUser(name="alice", nkey=_NKEY), _user("admin"))
    text = render_config(NatsServerConfig(users=users))
    assert f'      nkey: "{_NKEY}"\n' in text
    assert 'user: "alice"' not in text
    assert text.count("password: ") == 1
    assert '"_INBOX_alice.>"' in text


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "exactly one"),
        ({"password": "secret", "nkey": _NKEY}, "exactly one"),
        ({"nkey": "SU" + "A" * 54}, "public key"),
        ({"nkey": "U" + "a" * 55}, "public key"),
    ],
)
def test_a_user_has_a_password_or_an_nkey(fields: dict[str, str], match: str) -> None:
    with pytest.raises(NatsConfigError, match=match):
        NatsUser(name="alice", **fields)


def test_tls_renders_the_server_s_certificate_and_key_only() -> None:
    tls = TlsFiles(cert_file="/d/server.pem", key_file="/d/server-key.pem", ca_file="/d/ca.pem")
    text = render_config(NatsServerConfig(tls=tls, users=(_user("admin"),)))
    assert 'tls {\n  cert_file: "/d/server.pem"\n  key_file: "/d/server-key.pem"\n}\n' in text
    # The server asks clients for no certificate, so it needs no CA.
    assert "ca.pem" not in text
    assert "tls {" not in render_config(NatsServerConfig())
    with pytest.raises(NatsConfigError, match="empty"):
        TlsFiles(cert_file="", key_file="k")


def test_strings_are_quoted_and_escaped() -> None:
    password = 'a"b\\c\nd\te$f\x01 ✓'
    text = render_config(NatsServerConfig(users=(NatsUser(name="alice", password=password),)))
    assert '      password: "a\\"b\\\\c\\nd\\te$f\\x01 ✓"\n' in text
    text = render_config(NatsServerConfig(jetstream_store_dir='/tmp/my "dir"'))
    assert 'store_dir: "/tmp/my \\"dir\\""' in text


def test_every_quoted_value_is_closed_on_its_line() -> None:
    users = (NatsUser(name="bob", password='"}\n]{"'),)
    for line in render_config(NatsServerConfig(users=users)).splitlines():
        unescaped_quotes = re.findall(r'(?<!\\)"', line.replace("\\\\", ""))
        assert len(unescaped_quotes) % 2 == 0, line


def test_cluster_renders_routes_and_debug_logging() -> None:
    config = NatsServerConfig(
        server_name="n1",
        jetstream_store_dir="/data/n1",
        cluster=ClusterConfig(name="ex", port=6222, routes=("nats-route://127.0.0.1:6223",)),
    )
    text = render_config(config)
    assert 'server_name: "n1"\n' in text
    assert "debug: true\n" in text
    assert '  routes: ["nats-route://127.0.0.1:6223"]\n' in text
    assert '  store_dir: "/data/n1"\n' in text


def test_cluster_with_route_credentials_renders_them_and_a_monitor_on_its_own_address() -> None:
    config = NatsServerConfig(
        host="0.0.0.0",
        monitoring_port=8222,
        monitoring_host="127.0.0.1",
        server_name="n1",
        jetstream_store_dir="/data",
        cluster=ClusterConfig(
            name="ex",
            port=6222,
            routes=("nats-route://route:pw@n2:6222",),
            route_user="route",
            route_password="pw",
        ),
        users=(_user("exchange"),),
    )
    text = render_config(config)
    assert 'http: "127.0.0.1:8222"\n' in text
    assert "http_port" not in text
    assert '  authorization {\n    user: "route"\n    password: "pw"\n  }\n}\n' in text
    assert "pw" not in repr(config)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"route_user": "route"}, "go together"),
        ({"route_password": "pw"}, "go together"),
        ({"route_user": "route", "route_password": "p@ss"}, "route_password"),
        ({"route_user": "a b", "route_password": "pw"}, "route_user"),
    ],
)
def test_route_credentials_rules(fields: dict[str, str], match: str) -> None:
    with pytest.raises(NatsConfigError, match=match):
        ClusterConfig(name="ex", port=6222, **fields)  # type: ignore[arg-type]


def test_user_repr_hides_the_password() -> None:
    assert "secret" not in repr(_user("alice"))
    assert "secret" not in repr(NatsServerConfig(users=(_user("alice"),)))


@pytest.mark.parametrize("name", ["Alice", "a.b", "a*", "a>", "a b", "", "a" * 65])
def test_user_name_must_be_exchange_admin_or_an_agent_id(name: str) -> None:
    with pytest.raises(NatsConfigError, match="agent id"):
        _user(name)


@pytest.mark.parametrize(
    ("password", "match"), [("", "1 to"), ("x" * 1025, "1 to"), ("$2a$10$abc", "bcrypt")]
)
def test_password_rules(password: str, match: str) -> None:
    with pytest.raises(NatsConfigError, match=match):
        NatsUser(name="alice", password=password)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"host": "0.0.0.0"}, "loopback"),
        ({"host": "10.0.0.1", "users": ()}, "at least one user"),
        ({"users": (_user("alice"), _user("alice"))}, "unique"),
        ({"port": 70000}, "port"),
        ({"port": -2}, "port"),
        ({"monitoring_port": 65536}, "monitoring_port"),
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
        ({"max_payload_bytes": 64 * 1024 * 1024 + 1}, "max_payload_bytes"),
        ({"server_name": "has space"}, "server_name"),
        ({"host": "127.0.0.1 "}, "host"),
        ({"monitoring_port": 8222, "monitoring_host": ""}, "monitoring_host"),
        (
            {"jetstream_store_dir": "/d", "cluster": ClusterConfig(name="ex", port=6222)},
            "server_name",
        ),
    ],
)
def test_config_rules(fields: dict[str, object], match: str) -> None:
    with pytest.raises(NatsConfigError, match=match):
        NatsServerConfig(**fields)  # type: ignore[arg-type]


def test_open_mode_is_allowed_on_every_loopback_spelling() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        NatsServerConfig(host=host)
    NatsServerConfig(host="0.0.0.0", users=(_user("exchange"),))


@pytest.mark.parametrize("route", ["127.0.0.1:6222", "nats-route://a b:1"])
def test_cluster_routes_are_urls(route: str) -> None:
    with pytest.raises(NatsConfigError, match="route"):
        ClusterConfig(name="ex", port=6222, routes=(route,))


def test_all_is_the_public_surface() -> None:
    defined_here = {
        name
        for name, value in vars(natsserver).items()
        if not name.startswith("_")
        and isinstance(value, type | FunctionType)
        and value.__module__ == natsserver.__name__
    }
    constants = {"CONFIG_FILE_NAME", "LOCK_FILE_NAME", "PID_FILE_NAME", "RANDOM_PORT"}
    assert set(natsserver.__all__) == defined_here | constants
