"""A small PKI for TLS tests across hosts: a CA, and certificates it issues to hosts.

Certificates name the host's IP (and loopback) as SANs and allow both server and client use,
since every process of a cluster with mutual TLS both serves and calls.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))


def make_ca(name: str) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return key, _validity(builder).sign(key, hashes.SHA256())


def issue(ca: CA, name: str, ip: str, folder: Path) -> dict[str, str]:
    """A key and certificate for the host `name` at `ip`, signed by `ca`, written to `folder`
    with the CA's certificate; returns the ACTORHUB_TLS_* variables that name the three files."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(ip)), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"), x509.DNSName(name)]
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    )
    cert = _validity(builder).sign(ca_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    files = {
        "cert": (folder / "cert.pem", cert.public_bytes(pem)),
        "key": (folder / "key.pem", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())),
        "ca": (folder / "ca.pem", ca_cert.public_bytes(pem)),
    }
    for path, data in files.values():
        path.write_bytes(data)
        path.chmod(0o600)
    return {f"ACTORHUB_TLS_{kind.upper()}": str(path) for kind, (path, _) in files.items()}
