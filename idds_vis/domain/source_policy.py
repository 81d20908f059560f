"""Which artefact sources a broker message may name, and which addresses staging may reach.

A message is written by whoever can publish to the broker, so the source it names is hostile
until checked (docs/how-to/broker-messages.md). Two decisions live here, both pure:

- ``SourcePolicy.check_message_source``: the source string a message (a ``vis_request``, an iDDS
  VisualizationWork) names, against the operator's allowlist (``message_sources``). Local
  paths and ``file:`` are never accepted from a message: only the CLI on the agent's own host
  may name one. ``s3://`` and ``rucio://`` use the agent's own credentials, so they are refused
  unless the bucket or the Rucio scope is listed. ``http(s)`` hosts may be listed (with an
  optional port); by default any host is accepted here, and the address check below decides.
- ``AddressPolicy.allows``: an IP address staging is about to connect to. Addresses that are
  not globally routable (loopback, private, link-local, the cloud metadata address, shared,
  reserved, multicast...) are refused unless ``allow_private_addresses`` lists them (a CIDR, an
  address, or a host name whose resolved addresses are then accepted). The staging adapter
  applies it after name resolution and again on the socket it connects, on every redirect.

Refusal reasons name the rule, never what a name resolves to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from idds_vis.domain.dids import parse_did

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Request origins whose artefact source was written by a message's sender (a vis_request, or
# the VisualizationWork an iDDS workflow author wrote), not by the operator or the CLI user.
MESSAGE_ORIGINS = frozenset({"vis_request", "idds"})

DEFAULT_MESSAGE_SCHEMES = frozenset({"http", "https", "s3", "rucio"})
KNOWN_SCHEMES = frozenset({"http", "https", "s3", "rucio"})
_SHOW = 60


class PolicyError(ValueError):
    """The policy settings themselves are wrong (a bad CIDR, an unknown scheme)."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Verdict(True)


def _refused(reason: str) -> Verdict:
    return Verdict(False, reason)


@dataclass(frozen=True)
class MessageSources:
    """The operator's allowlist for sources named by messages (setting ``message_sources``).

    ``hosts``: ``host`` (on the scheme's default port) or ``host:port`` (an IPv6 literal in
    brackets); ``*`` accepts any host and port (the address check still applies); a leading
    ``*.`` accepts every subdomain of a domain.
    ``s3_buckets`` / ``rucio_scopes``: exact names; empty refuses every S3 / Rucio source.
    """

    schemes: frozenset[str] = DEFAULT_MESSAGE_SCHEMES
    hosts: tuple[str, ...] = ("*",)
    s3_buckets: frozenset[str] = frozenset()
    rucio_scopes: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, value: Mapping[str, Any] | None) -> MessageSources:
        """From the YAML mapping; ``PolicyError`` with a one-line reason when it is wrong."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise PolicyError("message_sources must be a mapping (schemes, hosts, ...)")
        unknown = set(value) - {"schemes", "hosts", "s3_buckets", "rucio_scopes"}
        if unknown:
            raise PolicyError(f"message_sources has unknown keys: {', '.join(sorted(unknown))}")
        schemes = frozenset(s.lower() for s in _strings(value, "schemes", DEFAULT_MESSAGE_SCHEMES))
        wrong = schemes - KNOWN_SCHEMES
        if wrong:
            raise PolicyError(
                f"message_sources.schemes may hold http, https, s3 and rucio, not "
                f"{', '.join(sorted(wrong))} (local paths are never taken from messages)"
            )
        hosts = tuple(h.lower() for h in _strings(value, "hosts", ("*",)))
        return cls(
            schemes=schemes,
            hosts=hosts,
            s3_buckets=frozenset(_strings(value, "s3_buckets", ())),
            rucio_scopes=frozenset(_strings(value, "rucio_scopes", ())),
        )

    def host_allowed(self, host: str, port: int | None, default_port: int) -> bool:
        host = host.lower().rstrip(".")
        port = default_port if port is None else port
        for entry in self.hosts:
            if entry == "*":
                return True
            name, want_port = _split_host_port(entry)
            # A host listed without a port means its scheme's default port only.
            if (want_port if want_port is not None else default_port) != port:
                continue
            if name.startswith("*."):
                if host.endswith(name[1:]) and host != name[2:]:
                    return True
            elif host == name:
                return True
        return False


def _strings(value: Mapping[str, Any], key: str, default: Iterable[str]) -> list[str]:
    raw = value.get(key)
    if raw is None:
        return list(default)
    if isinstance(raw, str) or not all(isinstance(v, str) for v in raw):
        raise PolicyError(f"message_sources.{key} must be a list of strings")
    return [str(v).strip() for v in raw if str(v).strip()]


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    if port and not port.isdigit():
        raise PolicyError(f"message_sources host {entry!r} must be written host or host:port")
    return host, int(port) if port else None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses staging may connect to (setting ``allow_private_addresses``)."""

    networks: tuple[IPNetwork, ...] = ()
    host_names: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, entries: Iterable[str] | None) -> AddressPolicy:
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in entries or ():
            if not isinstance(entry, str) or not entry.strip():
                raise PolicyError("allow_private_addresses entries must be CIDRs or host names")
            text = entry.strip().lower()
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                if "/" in text or ":" in text:
                    raise PolicyError(
                        f"allow_private_addresses entry {entry!r} is neither a CIDR nor a host"
                    ) from None
                names.add(text.rstrip("."))
        return cls(tuple(networks), frozenset(names))

    def name_allowed(self, host: str) -> bool:
        """A host name the operator listed: whatever it resolves to is accepted."""
        return host.lower().rstrip(".") in self.host_names

    def allows(self, address: str | IPAddress) -> bool:
        """May staging connect to this address? Public addresses yes; others only if listed."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:  # fe80::1%eth0 and the like: never a public address
                ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
            # ::ffff:127.0.0.1 and 2002:7f00:1:: (6to4) reach the IPv4 address inside.
            inner = ip.ipv4_mapped or ip.sixtofour or _nat64(ip)
            if inner is not None:
                return self.allows(inner)
        if any(ip in net for net in self.networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _NOT_GLOBAL_V6):
            return False
        return is_public(ip)


# The well-known NAT64 prefix (RFC 6052): on an IPv6-only network with DNS64 (a common
# Kubernetes set-up), 64:ff9b::10.0.0.1 is 10.0.0.1 reached through the NAT64 gateway.
# ipaddress calls these global, so the IPv4 address inside is what is judged.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Also called global by ipaddress (3.11), yet never a public destination: the local-use NAT64
# prefix (RFC 8215, IPv4 addresses embedded where the operator chose), IPv4-compatible
# (::a.b.c.d, deprecated) and IPv4-translated (::ffff:0:a.b.c.d, SIIT) addresses, and
# site-local fec0::/10 (deprecated, private in practice).
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in ("64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96", "fec0::/10")
)


def _nat64(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip not in _NAT64:
        return None
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared, reserved..."""
    return bool(ip.is_global) and not ip.is_multicast


@dataclass(frozen=True)
class SourcePolicy:
    """What a message may name as its artefact source."""

    sources: MessageSources = field(default_factory=MessageSources)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    def check_message_source(self, source: str) -> Verdict:
        """Allowed, or refused with a one-line reason that quotes at most a host, bucket or
        scope (never the whole source: its query string may hold the sender's secrets)."""
        text = source.strip()
        if not text:
            return _refused("the message names an empty artefact source")
        lowered = text.lower()
        if lowered.startswith("rucio:"):
            return self._rucio(text)
        if lowered.startswith("s3://"):
            return self._s3(text)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return _refused("the artefact source is not a valid URL")
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if scheme not in self.sources.schemes:
                return _refused(f"{scheme} sources are not accepted from messages here")
            host = (parts.hostname or "").lower()
            if not host:
                return _refused("the artefact source names no host")
            if parts.username is not None or parts.password is not None:
                return _refused("artefact sources from messages may not carry credentials")
            if not self.sources.host_allowed(host, port, 443 if scheme == "https" else 80):
                return _refused(f"host {_show(host)} is not in the message_sources allowlist")
            literal = _ip_literal(host)
            # RFC 6761: every *.localhost name is loopback; say so now rather than at staging.
            local_name = host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost")
            if local_name and not self.addresses.name_allowed(host):
                return _refused(
                    "artefact sources from messages may not name loopback, private or "
                    "link-local addresses"
                )
            if literal is not None and not self.addresses.allows(literal):
                return _refused(
                    "artefact sources from messages may not name loopback, private or "
                    "link-local addresses"
                )
            return ALLOWED
        if scheme == "file" or not scheme or len(scheme) == 1:
            return _refused(
                "local paths and file: URLs are not accepted from messages (only from the "
                "CLI on the agent's host)"
            )
        return _refused(f"unsupported artefact source scheme {_show(scheme)} in a message")

    def _s3(self, text: str) -> Verdict:
        if "s3" not in self.sources.schemes:
            return _refused("s3 sources are not accepted from messages here")
        bucket = text[len("s3://") :].partition("/")[0]
        if not bucket:
            return _refused("the S3 source names no bucket")
        if bucket not in self.sources.s3_buckets:
            return _refused(f"S3 bucket {_show(bucket)} is not in the message_sources allowlist")
        return ALLOWED

    def _rucio(self, text: str) -> Verdict:
        if "rucio" not in self.sources.schemes:
            return _refused("rucio sources are not accepted from messages here")
        rest = text.split(":", 1)[1]
        rest = rest[2:] if rest.startswith("//") else rest
        try:
            did = parse_did(rest)
        except ValueError:
            return _refused("the Rucio source is not a valid DID")
        if did.scope not in self.sources.rucio_scopes:
            return _refused(
                f"Rucio scope {_show(did.scope)} is not in the message_sources allowlist"
            )
        return ALLOWED


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _show(text: str) -> str:
    one_line = "".join(c if c.isprintable() else " " for c in text)
    cut = one_line if len(one_line) <= _SHOW else one_line[: _SHOW - 1] + "…"
    return repr(cut)
