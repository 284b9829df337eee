"""The counters database's tables, its schema version and the migrations that reach it.

The version lives in the database as `PRAGMA user_version`. `MIGRATIONS[n]` takes a database
from version n to n + 1, so opening any older file walks it up step by step inside one
`BEGIN IMMEDIATE` transaction; a file newer than `SCHEMA_VERSION` is refused, never guessed at.

Why the tables look as they do:
- `mta` is one row: the applTable identity (index, name, version, when counting restarted, a
  random id that changes when the file is recreated) and the MTA-wide running totals.
- `channels` holds one mtaGroupTable row each: settings plus running counters. `idx` is
  AUTOINCREMENT, so an index is never handed out twice, even after a rollback or a reopen.
- `queue` holds what is stored *now*, one row per (message id, channel). Stored messages,
  volume, recipients and the oldest enqueue time are aggregates of it, never running counters,
  so they cannot drift or go negative. The key leads with the message id, so "is this id
  anywhere in the MTA?" (MTA received/stored count a message once) is a prefix lookup, and no
  second index has to be written on every event; the per-channel aggregates sort once per
  snapshot instead, which is far cheaper than an index page per write.
- `associations` holds the live associations only (assocTable lists active ones); `idx` is
  AUTOINCREMENT for the same never-reuse rule, and `key` is unique among a channel's live ones.

Version 2 adds what log followers (`counters follow postfix`) keep, so that it is committed in
the same transaction as the events a log produced (exactly-once across crashes):
- `log_positions`: per source, the followed file's identity (device, inode, its first bytes)
  and the offset of the first line not yet applied.
- `log_lines`: per source and line kind, how many lines were seen and whether the follower
  maps that kind to events; unmapped and unparsable kinds are counted here, never fatal.
- `follower_state`: a follower's own keyed values (e.g. what it knows of a queue id), with the
  wall time of their last write, which `counters sync` uses to leave alone what the follower
  touched after a queue listing began.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

SCHEMA_VERSION = 2

#: Page size of new files. Every event rewrites a handful of pages (queue, channel, MTA
#: totals), and in WAL mode each costs one frame written per commit: 1 KiB pages made an
#: event ~30 % cheaper than SQLite's default 4 KiB ones here, and the tables stay small.
#: (It cannot change once a file is in WAL mode; existing files keep theirs.)
PAGE_SIZE = 1024

_V1: Sequence[str] = (
    """
    CREATE TABLE mta (
        id                      INTEGER PRIMARY KEY CHECK (id = 1),
        appl_index              INTEGER NOT NULL DEFAULT 1,
        appl_name               TEXT    NOT NULL DEFAULT 'mailmib',
        appl_version            TEXT,   -- NULL: the running mailmib's own version
        database_id             TEXT    NOT NULL,
        created_at              REAL    NOT NULL,
        restarted_at            REAL    NOT NULL,
        received_messages       INTEGER NOT NULL DEFAULT 0,
        received_octets         INTEGER NOT NULL DEFAULT 0,
        received_recipients     INTEGER NOT NULL DEFAULT 0,
        transmitted_messages    INTEGER NOT NULL DEFAULT 0,
        transmitted_octets      INTEGER NOT NULL DEFAULT 0,
        transmitted_recipients  INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE channels (
        idx                                 INTEGER PRIMARY KEY AUTOINCREMENT,
        name                                TEXT    NOT NULL UNIQUE,
        direction                           TEXT    NOT NULL
                                                    CHECK (direction IN ('in', 'out', 'both')),
        protocol                            TEXT    NOT NULL,
        created_at                          REAL    NOT NULL,
        received_messages                   INTEGER NOT NULL DEFAULT 0,
        rejected_messages                   INTEGER NOT NULL DEFAULT 0,
        transmitted_messages                INTEGER NOT NULL DEFAULT 0,
        received_octets                     INTEGER NOT NULL DEFAULT 0,
        transmitted_octets                  INTEGER NOT NULL DEFAULT 0,
        received_recipients                 INTEGER NOT NULL DEFAULT 0,
        transmitted_recipients              INTEGER NOT NULL DEFAULT 0,
        accumulated_inbound_associations    INTEGER NOT NULL DEFAULT 0,
        accumulated_outbound_associations   INTEGER NOT NULL DEFAULT 0,
        rejected_inbound_associations       INTEGER NOT NULL DEFAULT 0,
        failed_outbound_associations        INTEGER NOT NULL DEFAULT 0,
        last_inbound_activity               REAL,
        last_outbound_activity              REAL,
        inbound_rejection_reason            TEXT,   -- NULL: never; '': last attempt succeeded
        outbound_failure_reason             TEXT,
        last_message_rejection_reason       TEXT,
        next_retry_at                       REAL
    )
    """,
    """
    CREATE TABLE queue (
        message_id   TEXT    NOT NULL,
        channel      INTEGER NOT NULL,
        enqueued_at  REAL    NOT NULL,
        octets       INTEGER NOT NULL CHECK (octets >= 0),
        recipients   INTEGER NOT NULL CHECK (recipients >= 0),
        PRIMARY KEY (message_id, channel)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE associations (
        idx          INTEGER PRIMARY KEY AUTOINCREMENT,
        channel      INTEGER NOT NULL,
        inbound      INTEGER NOT NULL CHECK (inbound IN (0, 1)),
        key          TEXT,
        remote       TEXT    NOT NULL,
        remote_kind  TEXT    NOT NULL CHECK (remote_kind IN ('peer', 'ua')),
        protocol     TEXT    NOT NULL,
        opened_at    REAL    NOT NULL
    )
    """,
    """
    CREATE UNIQUE INDEX associations_by_key ON associations (channel, key)
        WHERE key IS NOT NULL
    """,
)


def _to_v1(conn: sqlite3.Connection, *, now: float, database_id: str) -> None:
    for statement in _V1:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO mta (id, database_id, created_at, restarted_at) VALUES (1, ?, ?, ?)",
        (database_id, now, now),
    )


_V2: Sequence[str] = (
    """
    CREATE TABLE log_positions (
        source      TEXT    PRIMARY KEY,
        device      INTEGER NOT NULL,
        inode       INTEGER NOT NULL,
        head        BLOB    NOT NULL,   -- the file's first bytes (at most 256) when last read
        offset      INTEGER NOT NULL CHECK (offset >= 0),
        updated_at  REAL    NOT NULL
    )
    """,
    """
    CREATE TABLE log_lines (
        source      TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        mapped      INTEGER NOT NULL CHECK (mapped IN (0, 1)),
        lines       INTEGER NOT NULL DEFAULT 0,
        last_at     REAL    NOT NULL,
        sample      TEXT    NOT NULL,   -- the last such line, cut and made printable
        PRIMARY KEY (source, kind)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE follower_state (
        source      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        value       TEXT    NOT NULL,
        updated_at  REAL    NOT NULL,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID
    """,
)


def _to_v2(conn: sqlite3.Connection, *, now: float, database_id: str) -> None:
    for statement in _V2:
        conn.execute(statement)


#: MIGRATIONS[n] brings a database at version n to version n + 1 (0 is an empty file).
MIGRATIONS: Sequence[Callable[..., None]] = (_to_v1, _to_v2)

assert len(MIGRATIONS) == SCHEMA_VERSION


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def has_tables(conn: sqlite3.Connection) -> bool:
    """Whether the file already holds any table (an empty version-0 file holds none)."""
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def migrate(conn: sqlite3.Connection, from_version: int, *, now: float,
            database_id: str) -> None:
    """Apply every migration after `from_version`, then record SCHEMA_VERSION.

    The caller holds a write transaction; this only executes statements in it (never
    `executescript`, which would commit behind the caller's back).
    """
    for step in MIGRATIONS[from_version:]:
        step(conn, now=now, database_id=database_id)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
