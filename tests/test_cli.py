"""The `counters` CLI against real SQLite files: each event is checked in the database itself.

Most cases go through click's CliRunner; a few run `python -m counters` as a real process, to
see exactly what a shell pipeline sees (exit status, one line on stderr, never a traceback).
After every rejected command the database must be exactly as it was.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from counters import (
    SMTP_PROTOCOL,
    ChannelSnapshot,
    Direction,
    RemoteKind,
    Snapshot,
    Store,
)
from counters.cli import cli
from counters.format import to_dict

T0 = "2024-05-01T12:00:00Z"
T0_EPOCH = datetime.fromisoformat(T0).timestamp()
OTHER_PROTOCOL = "1.3.6.1.2.1.27.4.110"  # applTCPProtoID 110 (POP3), as an example OID


# --- helpers -----------------------------------------------------------------------------------


def invoke(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args])


def ok(db: Path, *args: str) -> str:
    """Run a command that must succeed quietly on stderr; its stdout."""
    result = invoke(db, *args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    assert (result.exit_code, result.stderr) == (0, ""), (args, result.output)
    return result.stdout


def fails(db: Path, *args: str) -> str:
    """Run a command that must fail with one `counters: error:` line, status 1; the line."""
    result = invoke(db, *args)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.exit_code == 1, (args, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("counters: error: "), lines[0]
    return lines[0]


def usage_error(db: Path, *args: str) -> str:
    """Run a command that click must refuse as a usage error (status 2); its stderr."""
    result = invoke(db, *args)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, (args, result.output)
    assert "Usage: counters" in result.stderr
    return result.stderr


def snap(db: Path) -> Snapshot:
    with Store(db) as store:
        return store.snapshot()


def ch(db: Path, name: str) -> ChannelSnapshot:
    channel = snap(db).channel(name)
    assert channel is not None, name
    return channel


def state(db: Path) -> tuple[Snapshot, bytes]:
    """Everything a rejected command must leave alone: all values, and the file's bytes."""
    current = dataclasses.replace(snap(db), taken_at=0.0)
    return current, db.read_bytes()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where a test's database goes (not created yet)."""
    return tmp_path / "var" / "counters.db"


@pytest.fixture
def seeded(db: Path) -> Path:
    """smtpd (in), smtp (out) and local (both); Q1 (1500 octets, 3 recipients) queued in smtpd
    since T0, Q2 (2048 octets, 2 recipients) in smtp, and a live inbound association."""
    with Store(db) as store:
        store.add_channel("smtpd", direction=Direction.IN)
        store.add_channel("smtp", direction=Direction.OUT)
        store.add_channel("local", direction=Direction.BOTH)
        store.receive("smtpd", "Q1", octets=1500, recipients=3, at=T0_EPOCH)
        store.receive("local", "Q2", octets=2048, recipients=2, at=T0_EPOCH)
        store.transfer("local", "smtp", "Q2", at=T0_EPOCH)
        store.open_inbound("smtpd", remote="mx.example.org", key="smtpd-1", at=T0_EPOCH)
    return db


# --- channels and the MTA ----------------------------------------------------------------------


def test_channel_add_creates_the_database_and_prints_the_index(db: Path) -> None:
    assert not db.exists()
    assert ok(db, "channel", "add", "smtpd", "--direction", "in") == "1\n"
    assert ok(db, "channel", "add", "pop", "--direction", "out",
              "--protocol", OTHER_PROTOCOL) == "2\n"
    assert ok(db, "channel", "add", "local") == "3\n"
    assert [(c.index, c.name, c.direction, c.protocol) for c in snap(db).channels] == [
        (1, "smtpd", Direction.IN, SMTP_PROTOCOL),
        (2, "pop", Direction.OUT, OTHER_PROTOCOL),
        (3, "local", Direction.BOTH, SMTP_PROTOCOL),
    ]
    assert db.stat().st_mode & 0o777 == 0o600


def test_channel_add_ignore_returns_the_existing_index_unchanged(seeded: Path) -> None:
    before = state(seeded)
    index = ch(seeded, "smtp").index
    assert ok(seeded, "channel", "add", "smtp", "--direction", "in", "--ignore") == f"{index}\n"
    assert state(seeded)[0] == before[0]
    assert fails(seeded, "channel", "add", "smtp") == (
        "counters: error: channel 'smtp' exists already")
    assert state(seeded) == before


def test_channel_list(seeded: Path) -> None:
    lines = ok(seeded, "channel", "list").splitlines()
    assert lines[0].split() == ["Index", "Name", "Direction", "Protocol"]
    assert [line.split() for line in lines[1:]] == [
        [str(c.index), c.name, c.direction.value, c.protocol] for c in snap(seeded).channels]


def test_mta_set(db: Path) -> None:
    ok(db, "mta", "set", "--name", "postfix", "--version", "3.7.11")
    assert (snap(db).appl_name, snap(db).appl_version) == ("postfix", "3.7.11")
    ok(db, "mta", "set", "--version", "3.8.0")
    assert (snap(db).appl_name, snap(db).appl_version) == ("postfix", "3.8.0")


# --- messages ----------------------------------------------------------------------------------


def test_receive(seeded: Path) -> None:
    before = snap(seeded)
    old = before.channel("smtpd")
    assert old is not None
    assert ok(seeded, "receive", "smtpd", "M-1", "--octets", "1025", "--recipients", "4",
              "--at", "2024-05-01T11:00:00Z") == ""
    after = snap(seeded)
    new = after.channel("smtpd")
    assert new is not None
    assert (new.received_messages, new.received_octets, new.received_recipients) == (
        old.received_messages + 1, old.received_octets + 1025, old.received_recipients + 4)
    assert (new.stored_messages, new.stored_octets, new.stored_recipients) == (
        old.stored_messages + 1, old.stored_octets + 1025, old.stored_recipients + 4)
    assert new.oldest_stored_at == T0_EPOCH - 3600  # older than Q1, so now the oldest
    assert (after.mta.received_messages, after.mta.received_octets,
            after.mta.received_recipients) == (
        before.mta.received_messages + 1, before.mta.received_octets + 1025,
        before.mta.received_recipients + 4)


def test_transmit_a_queued_message_defaults_to_all_of_it(seeded: Path) -> None:
    before = snap(seeded)
    old = before.channel("smtp")
    assert old is not None and old.stored_messages == 1
    ok(seeded, "transmit", "smtp", "Q2", "--recipients", "1")
    mid = ch(seeded, "smtp")
    assert (mid.transmitted_messages, mid.transmitted_octets, mid.transmitted_recipients) == (
        old.transmitted_messages + 1, old.transmitted_octets + 2048,
        old.transmitted_recipients + 1)
    assert (mid.stored_messages, mid.stored_recipients) == (1, 1)
    ok(seeded, "transmit", "smtp", "Q2")
    after = snap(seeded)
    new = after.channel("smtp")
    assert new is not None
    assert (new.transmitted_messages, new.transmitted_octets, new.transmitted_recipients) == (
        old.transmitted_messages + 2, old.transmitted_octets + 2 * 2048,
        old.transmitted_recipients + 2)
    assert (new.stored_messages, new.stored_octets, new.oldest_stored_at) == (0, 0, None)
    assert after.mta.transmitted_messages == before.mta.transmitted_messages + 2
    assert after.mta.stored_messages == before.mta.stored_messages - 1


def test_transmit_an_unqueued_message_needs_its_sizes(seeded: Path) -> None:
    before = state(seeded)
    assert "give its octets and recipients" in fails(seeded, "transmit", "smtp", "ELSEWHERE")
    assert state(seeded) == before
    ok(seeded, "transmit", "smtp", "ELSEWHERE", "--octets", "10", "--recipients", "2")
    new = ch(seeded, "smtp")
    old = before[0].channel("smtp")
    assert old is not None
    assert (new.transmitted_messages, new.transmitted_octets, new.transmitted_recipients) == (
        old.transmitted_messages + 1, old.transmitted_octets + 10,
        old.transmitted_recipients + 2)
    assert new.stored_messages == old.stored_messages


def test_transfer_counts_for_the_channels_not_the_mta(seeded: Path) -> None:
    before = snap(seeded)
    src, dst = before.channel("smtpd"), before.channel("local")
    assert src is not None and dst is not None
    ok(seeded, "transfer", "smtpd", "local", "Q1", "--recipients", "2")
    after = snap(seeded)
    new_src, new_dst = after.channel("smtpd"), after.channel("local")
    assert new_src is not None and new_dst is not None
    # smtpd is inbound-only: it has no transmit side to count on.
    assert new_src.transmitted_messages == src.transmitted_messages == 0
    assert (new_src.stored_messages, new_src.stored_recipients) == (1, 1)
    assert (new_dst.received_messages, new_dst.received_octets, new_dst.received_recipients) == (
        dst.received_messages + 1, dst.received_octets + 1500, dst.received_recipients + 2)
    assert (new_dst.stored_messages, new_dst.stored_recipients) == (
        dst.stored_messages + 1, dst.stored_recipients + 2)
    assert dataclasses.replace(after.mta, stored_recipients=0) == dataclasses.replace(
        before.mta, stored_recipients=0)
    assert after.mta.stored_recipients == before.mta.stored_recipients


def test_remove(seeded: Path) -> None:
    old = ch(seeded, "smtpd")
    ok(seeded, "remove", "smtpd", "Q1")
    new = ch(seeded, "smtpd")
    assert (new.stored_messages, new.stored_octets, new.stored_recipients) == (
        old.stored_messages - 1, old.stored_octets - 1500, old.stored_recipients - 3)
    assert dataclasses.replace(new, stored_messages=0, stored_octets=0, stored_recipients=0,
                               oldest_stored_at=None) == dataclasses.replace(
        old, stored_messages=0, stored_octets=0, stored_recipients=0, oldest_stored_at=None)


def test_reject(seeded: Path) -> None:
    old = ch(seeded, "smtpd")
    ok(seeded, "reject", "smtpd", "--reason", "554 5.7.1 Relay access denied")
    new = ch(seeded, "smtpd")
    assert new.rejected_messages == old.rejected_messages + 1
    assert new.last_message_rejection_reason == "554 5.7.1 Relay access denied"
    ok(seeded, "reject", "smtpd")
    assert ch(seeded, "smtpd").last_message_rejection_reason == ""


# --- associations and retries ------------------------------------------------------------------


def test_inbound_open_prints_the_index_and_close_by_key_or_index(seeded: Path) -> None:
    old = ch(seeded, "smtpd")
    first = int(ok(seeded, "inbound", "open", "smtpd", "--remote", "mua.example.org",
                   "--key", "smtpd-2", "--ua", "--at", "2024-05-01T12:05:00Z"))
    second = int(ok(seeded, "inbound", "open", "smtpd"))
    live = {a.index: a for a in snap(seeded).associations}
    assert first != second and {first, second} <= set(live)
    assert (live[first].remote, live[first].remote_kind, live[first].inbound,
            live[first].opened_at) == ("mua.example.org", RemoteKind.UA, True,
                                       T0_EPOCH + 300)
    assert live[second].remote_kind is RemoteKind.PEER
    mid = ch(seeded, "smtpd")
    assert mid.inbound_associations == old.inbound_associations + 2
    assert mid.accumulated_inbound_associations == old.accumulated_inbound_associations + 2
    assert mid.inbound_rejection_reason == ""
    ok(seeded, "inbound", "close", "smtpd", "--key", "smtpd-2")
    ok(seeded, "inbound", "close", "smtpd", "--index", str(second),
       "--at", "2024-05-01T12:10:00Z")
    new = ch(seeded, "smtpd")
    assert new.inbound_associations == old.inbound_associations
    assert new.accumulated_inbound_associations == old.accumulated_inbound_associations + 2
    assert new.last_inbound_activity == T0_EPOCH + 600
    assert {first, second}.isdisjoint(a.index for a in snap(seeded).associations)


def test_inbound_refuse(seeded: Path) -> None:
    old = ch(seeded, "smtpd")
    ok(seeded, "inbound", "refuse", "smtpd", "--reason", "421 too many connections")
    new = ch(seeded, "smtpd")
    assert new.rejected_inbound_associations == old.rejected_inbound_associations + 1
    assert new.accumulated_inbound_associations == old.accumulated_inbound_associations
    assert new.inbound_rejection_reason == "421 too many connections"


def test_outbound_open_fail_close(seeded: Path) -> None:
    old = ch(seeded, "smtp")
    ok(seeded, "outbound", "fail", "smtp", "--reason", "connect: Connection refused")
    failed = ch(seeded, "smtp")
    assert failed.failed_outbound_associations == old.failed_outbound_associations + 1
    assert failed.outbound_failure_reason == "connect: Connection refused"
    index = int(ok(seeded, "outbound", "open", "smtp", "--remote", "mx.example.net",
                   "--key", "smtp-1"))
    opened = snap(seeded)
    assoc = next(a for a in opened.associations if a.index == index)
    assert (assoc.inbound, assoc.remote, assoc.channel_index) == (
        False, "mx.example.net", old.index)
    smtp = opened.channel("smtp")
    assert smtp is not None
    assert (smtp.outbound_associations, smtp.accumulated_outbound_associations,
            smtp.outbound_failure_reason) == (
        old.outbound_associations + 1, old.accumulated_outbound_associations + 1, "")
    ok(seeded, "outbound", "close", "smtp", "--key", "smtp-1")
    assert ch(seeded, "smtp").outbound_associations == old.outbound_associations


def test_retry(seeded: Path) -> None:
    ok(seeded, "retry", "smtp", "--at", "2024-05-01T12:05:00+02:00")
    assert ch(seeded, "smtp").next_retry_at == T0_EPOCH + 300 - 7200
    low = time.time()
    ok(seeded, "retry", "smtp", "--in", "300")
    high = time.time()
    retry_at = ch(seeded, "smtp").next_retry_at
    assert retry_at is not None and low + 300 <= retry_at <= high + 300
    ok(seeded, "retry", "smtp", "--none")
    assert ch(seeded, "smtp").next_retry_at is None


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is not UTC (so a local reading would show)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_naive_times_are_utc(seeded: Path) -> None:
    ok(seeded, "retry", "smtp", "--at", "2024-05-01T12:00:00")
    assert ch(seeded, "smtp").next_retry_at == T0_EPOCH


# --- clearing ----------------------------------------------------------------------------------


def test_clear_named_channels(seeded: Path) -> None:
    before = snap(seeded)
    ok(seeded, "reject", "smtpd", "--reason", "no")
    ok(seeded, "clear", "smtpd")
    after = snap(seeded)
    smtpd = after.channel("smtpd")
    assert smtpd is not None
    assert (smtpd.received_messages, smtpd.rejected_messages, smtpd.received_octets,
            smtpd.last_message_rejection_reason) == (0, 0, 0, None)
    assert smtpd.stored_messages == 1  # the queue is the present, not history
    assert after.channel("local") == before.channel("local")
    assert after.mta.received_messages == before.mta.received_messages
    assert after.restarted_at > before.restarted_at


def test_clear_all(seeded: Path) -> None:
    ok(seeded, "clear", "--all")
    after = snap(seeded)
    assert all(c.received_messages == c.transmitted_messages == 0 for c in after.channels)
    assert (after.mta.received_messages, after.mta.transmitted_messages) == (0, 0)
    assert after.mta.stored_messages == 2


def test_clear_must_be_explicit(seeded: Path) -> None:
    before = state(seeded)
    assert "--all" in usage_error(seeded, "clear")
    usage_error(seeded, "clear", "smtpd", "--all")
    assert state(seeded) == before


# --- --create ----------------------------------------------------------------------------------


def test_create_adds_the_missing_channel_then_records(db: Path) -> None:
    ok(db, "receive", "smtpd", "M1", "--octets", "100", "--recipients", "1", "--create",
       "--direction", "in", "--protocol", OTHER_PROTOCOL)
    smtpd = ch(db, "smtpd")
    assert (smtpd.direction, smtpd.protocol, smtpd.received_messages,
            smtpd.received_octets) == (Direction.IN, OTHER_PROTOCOL, 1, 100)
    ok(db, "receive", "smtpd", "M2", "--octets", "1", "--recipients", "1", "--create")
    assert ch(db, "smtpd").received_messages == 2
    assert len(snap(db).channels) == 1
    ok(db, "outbound", "fail", "smtp", "--reason", "timeout", "--create")
    smtp = ch(db, "smtp")
    assert (smtp.direction, smtp.protocol, smtp.failed_outbound_associations) == (
        Direction.BOTH, SMTP_PROTOCOL, 1)


def test_create_transmit_of_an_unqueued_message(db: Path) -> None:
    ok(db, "transmit", "smtp", "M1", "--octets", "5", "--recipients", "2", "--create")
    smtp = ch(db, "smtp")
    assert (smtp.transmitted_messages, smtp.transmitted_octets,
            smtp.transmitted_recipients) == (1, 5, 2)


@pytest.mark.parametrize("args", [
    ("receive", "new", "M1", "--octets", "1", "--recipients", "1", "--create",
     "--direction", "out"),
    ("transmit", "new", "M1", "--create"),
    ("receive", "new", "bad id", "--octets", "1", "--recipients", "1", "--create"),
    ("receive", "new", "M1", "--octets", "1", "--recipients", "1", "--create",
     "--protocol", "not-an-oid"),
    ("inbound", "open", "new", "--create", "--direction", "out"),
    ("retry", "new", "--in", "5", "--create", "--direction", "in"),
])
def test_create_never_leaves_a_channel_behind_a_failed_event(seeded: Path,
                                                             args: tuple[str, ...]) -> None:
    before = state(seeded)
    fails(seeded, *args)
    assert state(seeded) == before


def test_create_options_need_create(seeded: Path) -> None:
    before = state(seeded)
    assert "--create" in usage_error(seeded, "receive", "new", "M1", "--octets", "1",
                                     "--recipients", "1", "--direction", "in")
    assert state(seeded) == before


# --- errors ------------------------------------------------------------------------------------


def test_unknown_channel_says_how_to_add_it(seeded: Path) -> None:
    before = state(seeded)
    assert fails(seeded, "receive", "nosuch", "M", "--octets", "1", "--recipients", "1") == (
        "counters: error: unknown channel 'nosuch' "
        "(add it with `counters channel add nosuch` or pass --create)")
    assert fails(seeded, "remove", "nosuch", "M") == (
        "counters: error: unknown channel 'nosuch' (add it with `counters channel add nosuch`)")
    assert fails(seeded, "transfer", "smtpd", "nosuch", "Q1") == (
        "counters: error: unknown channel 'nosuch' (add it with `counters channel add nosuch`)")
    assert state(seeded) == before


def test_events_without_a_database_create_nothing(db: Path) -> None:
    assert fails(db, "receive", "smtpd", "M", "--octets", "1", "--recipients", "1") == (
        "counters: error: unknown channel 'smtpd' "
        "(add it with `counters channel add smtpd` or pass --create)")
    fails(db, "clear", "--all")
    fails(db, "channel", "list")
    assert not db.exists() and not db.parent.exists()


BAD_INPUTS = [
    ("receive", "smtpd", "M", "--octets", "-1", "--recipients", "1"),
    ("receive", "smtpd", "M", "--octets", "1.5", "--recipients", "1"),
    ("receive", "smtpd", "M", "--octets", "abc", "--recipients", "1"),
    ("receive", "smtpd", "M", "--octets", "1", "--recipients", "-3"),
    ("receive", "smtpd", "bad id", "--octets", "1", "--recipients", "1"),
    ("receive", "smtpd", "", "--octets", "1", "--recipients", "1"),
    ("receive", "smtpd", "x" * 256, "--octets", "1", "--recipients", "1"),
    ("receive", "smtpd", "Q1", "--octets", "1", "--recipients", "1"),
    ("receive", "smtp", "M", "--octets", "1", "--recipients", "1"),
    ("receive", "smtpd", "M", "--octets", "1", "--recipients", "1", "--at", "yesterday"),
    ("transmit", "smtp", "Q2", "--recipients", "3"),
    ("transmit", "smtpd", "Q1"),
    ("transfer", "smtpd", "local", "NOTQ"),
    ("transfer", "nosuch", "smtp", "Q1"),
    ("transfer", "smtpd", "smtpd", "Q1"),
    ("remove", "smtpd", "NOTQ"),
    ("reject", "smtp", "--reason", "x"),
    ("inbound", "open", "smtp"),
    ("inbound", "open", "smtpd", "--key", "smtpd-1"),
    ("inbound", "close", "smtpd", "--key", "nokey"),
    ("inbound", "close", "smtpd", "--index", "999"),
    ("inbound", "close", "smtpd", "--index", "0"),
    ("inbound", "refuse", "smtp", "--reason", "x"),
    ("outbound", "fail", "smtpd", "--reason", "x"),
    ("retry", "smtpd", "--in", "5"),
    ("retry", "smtp", "--in", "-1"),
    ("retry", "smtp", "--at", "soon"),
    ("channel", "add", "smtpd"),
    ("channel", "add", ""),
    ("channel", "add", "pop", "--protocol", "1.3.bad"),
    ("mta", "set", "--name", ""),
    ("clear", "smtpd", "nosuch"),
    ("show", "nosuch"),
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=lambda args: " ".join(args)[:50])
def test_bad_input_is_one_line_and_writes_nothing(seeded: Path, args: tuple[str, ...]) -> None:
    before = state(seeded)
    fails(seeded, *args)
    assert state(seeded) == before


USAGE_ERRORS = [
    ("receive", "smtpd", "M", "--recipients", "1"),
    ("receive", "smtpd"),
    ("receive", "smtpd", "M", "--octets", "1", "--recipients", "1", "--bogus"),
    ("inbound", "close", "smtpd"),
    ("inbound", "close", "smtpd", "--index", "1", "--key", "smtpd-1"),
    ("inbound", "refuse", "smtpd"),
    ("retry", "smtp"),
    ("retry", "smtp", "--in", "5", "--none"),
    ("mta", "set"),
    ("nosuchcommand",),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda args: " ".join(args)[:50])
def test_usage_errors_keep_clicks_report(seeded: Path, args: tuple[str, ...]) -> None:
    before = state(seeded)
    usage_error(seeded, *args)
    assert state(seeded) == before


# --- show --------------------------------------------------------------------------------------


def test_show_without_a_database_is_an_error_and_creates_nothing(db: Path) -> None:
    assert fails(db, "show") == (
        f"counters: error: no database at {db}; record an event with --create or run "
        "`counters channel add` first")
    assert not db.exists() and not db.parent.exists()


def test_show_text(seeded: Path) -> None:
    text = ok(seeded, "show")
    now = snap(seeded)
    lines = text.splitlines()
    assert lines[0].split() == ["Channel", "Messages", "Recipients", "Volume"]
    assert [c.name for c in now.channels] == [
        line for line in lines if line in {"smtpd", "smtp", "local"}]
    smtpd = now.channel("smtpd")
    assert smtpd is not None
    received = lines[lines.index("smtpd") + 1]
    assert received.split() == ["Received", str(smtpd.received_messages),
                                str(smtpd.received_recipients),
                                str(math.ceil(smtpd.received_octets / 1024))]


def test_show_json_is_the_snapshot(seeded: Path) -> None:
    data = json.loads(ok(seeded, "show", "--format", "json"))
    expected = to_dict(snap(seeded))
    for record in (data, expected):
        del record["taken_at"]
        for channel in record["channels"]:
            del channel["stored_age_seconds"]
    assert data == expected


def test_show_patterns_and_csv(seeded: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(ok(seeded, "show", "smtp*", "--format", "csv"))))
    assert [(r["index"], r["name"]) for r in rows] == [
        (str(c.index), c.name) for c in snap(seeded).channels if c.name.startswith("smtp")]
    data = json.loads(ok(seeded, "show", "local", "--format", "json"))
    assert [c["name"] for c in data["channels"]] == ["local"]
    assert data["associations"] == []  # the live one belongs to smtpd


def test_show_never_writes(seeded: Path) -> None:
    before = state(seeded)
    ok(seeded, "show")
    ok(seeded, "channel", "list")
    assert state(seeded) == before


def test_db_from_the_environment(seeded: Path) -> None:
    result = CliRunner().invoke(cli, ["channel", "list"], env={"MAILMIB_DB": str(seeded)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[1] == "smtpd"


# --- help --------------------------------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


@pytest.mark.parametrize("path", [(), *_commands(cli)], ids=lambda p: " ".join(p) or "counters")
def test_every_command_has_help_with_an_example(tmp_path: Path, path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    example = result.stdout.split("Example:", 1)
    assert len(example) == 2, result.stdout
    assert f"counters {' '.join(path)}".strip() in example[1]


# --- as a real process -------------------------------------------------------------------------


def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "counters", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_process_show_without_a_database(db: Path) -> None:
    done = run(db, "show")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"counters: error: no database at {db}; record an event with "
                           "--create or run `counters channel add` first\n")
    assert not db.exists()


def test_process_pipeline_then_show(db: Path) -> None:
    steps = [
        ("channel", "add", "smtpd", "--direction", "in"),
        ("channel", "add", "smtp", "--direction", "out"),
        ("receive", "smtpd", "A1", "--octets", "52431", "--recipients", "2"),
        ("receive", "smtpd", "A2", "--octets", "1", "--recipients", "1"),
        ("transfer", "smtpd", "smtp", "A1"),
        ("transmit", "smtp", "A1", "--recipients", "1"),
    ]
    outputs = [run(db, *step) for step in steps]
    assert [(o.returncode, o.stderr) for o in outputs] == [(0, "")] * len(steps)
    assert [o.stdout for o in outputs[:2]] == ["1\n", "2\n"]
    assert all(o.stdout == "" for o in outputs[2:])
    shown = run(db, "show")
    assert (shown.returncode, shown.stderr) == (0, "")
    lines = shown.stdout.splitlines()
    smtp = lines[lines.index("smtp") + 1: lines.index("smtp") + 3]
    assert [line.split() for line in smtp] == [
        ["Stored", "1", "1", str(math.ceil(52431 / 1024))],
        ["Transmitted", "1", "1", str(math.ceil(52431 / 1024))],
    ]
    mta = next(i for i, line in enumerate(lines) if line.startswith("MTA "))
    assert [line.split() for line in lines[mta + 1: mta + 4]] == [
        ["Received", "2", "3", str(math.ceil((52431 + 1) / 1024))],
        ["Stored", "2", "2", str(math.ceil((52431 + 1) / 1024))],
        ["Transmitted", "1", "1", str(math.ceil(52431 / 1024))],
    ]


@pytest.mark.parametrize("args", [
    ("receive", "smtpd", "M", "--octets", "-5", "--recipients", "1"),
    ("receive", "nosuch", "M", "--octets", "5", "--recipients", "1"),
    ("transmit", "smtp", "Q2", "--recipients", "9"),
])
def test_process_bad_input(seeded: Path, args: tuple[str, ...]) -> None:
    before = state(seeded)
    done = run(seeded, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("counters: error: ")
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n")
    assert "Traceback" not in done.stderr
    assert state(seeded) == before


def test_process_usage_error(seeded: Path) -> None:
    before = state(seeded)
    done = run(seeded, "clear")
    assert done.returncode == 2
    assert "Usage: counters clear" in done.stderr
    assert "Traceback" not in done.stderr
    assert state(seeded) == before


# --- the bulk path ------------------------------------------------------------------------


def test_ingest_records_good_lines_and_reports_bad_ones_by_number(tmp_path: Path) -> None:
    db = tmp_path / "ingest.db"
    lines = [
        '{"event": "ensure_channel", "name": "smtpd", "direction": "in"}',
        '{"event": "receive", "channel": "smtpd", "message_id": "m1", "octets": 900,'
        ' "recipients": 2}',
        "",
        "not json",
        '{"event": "receive", "channel": "nope", "message_id": "m2", "octets": 1,'
        ' "recipients": 1}',
        '{"event": "receive", "channel": "smtpd", "message_id": "m3", "octets": -1,'
        ' "recipients": 1}',
        '{"event": "drop_table", "channel": "smtpd"}',
        '{"event": "receive", "channel": "smtpd", "message_id": "m4", "octets": 100,'
        ' "recipients": 1, "bogus": 1}',
        '{"event": "receive", "channel": "smtpd", "message_id": "m5", "octets": 100,'
        ' "recipients": 3}',
    ]
    proc = subprocess.run([sys.executable, "-m", "counters", "--db", str(db), "ingest",
                           "--batch", "2"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert [e.split(":")[2].strip() for e in errors] == ["line 4", "line 5", "line 6",
                                                          "line 7", "line 8"]
    assert all(e.startswith("counters: error: line ") for e in errors)
    assert "Traceback" not in proc.stderr
    with Store(db) as store:
        smtpd = store.snapshot().channel("smtpd")
    assert smtpd is not None
    assert (smtpd.received_messages, smtpd.received_octets, smtpd.received_recipients) == (
        2, 900 + 100, 2 + 3)


def test_ingest_of_many_events_counts_exactly(tmp_path: Path) -> None:
    db = tmp_path / "ingest.db"
    n = 2500
    events = ['{"event": "ensure_channel", "name": "both"}']
    for i in range(n):
        events.append(f'{{"event": "receive", "channel": "both", "message_id": "m{i}",'
                      f' "octets": {i}, "recipients": 1}}')
        events.append(f'{{"event": "transmit", "channel": "both", "message_id": "m{i}"}}')
    proc = subprocess.run([sys.executable, "-m", "counters", "--db", str(db), "ingest"],
                          input="\n".join(events), text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    with Store(db) as store:
        both = store.snapshot().channel("both")
    assert both is not None
    assert (both.received_messages, both.transmitted_messages, both.stored_messages) == (n, n, 0)
    assert both.transmitted_octets == sum(range(n))
