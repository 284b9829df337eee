"""The MIB view: one `Snapshot` turned into the sorted table of instances an SNMP agent serves.

Pure: no sockets, no pysnmp. `View.build(snapshot, agent)` lays every instance out once, in
SNMP lexicographic order (which is Python's tuple order), and `get` / `get_next` / `get_bulk`
answer by bisecting that list, so a request costs O(log n) and a whole walk agrees with itself:
it is one snapshot. The OIDs and column data live in `agent.oids`; this module holds the rules
that turn stored values into served ones, each written once:

* **Counter32**: the exact count mod 2^32. **Gauge32**: min(value, 2^32-1).
* **Volumes** are K-octets of 1024 octets, rounded up: ceil(octets / 1024), so a queue that
  holds anything never shows 0 K. The rounding is applied to the exact octet total, and the
  result is then wrapped (Counter32) or capped (Gauge32).
* **TimeInterval** (mtaGroupTable 12, 17, 18, 23): hundredths of a second, rounded down,
  clamped to 0..2147483647 (about 248.5 days). 12 mtaGroupOldestMessageStored = now minus the
  time the oldest queued message entered this channel's queue; 17/18 = now minus the last
  inbound/outbound activity; 23 mtaGroupScheduledRetry = the time *until* the next attempt
  (RFC 2789's reading), 0 once it is due. When there is nothing to measure (empty queue, never
  active, no retry scheduled) the value is 0; RFC 1566 leaves that case open. A time in the
  future for 12/17/18 (clock skew) also gives 0.
* **TimeStamp** (applUptime, applLastChange, applLastInbound/OutboundActivity, assocDuration):
  the sysUpTime at the event, floor((t - started_at) * 100) mod 2^32; 0 when the event came
  before the agent started or never happened. An event later than the snapshot counts as at the
  snapshot, so a TimeStamp never exceeds the sysUpTime served beside it.
* **sysUpTime** is the TimeStamp of the snapshot's own instant. "Now" is always
  `snapshot.taken_at`: the view is a still picture, and time moves only by building a new one.
* **DisplayString**: ASCII, every character outside 0x20..0x7E (controls and all non-ASCII)
  replaced by '?', cut at 255 octets.
* **Reason strings** (mtaGroup 21/22): None (no attempt since the counters began) is 'never';
  "" (the last attempt succeeded, RFC 1566) is the empty string; anything else a DisplayString.
* **OIDs** come from dotted strings; one that does not parse is served as zeroDotZero (0.0).
* **Absent columns**: a channel that does not use a side (`Direction.IN` / `OUT`) has no
  instance of that side's columns (`agent.oids.Side`); `get` says noSuchInstance and
  `get_next` skips them.
* **applTable** describes the one MTA: associations and their accumulated, rejected and failed
  counts are sums over the channels (wrapped after summing), the last activities are the latest
  over the channels; applUptime and applLastChange are the TimeStamp of `restarted_at`;
  applOperStatus is up(1); applDirectoryName is "".

`get` answers noSuchInstance for any OID under an object type this view serves (a scalar's or
column's OID) that has no such instance, and noSuchObject for everything else, as Net-SNMP does.
`get_bulk` follows RFC 3416 §4.2.3 and uses its leave to stop after the first repetition in
which every repeater has reached endOfMibView.

`build` raises ValueError for a snapshot the tables cannot express: an index outside
1..2147483647, two channels or associations with one index, an association of no channel.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any, overload

from agent.oids import (
    ALL_COLUMNS,
    APPL_COLUMNS,
    ASSOC_COLUMNS,
    MTA_COLUMNS,
    MTA_GROUP_ASSOCIATION_COLUMNS,
    MTA_GROUP_COLUMNS,
    SCALAR_INSTANCE,
    SYSTEM_SCALARS,
    ZERO_DOT_ZERO,
    ApplOperStatus,
    AssocApplicationType,
    Column,
    Kind,
    Oid,
    Side,
    parse_oid,
)
from counters.snapshot import AssociationSnapshot, ChannelSnapshot, RemoteKind, Snapshot

__all__ = [
    "AgentInfo",
    "Clock",
    "Kind",
    "Missing",
    "Oid",
    "Value",
    "View",
    "clock_value",
    "counter32",
    "display_string",
    "gauge32",
    "kilo_octets",
    "oid_value",
    "reason_string",
    "time_interval",
    "time_stamp",
]

Raw = int | bytes | Oid

COUNTER32_MODULUS = 2**32
GAUGE32_MAX = 2**32 - 1
TIMETICKS_MODULUS = 2**32
TIME_INTERVAL_MAX = 2**31 - 1
INDEX_MAX = 2**31 - 1
DISPLAY_STRING_MAX = 255
OCTETS_PER_KILO = 1024
NEVER = b"never"


@dataclass(frozen=True, slots=True)
class Value:
    """A served value: int for INTEGER/COUNTER32/GAUGE32/TIMETICKS, bytes for OCTET_STRING,
    an Oid for OBJECT_IDENTIFIER."""

    kind: Kind
    value: int | bytes | Oid


class Missing(Enum):
    """Why a GET found no value (SNMPv2 exceptions; v1 maps both to noSuchName)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the agent knows that the store does not."""

    started_at: float  # wall time the agent started (sysUpTime 0)
    sys_descr: str
    sys_object_id: Oid
    sys_contact: str
    sys_name: str
    sys_location: str
    sys_services: int = 72  # applications (64) + end-to-end (8)


# --- the rules ---------------------------------------------------------------------------------


def counter32(count: int) -> int:
    """Counter32: the count mod 2^32."""
    return count % COUNTER32_MODULUS


def gauge32(level: int) -> int:
    """Gauge32: the level, stuck at 2^32-1 above it (and at 0 below 0)."""
    if level < 0:
        return 0
    return level if level <= GAUGE32_MAX else GAUGE32_MAX


def kilo_octets(octets: int) -> int:
    """ceil(octets / 1024), exactly."""
    return -(-octets // OCTETS_PER_KILO)


def time_interval(seconds: float) -> int:
    """TimeInterval: hundredths of a second, rounded down, clamped to 0..2147483647."""
    ticks = seconds * 100
    if not ticks > 0:  # negative, zero or NaN
        return 0
    if ticks >= TIME_INTERVAL_MAX:
        return TIME_INTERVAL_MAX
    return int(ticks)


def time_stamp(event: float | None, started_at: float, now: float) -> int:
    """TimeStamp: sysUpTime when `event` happened; 0 if never or before the agent started."""
    if event is None:
        return 0
    ticks = (min(event, now) - started_at) * 100
    return int(ticks) % TIMETICKS_MODULUS if ticks > 0 else 0


class Clock(Enum):
    """How a cell's value follows the clock (see `View.clocked`)."""

    SINCE = "TimeInterval since the reference time"
    UNTIL = "TimeInterval until the reference time"
    UPTIME = "TimeTicks since the reference time (sysUpTime)"


def clock_value(clock: Clock, reference: float, now: float) -> int:
    """The value at `now` of a cell that follows the clock from `reference`."""
    if clock is Clock.SINCE:
        return time_interval(now - reference)
    if clock is Clock.UNTIL:
        return time_interval(reference - now)
    return time_stamp(now, reference, now)


_PRINTABLE = bytes(b if 0x20 <= b <= 0x7E else ord("?") for b in range(256))


def display_string(text: str) -> bytes:
    """DisplayString: printable ASCII ('?' for anything else), at most 255 octets."""
    return text[:DISPLAY_STRING_MAX].encode("ascii", "replace").translate(_PRINTABLE)


def reason_string(reason: str | None) -> bytes:
    """mtaGroupInboundRejectionReason / OutboundConnectFailureReason: None is 'never'."""
    return NEVER if reason is None else display_string(reason)


@lru_cache(maxsize=1024)
def oid_value(dotted: str) -> Oid:
    """A dotted OID string as served; zeroDotZero if it does not parse."""
    try:
        return parse_oid(dotted)
    except ValueError:
        return ZERO_DOT_ZERO


_ASSOC_TYPE: Mapping[tuple[bool, RemoteKind], AssocApplicationType] = {
    # (inbound, remote kind): inbound means the remote initiated, outbound that it responded.
    (True, RemoteKind.UA): AssocApplicationType.UA_INITIATOR,
    (True, RemoteKind.PEER): AssocApplicationType.PEER_INITIATOR,
    (False, RemoteKind.UA): AssocApplicationType.UA_RESPONDER,
    (False, RemoteKind.PEER): AssocApplicationType.PEER_RESPONDER,
}


class _Rule(Enum):
    COUNTER = "counter32"
    GAUGE = "gauge32"
    COUNTER_KILO = "counter32 of K-octets"
    GAUGE_KILO = "gauge32 of K-octets"
    SINCE = "TimeInterval since"
    UNTIL = "TimeInterval until"
    REASON = "reason string"
    DISPLAY = "DisplayString"
    OID = "OID"


def _rules(now: float) -> dict[_Rule, Callable[[Any], Raw]]:
    def since(t: float | None) -> int:
        return 0 if t is None else time_interval(now - t)

    def until(t: float | None) -> int:
        return 0 if t is None else time_interval(t - now)

    return {
        _Rule.COUNTER: counter32,
        _Rule.GAUGE: gauge32,
        _Rule.COUNTER_KILO: lambda octets: counter32(kilo_octets(octets)),
        _Rule.GAUGE_KILO: lambda octets: gauge32(kilo_octets(octets)),
        _Rule.SINCE: since,
        _Rule.UNTIL: until,
        _Rule.REASON: reason_string,
        _Rule.DISPLAY: display_string,
        _Rule.OID: oid_value,
    }


#: mtaTable column → (MtaTotals attribute, rule).
MTA_SOURCES: Mapping[str, tuple[str, _Rule]] = {
    "mtaReceivedMessages": ("received_messages", _Rule.COUNTER),
    "mtaStoredMessages": ("stored_messages", _Rule.GAUGE),
    "mtaTransmittedMessages": ("transmitted_messages", _Rule.COUNTER),
    "mtaReceivedVolume": ("received_octets", _Rule.COUNTER_KILO),
    "mtaStoredVolume": ("stored_octets", _Rule.GAUGE_KILO),
    "mtaTransmittedVolume": ("transmitted_octets", _Rule.COUNTER_KILO),
    "mtaReceivedRecipients": ("received_recipients", _Rule.COUNTER),
    "mtaStoredRecipients": ("stored_recipients", _Rule.GAUGE),
    "mtaTransmittedRecipients": ("transmitted_recipients", _Rule.COUNTER),
}

#: mtaGroupTable column → (ChannelSnapshot attribute, rule).
MTA_GROUP_SOURCES: Mapping[str, tuple[str, _Rule]] = {
    "mtaGroupReceivedMessages": ("received_messages", _Rule.COUNTER),
    "mtaGroupRejectedMessages": ("rejected_messages", _Rule.COUNTER),
    "mtaGroupStoredMessages": ("stored_messages", _Rule.GAUGE),
    "mtaGroupTransmittedMessages": ("transmitted_messages", _Rule.COUNTER),
    "mtaGroupReceivedVolume": ("received_octets", _Rule.COUNTER_KILO),
    "mtaGroupStoredVolume": ("stored_octets", _Rule.GAUGE_KILO),
    "mtaGroupTransmittedVolume": ("transmitted_octets", _Rule.COUNTER_KILO),
    "mtaGroupReceivedRecipients": ("received_recipients", _Rule.COUNTER),
    "mtaGroupStoredRecipients": ("stored_recipients", _Rule.GAUGE),
    "mtaGroupTransmittedRecipients": ("transmitted_recipients", _Rule.COUNTER),
    "mtaGroupOldestMessageStored": ("oldest_stored_at", _Rule.SINCE),
    "mtaGroupInboundAssociations": ("inbound_associations", _Rule.GAUGE),
    "mtaGroupOutboundAssociations": ("outbound_associations", _Rule.GAUGE),
    "mtaGroupAccumulatedInboundAssociations": ("accumulated_inbound_associations", _Rule.COUNTER),
    "mtaGroupAccumulatedOutboundAssociations": (
        "accumulated_outbound_associations", _Rule.COUNTER),
    "mtaGroupLastInboundActivity": ("last_inbound_activity", _Rule.SINCE),
    "mtaGroupLastOutboundActivity": ("last_outbound_activity", _Rule.SINCE),
    "mtaGroupRejectedInboundAssociations": ("rejected_inbound_associations", _Rule.COUNTER),
    "mtaGroupFailedOutboundAssociations": ("failed_outbound_associations", _Rule.COUNTER),
    "mtaGroupInboundRejectionReason": ("inbound_rejection_reason", _Rule.REASON),
    "mtaGroupOutboundConnectFailureReason": ("outbound_failure_reason", _Rule.REASON),
    "mtaGroupScheduledRetry": ("next_retry_at", _Rule.UNTIL),
    "mtaGroupMailProtocol": ("protocol", _Rule.OID),
    "mtaGroupName": ("name", _Rule.DISPLAY),
}


# --- the view ----------------------------------------------------------------------------------

_CLOCKS = {_Rule.SINCE: Clock.SINCE, _Rule.UNTIL: Clock.UNTIL}
#: The system scalars come first in every view, so sysUpTime.0's position is fixed.
_SYS_UPTIME_POSITION = [c.name for c in SYSTEM_SCALARS].index("sysUpTime")

#: Object types this view serves, for telling noSuchInstance from noSuchObject.
_OBJECT_TYPES = frozenset(c.oid for c in ALL_COLUMNS)
_OBJECT_TYPE_LENGTHS = tuple(sorted({len(oid) for oid in _OBJECT_TYPES}))


def _missing(oid: Oid) -> Missing:
    for length in _OBJECT_TYPE_LENGTHS:
        if oid[:length] in _OBJECT_TYPES:
            return Missing.NO_SUCH_INSTANCE
    return Missing.NO_SUCH_OBJECT


class View:
    """Every served instance of one snapshot, sorted; see the module docstring for the rules.

    Immutable once built, so one view can serve any number of requests (and threads) while the
    next is built beside it. Cells are kept as parallel lists (OID, kind, raw value); a `Value`
    is made only when a request asks for one.
    """

    __slots__ = ("_items", "_kinds", "_live_lengths", "_live_types", "_oids", "_raw", "clocked",
                 "live")

    def __init__(self, oids: list[Oid], kinds: list[Kind], raw: list[Raw],
                 clocked: Sequence[tuple[int, Clock, float]] = (),
                 live: Sequence[tuple[int, str]] = ()) -> None:
        """Internal: the parallel lists, already sorted and unique. Use `View.build`."""
        self._oids = oids
        self._kinds = kinds
        self._raw = raw
        self._items = _Items(oids, kinds, raw)
        #: The cells whose value depends on the moment they are read — sysUpTime and the
        #: TimeInterval columns with something to measure — as (position, clock, reference
        #: time): `clock_value(clock, reference, now)` is the value at `now`. The view itself
        #: serves them at `taken_at`; a server that keeps one view for many requests uses this
        #: to serve them at the request's own moment.
        self.clocked = tuple(clocked)
        #: The cells whose value lives outside the snapshot (the agent's own statistics,
        #: `agent.oids.AGENT_SCALARS`), as (position, object name): the view holds a
        #: placeholder (0 or b""); `at(now, live)` reads the real values.
        self.live = tuple(live)
        self._live_types = frozenset(oids[i][:-1] for i, _ in self.live)
        self._live_lengths = tuple(sorted({len(t) for t in self._live_types}))

    @classmethod
    def build(cls, snapshot: Snapshot, agent: AgentInfo,
              live: Sequence[Column] = ()) -> View:
        """The view of `snapshot` at `snapshot.taken_at`, with placeholders for the `live`
        scalars (instance .0 of each; served by `at`)."""
        now = snapshot.taken_at
        started = agent.started_at
        appl = snapshot.appl_index
        channels = sorted(snapshot.channels, key=_index)
        associations = sorted(snapshot.associations, key=_index)
        _check_indexes(appl, channels, associations)

        rules = _rules(now)
        out = _Builder()
        clocked: list[tuple[int, Clock, float]] = [
            (_SYS_UPTIME_POSITION, Clock.UPTIME, started)]

        # The tables are laid out in OID order (system < application < mta), each column after
        # the one before and rows in index order, so the lists come out sorted as built.
        out.row(SYSTEM_SCALARS, SCALAR_INSTANCE, {
            "sysDescr": display_string(agent.sys_descr),
            "sysObjectID": agent.sys_object_id,
            "sysUpTime": time_stamp(now, started, now),
            "sysContact": display_string(agent.sys_contact),
            "sysName": display_string(agent.sys_name),
            "sysLocation": display_string(agent.sys_location),
            "sysServices": agent.sys_services,
        })

        def stamp(t: float | None) -> int:
            return time_stamp(t, started, now)

        def total(attribute: str) -> int:
            return sum(map(attrgetter(attribute), channels))

        def latest(attribute: str) -> float | None:
            times = [t for t in map(attrgetter(attribute), channels) if t is not None]
            return max(times, default=None)

        out.row(APPL_COLUMNS, (appl,), {
            "applName": display_string(snapshot.appl_name),
            "applDirectoryName": b"",
            "applVersion": display_string(snapshot.appl_version),
            "applUptime": stamp(snapshot.restarted_at),
            "applOperStatus": ApplOperStatus.UP.value,
            "applLastChange": stamp(snapshot.restarted_at),
            "applInboundAssociations": gauge32(total("inbound_associations")),
            "applOutboundAssociations": gauge32(total("outbound_associations")),
            "applAccumulatedInboundAssociations": counter32(
                total("accumulated_inbound_associations")),
            "applAccumulatedOutboundAssociations": counter32(
                total("accumulated_outbound_associations")),
            "applLastInboundActivity": stamp(latest("last_inbound_activity")),
            "applLastOutboundActivity": stamp(latest("last_outbound_activity")),
            "applRejectedInboundAssociations": counter32(total("rejected_inbound_associations")),
            "applFailedOutboundAssociations": counter32(total("failed_outbound_associations")),
        })

        assoc_rows = [(appl, a.index) for a in associations]
        assoc_values: dict[str, Callable[[AssociationSnapshot], Raw]] = {
            "assocRemoteApplication": lambda a: display_string(a.remote),
            "assocApplicationProtocol": lambda a: oid_value(a.protocol),
            "assocApplicationType": lambda a: _ASSOC_TYPE[a.inbound, a.remote_kind].value,
            "assocDuration": lambda a: stamp(a.opened_at),
        }
        for column in ASSOC_COLUMNS:
            out.column(column, assoc_rows, list(map(assoc_values[column.name], associations)))

        out.row(MTA_COLUMNS, (appl,), {
            name: rules[rule](getattr(snapshot.mta, attribute))
            for name, (attribute, rule) in MTA_SOURCES.items()
        })

        sides = {
            Side.ALWAYS: channels,
            Side.INBOUND: [c for c in channels if c.direction.inbound],
            Side.OUTBOUND: [c for c in channels if c.direction.outbound],
        }
        side_rows = {side: [(appl, c.index) for c in rows] for side, rows in sides.items()}
        for column in MTA_GROUP_COLUMNS:
            attribute, rule = MTA_GROUP_SOURCES[column.name]
            sources = list(map(attrgetter(attribute), sides[column.side]))
            clock = _CLOCKS.get(rule)
            if clock is not None:
                first = len(out.oids)
                clocked += [(first + k, clock, t) for k, t in enumerate(sources) if t is not None]
            out.column(column, side_rows[column.side], list(map(rules[rule], sources)))

        by_group = sorted(associations, key=attrgetter("channel_index", "index"))
        (group_association_index,) = MTA_GROUP_ASSOCIATION_COLUMNS
        out.column(group_association_index,
                   [(appl, a.channel_index, a.index) for a in by_group],
                   [a.index for a in by_group])

        if not live:
            return cls(out.oids, out.kinds, out.raw, clocked)
        return _with_live(out, clocked, live)

    def cells(self) -> tuple[Sequence[Oid], Sequence[Kind], Sequence[Raw]]:
        """The parallel lists behind `items` (OIDs, kinds, raw values), for code that walks
        every cell and wants no `Value` objects made: read them, never change them."""
        return self._oids, self._kinds, self._raw

    def at(self, now: float, live: LiveReader | None = None) -> View:
        """This view as read at `now`: the clocked cells re-evaluated, the live ones read from
        `live` (left as placeholders without it), everything else shared."""
        if not self.clocked and (live is None or not self.live):
            return self
        raw = list(self._raw)
        for position, clock, reference in self.clocked:
            raw[position] = clock_value(clock, reference, now)
        if live is not None:
            for position, name in self.live:
                raw[position] = live(name)
        return View(self._oids, self._kinds, raw, self.clocked, self.live)

    def missing(self, oid: Oid) -> Missing:
        """Why `oid`, which is not an instance of this view, has no value."""
        for length in self._live_lengths:
            if oid[:length] in self._live_types:
                return Missing.NO_SUCH_INSTANCE
        return _missing(oid)

    def get(self, oid: Oid) -> Value | Missing:
        """The value of instance `oid`, or why there is none."""
        i = bisect_left(self._oids, oid)
        if i < len(self._oids) and self._oids[i] == oid:
            return Value(self._kinds[i], self._raw[i])
        return self.missing(oid)

    def get_next(self, oid: Oid) -> tuple[Oid, Value] | None:
        """The first instance after `oid`; None at the end of the view (endOfMibView)."""
        i = bisect_right(self._oids, oid)
        if i < len(self._oids):
            return self._oids[i], Value(self._kinds[i], self._raw[i])
        return None

    def get_bulk(self, oids: Sequence[Oid], non_repeaters: int,
                 max_repetitions: int) -> list[tuple[Oid, Value | None]]:
        """GETBULK (RFC 3416 §4.2.3): a GETNEXT for each of the first `non_repeaters` names,
        then up to `max_repetitions` rounds of GETNEXT along each remaining name.

        A None value is endOfMibView, named with the name asked about (for a repeater: the one
        its previous round returned). Stops after the first round in which every repeater is at
        the end, as §4.2.3 allows. The caller trims to the message size.
        """
        n = min(max(non_repeaters, 0), len(oids))
        m = max(max_repetitions, 0)
        end = len(self._oids)
        out: list[tuple[Oid, Value | None]] = []
        for oid in oids[:n]:
            step = self.get_next(oid)
            out.append(step if step is not None else (oid, None))
        names = list(oids[n:])
        if not names or m == 0:
            return out
        # GETNEXT of an instance in the view is the one after it, so each repeater bisects once
        # and then walks its position forward.
        positions = [bisect_right(self._oids, oid) for oid in names]
        for _ in range(m):
            at_end = True
            for j, i in enumerate(positions):
                if i < end:
                    names[j] = self._oids[i]
                    out.append((names[j], Value(self._kinds[i], self._raw[i])))
                    positions[j] = i + 1
                    at_end = False
                else:
                    out.append((names[j], None))
            if at_end:
                break
        return out

    def __len__(self) -> int:
        return len(self._oids)

    @property
    def items(self) -> Sequence[tuple[Oid, Value]]:
        """Every (instance, value), in lexicographic order."""
        return self._items


class _Items(Sequence[tuple[Oid, Value]]):
    """The view's cells as (Oid, Value) pairs, made on access."""

    __slots__ = ("_kinds", "_oids", "_raw")

    def __init__(self, oids: list[Oid], kinds: list[Kind], raw: list[Raw]) -> None:
        self._oids = oids
        self._kinds = kinds
        self._raw = raw

    def __len__(self) -> int:
        return len(self._oids)

    @overload
    def __getitem__(self, index: int) -> tuple[Oid, Value]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[Oid, Value]]: ...

    def __getitem__(self, index: int | slice) -> tuple[Oid, Value] | list[tuple[Oid, Value]]:
        if isinstance(index, slice):
            return list(zip(self._oids[index], map(Value, self._kinds[index], self._raw[index]),
                            strict=True))
        return self._oids[index], Value(self._kinds[index], self._raw[index])

    def __iter__(self) -> Iterator[tuple[Oid, Value]]:
        return zip(self._oids, map(Value, self._kinds, self._raw), strict=True)


class _Builder:
    """The three parallel lists of a view, filled one column at a time."""

    __slots__ = ("kinds", "oids", "raw")

    def __init__(self) -> None:
        self.oids: list[Oid] = []
        self.kinds: list[Kind] = []
        self.raw: list[Raw] = []

    def column(self, column: Column, rows: Sequence[Oid], values: list[Raw]) -> None:
        """The instances `column.oid + row` with `values`, rows in index order."""
        if len(rows) != len(values):
            raise AssertionError(f"{column.name}: {len(rows)} rows, {len(values)} values")
        prefix = column.oid
        self.oids += [prefix + row for row in rows]
        self.kinds += repeat(column.kind, len(rows))
        self.raw += values

    def row(self, columns: Sequence[Column], row: Oid, values: Mapping[str, Raw]) -> None:
        """One instance of each of `columns` (a single-row table, or scalars with row .0)."""
        if values.keys() != {c.name for c in columns}:
            raise AssertionError(f"values {sorted(values)} for {[c.name for c in columns]}")
        for column in columns:
            self.column(column, (row,), [values[column.name]])


_index = attrgetter("index")

#: Reads a live scalar's current value by its object name (`View.at`).
LiveReader = Callable[[str], Raw]

_PLACEHOLDER: dict[Kind, Raw] = {Kind.OCTET_STRING: b"", Kind.OBJECT_IDENTIFIER: ZERO_DOT_ZERO}


def _with_live(out: _Builder, clocked: list[tuple[int, Clock, float]],
               live: Sequence[Column]) -> View:
    """The built lists with one placeholder instance (.0) of each live scalar merged in at its
    place in OID order; clocked positions follow their cells."""
    scalars = sorted(live, key=attrgetter("oid"))
    oids, kinds, raw = out.oids, out.kinds, out.raw
    names = [(*c.oid, 0) for c in scalars]
    at = [bisect_left(oids, name) for name in names]
    for name, i in zip(names, at, strict=True):
        if i < len(oids) and oids[i] == name:
            raise AssertionError(f"live scalar {name} is also a snapshot cell")
    new_oids: list[Oid] = []
    new_kinds: list[Kind] = []
    new_raw: list[Raw] = []
    positions: list[tuple[int, str]] = []
    start = 0
    for column, name, i in zip(scalars, names, at, strict=True):
        new_oids += oids[start:i]
        new_kinds += kinds[start:i]
        new_raw += raw[start:i]
        start = i
        positions.append((len(new_oids), column.name))
        new_oids.append(name)
        new_kinds.append(column.kind)
        new_raw.append(_PLACEHOLDER.get(column.kind, 0))
    new_oids += oids[start:]
    new_kinds += kinds[start:]
    new_raw += raw[start:]
    moved = [(p + bisect_right(at, p), clock, t) for p, clock, t in clocked]
    return View(new_oids, new_kinds, new_raw, moved, positions)


def _check_indexes(appl_index: int, channels: Sequence[ChannelSnapshot],
                   associations: Sequence[AssociationSnapshot]) -> None:
    """Refuse what the tables cannot express. `channels`/`associations` are sorted by index."""

    def in_range(index: int) -> bool:
        return 1 <= index <= INDEX_MAX

    if not in_range(appl_index):
        raise ValueError(f"applIndex {appl_index} is outside 1..{INDEX_MAX}")
    for what, rows in (("channel", channels), ("association", associations)):
        indexes = [row.index for row in rows]
        if indexes and not (in_range(indexes[0]) and in_range(indexes[-1])):
            raise ValueError(f"a {what} index is outside 1..{INDEX_MAX}")
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"two {what}s share an index")
    groups = {c.index for c in channels}
    for a in associations:
        if a.channel_index not in groups:
            raise ValueError(f"association {a.index} belongs to no channel ({a.channel_index})")
