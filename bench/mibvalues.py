"""A counters `Snapshot` as the RFC 1566 cells under 1.3.6.1.2.1.28, written independently of
`agent/` (the benchmark checks mailmib against it, so it must not share mailmib's code).

Used to generate the native snmpd's `add_row` lines (server B) and by the pass_persist script
(server C). The rules are the ones README.md documents for mailmib: Counter32 wraps, Gauge32
stops at 2^32-1, volumes are ceil(octets / 1024), TimeIntervals are hundredths of a second
clamped to 0..2^31-1 (0 when there is nothing to measure), reasons are 'never' before the first
attempt, and a channel has no cells for the side (inbound / outbound) it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from counters.snapshot import ChannelSnapshot, Snapshot

Oid = tuple[int, ...]

MTA: Oid = (1, 3, 6, 1, 2, 1, 28)
MTA_ENTRY: Oid = (*MTA, 1, 1)
GROUP_ENTRY: Oid = (*MTA, 2, 1)
ASSOC_ENTRY: Oid = (*MTA, 3, 1)

# BER tags, also the kinds the pass_persist protocol and add_row understand.
INTEGER, OCTET_STRING, OBJECT_IDENTIFIER, COUNTER32, GAUGE32 = 0x02, 0x04, 0x06, 0x41, 0x42

C32 = 2**32
TI_MAX = 2**31 - 1

IN, OUT, ALWAYS = "in", "out", "always"

# mtaTable column -> (MtaTotals attribute, kind, volume?)
MTA_COLUMNS: dict[int, tuple[str, int, bool]] = {
    1: ("received_messages", COUNTER32, False),
    2: ("stored_messages", GAUGE32, False),
    3: ("transmitted_messages", COUNTER32, False),
    4: ("received_octets", COUNTER32, True),
    5: ("stored_octets", GAUGE32, True),
    6: ("transmitted_octets", COUNTER32, True),
    7: ("received_recipients", COUNTER32, False),
    8: ("stored_recipients", GAUGE32, False),
    9: ("transmitted_recipients", COUNTER32, False),
}

# mtaGroupTable column -> (ChannelSnapshot attribute, rule, side). Rules: c (Counter32),
# g (Gauge32), ck / gk (of K-octets), since / until (TimeInterval), reason, text, oid.
GROUP_COLUMNS: dict[int, tuple[str, str, str]] = {
    2: ("received_messages", "c", IN),
    3: ("rejected_messages", "c", IN),
    4: ("stored_messages", "g", ALWAYS),
    5: ("transmitted_messages", "c", OUT),
    6: ("received_octets", "ck", IN),
    7: ("stored_octets", "gk", ALWAYS),
    8: ("transmitted_octets", "ck", OUT),
    9: ("received_recipients", "c", IN),
    10: ("stored_recipients", "g", ALWAYS),
    11: ("transmitted_recipients", "c", OUT),
    12: ("oldest_stored_at", "since", ALWAYS),
    13: ("inbound_associations", "g", IN),
    14: ("outbound_associations", "g", OUT),
    15: ("accumulated_inbound_associations", "c", IN),
    16: ("accumulated_outbound_associations", "c", OUT),
    17: ("last_inbound_activity", "since", IN),
    18: ("last_outbound_activity", "since", OUT),
    19: ("rejected_inbound_associations", "c", IN),
    20: ("failed_outbound_associations", "c", OUT),
    21: ("inbound_rejection_reason", "reason", IN),
    22: ("outbound_failure_reason", "reason", OUT),
    23: ("next_retry_at", "until", OUT),
    24: ("protocol", "oid", ALWAYS),
    25: ("name", "text", ALWAYS),
}

#: Columns whose value moves with the clock (compared by type only between servers).
TIME_COLUMNS = frozenset(c for c, (_, rule, _) in GROUP_COLUMNS.items()
                         if rule in ("since", "until"))

_KIND = {"c": COUNTER32, "g": GAUGE32, "ck": COUNTER32, "gk": GAUGE32, "since": INTEGER,
         "until": INTEGER, "reason": OCTET_STRING, "text": OCTET_STRING,
         "oid": OBJECT_IDENTIFIER}

Value = int | bytes | Oid


@dataclass(frozen=True, slots=True)
class Cell:
    oid: Oid
    kind: int
    value: Value


def _kilo(octets: int) -> int:
    return -(-octets // 1024)


def _gauge(n: int) -> int:
    return 0 if n < 0 else min(n, C32 - 1)


def _interval(seconds: float) -> int:
    ticks = seconds * 100
    if not ticks > 0:
        return 0
    return TI_MAX if ticks >= TI_MAX else int(ticks)


def _text(text: str) -> bytes:
    return bytes(b if 0x20 <= b <= 0x7E else 0x3F
                 for b in text[:255].encode("ascii", "replace"))


def _oid(dotted: str) -> Oid:
    try:
        arcs = tuple(int(a) for a in dotted.strip().strip(".").split("."))
    except ValueError:
        return (0, 0)
    return arcs if len(arcs) >= 2 else (0, 0)


def _convert(rule: str, raw: object, now: float) -> Value:
    if rule in ("c", "g", "ck", "gk"):
        assert isinstance(raw, int)
        amount = _kilo(raw) if rule.endswith("k") else raw
        return amount % C32 if rule.startswith("c") else _gauge(amount)
    if rule in ("since", "until"):
        if raw is None:
            return 0
        assert isinstance(raw, int | float)
        return _interval(now - raw if rule == "since" else raw - now)
    if rule == "reason":
        return b"never" if raw is None else _text(str(raw))
    if rule == "text":
        return _text(str(raw))
    return _oid(str(raw))


def has_side(channel: ChannelSnapshot, side: str) -> bool:
    direction = str(channel.direction)
    return side == ALWAYS or direction == "both" or direction == side


def group_row(channel: ChannelSnapshot, now: float, *, all_columns: bool = False
              ) -> list[tuple[int, int, Value]]:
    """(column, kind, value) of one mtaGroupTable row; with `all_columns` also the cells of
    the side the channel does not use (what a table that cannot leave a cell out serves)."""
    row = []
    for column, (attribute, rule, side) in GROUP_COLUMNS.items():
        if all_columns or has_side(channel, side):
            row.append((column, _KIND[rule], _convert(rule, getattr(channel, attribute), now)))
    return row


def mta_row(snapshot: Snapshot) -> list[tuple[int, int, Value]]:
    mta = snapshot.mta
    row = []
    for column, (attribute, kind, volume) in MTA_COLUMNS.items():
        raw = getattr(mta, attribute)
        if volume:
            raw = _kilo(raw)
        row.append((column, kind, raw % C32 if kind == COUNTER32 else _gauge(raw)))
    return row


def cells(snapshot: Snapshot, now: float | None = None, *, all_columns: bool = False
          ) -> list[Cell]:
    """Every cell under 1.3.6.1.2.1.28, sorted by OID, as served at `now` (default: the
    snapshot's instant)."""
    when = snapshot.taken_at if now is None else now
    appl = snapshot.appl_index
    out = [Cell((*MTA_ENTRY, column, appl), kind, value)
           for column, kind, value in mta_row(snapshot)]
    by_column: dict[int, list[Cell]] = {}
    for channel in sorted(snapshot.channels, key=lambda c: c.index):
        for column, kind, value in group_row(channel, when, all_columns=all_columns):
            by_column.setdefault(column, []).append(
                Cell((*GROUP_ENTRY, column, appl, channel.index), kind, value))
    for column in sorted(by_column):
        out.extend(by_column[column])
    for assoc in sorted(snapshot.associations, key=lambda a: (a.channel_index, a.index)):
        out.append(Cell((*ASSOC_ENTRY, 1, appl, assoc.channel_index, assoc.index), INTEGER,
                        assoc.index))
    return out


def absent_cells(snapshot: Snapshot) -> int:
    """How many mtaGroupTable cells mailmib leaves out (the side a channel does not use)."""
    per_side = {side: sum(1 for _, _, s in GROUP_COLUMNS.values() if s == side)
                for side in (IN, OUT)}
    missing = 0
    for channel in snapshot.channels:
        direction = str(channel.direction)
        if direction == IN:
            missing += per_side[OUT]
        elif direction == OUT:
            missing += per_side[IN]
    return missing


def is_time_cell(oid: Oid) -> bool:
    """True for the mtaGroupTable TimeInterval cells, whose value moves with the clock."""
    return oid[:len(GROUP_ENTRY)] == GROUP_ENTRY and oid[len(GROUP_ENTRY)] in TIME_COLUMNS


def same_value(a: Cell | tuple[int, object], b: Cell | tuple[int, object],
               oid: Oid, *, tolerance_ticks: int) -> bool:
    """Equal kind and value; clock-driven cells may differ by `tolerance_ticks`."""
    ka, va = (a.kind, a.value) if isinstance(a, Cell) else a
    kb, vb = (b.kind, b.value) if isinstance(b, Cell) else b
    if ka != kb:
        return False
    if is_time_cell(oid) and isinstance(va, int) and isinstance(vb, int):
        return abs(va - vb) <= tolerance_ticks or va == vb == TI_MAX
    return va == vb
