"""Store additions for log followers: schema v2 (and the v1 → v2 migration), partial
transmissions and drops, reconciling a queue entry, positions, line kinds, follower state."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from counters import BadEvent, Direction, Store, UnknownMessage, schema
from counters.store import LogPosition, QueueEntry


def make_v1(path: Path) -> None:
    """A database as mailmib with schema version 1 left it, with some traffic."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    schema.MIGRATIONS[0](conn, now=1000.0, database_id="v1file")
    conn.execute("INSERT INTO channels (name, direction, protocol, created_at,"
                 " received_messages) VALUES ('smtpd', 'in', '1.3.6.1.2.1.27.4.25', 1000, 7)")
    conn.execute("INSERT INTO queue VALUES ('m1', 1, 1000, 10, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()


def test_a_version_1_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_v1(db)
    with pytest.raises(Exception, match="schema version 1"):
        Store(db, read_only=True)
    with Store(db) as store:
        shot = store.snapshot()
        assert shot.database_id == "v1file"
        smtpd = shot.channel("smtpd")
        assert smtpd is not None and smtpd.received_messages == 7
        assert smtpd.stored_messages == 1
        assert store.log_position("postfix") is None
        store.save_log_position("postfix", LogPosition(1, 2, b"head", 3))
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    assert schema.SCHEMA_VERSION == 2
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"log_positions", "log_lines", "follower_state"} <= tables


def test_transmit_recipients_counts_recipients_not_messages(store: Store) -> None:
    store.add_channel("smtpd", direction=Direction.IN)
    store.add_channel("smtp", direction=Direction.OUT)
    store.receive("smtpd", "m1", octets=100, recipients=3)
    store.transfer("smtpd", "smtp", "m1")
    store.transmit("smtp", "m1", recipients=1)
    store.transmit_recipients("smtp", "m1", 1)
    shot = store.snapshot()
    smtp = shot.channel("smtp")
    assert smtp is not None
    assert (smtp.transmitted_messages, smtp.transmitted_octets,
            smtp.transmitted_recipients, smtp.stored_recipients) == (1, 100, 2, 1)
    assert (shot.mta.transmitted_messages, shot.mta.transmitted_recipients) == (1, 2)
    with pytest.raises(BadEvent, match="only 1 remain"):
        store.transmit_recipients("smtp", "m1", 2)
    store.transmit_recipients("smtp", "m1", 1)
    assert store.queue_entries() == []
    store.transmit_recipients("smtp", "m1", 1)  # not queued: counted, nothing dequeued
    assert store.snapshot().mta.transmitted_recipients == 4
    with pytest.raises(BadEvent, match="inbound-only"):
        store.transmit_recipients("smtpd", "m1", 1)


def test_drop_recipients_counts_nothing(store: Store) -> None:
    store.add_channel("smtpd", direction=Direction.IN)
    store.receive("smtpd", "m1", octets=100, recipients=2)
    before = store.snapshot()
    store.drop_recipients("smtpd", "m1", 1)
    assert store.queue_entries() == [QueueEntry("m1", "smtpd", before.channels[0]
                                                .oldest_stored_at or 0, 100, 1)]
    store.drop_recipients("smtpd", "m1", 1)
    after = store.snapshot()
    assert after.mta.stored_messages == 0
    assert after.mta.received_messages == before.mta.received_messages
    assert after.mta.transmitted_recipients == 0
    with pytest.raises(UnknownMessage):
        store.drop_recipients("smtpd", "m1", 1)


def test_set_stored_puts_exactly_that_in_the_queue(store: Store) -> None:
    store.add_channel("queue", direction=Direction.IN)
    store.set_stored("queue", "m1", octets=300, recipients=2, enqueued_at=1000.0)
    store.set_stored("queue", "m2", octets=5, recipients=1, enqueued_at=2000.0)
    store.set_stored("queue", "m1", octets=310, recipients=1, enqueued_at=1500.0)
    assert store.queue_entries() == [QueueEntry("m1", "queue", 1500.0, 310, 1),
                                     QueueEntry("m2", "queue", 2000.0, 5, 1)]
    assert store.queue_entries("m2") == [QueueEntry("m2", "queue", 2000.0, 5, 1)]
    shot = store.snapshot(at=3000.0)
    assert shot.mta.received_messages == 0 and shot.mta.stored_messages == 2
    store.set_stored("queue", "m1", octets=0, recipients=0, enqueued_at=0)
    assert [e.message_id for e in store.queue_entries()] == ["m2"]


def test_positions_line_kinds_and_state(store: Store) -> None:
    position = LogPosition(64768, 1234, b"Nov 27 15:37:49 mx postfix", 999)
    store.save_log_position("postfix", position)
    assert store.log_position("postfix") == position
    store.save_log_position("postfix", LogPosition(1, 2, b"", 0))
    assert store.log_position("postfix") == LogPosition(1, 2, b"", 0)
    with pytest.raises(BadEvent):
        store.save_log_position("postfix", LogPosition(1, 2, b"x" * 257, 0))
    store.count_lines("postfix", "smtpd: connect", mapped=True, sample="a\x00b", at=5.0)
    store.count_lines("postfix", "smtpd: connect", mapped=True, lines=4, sample="c", at=6.0)
    store.count_lines("postfix", "malformed", mapped=False, sample="x" * 300, at=6.0)
    kinds = store.line_kinds("postfix")
    assert [(k.kind, k.mapped, k.lines, k.last_at) for k in kinds] == [
        ("malformed", False, 1, 6.0), ("smtpd: connect", True, 5, 6.0)]
    assert len(kinds[0].sample) == 255 and kinds[1].sample == "c"
    store.set_follower_state("postfix", "q:A", "one")
    store.set_follower_state("postfix", "x:B", "")
    assert store.follower_state("postfix", "q:A") == "one"
    assert set(store.follower_states("postfix", "q:")) == {"q:A"}
    written = store.follower_states("postfix")["x:B"][1]
    assert abs(written - time.time()) < 5
    assert store.forget_follower_states("postfix", "x:", before=written + 1) == 1
    store.set_follower_state("postfix", "q:A", None)
    assert store.follower_states("postfix") == {}


def test_the_position_commits_with_the_batch_or_not_at_all(store: Store) -> None:
    store.add_channel("smtpd", direction=Direction.IN)
    with pytest.raises(RuntimeError), store.batch():
        store.receive("smtpd", "m1", octets=1, recipients=1)
        store.save_log_position("postfix", LogPosition(1, 2, b"", 50))
        raise RuntimeError("killed half-way")
    assert store.log_position("postfix") is None
    assert store.snapshot().mta.received_messages == 0
