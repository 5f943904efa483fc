"""Mutual TLS on every channel and server, the token on top (actorhub/wire/tls.py).

The tests make their own CAs and certificates with `cryptography`, in a temporary directory:
the cluster's CA, a certificate it issued for 127.0.0.1 and localhost, one it issued for
another address only, and a second CA with a certificate of its own for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from _drivers import REPO, run_driver
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import actorhub
from actorhub._proto.v1 import common_pb2, hub_pb2_grpc, node_pb2_grpc, worker_pb2_grpc
from actorhub.cluster.session import latest_session
from actorhub.config import Config, ConfigError
from actorhub.wire.server import bind, make_server
from actorhub.wire.tls import TlsCredentials, load_tls, read_tls
from actorhub.wire.tls_probe import TlsMismatchError, check_tls
from actorhub.wire.transport import AsyncChannelPool, ChannelPool, open_channel

LOOPBACK = "127.0.0.1"

# ---- a small PKI -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the cluster's CA
    node: Identity  # issued by `ca` for 127.0.0.1 and localhost
    elsewhere: Identity  # issued by `ca` for 127.0.0.2 only
    other_ca: Path  # a CA the cluster does not trust
    stranger: Identity  # issued by `other_ca` for 127.0.0.1 and localhost

    def env(self) -> dict[str, str]:
        return {"ACTORHUB_TLS_CERT": str(self.node.cert), "ACTORHUB_TLS_KEY": str(self.node.key),
                "ACTORHUB_TLS_CA": str(self.ca)}

    def credentials(self, who: Identity | None = None, ca: Path | None = None) -> TlsCredentials:
        """Credentials as a peer would hold them, built by hand: read_tls would refuse the mixed
        ones (a certificate that does not verify against the CA)."""
        who = who or self.node
        return TlsCredentials(who.cert, who.key, ca or self.ca, who.cert.read_bytes(), who.key.read_bytes(),
                              (ca or self.ca).read_bytes())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def _make_ca(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def _issue(
    folder: Path, name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
    ips: tuple[str, ...], dns: tuple[str, ...] = (),
) -> Identity:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(d) for d in dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = folder / f"{name}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(cert_path, _write_key(folder / f"{name}.key", key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key, ca_cert = _make_ca(folder, "cluster-ca")
    other_ca, other_key, other_cert = _make_ca(folder, "other-ca")
    return Pki(
        ca=ca,
        node=_issue(folder, "node", ca_key, ca_cert, (LOOPBACK,), ("localhost",)),
        elsewhere=_issue(folder, "elsewhere", ca_key, ca_cert, ("127.0.0.2",)),
        other_ca=other_ca,
        stranger=_issue(folder, "stranger", other_key, other_cert, (LOOPBACK,), ("localhost",)),
    )


# ---- probes --------------------------------------------------------------------------------------


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


# One cheap call per kind of server: the hub, a node agent, a worker and the driver's own server.
PROBES: dict[str, Callable[[grpc.Channel], Any]] = {
    "hub": lambda ch: hub_pb2_grpc.HubStub(ch).GetClusterStatus(common_pb2.Empty(), timeout=10),
    "node": lambda ch: node_pb2_grpc.NodeStub(ch).GetNodeInfo(common_pb2.Empty(), timeout=10),
    "worker": lambda ch: worker_pb2_grpc.WorkerStub(ch).Ping(common_pb2.Empty(), timeout=10),
    "driver": lambda ch: worker_pb2_grpc.WorkerStub(ch).Ping(common_pb2.Empty(), timeout=10),
}


def _codes(servers: dict[str, str], channel: Callable[[str], grpc.Channel]) -> dict[str, grpc.StatusCode]:
    codes = {}
    for kind, address in servers.items():
        with channel(address) as ch:
            codes[kind] = _code(lambda ch=ch, kind=kind: PROBES[kind](ch))
    return codes


@dataclass(frozen=True)
class TlsCluster:
    token: str
    servers: dict[str, str]  # kind -> address


@pytest.fixture
def tls_cluster(pki: Pki, monkeypatch: pytest.MonkeyPatch, session_root: Path) -> Iterator[TlsCluster]:
    """A local cluster started by this process with TLS (its processes inherit ACTORHUB_TLS_*),
    with an actor, so that a worker serves too."""
    for name, value in pki.env().items():
        monkeypatch.setenv(name, value)
    context = actorhub.init(num_cpus=1)
    try:

        @actorhub.remote
        class Pinger:
            def ping(self) -> int:
                return 1

        actor = Pinger.remote()
        assert actorhub.get(actor.ping.remote(), timeout=60) == 1
        token = latest_session(session_root).token
        with open_channel(context.address, token, tls=pki.credentials()) as ch:
            status = hub_pb2_grpc.HubStub(ch).GetClusterStatus(common_pb2.Empty(), timeout=10)
        servers = {
            "hub": context.address,
            "node": status.nodes[0].address,
            "worker": next(a.address for a in status.actors if a.actor_id == actor.actor_id),
            "driver": status.driver_addresses[0],
        }
        yield TlsCluster(token, servers)
    finally:
        actorhub.shutdown()


# ---- a whole cluster ---------------------------------------------------------------------------

_DRIVER = """
from pathlib import Path

import grpc
import numpy as np

import actorhub
from actorhub._proto.v1 import common_pb2, hub_pb2_grpc
from actorhub.cluster.session import Session
from actorhub.wire.transport import open_channel

context = actorhub.init(num_cpus=2)


@actorhub.remote
class Accumulator:
    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total

    def checksum(self, array):
        return float(array.sum()), array.nbytes


@actorhub.remote
def square(x):
    return x * x


@actorhub.remote
def ones(n):
    return np.ones(n)


acc = Accumulator.remote()
assert actorhub.get([acc.add.remote(i) for i in range(1, 11)])[-1] == 55
assert actorhub.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]

big = np.arange(6_000_000, dtype=np.float64)  # 48 MB: through the object store
ref = actorhub.put(big)
assert np.array_equal(actorhub.get(ref), big)
assert actorhub.get(acc.checksum.remote(ref)) == (float(big.sum()), big.nbytes)
assert actorhub.get(ones.remote(3_000_000)).sum() == 3_000_000

# Really TLS: the hub refuses a plain channel, even one that carries the right token.
token = Session(Path(context.session_dir)).token
with open_channel(context.address, token) as plain:
    try:
        hub_pb2_grpc.HubStub(plain).GetClusterStatus(common_pb2.Empty(), timeout=5)
        raise SystemExit("a plain channel was served")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
actorhub.shutdown()
print("tls ok")
"""


def test_a_whole_local_cluster_runs_with_tls(pki: Pki) -> None:
    result = run_driver(_DRIVER, timeout=110, **pki.env())
    assert "tls ok" in result.stdout


# ---- who is refused --------------------------------------------------------------------------


def test_every_server_refuses_a_plain_client_and_serves_a_tls_one(tls_cluster: TlsCluster, pki: Pki) -> None:
    token = tls_cluster.token
    assert _codes(tls_cluster.servers, lambda a: open_channel(a, token)) == dict.fromkeys(
        tls_cluster.servers, grpc.StatusCode.UNAVAILABLE)
    assert _codes(tls_cluster.servers, lambda a: open_channel(a, token, tls=pki.credentials())) == dict.fromkeys(
        tls_cluster.servers, grpc.StatusCode.OK)


def test_a_client_of_another_ca_is_refused(tls_cluster: TlsCluster, pki: Pki) -> None:
    token = tls_cluster.token
    refused = dict.fromkeys(tls_cluster.servers, grpc.StatusCode.UNAVAILABLE)
    # Its certificate is not signed by the cluster's CA: the servers refuse it...
    stranger = pki.credentials(pki.stranger, ca=pki.ca)
    assert _codes(tls_cluster.servers, lambda a: open_channel(a, token, tls=stranger)) == refused
    # ...and one that trusts only the other CA refuses the servers.
    trusts_other = pki.credentials(pki.stranger, ca=pki.other_ca)
    assert _codes(tls_cluster.servers, lambda a: open_channel(a, token, tls=trusts_other)) == refused


def test_the_right_certificate_without_the_token_is_refused(tls_cluster: TlsCluster, pki: Pki) -> None:
    credentials = pki.credentials()
    unauthenticated = dict.fromkeys(tls_cluster.servers, grpc.StatusCode.UNAUTHENTICATED)
    assert _codes(tls_cluster.servers, lambda a: grpc.secure_channel(a, credentials.channel_credentials())) == (
        unauthenticated)
    assert _codes(tls_cluster.servers, lambda a: open_channel(a, "0" * 64, tls=credentials)) == unauthenticated


def test_a_server_certificate_must_name_the_address_dialled(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    # A server that answers every call UNIMPLEMENTED once past TLS and the token: a handshake
    # that fails shows as UNAVAILABLE instead.
    token = "t" * 64
    client = ChannelPool(token, tls=pki.credentials())
    servers = []
    try:
        good, misnamed = make_server(token, max_workers=2), make_server(token, max_workers=2)
        servers += [good, misnamed]
        with caplog.at_level(logging.WARNING, logger="actorhub"):
            good_port = bind(good, LOOPBACK, 0, read_tls(pki.node.cert, pki.node.key, pki.ca)).rsplit(":", 1)[1]
            assert not caplog.text
            misnamed_address = bind(misnamed, LOOPBACK, 0, read_tls(pki.elsewhere.cert, pki.elsewhere.key, pki.ca))
        # Bound where its certificate does not reach: said at once, in the log.
        assert "names none of 127.0.0.1" in caplog.text and str(pki.elsewhere.cert) in caplog.text
        for server in servers:
            server.start()
        probe = PROBES["worker"]
        assert _code(lambda: probe(client.get(f"{LOOPBACK}:{good_port}"))) == grpc.StatusCode.UNIMPLEMENTED
        assert _code(lambda: probe(client.get(f"localhost:{good_port}"))) == grpc.StatusCode.UNIMPLEMENTED
        # Signed by the right CA, but for 127.0.0.2: a client dialling 127.0.0.1 refuses it.
        assert _code(lambda: probe(client.get(misnamed_address))) == grpc.StatusCode.UNAVAILABLE
    finally:
        client.close()
        for server in servers:
            server.stop(None)


def test_without_tls_channels_are_opened_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    # The non-TLS path is the one from before TLS: plain channels, the same token wrapper.
    opened: list[str] = []
    for module, kind in ((grpc, "insecure_channel"), (grpc.aio, "insecure_channel"),
                         (grpc, "secure_channel"), (grpc.aio, "secure_channel")):
        real = getattr(module, kind)
        label = f"{'aio.' if module is grpc.aio else ''}{kind}"
        monkeypatch.setattr(module, kind, lambda *a, real=real, label=label, **k: opened.append(label) or real(*a, **k))
    ChannelPool("t").get(f"{LOOPBACK}:1").close()

    async def open_async() -> None:
        pool = AsyncChannelPool("t")
        pool.get(f"{LOOPBACK}:1")
        await pool.close()

    asyncio.run(open_async())
    assert opened == ["insecure_channel", "aio.insecure_channel"]


# ---- bad files fail at start, named ------------------------------------------------------------


def test_bad_tls_files_are_refused_with_the_file_named(pki: Pki, tmp_path: Path) -> None:
    node = pki.node
    assert load_tls(Config()) is None
    loaded = load_tls(Config(tls_cert=node.cert, tls_key=node.key, tls_ca=pki.ca))
    assert loaded is not None and loaded.covers(LOOPBACK) and loaded.covers("localhost")
    assert not loaded.covers("127.0.0.2") and not loaded.covers("example.com")
    assert "PRIVATE" not in repr(loaded)  # the key never shows in a log line

    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
    cases = [
        ((missing, node.key, pki.ca), ["tls_cert", "ACTORHUB_TLS_CERT", str(missing), "cannot read"]),
        ((node.cert, missing, pki.ca), ["tls_key", str(missing), "cannot read"]),
        ((node.cert, node.key, missing), ["tls_ca", str(missing), "cannot read"]),
        ((garbage, node.key, pki.ca), ["tls_cert", str(garbage), "not a PEM certificate"]),
        ((node.cert, garbage, pki.ca), ["tls_key", str(garbage), "not a PEM private key"]),
        ((node.cert, encrypted, pki.ca), ["tls_key", str(encrypted), "encrypted"]),
        ((node.cert, node.key, broken), ["tls_ca", str(broken)]),
        ((broken, node.key, pki.ca), [str(broken), str(node.key)]),
        # The key of another certificate.
        ((node.cert, pki.stranger.key, pki.ca), [str(node.cert), str(pki.stranger.key), "matching private key"]),
        # A certificate the CA did not sign.
        ((pki.stranger.cert, pki.stranger.key, pki.ca), [str(pki.stranger.cert), str(pki.ca), "does not verify"]),
    ]
    for (cert, key, ca), words in cases:
        with pytest.raises(ConfigError) as info:
            read_tls(cert, key, ca)
        for word in words:
            assert word in str(info.value), (cert, key, ca, str(info.value))
    # A worker reads without the OpenSSL check (its node agent made it): files still must be PEM.
    unchecked = read_tls(pki.stranger.cert, pki.stranger.key, pki.ca, check=False)
    assert unchecked.names is None
    with pytest.raises(ConfigError, match=str(missing)):
        read_tls(node.cert, node.key, missing, check=False)


def test_a_bad_certificate_path_fails_init_and_the_hub_at_start(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-cert.pem"
    env = {**pki.env(), "ACTORHUB_TLS_CERT": str(missing)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # A driver: init() raises before it uses the cluster it started, and stops it (the
    # autouse fixtures fail the test if a process or an arena is left).
    with pytest.raises(ConfigError, match=str(missing)):
        actorhub.init(num_cpus=1)
    assert not actorhub.is_initialized()
    # The hub process: refuses to start, naming the file, before it listens.
    session_dir = tmp_path / "session"
    session_dir.mkdir(mode=0o700)
    hub = subprocess.run([sys.executable, "-m", "actorhub.hub", "--session-dir", str(session_dir)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert hub.returncode == 2, hub.stderr
    assert str(missing) in hub.stderr and "tls_cert" in hub.stderr


# ---- a TLS disagreement is named before the first call --------------------------------------


def test_a_tls_disagreement_is_named_by_a_probe_of_its_own(pki: Pki) -> None:
    # gRPC would report each of these as UNAVAILABLE, and a call waiting for readiness would
    # wait out its deadline: check_tls names the disagreement instead.
    token = "t" * 64
    plain, secure, misnamed = (make_server(token, max_workers=2) for _ in range(3))
    try:
        plain_port = int(bind(plain, LOOPBACK, 0).rsplit(":", 1)[1])
        secure_port = int(bind(secure, LOOPBACK, 0, read_tls(pki.node.cert, pki.node.key, pki.ca)).rsplit(":", 1)[1])
        misnamed_port = int(
            bind(misnamed, LOOPBACK, 0, read_tls(pki.elsewhere.cert, pki.elsewhere.key, pki.ca)).rsplit(":", 1)[1])
        for server in (plain, secure, misnamed):
            server.start()

        def problem(port: int, tls: TlsCredentials | None) -> str:
            try:
                check_tls(LOOPBACK, port, tls)
            except TlsMismatchError as e:
                return str(e)
            return ""

        assert problem(plain_port, None) == ""
        assert problem(secure_port, pki.credentials()) == ""
        assert "it serves TLS and this process has no TLS settings" in problem(secure_port, None)
        assert "it does not serve TLS" in problem(plain_port, pki.credentials())
        assert "does not verify against tls_ca" in problem(secure_port, pki.credentials(pki.stranger, ca=pki.other_ca))
        assert "does not verify against tls_ca" in problem(misnamed_port, pki.credentials())
        refused = problem(secure_port, pki.credentials(pki.stranger, ca=pki.ca))
        assert "refused this process's certificate" in refused and str(pki.stranger.cert) in refused
    finally:
        for server in (plain, secure, misnamed):
            server.stop(None)
    # Nothing listens: not a TLS question, left to the caller's own checks.
    assert problem(plain_port, None) == "" and problem(secure_port, pki.credentials()) == ""


def test_a_plain_driver_joining_a_tls_cluster_fails_at_once_saying_why(tls_cluster: TlsCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORHUB_TLS_")}
    env["ACTORHUB_TOKEN"] = tls_cluster.token
    program = (
        "import actorhub\n"
        "from actorhub.wire.tls_probe import TlsMismatchError\n"
        "try:\n"
        f"    actorhub.init(address={tls_cluster.servers['hub']!r})\n"
        "except TlsMismatchError as e:\n"
        "    print('refused:', e)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "it serves TLS" in done.stdout, done.stdout
    assert time.monotonic() - started < 10  # not after a 30 s deadline
