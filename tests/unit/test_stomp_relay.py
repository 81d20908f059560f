"""Relayed subscriptions without a broker: the watermark, the copies' headers, and what the
receiver process writes (a fake stomp.py connection records the frames)."""

from __future__ import annotations

import json

from idds_vis.domain.messages import ParseOptions
from idds_vis.sources.stomp_receiver import ACK_BATCH, _Channel, _Listener
from idds_vis.sources.stomp_relay import (
    ORIGINAL_DESTINATION_HEADER,
    ORIGINAL_MESSAGE_ID_HEADER,
    Watermark,
    relay_headers,
)


def test_the_watermark_acks_only_a_settled_prefix():
    mark = Watermark()
    first = mark.arrive("a1", settled=False)
    mark.arrive("a2", settled=True, ignored=True)
    third = mark.arrive("a3", settled=False)
    mark.arrive("a4", settled=True, ignored=True)
    assert mark.take() is None and mark.held == 4  # a1 holds everything after it
    mark.settle(third)
    assert mark.take() is None  # still behind a1
    mark.settle(first)
    assert mark.held == 4 and mark.due == 4
    assert mark.take(at_least=5) is None  # not enough yet for a batch
    assert mark.take() == ("a4", 2)  # one ACK for all four; two of them were ignored
    assert mark.take() is None and mark.held == 0


def test_a_settle_of_a_message_already_acked_or_unknown_changes_nothing():
    mark = Watermark()
    number = mark.arrive("a1", settled=False)
    mark.settle(number)
    assert mark.take() == ("a1", 0)
    mark.settle(number)
    mark.settle(number + 5)
    assert mark.take() is None and mark.held == 0
    later = mark.arrive("a2", settled=True)
    assert later == number + 1 and mark.take() == ("a2", 0)


def test_a_copy_keeps_the_application_headers_and_names_its_original():
    delivered = {
        "message-id": "ID:broker-1:1:1:1",
        "destination": "/queue/Consumer.idds-vis.VirtualTopic.panda",
        "subscription": "idds-vis-0",
        "ack": "ID:broker-1-ack-7",
        "content-length": "42",
        "redelivered": "false",
        "timestamp": "1795297866000",
        "expires": "1795297867000",
        "persistent": "false",
        "msg_type": "task_status",
        "original-destination": "/topic/VirtualTopic.panda",
        "content-type": "application/json",
        "priority": "4",
    }
    copy = relay_headers(delivered, "relay-3")
    assert copy == {
        "msg_type": "task_status",
        "original-destination": "/topic/VirtualTopic.panda",
        "content-type": "application/json",
        "priority": "4",
        "persistent": "true",
        "receipt": "relay-3",
        ORIGINAL_DESTINATION_HEADER: "/queue/Consumer.idds-vis.VirtualTopic.panda",
        ORIGINAL_MESSAGE_ID_HEADER: "ID:broker-1:1:1:1",
    }


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.dropped = False

    def send(self, data: bytes) -> None:
        self.written.append(data)

    def disconnect_socket(self) -> None:
        self.dropped = True


class FakeConn:
    """What the listener uses of stomp.Connection12: ``send`` and ``transport``."""

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def send(self, destination: str, body: bytes, headers: dict[str, str]) -> None:
        self.sent.append((destination, body, headers))

    def acks(self) -> list[str]:
        """The ids of the ACK frames written, in order."""
        found = []
        for chunk in self.transport.written:
            for frame in chunk.split(b"\x00"):
                lines = frame.strip(b"\n").split(b"\n")
                if lines and lines[0] == b"ACK":
                    found += [ln[3:].decode() for ln in lines[1:] if ln.startswith(b"id:")]
        return found


class FakeChannel(_Channel):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def send(self, *event: object) -> None:
        self.events.append(event)


class Frame:
    def __init__(self, headers: dict[str, str], body: bytes = b"") -> None:
        self.headers = headers
        self.body = body


def status(taskid: int, value: str) -> bytes:
    return json.dumps({"msg_type": "task_status", "taskid": taskid, "status": value}).encode()


def relayed_listener() -> tuple[_Listener, FakeConn, FakeChannel]:
    conn, out = FakeConn(), FakeChannel()
    listener = _Listener(conn, out, ParseOptions())
    listener.relays["sub-0"] = ("/queue/relay", Watermark())
    return listener, conn, out


def deliver(listener: _Listener, n: int, body: bytes, sub: str = "sub-0") -> None:
    headers = {"subscription": sub, "message-id": f"m{n}", "ack": f"a{n}", "destination": "/q/s"}
    listener.on_message(Frame(headers, body))


def test_the_receiver_copies_what_is_not_ignored_and_acks_once_the_copy_is_stored():
    listener, conn, out = relayed_listener()
    deliver(listener, 1, status(7, "done"))  # a trigger: copied, not passed over
    for n in range(2, 2 + ACK_BATCH):
        deliver(listener, n, status(n, "running"))  # ignored, but behind the copy
    [(queue, body, headers)] = conn.sent
    assert (queue, body) == ("/queue/relay", status(7, "done"))
    assert headers[ORIGINAL_MESSAGE_ID_HEADER] == "m1" and headers["persistent"] == "true"
    assert conn.acks() == [] and out.events == []  # nothing acked while the copy is unconfirmed
    listener.on_receipt(Frame({"receipt-id": headers["receipt"]}))
    # One cumulative ACK covers the copied message and the ignored ones after it.
    assert conn.acks() == [f"a{1 + ACK_BATCH}"]
    assert listener.take_ignored() == ACK_BATCH
    assert out.events == []  # the copy's receipt is the receiver's own business


def test_fewer_than_a_batch_are_acked_by_the_flush_and_other_subscriptions_cross_over():
    listener, conn, out = relayed_listener()
    for n in range(1, 4):
        deliver(listener, n, status(n, "running"))
    assert conn.acks() == []
    listener.report()  # what the reporter thread does every few milliseconds
    assert conn.acks() == ["a3"]
    assert out.events == [("ignored", 3)]
    deliver(listener, 4, status(4, "done"), sub="relay-sub")  # the relay queue's own messages
    assert out.events[-1][0] == "message" and conn.sent == []
    listener.on_receipt(Frame({"receipt-id": "bye-1"}))
    assert out.events[-1] == ("receipt", "bye-1")


def test_a_refused_copy_drops_the_connection_instead_of_holding_the_stream():
    listener, conn, out = relayed_listener()
    deliver(listener, 1, b"{not json")  # malformed: copied, the intake dead-letters it
    receipt = conn.sent[0][2]["receipt"]
    listener.on_error(Frame({"receipt-id": receipt, "message": "not authorized"}))
    assert conn.transport.dropped
    assert out.events[0][0] == "error"
    assert conn.acks() == []  # never acked: the broker delivers it again on the next connection


def test_an_unknown_error_leaves_the_connection_to_the_broker():
    listener, conn, _out = relayed_listener()
    listener.on_error(Frame({"message": "something else"}))
    assert not conn.transport.dropped
