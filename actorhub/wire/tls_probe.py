"""Whether this process and a server agree on TLS, asked before the first RPC.

gRPC reports a TLS disagreement as an unreachable peer: a plain channel to a TLS server, a
server certificate from another CA or a client certificate the server refuses all look like
UNAVAILABLE, and a call that waits for the server to be ready waits out its whole deadline
and then blames a control plane that is "down or recovering". Joining a cluster (init() with
an address, `actorhub start --address`) therefore first opens one connection of its own and
names the disagreement, in a fraction of a second.
"""

from __future__ import annotations

import socket

from actorhub.config import ConfigError
from actorhub.wire.tls import TlsCredentials

# What an HTTP/2 client sends first: a plain gRPC server answers with a SETTINGS frame, a TLS
# server with an alert or by closing the connection (these bytes are no TLS record).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake


class TlsMismatchError(ConfigError):
    """This process and the server it dials disagree on TLS; the message says how to fix it."""


def check_tls(host: str, port: int, tls: TlsCredentials | None, timeout: float = 2.0) -> None:
    """Raise TlsMismatchError when a channel from this process to host:port could never work
    because of TLS. Says nothing when nothing answers: that is for the caller's own checks."""
    problem = _plain_problem(host, port, timeout) if tls is None else _tls_problem(host, port, tls, timeout)
    if problem is not None:
        raise TlsMismatchError(f"cannot talk to {host}:{port}: {problem}")


def _plain_problem(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            first = sock.recv(9)
    except OSError:
        return None  # refused, reset or no answer: not a TLS question
    if len(first) >= 4 and first[3] == _SETTINGS:
        return None
    if not first or first[0] in _TLS_RECORD_TYPES:
        return ("it serves TLS and this process has no TLS settings; set ACTORHUB_TLS_CERT, ACTORHUB_TLS_KEY "
                "and ACTORHUB_TLS_CA (or --tls-cert, --tls-key and --tls-ca) to a certificate of the cluster's CA")
    return None


def _tls_problem(host: str, port: int, tls: TlsCredentials, timeout: float) -> str | None:
    import ssl  # here: only processes with TLS settings pay for it

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_path))
    context.load_cert_chain(str(tls.cert_path), str(tls.key_path))
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host.strip("[]")) as sock:
                # TLS 1.3 servers judge the client's certificate after the handshake: the
                # refusal arrives with the first read.
                sock.sendall(_H2_PREFACE)
                answer = sock.recv(9)
    except ssl.SSLCertVerificationError as e:
        return (f"its certificate does not verify against tls_ca {tls.ca_path} ({e.verify_message}); the server "
                "must present a certificate of this CA that names the address dialled")
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return ("it does not serve TLS, and this process has TLS settings (ACTORHUB_TLS_*); unset them, or "
                    "start the cluster with --tls-cert, --tls-key and --tls-ca")
        if "ALERT" in reason or "CERTIFICATE" in reason:
            return _refused(tls, reason)
        return f"the TLS handshake failed ({reason})"
    except OSError:
        return None  # refused, reset or no answer: not a TLS question
    if not answer:
        # Closed right after the handshake, without a word: a server refuses a client
        # certificate that way.
        return _refused(tls, "the server closed the connection after the handshake")
    return None


def _refused(tls: TlsCredentials, reason: str) -> str:
    return f"it refused this process's certificate {tls.cert_path} ({reason}); it must be issued by the cluster's CA"
