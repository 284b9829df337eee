"""Rendering a `Snapshot` for people and pipelines: text (PMDF-style), JSON and CSV.

Pure functions of a snapshot — no clock, no database — so the layout is tested on snapshots
built by hand. "Now" is always the snapshot's `taken_at`, which makes ages reproducible.

Text shows volume in kilo-octets (1 K = 1024 octets, rounded up), the same figure the agent
serves; JSON and CSV keep the exact octets, because a pipeline can divide but not un-round.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from counters.errors import CountersError
from counters.snapshot import ChannelSnapshot, Snapshot

#: Octets in one kilo-octet, as RFC 1566 counts volume.
K_OCTET = 1024

#: Names of the table's columns, left to right, as the header row shows them.
COLUMNS = ("Messages", "Recipients", "Volume")
LABEL_HEADER = "Channel"
INDENT = "  "
GAP = "  "


def kilo_octets(octets: int) -> int:
    """Octets as whole kilo-octets, rounded up: 0 -> 0, 1 -> 1, 1024 -> 1, 1025 -> 2."""
    return -(-octets // K_OCTET)


def iso_time(when: float | None) -> str | None:
    """A wall-clock time as ISO-8601 UTC ('…Z'), microseconds kept when there are any."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, tz=UTC).isoformat().replace("+00:00", "Z")


def _short_time(when: float) -> str:
    """A wall-clock time to the second, for the text view."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_age_seconds(channel: ChannelSnapshot, taken_at: float) -> float | None:
    """How long the channel's oldest queued message has waited at `taken_at` (never < 0)."""
    if channel.oldest_stored_at is None:
        return None
    return _age(channel.oldest_stored_at, taken_at)


def _age(since: float, now: float) -> float:
    """Seconds from `since` to `now`; a clock that stepped back gives 0, not a negative age."""
    return max(0.0, now - since)


def format_age(seconds: float) -> str:
    """A duration in its two largest units: '45s', '12m05s', '3h02m', '2d04h'."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def select(snapshot: Snapshot, patterns: Sequence[str]) -> Snapshot:
    """The snapshot narrowed to channels matching any pattern (all when none), with their
    associations. A pattern is a channel name or a shell glob, matched case-sensitively like
    channel names are compared. The MTA totals stay whole: they describe the MTA, not the
    selection. A pattern matching nothing is an error, so a typo is not an empty table.
    """
    if not patterns:
        return snapshot
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pattern) for c in snapshot.channels):
            raise CountersError(f"no channel matches {pattern!r}")
    channels = tuple(
        c for c in snapshot.channels if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)
    )
    kept = {c.index for c in channels}
    associations = tuple(a for a in snapshot.associations if a.channel_index in kept)
    return dataclasses.replace(snapshot, channels=channels, associations=associations)


# --- text --------------------------------------------------------------------------------

_Row = tuple[str, tuple[int | None, ...]]  # (label, one value per column, None = blank)


def _reason(reason: str | None) -> str:
    """A reason as the MIB means it: never tried, last attempt fine, or the quoted text."""
    if reason is None:
        return "never"
    if reason == "":
        return "ok"
    return json.dumps(reason)


def _traffic(label: str, messages: int, recipients: int, octets: int) -> _Row:
    return (INDENT + label, (messages, recipients, kilo_octets(octets)))


def _channel_block(channel: ChannelSnapshot, snapshot: Snapshot) -> list[_Row | str]:
    """The lines of one channel: its name, its table rows, then free-text detail lines."""
    c = channel
    lines: list[_Row | str] = [c.name]
    if c.direction.inbound:
        lines.append(_traffic("Received", c.received_messages, c.received_recipients,
                              c.received_octets))
    lines.append(_traffic("Stored", c.stored_messages, c.stored_recipients, c.stored_octets))
    if c.direction.outbound:
        lines.append(_traffic("Transmitted", c.transmitted_messages, c.transmitted_recipients,
                              c.transmitted_octets))
    if c.direction.inbound:
        lines.append((INDENT + "Rejected", (c.rejected_messages, None, None)))
        lines.append(f"{INDENT}Last rejection  {_reason(c.last_message_rejection_reason)}")
        activity = c.last_inbound_activity
        lines.append(
            f"{INDENT}Inbound associations  open {c.inbound_associations}"
            f"  total {c.accumulated_inbound_associations}"
            f"  rejected {c.rejected_inbound_associations}"
            f"  last activity {_short_time(activity) if activity is not None else 'never'}"
            f"  last reason {_reason(c.inbound_rejection_reason)}"
        )
    if c.direction.outbound:
        activity = c.last_outbound_activity
        retry = c.next_retry_at
        lines.append(
            f"{INDENT}Outbound associations  open {c.outbound_associations}"
            f"  total {c.accumulated_outbound_associations}"
            f"  failed {c.failed_outbound_associations}"
            f"  last activity {_short_time(activity) if activity is not None else 'never'}"
            f"  next retry {_short_time(retry) if retry is not None else 'none'}"
            f"  last reason {_reason(c.outbound_failure_reason)}"
        )
    oldest = c.oldest_stored_at
    if oldest is None:
        lines.append(f"{INDENT}Oldest stored  none")
    else:
        age = format_age(_age(oldest, snapshot.taken_at))
        lines.append(f"{INDENT}Oldest stored  {age} (since {_short_time(oldest)})")
    return lines


def _mta_block(snapshot: Snapshot) -> list[_Row | str]:
    m = snapshot.mta
    title = " ".join(part for part in ("MTA", snapshot.appl_name, snapshot.appl_version) if part)
    return [
        f"{title} (each message counted once)",
        _traffic("Received", m.received_messages, m.received_recipients, m.received_octets),
        _traffic("Stored", m.stored_messages, m.stored_recipients, m.stored_octets),
        _traffic("Transmitted", m.transmitted_messages, m.transmitted_recipients,
                 m.transmitted_octets),
        f"{INDENT}Counting since {_short_time(snapshot.restarted_at)}"
        f", shown at {_short_time(snapshot.taken_at)}",
    ]


def render_text(snapshot: Snapshot) -> str:
    """The PMDF-style table: a header row, one block per channel, then the MTA block.

    Table rows share one layout: a label column wide enough for every row label, then each
    number right-aligned so that a column's numbers (and its heading) end at one position.
    Channel names and detail lines are free text and may run past the columns.
    """
    blocks = [_channel_block(c, snapshot) for c in snapshot.channels]
    blocks.append(_mta_block(snapshot))
    rows = [line for block in blocks for line in block if not isinstance(line, str)]
    label_width = max([len(LABEL_HEADER), *(len(label) for label, _ in rows)])
    widths = [
        max([len(heading), *(len(str(v[i])) for _, v in rows if v[i] is not None)])
        for i, heading in enumerate(COLUMNS)
    ]

    def table_line(label: str, cells: Sequence[str]) -> str:
        body = GAP.join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        return f"{label.ljust(label_width)}{GAP}{body}".rstrip()

    out = [table_line(LABEL_HEADER, COLUMNS)]
    for block in blocks:
        for line in block:
            if isinstance(line, str):
                out.append(line)
            else:
                label, values = line
                out.append(table_line(label, ["" if v is None else str(v) for v in values]))
        out.append("")
    return "\n".join(out)


# --- JSON and CSV ------------------------------------------------------------------------

#: ChannelSnapshot fields holding wall-clock times (rendered as ISO-8601 strings).
_TIME_FIELDS = frozenset(
    {"created_at", "oldest_stored_at", "last_inbound_activity", "last_outbound_activity",
     "next_retry_at"}
)


def channel_record(channel: ChannelSnapshot, taken_at: float) -> dict[str, Any]:
    """Every field of the channel as a JSON-ready value, plus `stored_age_seconds`."""
    record: dict[str, Any] = {}
    for field in dataclasses.fields(channel):
        value = getattr(channel, field.name)
        record[field.name] = iso_time(value) if field.name in _TIME_FIELDS else value
    record["direction"] = str(channel.direction)
    record["stored_age_seconds"] = stored_age_seconds(channel, taken_at)
    return record


def to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as plain JSON values: MTA totals, channels, associations."""
    names = {c.index: c.name for c in snapshot.channels}
    associations = []
    for assoc in snapshot.associations:
        record = dataclasses.asdict(assoc)
        record["remote_kind"] = str(assoc.remote_kind)
        record["opened_at"] = iso_time(assoc.opened_at)
        record["channel"] = names.get(assoc.channel_index)
        associations.append(record)
    return {
        "taken_at": iso_time(snapshot.taken_at),
        "restarted_at": iso_time(snapshot.restarted_at),
        "database_id": snapshot.database_id,
        "appl_index": snapshot.appl_index,
        "appl_name": snapshot.appl_name,
        "appl_version": snapshot.appl_version,
        "mta": dataclasses.asdict(snapshot.mta),
        "channels": [channel_record(c, snapshot.taken_at) for c in snapshot.channels],
        "associations": associations,
    }


def render_json(snapshot: Snapshot) -> str:
    """One JSON object (see `to_dict`), indented, ending in a newline."""
    return json.dumps(to_dict(snapshot), indent=2) + "\n"


#: The CSV header: the channel fields in declaration order, then the computed age.
CSV_FIELDS = (*(f.name for f in dataclasses.fields(ChannelSnapshot)), "stored_age_seconds")


def render_csv(snapshot: Snapshot) -> str:
    """One row per channel under a header of field names; None is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for channel in snapshot.channels:
        writer.writerow(channel_record(channel, snapshot.taken_at))
    return buffer.getvalue()


RENDERERS: dict[str, Callable[[Snapshot], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
}
