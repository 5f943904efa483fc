"""Mutual TLS: this process's certificate, key and CA, read once at its start.

With `Config.tls_cert`, `tls_key` and `tls_ca` set, every server of the process listens only
with TLS and requires a client certificate signed by the CA, and every channel it opens
presents its certificate and verifies the server's against the same CA and against the
address it dials (an IP SAN for an IP, a DNS SAN for a name). The cluster token is still
checked on top (server.py). Without them `load_tls` returns None and channels and servers are
plain: TLS is decided once, when a channel or a server port is opened, never per call.

The files are checked here, before anything listens: each must be readable PEM of its kind,
the key must match the certificate, and the certificate must verify against the CA for both
uses (every process is a server and a client). A bad file fails the start with a `ConfigError`
naming the setting and the file, rather than every handshake later failing as UNAVAILABLE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from actorhub.config import Config, ConfigError

if TYPE_CHECKING:
    import ipaddress
    import ssl

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
# "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----"
_PRIVATE_KEY = b"PRIVATE KEY-----"
# gRPC cannot take a passphrase: an encrypted key would fail at the first handshake.
_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


@dataclass(frozen=True)
class TlsCredentials:
    """The PEM bytes of one process's identity and of the CA its peers must be signed by."""

    cert_path: Path
    key_path: Path
    ca_path: Path
    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    root_certificates: bytes = field(repr=False)
    # The certificate's subjectAltNames as ("IP Address" | "DNS", value): the addresses peers
    # may dial this process at. None when the files were read without the check.
    names: tuple[tuple[str, str], ...] | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return self._channel_credentials

    @cached_property
    def _channel_credentials(self) -> grpc.ChannelCredentials:
        # Made once, shared by every channel of the process (sync and asyncio).
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def covers(self, host: str) -> bool:
        """Whether a peer dialling `host` accepts this certificate (gRPC matches an IP only to
        IP SANs, a name only to DNS SANs, with a leading "*." matching one label)."""
        import ipaddress  # here, not at the top: every process imports this module, few call this

        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            ip = None
        for kind, value in self.names or ():
            if ip is not None:
                if kind == "IP Address" and _same_ip(value, ip):
                    return True
            elif kind == "DNS" and _name_matches(value.lower(), host.lower().rstrip(".")):
                return True
        return False


def load_tls(config: Config, *, check: bool = True) -> TlsCredentials | None:
    """The process's TLS credentials from its Config, or None when TLS is not configured.

    `check=False` skips the OpenSSL check (importing `ssl` and a handshake, tens of ms): for a
    worker, whose node agent checked the same files (it inherits their environment) at its
    start; the files are still read and must still be PEM of their kind."""
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        return None  # Config allows all three or none
    return read_tls(config.tls_cert, config.tls_key, config.tls_ca, check=check)


def read_tls(cert: Path, key: Path, ca: Path, *, check: bool = True) -> TlsCredentials:
    """Read and check the three PEM files; ConfigError names the first that is wrong."""
    certificate_chain = _read("tls_cert", cert, _CERTIFICATE, "a PEM certificate")
    private_key = _read("tls_key", key, _PRIVATE_KEY, "a PEM private key")
    if any(marker in private_key for marker in _ENCRYPTED):
        raise ConfigError(f"{_setting('tls_key')}: {key} is encrypted; gRPC needs the key without a passphrase")
    root_certificates = _read("tls_ca", ca, _CERTIFICATE, "PEM CA certificates")
    names = _check(cert, key, ca, root_certificates) if check else None
    return TlsCredentials(cert, key, ca, certificate_chain, private_key, root_certificates, names)


def _setting(name: str) -> str:
    return f"{name} (ACTORHUB_{name.upper()}, --{name.replace('_', '-')})"


def _read(name: str, path: Path, marker: bytes, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{_setting(name)}: cannot read {path}: {e.strerror or e}") from None
    if marker not in data:
        raise ConfigError(f"{_setting(name)}: {path} is not {what}")
    return data


def _check(cert: Path, key: Path, ca: Path, ca_pem: bytes) -> tuple[tuple[str, str], ...]:
    """Parse the files with the standard library's OpenSSL and run one mutual handshake in
    memory: the key matches the certificate, and the certificate verifies against the CA as a
    server's and as a client's. Returns the certificate's subjectAltNames."""
    import ssl

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # the name is checked against each address a peer dials
    server.verify_mode = ssl.CERT_REQUIRED
    for context in (server, client):
        try:
            # Only paths are taken here; the bytes used are the ones read above.
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"{_setting('tls_cert')} {cert} and {_setting('tls_key')} {key}: "
                f"not a certificate and its matching private key ({_reason(e)})"
            ) from None
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{_setting('tls_ca')}: {ca} holds no usable CA certificate ({_reason(e)})") from None
    try:
        peer = _handshake(server, client)
    except ssl.SSLError as e:
        raise ConfigError(
            f"{_setting('tls_cert')}: {cert} does not verify against the CA in {ca} "
            f"for use by both servers and clients ({_reason(e)})"
        ) from None
    return tuple((str(kind), str(value)) for kind, value in peer.get("subjectAltName", ()))


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> dict[str, Any]:
    """A TLS handshake between two in-memory ends; the server's certificate as the client read it.

    A refusal raises ssl.SSLError on the end that refused: the client for the server's
    certificate, the server for the client's (under TLS 1.3 the client has finished by then)."""
    import ssl

    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_end = server.wrap_bio(server_in, server_out, server_side=True)
    client_end = client.wrap_bio(client_in, client_out)
    client_done = server_done = False
    for _ in range(8):  # a mutual handshake takes 3 flights under TLS 1.3, 4 under TLS 1.2
        if not client_done:
            client_done = _step(client_end)
        server_in.write(client_out.read())
        if not server_done:
            server_done = _step(server_end)
        client_in.write(server_out.read())
        if client_done and server_done:
            return client_end.getpeercert() or {}
    raise ssl.SSLError("the in-memory handshake did not finish")


def _step(end: ssl.SSLObject) -> bool:
    import ssl

    try:
        end.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def _reason(e: Exception) -> str:
    verify = getattr(e, "verify_message", None)
    reason = getattr(e, "reason", None)
    return str(verify or reason or e)


def _same_ip(value: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(value.strip()) == ip
    except ValueError:
        return False


def _name_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host
