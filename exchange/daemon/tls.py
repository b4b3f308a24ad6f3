"""TLS for the embedded nats-server: the files it serves with, and a generated CA when asked.

Owns: checking the ``natsserver.TlsFiles`` an operator names, and ``ensure_generated_tls``, which
makes a private CA and a server certificate for the listening host under ``DATA/tls/`` once
(``exchange up --tls-generate``) and reuses them afterwards, so the CA that agents were given
stays valid across restarts. Keys are mode 0600 in a 0700 directory.
Must not: start the server, connect to anything, or log a key.
"""

import datetime
import ipaddress
import os
import socket
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange.daemon.errors import DaemonError
from exchange.daemon.natsserver import TlsFiles
from exchange.daemon.private_files import write_private

CA_CERT_FILE_NAME: Final = "ca.pem"
CA_KEY_FILE_NAME: Final = "ca-key.pem"
SERVER_CERT_FILE_NAME: Final = "server.pem"
SERVER_KEY_FILE_NAME: Final = "server-key.pem"
# A generated CA and server certificate are for one installation; ten years, then regenerate
# (delete DATA/tls/ and restart, and hand the agents the new ca.pem).
CERT_VALID_DAYS: Final = 3650
_ANY_ADDRESSES: Final = ("0.0.0.0", "::", "[::]")


class TlsError(DaemonError):
    """A TLS file is missing or unreadable, or the generated files cannot be made."""


def check_tls_files(files: TlsFiles) -> None:
    """Raises TlsError naming the first file that cannot be read."""
    for path in (files.cert_file, files.key_file, files.ca_file):
        if path is not None and not os.access(path, os.R_OK):
            raise TlsError(f"TLS file {path} does not exist or cannot be read")


def server_names(host: str) -> tuple[str, ...]:
    """The names a server certificate for ``host`` must carry: the host itself, and for an
    any-address listener the loopback names and this machine's name (clients dial those)."""
    if host not in _ANY_ADDRESSES:
        return (host.strip("[]"),)
    return ("127.0.0.1", "::1", "localhost", socket.gethostname())


def ensure_generated_tls(tls_dir: Path, host: str, *, now: datetime.datetime) -> TlsFiles:
    """A CA and a server certificate for ``host`` under ``tls_dir``: the stored ones if all four
    files exist, else new ones (a new CA: clients need the new ``ca.pem``).

    Raises TlsError (OSError underneath).
    """
    files = TlsFiles(
        cert_file=str(tls_dir / SERVER_CERT_FILE_NAME),
        key_file=str(tls_dir / SERVER_KEY_FILE_NAME),
        ca_file=str(tls_dir / CA_CERT_FILE_NAME),
    )
    names = (CA_CERT_FILE_NAME, CA_KEY_FILE_NAME, SERVER_CERT_FILE_NAME, SERVER_KEY_FILE_NAME)
    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(tls_dir, 0o700)
        if all((tls_dir / name).is_file() for name in names):
            return files
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Agent Exchange local CA")])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names(host)[0])])
        server_cert = (
            _builder(subject, ca_name, server_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names(host)]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        # Keys first and the CA certificate last: a start that fails half-way leaves a set that
        # is incomplete, so the next start makes a new one.
        write_private(tls_dir / SERVER_KEY_FILE_NAME, _key_pem(server_key))
        pem = serialization.Encoding.PEM
        write_private(tls_dir / SERVER_CERT_FILE_NAME, server_cert.public_bytes(pem))
        write_private(tls_dir / CA_KEY_FILE_NAME, _key_pem(ca_key))
        write_private(tls_dir / CA_CERT_FILE_NAME, ca_cert.public_bytes(pem))
    except OSError as exc:
        raise TlsError(f"cannot make the TLS files in {tls_dir}: {exc}") from exc
    return files


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        # An hour back: a client whose clock is a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
