"""Message sources: adapters that bring broker messages to the intake (MessageSource port).

Imported lazily: the STOMP receiver process (``stomp_receiver``) lives in this package and
should not pay for asyncio, tenacity and the source itself each time it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idds_vis.sources.stomp import StompSettings, StompSource

__all__ = ["StompSettings", "StompSource"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from idds_vis.sources import stomp

        return getattr(stomp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
