"""The fast path against its oracle: pysnmp.

Two agents run in this process over the same database with the same frozen clock, one with
the fast path and one without (every request through pysnmp). Thousands of random, valid
SNMPv1/v2c GET/GETNEXT/GETBULK requests — edge OIDs, absent columns, prefixes, past the end,
non-repeaters and max-repetitions from negative to 2^31-1, answers too big to fit — go to both
over real UDP, and the decoded responses must be identical. The fast path must also have
answered them itself (not handed them on to pysnmp).

The agent's own statistics (snmp group, snmpEngine, usmStats …) are served by both paths but
differ between the two agents by design (each counts its own packets; the second start has the
next snmpEngineBoots): their names and types are compared, their values not. Each agent's
snmpInPkts must still count exactly the requests it was sent, whichever path answered them.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto.api import v1 as api_v1
from pysnmp.proto.api import v2c as api_v2c
from pysnmp.proto.api.verdec import decode_message_version

from agent import ber
from agent.daemon import Agent, AgentConfig
from agent.fastpath import GET, GETBULK, GETNEXT, EncodedView
from agent.oids import AGENT_SCALARS, AGENT_SUBTREES, Oid
from agent.responder import Endpoint
from agent.view import AgentInfo, View
from counters import Direction, RemoteKind, Store

FROZEN = 1_800_000_000.25
REQUESTS = 3000
COMMUNITY = b"public"


def fill(db: Path) -> None:
    """Channels of every direction, queues, associations, reasons, long names."""
    with Store(db) as store:
        store.set_mta(name="oracle mta", version="1.0")
        with store.batch():
            for n in range(12):
                direction = (Direction.IN, Direction.OUT, Direction.BOTH)[n % 3]
                name = f"ch{n:02d}-" + "x" * (240 if n == 5 else n)
                store.add_channel(name, direction=direction)
                if direction.inbound:
                    for m in range(n % 4):
                        store.receive(name, f"m{n}-{m}", octets=1000 * m + n, recipients=m + 1,
                                      at=FROZEN - 3600 * m)
                    store.open_inbound(name, remote=f"client{n}.example", at=FROZEN - 60,
                                       remote_kind=RemoteKind.UA if n % 2 else RemoteKind.PEER)
                    if n % 4 == 1:
                        store.refuse_inbound(name, reason="554 no", at=FROZEN - 5)
                if direction.outbound:
                    store.transmit(name, f"t{n}", octets=5000 * n + 1, recipients=2,
                                   at=FROZEN - 30)
                    store.schedule_retry(name, retry_at=FROZEN + 600 * n)
                    if n % 2:
                        store.fail_outbound(name, reason="connect refused", at=FROZEN - 7)


def random_oid(rng: random.Random, served: list[Oid]) -> Oid:
    pick = rng.random()
    oid = rng.choice(served)
    if pick < 0.35:
        return oid
    if pick < 0.5:
        return oid[:rng.randrange(2, len(oid))]  # a prefix: an object type, a table, …
    if pick < 0.65:
        return (*oid[:-1], max(0, oid[-1] + rng.choice((-1, 1, 7, 1000))))
    if pick < 0.75:
        return (*oid, rng.randrange(0, 3))  # below an instance
    return rng.choice([
        (0, 0), (1, 3), (1, 3, 6, 1, 2, 1), (1, 3, 6, 1, 2, 1, 1, 0), (1, 3, 6, 1, 2, 1, 1, 9, 0),
        (1, 3, 6, 1, 2, 1, 2), (1, 3, 6, 1, 2, 1, 27, 3), (1, 3, 6, 1, 2, 1, 28, 1, 1, 10, 1),
        (1, 3, 6, 1, 2, 1, 28, 2, 1, 1), (1, 3, 6, 1, 2, 1, 28, 2, 1, 26, 1, 1),
        (1, 3, 6, 1, 2, 1, 28, 4), (1, 3, 6, 1, 2, 1, 29), (1, 3, 6, 1, 4, 1, 8072),
        (2, 25, 4294967295), (1, 3, 6, 1, 2, 1, 28, 2, 1, 25, 1, 4294967295), served[-1],
        (*served[-1], 1), served[0][:-1],
    ])


def encode_request(version: int, pdu_type: int, request_id: int, a: int, b: int,
                   oids: list[Oid]) -> bytes:
    """A request built with our own encoder (NULL values), independent of pysnmp's."""
    varbinds = b"".join(ber.tlv(ber.SEQUENCE, ber.object_identifier(o) + b"\x05\x00")
                        for o in oids)
    pdu = (ber.integer(ber.INTEGER, request_id) + ber.integer(ber.INTEGER, a)
           + ber.integer(ber.INTEGER, b) + ber.tlv(ber.SEQUENCE, varbinds))
    return ber.tlv(ber.SEQUENCE, ber.integer(ber.INTEGER, version)
                   + ber.tlv(ber.OCTET_STRING, COMMUNITY) + ber.tlv(pdu_type, pdu))


def random_request(rng: random.Random, served: list[Oid],
                   request_id: int) -> tuple[int, bytes]:
    version = rng.choice((0, 1))
    pdu_type = rng.choice((GET, GETNEXT) if version == 0 else (GET, GETNEXT, GETBULK))
    count = rng.choice((1, 1, 2, 3, 5, 10))
    if pdu_type == GET and rng.random() < 0.02:
        count = 400  # 400 copies of the 255-octet sysDescr: more than fits, so tooBig
        oids = [(1, 3, 6, 1, 2, 1, 1, 1, 0)] * count
    else:
        oids = [random_oid(rng, served) for _ in range(count)]
    a = b = 0
    if pdu_type == GETBULK:
        a = rng.choice((0, 0, 1, 2, count, count + 3, -1))
        b = rng.choice((0, 1, 3, 10, 50, 1000, 2**31 - 1, -5))
    return pdu_type, encode_request(version, pdu_type, request_id, a, b, oids)


def decode(data: bytes) -> tuple[Any, ...]:
    """A response as comparable plain values."""
    version = int(decode_message_version(data))
    api = api_v1 if version == 0 else api_v2c
    message, rest = decoder.decode(data, asn1Spec=api.Message())
    assert rest == b""
    pdu = api.apiMessage.get_pdu(message)
    varbinds = [(tuple(name), value.__class__.__name__,
                 "live" if _live(tuple(name)) else value.prettyPrint())
                for name, value in api.apiPDU.get_varbinds(pdu)]
    return (version, bytes(api.apiMessage.get_community(message)),
            int(api.apiPDU.get_request_id(pdu)), int(api.apiPDU.get_error_status(pdu)),
            int(api.apiPDU.get_error_index(pdu)), varbinds)


def _live(oid: Oid) -> bool:
    """Under one of the agent's own subtrees, whose values the two agents do not share."""
    return any(oid[:len(subtree)] == subtree for subtree in AGENT_SUBTREES)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)


async def _ask(client: tuple[asyncio.DatagramTransport, _Client], request: bytes) -> bytes:
    transport, protocol = client
    transport.sendto(request)
    return await asyncio.wait_for(protocol.replies.get(), 10)


def test_fast_path_answers_exactly_as_pysnmp(tmp_path: Path) -> None:
    db = tmp_path / "oracle.db"
    fill(db)
    with Store(db) as store:
        info = AgentInfo(started_at=FROZEN - 123.45, sys_descr="d" * 255, sys_object_id=(1, 3),
                         sys_contact="c", sys_name="n", sys_location="l")
        view = View.build(store.snapshot(at=FROZEN), info, live=AGENT_SCALARS)
        served = [oid for oid, _ in view.items]
    assert any(oid[:len(AGENT_SUBTREES[0])] == AGENT_SUBTREES[0] for oid in served)

    async def run() -> tuple[int, int, int, list[int]]:
        def agent(fast: bool) -> Agent:
            config = AgentConfig(db=db, listen=(Endpoint("127.0.0.1", 0),), fast_path=fast,
                                 sys_descr="d" * 255)
            return Agent(config, clock=lambda: FROZEN)

        loop = asyncio.get_running_loop()
        rng = random.Random(1566)
        async with agent(True) as fast, agent(False) as slow:
            clients = []
            for running in (fast, slow):
                endpoint = running.endpoints[0]
                clients.append(await loop.create_datagram_endpoint(
                    _Client, remote_addr=(endpoint.host, endpoint.port)))
            compared = too_big = bulk_cut = 0
            for request_id in range(REQUESTS):
                pdu_type, request = random_request(rng, served, request_id - REQUESTS // 2)
                assert fast.fast_answer(request, ("127.0.0.1", 9)) is not None, request.hex()
                got = decode(await _ask(clients[0], request))
                want = decode(await _ask(clients[1], request))
                assert got == want, f"request {request.hex()}"
                compared += 1
                too_big += got[3] == 1
                bulk_cut += pdu_type == GETBULK and len(got[5]) > 1000
            for transport, _ in clients:
                transport.close()
            in_packets = []
            for running in (fast, slow):
                assert running.service is not None and running.service.counters is not None
                in_packets.append(int(running.service.counters.value("snmpInPkts")))
        return compared, too_big, bulk_cut, in_packets

    compared, too_big, bulk_cut, in_packets = asyncio.run(run())
    assert compared == REQUESTS
    # The fast agent also answered the REQUESTS probes asked of `fast_answer` directly.
    assert in_packets == [2 * REQUESTS, REQUESTS]
    assert too_big > 0  # the size limit was exercised on both paths
    assert bulk_cut > 0  # and GETBULK answers large enough to be cut by it


@pytest.mark.parametrize("content, arcs", [
    (bytes([0x2B, 6, 1]), (1, 3, 6, 1)),
    (bytes([0x00]), (0, 0)),
    (bytes([0x88, 0x37]), (2, 999)),
    (bytes([0x2B, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F]), (1, 3, 2**32 - 1)),
])
def test_oid_codec_round_trips(content: bytes, arcs: Oid) -> None:
    assert ber.read_oid(content) == arcs
    assert ber.oid_content(arcs) == content


@pytest.mark.parametrize("content", [
    b"", bytes([0x2B, 0x86]), bytes([0x2B, 0x80, 0x01]),  # empty, cut, non-minimal arc
    bytes([0x2B, 0x90, 0x80, 0x80, 0x80, 0x00]),  # an arc of 2^32
    bytes([0x2B] + [1] * 128),  # 129 arcs
])
def test_strange_oids_are_left_to_pysnmp(content: bytes) -> None:
    with pytest.raises(ber.BerError):
        ber.read_oid(content)


@pytest.mark.parametrize("value, encoded", [
    (0, "020100"), (127, "02017f"), (128, "02020080"), (-1, "0201ff"), (-128, "020180"),
    (-129, "0202ff7f"), (2**32 - 1, "020500ffffffff"), (2**31 - 1, "02047fffffff"),
])
def test_integer_encoding_is_minimal_twos_complement(value: int, encoded: str) -> None:
    assert ber.integer(ber.INTEGER, value).hex() == encoded


def test_a_rebuild_reusing_the_previous_encoding_equals_a_fresh_one(tmp_path: Path) -> None:
    """EncodedView(new, previous=old) must hold exactly the cells EncodedView(new) holds, when
    values changed, a channel was added (positions shift) and a queue emptied."""
    db = tmp_path / "reuse.db"
    fill(db)
    info = AgentInfo(started_at=FROZEN - 10, sys_descr="d", sys_object_id=(1, 3),
                     sys_contact="c", sys_name="n", sys_location="l")
    with Store(db) as store:
        old = EncodedView(View.build(store.snapshot(at=FROZEN), info))
        store.receive("ch00-", "late", octets=77_777, recipients=9, at=FROZEN)
        store.add_channel("zz-new", direction=Direction.BOTH)
        store.add_channel("aa-new", direction=Direction.IN)
        store.transmit("ch01-x", "t1", octets=5, recipients=1, at=FROZEN)
        new_view = View.build(store.snapshot(at=FROZEN + 5), info)
    reused = EncodedView(new_view, previous=old)
    fresh = EncodedView(new_view)
    assert reused.keys == fresh.keys
    assert [reused.cell(i, FROZEN + 5) for i in range(len(fresh))] == [
        fresh.cell(i, FROZEN + 5) for i in range(len(fresh))]
    changed = sum(a != b for a, b in zip(old._cells, fresh._cells, strict=False))
    assert changed > 0  # the new view really differs from the old one
