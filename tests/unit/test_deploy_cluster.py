"""compose.yaml and the cluster's files, made from one topology: the committed compose.yaml is
the generator's output (no drift), reads back (with PyYAML, an outside parser) as the document it
was made from, is valid against the compose-spec JSON Schema, and says what the issue asks (no
anonymous access, workers with their own identities, only loopback published); the YAML writer
round-trips any tree (Hypothesis); init keeps its secrets and writes them private."""

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.demo import AUCTION_DEMO
from exchange.daemon.creds import nats_users, new_nkey_seed
from exchange.daemon.natsserver import permissions_for, render_config
from exchange.deploy import cluster, yaml_text
from exchange.deploy.bootstrap import ClusterInitError, init_cluster
from exchange.deploy.cli import main as cluster_main
from protocols.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SPEC = ROOT / "tests" / "fixtures" / "compose-spec.json"


def _services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = document["services"]
    return services


def test_compose_yaml_is_the_generator_s_output() -> None:
    assert COMPOSE.read_text() == cluster.compose_text(), (
        "compose.yaml differs from its generator: run `exchange cluster compose > compose.yaml`"
    )


def test_compose_yaml_reads_back_as_the_document_it_was_made_from() -> None:
    document = cluster.compose_document(cluster.compose_topology())
    assert yaml.safe_load(COMPOSE.read_text()) == document


def test_compose_yaml_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SPEC.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_loaded())]
    assert not errors, errors


def _loaded() -> Any:
    return yaml.safe_load(COMPOSE.read_text())


def test_only_loopback_is_published() -> None:
    published = {
        name: service["ports"] for name, service in _services().items() if "ports" in service
    }
    assert published == {
        "nats-1": ["127.0.0.1:4222:4222"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }


def test_nothing_runs_in_open_mode() -> None:
    for name, service in _services().items():
        assert "--open" not in service.get("command", []), name


def test_every_worker_runs_its_role_with_its_own_credentials_and_no_other() -> None:
    services = _services()
    for agent in AUCTION_DEMO:
        service = services[agent.agent]
        command = service["command"]
        assert service["entrypoint"] == ["python", "-m", "agents"]
        assert command[:3] == [agent.role, "--id", agent.agent]
        assert command[command.index("--creds") + 1] == f"/creds/{agent.agent}.json"
        assert service["volumes"] == [
            {
                "type": "volume",
                "source": "cluster-secrets",
                "target": "/creds",
                "read_only": True,
                "volume": {"subpath": f"creds/{agent.agent}"},
            }
        ]
        assert service["depends_on"] == {
            "register": {"condition": "service_completed_successfully"}
        }
    assert services["arbiter"]["command"][0] == "arbiter"


def test_the_whole_secrets_volume_is_mounted_by_the_bootstrap_alone() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume["source"] == "cluster-secrets":
                whole = "volume" not in volume
                assert whole == (name == "bootstrap"), name
                assert volume.get("read_only", False) == (name != "bootstrap"), name
    admin_readers = [
        name
        for name, service in _services().items()
        for volume in service.get("volumes", [])
        if isinstance(volume, dict) and volume.get("volume") == {"subpath": "creds/admin"}
    ]
    assert admin_readers == ["register"]


def test_the_exchange_runs_on_the_replicated_journal_with_a_standby() -> None:
    services = _services()
    leader, standby = services["exchange"]["command"], services["exchange-standby"]["command"]
    for command in (leader, standby):
        assert command[0] == "up"
        assert command[command.index("--journal") + 1] == "jetstream"
        assert command[command.index("--nats-creds") + 1] == "/creds/exchange.json"
        assert command[command.index("--nats") + 1].count("nats://") == 3
    assert "--standby" in standby and "--standby" not in leader


def _compose_node_configs() -> dict[str, str]:
    topology = cluster.compose_topology()
    credentials = [
        Credentials(url="nats://x:4222", user=user, nkey_seed=new_nkey_seed())
        for user in cluster.users(topology)
    ]
    users = nats_users(credentials, cluster.roles(topology))
    return {
        node.name: render_config(cluster.node_config(topology, node, users, "route-secret"))
        for node in topology.nodes
    }


def test_the_nodes_have_no_anonymous_user_and_routes_need_the_route_password() -> None:
    for name, text in _compose_node_configs().items():
        assert "no_auth_user" not in text
        assert "authorization {\n  users: [" in text
        assert text.count("nkey: ") == len(cluster.users(cluster.compose_topology()))
        assert "password:" not in text.split("authorization {\n  users:")[1]
        assert '    user: "route"\n    password: "route-secret"' in text
        others = {"nats-1", "nats-2", "nats-3"} - {name}
        for other in others:
            assert f"nats-route://route:route-secret@{other}:6222" in text
        assert 'http: "127.0.0.1:8222"' in text


def test_workers_get_the_protocol_s_agent_permissions_and_the_exchange_everything() -> None:
    text = _compose_node_configs()["nats-1"]
    topology = cluster.compose_topology()
    for worker in topology.workers:
        permissions = permissions_for(worker.agent.agent, worker.agent.exchange_role)
        assert ">" not in permissions.publish_allow
        assert not any(
            p.startswith(("exchange.cmd.admin", "exchange.journal", "$JS"))
            for p in permissions.publish_allow
        )
        assert f"      # {worker.agent.agent}\n" in text
    assert permissions_for("exchange").publish_allow == (">",)


def test_the_loopback_topology_differs_from_compose_s_in_addresses_only() -> None:
    compose = cluster.compose_topology()
    loopback = cluster.loopback_topology("/tmp/x")
    assert [(w.agent, w.node) for w in compose.workers] == [
        (w.agent, w.node) for w in loopback.workers
    ]
    assert [n.name for n in compose.nodes] == [n.name for n in loopback.nodes]
    assert cluster.users(compose) == cluster.users(loopback)
    assert cluster.registrations(compose) == cluster.registrations(loopback)
    for worker in compose.workers:
        assert cluster.worker_argv(worker, creds="F") == worker.agent.argv("--creds", "F")


def test_registration_request_ids_are_the_same_on_every_run() -> None:
    ids = [request_id for request_id, _ in cluster.registrations(cluster.compose_topology())]
    assert ids == [f"cluster-register-{agent.agent}" for agent in AUCTION_DEMO]


# ------------------------------------------------------------------------- the YAML writer

_keys = st.text(min_size=1, max_size=12)
_scalars = st.one_of(
    st.text(max_size=30), st.integers(min_value=-(10**12), max_value=10**12), st.booleans()
)
_trees = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(_scalars, max_size=4),
        st.lists(st.dictionaries(_keys, children, min_size=1, max_size=3), min_size=1, max_size=3),
        st.dictionaries(_keys, children, max_size=4),
    ),
    max_leaves=20,
)


@settings(deadline=None)  # PyYAML's pure-Python parser takes 200+ ms on a busy machine
@given(st.dictionaries(_keys, _trees, max_size=5))
def test_the_yaml_writer_round_trips_any_tree(document: dict[str, Any]) -> None:
    text = yaml_text.render(document, header="a header\nof two lines")
    assert yaml.safe_load(text) == (document or None)


@pytest.mark.parametrize(
    "word",
    [
        "yes",
        "No",
        "on",
        "OFF",
        "true",
        "null",
        "~",
        "1",
        "0x1f",
        "1e3",
        "12:30",
        "-",
        "",
        "a\n",
        "a: b",
    ],
)
def test_strings_that_read_as_something_else_are_quoted(word: str) -> None:
    assert yaml.safe_load(f"k: {yaml_text.scalar(word)}") == {"k": word}


# ------------------------------------------------------------------------------ init


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_writes_private_files_and_keeps_its_secrets(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    topology = cluster.loopback_topology(str(out))
    first = init_cluster(out, topology)
    assert set(first.made) == set(cluster.users(topology))
    files = {user: out / cluster.creds_file(user) for user in cluster.users(topology)}
    contents = {user: path.read_bytes() for user, path in files.items()}
    routes = (out / cluster.ROUTE_SECRET_FILE).read_bytes()
    second = init_cluster(out, topology)
    assert second.made == ()
    assert {user: path.read_bytes() for user, path in files.items()} == contents
    assert (out / cluster.ROUTE_SECRET_FILE).read_bytes() == routes
    for path in files.values():
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
    for node in topology.nodes:
        config = out / cluster.node_dir(node.name) / cluster.NODE_CONFIG_FILE
        assert _mode(config) == 0o600
        text = config.read_text()
        assert json.loads(routes)["password"] in text
        for user, content in contents.items():
            assert json.loads(content)["nkey_seed"] not in text, user
    worker = json.loads(contents["exec-fast"])
    assert worker["inbox_prefix"] == "_INBOX_exec-fast"
    placed = next(w.node for w in topology.workers if w.agent.agent == "exec-fast")
    urls = worker["url"].split(",")
    assert urls[0] == topology.node(placed).url
    assert sorted(urls) == sorted(node.url for node in topology.nodes)
    assert json.loads(contents["admin"])["url"] == topology.url


def test_init_refuses_a_route_secret_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    out.mkdir()
    (out / cluster.ROUTE_SECRET_FILE).write_text("not json")
    with pytest.raises(ClusterInitError, match="delete it and re-run init"):
        init_cluster(out, cluster.loopback_topology(str(out)))


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cluster_main(list(argv), stdout=out, stderr=err, configure_logs=False)
    return status, out.getvalue(), err.getvalue()


def test_the_cli_prints_compose_yaml() -> None:
    assert _cli("compose") == (0, COMPOSE.read_text(), "")


@pytest.mark.parametrize("ports", ["4222,4223", "1,2,x", "0,1,2", "4222,4223,70000"])
def test_init_refuses_ports_that_are_not_three_ports(
    tmp_path: Path, ports: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = _cli("init", "--out", str(tmp_path / "s"), "--client-ports", ports)
    # argparse reports on the process's stderr.
    assert status == 2 and "expected three ports" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_register_refuses_a_missing_or_bad_credentials_file(tmp_path: Path) -> None:
    status, _, err = _cli("register", "--creds", str(tmp_path / "none.json"))
    assert status == 2 and "creds/admin/admin.json" in err
    (tmp_path / "bad.json").write_text("{}")
    status, _, err = _cli("register", "--creds", str(tmp_path / "bad.json"))
    assert status == 2 and "not a credentials file" in err


def test_init_reports_a_route_secret_it_cannot_read(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / cluster.ROUTE_SECRET_FILE).write_text("[]")
    status, _, err = _cli("init", "--out", str(out), "--hosts", "loopback")
    assert status == 1 and "delete it and re-run init" in err


def test_an_empty_list_under_a_long_key_stays_a_list() -> None:
    # Found by the round trip: past the line limit, an empty list was written in block form,
    # which has no items, so it read back as null.
    document = {"k" * 120: []}
    assert yaml.safe_load(yaml_text.render(document)) == document
