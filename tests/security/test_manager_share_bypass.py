"""Red team: the tool's manager groups may stop or extend a UI "but not share it"
(docs/how-to/share-a-ui.md, domain.access.may_share). A manager who stops the owner's UI and
starts it again becomes its ``requested_by`` and from then on may make share links and widen
the visibility of the owner's results to everyone signed in.

Suggested fix: make the right to share independent of how the record was (re)started:
``may_share`` should grant the task's owner and production only, plus ``requested_by`` only
when that person was not acting under manager-group rights (record the basis of each start,
e.g. a ``requested_as`` column set to "owner"/"production"/"manager" in ``Catalog.start`` and
``guard.relaunch``, and ignore requesters whose basis is "manager"); apply it to both the
share routes and ``/visibility``. Alternatively stop overwriting ``requested_by`` when a
manager restarts someone else's record.

"""

from __future__ import annotations

from idds_vis.domain.phases import Phase
from tests.catalog_support import JANE, JOHN, Site
from tests.security.test_share_links import VIS, check, k8s, make_link, ui_of  # noqa: F401


async def test_a_manager_cannot_take_over_sharing_by_restarting_the_owners_ui(k8s: Site) -> None:  # noqa: F811
    await ui_of(k8s, "4242")  # Jane's UI of her own task
    manager = k8s.as_user(JOHN, groups=["atlas/ml-support"])  # may stop/extend, not share
    status, body = await make_link(k8s, "4242", headers=manager)
    assert status == 403, body  # holds today
    # The manager stops Jane's UI and starts it again (both allowed to managers) ...
    async with k8s.http.post(f"{VIS}/4242/mlflow/stop", headers=manager) as resp:
        assert resp.status == 200, await resp.text()
    await k8s.until("4242", {Phase.EXPIRED})
    async with k8s.http.post(VIS, json={"task_id": "4242"}, headers=manager) as resp:
        assert resp.status == 201, await resp.text()
    again = await k8s.until("4242", {Phase.READY})
    # ... and must still not be able to hand Jane's results to others.
    status, body = await make_link(k8s, "4242", headers=manager)
    assert status == 403, f"a manager made a share link of {JANE}'s UI: {body}"
    async with k8s.http.post(f"{VIS}/4242/mlflow/visibility", json={"visibility": "signed-in"},
                             headers=manager) as resp:  # fmt: skip
        assert resp.status == 403, "a manager opened the owner's UI to everyone signed in"
    stranger = k8s.as_user("Eve Other", groups=["cms"])
    assert await check(k8s, again, None, **stranger) == 403
