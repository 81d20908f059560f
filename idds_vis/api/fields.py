"""The fields of a change request: a JSON object (the API) or a form (the pages)."""

from __future__ import annotations

from aiohttp import web


async def request_fields(request: web.Request) -> dict[str, str]:
    """The body's fields as strings; a body that is not a JSON object is a 400."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return {k: str(v) for k, v in body.items() if v is not None}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}
