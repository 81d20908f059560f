"""TaskResolver: which triggers become requests, read from PanDA task parameters or iDDS."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from idds_vis.agent.resolver import LookupUnavailable, TaskResolver, Unresolvable
from idds_vis.domain.errors import InvalidRequest, NotFound, SourceUnreachable
from idds_vis.domain.messages import Trigger, parse_message
from idds_vis.domain.models import VisRequest
from idds_vis.domain.permalink import permalink_url
from idds_vis.ports.tasks import PandaTask


class Panda:
    def __init__(self, tasks: dict[int, PandaTask]) -> None:
        self.tasks = tasks
        self.down = False
        self.asked: list[int] = []

    async def task(self, task_id: int, *, details: bool = False) -> PandaTask | None:
        self.asked.append(task_id)
        if self.down:
            raise SourceUnreachable("PanDA at https://panda.example:25443 did not answer")
        return self.tasks.get(task_id)

    async def task_id_by_name(self, task_name: str, user_name: str | None = None) -> int | None:
        return None

    async def output_files(self, task_id: int) -> list[dict[str, Any]]:
        return []


class Idds:
    def __init__(self, answer: VisRequest | None) -> None:
        self.answer = answer
        self.asked: list[tuple[int, int | None, int]] = []

    async def visualization_request(
        self, request_id: int, transform_id: int | None, workload_id: int
    ) -> VisRequest | None:
        self.asked.append((request_id, transform_id, workload_id))
        return self.answer


def trigger(**fields: Any) -> Trigger:
    parsed = parse_message({}, json.dumps(fields).encode())
    assert isinstance(parsed, Trigger), parsed
    return parsed


def task(task_id: int, **params: Any) -> PandaTask:
    return PandaTask(task_id, "user.jdoe.train/", "done", "jdoe", params=params)


DONE_101 = {"msg_type": "task_status", "taskid": 101, "status": "done", "timestamp": 1}
LINK = permalink_url("https://vis.example", "user.jdoe.train/", "mlflow", "6h")


async def test_a_panda_task_that_declared_visualization_becomes_a_request():
    panda = Panda({101: task(101, visualization=LINK, pushStatusChanges=True)})
    request = await TaskResolver(panda=panda)(trigger(**DONE_101))
    # No source yet: the pipeline finds the artefacts when it runs (PandaArtefacts).
    assert request == VisRequest(
        task_id="101",
        source=None,
        tool="mlflow",
        ttl=timedelta(hours=6),
        origin="panda",
        requested_by="jdoe",
        task_name="user.jdoe.train/",
    )


async def test_a_panda_task_without_the_entry_is_skipped():
    panda = Panda({101: task(101, taskName="user.jdoe.other/")})
    assert await TaskResolver(panda=panda)(trigger(**DONE_101)) is None


async def test_what_can_never_resolve_is_a_vis_error_and_an_outage_is_not():
    missing = TaskResolver(panda=Panda({}))
    with pytest.raises(NotFound, match="PanDA has no task 101"):
        await missing(trigger(**DONE_101))
    garbled = TaskResolver(panda=Panda({101: task(101, visualization="see the wiki")}))
    with pytest.raises(InvalidRequest, match="'visualization' parameter"):
        await garbled(trigger(**DONE_101))
    with pytest.raises(Unresolvable, match="panda_url"):
        await TaskResolver()(trigger(**DONE_101))
    down = Panda({})
    down.down = True
    with pytest.raises(LookupUnavailable, match="did not answer"):
        await TaskResolver(panda=down)(trigger(**DONE_101))
    assert not issubclass(LookupUnavailable, InvalidRequest)  # retried, never dead-lettered


async def test_an_idds_work_is_asked_about_by_request_transform_and_workload():
    wanted = VisRequest("551521", source="http://h/551521.tgz", origin="idds")
    idds = Idds(wanted)
    message = {
        "msg_type": "work_processing", "request_id": 7, "workload_id": 551521,
        "transform_id": 40, "relation_type": "output", "status": "Finished", "output": {},
        "error": "",
    }  # fmt: skip
    assert await TaskResolver(idds=idds)(trigger(**message)) == wanted
    assert idds.asked == [(7, 40, 551521)]
    assert await TaskResolver(idds=Idds(None))(trigger(**message)) is None


async def test_a_vis_request_needs_no_lookup():
    panda = Panda({})
    resolver = TaskResolver(panda=panda)
    request = await resolver(trigger(msg_type="vis_request", task_id="t1", source="/a.tgz"))
    assert request is not None and request.source == "/a.tgz" and panda.asked == []
