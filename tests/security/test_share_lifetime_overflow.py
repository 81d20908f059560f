"""Red team: a share link's lifetime too large for a date is an unhandled OverflowError (HTTP
500 with aiohttp's bare error page, and an 'Error handling request' traceback in the log per
call) instead of the one-line 400 every other bad input gets. Same parser in the catalog's
start/extend ("ttl", "by").

Suggested fix: bound durations in ``domain.expiry.parse_duration`` (e.g. at most 10
years, refusing larger ones with InvalidRequest and catching OverflowError there), and in
``share_expiry`` compare ``expires_in`` with ``ui_expires_at - now`` before adding it to
``now``; the catalog's ``ttl``/``by`` then get the same one-line 400.

"""

from __future__ import annotations

from tests.catalog_support import Site
from tests.security.test_share_links import VIS, k8s, make_link, ui_of  # noqa: F401


async def test_a_huge_share_lifetime_is_a_one_line_refusal(k8s: Site) -> None:  # noqa: F811
    await ui_of(k8s, "4242")
    for huge in ("999999999d", "99999999999999h"):
        async with k8s.http.post(f"{VIS}/4242/mlflow/shares", json={"expires_in": huge},
                                 headers=k8s.as_user("Jane Doe")) as resp:  # fmt: skip
            assert resp.status == 400, (huge, resp.status, await resp.text())
    async with k8s.http.post(f"{VIS}/4242/mlflow/extend", json={"by": "99999999999999h"},
                             headers=k8s.as_user("Jane Doe")) as resp:  # fmt: skip
        assert resp.status == 400, (resp.status, await resp.text())
