"""``Follower.once`` (api/task_feed.py): what streams derive from one snapshot is asked once for
all of them; a new snapshot asks again; a failure is not kept."""

from __future__ import annotations

import asyncio

import pytest

from idds_vis.api.task_feed import Follower, Source, _Watch


def watch() -> _Watch[int]:
    async def read() -> int:
        return 0

    return _Watch(Source(read, lambda s: s, lambda _: True, "test"))


async def test_one_ask_per_snapshot_for_every_follower() -> None:
    w = watch()
    w.publish(1)
    followers = [Follower(w) for _ in range(5)]
    for f in followers:
        assert await f.next(0) == 1
    asked = 0

    async def ask() -> str:
        nonlocal asked
        asked += 1
        return "owner"

    # Together: the first one's ask runs in a task of its own, which the others join.
    assert await asyncio.gather(*(f.once("owner", ask) for f in followers)) == ["owner"] * 5
    assert asked == 1

    w.publish(2)  # a change: asked again, once
    for f in followers:
        assert await f.next(0) == 2
    assert [await f.once("owner", ask) for f in followers] == ["owner"] * 5 and asked == 2
    assert list(w.memo) == [(2, "owner")]  # the old snapshot's answer is gone


async def test_a_failed_ask_is_asked_again() -> None:
    w = watch()
    w.publish(1)
    f = Follower(w)
    await f.next(0)
    answers = iter([RuntimeError("ledger down"), "owner"])

    async def ask() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(RuntimeError):
        await f.once("owner", ask)
    assert await f.once("owner", ask) == "owner"
