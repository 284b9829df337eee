"""Postfix's log, line by line: text in, typed records out. No I/O, no store.

One call, `parse(line, now=…)`, turns one log line (syslog's `Mon dd hh:mm:ss host tag[pid]:
text`, RFC 3339 timestamps, or Postfix's own `maillog_file`) into one record. Every record has
a `kind`, a short fixed string such as `smtpd: connect` or `qmgr: removed`, under which the
follower counts it; lines this module does not understand become `Other` (a Postfix line of a
shape not mapped) or `Unparsed` (not a log line at all), never an exception.

Which daemon wrote a line: the syslog tag is `postfix/smtpd`, or with a `syslog_name` per
service (`-o syslog_name=postfix/submission` in master.cf) `postfix/submission/smtpd`. The
*process* is the last part (smtpd); the *service* is the middle part when there is one
(submission), else the process. Channels are named after services.

Log lines carry no year: the year is the one that puts the time closest to `now` without
being more than a day ahead of it (so December lines read in January are last year's).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from datetime import datetime

#: The longest line parsed; longer ones are `Unparsed('oversized')` (Postfix's own lines are
#: far shorter: line_length_limit is 2048 and reasons are cut to a few hundred characters).
MAX_LINE = 16384

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
_QUEUE_ID = r"[0-9A-Za-z]{5,32}"

_SYSLOG = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?P<frac>\.\d{1,9})? (?P<host>\S+) (?P<tag>[^\s\[\]:]{1,64})(?:\[(?P<pid>\d{1,10})\])?: "
    r"(?P<text>.*)")
_RFC3339 = re.compile(
    r"(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) (?P<host>\S+)"
    r" (?P<tag>[^\s\[\]:]{1,64})(?:\[(?P<pid>\d{1,10})\])?: (?P<text>.*)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")

_QID_TEXT = re.compile(rf"(?P<qid>{_QUEUE_ID}): (?P<rest>.*)")
_CONNECT = re.compile(r"connect from (?P<remote>\S+)")
_DISCONNECT = re.compile(r"disconnect from (?P<remote>\S+)(?: (?P<stats>.*))?")
_SESSION_END = re.compile(
    r"(?P<what>lost connection|timeout|too many errors) after (?P<stage>[A-Za-z-]{1,20})"
    r"(?: \([^)]*\))? from (?P<remote>\S+)")
_REJECT = re.compile(
    r"(?P<action>reject|milter-reject|discard|hold|reject_warning|filter|redirect|warn|"
    r"bcc|prepend|info): (?P<stage>[A-Z][A-Z-]{0,19})(?: from (?P<remote>\S+?))?: "
    r"(?P<reason>.*)")
_REJECT_TAIL = re.compile(r"(?P<reason>.*?); from=<(?P<sender>[^>]*)>"
                          r"(?: to=<(?P<recipient>[^>]*)>)?(?: proto=\S+)?(?: helo=<[^>]*>)?")
_CLEANUP_REJECT = re.compile(
    r"(?P<action>reject|milter-reject): (?P<what>[A-Za-z-]{1,20}) .*?"
    r"(?:; from=<[^>]*> to=<[^>]*>(?: proto=\S+)?(?: helo=<[^>]*>)?: (?P<reason>.*))?")
_CLIENT = re.compile(r"client=(?P<remote>[^\s,]+)")
_PICKUP = re.compile(r"uid=(?P<uid>\d+) from=<(?P<sender>[^>]*)>")
_MESSAGE_ID = re.compile(r"message-id=(?P<id>.*)")
_QUEUED = re.compile(r"from=<(?P<sender>.*?)>, size=(?P<size>\d{1,15}), nrcpt=(?P<nrcpt>\d{1,9})"
                     r" \(queue active\)")
_EXPIRED = re.compile(r"from=<(?P<sender>.*?)>, status=(?P<how>expired|force-expired),"
                      r" returned to sender")
_DELIVERY = re.compile(
    r"to=<(?P<to>.*?)>,(?: orig_to=<(?P<orig>.*?)>,)? relay=(?P<relay>[^,]+),"
    r"(?: conn_use=(?P<conn_use>\d+),)? delay=(?P<delay>[\d.]+), delays=[\d./]+,"
    r" dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>[a-z][a-z-]{0,19})"
    r"(?: \((?P<text>.*)\))?")
_STARTED = re.compile(r"daemon started -- version (?P<version>[!-~]{1,64})(?:, .*)?")
_CONNECT_TO = re.compile(r"connect to (?P<host>\S+?): (?P<reason>.+)")
_NOTIFICATION = re.compile(
    rf"(?P<who>sender|postmaster) (?P<what>non-delivery|delay|delivery status|success)"
    rf" notification: (?P<new>{_QUEUE_ID})")

#: Processes that deliver (their `to=` lines are deliveries by the service's channel).
DELIVERY_PROCESSES = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error",
                                "discard", "retry"})


@dataclass(frozen=True, slots=True)
class Record:
    """What every parsed line has: its kind, time (seconds since the epoch; None when the
    line has no valid timestamp), and which Postfix daemon wrote it."""

    kind: str
    at: float | None
    service: str
    process: str
    pid: int | None


@dataclass(frozen=True, slots=True)
class Unparsed(Record):
    """Not a Postfix log line we can read (malformed, binary, oversized, another program)."""


@dataclass(frozen=True, slots=True)
class Other(Record):
    """A Postfix line of a shape that is recognised as Postfix's but not mapped to events."""


@dataclass(frozen=True, slots=True)
class Connect(Record):
    """smtpd `connect from NAME[IP]`: an inbound session opened."""

    remote: str


@dataclass(frozen=True, slots=True)
class Disconnect(Record):
    """smtpd `disconnect from NAME[IP] ehlo=1 … commands=N/M`: the session ended."""

    remote: str


@dataclass(frozen=True, slots=True)
class SessionTrouble(Record):
    """smtpd `lost connection|timeout|too many errors after STAGE from NAME[IP]`; a
    `disconnect` line follows."""

    what: str
    stage: str
    remote: str


@dataclass(frozen=True, slots=True)
class Reject(Record):
    """`NOQUEUE: reject: RCPT from …: 554 …; from=<…> to=<…>` (queue_id None), the same with
    a queue id (some recipient of the transaction was accepted already), or cleanup's
    `QUEUEID: reject: header …` (content refused). `action` is reject or milter-reject."""

    queue_id: str | None
    action: str
    stage: str
    remote: str
    reason: str
    sender: str | None
    recipient: str | None


@dataclass(frozen=True, slots=True)
class Client(Record):
    """smtpd `QUEUEID: client=NAME[IP]`: a queue file was opened (not yet a message)."""

    queue_id: str
    remote: str


@dataclass(frozen=True, slots=True)
class Pickup(Record):
    """pickup `QUEUEID: uid=N from=<…>`: a local submission."""

    queue_id: str
    sender: str


@dataclass(frozen=True, slots=True)
class MessageId(Record):
    """cleanup `QUEUEID: message-id=<…>`: the message's content was accepted."""

    queue_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Queued(Record):
    """qmgr `QUEUEID: from=<…>, size=N, nrcpt=M (queue active)`; repeats on every retry."""

    queue_id: str
    sender: str
    size: int
    nrcpt: int


@dataclass(frozen=True, slots=True)
class Delivery(Record):
    """`QUEUEID: to=<…>, [orig_to=<…>,] relay=…, … dsn=X.Y.Z, status=S (text)`: one
    recipient's delivery attempt by a delivery agent."""

    queue_id: str
    recipient: str
    orig_recipient: str | None
    relay: str
    conn_use: int | None
    dsn: str
    status: str
    text: str


@dataclass(frozen=True, slots=True)
class ConnectFailed(Record):
    """smtp/lmtp `connect to HOST[IP]:PORT: REASON` (no queue id): a failed association."""

    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class Notification(Record):
    """bounce `QUEUEID: sender non-delivery notification: NEWQUEUEID`."""

    queue_id: str
    what: str
    new_queue_id: str


@dataclass(frozen=True, slots=True)
class Expired(Record):
    """qmgr `QUEUEID: from=<…>, status=expired|force-expired, returned to sender`."""

    queue_id: str
    how: str


@dataclass(frozen=True, slots=True)
class Removed(Record):
    """qmgr (or postsuper -d) `QUEUEID: removed`: the message left the queue."""

    queue_id: str


@dataclass(frozen=True, slots=True)
class MasterStarted(Record):
    """master `daemon started -- version 3.7.11, configuration /etc/postfix`."""

    version: str


@dataclass(frozen=True, slots=True)
class MasterStopped(Record):
    """master `terminating on signal N`: every Postfix process is going away."""


def syslog_year_time(month: int, day: int, hour: int, minute: int, second: float,
                     now: float) -> float | None:
    """Local time of a year-less timestamp: the year that puts it nearest `now` without being
    more than a day after it. None if no nearby year has that date (e.g. Feb 30)."""
    year = time.localtime(now).tm_year
    for candidate in range(year + 1, year - 9, -1):
        try:
            datetime(candidate, month, day, hour, minute)
        except ValueError:
            continue
        stamp = time.mktime((candidate, month, day, hour, minute, 0, 0, 0, -1)) + second
        if stamp <= now + 86400:
            return stamp
    return None


def _header(line: str, now: float) -> tuple[float | None, str, int | None, str] | None:
    """(time, tag, pid, text) of a syslog-shaped line, or None."""
    match = _SYSLOG.fullmatch(line)
    if match is not None:
        month = _MONTHS.get(match["mon"], 0)
        at = None
        if month and int(match["h"]) < 24 and int(match["m"]) < 60 and int(match["s"]) < 61:
            second = int(match["s"]) + float(match["frac"] or 0)
            at = syslog_year_time(month, int(match["day"]), int(match["h"]), int(match["m"]),
                                  second, now)
        pid = int(match["pid"]) if match["pid"] else None
        return at, match["tag"], pid, match["text"]
    match = _RFC3339.fullmatch(line)
    if match is not None:
        try:
            iso = datetime.fromisoformat(match["iso"].replace("Z", "+00:00"))
            stamp: float | None = iso.timestamp()
        except ValueError:
            stamp = None
        pid = int(match["pid"]) if match["pid"] else None
        return stamp, match["tag"], pid, match["text"]
    return None


def parse(line: str, *, now: float) -> Record:
    """One log line (without its newline) as a record; never raises."""
    if len(line) > MAX_LINE:
        return Unparsed("oversized", None, "", "", None)
    header = _header(line, now)
    if header is None:
        return Unparsed("malformed", None, "", "", None)
    at, tag, pid, text = header
    parts = tag.split("/")
    if len(parts) < 2 or not parts[0].startswith("postfix"):
        return Unparsed("not postfix", at, "", "", pid)
    process = parts[-1]
    service = parts[-2] if len(parts) > 2 else process
    if _NAME.fullmatch(process) is None or _NAME.fullmatch(service) is None:
        return Unparsed("malformed", at, "", "", pid)
    head = (at, service, process, pid)
    try:
        return _body(process, text, head)
    except (ValueError, OverflowError):  # e.g. a number too large for the record
        return Other(f"{process}: other", *head)


def _body(process: str, text: str, head: tuple[float | None, str, str, int | None]) -> Record:
    if text.startswith(("warning: ", "error: ", "fatal: ", "panic: ")):
        return Other(f"{process}: {text.split(':', 1)[0]}", *head)
    if process == "smtpd":
        record = _smtpd(text, head)
    elif process == "master":
        if text.startswith("terminating on signal"):
            return MasterStopped("master: terminating", *head)
        match = _STARTED.fullmatch(text)
        record = MasterStarted("master: started", *head, match["version"]) if match else None
    elif process in ("smtp", "lmtp") and text.startswith("connect to "):
        match = _CONNECT_TO.fullmatch(text)
        record = ConnectFailed(f"{process}: connect to", *head, match["host"],
                               text) if match else None
    else:
        record = None
    if record is not None:
        return record
    match = _QID_TEXT.fullmatch(text)
    if match is not None:
        record = _queue_line(process, match["qid"], match["rest"], head)
        if record is not None:
            return record
    return Other(f"{process}: other", *head)


def _smtpd(text: str, head: tuple[float | None, str, str, int | None]) -> Record | None:
    if text.startswith("connect from "):
        match = _CONNECT.fullmatch(text)
        return Connect("smtpd: connect", *head, match["remote"]) if match else None
    if text.startswith("disconnect from "):
        match = _DISCONNECT.fullmatch(text)
        return Disconnect("smtpd: disconnect", *head, match["remote"]) if match else None
    match = _SESSION_END.fullmatch(text)
    if match is not None:
        return SessionTrouble(f"smtpd: {match['what']}", *head, match["what"], match["stage"],
                              match["remote"])
    if text.startswith("NOQUEUE: "):
        return _reject(None, text[len("NOQUEUE: "):], head, noqueue=True)
    return None


def _reject(queue_id: str | None, text: str, head: tuple[float | None, str, str, int | None],
            *, noqueue: bool = False) -> Record | None:
    match = _REJECT.fullmatch(text)
    if match is None:
        return None
    action, stage = match["action"], match["stage"]
    process = head[2]
    prefix = "NOQUEUE " if noqueue else ""
    if action not in ("reject", "milter-reject"):
        return Other(f"{process}: {prefix}{action}", *head)
    reason = match["reason"]
    sender = recipient = None
    tail = _REJECT_TAIL.fullmatch(reason)
    if tail is not None:
        reason, sender, recipient = tail["reason"], tail["sender"], tail["recipient"]
    return Reject(f"{process}: {prefix}{action} {stage}", *head, queue_id, action, stage,
                  match["remote"] or "", reason, sender, recipient)


def _queue_line(process: str, queue_id: str, rest: str,
                head: tuple[float | None, str, str, int | None]) -> Record | None:
    if rest.startswith("to=<"):
        match = _DELIVERY.fullmatch(rest)
        if match is None:
            return None
        status = match["status"]
        return Delivery(f"{process}: {status}", *head, queue_id, match["to"], match["orig"],
                        match["relay"], int(match["conn_use"]) if match["conn_use"] else None,
                        match["dsn"], status, match["text"] or "")
    if rest == "removed":
        return Removed(f"{process}: removed", *head, queue_id)
    if process == "qmgr" and rest.startswith("from=<"):
        match = _QUEUED.fullmatch(rest)
        if match is not None:
            return Queued("qmgr: queue active", *head, queue_id, match["sender"],
                          int(match["size"]), int(match["nrcpt"]))
        match = _EXPIRED.fullmatch(rest)
        if match is not None:
            return Expired(f"qmgr: {match['how']}", *head, queue_id, match["how"])
        return None
    if process == "smtpd":
        if rest.startswith("client="):
            match = _CLIENT.match(rest)
            return Client("smtpd: client", *head, queue_id, match["remote"]) if match else None
        return _reject(queue_id, rest, head)
    if process == "pickup" and rest.startswith("uid="):
        match = _PICKUP.match(rest)
        return Pickup("pickup: uid", *head, queue_id, match["sender"]) if match else None
    if process == "cleanup":
        if rest.startswith("message-id="):
            match = _MESSAGE_ID.fullmatch(rest)
            return MessageId("cleanup: message-id", *head, queue_id,
                             match["id"]) if match else None
        match = _CLEANUP_REJECT.fullmatch(rest)
        if match is not None:
            return Reject(f"cleanup: {match['action']}", *head, queue_id, match["action"],
                          match["what"], "", match["reason"] or rest, None, None)
        return None
    if process == "bounce":
        match = _NOTIFICATION.fullmatch(rest)
        if match is not None:
            return Notification(f"bounce: {match['who']} notification", *head, queue_id,
                                match["what"], match["new"])
        return None
    if process == "postsuper" and rest == "expired":
        return Expired("postsuper: expired", *head, queue_id, "postsuper")
    return None
