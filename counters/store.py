"""The counter store: the one write API, in MTA-MIB terms, and `snapshot()`.

The method signatures and their documented semantics are the interface the CLI, the agent and
mail pipelines rely on.

Rules every method keeps:
- Each call is one short transaction (`BEGIN IMMEDIATE`, busy timeout): all of it or none.
- Bad arguments raise a `CountersError` subclass with a one-line message before anything is
  written. SQLite failures (locked past the timeout, read-only, corrupt, newer schema) become
  `DatabaseError` with a one-line message; no raw `sqlite3` exception leaves a public method.
- `at` is a wall-clock time (seconds since the epoch); None means now (read once the write
  lock is held, so times recorded by concurrent writers follow commit order).
- Channels are named by `name` (str). Message ids are non-empty printable ASCII without
  whitespace, at most 255 characters. Octets and recipients are integers >= 0 (bool is not
  accepted as an integer here).

Semantics decided here:
- Stored messages/octets/recipients and the oldest stored time are derived from the queue
  table at snapshot time. MTA-wide, a message id held by several channels is stored once: its
  octets once (the largest size any channel holds), its recipients summed over the channels.
- MTA received counts a message when its id is in no channel's queue at receive time; MTA
  transmitted counts every `transmit()`; `transfer()` and `remove()` leave MTA totals alone.
- Last inbound activity is set by `open_inbound`, by closing an inbound association and by
  `receive`; last outbound activity by `open_outbound`, by closing an outbound association
  and by `transmit`. `transfer` is an internal hand-off and sets neither.
- Reasons are None for never and "" after a success; stored reasons (and association remote
  names) are cut at 255 characters and every character outside printable ASCII becomes '?'
  (DisplayString is NVT ASCII).
- `clear()` zeroes cumulative counters and sets reasons back to never; queues, live
  associations, last-activity times and scheduled retries are the present and stay.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.request import pathname2url

from counters import schema
from counters.errors import (
    BadEvent,
    DatabaseError,
    DuplicateChannel,
    UnknownAssociation,
    UnknownChannel,
    UnknownMessage,
)
from counters.snapshot import (
    SMTP_PROTOCOL,
    AssociationSnapshot,
    ChannelSnapshot,
    Direction,
    MtaTotals,
    RemoteKind,
    Snapshot,
)

DEFAULT_DB_PATH = Path("var/mailmib.db")

#: How many of a followed file's first bytes identify it (LogPosition.head).
HEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One message stored in one channel (a row of the queue the stored values come from)."""

    message_id: str
    channel: str
    enqueued_at: float
    octets: int
    recipients: int


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Where a log follower is: the file (device, inode, and its first bytes, which tell a
    new file that reuses an inode or a truncated one from the old) and the offset of the first
    line not yet applied."""

    device: int
    inode: int
    head: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class LineKind:
    """How many lines of one kind a follower saw; `mapped` if it turns them into events."""

    source: str
    kind: str
    mapped: bool
    lines: int
    last_at: float
    sample: str

#: Largest octets or recipients one event may carry: far beyond any message, and small enough
#: that running sums stay exact 64-bit integers in SQLite.
MAX_AMOUNT = 2**53 - 1

#: mtaGroupIndex and assocIndex are INTEGER (1..2147483647).
MAX_INDEX = 2**31 - 1

_MESSAGE_ID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no space
_PRINTABLE = re.compile(r"[ -~]{0,255}")  # DisplayString: printable ASCII, at most 255
_NOT_PRINTABLE = re.compile(r"[^ -~]")
_OID_ARC = re.compile(r"0|[1-9][0-9]*")

# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xff).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

# --- statements (constant text, so sqlite3's statement cache prepares each once) --------------

_CHANNEL = "SELECT idx, direction, protocol FROM channels WHERE name = ?"
_QUEUED = "SELECT octets, recipients FROM queue WHERE channel = ? AND message_id = ?"
_HOLDERS = "SELECT channel FROM queue WHERE message_id = ?"
_ENQUEUE = ("INSERT INTO queue (channel, message_id, enqueued_at, octets, recipients)"
            " VALUES (?, ?, ?, ?, ?)")
_DEQUEUE = "DELETE FROM queue WHERE channel = ? AND message_id = ?"
_REDUCE = "UPDATE queue SET recipients = recipients - ? WHERE channel = ? AND message_id = ?"
_MERGE = ("UPDATE queue SET recipients = recipients + ?, octets = max(octets, ?)"
          " WHERE channel = ? AND message_id = ?")
_CH_RECEIVED = ("UPDATE channels SET received_messages = received_messages + 1,"
                " received_octets = received_octets + ?,"
                " received_recipients = received_recipients + ?,"
                " last_inbound_activity = coalesce(?, last_inbound_activity) WHERE idx = ?")
_CH_TRANSMITTED = ("UPDATE channels SET transmitted_messages = transmitted_messages + 1,"
                   " transmitted_octets = transmitted_octets + ?,"
                   " transmitted_recipients = transmitted_recipients + ?,"
                   " last_outbound_activity = coalesce(?, last_outbound_activity) WHERE idx = ?")
_MTA_RECEIVED = ("UPDATE mta SET received_messages = received_messages + 1,"
                 " received_octets = received_octets + ?,"
                 " received_recipients = received_recipients + ? WHERE id = 1")
_MTA_TRANSMITTED = ("UPDATE mta SET transmitted_messages = transmitted_messages + 1,"
                    " transmitted_octets = transmitted_octets + ?,"
                    " transmitted_recipients = transmitted_recipients + ? WHERE id = 1")
_ASSOC_BY_KEY = "SELECT idx, inbound FROM associations WHERE channel = ? AND key = ?"
_ASSOC_BY_INDEX = "SELECT idx, inbound FROM associations WHERE channel = ? AND idx = ?"
_OPEN_ASSOC = ("INSERT INTO associations"
               " (channel, inbound, key, remote, remote_kind, protocol, opened_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)")
_CH_OPENED_IN = ("UPDATE channels SET accumulated_inbound_associations ="
                 " accumulated_inbound_associations + 1, last_inbound_activity = ?,"
                 " inbound_rejection_reason = '' WHERE idx = ?")
_CH_OPENED_OUT = ("UPDATE channels SET accumulated_outbound_associations ="
                  " accumulated_outbound_associations + 1, last_outbound_activity = ?,"
                  " outbound_failure_reason = '' WHERE idx = ?")

_ZERO_CHANNEL = (
    "UPDATE channels SET received_messages = 0, rejected_messages = 0,"
    " transmitted_messages = 0, received_octets = 0, transmitted_octets = 0,"
    " received_recipients = 0, transmitted_recipients = 0,"
    " accumulated_inbound_associations = 0, accumulated_outbound_associations = 0,"
    " rejected_inbound_associations = 0, failed_outbound_associations = 0,"
    " inbound_rejection_reason = NULL, outbound_failure_reason = NULL,"
    " last_message_rejection_reason = NULL"
)

_SNAP_MTA = (
    "SELECT appl_index, appl_name, appl_version, restarted_at, database_id,"
    " received_messages, received_octets, received_recipients,"
    " transmitted_messages, transmitted_octets, transmitted_recipients FROM mta WHERE id = 1"
)
_SNAP_MTA_STORED = (
    "SELECT count(*), coalesce(sum(octets), 0), coalesce(sum(recipients), 0) FROM"
    " (SELECT max(octets) AS octets, sum(recipients) AS recipients"
    "  FROM queue GROUP BY message_id)"
)
# Column order matches ChannelSnapshot's fields, so each row becomes one by position.
_SNAP_CHANNELS = (
    "SELECT c.idx, c.name, c.protocol, c.direction, c.created_at,"
    " c.received_messages, c.rejected_messages, c.transmitted_messages,"
    " c.received_octets, c.transmitted_octets,"
    " c.received_recipients, c.transmitted_recipients,"
    " coalesce(q.messages, 0), coalesce(q.octets, 0), coalesce(q.recipients, 0), q.oldest,"
    " coalesce(a.inbound, 0), coalesce(a.outbound, 0),"
    " c.accumulated_inbound_associations, c.accumulated_outbound_associations,"
    " c.rejected_inbound_associations, c.failed_outbound_associations,"
    " c.last_inbound_activity, c.last_outbound_activity,"
    " c.inbound_rejection_reason, c.outbound_failure_reason,"
    " c.last_message_rejection_reason, c.next_retry_at"
    " FROM channels AS c"
    " LEFT JOIN (SELECT channel, count(*) AS messages, sum(octets) AS octets,"
    "            sum(recipients) AS recipients, min(enqueued_at) AS oldest"
    "            FROM queue GROUP BY channel) AS q ON q.channel = c.idx"
    " LEFT JOIN (SELECT channel, sum(inbound) AS inbound, sum(1 - inbound) AS outbound"
    "            FROM associations GROUP BY channel) AS a ON a.channel = c.idx"
    " ORDER BY c.idx"
)
_SNAP_ASSOCS = (
    "SELECT idx, channel, inbound, remote, remote_kind, protocol, opened_at"
    " FROM associations ORDER BY idx"
)


# --- argument checks (pure; they run before any transaction) ----------------------------------

def _time(value: object, what: str = "at") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvent(f"{what} must be a time in seconds since the epoch, not {value!r}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise BadEvent(f"{what} must be a finite time, not {value!r}")
    return result


def _opt_time(value: object, what: str = "at") -> float | None:
    return None if value is None else _time(value, what)


def _amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadEvent(f"{what} must be an integer, not {value!r}")
    if value < 0:
        raise BadEvent(f"{what} must be >= 0, not {value}")
    if value > MAX_AMOUNT:
        raise BadEvent(f"{what} {value} is out of range (at most {MAX_AMOUNT})")
    return value


def _opt_amount(value: object, what: str) -> int | None:
    return None if value is None else _amount(value, what)


def _message_id(value: object) -> str:
    if not isinstance(value, str) or _MESSAGE_ID.fullmatch(value) is None:
        raise BadEvent(f"invalid message id {value!r}: it must be 1 to 255 printable ASCII"
                       " characters without spaces")
    return value


def _display(value: object, what: str, *, empty: bool = True) -> str:
    """A DisplayString argument the caller chose (names, keys): checked, never altered."""
    if (not isinstance(value, str) or _PRINTABLE.fullmatch(value) is None
            or (not empty and not value)):
        need = "" if empty else "non-empty "
        raise BadEvent(f"invalid {what} {value!r}: it must be {need}printable ASCII,"
                       " at most 255 characters")
    return value


def _channel_name(value: object) -> str:
    name = _display(value, "channel name", empty=False)
    if name != name.strip(" "):
        raise BadEvent(f"invalid channel name {name!r}: no leading or trailing spaces")
    return name


def _text(value: object, what: str) -> str:
    """Free text from the mail system (reasons, remote names), made a valid DisplayString:
    cut at 255 characters, anything outside printable ASCII replaced by '?'."""
    if not isinstance(value, str):
        raise BadEvent(f"{what} must be a string, not {value!r}")
    return _NOT_PRINTABLE.sub("?", value[:255])


_Choice = TypeVar("_Choice", Direction, RemoteKind)


def _choice(kind: type[_Choice], value: object, what: str) -> _Choice:
    """`value` as a member of the string enum `kind`, or BadEvent listing the choices."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise BadEvent(f"invalid {what} {value!r}: one of {', '.join(m.value for m in kind)}")


def _direction(value: object) -> Direction:
    return _choice(Direction, value, "direction")


def _remote_kind(value: object) -> RemoteKind:
    return _choice(RemoteKind, value, "remote kind")


def _protocol(value: object) -> str:
    """A dotted OBJECT IDENTIFIER that BER can encode (X.690 8.19), e.g. 1.3.6.1.2.1.27.4.25.

    One leading dot (Net-SNMP's absolute form) is accepted and dropped.
    """
    bad = BadEvent(f"invalid protocol {value!r}: it must be a dotted object identifier"
                   " such as 1.3.6.1.2.1.27.4.25")
    if not isinstance(value, str):
        raise bad
    arcs = value.removeprefix(".").split(".")
    if not 2 <= len(arcs) <= 128 or not all(_OID_ARC.fullmatch(arc) for arc in arcs):
        raise bad
    numbers = [int(arc) for arc in arcs]
    if numbers[0] > 2 or (numbers[0] < 2 and numbers[1] > 39):
        raise bad
    if any(number >= 2**32 for number in numbers):
        raise bad
    return ".".join(arcs)


def _need_side(name: str, direction: str, *, inbound: bool, doing: str) -> None:
    """BadEvent unless the channel has the side (inbound or outbound) the event needs."""
    if direction == (Direction.OUT if inbound else Direction.IN):
        only = "outbound-only" if inbound else "inbound-only"
        raise BadEvent(f"channel {name!r} is {only}; it cannot {doing}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _mailmib_version() -> str:
    # Imported late: `counters/__init__` imports this module before it sets __version__.
    import counters

    return f"mailmib {counters.__version__}"


class _Transaction:
    """`with store._write():` runs the body in BEGIN [IMMEDIATE] … COMMIT, rolling back on any
    exception and turning sqlite3 errors into DatabaseError. Inside `Store.batch()` the body is
    a SAVEPOINT instead, so one failed event is undone alone and the batch goes on. A plain
    class: it is on every event's path, and a generator-based context manager costs more."""

    __slots__ = ("_begin", "_nested", "_store")

    def __init__(self, store: Store, begin: str) -> None:
        self._store = store
        self._begin = begin
        self._nested = False

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        conn = store._connection()
        self._nested = store._depth > 0
        try:
            conn.execute("SAVEPOINT event" if self._nested else self._begin)
        except sqlite3.Error as exc:
            raise store._database_error(exc) from None
        store._depth += 1
        return conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        store = self._store
        store._depth -= 1
        conn = store._connection()
        if kind is None:
            try:
                conn.execute("RELEASE event" if self._nested else "COMMIT")
                return
            except sqlite3.Error as error:
                exc = error
        if conn.in_transaction:
            # Suppressed: the connection may have rolled back itself (e.g. after an I/O error).
            with contextlib.suppress(sqlite3.Error):
                if self._nested:
                    conn.execute("ROLLBACK TO event")
                    conn.execute("RELEASE event")
                else:
                    conn.execute("ROLLBACK")
        store._known.clear()  # what was rolled back may have added channels we remembered
        if isinstance(exc, sqlite3.Error):
            raise store._database_error(exc) from None


class Store:
    """A handle on one SQLite counters database. Cheap to open; not shared between threads."""

    def __init__(self, path: str | Path = DEFAULT_DB_PATH, *, create: bool = True,
                 busy_timeout: float = 10.0, read_only: bool = False) -> None:
        """Open (and with `create`, create and migrate) the database at `path`.

        New files and their directory are created owner-only (0600/0700). With `create=False` a
        missing, empty or older-schema file is a `DatabaseError`: for readers such as
        `counters show`, which must never create a database by accident.

        `read_only` opens the file with SQLite's `mode=ro` (implies `create=False`): snapshots
        work, every write raises `DatabaseError`. `path` may be ":memory:" for a private
        in-memory database (tests; no WAL there).
        """
        self._path = str(path)
        self._busy_timeout = float(busy_timeout)
        self._conn: sqlite3.Connection | None = None
        self._known: dict[str, tuple[int, str, str]] = {}
        self._depth = 0
        memory = self._path == ":memory:"
        if read_only:
            create = False
        if not memory:
            self._prepare_file(create)
        target = self._path
        if read_only:
            target = "file:" + pathname2url(os.path.abspath(self._path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(target, timeout=self._busy_timeout, isolation_level=None,
                                   uri=read_only)
        except sqlite3.Error as exc:
            raise self._database_error(exc) from None
        self._conn = conn
        try:
            self._setup(create=create, read_only=read_only, memory=memory)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        """The database file's path as given (":memory:" for an in-memory store)."""
        return self._path

    def _prepare_file(self, create: bool) -> None:
        path = self._path
        if os.path.exists(path):
            if os.path.isdir(path):
                raise DatabaseError(f"cannot open database {path}: it is a directory")
            return
        if not create:
            raise DatabaseError(f"database {path} does not exist")
        try:
            parent = os.path.dirname(os.path.abspath(path))
            missing: list[str] = []
            while not os.path.isdir(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            for directory in reversed(missing):
                with contextlib.suppress(FileExistsError):  # another process made it
                    os.mkdir(directory, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass  # another process created it first; SQLite opens what is there
        except OSError as exc:
            raise DatabaseError(f"cannot create database {path}: {exc.strerror}") from None

    def _setup(self, *, create: bool, read_only: bool, memory: bool) -> None:
        """Check what the file is, then set it up. Every refusal comes before the first write
        (WAL mode and the page size are written into the file's header), so a file refused —
        another program's database, an empty file opened without create — is left as it was."""
        conn = self._connection()
        try:
            # The first statement reads the header: a file that is not SQLite fails here.
            version = schema.schema_version(conn)
            foreign = version == 0 and schema.has_tables(conn)
        except sqlite3.Error as exc:
            raise self._database_error(exc) from None
        self._check_version(version)
        if foreign:
            raise DatabaseError(f"{self._path} is a SQLite database but not a mailmib one")
        if not create and version != schema.SCHEMA_VERSION:
            if version == 0:
                raise DatabaseError(f"database {self._path} is not initialised"
                                    " (open it once with create to set it up)")
            raise DatabaseError(f"database {self._path} has schema version {version};"
                                f" open it once with create to migrate it to"
                                f" {schema.SCHEMA_VERSION}")
        try:
            if version == 0 and not read_only:
                conn.execute(f"PRAGMA page_size = {schema.PAGE_SIZE:d}")  # before any page
            if not read_only and not memory:
                # Needs a write lock only when the file is not yet in WAL mode; a file opened
                # read-only that is already WAL just reports it.
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self._database_error(exc) from None
        if version == schema.SCHEMA_VERSION:
            return
        with self._write() as conn:
            version = schema.schema_version(conn)  # another process may have migrated it
            self._check_version(version)
            if version == 0 and schema.has_tables(conn):
                raise DatabaseError(f"{self._path} is a SQLite database but not a mailmib one")
            if version < schema.SCHEMA_VERSION:
                schema.migrate(conn, version, now=time.time(), database_id=uuid.uuid4().hex)

    def _check_version(self, version: int) -> None:
        if version > schema.SCHEMA_VERSION:
            raise DatabaseError(f"database {self._path}: schema version {version} is newer"
                                f" than this mailmib supports ({schema.SCHEMA_VERSION})")
        if version < 0:
            raise DatabaseError(f"database {self._path}: schema version {version} is invalid")

    def close(self) -> None:
        """Close the connection (idempotent). Later calls raise DatabaseError."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError(f"database {self._path} is closed")
        return self._conn

    def _write(self) -> _Transaction:
        return _Transaction(self, "BEGIN IMMEDIATE")

    def batch(self) -> _Transaction:
        """`with store.batch(): …` makes every call inside one transaction: one commit for many
        events (the fast path for bulk ingest), and several calls that stand or fall together.

        Each event inside still checks its arguments and is undone alone if it fails (it runs
        in a SAVEPOINT), so a caller may catch an event's error and carry on; an exception
        leaving the block rolls back the whole batch. Other writers wait while a batch is open:
        keep batches short.
        """
        return _Transaction(self, "BEGIN IMMEDIATE")

    def _read(self) -> _Transaction:
        # Deferred: a read transaction; in WAL mode it sees one consistent state and never
        # waits for writers.
        return _Transaction(self, "BEGIN")

    def _database_error(self, exc: sqlite3.Error) -> DatabaseError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        detail = _one_line(str(exc))
        path = self._path
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in detail:
            return DatabaseError(f"database {path} is locked (still busy after"
                                 f" {self._busy_timeout:g} s)")
        if code == _SQLITE_READONLY or "readonly" in detail:
            return DatabaseError(f"database {path} is read-only ({detail})")
        if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
            return DatabaseError(f"{path} is not a usable SQLite database ({detail})")
        if code == _SQLITE_CANTOPEN:
            return DatabaseError(f"cannot open database {path} ({detail})")
        return DatabaseError(f"database {path}: {detail}")

    def _channel(self, conn: sqlite3.Connection, name: str) -> tuple[int, str, str]:
        """(index, direction, protocol) of channel `name`, or UnknownChannel.

        Remembered per handle: a channel's index, direction and protocol never change and
        channels are never deleted, so the answer cannot go stale on this connection. Only
        rows read from the database are remembered, never one this transaction inserts.
        """
        known = self._known.get(name)
        if known is None:
            row = conn.execute(_CHANNEL, (name,)).fetchone()
            if row is None:
                raise UnknownChannel(f"no channel named {name!r}")
            known = self._known[name] = cast(tuple[int, str, str], tuple(row))
        return known

    # --- the MTA (applTable row) -------------------------------------------------------

    def set_mta(self, *, name: str | None = None, version: str | None = None) -> None:
        """Set applName / applVersion (DisplayStrings, at most 255 printable ASCII characters).

        None leaves a value as it is. The name must not be empty.
        """
        if name is not None:
            _display(name, "application name", empty=False)
        if version is not None:
            _display(version, "application version")
        if name is None and version is None:
            return
        with self._write() as conn:
            conn.execute("UPDATE mta SET appl_name = coalesce(?, appl_name),"
                         " appl_version = coalesce(?, appl_version) WHERE id = 1",
                         (name, version))

    # --- channels ------------------------------------------------------------------------

    def add_channel(self, name: str, *, direction: Direction = Direction.BOTH,
                    protocol: str = SMTP_PROTOCOL) -> int:
        """Create a channel and return its index (mtaGroupIndex).

        Indexes start at 1, are assigned once and never reused or renumbered. `name` is
        non-empty printable ASCII, at most 255 characters, unique. `protocol` is a dotted OID.
        """
        name = _channel_name(name)
        direction = _direction(direction)
        protocol = _protocol(protocol)
        with self._write() as conn:
            if conn.execute(_CHANNEL, (name,)).fetchone() is not None:
                raise DuplicateChannel(f"channel {name!r} exists already")
            return self._insert_channel(conn, name, direction, protocol)

    def _insert_channel(self, conn: sqlite3.Connection, name: str, direction: Direction,
                        protocol: str) -> int:
        cursor = conn.execute(
            "INSERT INTO channels (name, direction, protocol, created_at) VALUES (?, ?, ?, ?)",
            (name, direction.value, protocol, time.time()))
        index = cursor.lastrowid
        assert index is not None
        if index > MAX_INDEX:
            raise DatabaseError(f"database {self._path}: no channel index left"
                                f" (mtaGroupIndex stops at {MAX_INDEX})")
        return index

    def ensure_channel(self, name: str, *, direction: Direction = Direction.BOTH,
                       protocol: str = SMTP_PROTOCOL) -> int:
        """The index of channel `name`, creating it (with these settings) if it is missing.

        An existing channel is returned as it is, whatever its direction and protocol.
        """
        name = _channel_name(name)
        direction = _direction(direction)
        protocol = _protocol(protocol)
        if name in self._known:  # seen on this handle: it exists, no transaction needed
            return self._known[name][0]
        with self._write() as conn:
            try:
                return self._channel(conn, name)[0]
            except UnknownChannel:
                return self._insert_channel(conn, name, direction, protocol)

    # --- messages ------------------------------------------------------------------------

    def receive(self, channel: str, message_id: str, *, octets: int, recipients: int,
                at: float | None = None) -> None:
        """A message was received into `channel` and is now queued there.

        Channel: received messages/octets/recipients += 1/octets/recipients; the message joins
        the channel's queue (enqueued at `at`); last inbound activity = at. MTA: if no channel
        holds `message_id`, it is new to the MTA and mtaTable received += 1/octets/recipients.
        Needs an inbound side (BadEvent otherwise); BadEvent if the id is already queued in
        that channel.
        """
        _message_id(message_id)
        _amount(octets, "octets")
        _amount(recipients, "recipients")
        when = _opt_time(at)
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=True, doing="receive messages")
            holders = conn.execute(_HOLDERS, (message_id,)).fetchall()
            if (index,) in holders:
                raise BadEvent(f"message {message_id!r} is already queued in channel"
                               f" {channel!r}")
            if when is None:
                when = time.time()
            conn.execute(_ENQUEUE, (index, message_id, when, octets, recipients))
            conn.execute(_CH_RECEIVED, (octets, recipients, when, index))
            if not holders:
                conn.execute(_MTA_RECEIVED, (octets, recipients))

    def transmit(self, channel: str, message_id: str, *, octets: int | None = None,
                 recipients: int | None = None, at: float | None = None) -> None:
        """A copy of the message was sent out of the MTA by `channel`.

        If queued in the channel: octets default to the queued size and recipients to all the
        remaining queued recipients; the given recipients are taken off the queued ones
        (BadEvent if more than remain) and the message leaves the queue when none remain. If
        not queued, `octets` and `recipients` are required (BadEvent otherwise) and nothing is
        dequeued. Channel and MTA: transmitted += 1/octets/recipients; last outbound activity
        = at. Needs an outbound side.
        """
        _message_id(message_id)
        _opt_amount(octets, "octets")
        _opt_amount(recipients, "recipients")
        when = _opt_time(at)
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=False, doing="transmit messages")
            queued = conn.execute(_QUEUED, (index, message_id)).fetchone()
            if queued is not None:
                queued_octets, remaining = queued
                if octets is None:
                    octets = queued_octets
                if recipients is None:
                    recipients = remaining
                elif recipients > remaining:
                    raise BadEvent(f"cannot transmit {recipients} recipients of message"
                                   f" {message_id!r}: only {remaining} remain queued in"
                                   f" channel {channel!r}")
                if recipients == remaining:
                    conn.execute(_DEQUEUE, (index, message_id))
                elif recipients:
                    conn.execute(_REDUCE, (recipients, index, message_id))
            elif octets is None or recipients is None:
                raise BadEvent(f"message {message_id!r} is not queued in channel {channel!r}:"
                               " give its octets and recipients")
            if when is None:
                when = time.time()
            conn.execute(_CH_TRANSMITTED, (octets, recipients, when, index))
            conn.execute(_MTA_TRANSMITTED, (octets, recipients))

    def transfer(self, source: str, destination: str, message_id: str, *,
                 recipients: int | None = None, at: float | None = None) -> None:
        """Hand a queued message (or some of its recipients) from one channel to another.

        The message (size as queued; recipients as given, default all remaining) leaves or is
        reduced in `source`'s queue and joins `destination`'s (enqueued at `at`). Counts as
        transmitted by `source` if it has an outbound side and received by `destination` if it
        has an inbound side. The MTA totals do not change: the message never left the MTA.
        UnknownMessage if not queued in `source`. BadEvent if `source` is `destination`.

        If `destination` already holds the message (recipients handed over in several
        batches), the recipients join that entry and it keeps its original enqueue time.
        Last-activity times do not move: no association carried the hand-off.
        """
        _message_id(message_id)
        _opt_amount(recipients, "recipients")
        when = _opt_time(at)
        if source == destination:
            raise BadEvent(f"cannot transfer message {message_id!r} from channel {source!r}"
                           " to itself")
        with self._write() as conn:
            src, src_direction, _ = self._channel(conn, source)
            dst, dst_direction, _ = self._channel(conn, destination)
            queued = conn.execute(_QUEUED, (src, message_id)).fetchone()
            if queued is None:
                raise UnknownMessage(f"message {message_id!r} is not queued in channel"
                                     f" {source!r}")
            octets, remaining = queued
            if recipients is None:
                recipients = remaining
            elif recipients > remaining:
                raise BadEvent(f"cannot transfer {recipients} recipients of message"
                               f" {message_id!r}: only {remaining} remain queued in channel"
                               f" {source!r}")
            if recipients == remaining:
                conn.execute(_DEQUEUE, (src, message_id))
            elif recipients:
                conn.execute(_REDUCE, (recipients, src, message_id))
            if when is None:
                when = time.time()
            merged = conn.execute(_MERGE, (recipients, octets, dst, message_id)).rowcount
            if not merged:
                conn.execute(_ENQUEUE, (dst, message_id, when, octets, recipients))
            if src_direction != Direction.IN:
                conn.execute(_CH_TRANSMITTED, (octets, recipients, None, src))
            if dst_direction != Direction.OUT:
                conn.execute(_CH_RECEIVED, (octets, recipients, None, dst))

    def remove(self, channel: str, message_id: str, *, at: float | None = None) -> None:
        """The message left the channel's queue without being transmitted (bounced, expired,
        deleted). No counter moves; only the stored values fall. UnknownMessage if not queued.
        """
        _message_id(message_id)
        _opt_time(at)
        with self._write() as conn:
            index, _, _ = self._channel(conn, channel)
            if not conn.execute(_DEQUEUE, (index, message_id)).rowcount:
                raise UnknownMessage(f"message {message_id!r} is not queued in channel"
                                     f" {channel!r}")

    def transmit_recipients(self, channel: str, message_id: str, recipients: int, *,
                            at: float | None = None) -> None:
        """More recipients of a copy that `transmit()` already counted were sent (a log follower
        sees one line per recipient, and counts the message at the first of them).

        Channel and MTA transmitted recipients += recipients; transmitted messages and octets
        do not move; last outbound activity = at. If the message is queued in the channel, the
        recipients come off the queued ones (BadEvent if more than remain; the message leaves
        the queue when none remain); if not, nothing is dequeued. Needs an outbound side.
        """
        _message_id(message_id)
        _amount(recipients, "recipients")
        when = _opt_time(at)
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=False, doing="transmit messages")
            self._take_recipients(conn, channel, index, message_id, recipients,
                                  "transmit", missing_ok=True)
            if when is None:
                when = time.time()
            conn.execute("UPDATE channels SET transmitted_recipients = transmitted_recipients"
                         " + ?, last_outbound_activity = ? WHERE idx = ?",
                         (recipients, when, index))
            conn.execute("UPDATE mta SET transmitted_recipients = transmitted_recipients + ?"
                         " WHERE id = 1", (recipients,))

    def drop_recipients(self, channel: str, message_id: str, recipients: int, *,
                        at: float | None = None) -> None:
        """Some recipients of a queued message are done without being transmitted (bounced,
        refused by the next hop): they come off the queued recipients, and the message leaves
        the queue when none remain. No counter moves. UnknownMessage if not queued; BadEvent
        if more than remain."""
        _message_id(message_id)
        _amount(recipients, "recipients")
        _opt_time(at)
        with self._write() as conn:
            index, _, _ = self._channel(conn, channel)
            self._take_recipients(conn, channel, index, message_id, recipients, "drop",
                                  missing_ok=False)

    def _take_recipients(self, conn: sqlite3.Connection, channel: str, index: int,
                         message_id: str, recipients: int, doing: str, *,
                         missing_ok: bool) -> None:
        queued = conn.execute(_QUEUED, (index, message_id)).fetchone()
        if queued is None:
            if missing_ok:
                return
            raise UnknownMessage(f"message {message_id!r} is not queued in channel"
                                 f" {channel!r}")
        remaining = queued[1]
        if recipients > remaining:
            raise BadEvent(f"cannot {doing} {recipients} recipients of message {message_id!r}:"
                           f" only {remaining} remain queued in channel {channel!r}")
        if recipients == remaining:
            conn.execute(_DEQUEUE, (index, message_id))
        elif recipients:
            conn.execute(_REDUCE, (recipients, index, message_id))

    def set_stored(self, channel: str, message_id: str, *, octets: int, recipients: int,
                   enqueued_at: float) -> None:
        """Make the channel's queue entry for the message exactly this, counting nothing.

        For reconciling with the MTA's own queue (`counters sync postfix`): the entry is
        created, changed or (with recipients 0) removed; received, transmitted and the MTA
        totals do not move, nor do activity times.
        """
        _message_id(message_id)
        _amount(octets, "octets")
        _amount(recipients, "recipients")
        when = _time(enqueued_at, "enqueued_at")
        with self._write() as conn:
            index, _, _ = self._channel(conn, channel)
            conn.execute(_DEQUEUE, (index, message_id))
            if recipients:
                conn.execute(_ENQUEUE, (index, message_id, when, octets, recipients))

    def queue_entries(self, message_id: str | None = None) -> list[QueueEntry]:
        """What is stored now: one entry per (message, channel), ordered by message id and
        channel index; only the given message's entries if `message_id` is given."""
        sql = ("SELECT q.message_id, c.name, q.enqueued_at, q.octets, q.recipients"
               " FROM queue AS q JOIN channels AS c ON c.idx = q.channel")
        with self._read() as conn:
            if message_id is None:
                rows = conn.execute(sql + " ORDER BY q.message_id, q.channel").fetchall()
            else:
                rows = conn.execute(sql + " WHERE q.message_id = ? ORDER BY q.channel",
                                    (message_id,)).fetchall()
        return [QueueEntry(*row) for row in rows]

    def reject(self, channel: str, *, reason: str = "", at: float | None = None) -> None:
        """The channel refused a message: rejected messages += 1; the reason is kept as the
        channel's last message rejection reason. Needs an inbound side."""
        text = _text(reason, "reason")
        _opt_time(at)
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=True, doing="reject messages")
            conn.execute("UPDATE channels SET rejected_messages = rejected_messages + 1,"
                         " last_message_rejection_reason = ? WHERE idx = ?", (text, index))

    # --- associations --------------------------------------------------------------------

    def open_inbound(self, channel: str, *, remote: str = "", key: str | None = None,
                     remote_kind: RemoteKind = RemoteKind.PEER, at: float | None = None) -> int:
        """An inbound association (the channel is the responder) was opened.

        Returns its assocIndex (unique among the MTA's associations, never reused). `key` is an
        optional caller-chosen name (e.g. 'smtpd[1234]') unique among the channel's live
        associations, so a log follower can close it later without keeping the index.
        accumulated inbound += 1; last inbound activity = at; inbound rejection reason = "".
        """
        return self._open(channel, True, remote, key, remote_kind, at)

    def open_outbound(self, channel: str, *, remote: str = "", key: str | None = None,
                      remote_kind: RemoteKind = RemoteKind.PEER, at: float | None = None) -> int:
        """An outbound association (the channel is the initiator) was opened; as above, with
        accumulated outbound, last outbound activity, and outbound failure reason = ""."""
        return self._open(channel, False, remote, key, remote_kind, at)

    def _open(self, channel: str, inbound: bool, remote: str, key: str | None,
              remote_kind: RemoteKind, at: float | None) -> int:
        remote = _text(remote, "remote")
        if key is not None:
            _display(key, "association key", empty=False)
        kind = _remote_kind(remote_kind)
        when = _opt_time(at)
        with self._write() as conn:
            index, direction, protocol = self._channel(conn, channel)
            _need_side(channel, direction, inbound=inbound,
                       doing=f"open {'inbound' if inbound else 'outbound'} associations")
            if key is not None and conn.execute(_ASSOC_BY_KEY, (index, key)).fetchone():
                raise BadEvent(f"association key {key!r} is already live in channel"
                               f" {channel!r}")
            if when is None:
                when = time.time()
            assoc = conn.execute(_OPEN_ASSOC, (index, int(inbound), key, remote, kind.value,
                                               protocol, when)).lastrowid
            assert assoc is not None
            if assoc > MAX_INDEX:
                raise DatabaseError(f"database {self._path}: no association index left"
                                    f" (assocIndex stops at {MAX_INDEX})")
            conn.execute(_CH_OPENED_IN if inbound else _CH_OPENED_OUT, (when, index))
            return assoc

    def close_association(self, channel: str, *, index: int | None = None,
                          key: str | None = None, at: float | None = None) -> None:
        """A live association of the channel ended (give exactly one of index or key).
        Updates the last inbound/outbound activity time. UnknownAssociation if not live."""
        if (index is None) == (key is None):
            raise BadEvent("close_association needs exactly one of index or key")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                                  or not 1 <= index <= MAX_INDEX):
            raise BadEvent(f"invalid association index {index!r}: an integer from 1 to"
                           f" {MAX_INDEX}")
        if key is not None:
            _display(key, "association key", empty=False)
        when = _opt_time(at)
        with self._write() as conn:
            ch_index, _, _ = self._channel(conn, channel)
            if key is not None:
                row = conn.execute(_ASSOC_BY_KEY, (ch_index, key)).fetchone()
                which = f"key {key!r}"
            else:
                row = conn.execute(_ASSOC_BY_INDEX, (ch_index, index)).fetchone()
                which = f"index {index}"
            if row is None:
                raise UnknownAssociation(f"no live association with {which} in channel"
                                         f" {channel!r}")
            assoc, inbound = row
            if when is None:
                when = time.time()
            conn.execute("DELETE FROM associations WHERE idx = ?", (assoc,))
            side = "inbound" if inbound else "outbound"
            conn.execute(f"UPDATE channels SET last_{side}_activity = ? WHERE idx = ?",
                         (when, ch_index))

    def refuse_inbound(self, channel: str, *, reason: str, at: float | None = None) -> None:
        """The channel refused an inbound association: rejected inbound += 1 (not counted in
        the accumulated total); inbound rejection reason = reason (at most 255 characters,
        longer is cut)."""
        self._bump_reason(channel, reason, at, inbound=True)

    def fail_outbound(self, channel: str, *, reason: str, at: float | None = None) -> None:
        """An outbound association attempt failed: failed outbound += 1 (not in the
        accumulated total); outbound failure reason = reason (cut at 255)."""
        self._bump_reason(channel, reason, at, inbound=False)

    def _bump_reason(self, channel: str, reason: str, at: float | None, *,
                     inbound: bool) -> None:
        text = _text(reason, "reason")
        _opt_time(at)
        if inbound:
            sql = ("UPDATE channels SET rejected_inbound_associations ="
                   " rejected_inbound_associations + 1, inbound_rejection_reason = ?"
                   " WHERE idx = ?")
        else:
            sql = ("UPDATE channels SET failed_outbound_associations ="
                   " failed_outbound_associations + 1, outbound_failure_reason = ?"
                   " WHERE idx = ?")
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=inbound,
                       doing="refuse inbound associations" if inbound
                       else "fail outbound associations")
            conn.execute(sql, (text, index))

    def schedule_retry(self, channel: str, *, retry_at: float | None) -> None:
        """The channel will next try to connect at `retry_at` (None: no retry scheduled).
        Needs an outbound side."""
        when = _opt_time(retry_at, "retry_at")
        with self._write() as conn:
            index, direction, _ = self._channel(conn, channel)
            _need_side(channel, direction, inbound=False, doing="schedule retries")
            conn.execute("UPDATE channels SET next_retry_at = ? WHERE idx = ?", (when, index))

    # --- reading and resetting -----------------------------------------------------------

    def data_version(self) -> int:
        """A number that changes when another connection commits to the database (SQLite's
        `PRAGMA data_version`): a reader polls it to know when a new snapshot is worth taking."""
        try:
            return int(self._connection().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._database_error(exc) from None

    def snapshot(self, *, at: float | None = None) -> Snapshot:
        """Every value at one instant, from one read transaction.

        `taken_at` is `at`, or the wall time when the read began. A few aggregate queries
        (queue and associations grouped by channel), not one per channel.
        """
        when = _opt_time(at)
        with self._read() as conn:
            if when is None:
                when = time.time()
            # Another program may have migrated the file since it was opened: never read a
            # schema with queries written for another one.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != schema.SCHEMA_VERSION:
                self._check_version(version)
                raise DatabaseError(f"database {self._path}: schema version {version}, not"
                                    f" {schema.SCHEMA_VERSION} as when it was opened")
            mta = conn.execute(_SNAP_MTA).fetchone()
            if mta is None:
                raise DatabaseError(f"database {self._path} has no mta row (damaged)")
            stored = conn.execute(_SNAP_MTA_STORED).fetchone()
            channel_rows = conn.execute(_SNAP_CHANNELS).fetchall()
            assoc_rows = conn.execute(_SNAP_ASSOCS).fetchall()
        return self._build_snapshot(when, mta, stored, channel_rows, assoc_rows)

    @staticmethod
    def _build_snapshot(when: float, mta: Any, stored: Any, channel_rows: list[Any],
                        assoc_rows: list[Any]) -> Snapshot:
        (appl_index, appl_name, appl_version, restarted_at, database_id,
         rx_messages, rx_octets, rx_recipients, tx_messages, tx_octets, tx_recipients) = mta
        directions = {d.value: d for d in Direction}
        kinds = {k.value: k for k in RemoteKind}
        channels = []
        for row in channel_rows:
            values = list(row)
            values[3] = directions[values[3]]
            channels.append(ChannelSnapshot(*values))
        associations = tuple(
            AssociationSnapshot(index, channel, bool(inbound), remote, kinds[kind], protocol,
                                opened_at)
            for index, channel, inbound, remote, kind, protocol, opened_at in assoc_rows)
        return Snapshot(
            taken_at=when,
            appl_index=appl_index,
            appl_name=appl_name,
            appl_version=_mailmib_version() if appl_version is None else appl_version,
            restarted_at=restarted_at,
            database_id=database_id,
            mta=MtaTotals(
                received_messages=rx_messages,
                received_octets=rx_octets,
                received_recipients=rx_recipients,
                stored_messages=stored[0],
                stored_octets=stored[1],
                stored_recipients=stored[2],
                transmitted_messages=tx_messages,
                transmitted_octets=tx_octets,
                transmitted_recipients=tx_recipients,
            ),
            channels=tuple(channels),
            associations=associations,
        )

    def clear(self, channels: Iterable[str] | None = None, *, at: float | None = None) -> None:
        """Zero the cumulative counters of the named channels (all when None).

        Queues and live associations stay (they are the present, not history); reasons go back
        to never. Any clear moves `restarted_at` to `at` so pollers see the reset; clearing
        all channels also zeroes the MTA's cumulative totals.

        Last-activity times and scheduled retries also stay. Naming an unknown channel raises
        UnknownChannel and clears nothing; an empty list of names clears nothing and leaves
        `restarted_at` alone. Only `None` means all (and zeroes the MTA totals).
        """
        when = _opt_time(at)
        names: list[str] | None = None
        if channels is not None:
            if isinstance(channels, str):
                raise BadEvent("clear takes a list of channel names, not one string")
            names = list(dict.fromkeys(channels))
            for name in names:
                if not isinstance(name, str):
                    raise BadEvent(f"invalid channel name {name!r}")
            if not names:
                return
        with self._write() as conn:
            if when is None:
                when = time.time()
            if names is None:
                conn.execute(_ZERO_CHANNEL)
                conn.execute("UPDATE mta SET received_messages = 0, received_octets = 0,"
                             " received_recipients = 0, transmitted_messages = 0,"
                             " transmitted_octets = 0, transmitted_recipients = 0,"
                             " restarted_at = ? WHERE id = 1", (when,))
                return
            indexes = [self._channel(conn, name)[0] for name in names]
            conn.executemany(_ZERO_CHANNEL + " WHERE idx = ?", [(i,) for i in indexes])
            conn.execute("UPDATE mta SET restarted_at = ? WHERE id = 1", (when,))


    # --- log followers: position, line kinds, own state ----------------------------------
    #
    # A follower calls these inside the `batch()` that applies a run of lines, so the events,
    # what it learned and where it stopped are committed together or not at all.

    def log_position(self, source: str) -> LogPosition | None:
        """Where the follower named `source` stopped, or None if it never saved a position."""
        _display(source, "source", empty=False)
        with self._read() as conn:
            row = conn.execute("SELECT device, inode, head, offset FROM log_positions"
                               " WHERE source = ?", (source,)).fetchone()
        if row is None:
            return None
        return LogPosition(int(row[0]), int(row[1]), bytes(row[2]), int(row[3]))

    def save_log_position(self, source: str, position: LogPosition) -> None:
        """Record that `source`'s lines before `position` are applied (call it in the batch
        that applied them)."""
        _display(source, "source", empty=False)
        if not isinstance(position, LogPosition):
            raise BadEvent(f"position must be a LogPosition, not {position!r}")
        _amount(position.offset, "offset")
        if len(position.head) > HEAD_BYTES:
            raise BadEvent(f"a position's head is at most {HEAD_BYTES} bytes")
        with self._write() as conn:
            conn.execute("INSERT INTO log_positions"
                         " (source, device, inode, head, offset, updated_at)"
                         " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
                         " device = excluded.device, inode = excluded.inode,"
                         " head = excluded.head, offset = excluded.offset,"
                         " updated_at = excluded.updated_at",
                         (source, position.device, position.inode, position.head,
                          position.offset, time.time()))

    def count_lines(self, source: str, kind: str, *, mapped: bool, lines: int = 1,
                    sample: str = "", at: float | None = None) -> None:
        """`lines` more lines of `kind` were seen by `source` (`mapped`: turned into events).
        The sample (the last such line) is kept cut at 255 characters and printable."""
        _display(source, "source", empty=False)
        _display(kind, "line kind", empty=False)
        _amount(lines, "lines")
        text = _text(sample, "sample")
        when = _opt_time(at)
        with self._write() as conn:
            if when is None:
                when = time.time()
            conn.execute("INSERT INTO log_lines (source, kind, mapped, lines, last_at, sample)"
                         " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, kind) DO UPDATE SET"
                         " mapped = excluded.mapped, lines = lines + excluded.lines,"
                         " last_at = excluded.last_at, sample = excluded.sample",
                         (source, kind, int(bool(mapped)), lines, when, text))

    def line_kinds(self, source: str | None = None) -> list[LineKind]:
        """The line kinds followers counted (of `source` only, if given), by source and kind."""
        sql = "SELECT source, kind, mapped, lines, last_at, sample FROM log_lines"
        with self._read() as conn:
            if source is None:
                rows = conn.execute(sql + " ORDER BY source, kind").fetchall()
            else:
                rows = conn.execute(sql + " WHERE source = ? ORDER BY kind",
                                    (source,)).fetchall()
        return [LineKind(src, kind, bool(mapped), lines, last_at, sample)
                for src, kind, mapped, lines, last_at, sample in rows]

    def follower_state(self, source: str, key: str) -> str | None:
        """A value the follower `source` saved under `key`, or None."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM follower_state WHERE source = ? AND key = ?",
                               (source, key)).fetchone()
        return None if row is None else str(row[0])

    def set_follower_state(self, source: str, key: str, value: str | None) -> None:
        """Save (or with None, forget) a follower's value; its write time is kept with it."""
        if not isinstance(source, str) or not source or not isinstance(key, str) or not key:
            raise BadEvent("a follower state needs a non-empty source and key")
        if value is not None and not isinstance(value, str):
            raise BadEvent(f"a follower state value is a string, not {value!r}")
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM follower_state WHERE source = ? AND key = ?",
                             (source, key))
            else:
                conn.execute("INSERT INTO follower_state (source, key, value, updated_at)"
                             " VALUES (?, ?, ?, ?) ON CONFLICT (source, key) DO UPDATE SET"
                             " value = excluded.value, updated_at = excluded.updated_at",
                             (source, key, value, time.time()))

    def follower_states(self, source: str, prefix: str = "") -> dict[str, tuple[str, float]]:
        """Every value of follower `source` whose key starts with `prefix`:
        {key: (value, wall time of its last write)}."""
        with self._read() as conn:
            rows = conn.execute("SELECT key, value, updated_at FROM follower_state"
                                " WHERE source = ? AND substr(key, 1, ?) = ?",
                                (source, len(prefix), prefix)).fetchall()
        return {key: (value, updated_at) for key, value, updated_at in rows}

    def forget_follower_states(self, source: str, prefix: str, *, before: float) -> int:
        """Forget follower `source`'s values under `prefix` last written before `before`
        (wall time); how many were forgotten."""
        when = _time(before, "before")
        with self._write() as conn:
            return conn.execute("DELETE FROM follower_state WHERE source = ?"
                                " AND substr(key, 1, ?) = ? AND updated_at < ?",
                                (source, len(prefix), prefix, when)).rowcount
