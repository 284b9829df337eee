"""The agent as a daemon and as an SNMP responder: the real `python -m agent` on a real UDP port,
polled with the real Net-SNMP tools and with hand-built datagrams.

Expected values come from a `View` built from the store's own snapshot (the view's rules are
tested in test_view.py); values that move with the clock (TimeTicks, TimeIntervals) are compared
by kind only. Requests and the garbage below are encoded here by hand (`ber_*`), so a test can
send exactly the bytes it means; answers are decoded with pyasn1.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v1, v2c

from agent.__main__ import parse_endpoint
from agent.daemon import DEFAULT_SYS_OBJECT_ID, Agent, AgentConfig, default_sys_descr
from agent.oids import AGENT_SCALARS, AGENT_SUBTREES, MTA, SYSTEM, Oid
from agent.responder import Endpoint, RateLimitedLog, to_syntax, varbind_size
from agent.view import AgentInfo, Kind, Missing, Value, View
from counters import Direction, Store
from tests.conftest import AgentProcess, free_udp_port, run_agent
from tests.netsnmp import (
    END_OF_VIEW,
    NUMERIC,
    Served,
    oid_text,
    parse_varbinds,
    run,
    wait_until,
)

SYS_DESCR = (*SYSTEM, 1, 0)
SYS_UPTIME = (*SYSTEM, 3, 0)
SYS_CONTACT = (*SYSTEM, 4, 0)
SYS_NAME = (*SYSTEM, 5, 0)
SYS_LOCATION = (*SYSTEM, 6, 0)
NOT_IN_SYSTEM = (*SYSTEM, 9, 0)  # no such object type
MTA_ENTRY = (*MTA, 1, 1)
GROUP_ENTRY = (*MTA, 2, 1)
TIME_INTERVAL_COLUMNS = {(*GROUP_ENTRY, column) for column in (12, 17, 18, 23)}

SYS = {"--sys-contact": "postmaster@example.org", "--sys-name": "mx1.example.org",
       "--sys-location": "rack 4"}
SYS_ARGS = tuple(part for option, value in SYS.items() for part in (option, value))

NO_SUCH_OBJECT_TEXT = "No Such Object available on this agent at this OID"
NO_SUCH_INSTANCE_TEXT = "No Such Instance currently exists at this OID"
#: The largest UDP payload over IPv4, and so the largest SNMP message the agent may send.
MAX_MESSAGE = 65507


# --- the data served ---------------------------------------------------------------------------

def fill(store: Store, *, extra_channels: int = 0) -> None:
    """A small MTA with each kind of channel, queued mail, reasons and a live association."""
    store.set_mta(name="mx1 mail", version="3.7.10")
    store.add_channel("smtpd", direction=Direction.IN)
    store.add_channel("smtp", direction=Direction.OUT)
    store.add_channel("relay", direction=Direction.BOTH)
    store.open_inbound("smtpd", remote="client.example.net", key="s1")
    store.refuse_inbound("smtpd", reason="554 relay access denied")
    store.receive("smtpd", "m1", octets=1500, recipients=2)
    store.receive("smtpd", "m2", octets=70000, recipients=1)
    store.reject("smtpd", reason="spam")
    store.transfer("smtpd", "smtp", "m1")
    store.transmit("smtp", "m1")
    store.fail_outbound("smtp", reason="connect to mx2: refused")
    store.receive("relay", "r1", octets=2048, recipients=4)
    for number in range(extra_channels):
        store.add_channel(f"extra{number:04d}")


def expected_view(db: Path) -> View:
    """The view of the store's snapshot now, with the agent's sys* settings."""
    info = AgentInfo(started_at=time.time(), sys_descr=default_sys_descr(),
                     sys_object_id=DEFAULT_SYS_OBJECT_ID, sys_contact=SYS["--sys-contact"],
                     sys_name=SYS["--sys-name"], sys_location=SYS["--sys-location"])
    with Store(db) as store:
        return View.build(store.snapshot(), info, live=AGENT_SCALARS)


def channel_index(db: Path, name: str) -> tuple[int, int]:
    """(applIndex, mtaGroupIndex) of channel `name`."""
    with Store(db) as store:
        snapshot = store.snapshot()
    channel = snapshot.channel(name)
    assert channel is not None
    return snapshot.appl_index, channel.index


def clock_bound(oid: Oid, kind: Kind) -> bool:
    """Values that move with the clock, and the agent's own statistics (which count the
    requests themselves): compared by kind only."""
    return (kind is Kind.TIMETICKS or oid[:-2] in TIME_INTERVAL_COLUMNS
            or any(oid[:len(subtree)] == subtree for subtree in AGENT_SUBTREES))


# What a varbind looks like once read back, from a Net-SNMP tool or from a decoded datagram:
# (oid, Served) for a value, (oid, text) for an exception, clock-bound values masked.
Seen = tuple[Oid, Any]


def stable(oid: Oid, value: Served | str) -> Seen:
    if isinstance(value, Served) and clock_bound(oid, value.kind):
        return oid, (value.kind, "clock")
    return oid, value


def expect(oid: Oid, value: Value | Missing | None, *, exceptions: dict[Any, str]) -> Seen:
    if value is None or isinstance(value, Missing):
        return oid, exceptions[value]
    return stable(oid, Served(value.kind, value.value))


NETSNMP_TEXT: dict[Any, str] = {None: END_OF_VIEW, Missing.NO_SUCH_OBJECT: NO_SUCH_OBJECT_TEXT,
                                Missing.NO_SUCH_INSTANCE: NO_SUCH_INSTANCE_TEXT}
WIRE_TEXT: dict[Any, str] = {None: "endOfMibView", Missing.NO_SUCH_OBJECT: "noSuchObject",
                             Missing.NO_SUCH_INSTANCE: "noSuchInstance"}


def tool_output(stdout: str) -> list[Seen]:
    seen = []
    for oid, value in parse_varbinds(stdout):
        if isinstance(value, str) and value.startswith(END_OF_VIEW):
            value = END_OF_VIEW
        seen.append(stable(oid, value))
    return seen


# --- hand-built datagrams ----------------------------------------------------------------------

def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else (
        bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + length + content


def ber_int(value: int) -> bytes:
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def ber_oid(arcs: Oid) -> bytes:
    out = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


NULL = b"\x05\x00"
GET, GETNEXT, GETRESPONSE, SET, V1TRAP, GETBULK, INFORM, V2TRAP, REPORT = (
    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8)
V1, V2C = 0, 1


def ber_request(pdu: int, oids: Sequence[Oid], *, version: int = V2C,
                community: bytes = b"public", request_id: int = 4242, second: int = 0,
                third: int = 0, value: bytes = NULL) -> bytes:
    """A whole message; `second`/`third` are error-status/index, or for GETBULK
    non-repeaters/max-repetitions."""
    varbinds = tlv(0x30, b"".join(tlv(0x30, ber_oid(oid) + value) for oid in oids))
    body = ber_int(request_id) + ber_int(second) + ber_int(third) + varbinds
    return tlv(0x30, ber_int(version) + tlv(0x04, community) + tlv(pdu, body))


@dataclass
class Reply:
    size: int
    request_id: int
    status: int
    index: int
    varbinds: list[Seen]


def exchange(port: int, packet: bytes, *, version: int = V2C, host: str = "127.0.0.1",
             timeout: float = 3.0) -> Reply | None:
    """Send one datagram and decode the answer; None when none comes within `timeout`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (host, port))
        try:
            data = sock.recv(70000)
        except TimeoutError:
            return None
    api: Any = v1 if version == V1 else v2c
    message, _ = decoder.decode(data, asn1Spec=api.Message())
    pdu = api.apiMessage.get_pdu(message)
    return Reply(len(data), int(api.apiPDU.get_request_id(pdu)),
                 int(api.apiPDU.get_error_status(pdu)), int(api.apiPDU.get_error_index(pdu)),
                 [wire_value(tuple(oid), value) for oid, value in api.apiPDU.get_varbinds(pdu)])


_EXCEPTION_TAGS = {0: "noSuchObject", 1: "noSuchInstance", 2: "endOfMibView"}


def wire_value(oid: Oid, value: Any) -> Seen:
    tag = value.tagSet[-1]
    if tag.tagClass == 0x80:
        return oid, _EXCEPTION_TAGS[tag.tagId]
    if tag.tagClass == 0 and tag.tagId == 5:
        return oid, "null"
    kind = Kind(tag.tagClass | tag.tagId)
    plain: int | bytes | Oid
    if kind is Kind.OCTET_STRING:
        plain = value.asOctets()
    elif kind is Kind.OBJECT_IDENTIFIER:
        plain = tuple(value)
    else:
        plain = int(value)
    return stable(oid, Served(kind, plain))


def echoed(oids: Sequence[Oid]) -> list[Seen]:
    return [(oid, "null") for oid in oids]


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def served(store: Store, agent: Any) -> AgentProcess:
    """The agent serving a filled store, with known sys* values."""
    fill(store)
    running: AgentProcess = agent(*SYS_ARGS)
    return running


def snmp(tool: str, running: AgentProcess, *args: str, flags: Sequence[str] = (),
         version: str = "2c", community: str = "public") -> Any:
    """`tool -v VERSION -c COMMUNITY NUMERIC FLAGS TARGET ARGS` (OIDs, SET values)."""
    return run(tool, "-v", version, "-c", community, *NUMERIC, *flags, running.target, *args)


def no_traceback(running: AgentProcess) -> None:
    text = running.stderr_text()
    assert "Traceback" not in text, text


# --- GET -------------------------------------------------------------------------------------

@pytest.mark.netsnmp
def test_v2c_get_with_unknown_oids_answers_the_others(served: AgentProcess) -> None:
    appl, smtpd = channel_index(served.db, "smtpd")
    oids = [(*MTA_ENTRY, 1, appl),  # mtaReceivedMessages
            NOT_IN_SYSTEM,  # no such object type
            (*GROUP_ENTRY, 5, appl, smtpd),  # inbound-only: no transmitted column
            (*GROUP_ENTRY, 25, appl, smtpd),  # mtaGroupName
            SYS_CONTACT]
    view = expected_view(served.db)
    assert view.get(oids[1]) is Missing.NO_SUCH_OBJECT
    assert view.get(oids[2]) is Missing.NO_SUCH_INSTANCE
    proc = snmp("snmpget", served, *map(oid_text, oids))
    assert proc.returncode == 0, proc.stderr
    assert tool_output(proc.stdout) == [
        expect(oid, view.get(oid), exceptions=NETSNMP_TEXT) for oid in oids]
    assert tool_output(proc.stdout)[3] == (oids[3], Served(Kind.OCTET_STRING, b"smtpd"))


@pytest.mark.netsnmp
def test_v1_get_of_an_absent_instance_is_no_such_name_at_its_index(
        served: AgentProcess) -> None:
    appl, smtpd = channel_index(served.db, "smtpd")
    oids = [SYS_NAME, (*MTA_ENTRY, 1, appl), (*GROUP_ENTRY, 5, appl, smtpd), NOT_IN_SYSTEM]
    # -Cf: report the error instead of retrying without the failing varbind.
    proc = snmp("snmpget", served, *map(oid_text, oids), flags=["-Cf"], version="1")
    assert proc.returncode != 0
    assert "Reason: (noSuchName) There is no such variable name in this MIB." in proc.stderr
    assert f"Failed object: {oid_text(oids[2])}" in proc.stderr
    reply = exchange(served.port, ber_request(GET, oids, version=V1), version=V1)
    assert reply is not None
    # noSuchName (2) at the first failing varbind (1-based), varbinds echoed as sent.
    assert (reply.request_id, reply.status, reply.index) == (4242, 2, 3)
    assert reply.varbinds == echoed(oids)


def test_v1_get_of_known_instances_has_values(served: AgentProcess) -> None:
    appl, smtpd = channel_index(served.db, "smtpd")
    oids = [SYS_NAME, (*MTA_ENTRY, 1, appl), (*GROUP_ENTRY, 2, appl, smtpd)]
    reply = exchange(served.port, ber_request(GET, oids, version=V1), version=V1)
    view = expected_view(served.db)
    assert reply is not None and (reply.status, reply.index) == (0, 0)
    assert reply.varbinds == [expect(o, view.get(o), exceptions=WIRE_TEXT) for o in oids]
    assert reply.varbinds[2] == (oids[2], Served(Kind.COUNTER32, 2))  # m1 and m2


@pytest.mark.netsnmp
def test_getnext_past_the_end(served: AgentProcess) -> None:
    view = expected_view(served.db)
    last = view.items[-1][0]
    oids = [last, SYSTEM, (2, 5)]
    proc = snmp("snmpgetnext", served, *map(oid_text, oids))
    assert proc.returncode == 0, proc.stderr
    expected = []
    for oid in oids:
        step = view.get_next(oid)
        expected.append(expect(oid, None, exceptions=NETSNMP_TEXT) if step is None
                        else expect(*step, exceptions=NETSNMP_TEXT))
    assert tool_output(proc.stdout) == expected
    assert expected[0][1] == END_OF_VIEW and expected[2][1] == END_OF_VIEW
    reply = exchange(served.port, ber_request(GETNEXT, [last], version=V1), version=V1)
    assert reply is not None and (reply.status, reply.index) == (2, 1)  # v1: noSuchName


# --- SET -------------------------------------------------------------------------------------

@pytest.mark.netsnmp
@pytest.mark.parametrize("version, reason", [("2c", "Reason: noAccess"),
                                             ("1", "Reason: (noSuchName)")])
def test_set_is_refused_and_changes_nothing(served: AgentProcess, version: str,
                                            reason: str) -> None:
    appl, _ = channel_index(served.db, "smtpd")
    received = (*MTA_ENTRY, 1, appl)
    before = expected_view(served.db).get(received)
    proc = snmp("snmpset", served, oid_text(SYS_CONTACT), "s", "intruder",
                oid_text(received), "u", "12345", version=version)
    assert proc.returncode != 0
    assert reason in proc.stderr
    assert f"Failed object: {oid_text(SYS_CONTACT)}" in proc.stderr
    check = snmp("snmpget", served, oid_text(SYS_CONTACT), oid_text(received))
    assert tool_output(check.stdout) == [
        (SYS_CONTACT, Served(Kind.OCTET_STRING, SYS["--sys-contact"].encode())),
        stable(received, Served(Kind.COUNTER32, 3))]
    assert isinstance(before, Value) and before.value == 3  # m1, m2, r1 entered the MTA


@pytest.mark.parametrize("version, status", [(V2C, 6), (V1, 2)])  # noAccess / noSuchName
def test_set_reply_on_the_wire(served: AgentProcess, version: int, status: int) -> None:
    oids = [SYS_LOCATION, SYS_NAME]
    packet = ber_request(SET, oids, version=version, value=tlv(0x04, b"x"))
    reply = exchange(served.port, packet, version=version)
    assert reply is not None
    assert (reply.status, reply.index) == (status, 1)
    assert reply.varbinds == [(oid, Served(Kind.OCTET_STRING, b"x")) for oid in oids]


@pytest.mark.netsnmp
def test_set_cannot_create_a_community(served: AgentProcess) -> None:
    # snmpCommunityTable row 'evil' (INDEX IMPLIED snmpCommunityIndex): gotcha 1's exploit.
    row = tuple(b"evil")
    entry = (1, 3, 6, 1, 6, 3, 18, 1, 1, 1)
    proc = snmp("snmpset", served, oid_text((*entry, 2, *row)), "s", "evil",
                oid_text((*entry, 3, *row)), "s", "mailmib-ro",
                oid_text((*entry, 8, *row)), "i", "4")
    assert proc.returncode != 0 and "noAccess" in proc.stderr
    probe = snmp("snmpget", served, oid_text(SYS_NAME), flags=["-t", "1", "-r", "0"],
                 community="evil")
    assert probe.returncode != 0 and "Timeout" in probe.stderr


# --- communities -------------------------------------------------------------------------------

@pytest.mark.netsnmp
@pytest.mark.parametrize("version", ["1", "2c"])
def test_unknown_community_gets_no_answer(served: AgentProcess, version: str) -> None:
    proc = snmp("snmpget", served, oid_text(SYS_NAME), flags=["-t", "1", "-r", "0"],
                version=version, community="private")
    assert proc.returncode != 0
    assert "Timeout: No Response" in proc.stderr
    assert proc.stdout == ""
    good = snmp("snmpget", served, oid_text(SYS_NAME), version=version)
    assert tool_output(good.stdout) == [(SYS_NAME, Served(Kind.OCTET_STRING, b"mx1.example.org"))]
    assert "ignored 1 request with an unknown community" in served.stderr_text()


def test_other_community_option(store: Store, agent: Any) -> None:
    fill(store)
    running = agent(*SYS_ARGS, "--community", "s3cret")
    assert exchange(running.port, ber_request(GET, [SYS_NAME]), timeout=1) is None
    reply = exchange(running.port, ber_request(GET, [SYS_NAME], community=b"s3cret"))
    assert reply is not None
    assert reply.varbinds == [(SYS_NAME, Served(Kind.OCTET_STRING, b"mx1.example.org"))]


# --- GETBULK ------------------------------------------------------------------------------------

BULK_CASES = [  # (non-repeaters, max-repetitions, names)
    (0, 5, [SYSTEM]),
    (1, 3, [SYS_DESCR, (*MTA_ENTRY, 8), SYS_LOCATION]),
    (2, 4, [SYS_DESCR, SYS_NAME]),  # all non-repeaters
    (0, 0, [SYSTEM, MTA]),  # -Cr0: nothing to repeat
    (1, 0, [SYS_DESCR, MTA]),
    (0, 10, [(*MTA, 3), (*MTA, 4)]),  # all at the end after two rows: stops early
]


@pytest.mark.netsnmp
@pytest.mark.parametrize("non_repeaters, repetitions, names", BULK_CASES)
def test_getbulk_with_net_snmp(served: AgentProcess, non_repeaters: int, repetitions: int,
                               names: list[Oid]) -> None:
    proc = snmp("snmpbulkget", served, *map(oid_text, names),
                flags=[f"-Cn{non_repeaters}", f"-Cr{repetitions}"])
    assert proc.returncode == 0, proc.stderr
    view = expected_view(served.db)
    expected = [expect(oid, value, exceptions=NETSNMP_TEXT)
                for oid, value in view.get_bulk(names, non_repeaters, repetitions)]
    assert tool_output(proc.stdout) == expected
    n = min(non_repeaters, len(names))
    assert len(expected) <= n + repetitions * (len(names) - n)


@pytest.mark.parametrize("non_repeaters, repetitions", [(-1, -5), (0, -1), (-3, 2), (1, -7),
                                                         (2**31 - 1, 2)])
def test_getbulk_negative_counts_are_zero(served: AgentProcess, non_repeaters: int,
                                          repetitions: int) -> None:
    names = [SYS_DESCR, SYS_NAME]
    packet = ber_request(GETBULK, names, second=non_repeaters, third=repetitions)
    reply = exchange(served.port, packet)
    assert reply is not None and (reply.status, reply.index) == (0, 0)
    view = expected_view(served.db)
    n, m = max(non_repeaters, 0), max(repetitions, 0)
    assert reply.varbinds == [expect(oid, value, exceptions=WIRE_TEXT)
                              for oid, value in view.get_bulk(names, n, m)]


@pytest.mark.netsnmp
def test_getbulk_huge_max_repetitions_is_cut_to_fit(store: Store, agent: Any) -> None:
    fill(store, extra_channels=600)
    running = agent(*SYS_ARGS)
    view = expected_view(running.db)
    whole = [expect(oid, value, exceptions=NETSNMP_TEXT)
             for oid, value in view.get_bulk([(1, 3, 6, 1)], 0, 100000)]
    proc = snmp("snmpbulkget", running, ".1.3.6.1", flags=["-Cr100000"])
    assert proc.returncode == 0, proc.stderr
    got = tool_output(proc.stdout)
    assert 1000 < len(got) < len(whole)  # the view has more than one message can hold
    assert got == whole[:len(got)]
    whole_wire = [expect(oid, value, exceptions=WIRE_TEXT)
                  for oid, value in view.get_bulk([(1, 3, 6, 1)], 0, 100000)]
    for repetitions in (100000, 2**31 - 1):
        reply = exchange(running.port, ber_request(GETBULK, [(1, 3, 6, 1)], third=repetitions))
        assert reply is not None and reply.status == 0
        assert reply.varbinds == whole_wire[:len(reply.varbinds)]
        # Net-SNMP's count; clock values may have grown an octet since.
        assert abs(len(reply.varbinds) - len(got)) <= 2
        # It fills the message: within a few varbinds of the largest UDP datagram.
        assert MAX_MESSAGE - 400 < reply.size <= MAX_MESSAGE


@pytest.mark.netsnmp
def test_bulkwalk_sees_every_instance_once(store: Store, agent: Any) -> None:
    fill(store, extra_channels=50)
    running = agent(*SYS_ARGS)
    proc = snmp("snmpbulkwalk", running, ".1.3.6.1", flags=["-Cr37"])
    assert proc.returncode == 0, proc.stderr
    view = expected_view(running.db)
    last = view.items[-1][0]
    # Net-SNMP prints the endOfMibView that ends a walk of everything.
    assert tool_output(proc.stdout) == [
        expect(oid, value, exceptions=NETSNMP_TEXT) for oid, value in view.items
    ] + [(last, END_OF_VIEW)]


# --- tooBig -------------------------------------------------------------------------------------

def test_get_and_getnext_that_cannot_fit_are_too_big(store: Store, agent: Any) -> None:
    fill(store)
    contact = "c" * 255
    running = agent("--sys-contact", contact)
    one = len(tlv(0x30, ber_oid(SYS_CONTACT) + tlv(0x04, contact.encode())))
    fits, too_many = 200, 250
    assert fits * one < MAX_MESSAGE - 1000 and too_many * one > MAX_MESSAGE
    value = Served(Kind.OCTET_STRING, contact.encode())

    reply = exchange(running.port, ber_request(GET, [SYS_CONTACT] * fits))
    assert reply is not None and reply.status == 0
    assert reply.varbinds == [(SYS_CONTACT, value)] * fits
    for pdu, asked in ((GET, SYS_CONTACT), (GETNEXT, SYS_UPTIME)):
        reply = exchange(running.port, ber_request(pdu, [asked] * too_many))
        assert reply is not None
        assert (reply.status, reply.index, reply.varbinds) == (1, 0, [])  # tooBig, no varbinds
        # SNMPv1 (RFC 1157 §4.1.2): tooBig, index 0, the request's varbinds echoed.
        reply = exchange(running.port, ber_request(pdu, [asked] * too_many, version=V1),
                         version=V1)
        assert reply is not None
        assert (reply.status, reply.index) == (1, 0)
        assert reply.varbinds == echoed([asked] * too_many)
    no_traceback(running)


# --- bad input ----------------------------------------------------------------------------------

def garbage() -> list[bytes]:
    rnd = random.Random(1566)
    valid = ber_request(GET, [SYS_NAME, SYS_DESCR])
    valid_v1 = ber_request(GETNEXT, [SYS_NAME], version=V1)
    packets = [bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 7, 60, 500, 1400))))
               for _ in range(150)]
    packets += [valid[:cut] for cut in range(len(valid))]  # every truncation
    packets += [valid_v1[:cut] for cut in range(len(valid_v1))]
    for _ in range(300):  # a few octets changed
        mutated = bytearray(rnd.choice((valid, valid_v1)))
        for _ in range(rnd.randint(1, 3)):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        packets.append(bytes(mutated))
    body = valid[2:]
    long_list = valid.replace(b"\x30\x1c\x30\x0c", b"\x30\x84\x7f\xff\xff\xff\x30\x0c")
    indefinite = valid.replace(b"\x30\x0c\x06\x08", b"\x30\x80\x06\x08", 1)
    assert long_list != valid and indefinite != valid
    packets += [
        b"",
        b"\x30\x84\x7f\xff\xff\xff" + body,  # absurd outer length
        b"\x30\x84\xff\xff\xff\xff" + body,
        b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00" + body,  # 9 length octets
        long_list,  # absurd varbind-list length
        b"\x74" + valid[1:],  # not a SEQUENCE: TypeError inside pyasn1 (gotcha 6)
        indefinite,  # indefinite length: IndexError inside pyasn1 (gotcha 6)
        ber_request(GETNEXT, [SYS_NAME], version=V1, third=-74),  # negative error-index
        ber_request(GET, [SYS_NAME], request_id=2**40),
        ber_request(GETBULK, [SYS_NAME], version=V1),  # no GetBulk in SNMPv1
        ber_request(GETRESPONSE, [SYS_NAME]),
        ber_request(V2TRAP, [SYS_NAME]),
        ber_request(INFORM, [SYS_NAME]),
        ber_request(REPORT, [SYS_NAME]),
        ber_request(V1TRAP, [SYS_NAME], version=V1),
        ber_request(0xBF, [SYS_NAME]),  # no such PDU
        tlv(0x30, ber_int(1) + tlv(0x04, b"public")),  # no PDU at all
    ]
    for version in (2, 3, 4, 255, -1, 2**40):
        packets.append(ber_request(GET, [SYS_NAME], version=version))
    return packets


@pytest.mark.netsnmp
def test_garbage_is_dropped_and_the_agent_keeps_serving(served: AgentProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in garbage():
            sock.sendto(packet, ("127.0.0.1", served.port))
            time.sleep(0.0005)
    proc = snmp("snmpget", served, oid_text(SYS_NAME))
    assert proc.returncode == 0, proc.stderr
    assert tool_output(proc.stdout) == [(SYS_NAME, Served(Kind.OCTET_STRING, b"mx1.example.org"))]
    assert served.proc.poll() is None
    text = served.stderr_text()
    assert "dropped 1 malformed datagram (last from 127.0.0.1:" in text
    assert "Traceback" not in text and "Exception in callback" not in text
    # one line per event kind and 10 s window, not one per datagram
    assert len(text.splitlines()) < 10, text


def test_huge_oids_are_answered_like_any_other(served: AgentProcess) -> None:
    view = expected_view(served.db)
    long_name = SYS_NAME + (7,) * (10_000 - len(SYS_NAME))
    reply = exchange(served.port, ber_request(GET, [long_name]))
    assert reply is not None and reply.status == 0
    assert reply.varbinds == [(long_name, WIRE_TEXT[view.get(long_name)])]
    reply = exchange(served.port, ber_request(GETNEXT, [long_name]))
    step = view.get_next(long_name)
    assert reply is not None and step is not None
    assert reply.varbinds == [expect(*step, exceptions=WIRE_TEXT)]
    assert step[0] == SYS_LOCATION


# --- start-up and shutdown ----------------------------------------------------------------------

def one_line_error(proc: Any) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mailmib-agent: ")
    assert "Traceback" not in proc.stderr
    return str(lines[0])


def test_busy_port_is_a_one_line_error(db_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        proc = run_agent("--db", str(db_path), "--listen", f"127.0.0.1:{port}")
    assert one_line_error(proc) == (
        f"mailmib-agent: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_second_listen_busy_releases_the_first(db_path: Path) -> None:
    free = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        busy = holder.getsockname()[1]
        proc = run_agent("--db", str(db_path), "--listen", f"127.0.0.1:{free}",
                         "--listen", f"127.0.0.1:{busy}")
    assert f"cannot listen on 127.0.0.1:{busy}" in one_line_error(proc)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", free))


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "[::]:{port}", "192.0.2.1:{port}"])
def test_non_loopback_needs_allow_remote(db_path: Path, listen: str) -> None:
    address = listen.format(port=free_udp_port())
    proc = run_agent("--db", str(db_path), "--listen", address)
    assert one_line_error(proc) == (f"mailmib-agent: refusing to listen on non-loopback "
                                    f"address {address} without --allow-remote")
    assert not db_path.exists()


@pytest.mark.netsnmp
def test_allow_remote_listens_on_the_wildcard(store: Store, agent: Any) -> None:
    fill(store)
    port = free_udp_port("0.0.0.0")
    running = agent(*SYS_ARGS, "--allow-remote", "--listen", f"0.0.0.0:{port}")
    proc = run("snmpget", "-v2c", "-c", "public", *NUMERIC, f"udp:127.0.0.1:{port}",
               oid_text(SYS_NAME))
    assert tool_output(proc.stdout) == [(SYS_NAME, Served(Kind.OCTET_STRING, b"mx1.example.org"))]
    assert f"on {running.listen}, 0.0.0.0:{port} (SNMPv1/v2c" in running.stderr_text()


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", "::1:1161",
                                    "[::1", "[127.0.0.1]:1161", "mail.example.org:161",
                                    "127.0.0.1:-5", "[::1]x"])
def test_bad_listen_syntax_is_a_one_line_error(db_path: Path, listen: str) -> None:
    proc = run_agent("--db", str(db_path), "--listen", listen)
    assert one_line_error(proc).startswith(f"mailmib-agent: bad --listen {listen!r}: ")


def test_garbage_database_is_a_one_line_error(db_path: Path) -> None:
    db_path.write_bytes(random.Random(7).randbytes(8192))
    proc = run_agent("--db", str(db_path), "--listen", f"127.0.0.1:{free_udp_port()}")
    assert one_line_error(proc).startswith(f"mailmib-agent: cannot serve {db_path}: ")


def test_newer_schema_is_a_one_line_error(store: Store, db_path: Path) -> None:
    store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = run_agent("--db", str(db_path), "--listen", f"127.0.0.1:{free_udp_port()}")
    line = one_line_error(proc)
    assert line.startswith(f"mailmib-agent: cannot serve {db_path}: ") and "999" in line


def test_database_path_that_is_a_directory(tmp_path: Path) -> None:
    proc = run_agent("--db", str(tmp_path), "--listen", f"127.0.0.1:{free_udp_port()}")
    assert one_line_error(proc).startswith(f"mailmib-agent: cannot serve {tmp_path}: ")


def test_database_and_its_directory_are_created(tmp_path: Path, agent: Any) -> None:
    db = tmp_path / "new" / "dir" / "mailmib.db"
    running = agent(db=db)
    assert db.is_file()
    assert running.stderr_text().splitlines()[0] == (
        f"mailmib-agent: serving {db} on 127.0.0.1:{running.port} "
        "(SNMPv1/v2c, 1 community)")  # community names are secrets: never logged
    reply = exchange(running.port, ber_request(GET, [(*MTA_ENTRY, 1, 1)]))
    assert reply is not None and reply.varbinds == [
        ((*MTA_ENTRY, 1, 1), Served(Kind.COUNTER32, 0))]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(served: AgentProcess, sig: int) -> None:
    assert exchange(served.port, ber_request(GET, [SYS_NAME])) is not None
    began = time.monotonic()
    assert served.stop(sig, timeout=5) == 0
    assert time.monotonic() - began < 5
    no_traceback(served)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", served.port))  # the port was released


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.netsnmp
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_listen(store: Store, agent: Any) -> None:
    fill(store)
    running = agent(*SYS_ARGS, host="::1")
    assert running.target == f"udp6:[::1]:{running.port}"
    proc = snmp("snmpget", running, oid_text(SYS_NAME))
    assert proc.returncode == 0, proc.stderr
    assert tool_output(proc.stdout) == [(SYS_NAME, Served(Kind.OCTET_STRING, b"mx1.example.org"))]
    assert f"on [::1]:{running.port} (SNMPv1/v2c" in running.stderr_text()


# --- the database while serving -----------------------------------------------------------------

def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def test_recreated_or_broken_database_while_serving(store: Store, agent: Any,
                                                   db_path: Path) -> None:
    fill(store)
    store.close()
    running = agent(*SYS_ARGS)
    appl, first = channel_index(db_path, "smtpd")
    name = (*GROUP_ENTRY, 25, appl, first)
    reply = exchange(running.port, ber_request(GET, [name]))
    assert reply is not None and reply.varbinds == [(name, Served(Kind.OCTET_STRING, b"smtpd"))]

    _remove_database(db_path)  # recreated: another file at the same path
    with Store(db_path) as fresh:
        fresh.add_channel("lmtp")
    assert channel_index(db_path, "lmtp") == (appl, first)
    lmtp = [(name, Served(Kind.OCTET_STRING, b"lmtp"))]
    reply = wait_until(lambda: (r := exchange(running.port, ber_request(GET, [name])))
                       and r.varbinds == lmtp and r)
    assert reply.varbinds == lmtp

    _remove_database(db_path)  # replaced by garbage: the last good view stays in service
    db_path.write_bytes(b"this is not a database" * 100)
    wait_until(lambda: "database read failed" in running.stderr_text())
    for _ in range(3):
        reply = exchange(running.port, ber_request(GET, [name]))
        assert reply is not None
        assert reply.varbinds == [(name, Served(Kind.OCTET_STRING, b"lmtp"))]
    text = running.stderr_text()
    assert "database read failed 1 time, serving the last good view (last " in text
    assert "Traceback" not in text
    assert len(text.splitlines()) == 2, text  # ready line + one fault line

    db_path.unlink()  # and a good one again
    with Store(db_path) as fresh:
        fresh.add_channel("virtual")
    virtual = [(name, Served(Kind.OCTET_STRING, b"virtual"))]
    reply = wait_until(lambda: (r := exchange(running.port, ber_request(GET, [name])))
                       and r.varbinds == virtual and r)
    assert reply.varbinds == virtual
    assert f"database {db_path} readable again" in running.stderr_text()


# --- in-process: the Agent controller and the pieces ---------------------------------------------

def test_agent_in_process_answers_each_pdu_from_one_view(db_path: Path) -> None:
    with Store(db_path) as filled:
        fill(filled)

    async def scenario() -> tuple[list[Seen], int, tuple[Endpoint, ...]]:
        agent = Agent(AgentConfig(db=db_path, listen=(Endpoint("127.0.0.1", 0),),
                                  sys_name="inproc", fast_path=False))
        calls = 0
        real = agent.current_view

        def counting(context: str | None = "") -> View | None:
            nonlocal calls
            calls += 1
            return real(context)

        agent.current_view = counting  # type: ignore[method-assign]
        async with agent:
            endpoints = agent.endpoints
            loop = asyncio.get_running_loop()
            received: asyncio.Future[bytes] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    received.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(
                Client, remote_addr=(endpoints[0].host, endpoints[0].port))
            oids = [SYS_NAME, SYS_DESCR, (*MTA_ENTRY, 1, 1), NOT_IN_SYSTEM, SYS_LOCATION]
            transport.sendto(ber_request(GET, oids))
            data = await asyncio.wait_for(received, 5)
            transport.close()
        message, _ = decoder.decode(data, asn1Spec=v2c.Message())
        pdu = v2c.apiMessage.get_pdu(message)
        seen = [wire_value(tuple(o), v) for o, v in v2c.apiPDU.get_varbinds(pdu)]
        return seen, calls, endpoints

    seen, calls, endpoints = asyncio.run(scenario())
    assert endpoints[0].port > 0
    assert calls == 1  # five varbinds, one snapshot and one view
    assert seen[0] == (SYS_NAME, Served(Kind.OCTET_STRING, b"inproc"))
    assert seen[2] == ((*MTA_ENTRY, 1, 1), Served(Kind.COUNTER32, 3))
    assert seen[3] == (NOT_IN_SYSTEM, "noSuchObject")


def test_vacm_reads_the_served_subtrees_and_writes_nothing(db_path: Path) -> None:
    from pysnmp.proto import error as proto_error

    probes = (SYS_NAME, (*MTA_ENTRY, 1, 1), (1, 3, 6, 1, 2, 1, 27, 1, 1, 2, 1),
              (1, 3, 6, 1, 6, 3, 18, 1, 1, 1, 2), (1, 3, 6, 1, 2, 1, 2, 1, 0), (2, 5))

    async def decisions() -> dict[tuple[int, str, Oid], str]:
        out: dict[tuple[int, str, Oid], str] = {}
        async with Agent(AgentConfig(db=db_path, listen=(Endpoint("127.0.0.1", 0),))) as agent:
            assert agent.service is not None
            engine = agent.service.engine
            acm = engine.access_control_model[3]
            for model in (1, 2):
                for view_type in ("read", "write", "notify"):
                    for oid in probes:
                        try:
                            refused = acm.is_access_allowed(
                                engine, model, rfc1902.OctetString("mailmib-ro"), 1, view_type,
                                rfc1902.OctetString(b""), rfc1902.ObjectName(oid))
                        except proto_error.StatusInformation as info:
                            out[model, view_type, oid] = str(info["errorIndication"])
                        else:
                            out[model, view_type, oid] = "allowed" if refused is None else "no"
        return out

    got = asyncio.run(decisions())
    served_oids = probes[:3]
    expected = {(model, view_type, oid): "allowed" if view_type == "read" and oid in served_oids
                else "Requested OID is out of MIB view"
                for model in (1, 2) for view_type in ("read", "write", "notify") for oid in probes}
    assert got == expected


@pytest.mark.parametrize("oid, value", [
    (SYS_NAME, None),
    ((1, 3), Value(Kind.INTEGER, 0)),
    ((2, 999, 2**32 - 1), Value(Kind.INTEGER, -1)),
    (SYS_DESCR, Value(Kind.INTEGER, -(2**31))),
    (SYS_DESCR, Value(Kind.INTEGER, 2**31 - 1)),
    (SYS_DESCR, Value(Kind.COUNTER32, 2**32 - 1)),
    (SYS_DESCR, Value(Kind.GAUGE32, 128)),
    (SYS_DESCR, Value(Kind.TIMETICKS, 255)),
    (SYS_DESCR, Value(Kind.OCTET_STRING, b"")),
    (SYS_DESCR, Value(Kind.OCTET_STRING, b"x" * 127)),
    (SYS_DESCR, Value(Kind.OCTET_STRING, b"x" * 128)),
    (SYS_DESCR, Value(Kind.OCTET_STRING, b"x" * 65535)),
    (SYS_DESCR, Value(Kind.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 2**31, 16383, 16384))),
    ((1, 3, 6) + (200,) * 5000, Value(Kind.OBJECT_IDENTIFIER, (0, 0))),
])
def test_varbind_size_is_the_encoded_size(oid: Oid, value: Value | None) -> None:
    encoded = encoder.encode(rfc1902.ObjectName(oid)) + encoder.encode(
        rfc1905.endOfMibView if value is None else to_syntax(value))
    assert varbind_size(oid, value) == len(tlv(0x30, encoded))


@pytest.mark.parametrize("text, endpoint", [
    ("127.0.0.1:1161", Endpoint("127.0.0.1", 1161)),
    ("localhost:161", Endpoint("127.0.0.1", 161)),
    ("127.0.0.2", Endpoint("127.0.0.2", 1161)),
    ("[::1]:1161", Endpoint("::1", 1161)),
    ("[::1]", Endpoint("::1", 1161)),
    ("[0:0:0:0:0:0:0:1]:0", Endpoint("::1", 0)),
    ("0.0.0.0:65535", Endpoint("0.0.0.0", 65535)),
])
def test_parse_endpoint(text: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(text) == endpoint
    assert str(parse_endpoint(str(endpoint))) == str(endpoint)


def test_rate_limited_log_sums_a_burst_into_one_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("test.ratelimit")
    limited = RateLimitedLog(logger, lambda n: f"dropped {n} thing(s)", interval=10,
                             clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        limited.note("from a")
        for source in "bcdef":
            now[0] += 1
            limited.note(f"from {source}")
        assert [r.getMessage() for r in caplog.records] == ["dropped 1 thing(s) (last from a)"]
        now[0] += 5  # 10 s after the first line
        limited.note("from g")
        limited.flush()
        now[0] += 1
        limited.note("from h")
        limited.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 1 thing(s) (last from a)",
        "dropped 6 thing(s) in the last 10 s (last from g)",
        "dropped 1 thing(s) in the last 1 s (last from h)",
    ]
    assert limited.total == 8
