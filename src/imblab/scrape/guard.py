"""The peer-address guard of ``imblab-scrape``'s downloads (the SSRF rule), on its own so that it
can be reviewed alone.

Rule: the first DNS answer of a download decides. If it holds a public address, every
connection of the download (redirect hops, retries, any later DNS answer) goes to public
addresses only: the others are dropped, and a host with no public address is refused
(:class:`Refused`). A URL whose host is itself loopback or private is fetched as given,
redirects included.

Enforcement: each connection of a download resolves its host with :meth:`PeerGuard.resolve`
and connects only to the addresses it returns (``_GuardedHTTPConnection`` of
:mod:`imblab.scrape.transport` and its TLS subclass, which the download's own adapter makes for
every request), so the address checked is the address connected to: no second lookup can
differ from the one checked.
"""

from __future__ import annotations

import ipaddress
import socket

from urllib3.util.connection import allowed_gai_family

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A connection the SSRF rule forbids (deliberately no OSError: urllib3 must not retry it)."""


def address_kind(ip: str) -> str | None:
    """What keeps ``ip`` from being a public address ("loopback", "unspecified", "link-local",
    "multicast", "reserved", "private", "non-global"), or None for a public one. An IPv4 address
    inside an IPv6 one (IPv4-mapped, 6to4, NAT64) is judged as that IPv4 address too."""
    addr = ipaddress.ip_address(ip.split("%")[0])  # an IPv6 zone ("%eth0") is no part of it
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and addr in _NAT64:
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None and (kind := address_kind(str(inner))) is not None:
            return kind
    for kind, flag in (
        ("loopback", addr.is_loopback),
        ("unspecified", addr.is_unspecified),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("reserved", addr.is_reserved),
        ("private", addr.is_private),
        ("non-global", not addr.is_global),  # e.g. 100.64.0.0/10, shared address space
    ):
        if flag:
            return kind
    return None


class PeerGuard:
    """The SSRF rule's state for one download (one guard per download, shared by its
    connections)."""

    def __init__(self) -> None:
        self.public: bool | None = None  # set by the first resolution

    def admit(self, host: str, ips: list[str]) -> list[str]:
        """The addresses of ``host`` the rule lets the download connect to (in order); raises
        Refused if none."""
        kinds = {ip: address_kind(ip) for ip in ips}
        public = [ip for ip in ips if kinds[ip] is None]
        if self.public is None:
            self.public = bool(public)
        if self.public and ips and not public:
            ip = ips[0]
            raise Refused(
                f"SSRF rule: {host} resolves to {ip}, a {kinds[ip]} address; a public URL is "
                "never followed (by a redirect or a new DNS answer) to a non-public address"
            )
        return public if self.public else ips

    def resolve(self, host: str, port: int | None) -> list[str]:
        """The addresses a connection to ``host`` (as urllib3 holds it: an IPv6 address in
        brackets) may use, in order: one lookup, judged by :meth:`admit`. Raises
        socket.gaierror if the lookup fails, Refused if the rule forbids every address."""
        infos = socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(), socket.SOCK_STREAM)
        return self.admit(host, list(dict.fromkeys(str(i[4][0]) for i in infos)))
