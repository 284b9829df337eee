"""`counters sync postfix` (reconciling with `postqueue -j`) and the follow/sync CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from counters import BadEvent, Direction, Store
from counters import postfix as pf
from counters.feed import SOURCE, PostfixFeed, load_message
from counters.sync import QueuedMessage, parse_postqueue, reconcile
from tests.conftest import REPO

SAMPLE = Path(__file__).parent / "data" / "postfix-sample.log"


def counters(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "counters", "--db", str(db), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def fake_postqueue(tmp_path: Path, messages: list[dict[str, object]], status: int = 0) -> Path:
    script = tmp_path / "postqueue"
    body = "".join(json.dumps(m) + "\n" for m in messages)
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{body}EOF\nexit {status}\n")
    script.chmod(0o755)
    return script


def entry(queue_id: str, arrival: float, size: int, *recipients: str) -> dict[str, object]:
    return {"queue_name": "deferred", "queue_id": queue_id, "arrival_time": arrival,
            "message_size": size, "forced_expire": False, "sender": "a@b",
            "recipients": [{"address": r, "delay_reason": "later"} for r in recipients]}


def test_parse_postqueue() -> None:
    assert parse_postqueue([json.dumps(entry("AB12C", 1000, 300, "x@y", "z@y")), ""]) == [
        QueuedMessage("AB12C", 1000.0, 300, ("x@y", "z@y"))]
    with pytest.raises(BadEvent, match="line 1"):
        parse_postqueue(["{not json"])
    with pytest.raises(BadEvent, match="line 2"):
        parse_postqueue(["", json.dumps({"queue_id": "X"})])


def test_reconcile_adds_fixes_and_removes(store: Store) -> None:
    feed = PostfixFeed(store)
    with store.batch():
        feed.apply([
            b"Nov 27 10:00:00 mx postfix/smtpd[1]: AAAA1: client=c[192.0.2.1]",
            b"Nov 27 10:00:00 mx postfix/cleanup[2]: AAAA1: message-id=<1@c>",
            b"Nov 27 10:00:00 mx postfix/qmgr[3]: AAAA1: from=<a@b>, size=100, nrcpt=2"
            b" (queue active)",
            b"Nov 27 10:00:01 mx postfix/smtp[4]: AAAA1: to=<far@x>, relay=none, delay=1,"
            b" delays=0/0/1/0, dsn=4.4.1, status=deferred (connect to x: refused)",
            b"Nov 27 10:00:00 mx postfix/smtpd[1]: BBBB1: client=c[192.0.2.1]",
            b"Nov 27 10:00:00 mx postfix/cleanup[2]: BBBB1: message-id=<2@c>",
            b"Nov 27 10:00:00 mx postfix/qmgr[3]: BBBB1: from=<a@b>, size=50, nrcpt=1"
            b" (queue active)",
        ])
    received = store.snapshot().mta.received_messages
    listing = [QueuedMessage("AAAA1", 5000.0, 100, ("far@x", "near@x")),
               QueuedMessage("CCCC1", 4000.0, 70, ("c@x",))]
    report = reconcile(store, listing, started_at=time.time() + 1)
    assert (report.added, report.changed, report.removed) == (["CCCC1"], ["AAAA1"], ["BBBB1"])
    entries = {(e.message_id, e.channel): (e.enqueued_at, e.octets, e.recipients)
               for e in store.queue_entries()}
    # far@x stays where its delivery attempt put it; near@x never left smtpd.
    assert entries == {("AAAA1", "smtp"): (5000.0, 100, 1),
                       ("AAAA1", "smtpd"): (5000.0, 100, 1),
                       ("CCCC1", "queue"): (4000.0, 70, 1)}
    assert store.snapshot().mta.received_messages == received      # counts nothing
    assert load_message(store, "BBBB1") is None
    queued = load_message(store, "CCCC1")
    assert queued is not None and queued.source == "queue"
    again = reconcile(store, listing, started_at=time.time() + 1)
    assert (again.added, again.changed, again.removed) == ([], [], [])


def test_reconcile_leaves_what_the_log_touched_after_the_listing(store: Store) -> None:
    store.add_channel("smtpd", direction=Direction.IN)
    started = time.time()
    with store.batch():
        PostfixFeed(store).apply([
            b"Nov 27 10:00:00 mx postfix/smtpd[1]: DDDD1: client=c[192.0.2.1]",
            b"Nov 27 10:00:00 mx postfix/qmgr[3]: DDDD1: from=<a@b>, size=9, nrcpt=1"
            b" (queue active)"])
    report = reconcile(store, [], started_at=started)
    assert report.skipped == ["DDDD1"] and report.removed == []
    assert [e.message_id for e in store.queue_entries()] == ["DDDD1"]


def test_cli_follow_once_status_and_sync(tmp_path: Path) -> None:
    db = tmp_path / "mailmib.db"
    follow = counters(db, "follow", "postfix", str(SAMPLE), "--once")
    assert follow.returncode == 0, follow.stderr
    status = counters(db, "follow", "status", "--unmapped")
    assert status.returncode == 0, status.stderr
    assert "bounce: sender notification" in status.stdout
    assert "qmgr: queue active" not in status.stdout
    assert status.stdout.startswith(f"{SOURCE}: device ")
    with Store(db, read_only=True) as store:
        stored = [e.message_id for e in store.queue_entries()]
    assert sorted(stored) == ["B7BD2210A75", "BDF88210925", "BE596210942"]
    # Its arrival as the follower read it (the sample's year depends on today's date).
    arrival = pf.parse("Nov 27 15:38:06 mx postfix/qmgr[1]: B7BD2210A75: removed",
                       now=time.time()).at
    assert arrival is not None
    postqueue = fake_postqueue(tmp_path, [entry("B7BD2210A75", arrival, 295,
                                                "z@closed.test")])
    sync = counters(db, "sync", "postfix", "--postqueue", str(postqueue))
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout == ("1 queued; 0 added, 0 changed, 2 removed, 0 left to the"
                           " follower\n")
    failing = fake_postqueue(tmp_path, [], status=69)
    broken = counters(db, "sync", "postfix", "--postqueue", str(failing), "-c", "/nowhere")
    assert broken.returncode == 1
    assert broken.stderr.startswith("counters: error: ")
    assert "exited 69" in broken.stderr and len(broken.stderr.splitlines()) == 1


def test_cli_help_has_examples(tmp_path: Path) -> None:
    for command in (["follow", "postfix"], ["follow", "status"], ["sync", "postfix"]):
        shown = counters(tmp_path / "x.db", *command, "--help")
        assert shown.returncode == 0
        assert "Example:" in shown.stdout
    missing = counters(tmp_path / "none.db", "follow", "status")
    assert missing.returncode == 1 and missing.stderr.startswith("counters: error: no database")
