"""HTTP surface: URL parsing into RequestInfo, authentication, and dispatch to the verbs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from . import patching, resources, validation
from .errors import ApiError, bad_request
from .faults import RequestInfo
from .resources import BY_GVR, ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .watch import WatchStream

if TYPE_CHECKING:
    from .emulator import KubeEmulator

_ANONYMOUS = ("/version", "/healthz", "/livez", "/readyz")
_NO_ROUTE = "the server could not find the requested resource"


def _json(
    body: Any,
    status: int = 200,
    warnings: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        text=json.dumps(body), status=status, content_type="application/json", headers=headers
    )
    for warning in warnings or []:
        escaped = warning.replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{escaped}"')
    return response


def parse(method: str, path: str, query: Any) -> tuple[RequestInfo, ResourceType | None, str]:
    """Resolve a URL the way kube-apiserver does; returns (info, resource type, subresource)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(method, path, "discovery", ""), None, ""
    watch_prefix = rest[:1] == ["watch"]
    rest = rest[1:] if watch_prefix else rest
    if not rest:
        return RequestInfo(method, path, "discovery", ""), None, ""
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in BY_GVR:
        namespace, rest = rest[1], rest[2:]
    rt = BY_GVR.get((group, version, rest[0]))
    if rt is None or len(rest) > 3:
        raise ApiError(404, _NO_ROUTE, "NotFound")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if sub and (sub != "status" or not rt.status_subresource):
        raise ApiError(404, _NO_ROUTE, "NotFound")
    if rt.namespaced and name is not None and namespace is None:
        raise ApiError(404, _NO_ROUTE, "NotFound")
    # Go's strconv.ParseBool; kubernetes-asyncio sends Python's "True".
    watching = watch_prefix or query.get("watch") in ("1", "t", "T", "TRUE", "true", "True")
    verb = {
        ("GET", False): "watch" if watching else "list",
        ("GET", True): "get",
        ("POST", False): "create",
        ("PUT", True): "update",
        ("PATCH", True): "patch",
        ("DELETE", True): "delete",
        ("DELETE", False): "deletecollection",
    }.get((method, name is not None))
    if verb is None:
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
        )
    resource = f"{rt.plural}/{sub}" if sub else rt.plural
    return RequestInfo(method, path, verb, resource, namespace, name), rt, sub


async def _body(request: web.Request, required: bool = True) -> Any:
    raw = await request.read()
    if not raw:
        if required:
            raise bad_request("the request body is empty")
        return None
    ctype = request.content_type
    try:
        if ctype in ("application/yaml", patching.APPLY_PATCH):
            return yaml.safe_load(raw)
        if ctype == "application/json" or ctype.endswith("+json"):
            return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
    raise ApiError(
        415,
        "the body of the request was in an unknown format - accepted media "
        "types include: application/json, application/yaml, "
        "application/vnd.kubernetes.protobuf",
        "UnsupportedMediaType",
    )


class Routes:
    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            info, rt, sub = parse(request.method, request.path, request.query)
        except ApiError as err:
            info, rt, sub = RequestInfo(request.method, request.path, "unknown", ""), None, ""
            self.emu.faults.record(info)
            return _json(err.status(), err.code)
        self.emu.faults.record(info)
        try:
            if (
                request.path not in _ANONYMOUS
                and request.headers.get("Authorization") != f"Bearer {self.emu.token}"
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            await self.emu.faults.apply(info)
            if rt is None:
                return self._discovery(request)
            return await self._resource(request, info, rt, sub)
        except ApiError as err:
            return _json(err.status(), err.code, headers=err.headers)

    def _discovery(self, request: web.Request) -> web.Response:
        parts = [p for p in request.path.split("/") if p]
        doc: dict[str, Any] | None = None
        if parts == ["version"]:
            major, minor = self.emu.kubernetes_version.split(".")[:2]
            doc = {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{major}.{minor}.0",
                "gitCommit": "emulator",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        elif parts in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        elif parts == ["api"]:
            doc = resources.api_versions(f"{request.host}")
        elif parts == ["apis"]:
            doc = resources.api_group_list()
        elif len(parts) == 2 and parts[0] == "apis" and parts[1] in resources.groups():
            doc = resources.api_group(parts[1])
        elif len(parts) == 2 and parts[0] == "api":
            doc = resources.api_resource_list("", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = resources.api_resource_list(parts[1], parts[2])
        if doc is None:
            raise ApiError(404, _NO_ROUTE, "NotFound")
        return _json(doc)

    async def _resource(
        self, request: web.Request, info: RequestInfo, rt: ResourceType, sub: str
    ) -> web.StreamResponse:
        api, q = self.emu.api, request.query
        ns = info.namespace or ""
        dry_run = q.get("dryRun") == "All"
        fv = validation.check_field_validation(q.get("fieldValidation"), api.field_validation)
        name = info.name or ""
        if info.verb == "get":
            return _json(api.get(rt, ns, name))
        if info.verb == "list":
            limit = int(q.get("limit") or 0)
            return _json(
                api.list(
                    rt,
                    info.namespace,
                    q.get("labelSelector"),
                    q.get("fieldSelector"),
                    limit,
                    q.get("continue"),
                )
            )
        if info.verb == "watch":
            timeout = (
                float(q["timeoutSeconds"])
                if q.get("timeoutSeconds")
                else self.emu.default_watch_timeout
            )
            stream = WatchStream(
                rt,
                info.namespace,
                parse_label_selector(q.get("labelSelector")),
                parse_field_selector(q.get("fieldSelector"), rt.plural),
            )
            return await self.emu.watches.serve(request, stream, q.get("resourceVersion"), timeout)
        if info.verb == "create":
            written = api.create(rt, ns, await _body(request), field_validation=fv, dry_run=dry_run)
            return _json(written.obj, 201, written.warnings)
        if info.verb == "update":
            written = api.update(
                rt,
                ns,
                name,
                await _body(request),
                subresource=sub or None,
                field_validation=fv,
                dry_run=dry_run,
            )
            return _json(written.obj, 201 if written.created else 200, written.warnings)
        if info.verb == "patch":
            written = api.patch(
                rt,
                ns,
                name,
                request.content_type,
                await _body(request),
                subresource=sub or None,
                field_validation=fv,
                dry_run=dry_run,
                field_manager=q.get("fieldManager"),
            )
            return _json(written.obj, 201 if written.created else 200, written.warnings)
        options = await _body(request, required=False) or {}
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be an object")
        if q.get("propagationPolicy"):
            options["propagationPolicy"] = q["propagationPolicy"]
        if q.get("orphanDependents"):
            options["orphanDependents"] = q["orphanDependents"] == "true"
        if info.verb == "delete":
            body = api.delete(rt, ns, name, options, dry_run=dry_run)
            # 202 when the object is only marked for deletion (finalizers, foreground).
            return _json(body, 200 if body.get("kind") == "Status" else 202)
        listed = api.list(rt, info.namespace, q.get("labelSelector"), q.get("fieldSelector"))
        for item in listed["items"]:
            api.delete(
                rt,
                item["metadata"].get("namespace", ""),
                item["metadata"]["name"],
                options,
                dry_run=dry_run,
            )
        return _json(listed)
