"""Host addresses: parsing HOST:PORT, and which local address a process binds and advertises.

Every server of a host (hub, node agent, zygote's workers, a driver's own server) binds one
concrete address and advertises exactly that address, so whatever a process tells the hub
is reachable from the other hosts. An unspecified address (0.0.0.0) is refused rather than
bound: it cannot be advertised, and guessing which of the host's addresses the others reach
is what `--node-ip-address` is for.

The address is, in order: `node_ip_address` (`--node-ip-address`); `bind_host` when it was set
explicitly (ACTORHUB_BIND_HOST); for a process joining a hub that is not on loopback, the local
address that routes to the hub; otherwise 127.0.0.1, so a local cluster stays on loopback.

Standard library only: this is on the path of every `init()`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from actorhub.config import Config, ConfigError

LOOPBACK = "127.0.0.1"
# How long a driver waits for a hub's port to accept a connection before it says the hub is
# gone: a live hub accepts at once (the kernel does, even when the hub is busy).
PROBE_TIMEOUT_S = 1.5


class InvalidAddressError(ConfigError):
    """A host address is malformed, unknown or unusable here; the message names it and why."""


def parse_address(text: object, what: str = "address") -> tuple[str, int]:
    """("HOST", PORT) of "HOST:PORT"; InvalidAddressError naming `what` when it is not one."""
    if not isinstance(text, str):
        raise InvalidAddressError(f"{what}: expected a str HOST:PORT, not {type(text).__name__}")
    shown = text.strip()
    example = "expected HOST:PORT, e.g. 10.0.0.1:6379"
    if shown.startswith("["):
        raise InvalidAddressError(f"{what} {shown!r}: IPv6 addresses are not supported; use an IPv4 address or a "
                                  "host name")
    host, sep, port_text = shown.rpartition(":")
    if not sep or not host or not port_text:
        raise InvalidAddressError(f"{what} {shown!r}: {example}")
    if ":" in host or any(c.isspace() for c in host) or "/" in host:
        raise InvalidAddressError(f"{what} {shown!r}: {host!r} is not a host name or IPv4 address; {example}")
    if not port_text.isdigit() or not port_text.isascii():
        raise InvalidAddressError(f"{what} {shown!r}: the port {port_text!r} is not a number; {example}")
    return host, check_port(int(port_text), f"{what} {shown!r}", allow_zero=False)


def check_port(port: int, what: str = "port", *, allow_zero: bool = True) -> int:
    """`port` if it is one (0 means "a free one" where `allow_zero`); else InvalidAddressError."""
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise InvalidAddressError(f"{what}: port {port} is out of range ({low}-65535)")
    return port


def resolve(host: str, what: str = "address") -> str:
    """The IPv4 address of `host` (a name or an address); InvalidAddressError if unknown."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InvalidAddressError(f"{what}: unknown host {host!r} ({reason})") from None
    return str(infos[0][4][0])


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return host == "localhost"


def route_to(host: str) -> str:
    """The local address this host would send from to reach `host` (an IPv4 address).

    Connecting a UDP socket only asks the kernel for a route: no packet is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
        except OSError as err:
            raise InvalidAddressError(f"no route from this host to {host}: {err.strerror or err}; pass "
                                      "--node-ip-address (ACTORHUB_NODE_IP_ADDRESS)") from None
        local: str = s.getsockname()[0]
        return local


def check_local(host: str, what: str) -> str:
    """`host` as an IPv4 address this machine has and can bind; InvalidAddressError if not."""
    ip = resolve(host, what)
    address = ipaddress.IPv4Address(ip)
    if address.is_unspecified:
        raise InvalidAddressError(
            f"{what} {host!r}: the unspecified address cannot be advertised to other hosts; give this "
            "machine's address that the other hosts reach (--node-ip-address)")
    if address.is_multicast or ip == "255.255.255.255":
        raise InvalidAddressError(f"{what} {host!r}: not a unicast address")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, 0))
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise InvalidAddressError(f"{what} {host!r}: {ip} is not an address of this machine") from None
            raise InvalidAddressError(f"{what} {host!r}: cannot bind {ip}: {err.strerror or err}") from None
    return ip


def node_host(config: Config, hub_host: str | None = None) -> str:
    """The address this process's servers bind and advertise (see the module's docstring).

    `hub_host` is the host of the hub being joined (None for a head).
    """
    if config.node_ip_address:
        return check_local(config.node_ip_address, "--node-ip-address (ACTORHUB_NODE_IP_ADDRESS)")
    if "bind_host" in config.model_fields_set:
        return check_local(config.bind_host, "ACTORHUB_BIND_HOST")
    if hub_host is not None and not is_loopback(hub_host):
        hub_ip = resolve(hub_host, "the hub's address")
        if not ipaddress.IPv4Address(hub_ip).is_loopback:
            return route_to(hub_ip)
    return LOOPBACK


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when something accepts connections at host:port within `timeout`; else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return err.strerror or str(err)
