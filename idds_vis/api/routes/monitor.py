"""The monitor's JSON: every visualization of one task, by PanDA task id or by task name.

``GET /api/v1/tasks/{task_id}`` and ``GET /api/v1/tasks/by-name/{task_name}`` answer
``{"task_id", "task_name", "instances": [...]}`` (see ``views.instance_json``), or 404
``{"error": reason}`` when the task has no record. Read-only and public, so any page (the
BigPanDA task page's snippet) may read it across origins. A UI's ``url`` is there only for
those the UI is for (issue 17: ``auth_check.decide``); others see phase, expiry, permalink.
"""

from __future__ import annotations

from aiohttp import web

from idds_vis.api.keys import AGENT, REFUSALS
from idds_vis.api.routes.auth_check import decide
from idds_vis.api.urls import absolute_permalink
from idds_vis.api.views import instance_json
from idds_vis.domain.models import Instance

routes = web.RouteTableDef()
CORS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}


@routes.get("/api/v1/tasks/by-name/{task_name:.+}")
async def by_name(request: web.Request) -> web.Response:
    task_name = request.match_info["task_name"]
    found = await request.app[AGENT].ledger.find(task_name=task_name)
    if not found:
        refused = request.app[REFUSALS].reason(task_name, request.app[AGENT].clock.now())
        reason = refused or f"no visualization has been asked for task {task_name!r}"
        return web.json_response({"error": reason}, status=404, headers=CORS)
    # A resubmitted task reuses its name: the newest task's records answer.
    newest = [inst for inst in found if inst.task_id == found[0].task_id]
    return await _answer(request, newest)


@routes.get("/api/v1/tasks/{task_id}")
async def by_id(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    found = await request.app[AGENT].ledger.find(task_id=task_id)
    if not found:
        reason = f"no visualization has been asked for task {task_id}"
        return web.json_response({"error": reason}, status=404, headers=CORS)
    return await _answer(request, found)


async def _answer(request: web.Request, found: list[Instance]) -> web.Response:
    task_name = next((inst.task_name for inst in found if inst.task_name), None)
    instances = []
    for inst in sorted(found, key=lambda i: i.tool):
        link = absolute_permalink(request, task_name, inst.tool) if task_name else None
        shown = instance_json(inst, link)
        if shown["url"] is not None and not (await decide(request, inst, count=False)).allowed:
            shown["url"] = None
        instances.append(shown)
    body = {"task_id": found[0].task_id, "task_name": task_name, "instances": instances}
    return web.json_response(body, headers=CORS)
