"""counters.format: a Snapshot rendered as text, JSON and CSV. Pure: snapshots built by hand."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from datetime import datetime
from typing import Any

import pytest

from counters import (
    SMTP_PROTOCOL,
    AssociationSnapshot,
    ChannelSnapshot,
    CountersError,
    Direction,
    MtaTotals,
    RemoteKind,
    Snapshot,
)
from counters.format import (
    COLUMNS,
    CSV_FIELDS,
    format_age,
    kilo_octets,
    render_csv,
    render_json,
    render_text,
    select,
)

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
TABLE_LABELS = ("Received", "Stored", "Transmitted", "Rejected")


def channel(index: int = 1, name: str = "smtpd", direction: Direction = Direction.BOTH,
            **values: Any) -> ChannelSnapshot:
    """A channel with every counter zero and every time/reason unset, except `values`."""
    fields: dict[str, Any] = {
        f.name: 0 for f in dataclasses.fields(ChannelSnapshot)
        if f.name not in ("index", "name", "protocol", "direction")
    }
    for unset in ("oldest_stored_at", "last_inbound_activity", "last_outbound_activity",
                  "inbound_rejection_reason", "outbound_failure_reason",
                  "last_message_rejection_reason", "next_retry_at"):
        fields[unset] = None
    fields["created_at"] = T0
    fields.update(values)
    return ChannelSnapshot(index=index, name=name, protocol=SMTP_PROTOCOL, direction=direction,
                           **fields)


def snapshot(*channels: ChannelSnapshot, mta: MtaTotals | None = None,
             associations: tuple[AssociationSnapshot, ...] = (),
             taken_at: float = T0 + 3600) -> Snapshot:
    return Snapshot(
        taken_at=taken_at, appl_index=1, appl_name="postfix", appl_version="3.7.11",
        restarted_at=T0, database_id="0123abcd",
        mta=mta or MtaTotals(0, 0, 0, 0, 0, 0, 0, 0, 0),
        channels=channels, associations=associations)


# A small but complete picture: an inbound, an outbound and a two-way channel, with numbers
# of different widths so that alignment is tested, and one live association on each side.
SMTPD = channel(1, "smtpd", Direction.IN, received_messages=1234, received_octets=1025,
                received_recipients=7, rejected_messages=3, stored_messages=2,
                stored_octets=1, stored_recipients=2, oldest_stored_at=T0 + 3600 - 3723,
                inbound_associations=1, accumulated_inbound_associations=56,
                rejected_inbound_associations=4, last_inbound_activity=T0 + 60,
                inbound_rejection_reason="421 too busy",
                last_message_rejection_reason="554 5.7.1 Relay access denied")
SMTP = channel(2, "smtp", Direction.OUT, transmitted_messages=9, transmitted_octets=2048,
               transmitted_recipients=100000, stored_messages=1, stored_octets=1024,
               stored_recipients=1, oldest_stored_at=T0 + 3000, outbound_associations=1,
               accumulated_outbound_associations=12, failed_outbound_associations=2,
               last_outbound_activity=T0 + 120, outbound_failure_reason="",
               next_retry_at=T0 + 7200)
LOCAL = channel(3, "local", Direction.BOTH, received_messages=5, received_octets=0,
                received_recipients=5, transmitted_messages=5, transmitted_octets=0,
                transmitted_recipients=5)
MTA = MtaTotals(received_messages=1239, received_octets=1025, received_recipients=12,
                stored_messages=3, stored_octets=1025, stored_recipients=3,
                transmitted_messages=14, transmitted_octets=2048,
                transmitted_recipients=100005)
ASSOCIATIONS = (
    AssociationSnapshot(7, 1, True, "mx.example.org", RemoteKind.PEER, SMTP_PROTOCOL, T0 + 60),
    AssociationSnapshot(8, 2, False, "mx.example.net", RemoteKind.UA, SMTP_PROTOCOL, T0 + 120),
)
FULL = snapshot(SMTPD, SMTP, LOCAL, mta=MTA, associations=ASSOCIATIONS)


def blocks(text: str) -> dict[str, list[str]]:
    """The text view's blocks by their first line (channel name or MTA title), header apart."""
    lines = text.splitlines()
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines[1:]:
        if not line:
            current = []
        elif not current and not line.startswith(" "):
            current = result.setdefault(line, [])
        else:
            current.append(line)
    return result


def table_row(block: list[str], label: str) -> list[int]:
    """The numbers of the block's table row `label`."""
    for line in block:
        words = line.split()
        if words and words[0] == label and len(words) >= 2 and words[1].isdigit():
            return [int(w) for w in words[1:] if w.isdigit()]
    raise AssertionError(f"no {label!r} row in {block!r}")


def labels(block: list[str]) -> list[str]:
    return [line.split()[0] for line in block]


# --- kilo-octets and ages ----------------------------------------------------------------------


@pytest.mark.parametrize(("octets", "expected"), [
    (0, 0), (1, 1), (1023, 1), (1024, 1), (1025, 2), (2048, 2), (2049, 3),
    (2**32 * 1024 + 1, 2**32 + 1),
])
def test_kilo_octets_round_up(octets: int, expected: int) -> None:
    assert kilo_octets(octets) == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"),
    (3723, "1h02m"), (86399, "23h59m"), (86400, "1d00h"), (2 * 86400 + 4 * 3600 + 5, "2d04h"),
])
def test_format_age(seconds: float, expected: str) -> None:
    assert format_age(seconds) == expected


# --- text --------------------------------------------------------------------------------------


def test_text_header_row() -> None:
    header = render_text(FULL).splitlines()[0]
    assert header.split() == ["Channel", *COLUMNS]
    assert header.startswith("Channel ")


def test_text_numbers_end_at_their_heading() -> None:
    """Every number of a column ends where the column's heading ends (right alignment)."""
    lines = render_text(FULL).splitlines()
    header = lines[0]
    ends = [header.index(heading) + len(heading) for heading in COLUMNS]
    rows = [line for line in lines
            if line.startswith("  ") and line.split()[0] in TABLE_LABELS
            and line.split()[1].isdigit()]
    assert len(rows) == 3 + 2 + 4 + 3  # smtpd R/S/Rej, smtp S/T, local R/S/T/Rej, MTA R/S/T
    for line in rows:
        numbers = list(re.finditer(r"\d+", line))
        width = 1 if line.split()[0] == "Rejected" else len(COLUMNS)
        assert [m.end() for m in numbers] == ends[:width], (line, header)


def test_text_rows_follow_the_channels_direction() -> None:
    shown = blocks(render_text(FULL))
    assert labels(shown["smtpd"]) == ["Received", "Stored", "Rejected", "Last", "Inbound",
                                      "Oldest"]
    assert labels(shown["smtp"]) == ["Stored", "Transmitted", "Outbound", "Oldest"]
    assert labels(shown["local"]) == ["Received", "Stored", "Transmitted", "Rejected", "Last",
                                      "Inbound", "Outbound", "Oldest"]


def test_text_values_are_the_channels_with_volume_in_k_octets() -> None:
    shown = blocks(render_text(FULL))
    for ch in (SMTPD, SMTP, LOCAL):
        block = shown[ch.name]
        assert table_row(block, "Stored") == [
            ch.stored_messages, ch.stored_recipients, math.ceil(ch.stored_octets / 1024)]
        if ch.direction.inbound:
            assert table_row(block, "Received") == [
                ch.received_messages, ch.received_recipients,
                math.ceil(ch.received_octets / 1024)]
            assert table_row(block, "Rejected") == [ch.rejected_messages]
        if ch.direction.outbound:
            assert table_row(block, "Transmitted") == [
                ch.transmitted_messages, ch.transmitted_recipients,
                math.ceil(ch.transmitted_octets / 1024)]


def test_text_mta_block() -> None:
    shown = blocks(render_text(FULL))
    title = f"MTA {FULL.appl_name} {FULL.appl_version} (each message counted once)"
    block = shown[title]
    for side in ("received", "stored", "transmitted"):
        values = [getattr(MTA, f"{side}_{what}") for what in ("messages", "recipients")]
        octets = getattr(MTA, f"{side}_octets")
        assert table_row(block, side.capitalize()) == [*values, -(-octets // 1024)]
    assert block[-1] == ("  Counting since 2024-05-01T12:00:00Z,"
                         " shown at 2024-05-01T13:00:00Z")


def test_text_association_lines() -> None:
    shown = blocks(render_text(FULL))
    inbound = next(line for line in shown["smtpd"] if line.startswith("  Inbound"))
    assert inbound == (
        f"  Inbound associations  open {SMTPD.inbound_associations}"
        f"  total {SMTPD.accumulated_inbound_associations}"
        f"  rejected {SMTPD.rejected_inbound_associations}"
        "  last activity 2024-05-01T12:01:00Z  last reason \"421 too busy\"")
    outbound = next(line for line in shown["smtp"] if line.startswith("  Outbound"))
    assert outbound == (
        f"  Outbound associations  open {SMTP.outbound_associations}"
        f"  total {SMTP.accumulated_outbound_associations}"
        f"  failed {SMTP.failed_outbound_associations}"
        "  last activity 2024-05-01T12:02:00Z  next retry 2024-05-01T14:00:00Z"
        "  last reason ok")
    never = next(line for line in shown["local"] if line.startswith("  Outbound"))
    assert never.endswith("last activity never  next retry none  last reason never")
    assert "  Last rejection  \"554 5.7.1 Relay access denied\"" in shown["smtpd"]
    assert "  Last rejection  never" in shown["local"]


def test_text_oldest_stored_age() -> None:
    shown = blocks(render_text(FULL))
    age = format_age(FULL.taken_at - SMTPD.oldest_stored_at)  # type: ignore[operator]
    assert age == "1h02m"
    assert f"  Oldest stored  {age} (since 2024-05-01T11:57:57Z)" in shown["smtpd"]
    assert "  Oldest stored  none" in shown["local"]


def test_text_age_never_negative() -> None:
    ahead = channel(stored_messages=1, stored_octets=1, stored_recipients=1,
                    oldest_stored_at=T0 + 10)
    shown = blocks(render_text(snapshot(ahead, taken_at=T0)))
    assert "  Oldest stored  0s (since 2024-05-01T12:00:10Z)" in shown["smtpd"]


def test_text_long_channel_name_does_not_move_the_columns() -> None:
    short = render_text(snapshot(channel(name="a"))).splitlines()
    long_name = "x" * 200
    long = render_text(snapshot(channel(name=long_name))).splitlines()
    assert long[0] == short[0]
    assert long[1] == long_name
    assert long[2:] == short[2:]


def test_text_wide_numbers_widen_their_column_only() -> None:
    wide = channel(received_messages=10**12)
    header = render_text(snapshot(wide)).splitlines()[0]
    row = next(line for line in render_text(snapshot(wide)).splitlines()
               if line.startswith("  Received"))
    assert row.split()[1:] == [str(10**12), "0", "0"]
    assert row.index(str(10**12)) + len(str(10**12)) == header.index("Messages") + len("Messages")
    assert header.split() == ["Channel", *COLUMNS]


def test_text_with_no_channels_is_header_and_mta() -> None:
    text = render_text(snapshot())
    assert list(blocks(text)) == ["MTA postfix 3.7.11 (each message counted once)"]
    assert text.splitlines()[0].split() == ["Channel", *COLUMNS]
    assert text.endswith("\n") and not text.endswith("\n\n")


# --- JSON --------------------------------------------------------------------------------------


def _time(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


TIME_FIELDS = {"created_at", "oldest_stored_at", "last_inbound_activity",
               "last_outbound_activity", "next_retry_at"}


def test_json_round_trips_every_channel_field() -> None:
    fractional = dataclasses.replace(SMTPD, created_at=T0 + 0.25, oldest_stored_at=T0 + 1.5)
    snap = snapshot(fractional, SMTP, LOCAL, mta=MTA, associations=ASSOCIATIONS)
    data = json.loads(render_json(snap))
    assert [c["name"] for c in data["channels"]] == ["smtpd", "smtp", "local"]
    for original, record in zip(snap.channels, data["channels"], strict=True):
        assert set(record) == {f.name for f in dataclasses.fields(ChannelSnapshot)} | {
            "stored_age_seconds"}
        for field in dataclasses.fields(ChannelSnapshot):
            value = getattr(original, field.name)
            if field.name in TIME_FIELDS:
                assert record[field.name] is None or record[field.name].endswith("Z")
                assert _time(record[field.name]) == value, field.name
            elif field.name == "direction":
                assert Direction(record["direction"]) is value
            else:
                assert record[field.name] == value, field.name
        if original.oldest_stored_at is None:
            assert record["stored_age_seconds"] is None
        else:
            assert record["stored_age_seconds"] == snap.taken_at - original.oldest_stored_at


def test_json_mta_and_associations() -> None:
    data = json.loads(render_json(FULL))
    assert data["mta"] == dataclasses.asdict(MTA)
    assert _time(data["taken_at"]) == FULL.taken_at
    assert _time(data["restarted_at"]) == FULL.restarted_at
    assert (data["appl_name"], data["appl_version"], data["database_id"]) == (
        FULL.appl_name, FULL.appl_version, FULL.database_id)
    names = {c.index: c.name for c in FULL.channels}
    assert len(data["associations"]) == len(ASSOCIATIONS)
    for original, record in zip(ASSOCIATIONS, data["associations"], strict=True):
        assert record["index"] == original.index
        assert record["channel_index"] == original.channel_index
        assert record["channel"] == names[original.channel_index]
        assert record["inbound"] is original.inbound
        assert record["remote"] == original.remote
        assert RemoteKind(record["remote_kind"]) is original.remote_kind
        assert record["protocol"] == original.protocol
        assert _time(record["opened_at"]) == original.opened_at


def test_json_keeps_exact_octets() -> None:
    data = json.loads(render_json(FULL))
    assert data["channels"][0]["received_octets"] == 1025
    assert data["mta"]["stored_octets"] == 1025


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_header_and_one_row_per_channel() -> None:
    text = render_csv(FULL)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [f.name for f in dataclasses.fields(ChannelSnapshot)] + [
        "stored_age_seconds"]
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 1 + len(FULL.channels)
    for original, record in zip(FULL.channels, csv.DictReader(io.StringIO(text)), strict=True):
        for field in dataclasses.fields(ChannelSnapshot):
            value = getattr(original, field.name)
            cell = record[field.name]
            if value is None:
                assert cell == ""
            elif field.name in TIME_FIELDS:
                assert datetime.fromisoformat(cell).timestamp() == value
            else:
                assert cell == str(value), field.name


def test_csv_with_no_channels_is_the_header() -> None:
    assert render_csv(snapshot()) == ",".join(CSV_FIELDS) + "\n"


# --- selecting channels ------------------------------------------------------------------------


def test_select_by_name_and_glob_keeps_index_order() -> None:
    chosen = select(FULL, ["local", "smtp*"])
    assert [c.name for c in chosen.channels] == ["smtpd", "smtp", "local"]
    assert [c.name for c in select(FULL, ["smtp"]).channels] == ["smtp"]
    assert [c.name for c in select(FULL, ["?mtp?"]).channels] == ["smtpd"]


def test_select_keeps_the_channels_associations_and_the_whole_mta() -> None:
    chosen = select(FULL, ["smtp"])
    assert chosen.associations == (ASSOCIATIONS[1],)
    assert chosen.mta == FULL.mta


def test_select_nothing_is_everything() -> None:
    assert select(FULL, []) == FULL


def test_select_is_case_sensitive_and_a_miss_is_an_error() -> None:
    with pytest.raises(CountersError, match="no channel matches 'SMTP'"):
        select(FULL, ["smtp", "SMTP"])
