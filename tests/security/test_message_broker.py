"""Sender credentials through a real broker: what an iDDS work signs with
``idds_vis.idds.channel.send`` reaches the intake intact, also through the relay queue, and
an unsigned copy of the same request is dead-lettered (issue 15, class 5)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from idds_vis.agent.intake import Intake, MessageTrust, Outcome
from idds_vis.agent.resolver import TaskResolver
from idds_vis.idds.channel import AgentEndpoint, send
from idds_vis.ports.source import Delivery
from idds_vis.sources import StompSettings, StompSource
from tests.activemq import BrokerAddress
from tests.security.test_message_sources import RecordingAgent

HANG_GUARD = 60.0
KEY = "alice-key-0123456789"


@pytest.mark.parametrize("relayed", [False, True])
async def test_a_signed_request_crosses_the_broker_and_an_unsigned_one_does_not(
    activemq_broker: BrokerAddress, tmp_path: Path, relayed: bool
) -> None:
    queue = f"/queue/idds-vis.test.signed-{uuid.uuid4().hex[:8]}"
    key_file = tmp_path / "alice.key"
    key_file.write_text(KEY + "\n")
    env = {
        "IDDS_VIS_BROKERS": f"{activemq_broker.host}:{activemq_broker.port}",
        "IDDS_VIS_DESTINATION": queue,
        "IDDS_VIS_BROKER_USER": activemq_broker.user,
        "IDDS_VIS_BROKER_PASSWORD": activemq_broker.password,
        "IDDS_VIS_API": "http://127.0.0.1:9",
    }
    signed = AgentEndpoint.from_env({**env, "IDDS_VIS_SENDER": "alice",
                                     "IDDS_VIS_SENDER_KEY_FILE": str(key_file)})  # fmt: skip
    unsigned = AgentEndpoint.from_env(env)
    request = {"msg_type": "vis_request", "task_id": "user.alice.train/", "tool": "mlflow",
               "source": "https://files.example.org/a.tgz"}  # fmt: skip
    await asyncio.to_thread(send, unsigned, request)
    await asyncio.to_thread(send, signed, request)

    source = StompSource(StompSettings(
        hosts=[(activemq_broker.host, activemq_broker.port)], subscriptions=[queue],
        user=activemq_broker.user, password=activemq_broker.password,
        dead_letter_destination=f"{queue}.DLQ",
        relay_queue=f"{queue}.relay" if relayed else None,
    ))  # fmt: skip
    agent = RecordingAgent()
    outcomes: asyncio.Queue[tuple[Outcome, str]] = asyncio.Queue()

    def seen(_delivery: Delivery, outcome: Outcome, detail: str) -> None:
        outcomes.put_nowait((outcome, detail))

    trust = MessageTrust(auth="hmac", keys=lambda: {"alice": KEY.encode()})
    intake = Intake(source, agent, resolver=TaskResolver(), trust=trust, on_outcome=seen,
                    instances=agent.get)  # fmt: skip
    await source.start()
    task = asyncio.create_task(intake.run())
    try:
        async with asyncio.timeout(HANG_GUARD):
            first = await outcomes.get()
            second = await outcomes.get()
    finally:
        await source.stop()
        async with asyncio.timeout(HANG_GUARD):
            await task
    assert first[0] is Outcome.REJECTED and "sender credential missing" in first[1]
    assert second[0] is Outcome.SUBMITTED
    assert [r.requested_by for r in agent.records.values()] == ["alice"]
