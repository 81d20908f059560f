"""Static files: the page's CSS and JS, the monitor snippet at ``/embed.js``, robots.txt, the
icon; and ``/``, which sends a person to the catalog (not a bare 404)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from aiohttp import web

from idds_vis.api.urls import root

STATIC = Path(str(files("idds_vis.api") / "static"))
routes = web.RouteTableDef()
routes.static("/static", STATIC)


@routes.get("/embed.js")
async def embed(request: web.Request) -> web.FileResponse:
    # Short cache: a task page loads it often, and a new release should reach pages soon.
    return web.FileResponse(STATIC / "embed.js", headers={
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "public, max-age=300",
        "Access-Control-Allow-Origin": "*",
    })  # fmt: skip


@routes.get("/robots.txt")
async def robots(request: web.Request) -> web.Response:
    # Permalinks start nothing on GET, but a crawler has no business following them either.
    return web.Response(text="User-agent: *\nDisallow: /t/\nDisallow: /api/\n")


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    # The front door: the catalog lists the tools and, signed in, the person's UIs.
    raise web.HTTPFound(f"{root(request)}/catalog")


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.FileResponse:
    # Browsers ask for it on pages that name no icon (JSON, plain-text refusals).
    return web.FileResponse(STATIC / "favicon.svg", headers={
        "Content-Type": "image/svg+xml",
        "Cache-Control": "public, max-age=86400",
    })  # fmt: skip
