"""Make the stored values equal to what Postfix really holds (`postqueue -j`).

The log says what happened; the queue says what is. After a restart, a lost log, or a follower
started on a server that already had mail queued, the stored messages can differ from the
queue: `reconcile()` sets them from a `postqueue -j` listing, counting nothing (received and
transmitted stay what the log said).

For each queued message, its pending recipients are put in the channel the feed last stored
each one in (by address, as `to=` or `orig_to=`), or else in the channel it came in by, or
`queue` if the log never showed it; size and arrival time (its age) come from the listing.
Messages stored but no longer queued leave the store. Queue ids the follower touched after the
listing began are left alone: the log is newer than the listing there.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from counters.errors import BadEvent
from counters.feed import QUEUE, SOURCE, Message, ensure_channel, save_message
from counters.store import Store

#: A stored enqueue time within this many seconds of the queue's arrival time is left as it is
#: (the log's times are whole seconds, taken a moment after the queue file's).
AGE_SLACK = 2.0


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One message of `postqueue -j`: id, arrival (seconds since the epoch), size, and the
    recipients still to be delivered."""

    queue_id: str
    arrival_time: float
    size: int
    recipients: tuple[str, ...]


@dataclass
class SyncReport:
    """What `reconcile` changed (message ids, sorted)."""

    queued: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.queued} queued; {len(self.added)} added, {len(self.changed)} changed,"
                f" {len(self.removed)} removed, {len(self.skipped)} left to the follower")


def parse_postqueue(lines: Iterable[str]) -> list[QueuedMessage]:
    """`postqueue -j` output (one JSON object per line) → messages; BadEvent if malformed."""
    messages = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            messages.append(QueuedMessage(
                str(item["queue_id"]), float(item["arrival_time"]), int(item["message_size"]),
                tuple(str(r["address"]) for r in item.get("recipients", ()))))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadEvent(f"postqueue -j output line {number} is not a queue entry:"
                           f" {exc!s:.100}") from None
    return messages


def run_postqueue(command: Sequence[str]) -> list[QueuedMessage]:
    """Run `command` (e.g. ['postqueue', '-j']) and parse its output; BadEvent on failure."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadEvent(f"cannot run {' '.join(command)}: {exc}") from None
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:200]
        raise BadEvent(f"{' '.join(command)} exited {proc.returncode}: {detail}")
    return parse_postqueue(proc.stdout.splitlines())


def _channel_of(message: Message | None, address: str) -> str | None:
    if message is None:
        return None
    for identity, (channel, to, orig) in message.recipients.items():
        if address in (identity, to, orig):
            return str(channel) if channel is not None else None
    return message.source if message.received else None


def reconcile(store: Store, listing: Sequence[QueuedMessage], *,
              started_at: float) -> SyncReport:
    """Set the stored messages from `listing` (taken at wall time `started_at`) in one
    transaction; see the module docstring."""
    report = SyncReport(queued=len(listing))
    with store.batch():
        states = store.follower_states(SOURCE, "q:")
        tombstones = store.follower_states(SOURCE, "x:")
        entries: dict[str, dict[str, tuple[float, int, int]]] = {}
        for entry in store.queue_entries():
            entries.setdefault(entry.message_id, {})[entry.channel] = (
                entry.enqueued_at, entry.octets, entry.recipients)
        fresh = {key[2:] for key, (_, written) in [*states.items(), *tombstones.items()]
                 if written >= started_at}
        store.forget_follower_states(SOURCE, "x:", before=started_at)
        queued = {item.queue_id: item for item in listing}
        for queue_id in sorted(set(entries) - set(queued)):
            if queue_id in fresh:
                report.skipped.append(queue_id)
                continue
            for channel in entries[queue_id]:
                store.remove(channel, queue_id)
            report.removed.append(queue_id)
        for key in states:
            queue_id = key[2:]
            if queue_id not in queued and queue_id not in fresh:
                save_message(store, queue_id, None)
        for queue_id, item in sorted(queued.items()):
            if queue_id in fresh:
                report.skipped.append(queue_id)
                continue
            state = states.get("q:" + queue_id)
            message = Message.loads(state[0]) if state else None
            wanted: dict[str, int] = {}
            for address in item.recipients:
                channel = _channel_of(message, address) or QUEUE
                wanted[channel] = wanted.get(channel, 0) + 1
            have = entries.get(queue_id, {})
            if have.keys() == wanted.keys() and all(
                    (octets, recipients) == (item.size, wanted[channel])
                    and abs(enqueued - item.arrival_time) <= AGE_SLACK
                    for channel, (enqueued, octets, recipients) in have.items()):
                continue
            target = {channel: (item.arrival_time, item.size, count)
                      for channel, count in wanted.items()}
            for channel in have:
                if channel not in target:
                    store.set_stored(channel, queue_id, octets=0, recipients=0,
                                     enqueued_at=item.arrival_time)
            for channel, (arrival, size, count) in target.items():
                if channel == QUEUE:
                    ensure_channel(store, QUEUE, "qmgr")
                store.set_stored(channel, queue_id, octets=size, recipients=count,
                                 enqueued_at=arrival)
            if message is None:
                message = Message(source=QUEUE, received=True, size=item.size,
                                  arrived=item.arrival_time)
                save_message(store, queue_id, message)
            (report.changed if have else report.added).append(queue_id)
    return report
