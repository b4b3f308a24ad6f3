"""The credentials store: nkeys by default, passwords on request, stored secrets kept whatever
their kind (a data directory from before nkeys keeps working), private files, and the options a
client connects with (a TLS context trusting the file's CA). Files in a temporary directory; no
NATS.
"""

import datetime
import ssl
import stat
from pathlib import Path

import msgspec
import pytest

from exchange.daemon.creds import (
    CredentialsFileError,
    CredentialStore,
    nats_users,
    new_nkey_seed,
    nkey_public_key,
    read_credentials,
)
from exchange.daemon.tls import ensure_generated_tls
from protocols.client import connect_options
from protocols.credentials import Credentials

URL = "nats://127.0.0.1:4222"


def test_new_users_get_an_nkey_seed_in_a_private_file(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds")
    made = store.ensure(["admin", "alice"], url=URL)
    alice = made["alice"]
    assert alice.password is None
    assert alice.nkey_seed is not None and alice.nkey_seed.startswith("SU")
    assert alice.inbox_prefix == "_INBOX_alice"
    assert read_credentials(store.path("alice")) == alice
    fields = msgspec.json.decode(store.path("alice").read_bytes())
    assert set(fields) == {"url", "user", "nkey_seed", "inbox_prefix"}  # no "password": null
    assert stat.S_IMODE(store.path("alice").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "creds").stat().st_mode) == 0o700
    users = nats_users(made.values(), {"alice": "oracle"})
    assert [(user.name, user.password, user.role) for user in users] == [
        ("admin", None, None),
        ("alice", None, "oracle"),
    ]
    assert users[1].nkey == nkey_public_key(alice.nkey_seed)
    assert users[1].nkey.startswith("U")


def test_passwords_only_when_asked(tmp_path: Path) -> None:
    made = CredentialStore(tmp_path).ensure(["alice"], url=URL, passwords=True)
    assert made["alice"].nkey_seed is None
    assert made["alice"].password
    (user,) = nats_users(made.values(), {})
    assert (user.password, user.nkey) == (made["alice"].password, None)


def test_stored_secrets_keep_their_kind_and_only_the_url_changes(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    # A file as an exchange before nkeys wrote it.
    legacy = b'{"url": "nats://old:1", "user": "alice", "password": "pw", "inbox_prefix": "x"}'
    store.path("alice").write_bytes(legacy)
    first = store.ensure(["alice", "bob"], url=URL)
    assert (first["alice"].password, first["alice"].nkey_seed) == ("pw", None)
    assert first["alice"].url == URL
    assert first["alice"].inbox_prefix == "_INBOX_alice"
    again = store.ensure(["alice", "bob"], url=URL, passwords=True)
    assert again == first  # bob keeps his nkey although passwords are now asked for new users


def test_a_file_with_a_broken_seed_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    path.write_bytes(msgspec.json.encode({"url": URL, "user": "alice", "nkey_seed": "SUnope"}))
    with pytest.raises(CredentialsFileError, match=r"alice\.json"):
        read_credentials(path)
    account_seed = new_nkey_seed().replace("SU", "SA", 1)
    with pytest.raises(ValueError):
        nkey_public_key(account_seed)


def test_connect_options_sign_with_the_seed_or_send_the_password() -> None:
    seed = new_nkey_seed()
    nkey = Credentials(url=URL, user="alice", nkey_seed=seed, inbox_prefix="_INBOX_alice")
    assert connect_options(nkey) == {"inbox_prefix": "_INBOX_alice", "nkeys_seed_str": seed}
    password = Credentials(url=URL, user="alice", password="pw")
    assert connect_options(password) == {
        "inbox_prefix": "_INBOX",
        "user": "alice",
        "password": "pw",
    }
    assert connect_options(Credentials(url=URL)) == {"inbox_prefix": "_INBOX"}
    assert seed not in repr(nkey)
    assert "pw" not in repr(password).replace("password", "")


def test_a_ca_file_gives_a_context_that_trusts_it(tmp_path: Path) -> None:
    files = ensure_generated_tls(
        tmp_path / "tls", "127.0.0.1", now=datetime.datetime.now(datetime.UTC)
    )
    assert files.ca_file is not None
    credentials = Credentials(url="tls://127.0.0.1:1", tls_ca_file=files.ca_file)
    context = connect_options(credentials)["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "Agent Exchange local CA"),),)
    ]
    made = CredentialStore(tmp_path / "creds").ensure(
        ["zero"], url=credentials.url, tls_ca_file=files.ca_file
    )
    assert made["zero"].tls_ca_file == files.ca_file
