"""The bulk path: events as JSON lines, many per transaction.

Each line is one JSON object naming a `Store` event and its arguments by the Python names:

    {"event": "receive", "channel": "smtpd", "message_id": "4BqZ1", "octets": 5120, "recipients": 2}
    {"event": "transfer", "source": "smtpd", "destination": "smtp", "message_id": "4BqZ1x2y3"}
    {"event": "open_inbound", "channel": "smtpd", "key": "smtpd[4711]", "remote": "192.0.2.9"}

Lines are applied in batches (`Store.batch()`): one commit per batch, which is what makes this
path fast. Every event is still atomic on its own — a line that is not valid JSON, names no
known event, or that the store refuses changes nothing, is reported with its line number, and
the lines around it go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from counters.errors import BadEvent, CountersError
from counters.store import Store

#: The store calls a line may name: every event of the write API, and channel set-up.
EVENTS = frozenset({
    "add_channel", "ensure_channel", "receive", "transmit", "transfer", "remove", "reject",
    "open_inbound", "open_outbound", "close_association", "refuse_inbound", "fail_outbound",
    "schedule_retry", "set_mta",
})


@dataclass
class IngestReport:
    applied: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)


def parse_line(line: str) -> tuple[str, dict[str, Any]]:
    """(event, arguments) of one line; BadEvent if it is not a JSON object naming an event."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadEvent("not a JSON object")
    event = record.pop("event", None)
    if not isinstance(event, str) or event not in EVENTS:
        raise BadEvent(f"unknown event {event!r}: one of {', '.join(sorted(EVENTS))}")
    return event, record


def apply(store: Store, event: str, arguments: dict[str, Any]) -> None:
    """One event; wrong argument names are a BadEvent, not a TypeError."""
    try:
        getattr(store, event)(**arguments)
    except TypeError as exc:
        raise BadEvent(f"{event}: {exc}") from None


def ingest(store: Store, lines: Iterable[str], *, batch_size: int = 1000) -> IngestReport:
    """Apply JSON-line events from `lines` (blank lines skipped), `batch_size` per commit."""
    report = IngestReport()
    numbered: Iterator[tuple[int, str]] = enumerate(lines, start=1)
    while batch := list(islice(numbered, batch_size)):
        with store.batch():
            for number, line in batch:
                if not line.strip():
                    continue
                try:
                    apply(store, *parse_line(line))
                except CountersError as exc:
                    report.failed.append((number, str(exc)))
                else:
                    report.applied += 1
    return report
