"""The intake: broker deliveries in, committed requests out, every message settled exactly once.

For each delivery: parse it (never raises); a malformed one is dead-lettered with its reason, an
irrelevant one acked; a trigger is resolved to a request (``resolver``; returning None means
"not a visualization task": ack and skip), submitted to the agent, and acked only once the
agent has committed it (ack after durable, docs/architecture.md). A failure that may pass (database
down) gives the message back for a later retry (``nack``); one that will not (``VisError``:
the request itself is wrong) dead-letters it. Nothing a message does stops the loop.

Messages are written by whoever can publish, so (docs/how-to/broker-messages.md):

- a ``vis_request``/``vis_teardown`` must carry a sender credential the agent verifies when
  ``message_auth`` is on (``idds_vis.domain.senders``); a missing or bad one is dead-lettered
  with the reason;
- a source a message named (a ``vis_request``'s, an iDDS VisualizationWork's) is checked
  against the operator's ``SourcePolicy``; a refused one is dead-lettered with the reason (the
  pipeline stages accepted ones under the address guard, ``idds_vis.staging.guarded``);
- with quotas configured, every request from a message goes through the quota queue, charged
  to its verified sender, else the PanDA task's owner, else ``message:<origin>``;
- a ``vis_teardown`` is honoured only from the instance's requester or a production sender
  (``production_senders``); without ``message_auth`` only for an instance an unverified
  message started. Any other is acked and ignored, and the launch goes on.

Replays (iDDS sends each message up to 3 times) are harmless since the ledger is idempotent by
(task, tool); a small LRU of recent triggers acks them without a database round trip.

On a shared stream nearly every message is someone else's (job statuses, running tasks): a
source that can (``StompSource.fast_ignore``) parses and acks such a message where it arrives,
with the intake's ``parse_options``, and only reports how many (``fast_ignored``); it never
reaches the loop (tests/bench/bench_intake.py measures the gain).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from enum import StrEnum
from typing import Protocol

from idds_vis.agent import logctx
from idds_vis.agent.quotas import QuotaQueue
from idds_vis.domain.errors import NotFound, VisError
from idds_vis.domain.identity import Identity
from idds_vis.domain.messages import (
    EndRequest,
    Ignore,
    ParseOptions,
    Reject,
    Trigger,
    parse_message,
    request_from_trigger,
)
from idds_vis.domain.models import Instance, InstanceKey, VisRequest
from idds_vis.domain.senders import ANONYMOUS, AuthMode, KeysError, Refused, Sender, verify
from idds_vis.domain.source_policy import MESSAGE_ORIGINS, SourcePolicy
from idds_vis.ports.source import Delivery, MessageSource

log = logging.getLogger(__name__)

# Trigger -> the request to submit, or None when the task is not one to visualize. Raising
# VisError dead-letters the message (it will never resolve); any other error retries it later.
Resolver = Callable[[Trigger], Awaitable[VisRequest | None]]


class Submitter(Protocol):
    """What the intake needs of the agent (``Agent.submit``): commit, idempotently."""

    async def submit(self, request: VisRequest) -> tuple[Instance, bool]: ...

    async def end(self, key: InstanceKey) -> Instance:
        """End an instance now, or at its expiry if that is later; NotFound if there is none."""
        ...


class Outcome(StrEnum):
    SUBMITTED = "submitted"  # a new record was committed
    EXISTING = "existing"  # the ledger already had this (task, tool)
    DUPLICATE = "duplicate"  # a replay seen moments ago; acked without a database call
    SKIPPED = "skipped"  # the resolver said it is not a visualization task
    QUEUED = "queued"  # over a quota: waiting in the ledger's queue
    ENDED = "ended"  # a vis_teardown was applied (or had nothing left to end)
    IGNORED = "ignored"  # well-formed, not for us
    REJECTED = "rejected"  # dead-lettered with a reason
    RETRY = "retry"  # given back to the source for a later attempt


# (delivery, outcome, detail): a hook for metrics and tests; errors in it are logged only.
OutcomeHook = Callable[[Delivery, Outcome, str], None]
# The ledger's record of a (task, tool), for deciding whose teardown is honoured.
InstanceLookup = Callable[[InstanceKey], Awaitable[Instance | None]]
# Reads the senders' keys (blocking: called in a thread, at each use, so rotation needs no
# restart); raises OSError or KeysError when they cannot be read.
KeysLoader = Callable[[], Mapping[str, bytes]]


@dataclasses.dataclass(frozen=True)
class MessageTrust:
    """How far the intake trusts a message (settings ``message_*``, ``allow_private_addresses``)."""

    policy: SourcePolicy = dataclasses.field(default_factory=SourcePolicy)
    auth: AuthMode = "off"
    keys: KeysLoader | None = None
    production_senders: Collection[str] = ()


async def request_as_sent(trigger: Trigger) -> VisRequest | None:
    """The default resolver: the request exactly as the message describes it.

    The full intake replaces this with one that reads the PanDA task parameters or the iDDS
    transform (where the artefacts are, whether it is an ML task at all).
    """
    return request_from_trigger(trigger)


class Intake:
    def __init__(
        self,
        source: MessageSource,
        agent: Submitter,
        parse_options: ParseOptions | None = None,
        *,
        resolver: Resolver = request_as_sent,
        dedup_size: int = 4096,
        on_outcome: OutcomeHook | None = None,
        concurrency: int = 1,
        trust: MessageTrust | None = None,
        quotas: QuotaQueue | None = None,
        instances: InstanceLookup | None = None,
    ) -> None:
        self.source = source
        self.agent = agent
        self.trust = trust or MessageTrust()
        # With limits set, requests from messages wait their turn like the catalog's.
        self.quotas = quotas if quotas is not None and quotas.limits.any else None
        ledger = getattr(agent, "ledger", None)
        self.instances: InstanceLookup | None = instances or getattr(ledger, "get", None)
        self.parse_options = parse_options or ParseOptions()
        self.resolver = resolver
        self.dedup_size = dedup_size
        # Deliveries handled at once: a commit (an fsync) or a PanDA lookup for one message
        # need not hold up the next; each is still settled only after its own commit.
        self.concurrency = max(1, concurrency)
        self.on_outcome = on_outcome
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._counting = threading.Lock()  # fast_ignored counts from the source's own thread
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Thread-safe hook for how many the source acked off the loop (on_outcome may not be).
        self.on_fast_ignore: Callable[[int], None] | None = None

    async def run(self) -> None:
        """Handle deliveries until the source stops (the last ones are finished first)."""
        if self.quotas is None:
            await self._run()
            return
        # Queued message requests start as room frees up, also with no web app running.
        admitting = asyncio.create_task(self.quotas.run())
        try:
            await self._run()
        finally:
            admitting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await admitting

    async def _run(self) -> None:
        if self.concurrency == 1:
            async for delivery in self.source.messages():
                await self.handle(delivery)
            return
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[Outcome]] = set()

        async def one(delivery: Delivery) -> Outcome:
            try:
                return await self.handle(delivery)
            finally:
                slots.release()

        try:
            async for delivery in self.source.messages():
                await slots.acquire()
                task = asyncio.create_task(one(delivery))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def handle(self, delivery: Delivery) -> Outcome:
        """Decide and settle one delivery. Never raises (but lets cancellation through)."""
        try:
            with logctx.bound(message_id=delivery.message_id):
                outcome, detail = await self._handle(delivery)
        except Exception as exc:  # a bug: every path settles last, so retrying is safe
            log.exception("intake failed on message %s", delivery.message_id)
            outcome, detail = await self._retry(delivery, "handling the message", exc)
        self._count(outcome)
        if self.on_outcome is not None:
            try:
                self.on_outcome(delivery, outcome, detail)
            except Exception:
                log.exception("intake outcome hook failed")
        return outcome

    def fast_ignored(self, count: int) -> None:
        """The source acked ``count`` messages that ``parse_message`` with ``parse_options``
        calls ``Ignore`` (well-formed, not for us: no commit is owed before the ack) without
        handing them over; a trigger or a malformed message still goes through ``handle``.
        Called from the source's own thread."""
        self._count(Outcome.IGNORED, count)
        if self.on_fast_ignore is not None:
            self.on_fast_ignore(count)

    def _count(self, outcome: Outcome, count: int = 1) -> None:
        with self._counting:
            self.counts[outcome] += count

    async def _handle(self, delivery: Delivery) -> tuple[Outcome, str]:
        parsed = parse_message(delivery.headers, delivery.body, self.parse_options)
        if isinstance(parsed, Reject):
            return await self._reject(delivery, parsed.reason)
        if isinstance(parsed, Ignore):
            log.debug("ignoring message %s: %s", delivery.message_id, parsed.reason)
            await self._ack(delivery)
            return Outcome.IGNORED, parsed.reason
        sender = ANONYMOUS
        if isinstance(parsed, EndRequest) or parsed.kind == "vis_request":
            checked = await self._sender(delivery)
            if isinstance(checked, Refused):
                return await self._reject(delivery, checked.reason)
            if checked is None:
                unreadable = KeysError("the keys file could not be read (see the log)")
                return await self._retry(delivery, "checking the sender", unreadable)
            sender = checked
        if isinstance(parsed, EndRequest):
            return await self._end(delivery, parsed, sender)
        trigger: Trigger = parsed
        if sender.name is not None:
            trigger = dataclasses.replace(parsed, sender=sender.name)
        logctx.update(task_id=trigger.task_id, tool=trigger.tool)
        key = trigger.dedup_key
        if key in self._recent:
            self._recent.move_to_end(key)
            await self._ack(delivery)
            return Outcome.DUPLICATE, trigger.task_id

        try:
            request = await self.resolver(trigger)
        except VisError as exc:
            return await self._reject(delivery, f"task {trigger.task_id}: {exc.reason}")
        except Exception as exc:
            return await self._retry(delivery, f"resolving task {trigger.task_id}", exc)
        if request is None:
            self._remember(key)
            await self._ack(delivery)
            return Outcome.SKIPPED, trigger.task_id
        refused = self._refused_source(trigger, request)
        if refused is not None:
            return await self._reject(delivery, f"task {request.task_id}: {refused}")

        try:
            if self.quotas is not None:
                return await self._queue(delivery, trigger, request, key)
            _instance, created = await self.agent.submit(request)
        except VisError as exc:
            return await self._reject(delivery, f"task {request.task_id}: {exc.reason}")
        except Exception as exc:
            return await self._retry(delivery, f"submitting task {request.task_id}", exc)
        # Committed: from here a crash only means a redelivery, which the ledger absorbs.
        self._remember(key)
        log.info(
            "%s task %s (%s) from %s message %s",
            "requested" if created else "already have",
            request.task_id,
            request.tool,
            trigger.kind,
            delivery.message_id,
        )
        await self._ack(delivery)  # last: nothing after an ack may fail and retry it
        return (Outcome.SUBMITTED if created else Outcome.EXISTING), request.task_id

    async def _sender(self, delivery: Delivery) -> Sender | Refused | None:
        """The verified sender, why its credential fails, or None if the keys are unreadable
        (the operator's problem, not the message's: it is retried)."""
        if self.trust.auth == "off":
            return ANONYMOUS
        keys: Mapping[str, bytes] = {}
        if self.trust.keys is not None:
            try:
                keys = await asyncio.to_thread(self.trust.keys)
            except (OSError, KeysError) as exc:
                log.error("cannot read the message senders' keys: %s", exc)
                return None
        return verify(delivery.headers, bytes(delivery.body), self.trust.auth, keys)

    def _refused_source(self, trigger: Trigger, request: VisRequest) -> str | None:
        """Why the source a message named may not be used, or None."""
        from_message = trigger.kind in ("vis_request", "idds_work")
        if not request.source or not (from_message or request.origin in MESSAGE_ORIGINS):
            return None
        verdict = self.trust.policy.check_message_source(request.source)
        return None if verdict else f"artefact source refused: {verdict.reason}"

    async def _queue(
        self, delivery: Delivery, trigger: Trigger, request: VisRequest, key: str
    ) -> tuple[Outcome, str]:
        assert self.quotas is not None
        user = trigger.sender or request.requested_by or f"message:{request.origin}"
        requester = Identity(
            user=user,
            subject=f"message:{user}",
            production=trigger.sender is not None
            and trigger.sender in self.trust.production_senders,
        )
        admission = await self.quotas.request(request, requester, owner=None)
        self._remember(key)
        if admission.waiting is not None:
            log.info("task %s (%s) from %s message %s queued: %s", request.task_id,
                     request.tool, trigger.kind, delivery.message_id,
                     admission.waiting.reason or "waiting")  # fmt: skip
            await self._ack(delivery)
            return Outcome.QUEUED, request.task_id
        await self._ack(delivery)
        return (Outcome.SUBMITTED if admission.started else Outcome.EXISTING), request.task_id

    def _may_end(self, inst: Instance, sender: Sender) -> bool:
        if sender.name is not None and sender.name in self.trust.production_senders:
            return True
        if sender.verified:
            # Only what its own messages started: requested_by also holds PanDA task owners
            # and web users, whose names a sender's may share without being the same person.
            return inst.origin in MESSAGE_ORIGINS and inst.requested_by == sender.name
        # Unverified (message_auth off): only what an unverified message started itself.
        return inst.origin in MESSAGE_ORIGINS and inst.requested_by is None

    async def _end(
        self, delivery: Delivery, end: EndRequest, sender: Sender = ANONYMOUS
    ) -> tuple[Outcome, str]:
        logctx.update(task_id=end.task_id, tool=end.tool)
        key = InstanceKey(end.task_id, end.tool)
        current: Instance | None = None
        if self.instances is not None:
            try:
                current = await self.instances(key)
            except Exception as exc:
                return await self._retry(delivery, f"reading task {end.task_id}", exc)
            if current is None:
                await self._ack(delivery)
                return Outcome.ENDED, f"{end.task_id}: no instance"
        if current is None or not self._may_end(current, sender):
            who = sender.name or "an unverified sender"
            detail = (f"vis_teardown of task {end.task_id} ({end.tool}) from {who} ignored: only "
                      "its requester or the production role may end it")  # fmt: skip
            log.warning("message %s: %s", delivery.message_id, detail)
            await self._ack(delivery)
            return Outcome.IGNORED, detail
        try:
            inst = await self.agent.end(key)
        except NotFound:
            # Nothing to end (never started, or its request is still queued): the TTL bounds
            # whatever may still come, and the TeardownWork asks again while it waits.
            await self._ack(delivery)
            return Outcome.ENDED, f"{end.task_id}: no instance"
        except VisError as exc:
            return await self._reject(delivery, f"task {end.task_id}: {exc.reason}")
        except Exception as exc:
            return await self._retry(delivery, f"ending task {end.task_id}", exc)
        await self._ack(delivery)
        return Outcome.ENDED, f"{end.task_id}: {inst.phase.value}"

    # -- settling; a source failing here must not stop the loop -----------------------------
    async def _ack(self, delivery: Delivery) -> None:
        try:
            await self.source.ack(delivery)
        except Exception:
            log.exception("could not ack message %s", delivery.message_id)

    async def _reject(self, delivery: Delivery, reason: str) -> tuple[Outcome, str]:
        log.warning("dead-lettering message %s: %s", delivery.message_id, reason)
        try:
            await self.source.dead_letter(delivery, reason)
        except Exception as exc:
            # Not stored in the dead-letter queue, so not acked: try the whole thing again later.
            return await self._retry(delivery, "dead-lettering", exc)
        return Outcome.REJECTED, reason

    async def _retry(self, delivery: Delivery, doing: str, exc: Exception) -> tuple[Outcome, str]:
        detail = f"{doing} failed ({type(exc).__name__}: {exc}); attempt {delivery.attempt}"
        log.warning("message %s will be retried: %s", delivery.message_id, detail)
        try:
            await self.source.nack(delivery)
        except Exception:
            log.exception("could not give message %s back for a retry", delivery.message_id)
        return Outcome.RETRY, detail

    def _remember(self, key: str) -> None:
        if self.dedup_size <= 0:
            return
        self._recent[key] = None
        self._recent.move_to_end(key)
        while len(self._recent) > self.dedup_size:
            self._recent.popitem(last=False)
