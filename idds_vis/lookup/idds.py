"""Reads iDDS requests and transforms with idds-client's ClientManager, off the event loop.

A ``work_processing`` message names a request and a transform, never the work's role, and its
``output`` is always empty (docs/upstream-facts.md). So: read the request's workflow; if it holds a
VisualizationWork, read the transform, and if its work is that VisualizationWork's training
work, return the request the VisualizationWork itself would send (same key, tool, TTL and
source), so the UI starts as soon as training ends and the later vis_request finds it.

ClientManager methods return ``(False, message)`` instead of raising: every result is checked.
The works are found by their attributes (``training_work_id``, ``vis_*``), not by importing
``idds_vis.idds``: the adapter only reads what iDDS stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from idds_vis.domain.errors import SourceUnreachable, VisError
from idds_vis.domain.expiry import DEFAULT_TTL, parse_duration
from idds_vis.domain.models import DEFAULT_TOOL, VisRequest
from idds_vis.domain.placeholders import fill

log = logging.getLogger(__name__)

_NOT_FOUND = ("not found", "nosuch", "no such", "noobject", "404")


@dataclass(frozen=True)
class IddsSettings:
    host: str  # the REST base URL, e.g. https://idds.example.org:443/idds
    auth_type: str = "x509_proxy"  # or "oidc"
    x509_proxy: str | None = None
    oidc_token_file: str | None = None
    vo: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class _Visualization:
    training_work_id: str
    task_id: str | None
    tool: str
    ttl: str | int | float | None
    source: str | None


class IddsClientWorks:
    def __init__(self, settings: IddsSettings) -> None:
        self.settings = settings

    async def visualization_request(
        self, request_id: int, transform_id: int | None, workload_id: int
    ) -> VisRequest | None:
        """The request for a finished training work of a workflow with a VisualizationWork."""
        return await asyncio.to_thread(self._find, request_id, transform_id, workload_id)

    # -- blocking part, in a thread -------------------------------------------------------------
    def _client(self) -> Any:
        cm = _client_manager_class()(host=self.settings.host, timeout=int(self.settings.timeout))
        cm.auth_type = self.settings.auth_type
        cm.x509_proxy = self.settings.x509_proxy
        cm.oidc_token_file = self.settings.oidc_token_file
        cm.vo = self.settings.vo
        return cm

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any | None:
        try:
            result = fn(**kwargs)
        except Exception as exc:
            raise SourceUnreachable(f"iDDS at {self.settings.host}: {what} failed: {exc}") from None
        if isinstance(result, tuple) and len(result) == 2 and result[0] is False:
            message = str(result[1])
            if any(marker in message.lower().replace(" ", "") for marker in _NOT_FOUND):
                return None
            raise SourceUnreachable(f"iDDS at {self.settings.host}: {what} failed: {message}")
        return result

    def _find(
        self, request_id: int, transform_id: int | None, workload_id: int
    ) -> VisRequest | None:
        cm = self._client()
        requests = self._call(
            f"reading request {request_id}", cm.get_requests, request_id=request_id,
            with_metadata=True,
        )  # fmt: skip
        if not requests:
            return None
        workflow = (requests[0].get("request_metadata") or {}).get("workflow")
        visualizations = _visualizations(workflow)
        if not visualizations:
            return None  # the common case: no visualization step, one request read
        if transform_id is None:
            return None
        # ClientManager.get_transforms passes a workload_id its client does not take (2.6.21):
        # ask the client underneath, which answers for the whole request.
        cm.setup_client()
        transforms = self._call(
            f"reading the transforms of request {request_id}", cm.client.get_transforms,
            request_id=request_id,
        )  # fmt: skip
        transform = next(
            (t for t in transforms or [] if t.get("transform_id") == transform_id), None
        )
        if not transform:
            return None
        internal_id = transform.get("internal_id") or _work_id(transform)
        for vis in visualizations:
            if vis.training_work_id and vis.training_work_id == internal_id:
                return _request(vis, request_id, workload_id, transform)
        return None


def _client_manager_class() -> Any:
    """Import idds-client late, and undo what its import does to the process: it adds a
    stdout handler to the root logger (our logs are JSON on stderr) and, unless
    IDDS_LOCAL_CONFIG_ROOT is set, creates ~/.idds."""
    os.environ.setdefault(
        "IDDS_LOCAL_CONFIG_ROOT", os.path.join(tempfile.gettempdir(), f"idds-vis-{os.getuid()}")
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from idds.client.clientmanager import ClientManager

    root.handlers[:] = handlers
    root.setLevel(level)
    return ClientManager


def _works(workflow: Any) -> list[Any]:
    holder = getattr(workflow, "template", workflow)
    works = getattr(holder, "works", None) or {}
    found = []
    for work in works.values() if isinstance(works, dict) else works:
        found.append(work)
        found.extend(_works(work) if hasattr(work, "works") else [])  # nested workflows
    return found


def _visualizations(workflow: Any) -> list[_Visualization]:
    if workflow is None:
        return []
    return [
        _Visualization(
            training_work_id=str(work.training_work_id),
            task_id=getattr(work, "vis_task_id", None),
            tool=str(getattr(work, "vis_tool", None) or DEFAULT_TOOL),
            ttl=getattr(work, "vis_ttl", None),
            source=getattr(work, "vis_source", None),
        )
        for work in _works(workflow)
        if getattr(work, "training_work_id", None)
    ]


def _work_id(transform: dict[str, Any]) -> str | None:
    work = (transform.get("transform_metadata") or {}).get("work")
    getter = getattr(work, "get_internal_id", None)
    return str(getter()) if callable(getter) else None


def _published_source(transform: dict[str, Any]) -> str | None:
    work = (transform.get("transform_metadata") or {}).get("work")
    output = getattr(work, "output_data", None)
    if isinstance(output, dict) and isinstance(output.get("vis_source"), str):
        return str(output["vis_source"])
    return None


def _request(
    vis: _Visualization, request_id: int, workload_id: int, transform: dict[str, Any]
) -> VisRequest:
    task_id = str(vis.task_id) if vis.task_id else str(workload_id)
    source = (
        fill(vis.source, {"workload_id": workload_id, "request_id": request_id, "task_id": task_id})
        if vis.source
        else _published_source(transform)
    )
    try:
        ttl = parse_duration(vis.ttl) if vis.ttl is not None else DEFAULT_TTL
    except VisError:
        ttl = DEFAULT_TTL
    return VisRequest(
        task_id=task_id,
        source=source,
        tool=vis.tool,
        ttl=ttl if isinstance(ttl, timedelta) else DEFAULT_TTL,
        origin="idds",
    )
