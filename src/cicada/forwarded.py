"""Which peers may set X-Forwarded-For / X-Forwarded-Proto: the ``--forwarded-allow-ips`` list
(IP addresses, CIDR networks, ``*``, or literals such as a unix socket path) turned into the
``trusted_proxy(host) -> bool`` callable the C HTTP server calls.

It only answers "is this host trusted"; header parsing lives in the C protocol.
"""

from __future__ import annotations

import functools
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_hosts(value: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value)
    return [item.strip() for item in items if item and item.strip()]


class TrustedHosts:
    """Callable ``host -> bool``. Invalid IPs/networks are kept as literal strings (uvicorn does
    the same), which is how a unix-socket peer name can be trusted."""

    def __init__(self, trusted: str | list[str] | tuple[str, ...] = "127.0.0.1") -> None:
        hosts = parse_hosts(trusted)
        self.always_trust = "*" in hosts
        self.literals: set[str] = set()
        self.addresses: set[IPAddress] = set()
        self.networks: set[IPNetwork] = set()
        for host in hosts:
            if host == "*":
                continue
            if "/" in host:
                try:
                    self.networks.add(ipaddress.ip_network(host, strict=False))
                    continue
                except ValueError:
                    pass
            else:
                try:
                    self.addresses.add(ipaddress.ip_address(host))
                    continue
                except ValueError:
                    pass
            self.literals.add(host)
        self._cached = functools.lru_cache(maxsize=4096)(self._compute)

    def _compute(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        if ip in self.addresses:
            return True
        return any(ip in net for net in self.networks)

    def __call__(self, host: str | None) -> bool:
        if self.always_trust:
            return True
        if not host:
            return False
        if len(host) > 253:  # not an address or DNS name; don't pin it in the cache
            return self._compute(host)
        return self._cached(host)

    __contains__ = __call__

    def __repr__(self) -> str:
        if self.always_trust:
            return "TrustedHosts('*')"
        items = sorted(map(str, self.addresses | self.networks)) + sorted(self.literals)  # type: ignore[operator]
        return f"TrustedHosts({','.join(items)!r})"
