"""Addresses the app writes into its pages and JSON, behind a proxy or not."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from idds_vis.api.keys import SETTINGS
from idds_vis.domain.permalink import permalink_path, permalink_query


def public_base(request: web.Request) -> str:
    """The app's public base URL: ``web_url`` when set (behind a proxy), else as requested."""
    configured = request.app[SETTINGS].web_url
    return configured.rstrip("/") if configured else str(request.url.origin())


def root(request: web.Request) -> str:
    """The path the app's public URLs start with ("" unless it lives under a prefix)."""
    return urlsplit(public_base(request)).path.rstrip("/")


def permalink(
    request: web.Request,
    task_name: str,
    tool: str,
    ttl: str | None = None,
    owner: str | None = None,
) -> str:
    """The permalink's path (with its TTL and owner), as a browser on this app reaches it."""
    return root(request) + permalink_path(task_name, tool) + permalink_query(ttl, owner)


def absolute_permalink(request: web.Request, task_name: str, tool: str) -> str:
    return public_base(request) + permalink_path(task_name, tool)
