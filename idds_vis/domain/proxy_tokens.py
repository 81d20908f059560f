"""Short-lived proofs of a UI's proxy secret, for what passes through a browser's reach.

Behind nginx forward-auth, ``/auth/check`` answers the header the UI's guard demands and nginx
hands it to the UI. ``/auth/check`` is reachable by browsers too, so whoever may see a UI could
call it and keep what it answers after losing access (a revoked link, a group left). It
therefore never answers the secret itself, only ``v1.<expiry>.<HMAC-SHA256(secret, v1.<expiry>)>``,
good for ``LIFETIME`` seconds; the guard (``ui/proxy_guard.py``) takes either the secret (the
agent's probes, the web app's own proxy) or such a proof that has not expired.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v1"
LIFETIME = 300  # seconds: what a kept proof is worth after its holder lost access
_SKEW = 60  # a proof dated further ahead than its lifetime and this is not one we made


def _mac(secret: bytes, claim: str) -> str:
    return hmac.new(secret, claim.encode(), hashlib.sha256).hexdigest()


def proof(secret: str, now: float) -> str:
    """A proof of ``secret`` valid until ``now + LIFETIME`` (rounded up to the minute, so
    nginx may cache the auth answer and the UI sees few distinct values)."""
    expiry = (int(now) // 60 + 1) * 60 + LIFETIME
    claim = f"{VERSION}.{expiry}"
    return f"{claim}.{_mac(secret.encode(), claim)}"


def is_proof(secret: bytes, sent: bytes, now: float) -> bool:
    """``sent`` is an unexpired proof of ``secret``."""
    try:
        version, expiry_text, mac = sent.decode("ascii").split(".")
        expiry = int(expiry_text)
    except (UnicodeDecodeError, ValueError):
        return False
    if version != VERSION or not now < expiry <= now + LIFETIME + 60 + _SKEW:
        return False
    return hmac.compare_digest(mac, _mac(secret, f"{version}.{expiry_text}"))
