"""Red team (a broker publisher with a verified sender key + a web user of the same name):
a ``vis_request`` from a verified sender records ``requested_by = <sender name>`` for ANY task
id it names (with panda_url set and no source, the agent stages that task's own outputs). The
web app's access check and ``may_share`` then treat a signed-in person whose user name equals
the sender's name as "whoever asked for the UI": they see another person's results and may
make share links and widen the visibility. The intake itself says sender names and web user
names may coincide without being the same person (agent/intake.py ``_may_end``); the web
side does not make that distinction.

The record is made here as the intake makes it for a verified sender named like John
(``request_from_trigger``: origin vis_request, requested_by = the sender), for Jane's task.

Suggested fix: keep the namespaces apart. Store who asked in a qualified form
(``web:<user>``, ``message:<sender>``, ``cli``) or add a column for the requester's kind, and
let ``may_view``/``may_share`` match ``requested_by`` only for web requesters; or have the
intake set ``requested_by`` from a verified sender only after checking (PanDA) that the sender
is the task's owner, else leave it None.

The fix: ``access.person_requester`` (only the catalog's, the permalink's and PanDA's
requesters name people of this service), used by the access check, sharing and the catalog's
listing of a person's UIs.
"""

from __future__ import annotations

from datetime import timedelta

from idds_vis.domain.models import VisRequest
from idds_vis.domain.phases import Phase
from tests.catalog_support import JOHN, Site
from tests.security.test_share_links import check, k8s, make_link  # noqa: F401


async def test_a_senders_name_is_not_a_web_identity(k8s: Site) -> None:  # noqa: F811
    ask = VisRequest("4242", source="file:///outputs/4242", tool="mlflow",
                     ttl=timedelta(hours=2), origin="vis_request", requested_by=JOHN)  # fmt: skip
    await k8s.agent.submit(ask)  # Jane's task, asked for by a broker sender named "John Smith"
    inst = await k8s.until("4242", {Phase.READY})
    john = k8s.as_user(JOHN, groups=["cms"])  # the web user John Smith: not Jane, no group
    assert await check(k8s, inst, None, **john) == 403, "John sees Jane's UI"
    status, body = await make_link(k8s, "4242", headers=john)
    assert status == 403, f"John made a share link of Jane's UI: {body}"
    async with k8s.http.get("/api/v1/visualizations", headers=john) as resp:
        listing = await resp.text()
    assert resp.status == 200 and inst.path_token not in listing, "John's catalog lists it"
