"""The log follower: file identity and offset, rotation, exactly-once across SIGKILL.

Most tests use a sink that counts, in the store and in the follower's own transaction, how
many times it saw each (unique) line: exactly-once means every count is 1. The SIGKILL test
runs the real `counters follow postfix` on a synthetic Postfix log and compares its counters
with those of one uninterrupted pass.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from counters import Store
from counters.feed import SOURCE, PostfixFeed
from counters.follow import LogFollower
from counters.snapshot import Snapshot
from tests.conftest import REPO


class CountingSink:
    """Counts each line in the store (inside the follower's batch) and the batches."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []

    def apply(self, lines: Sequence[bytes]) -> None:
        self.batches.append(len(lines))
        for raw in lines:
            key = "line:" + raw.decode("utf-8", "replace")[:200]
            seen = self.store.follower_state("test", key)
            self.store.set_follower_state("test", key, str(int(seen or 0) + 1))


def seen(store: Store) -> dict[str, int]:
    return {key[5:]: int(value) for key, (value, _) in
            store.follower_states("test", "line:").items()}


def follower(store: Store, path: Path, **options: object) -> LogFollower:
    return LogFollower(store, path, CountingSink(store), source="test", poll=0.01,
                       **options)  # type: ignore[arg-type]


def drain(follow: LogFollower) -> None:
    while follow.step():
        pass


def write(path: Path, *lines: str, mode: str = "a") -> None:
    with open(path, mode) as file:
        file.write("".join(line + "\n" for line in lines))


def numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix} line {i}" for i in range(count)]


def assert_once(store: Store, *groups: list[str]) -> None:
    expected = {line: 1 for group in groups for line in group}
    assert seen(store) == expected


# --- files appearing, growing, rotating ------------------------------------------------------


def test_a_log_that_does_not_exist_yet(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    follow = follower(store, log)
    assert follow.step() is False
    write(log, *numbered("a", 3))
    drain(follow)
    assert_once(store, numbered("a", 3))
    position = store.log_position("test")
    assert position is not None and position.offset == log.stat().st_size
    assert position.inode == log.stat().st_ino


def test_partial_lines_wait_for_their_newline(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("first\nsec")
    follow = follower(store, log)
    drain(follow)
    assert seen(store) == {"first": 1}
    with open(log, "a") as file:
        file.write("ond\n")
    drain(follow)
    assert seen(store) == {"first": 1, "second": 1}


def test_rename_and_create_while_running(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 10))
    follow = follower(store, log)
    drain(follow)
    write(log, *numbered("b", 5))
    log.rename(tmp_path / "mail.log.1")
    write(tmp_path / "mail.log.1", *numbered("c", 3))  # the writer has not reopened yet
    write(log, *numbered("d", 4))
    drain(follow)
    write(log, *numbered("e", 2))
    drain(follow)
    assert_once(store, numbered("a", 10), numbered("b", 5), numbered("c", 3),
                numbered("d", 4), numbered("e", 2))


def test_rename_and_create_while_stopped(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 10))
    drain(follower(store, log))
    write(log, *numbered("b", 5))
    log.rename(tmp_path / "mail.log-20260501")
    (tmp_path / "mail.log.2.gz").write_bytes(b"compressed copies are never read")
    write(log, *numbered("c", 4))
    drain(follower(store, log))
    assert_once(store, numbered("a", 10), numbered("b", 5), numbered("c", 4))


def test_copytruncate_while_running(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 10))
    follow = follower(store, log)
    drain(follow)
    write(log, *numbered("b", 5))              # not read before the copy
    shutil.copyfile(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    write(log, *numbered("c", 3))
    drain(follow)
    assert_once(store, numbered("a", 10), numbered("b", 5), numbered("c", 3))


def test_copytruncate_refilled_past_the_old_offset(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 3))
    follow = follower(store, log)
    drain(follow)
    shutil.copyfile(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    write(log, *numbered("much longer lines than before, to pass the old offset", 6))
    drain(follow)
    assert_once(store, numbered("a", 3),
                numbered("much longer lines than before, to pass the old offset", 6))


def test_copytruncate_while_stopped(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 10))
    drain(follower(store, log))
    write(log, *numbered("b", 5))
    shutil.copyfile(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    write(log, *numbered("c", 3))
    drain(follower(store, log))
    assert_once(store, numbered("a", 10), numbered("b", 5), numbered("c", 3))


def test_truncated_with_no_copy_starts_again_and_warns(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 10))
    warnings: list[str] = []
    follow = follower(store, log, warn=warnings.append)
    drain(follow)
    os.truncate(log, 0)
    write(log, *numbered("c", 3))
    drain(follow)
    assert_once(store, numbered("a", 10), numbered("c", 3))
    assert any("truncated" in text for text in warnings)


def test_start_at_end_skips_history_only_the_first_time(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("old", 5))
    with open(log, "a") as file:
        file.write("half a li")
    drain(follower(store, log, start_at_end=True))
    with open(log, "a") as file:
        file.write("ne\n")
    write(log, *numbered("new", 2))
    drain(follower(store, log, start_at_end=True))  # resumes: the saved position wins
    # The line being written when it started is read whole, never as a fragment.
    assert_once(store, ["half a line"], numbered("new", 2))


# --- batching and failures -------------------------------------------------------------------


def test_batches_hold_up_to_max_lines(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, *numbered("a", 2500))
    follow = follower(store, log, max_lines=1000, max_seconds=60)
    drain(follow)
    assert isinstance(follow.sink, CountingSink)
    assert follow.sink.batches == [1000, 1000, 500]
    assert len(seen(store)) == 2500


def test_a_locked_database_rolls_back_and_retries(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    db = tmp_path / "mailmib.db"
    write(log, *numbered("a", 5))
    with Store(db, busy_timeout=0.05) as store:
        warnings: list[str] = []
        follow = follower(store, log, warn=warnings.append)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        assert follow.step() is False
        assert warnings and "locked" in warnings[0]
        blocker.execute("ROLLBACK")
        blocker.close()
        drain(follow)
        assert_once(store, numbered("a", 5))


def test_malformed_binary_and_huge_lines_are_counted_not_applied(store: Store,
                                                                 tmp_path: Path) -> None:
    good = [
        "Nov 27 15:37:49 mx postfix/smtpd[1]: AAAA1: client=c[192.0.2.1]",
        "Nov 27 15:37:49 mx postfix/cleanup[2]: AAAA1: message-id=<a@b>",
        "Nov 27 15:37:49 mx postfix/qmgr[3]: AAAA1: from=<a@b>, size=100, nrcpt=1 (queue active)",
    ]
    log = tmp_path / "mail.log"
    with open(log, "wb") as file:
        file.write(good[0].encode() + b"\n")
        file.write(b"\x00\xff\xfe binary \x01\x02 garbage\n")
        file.write(b"Nov 27 15:37:49 mx postfix/smtpd[1]: AAAA2: client=c[1\n")  # cut short
        file.write(good[1].encode() + b"\n")
        file.write(b"Nov 27 15:37:49 mx postfix/smtpd[1]: " + b"x" * (1 << 20) + b"\n")
        file.write(good[2].encode() + b"\n")
    follow = LogFollower(store, log, PostfixFeed(store), source=SOURCE, max_line=16384)
    drain(follow)
    kinds = {k.kind: k.lines for k in store.line_kinds(SOURCE)}
    assert kinds["malformed"] == 1
    assert kinds["oversized"] == 1
    assert kinds["smtpd: client"] == 2  # the cut one still names a queue id: harmless
    shot = store.snapshot()
    assert shot.mta.received_messages == 1 and shot.mta.stored_messages == 1
    position = store.log_position(SOURCE)
    assert position is not None and position.offset == log.stat().st_size


def test_a_huge_line_still_being_written_is_not_committed_half(store: Store,
                                                               tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    write(log, "before")
    with open(log, "ab") as file:
        file.write(b"y" * 200_000)
    follow = follower(store, log, max_line=1000)
    drain(follow)
    position = store.log_position("test")
    assert position is not None and position.offset == len("before\n")
    with open(log, "ab") as file:
        file.write(b"y" * 100 + b"\nafter\n")
    drain(follow)
    lines = seen(store)
    assert lines.pop("before") == 1 and lines.pop("after") == 1
    assert list(lines.values()) == [1] and len(next(iter(lines))) == 200
    # ... and resumed from scratch, the same
    drain(follower(store, log, max_line=1000))
    assert sum(seen(store).values()) == 3


# --- SIGKILL at random points ----------------------------------------------------------------


def synthetic_log(messages: int, seed: int = 4) -> list[str]:
    """A Postfix-shaped log: sessions, local and relayed deliveries, deferrals, refusals."""
    rng = random.Random(seed)
    lines = []
    for n in range(messages):
        qid = f"{0xA00000 + n:X}Q"
        pid = 1000 + n % 7
        stamp = f"Nov 27 10:{n // 60 % 60:02d}:{n % 60:02d} mx"
        rcpts = rng.randint(1, 3)
        lines += [f"{stamp} postfix/smtpd[{pid}]: connect from c{n}[192.0.2.{n % 250}]",
                  f"{stamp} postfix/smtpd[{pid}]: {qid}: client=c{n}[192.0.2.{n % 250}]"]
        if n % 11 == 0:
            lines.append(f"{stamp} postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from c{n}"
                         f"[192.0.2.1]: 550 5.1.1 <x@y>: Recipient address rejected;"
                         f" from=<a@b> to=<x@y> proto=ESMTP helo=<c>")
        lines += [f"{stamp} postfix/cleanup[9]: {qid}: message-id=<{n}@c>",
                  f"{stamp} postfix/smtpd[{pid}]: disconnect from c{n}[192.0.2.1] commands=5",
                  f"{stamp} postfix/qmgr[8]: {qid}: from=<a@b>, size={500 + n},"
                  f" nrcpt={rcpts} (queue active)"]
        deferred = False
        for r in range(rcpts):
            kind = rng.choice(["local", "smtp", "smtp", "defer"])
            if kind == "local":
                lines.append(f"{stamp} postfix/local[7]: {qid}: to=<u{r}@here>, relay=local,"
                             f" delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (ok)")
            elif kind == "smtp":
                lines.append(f"{stamp} postfix/smtp[6]: {qid}: to=<u{r}@far>,"
                             f" relay=mx[192.0.2.9]:25, delay=0.1, delays=0/0/0/0.1,"
                             f" dsn=2.0.0, status=sent (250 ok)")
            else:
                deferred = True
                lines += [f"{stamp} postfix/smtp[5]: connect to mx[192.0.2.8]:25: Connection"
                          " refused",
                          f"{stamp} postfix/smtp[5]: {qid}: to=<u{r}@down>, relay=none,"
                          f" delay=0.1, delays=0/0/0/0.1, dsn=4.4.1, status=deferred"
                          f" (connect to mx[192.0.2.8]:25: Connection refused)"]
        if not deferred:
            lines.append(f"{stamp} postfix/qmgr[8]: {qid}: removed")
        if n % 17 == 0:
            lines.append(f"{stamp} garbage \x01 line {n}")
    return lines


def comparable(shot: Snapshot) -> object:
    channels = sorted(
        (c.name, c.received_messages, c.received_octets, c.received_recipients,
         c.rejected_messages, c.transmitted_messages, c.transmitted_octets,
         c.transmitted_recipients, c.stored_messages, c.stored_octets, c.stored_recipients,
         c.oldest_stored_at, c.accumulated_inbound_associations, c.inbound_associations,
         c.accumulated_outbound_associations, c.failed_outbound_associations,
         c.outbound_failure_reason, c.last_inbound_activity, c.last_outbound_activity)
        for c in shot.channels)
    return shot.mta, channels


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    lines = synthetic_log(250)
    log = tmp_path / "mail.log"
    db = tmp_path / "killed.db"
    reference = tmp_path / "reference.db"
    whole = tmp_path / "whole.log"
    write(whole, *lines)
    with Store(reference) as store:
        drain(LogFollower(store, whole, PostfixFeed(store), source=SOURCE))
        expected = comparable(store.snapshot(at=2e9))
        expected_kinds = {(k.kind, k.lines) for k in store.line_kinds(SOURCE)}
    rng = random.Random(7)
    command = [sys.executable, "-m", "counters", "--db", str(db), "follow", "postfix",
               str(log), "--batch-lines", "5", "--poll", "0.01"]
    written = 0
    kills = 0
    offsets: list[int] = []
    while written < len(lines) or kills < 6:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(0.3, 0.8)
        while time.monotonic() < deadline:
            if written < len(lines):
                step = rng.randint(1, 12)
                write(log, *lines[written:written + step])
                written += step
            time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if db.exists():
            with Store(db, read_only=True) as store:
                position = store.log_position(SOURCE)
            offsets.append(position.offset if position else 0)
    done = subprocess.run([*command, "--once"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        assert comparable(store.snapshot(at=2e9)) == expected
        assert {(k.kind, k.lines) for k in store.line_kinds(SOURCE)} == expected_kinds
    # The kills landed while it was working: it had stopped part-way, at several places.
    size = log.stat().st_size
    assert len({offset for offset in offsets if 0 < offset < size}) >= 3, (offsets, size)
