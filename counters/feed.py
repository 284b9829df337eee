"""Postfix's log records → store events: the mapping, and what it must remember to do it.

`PostfixFeed.apply(lines)` runs inside the follower's `Store.batch()`; each line is parsed by
`counters.postfix` and applied in its own savepoint, so a line the store refuses changes
nothing and the rest go on. What the feed must remember between lines (which channel a queue
id came in by, where each recipient is stored, which channels already counted a copy) is kept
in the store's `follower_state`, in the same transaction as the events: a crash loses or
repeats nothing, and `counters sync postfix` can read it.

The mapping, in short (README, "Feeding it from Postfix", has the table and the reasons):
- smtpd `connect from` / `disconnect from`: an inbound association opened / closed;
  `NOQUEUE: reject:` at CONNECT/HELO/EHLO refuses the association, at RCPT/MAIL/DATA it
  rejects a message (as do `QID: reject: DATA|END-OF-MESSAGE` and cleanup's content rejects).
- qmgr's first `from=<…>, size=N, nrcpt=M` of a queue id: the message is received into the
  channel it came in by (the smtpd service of its `client=` line, pickup for `uid=`,
  `internal` for mail Postfix made itself); first seen only there, it is stored in `queue`
  without being counted as received (it arrived before the log that was read).
- `to=<…>, relay=…, status=…`: at a recipient's first attempt by a transport it is transferred
  to that service's channel; `sent` transmits it (the first recipient of a message in a
  channel counts the message, later ones add recipients); `bounced` takes it off the queue
  untransmitted; `deferred` leaves it stored there. smtp/lmtp deliveries over a new connection
  (a relay host, no `conn_use`) count an outbound association.
- smtp/lmtp `connect to HOST: reason`: a failed outbound association with that reason.
- `QID: removed` (qmgr, postsuper): the message leaves every channel still holding it.
- master `daemon started -- version V`: applName postfix, applVersion V.
- master `terminating on signal`: every live association is closed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from counters import postfix
from counters.errors import CountersError, DatabaseError, UnknownAssociation
from counters.snapshot import SMTP_PROTOCOL, Direction
from counters.store import Store

#: The name the feed's positions, line counts and state are kept under.
SOURCE = "postfix"

#: Channel of messages Postfix made itself (bounce and delay notices, forwarded copies).
INTERNAL = "internal"
#: Channel of messages whose arrival the log did not show (found queued later, or by sync).
QUEUE = "queue"

#: How long the feed remembers that it saw a queue id removed (for `counters sync`).
TOMBSTONE_SECONDS = 3600.0

#: mtaGroupMailProtocol of channels that speak no network protocol (zeroDotZero).
NO_PROTOCOL = "0.0"

#: Inbound stages at which a refusal refuses the session rather than a message.
SESSION_STAGES = frozenset({"CONNECT", "EHLO", "HELO", "STARTTLS", "AUTH"})
#: Delivery statuses after which a recipient leaves the queue untransmitted.
DROPPED = frozenset({"bounced", "expired", "undeliverable", "deliverable"})

_INBOUND_PROCESSES = {"smtpd": SMTP_PROTOCOL, "pickup": NO_PROTOCOL}
_OUTBOUND_PROTOCOLS = {"smtp": SMTP_PROTOCOL, "lmtp": SMTP_PROTOCOL}


@dataclass
class Message:
    """What the feed knows of one queue id (saved as JSON under `q:QUEUEID`)."""

    source: str | None = None       # the channel it came in by, once known
    session: str | None = None      # smtpd[pid] that opened it (to forget dropped ones)
    accepted: bool = False          # cleanup took its content (message-id=)
    received: bool = False          # stored: received (or adopted) into `source`
    size: int = 0
    arrived: float | None = None    # log time of its arrival (its age in every channel)
    #: recipient identity -> [channel it is stored in, to, orig_to]
    recipients: dict[str, list[Any]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)      # identities delivered or dropped
    copies: list[str] = field(default_factory=list)    # channels that counted a copy

    def dumps(self) -> str:
        return json.dumps([self.source, self.session, self.accepted, self.received,
                           self.size, self.arrived, self.recipients, self.done, self.copies],
                          separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Message:
        values = json.loads(text)
        return cls(*values)


def load_message(store: Store, queue_id: str) -> Message | None:
    text = store.follower_state(SOURCE, "q:" + queue_id)
    return None if text is None else Message.loads(text)


def save_message(store: Store, queue_id: str, message: Message | None) -> None:
    store.set_follower_state(SOURCE, "q:" + queue_id,
                             None if message is None else message.dumps())


def ensure_channel(store: Store, name: str, process: str) -> str:
    """The channel for a service run by `process`, created with the direction it implies."""
    if process in _INBOUND_PROCESSES:
        store.ensure_channel(name, direction=Direction.IN, protocol=_INBOUND_PROCESSES[process])
    elif name in (INTERNAL, QUEUE):
        store.ensure_channel(name, direction=Direction.IN, protocol=NO_PROTOCOL)
    else:
        store.ensure_channel(name, direction=Direction.OUT,
                             protocol=_OUTBOUND_PROTOCOLS.get(process, NO_PROTOCOL))
    return name


def forget_stored(store: Store, queue_id: str, at: float | None) -> None:
    """Take the queue id out of every channel still holding it (counting nothing)."""
    for entry in store.queue_entries(queue_id):
        store.remove(entry.channel, queue_id, at=at)


class PostfixFeed:
    """Applies Postfix log lines to a store; one per follower. `now` gives the reference time
    for year-less timestamps (tests pin it)."""

    def __init__(self, store: Store, *, now: Any = time.time) -> None:
        self.store = store
        self._now = now
        self._pruned = 0.0

    # --- the follower's entry point ------------------------------------------------------

    def apply(self, lines: Sequence[bytes]) -> None:
        """Apply lines (without their newlines); call inside `store.batch()`."""
        counts: dict[str, list[Any]] = {}
        now = self._now()
        for raw in lines:
            if len(raw) > postfix.MAX_LINE:
                record: postfix.Record = postfix.Unparsed("oversized", None, "", "", None)
                text = raw[:200].decode("utf-8", "replace")
            else:
                text = raw.decode("utf-8", "replace")
                record = postfix.parse(text, now=now)
            mapped = False
            refused = None
            try:
                with self.store.batch():
                    mapped = self.record(record)
            except DatabaseError:
                raise  # the database failed, not the line: the follower retries the batch
            except CountersError as exc:
                refused = str(exc)
            entry = counts.setdefault(record.kind, [mapped, 0, text])
            entry[0], entry[1], entry[2] = mapped, entry[1] + 1, text
            if refused is not None:
                entry = counts.setdefault(f"refused: {record.kind}", [False, 0, refused])
                entry[1] += 1
                entry[2] = f"{refused} <- {text}"
        for kind, (mapped, number, sample) in counts.items():
            self.store.count_lines(SOURCE, kind[:255], mapped=mapped, lines=number,
                                   sample=sample)
        wall = time.time()
        if wall - self._pruned > TOMBSTONE_SECONDS / 4:
            self.store.forget_follower_states(SOURCE, "x:", before=wall - TOMBSTONE_SECONDS)
            self._pruned = wall

    # --- one record ----------------------------------------------------------------------

    def record(self, record: postfix.Record) -> bool:
        """Apply one record; whether its kind is mapped to events."""
        handler = _HANDLERS.get(type(record))
        if handler is None:
            return False
        return bool(handler(self, record))

    def _connect(self, record: postfix.Connect) -> bool:
        channel = ensure_channel(self.store, record.service, record.process)
        key = f"{record.service}[{record.pid}]"
        with contextlib.suppress(UnknownAssociation):  # its end was lost
            self.store.close_association(channel, key=key, at=record.at)
        self.store.open_inbound(channel, remote=record.remote, key=key, at=record.at)
        return True

    def _disconnect(self, record: postfix.Disconnect) -> bool:
        channel = ensure_channel(self.store, record.service, record.process)
        key = f"{record.service}[{record.pid}]"
        with contextlib.suppress(UnknownAssociation):
            self.store.close_association(channel, key=key, at=record.at)
        # Queue files this session opened that never became messages (RSET, dropped).
        session = self.store.follower_state(SOURCE, "s:" + key)
        if session is not None:
            for queue_id in json.loads(session):
                message = load_message(self.store, queue_id)
                if message is not None and message.session == key and not message.accepted:
                    save_message(self.store, queue_id, None)
            self.store.set_follower_state(SOURCE, "s:" + key, None)
        return True

    def _reject(self, record: postfix.Reject) -> bool:
        reason = record.reason
        if record.process == "cleanup":
            message = load_message(self.store, record.queue_id or "")
            if message is None or message.source is None:
                return False
            channel = message.source
            save_message(self.store, record.queue_id or "", None)
            self.store.reject(channel, reason=reason, at=record.at)
            return True
        channel = ensure_channel(self.store, record.service, record.process)
        if record.stage in SESSION_STAGES:
            self.store.refuse_inbound(channel, reason=reason, at=record.at)
            return True
        if record.queue_id is not None and record.stage in ("RCPT", "MAIL"):
            return False  # one recipient refused; the message goes on with the others
        if record.queue_id is not None:
            save_message(self.store, record.queue_id, None)
        self.store.reject(channel, reason=reason, at=record.at)
        return True

    def _new_message(self, queue_id: str, source: str, session: str | None,
                     at: float | None) -> None:
        """A queue file was opened: whatever the id meant before is gone from the queue."""
        if load_message(self.store, queue_id) is not None:
            forget_stored(self.store, queue_id, at)
        save_message(self.store, queue_id, Message(source=source, session=session))

    def _client(self, record: postfix.Client) -> bool:
        channel = ensure_channel(self.store, record.service, record.process)
        key = f"{record.service}[{record.pid}]"
        self._new_message(record.queue_id, channel, key, record.at)
        session = self.store.follower_state(SOURCE, "s:" + key)
        ids = json.loads(session) if session else []
        ids.append(record.queue_id)
        self.store.set_follower_state(SOURCE, "s:" + key, json.dumps(ids[-100:]))
        return True

    def _pickup(self, record: postfix.Pickup) -> bool:
        channel = ensure_channel(self.store, record.service, record.process)
        self._new_message(record.queue_id, channel, None, record.at)
        return True

    def _message_id(self, record: postfix.MessageId) -> bool:
        message = load_message(self.store, record.queue_id) or Message()
        message.accepted = True
        save_message(self.store, record.queue_id, message)
        return True

    def _queued(self, record: postfix.Queued) -> bool:
        queue_id = record.queue_id
        message = load_message(self.store, queue_id)
        if message is not None and message.received:
            save_message(self.store, queue_id, message)  # a retry: only note it was seen
            return True
        if message is None or (message.source is None and not message.accepted):
            # First seen on a qmgr line: it arrived before the log we read. Store it (its
            # nrcpt may count recipients delivered earlier: sync corrects that) but do not
            # count it as received now.
            message = message or Message()
            message.source = ensure_channel(self.store, QUEUE, "qmgr")
            forget_stored(self.store, queue_id, record.at)
            self.store.set_stored(QUEUE, queue_id, octets=record.size,
                                  recipients=record.nrcpt,
                                  enqueued_at=record.at if record.at is not None
                                  else self._now())
        else:
            if message.source is None:
                message.source = ensure_channel(self.store, INTERNAL, "cleanup")
            forget_stored(self.store, queue_id, record.at)
            self.store.receive(message.source, queue_id, octets=record.size,
                               recipients=record.nrcpt, at=record.at)
        message.received = True
        message.size = record.size
        message.arrived = record.at
        save_message(self.store, queue_id, message)
        return True

    def _delivery(self, record: postfix.Delivery) -> bool:
        store = self.store
        queue_id = record.queue_id
        message = load_message(store, queue_id) or Message()
        identity = (record.orig_recipient if record.process == "local" and
                    record.orig_recipient else record.recipient)
        if identity in message.done:
            save_message(store, queue_id, message)
            return True
        known = message.recipients.get(identity)
        holder: str | None = known[0] if known else (
            message.source if message.received else None)
        channel: str | None
        if record.process in ("error", "retry"):
            # qmgr's stand-in for a throttled or failed destination: not an attempt by a
            # transport; the recipient stays where it is.
            channel = known[0] if known else None
        else:
            channel = ensure_channel(store, record.service, record.process)
            if known is None and holder is not None and holder != channel:
                try:
                    store.transfer(holder, channel, queue_id, recipients=1,
                                   at=message.arrived)
                    holder = channel
                except CountersError:
                    pass  # not stored there (sync or an earlier gap); count what we can
            if known is None:
                message.recipients[identity] = [channel, record.recipient,
                                                record.orig_recipient]
            self._outbound_association(record, channel)
        status = record.status
        if status == "sent":
            deliverer = channel or ensure_channel(store, record.service, record.process)
            self._transmitted(message, queue_id, deliverer, holder, record.at)
            message.done.append(identity)
        elif status in DROPPED:
            if holder is not None:
                with contextlib.suppress(CountersError):
                    store.drop_recipients(holder, queue_id, 1, at=record.at)
            message.done.append(identity)
        elif status != "deferred":
            save_message(store, queue_id, message)
            return False
        save_message(store, queue_id, message)
        return True

    def _transmitted(self, message: Message, queue_id: str, channel: str,
                     holder: str | None, at: float | None) -> None:
        store = self.store
        if channel in message.copies:
            store.transmit_recipients(channel, queue_id, 1, at=at)
        elif holder == channel:
            store.transmit(channel, queue_id, recipients=1, at=at)
            message.copies.append(channel)
        else:
            store.transmit(channel, queue_id, octets=message.size, recipients=1, at=at)
            message.copies.append(channel)
        if holder is not None and holder != channel:
            with contextlib.suppress(CountersError):
                store.drop_recipients(holder, queue_id, 1, at=at)

    def _outbound_association(self, record: postfix.Delivery, channel: str) -> None:
        """smtp/lmtp log no successful connection; a delivery with a relay host and no
        `conn_use` made one. Lines of one delivery request (same process, queue id and relay)
        share it."""
        if record.process not in ("smtp", "lmtp") or record.relay == "none":
            return
        key = f"o:{record.service}[{record.pid}]"
        current = f"{record.queue_id} {record.relay}"
        if self.store.follower_state(SOURCE, key) == current:
            return
        self.store.set_follower_state(SOURCE, key, current)
        if record.conn_use is None:
            index = self.store.open_outbound(channel, remote=record.relay, at=record.at)
            self.store.close_association(channel, index=index, at=record.at)

    def _connect_failed(self, record: postfix.ConnectFailed) -> bool:
        channel = ensure_channel(self.store, record.service, record.process)
        self.store.set_follower_state(SOURCE, f"o:{record.service}[{record.pid}]", None)
        self.store.fail_outbound(channel, reason=record.reason, at=record.at)
        return True

    def _removed(self, record: postfix.Removed) -> bool:
        forget_stored(self.store, record.queue_id, record.at)
        save_message(self.store, record.queue_id, None)
        # A tombstone: tells `counters sync` the log removed it after its listing began.
        self.store.set_follower_state(SOURCE, "x:" + record.queue_id, "")
        return True

    def _master_started(self, record: postfix.MasterStarted) -> bool:
        self.store.set_mta(name="postfix", version=record.version)
        return True

    def _master_stopped(self, record: postfix.MasterStopped) -> bool:
        snapshot = self.store.snapshot()
        names = {channel.index: channel.name for channel in snapshot.channels}
        for association in snapshot.associations:
            self.store.close_association(names[association.channel_index],
                                         index=association.index, at=record.at)
        for key in self.store.follower_states(SOURCE, "s:"):
            self.store.set_follower_state(SOURCE, key, None)
        return True


_HANDLERS: dict[type, Any] = {
    postfix.Connect: PostfixFeed._connect,
    postfix.Disconnect: PostfixFeed._disconnect,
    postfix.Reject: PostfixFeed._reject,
    postfix.Client: PostfixFeed._client,
    postfix.Pickup: PostfixFeed._pickup,
    postfix.MessageId: PostfixFeed._message_id,
    postfix.Queued: PostfixFeed._queued,
    postfix.Delivery: PostfixFeed._delivery,
    postfix.ConnectFailed: PostfixFeed._connect_failed,
    postfix.Removed: PostfixFeed._removed,
    postfix.MasterStarted: PostfixFeed._master_started,
    postfix.MasterStopped: PostfixFeed._master_stopped,
}
