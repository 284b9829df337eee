"""The MIB view, without a network: snapshots built by hand, expected values worked out here from
the inputs by the RFC rules (never copied from the view's output).

OIDs are spelled out literally below, so a wrong constant in agent/oids.py cannot hide; the
column data itself is checked against the shipped MIB modules in `mibs/`.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from agent.oids import ALL_COLUMNS, MTA_GROUP_COLUMNS, Side
from agent.view import AgentInfo, Kind, Missing, Value, View, clock_value
from counters.snapshot import (
    SMTP_PROTOCOL,
    AssociationSnapshot,
    ChannelSnapshot,
    Direction,
    MtaTotals,
    RemoteKind,
    Snapshot,
)

# --- literal OIDs ------------------------------------------------------------------------------

SYSTEM = (1, 3, 6, 1, 2, 1, 1)
APPL = (1, 3, 6, 1, 2, 1, 27, 1, 1)  # applEntry
ASSOC = (1, 3, 6, 1, 2, 1, 27, 2, 1)  # assocEntry
MTA = (1, 3, 6, 1, 2, 1, 28, 1, 1)  # mtaEntry
GROUP = (1, 3, 6, 1, 2, 1, 28, 2, 1)  # mtaGroupEntry
GROUP_ASSOC = (1, 3, 6, 1, 2, 1, 28, 3, 1, 1)  # mtaGroupAssociationIndex

INBOUND_COLS = (2, 3, 6, 9, 13, 15, 17, 19, 21)
OUTBOUND_COLS = (5, 8, 11, 14, 16, 18, 20, 22, 23)
ALWAYS_COLS = (4, 7, 10, 12, 24, 25)
SMTP_OID = (1, 3, 6, 1, 2, 1, 27, 4, 25)

TWO32 = 2**32
TI_MAX = 2**31 - 1
DAY = 86400.0

# --- inputs ------------------------------------------------------------------------------------

T0 = 1_000_000.0  # the agent started
NOW = T0 + 3600.25  # the snapshot was taken
APPL_INDEX = 7

AGENT = AgentInfo(
    started_at=T0,
    sys_descr="mailmib test agent",
    sys_object_id=(1, 3, 6, 1, 4, 1, 99999, 1),
    sys_contact="postmaster@example.org",
    sys_name="mx.example.org",
    sys_location="rack 4",
)

ZERO_CHANNEL = ChannelSnapshot(
    index=1, name="zero", protocol=SMTP_PROTOCOL, direction=Direction.BOTH, created_at=T0 - 50,
    received_messages=0, rejected_messages=0, transmitted_messages=0, received_octets=0,
    transmitted_octets=0, received_recipients=0, transmitted_recipients=0, stored_messages=0,
    stored_octets=0, stored_recipients=0, oldest_stored_at=None, inbound_associations=0,
    outbound_associations=0, accumulated_inbound_associations=0,
    accumulated_outbound_associations=0, rejected_inbound_associations=0,
    failed_outbound_associations=0, last_inbound_activity=None, last_outbound_activity=None,
    inbound_rejection_reason=None, outbound_failure_reason=None,
    last_message_rejection_reason=None, next_retry_at=None,
)
ZERO_MTA = MtaTotals(0, 0, 0, 0, 0, 0, 0, 0, 0)


def channel(index: int, direction: Direction = Direction.BOTH, **fields: object) -> ChannelSnapshot:
    fields.setdefault("name", f"channel-{index}")
    return replace(ZERO_CHANNEL, index=index, direction=direction,
                   **fields)  # type: ignore[arg-type]


def association(index: int, channel_index: int, *, inbound: bool = True,
                kind: RemoteKind = RemoteKind.PEER, opened_at: float = NOW - 1,
                remote: str = "192.0.2.1", protocol: str = SMTP_PROTOCOL) -> AssociationSnapshot:
    return AssociationSnapshot(index=index, channel_index=channel_index, inbound=inbound,
                               remote=remote, remote_kind=kind, protocol=protocol,
                               opened_at=opened_at)


def snapshot(channels: tuple[ChannelSnapshot, ...] = (),
             associations: tuple[AssociationSnapshot, ...] = (), *,
             mta: MtaTotals = ZERO_MTA, taken_at: float = NOW,
             restarted_at: float = T0 - 10) -> Snapshot:
    return Snapshot(taken_at=taken_at, appl_index=APPL_INDEX, appl_name="mailmib",
                    appl_version="0.1.0", restarted_at=restarted_at, database_id="db-1",
                    mta=mta, channels=channels, associations=associations)


def build(*channels: ChannelSnapshot, associations: tuple[AssociationSnapshot, ...] = (),
          agent: AgentInfo = AGENT, **kw: object) -> View:
    return View.build(snapshot(channels, associations, **kw), agent)  # type: ignore[arg-type]


def group_value(view: View, col: int, index: int) -> Value | Missing:
    return view.get((*GROUP, col, APPL_INDEX, index))


# Rules restated here, independently of the code, to compute expected values from inputs.
def k_octets(octets: int) -> int:
    return (octets + 1023) // 1024


def ticks(seconds: float) -> int:
    return math.floor(seconds * 100)


def interval(seconds: float) -> int:
    return min(max(ticks(seconds), 0), TI_MAX)


# A mixed MTA used by the walk tests: a gap in the group indexes, channels given out of order,
# every direction, associations on several channels.
MIXED_CHANNELS = (
    channel(5, Direction.BOTH, name="relay.example.net"),
    channel(1, Direction.BOTH, name="tcp_local", received_messages=3),
    channel(2, Direction.IN, name="tcp_submit"),
    channel(3, Direction.OUT, name="tcp_smarthost"),
)
MIXED_ASSOCIATIONS = (
    association(4, 1, inbound=True),
    association(9, 3, inbound=False),
    association(2, 1, inbound=False, kind=RemoteKind.UA),
    association(11, 5, inbound=True, kind=RemoteKind.UA),
)
MIXED = build(*MIXED_CHANNELS, associations=MIXED_ASSOCIATIONS)


def expected_mixed_oids() -> list[tuple[int, ...]]:
    oids: list[tuple[int, ...]] = [(*SYSTEM, n, 0) for n in range(1, 8)]
    oids += [(*APPL, col, APPL_INDEX) for col in range(2, 16)]
    oids += [(*ASSOC, col, APPL_INDEX, a.index)
             for col in range(2, 6) for a in MIXED_ASSOCIATIONS]
    oids += [(*MTA, col, APPL_INDEX) for col in range(1, 10)]
    for c in MIXED_CHANNELS:
        cols = list(ALWAYS_COLS)
        cols += INBOUND_COLS if c.direction in (Direction.IN, Direction.BOTH) else ()
        cols += OUTBOUND_COLS if c.direction in (Direction.OUT, Direction.BOTH) else ()
        oids += [(*GROUP, col, APPL_INDEX, c.index) for col in cols]
    oids += [(*GROUP_ASSOC, APPL_INDEX, a.channel_index, a.index) for a in MIXED_ASSOCIATIONS]
    return sorted(oids)


# --- the column data against the MIB modules ---------------------------------------------------

MIBS = Path(__file__).resolve().parent.parent / "mibs"
OBJECT_TYPE = re.compile(
    r"^(\w+)\s+OBJECT-TYPE\s+SYNTAX\s+(.+?)\s+(?:MAX-)?ACCESS\s+([\w-]+).*?"
    r"::=\s*\{\s*([\w-]+)\s+(\d+)\s*\}", re.S | re.M)
NODE = re.compile(
    r"^(\w+)\s+(?:OBJECT IDENTIFIER|MODULE-IDENTITY.*?)\s*::=\s*\{\s*([\w-]+)\s+(\d+)\s*\}",
    re.S | re.M)
SYNTAX_KIND = {
    "Counter32": Kind.COUNTER32, "Gauge32": Kind.GAUGE32, "TimeTicks": Kind.TIMETICKS,
    "TimeStamp": Kind.TIMETICKS, "INTEGER": Kind.INTEGER, "TimeInterval": Kind.INTEGER,
    "DisplayString": Kind.OCTET_STRING, "DistinguishedName": Kind.OCTET_STRING,
    "OBJECT IDENTIFIER": Kind.OBJECT_IDENTIFIER,
}


def mib_objects() -> dict[str, tuple[tuple[int, ...], str, str]]:
    """name → (OID, SYNTAX base, access) for every OBJECT-TYPE in the shipped modules."""
    parents: dict[str, tuple[str, int]] = {}
    objects: dict[str, tuple[str, str]] = {}
    for file in ("RFC1213-MIB.txt", "RFC1565.txt", "RFC1566.txt"):
        text = re.sub(r"--[^\n]*", "", (MIBS / file).read_text())
        for name, parent, sub in NODE.findall(text):
            parents[name] = (parent, int(sub))
        for name, syntax, access, parent, sub in OBJECT_TYPE.findall(text):
            parents[name] = (parent, int(sub))
            base = re.match(r"OBJECT IDENTIFIER|SEQUENCE|\w+", syntax)
            assert base is not None
            objects[name] = (base.group(), access)

    def resolve(name: str) -> tuple[int, ...]:
        if name == "mib-2":
            return (1, 3, 6, 1, 2, 1)
        parent, sub = parents[name]
        return (*resolve(parent), sub)

    return {name: (resolve(name), syntax, access) for name, (syntax, access) in objects.items()}


def test_every_column_is_its_mib_object() -> None:
    objects = mib_objects()
    for column in ALL_COLUMNS:
        oid, syntax, access = objects[column.name]
        assert column.oid == oid, column.name
        assert column.syntax == syntax, column.name
        assert column.kind == SYNTAX_KIND[syntax], column.name
        # sysContact/Name/Location are read-write in the MIB; this agent serves them read-only.
        assert access in ("read-only", "read-write"), column.name


def test_every_readable_mta_and_application_object_is_served() -> None:
    served = {c.name for c in ALL_COLUMNS}
    readable = {name for name, (oid, _, access) in mib_objects().items()
                if access == "read-only" and oid[:7] in ((1, 3, 6, 1, 2, 1, 27),
                                                         (1, 3, 6, 1, 2, 1, 28))}
    assert readable - served == set()
    # applDirectoryName is read-only but outside applGroup (an RFC 1565 slip); it is served too.
    assert "applDirectoryName" in served


def test_group_column_sides() -> None:
    sides = {int(c.oid[-1]): c.side for c in MTA_GROUP_COLUMNS}
    assert sorted(sides) == list(range(2, 26))
    assert {col for col, s in sides.items() if s is Side.INBOUND} == set(INBOUND_COLS)
    assert {col for col, s in sides.items() if s is Side.OUTBOUND} == set(OUTBOUND_COLS)
    assert {col for col, s in sides.items() if s is Side.ALWAYS} == set(ALWAYS_COLS)


# --- order and shape ---------------------------------------------------------------------------


def test_items_are_sorted_and_unique() -> None:
    oids = [oid for oid, _ in MIXED.items]
    assert all(a < b for a, b in pairwise(oids))
    assert len(set(oids)) == len(oids) == len(MIXED)


def test_exactly_the_expected_instances() -> None:
    assert [oid for oid, _ in MIXED.items] == expected_mixed_oids()


def test_walk_by_get_next_visits_every_item_and_get_agrees() -> None:
    walked = []
    oid: tuple[int, ...] = ()
    while (step := MIXED.get_next(oid)) is not None:
        walked.append(step)
        oid = step[0]
    assert walked == list(MIXED.items)
    for oid, value in walked:
        assert MIXED.get(oid) == value


def test_items_sequence_access() -> None:
    items = MIXED.items
    assert len(items) == len(MIXED)
    assert items[0] == ((*SYSTEM, 1, 0), Value(Kind.OCTET_STRING, b"mailmib test agent"))
    assert items[-1] == ((*GROUP_ASSOC, APPL_INDEX, 5, 11), Value(Kind.INTEGER, 11))
    assert items[2:4] == [items[2], items[3]]


def test_empty_mta() -> None:
    view = build()
    assert len(view) == 7 + 14 + 9
    assert view.get((*GROUP, 2, APPL_INDEX, 1)) is Missing.NO_SUCH_INSTANCE
    assert view.get_next((*MTA, 9, APPL_INDEX)) is None


# --- GETNEXT -----------------------------------------------------------------------------------

LAST_GROUP = (*GROUP, 25, APPL_INDEX, 5)


@pytest.mark.parametrize(("start", "expected"), [
    pytest.param((), (*SYSTEM, 1, 0), id="empty OID"),
    pytest.param((0, 0), (*SYSTEM, 1, 0), id="before everything"),
    pytest.param((1, 3, 6, 1, 2, 1), (*SYSTEM, 1, 0), id="prefix mib-2"),
    pytest.param((*SYSTEM, 3), (*SYSTEM, 3, 0), id="scalar object, no instance"),
    pytest.param((*SYSTEM, 1, 0), (*SYSTEM, 2, 0), id="scalar to scalar"),
    pytest.param((*SYSTEM, 3, 0, 9, 9), (*SYSTEM, 4, 0), id="inside an instance"),
    pytest.param((*SYSTEM, 7, 0), (*APPL, 2, APPL_INDEX), id="system group to applTable"),
    pytest.param((*SYSTEM, 8), (*APPL, 2, APPL_INDEX), id="sysORTable (not served) skipped"),
    pytest.param((*APPL, 15, APPL_INDEX), (*ASSOC, 2, APPL_INDEX, 2), id="applTable to assocTable"),
    pytest.param((*ASSOC, 2, APPL_INDEX, 11), (*ASSOC, 3, APPL_INDEX, 2),
                 id="assocTable column to column"),
    pytest.param((*ASSOC, 5, APPL_INDEX, 11), (*MTA, 1, APPL_INDEX), id="assocTable to mtaTable"),
    pytest.param((1, 3, 6, 1, 2, 1, 28), (*MTA, 1, APPL_INDEX), id="prefix mta"),
    pytest.param((*MTA, 9, APPL_INDEX), (*GROUP, 2, APPL_INDEX, 1), id="mtaTable to mtaGroupTable"),
    pytest.param((*GROUP, 2, APPL_INDEX, 5), (*GROUP, 3, APPL_INDEX, 1),
                 id="last row of a column to first row of the next"),
    pytest.param((*GROUP, 2, APPL_INDEX, 3), (*GROUP, 2, APPL_INDEX, 5),
                 id="from an absent instance"),
    pytest.param((*GROUP, 2, APPL_INDEX, 4), (*GROUP, 2, APPL_INDEX, 5), id="from a missing row"),
    pytest.param((*GROUP, 1), (*GROUP, 2, APPL_INDEX, 1), id="from mtaGroupIndex (not served)"),
    pytest.param((*GROUP, 2, APPL_INDEX), (*GROUP, 2, APPL_INDEX, 1), id="from a row prefix"),
    pytest.param((*GROUP, 2, APPL_INDEX - 1, 99), (*GROUP, 2, APPL_INDEX, 1),
                 id="from a lower applIndex"),
    pytest.param((*GROUP, 2, APPL_INDEX + 1), (*GROUP, 3, APPL_INDEX, 1),
                 id="from a higher applIndex"),
    pytest.param(LAST_GROUP, (*GROUP_ASSOC, APPL_INDEX, 1, 2),
                 id="end of mtaGroupTable to mtaGroupAssociationTable"),
    pytest.param((*GROUP_ASSOC, APPL_INDEX, 1, 2), (*GROUP_ASSOC, APPL_INDEX, 1, 4),
                 id="association rows in group then association order"),
    pytest.param((*GROUP_ASSOC, APPL_INDEX, 1, 4), (*GROUP_ASSOC, APPL_INDEX, 3, 9),
                 id="next group's associations"),
    pytest.param((*GROUP_ASSOC, APPL_INDEX, 5, 11), None, id="last instance: endOfMibView"),
    pytest.param((1, 3, 6, 1, 2, 1, 28, 4), None, id="mtaConformance: past the end"),
    pytest.param((2,), None, id="joint-iso-itu-t: past the end"),
])
def test_get_next(start: tuple[int, ...], expected: tuple[int, ...] | None) -> None:
    step = MIXED.get_next(start)
    if expected is None:
        assert step is None
    else:
        assert step is not None
        assert step[0] == expected
        assert MIXED.get(expected) == step[1]


def test_get_next_without_associations() -> None:
    view = build(*MIXED_CHANNELS)
    step = view.get_next((*APPL, 15, APPL_INDEX))
    assert step is not None and step[0] == (*MTA, 1, APPL_INDEX)
    assert view.get_next(LAST_GROUP) is None


# --- absent columns and missing instances -------------------------------------------------------


@pytest.mark.parametrize(("direction", "absent"), [
    (Direction.IN, OUTBOUND_COLS),
    (Direction.OUT, INBOUND_COLS),
    (Direction.BOTH, ()),
])
def test_unused_side_is_absent(direction: Direction, absent: tuple[int, ...]) -> None:
    view = build(channel(1, Direction.BOTH), channel(2, direction), channel(3, Direction.BOTH))
    for col in range(2, 26):
        value = group_value(view, col, 2)
        if col in absent:
            assert value is Missing.NO_SUCH_INSTANCE, col
            # GETNEXT from the row before goes over the absent instance to the next row.
            step = view.get_next((*GROUP, col, APPL_INDEX, 1))
            assert step is not None and step[0] == (*GROUP, col, APPL_INDEX, 3)
        else:
            assert isinstance(value, Value), col
    walked = {oid for oid, _ in view.items}
    assert {(*GROUP, col, APPL_INDEX, 2) for col in absent} & walked == set()


@pytest.mark.parametrize(("oid", "expected"), [
    ((*SYSTEM, 1, 1), Missing.NO_SUCH_INSTANCE),
    ((*SYSTEM, 1), Missing.NO_SUCH_INSTANCE),
    ((*SYSTEM, 3, 0, 0), Missing.NO_SUCH_INSTANCE),
    ((*SYSTEM, 8, 0), Missing.NO_SUCH_OBJECT),  # sysORLastChange: not served
    ((*SYSTEM,), Missing.NO_SUCH_OBJECT),
    ((1, 3, 6, 1, 2, 1, 2, 1, 0), Missing.NO_SUCH_OBJECT),  # interfaces
    ((1, 3, 6), Missing.NO_SUCH_OBJECT),
    ((), Missing.NO_SUCH_OBJECT),
    ((*APPL, 1, APPL_INDEX), Missing.NO_SUCH_OBJECT),  # applIndex is not-accessible
    ((*APPL, 16, APPL_INDEX), Missing.NO_SUCH_OBJECT),  # applDescription (RFC 2788)
    ((*APPL, 2, APPL_INDEX + 1), Missing.NO_SUCH_INSTANCE),  # another application
    ((*APPL,), Missing.NO_SUCH_OBJECT),
    ((*ASSOC, 2, APPL_INDEX, 3), Missing.NO_SUCH_INSTANCE),  # no live association 3
    ((*ASSOC, 1, APPL_INDEX, 4), Missing.NO_SUCH_OBJECT),  # assocIndex is not-accessible
    ((*MTA, 1, APPL_INDEX + 1), Missing.NO_SUCH_INSTANCE),
    ((*MTA, 10, APPL_INDEX), Missing.NO_SUCH_OBJECT),  # mtaSuccessfulConvertedMessages (2249)
    ((*MTA, 1), Missing.NO_SUCH_INSTANCE),
    ((*GROUP, 1, APPL_INDEX, 1), Missing.NO_SUCH_OBJECT),  # mtaGroupIndex is not-accessible
    ((*GROUP, 26, APPL_INDEX, 1), Missing.NO_SUCH_OBJECT),  # RFC 2249 column
    ((*GROUP, 2, APPL_INDEX, 4), Missing.NO_SUCH_INSTANCE),  # no group 4
    ((*GROUP, 5, APPL_INDEX, 2), Missing.NO_SUCH_INSTANCE),  # IN channel: no transmit side
    ((*GROUP, 2, APPL_INDEX, 3), Missing.NO_SUCH_INSTANCE),  # OUT channel: no receive side
    ((*GROUP, 2, APPL_INDEX, 1, 0), Missing.NO_SUCH_INSTANCE),  # too long
    ((*GROUP_ASSOC, APPL_INDEX, 1, 9), Missing.NO_SUCH_INSTANCE),  # 9 is group 3's
    ((1, 3, 6, 1, 2, 1, 28, 5, 1, 1, APPL_INDEX, 1, 4004001), Missing.NO_SUCH_OBJECT),  # errors
])
def test_missing(oid: tuple[int, ...], expected: Missing) -> None:
    assert MIXED.get(oid) is expected


# --- values ------------------------------------------------------------------------------------


def test_system_group() -> None:
    view = build()
    expected = {
        1: Value(Kind.OCTET_STRING, b"mailmib test agent"),
        2: Value(Kind.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 99999, 1)),
        3: Value(Kind.TIMETICKS, ticks(NOW - T0)),
        4: Value(Kind.OCTET_STRING, b"postmaster@example.org"),
        5: Value(Kind.OCTET_STRING, b"mx.example.org"),
        6: Value(Kind.OCTET_STRING, b"rack 4"),
        7: Value(Kind.INTEGER, 72),
    }
    for n, value in expected.items():
        assert view.get((*SYSTEM, n, 0)) == value


@pytest.mark.parametrize(("started_at", "expected"), [
    (NOW - 12.5, 1250),
    (NOW, 0),
    (NOW + 30, 0),  # the agent's clock says it started after the snapshot: never negative
    (NOW - 500 * DAY, (500 * 86400 * 100) % TWO32),  # wraps after about 497 days
])
def test_sys_up_time(started_at: float, expected: int) -> None:
    view = build(agent=replace(AGENT, started_at=started_at))
    assert view.get((*SYSTEM, 3, 0)) == Value(Kind.TIMETICKS, expected)


def test_all_group_columns_of_a_busy_channel() -> None:
    c = channel(
        4, Direction.BOTH, name="mx.example.net", protocol="1.3.6.1.2.1.27.4.587",
        received_messages=101, rejected_messages=7, transmitted_messages=88,
        received_octets=5_000_000, transmitted_octets=4_000_001, received_recipients=150,
        transmitted_recipients=120, stored_messages=13, stored_octets=65_536,
        stored_recipients=31, oldest_stored_at=NOW - 90.5, inbound_associations=3,
        outbound_associations=2, accumulated_inbound_associations=400,
        accumulated_outbound_associations=300, rejected_inbound_associations=17,
        failed_outbound_associations=9, last_inbound_activity=NOW - 0.25,
        last_outbound_activity=NOW - 61.75, inbound_rejection_reason="",
        outbound_failure_reason="421 try later", next_retry_at=NOW + 120.5,
    )
    view = build(c)
    c32, g32, ti, ds = Kind.COUNTER32, Kind.GAUGE32, Kind.INTEGER, Kind.OCTET_STRING
    expected = {
        2: Value(c32, 101), 3: Value(c32, 7), 4: Value(g32, 13), 5: Value(c32, 88),
        6: Value(c32, k_octets(5_000_000)), 7: Value(g32, k_octets(65_536)),
        8: Value(c32, k_octets(4_000_001)), 9: Value(c32, 150), 10: Value(g32, 31),
        11: Value(c32, 120), 12: Value(ti, 9050), 13: Value(g32, 3), 14: Value(g32, 2),
        15: Value(c32, 400), 16: Value(c32, 300), 17: Value(ti, 25), 18: Value(ti, 6175),
        19: Value(c32, 17), 20: Value(c32, 9), 21: Value(ds, b""),
        22: Value(ds, b"421 try later"), 23: Value(ti, 12050),
        24: Value(Kind.OBJECT_IDENTIFIER, (1, 3, 6, 1, 2, 1, 27, 4, 587)),
        25: Value(ds, b"mx.example.net"),
    }
    for col, value in expected.items():
        assert group_value(view, col, 4) == value, col


def test_mta_table() -> None:
    mta = MtaTotals(received_messages=10, received_octets=2049, received_recipients=12,
                    stored_messages=3, stored_octets=1, stored_recipients=4,
                    transmitted_messages=9, transmitted_octets=1024,
                    transmitted_recipients=11)
    view = build(mta=mta)
    expected = {
        1: Value(Kind.COUNTER32, 10), 2: Value(Kind.GAUGE32, 3), 3: Value(Kind.COUNTER32, 9),
        4: Value(Kind.COUNTER32, 3), 5: Value(Kind.GAUGE32, 1), 6: Value(Kind.COUNTER32, 1),
        7: Value(Kind.COUNTER32, 12), 8: Value(Kind.GAUGE32, 4), 9: Value(Kind.COUNTER32, 11),
    }
    for col, value in expected.items():
        assert view.get((*MTA, col, APPL_INDEX)) == value, col


def test_appl_table_sums_channels() -> None:
    a = channel(1, Direction.IN, inbound_associations=2, accumulated_inbound_associations=30,
                rejected_inbound_associations=4, last_inbound_activity=T0 + 100.5)
    b = channel(2, Direction.BOTH, inbound_associations=1, outbound_associations=5,
                accumulated_inbound_associations=12, accumulated_outbound_associations=40,
                rejected_inbound_associations=1, failed_outbound_associations=6,
                last_inbound_activity=T0 + 200.25, last_outbound_activity=T0 + 50.75)
    c = channel(3, Direction.OUT, outbound_associations=1, accumulated_outbound_associations=2,
                failed_outbound_associations=1, last_outbound_activity=None)
    view = build(a, b, c, restarted_at=T0 + 12.5)
    expected = {
        2: Value(Kind.OCTET_STRING, b"mailmib"),
        3: Value(Kind.OCTET_STRING, b""),
        4: Value(Kind.OCTET_STRING, b"0.1.0"),
        5: Value(Kind.TIMETICKS, 1250),
        6: Value(Kind.INTEGER, 1),  # up
        7: Value(Kind.TIMETICKS, 1250),
        8: Value(Kind.GAUGE32, 2 + 1),
        9: Value(Kind.GAUGE32, 5 + 1),
        10: Value(Kind.COUNTER32, 30 + 12),
        11: Value(Kind.COUNTER32, 40 + 2),
        12: Value(Kind.TIMETICKS, ticks(200.25)),  # the latest over the channels
        13: Value(Kind.TIMETICKS, ticks(50.75)),
        14: Value(Kind.COUNTER32, 4 + 1),
        15: Value(Kind.COUNTER32, 6 + 1),
    }
    for col, value in expected.items():
        assert view.get((*APPL, col, APPL_INDEX)) == value, col


def test_appl_table_without_channels() -> None:
    view = build()
    for col in (8, 9):
        assert view.get((*APPL, col, APPL_INDEX)) == Value(Kind.GAUGE32, 0)
    for col in (10, 11, 14, 15):
        assert view.get((*APPL, col, APPL_INDEX)) == Value(Kind.COUNTER32, 0)
    for col in (12, 13):  # never active: 0
        assert view.get((*APPL, col, APPL_INDEX)) == Value(Kind.TIMETICKS, 0)


def test_assoc_table() -> None:
    rows = {
        (True, RemoteKind.UA): 1,  # ua-initiator: the remote client opened it
        (False, RemoteKind.UA): 2,  # ua-responder
        (True, RemoteKind.PEER): 3,  # peer-initiator
        (False, RemoteKind.PEER): 4,  # peer-responder
    }
    opened = {1: T0 + 1.25, 2: T0 - 5, 3: NOW - 0.5, 4: T0 + 7.0}
    assocs = tuple(
        association(i, 1, inbound=inbound, kind=kind, opened_at=opened[i],
                    remote=f"host{i}.example.org", protocol="1.3.6.1.2.1.27.4.25")
        for i, (inbound, kind) in enumerate(rows, start=1)
    )
    view = build(channel(1), associations=assocs)
    for a, app_type in zip(assocs, rows.values(), strict=True):
        row = (APPL_INDEX, a.index)
        assert view.get((*ASSOC, 2, *row)) == Value(Kind.OCTET_STRING,
                                                   f"host{a.index}.example.org".encode())
        assert view.get((*ASSOC, 3, *row)) == Value(Kind.OBJECT_IDENTIFIER, SMTP_OID)
        assert view.get((*ASSOC, 4, *row)) == Value(Kind.INTEGER, app_type)
        started = ticks(a.opened_at - T0) if a.opened_at >= T0 else 0
        assert view.get((*ASSOC, 5, *row)) == Value(Kind.TIMETICKS, started)
        assert view.get((*GROUP_ASSOC, APPL_INDEX, 1, a.index)) == Value(Kind.INTEGER, a.index)


# --- Counter32 wrap, Gauge32 cap -----------------------------------------------------------------

BIG = [0, 1, TWO32 - 1, TWO32, TWO32 + 5, 2**40 + 3, 2**64 + 2**32 + 9]


@pytest.mark.parametrize("n", BIG)
def test_counters_wrap_and_gauges_stick(n: int) -> None:
    c = channel(1, received_messages=n, transmitted_recipients=n, stored_messages=n,
                inbound_associations=n, received_octets=n * 1024, stored_octets=n * 1024)
    view = build(c, mta=replace(ZERO_MTA, received_messages=n, stored_recipients=n,
                                transmitted_octets=n * 1024))
    wrapped, capped = n % TWO32, min(n, TWO32 - 1)
    assert group_value(view, 2, 1) == Value(Kind.COUNTER32, wrapped)
    assert group_value(view, 11, 1) == Value(Kind.COUNTER32, wrapped)
    assert group_value(view, 4, 1) == Value(Kind.GAUGE32, capped)
    assert group_value(view, 13, 1) == Value(Kind.GAUGE32, capped)
    assert group_value(view, 6, 1) == Value(Kind.COUNTER32, wrapped)  # n K exactly
    assert group_value(view, 7, 1) == Value(Kind.GAUGE32, capped)
    assert view.get((*MTA, 1, APPL_INDEX)) == Value(Kind.COUNTER32, wrapped)
    assert view.get((*MTA, 8, APPL_INDEX)) == Value(Kind.GAUGE32, capped)
    assert view.get((*MTA, 6, APPL_INDEX)) == Value(Kind.COUNTER32, wrapped)


def test_appl_sums_wrap_after_summing() -> None:
    half = 2**31 + 1
    view = build(channel(1, accumulated_inbound_associations=half, inbound_associations=half),
                 channel(2, accumulated_inbound_associations=half, inbound_associations=half))
    assert view.get((*APPL, 10, APPL_INDEX)) == Value(Kind.COUNTER32, (2 * half) % TWO32)
    assert view.get((*APPL, 8, APPL_INDEX)) == Value(Kind.GAUGE32, min(2 * half, TWO32 - 1))


@pytest.mark.parametrize("octets", [0, 1, 1023, 1024, 1025, 1024 * 1000 + 1, TWO32 * 1024 + 1])
def test_kilo_octets_round_up(octets: int) -> None:
    view = build(channel(1, received_octets=octets, stored_octets=octets,
                         transmitted_octets=octets),
                 mta=replace(ZERO_MTA, received_octets=octets, stored_octets=octets,
                             transmitted_octets=octets))
    k = k_octets(octets)
    for col, kind, value in ((6, Kind.COUNTER32, k % TWO32), (7, Kind.GAUGE32, min(k, TWO32 - 1)),
                             (8, Kind.COUNTER32, k % TWO32)):
        assert group_value(view, col, 1) == Value(kind, value)
    for col, kind, value in ((4, Kind.COUNTER32, k % TWO32), (5, Kind.GAUGE32, min(k, TWO32 - 1)),
                             (6, Kind.COUNTER32, k % TWO32)):
        assert view.get((*MTA, col, APPL_INDEX)) == Value(kind, value)


def test_kilo_octets_small_values() -> None:
    # The rule spelled out: a byte in the queue is 1 K, never 0 K.
    expected = {0: 0, 1: 1, 1023: 1, 1024: 1, 1025: 2}
    for octets, k in expected.items():
        assert group_value(build(channel(1, stored_octets=octets)), 7, 1) == Value(Kind.GAUGE32, k)


# --- TimeInterval --------------------------------------------------------------------------------

# (seconds ago or ahead, expected TimeInterval); times picked exact in binary floating point.
AGES = [
    (None, 0),  # nothing to measure
    (0.0, 0),
    (0.25, 25),
    (90.5, 9050),
    (21474836.0, 2147483600),
    (21474836.5, TI_MAX),  # 2147483650 hundredths: clamped
    (250 * DAY, TI_MAX),  # > 248.5 days
    (-10.0, 0),  # in the future: clock skew
]


@pytest.mark.parametrize(("age", "expected"), AGES)
def test_time_since(age: float | None, expected: int) -> None:
    at = None if age is None else NOW - age
    assert expected == (0 if age is None else interval(age))
    view = build(channel(1, oldest_stored_at=at, last_inbound_activity=at,
                         last_outbound_activity=at))
    for col in (12, 17, 18):
        assert group_value(view, col, 1) == Value(Kind.INTEGER, expected), col


@pytest.mark.parametrize(("ahead", "expected"), [
    (None, 0),  # no retry scheduled
    (2.5, 250),
    (0.0, 0),
    (-30.0, 0),  # due already
    (300 * DAY, TI_MAX),
])
def test_scheduled_retry_is_time_until(ahead: float | None, expected: int) -> None:
    at = None if ahead is None else NOW + ahead
    assert expected == (0 if ahead is None else interval(ahead))
    view = build(channel(1, Direction.OUT, next_retry_at=at))
    assert group_value(view, 23, 1) == Value(Kind.INTEGER, expected)


# --- TimeStamp -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("event", "expected"), [
    (None, 0),  # never
    (T0 - 1000, 0),  # before the agent started
    (T0, 0),
    (T0 + 1.25, 125),
    (NOW - 0.5, ticks(NOW - 0.5 - T0)),
    (NOW + 60, ticks(NOW - T0)),  # after the snapshot: counts as at the snapshot (= sysUpTime)
])
def test_time_stamps(event: float | None, expected: int) -> None:
    assocs = () if event is None else (association(1, 1, opened_at=event),)
    view = build(channel(1, last_inbound_activity=event, last_outbound_activity=event),
                 associations=assocs, restarted_at=event if event is not None else T0 - 1)
    for col in (5, 7, 12, 13):  # applUptime, applLastChange, applLast{In,Out}boundActivity
        assert view.get((*APPL, col, APPL_INDEX)) == Value(Kind.TIMETICKS, expected), col
    if assocs:
        assert view.get((*ASSOC, 5, APPL_INDEX, 1)) == Value(Kind.TIMETICKS, expected)


# --- strings and OIDs ----------------------------------------------------------------------------

STRINGS = [
    ("", b""),
    ("550 5.7.1 relaying denied", b"550 5.7.1 relaying denied"),
    ("x" * 300, b"x" * 255),
    ("h\u00e9llo\tw\x7forld\r\n", b"h?llo?w?orld??"),
    ("a" * 254 + "\u00e9bc", b"a" * 254 + b"?"),
    ("\U0001f4e7 mail", b"? mail"),
]


@pytest.mark.parametrize(("reason", "expected"), [(None, b"never"), *STRINGS])
def test_reason_strings(reason: str | None, expected: bytes) -> None:
    view = build(channel(1, inbound_rejection_reason=reason, outbound_failure_reason=reason))
    for col in (21, 22):
        assert group_value(view, col, 1) == Value(Kind.OCTET_STRING, expected)


@pytest.mark.parametrize(("text", "expected"), [("never", b"never"), *STRINGS])
def test_display_strings(text: str, expected: bytes) -> None:
    view = build(channel(1, name=text), associations=(association(1, 1, remote=text),),
                 agent=replace(AGENT, sys_descr=text, sys_location=text))
    assert group_value(view, 25, 1) == Value(Kind.OCTET_STRING, expected)
    assert view.get((*ASSOC, 2, APPL_INDEX, 1)) == Value(Kind.OCTET_STRING, expected)
    assert view.get((*SYSTEM, 1, 0)) == Value(Kind.OCTET_STRING, expected)
    assert view.get((*SYSTEM, 6, 0)) == Value(Kind.OCTET_STRING, expected)


@pytest.mark.parametrize(("dotted", "expected"), [
    ("1.3.6.1.2.1.27.4.25", SMTP_OID),
    (".1.3.6.1.2.1.27.4.465", (1, 3, 6, 1, 2, 1, 27, 4, 465)),
    ("1.3.6.1.2.1.27.5.53", (1, 3, 6, 1, 2, 1, 27, 5, 53)),
    ("2.999.4294967295", (2, 999, 4294967295)),
    ("", (0, 0)),  # unparsable: zeroDotZero
    ("smtp", (0, 0)),
    ("1.3..6", (0, 0)),
    ("1.3.6.-1", (0, 0)),
    ("1", (0, 0)),
    ("3.1", (0, 0)),
    ("1.40", (0, 0)),
    ("1.3.6.4294967296", (0, 0)),
    ("1.3.\u0666", (0, 0)),  # a non-ASCII digit
])
def test_protocol_oids(dotted: str, expected: tuple[int, ...]) -> None:
    view = build(channel(1, protocol=dotted), associations=(association(1, 1, protocol=dotted),))
    assert group_value(view, 24, 1) == Value(Kind.OBJECT_IDENTIFIER, expected)
    assert view.get((*ASSOC, 3, APPL_INDEX, 1)) == Value(Kind.OBJECT_IDENTIFIER, expected)


# --- GETBULK -------------------------------------------------------------------------------------


def bulk_by_the_rfc(view: View, oids: list[tuple[int, ...]], non_repeaters: int,
                    max_repetitions: int) -> list[tuple[tuple[int, ...], Value | None]]:
    """RFC 3416 §4.2.3 spelled out with GETNEXT, including its leave to stop after a round
    in which every repeater is at endOfMibView."""
    n = min(max(non_repeaters, 0), len(oids))
    m = max(max_repetitions, 0)
    out: list[tuple[tuple[int, ...], Value | None]] = []
    for oid in oids[:n]:
        step = view.get_next(oid)
        out.append(step if step is not None else (oid, None))
    last = oids[n:]
    for _ in range(m if last else 0):
        round_ = []
        for oid in last:
            step = view.get_next(oid)
            round_.append(step if step is not None else (oid, None))
        out += round_
        last = [name for name, _ in round_]
        if all(value is None for _, value in round_):
            break
    return out


FIRST = (*SYSTEM, 1, 0)
LAST = (*GROUP_ASSOC, APPL_INDEX, 5, 11)


@pytest.mark.parametrize(("oids", "non_repeaters", "max_repetitions"), [
    ([], 0, 10),
    ([(1,)], 0, 0),
    ([(1,)], 1, 0),
    ([(1,)], 0, 5),
    ([(1,)], 1, 5),
    ([(1,)], 0, 10_000),  # the whole view, then one round of endOfMibView
    ([(1,), (*MTA,)], 0, 3),
    ([(1,), (*MTA,), (*GROUP, 25)], 1, 4),
    ([(1,), (*MTA,)], 5, 3),  # more non-repeaters than names
    ([(1,), (*MTA,)], -1, -1),
    ([LAST], 0, 3),  # past the end at once
    ([(*GROUP, 25, APPL_INDEX, 3), (1,)], 0, 6),  # one repeater runs out, the other goes on
    ([LAST, (*MTA,)], 1, 2),  # a non-repeater past the end
    ([(9, 9), (8, 8)], 0, 5),
])
def test_get_bulk(oids: list[tuple[int, ...]], non_repeaters: int, max_repetitions: int) -> None:
    assert MIXED.get_bulk(oids, non_repeaters, max_repetitions) == bulk_by_the_rfc(
        MIXED, oids, non_repeaters, max_repetitions)


def test_get_bulk_literal() -> None:
    got = MIXED.get_bulk([(*SYSTEM, 7, 0), (*GROUP_ASSOC, APPL_INDEX, 3), (0,)], 1, 3)
    names = [name for name, _ in got]
    assert names == [
        (*APPL, 2, APPL_INDEX),  # the non-repeater
        (*GROUP_ASSOC, APPL_INDEX, 3, 9), FIRST,
        (*GROUP_ASSOC, APPL_INDEX, 5, 11), (*SYSTEM, 2, 0),
        (*GROUP_ASSOC, APPL_INDEX, 5, 11), (*SYSTEM, 3, 0),  # endOfMibView keeps the last name
    ]
    assert got[5][1] is None
    assert all(value is not None for i, (_, value) in enumerate(got) if i != 5)


def test_get_bulk_stops_after_a_round_all_at_end() -> None:
    got = MIXED.get_bulk([LAST, LAST], 0, 50)
    assert got == [(LAST, None), (LAST, None)]
    whole = MIXED.get_bulk([()], 0, 10**6)
    assert whole == [*MIXED.items, (LAST, None)]


# --- snapshots the tables cannot express ---------------------------------------------------------


@pytest.mark.parametrize("snap", [
    snapshot((channel(1), channel(1))),
    snapshot((channel(0),)),
    snapshot((channel(2**31),)),
    snapshot((channel(1),), (association(1, 2),)),
    snapshot((channel(1),), (association(3, 1), association(3, 1))),
    snapshot((channel(1),), (association(0, 1),)),
    replace(snapshot(), appl_index=0),
], ids=["duplicate channel", "channel 0", "channel 2^31", "association of no channel",
        "duplicate association", "association 0", "applIndex 0"])
def test_build_refuses(snap: Snapshot) -> None:
    with pytest.raises(ValueError):
        View.build(snap, AGENT)



# --- cells that follow the clock ----------------------------------------------------------


def test_clocked_cells_give_the_built_value_at_the_snapshot_instant() -> None:
    """Every clocked cell, evaluated at taken_at, is exactly the value the view holds, and
    only clocked cells differ between a view and the same snapshot an hour later."""
    busy = channel(1, Direction.BOTH, oldest_stored_at=NOW - 120.0, stored_messages=1,
                   last_inbound_activity=NOW - 5.0, next_retry_at=NOW + 7200.0)
    idle = channel(2, Direction.IN)
    view = build(busy, idle)
    later = build(busy, idle, taken_at=NOW + 3600.5)
    positions = {position for position, _, _ in view.clocked}
    # sysUpTime, and busy's columns 12, 17 and 23; busy never had outbound activity (18).
    assert len(positions) == len(view.clocked) == 4
    for position, clock, reference in view.clocked:
        oid, value = view.items[position]
        assert clock_value(clock, reference, NOW) == value.value, oid
        assert clock_value(clock, reference, NOW + 3600.5) == later.items[position][1].value
    assert view.items[min(positions)][0] == (*SYSTEM, 3, 0)
    changed = {i for i, (a, b) in enumerate(zip(view.items, later.items, strict=True))
               if a != b}
    assert changed == positions  # every clocked cell moved in an hour; nothing else did
