"""Behind a reverse proxy: believe ``X-Forwarded-For``/``-Proto`` from trusted peers only."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDR ranges; raises ValueError with the offending text."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
    return tuple(networks)


def address_in(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class TrustedProxies:
    """The reverse proxies (``--trusted-proxy``) whose forwarding headers we believe."""

    def __init__(self, networks: tuple[IPNetwork, ...] = ()) -> None:
        self._networks = networks

    def trusts(self, peer_host: str) -> bool:
        return bool(self._networks) and address_in(peer_host, self._networks)

    def client_address(self, peer_host: str, forwarded_for: str | None) -> str:
        """The right-most address not a trusted proxy: the one a client cannot forge."""
        if not self.trusts(peer_host) or not forwarded_for:
            return peer_host
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer_host

    def is_secure(
        self, peer_host: str, transport_secure: bool, forwarded_proto: str | None
    ) -> bool:
        """Whether the browser's connection is TLS: ours, or the trusted proxy's."""
        if transport_secure:
            return True
        if not self.trusts(peer_host) or not forwarded_proto:
            return False
        return forwarded_proto.split(",")[0].strip().lower() in ("https", "wss")
