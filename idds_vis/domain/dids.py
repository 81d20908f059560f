"""Rucio data identifiers (DIDs): ``scope:name``, or a bare name whose scope the name implies."""

from __future__ import annotations

from dataclasses import dataclass

# Characters that would make one DID stand for many (wildcards) or break a path or a header.
_FORBIDDEN = frozenset("*?[]\x00\n\r\t ")


@dataclass(frozen=True)
class Did:
    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"


def implied_scope(name: str) -> str:
    """The scope a bare name belongs to: its first two dot-fields for ``user.*``/``group.*``
    (``user.jdoe.x`` -> ``user.jdoe``), otherwise its first (``mc23_13p6TeV.x`` ->
    ``mc23_13p6TeV``).

    The same rule as Rucio's default scope extraction, which PanDA's output names follow.
    """
    fields = name.split(".")
    if fields[0] in ("user", "group") and len(fields) > 1:
        return ".".join(fields[:2])
    return fields[0]


def parse_did(text: str) -> Did:
    """``scope:name`` or a bare ``name``; a trailing '/' (a container, as PanDA writes them) is
    dropped. Raises ValueError with a readable reason."""
    did = text.strip()
    if ":" in did:
        scope, _, name = did.partition(":")
        if ":" in name:
            raise ValueError(f"Rucio DID '{did}' has more than one ':'")
        if not scope:
            raise ValueError(f"Rucio DID '{did}' has no scope before its ':'")
    else:
        scope, name = "", did
    name = name.rstrip("/")
    if not name:
        raise ValueError(f"Rucio DID '{did}' has no name")
    if not scope:
        scope = implied_scope(name)
    bad = sorted(_FORBIDDEN.intersection(scope + name))
    if bad:
        raise ValueError(
            f"Rucio DID '{did}' contains {', '.join(repr(c) for c in bad)}: name exactly one DID"
        )
    if not scope or scope.startswith(".") or scope.endswith("."):
        raise ValueError(f"Rucio DID '{did}' has no scope")
    return Did(scope, name)
