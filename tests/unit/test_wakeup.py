"""WorkSignal: one idle worker woken per notify, and no notify lost when nobody waits."""

from __future__ import annotations

import asyncio

from idds_vis.agent.wakeup import Wake, WorkSignal


async def test_a_notify_wakes_one_waiter_of_several_with_the_request_it_is_for():
    signal = WorkSignal()
    woken: list[Wake | None] = []

    async def worker() -> None:
        woken.append(await signal.wait(3600))

    waiting = [asyncio.create_task(worker()) for _ in range(3)]
    await asyncio.sleep(0)  # one loop turn: each task runs up to its wait (nothing before it)
    assert len(signal._waiters) == 3
    signal.notify("a")
    done, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and woken == [Wake("a")]
    signal.notify("b")
    signal.notify()
    async with asyncio.timeout(30):
        await asyncio.gather(*pending)
    assert woken == [Wake("a"), Wake("b"), Wake(None)]


async def test_a_notify_nobody_waits_for_is_kept_for_the_next_wait_each_once():
    signal = WorkSignal()
    signal.notify("a")
    signal.notify("b")
    assert await signal.wait(3600) == Wake("a")
    assert await signal.wait(3600) == Wake("b")
    assert await signal.wait(0.01) is None  # both used: this one waits out its timeout


async def test_a_waiter_that_timed_out_takes_no_later_notify():
    signal = WorkSignal()
    assert await signal.wait(0.01) is None
    signal.notify("a")  # no one waits now: kept, not handed to the waiter that gave up
    assert await signal.wait(3600) == Wake("a")


async def test_a_cancelled_waiter_does_not_swallow_a_notify():
    signal = WorkSignal()
    gone = asyncio.create_task(signal.wait(3600))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    signal.notify("a")
    assert await signal.wait(3600) == Wake("a")


async def test_a_wake_handed_to_a_waiter_cancelled_before_it_ran_is_kept():
    signal = WorkSignal()
    gone = asyncio.create_task(signal.wait(3600))
    await asyncio.sleep(0)
    signal.notify("a")  # handed over ...
    gone.cancel()  # ... but the worker is cancelled before it runs again
    await asyncio.gather(gone, return_exceptions=True)
    assert gone.cancelled()
    assert await signal.wait(3600) == Wake("a")
