"""The counter store against real SQLite files: each event's effect, derived stored values,
errors that change nothing, index rules, clear(), broken databases, and concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import counters
from counters import (
    BadEvent,
    DatabaseError,
    Direction,
    DuplicateChannel,
    RemoteKind,
    Snapshot,
    Store,
    UnknownAssociation,
    UnknownChannel,
    UnknownMessage,
    schema,
)

T = 1_000.0  # when setup events happen
E = 2_000.0  # when the event under test happens
LMTP = "1.3.6.1.2.1.27.4.24"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "counters.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    """smtpd (inbound only), smtp (outbound only), local and relay (both)."""
    with Store(db) as s:
        assert s.add_channel("smtpd", direction=Direction.IN) == 1
        assert s.add_channel("smtp", direction=Direction.OUT) == 2
        assert s.add_channel("local") == 3
        assert s.add_channel("relay", protocol=LMTP) == 4
        yield s


def changes(before: Snapshot, after: Snapshot) -> dict[str, dict[str, Any]]:
    """{channel name or 'mta': {field: new value}} for every value that differs."""
    def diff(old: Any, new: Any) -> dict[str, Any]:
        return {f.name: getattr(new, f.name) for f in dataclasses.fields(new)
                if getattr(new, f.name) != getattr(old, f.name)}

    out: dict[str, dict[str, Any]] = {}
    for old, new in zip(before.channels, after.channels, strict=True):
        if d := diff(old, new):
            out[new.name] = d
    if d := diff(before.mta, after.mta):
        out["mta"] = d
    return out


def stored(messages: int, octets: int, recipients: int) -> dict[str, int]:
    return {"stored_messages": messages, "stored_octets": octets,
            "stored_recipients": recipients}


# --- each event's effect ------------------------------------------------------------------

Event = Callable[[Store], object]


def nothing(s: Store) -> None:
    pass


def received_m1(s: Store) -> None:
    s.receive("local", "m1", octets=1200, recipients=3, at=T)


EVENTS: list[tuple[str, Event, Event, dict[str, dict[str, Any]]]] = [
    ("receive a message new to the MTA", nothing,
     lambda s: s.receive("local", "m1", octets=1200, recipients=3, at=E),
     {"local": {"received_messages": 1, "received_octets": 1200, "received_recipients": 3,
                **stored(1, 1200, 3), "oldest_stored_at": E, "last_inbound_activity": E},
      "mta": {"received_messages": 1, "received_octets": 1200, "received_recipients": 3,
              **stored(1, 1200, 3)}}),
    ("receive an id another channel holds: not new to the MTA",
     lambda s: s.receive("smtpd", "m1", octets=1200, recipients=3, at=T),
     lambda s: s.receive("local", "m1", octets=1300, recipients=2, at=E),
     {"local": {"received_messages": 1, "received_octets": 1300, "received_recipients": 2,
                **stored(1, 1300, 2), "oldest_stored_at": E, "last_inbound_activity": E},
      # stored once, at its largest size; recipients summed over both channels
      "mta": {"stored_octets": 1300, "stored_recipients": 5}}),
    ("transmit all of a queued message", received_m1,
     lambda s: s.transmit("local", "m1", at=E),
     {"local": {"transmitted_messages": 1, "transmitted_octets": 1200,
                "transmitted_recipients": 3, **stored(0, 0, 0), "oldest_stored_at": None,
                "last_outbound_activity": E},
      "mta": {"transmitted_messages": 1, "transmitted_octets": 1200,
              "transmitted_recipients": 3, **stored(0, 0, 0)}}),
    ("transmit some of its recipients", received_m1,
     lambda s: s.transmit("local", "m1", recipients=2, at=E),
     {"local": {"transmitted_messages": 1, "transmitted_octets": 1200,
                "transmitted_recipients": 2, "stored_recipients": 1,
                "last_outbound_activity": E},
      "mta": {"transmitted_messages": 1, "transmitted_octets": 1200,
              "transmitted_recipients": 2, "stored_recipients": 1}}),
    ("transmit a queued message with its sent size", received_m1,
     lambda s: s.transmit("local", "m1", octets=1500, at=E),
     {"local": {"transmitted_messages": 1, "transmitted_octets": 1500,
                "transmitted_recipients": 3, **stored(0, 0, 0), "oldest_stored_at": None,
                "last_outbound_activity": E},
      "mta": {"transmitted_messages": 1, "transmitted_octets": 1500,
              "transmitted_recipients": 3, **stored(0, 0, 0)}}),
    ("transmit a message that was never queued", nothing,
     lambda s: s.transmit("smtp", "x1", octets=700, recipients=2, at=E),
     {"smtp": {"transmitted_messages": 1, "transmitted_octets": 700,
               "transmitted_recipients": 2, "last_outbound_activity": E},
      "mta": {"transmitted_messages": 1, "transmitted_octets": 700,
              "transmitted_recipients": 2}}),
    ("remove a queued message", received_m1,
     lambda s: s.remove("local", "m1", at=E),
     {"local": {**stored(0, 0, 0), "oldest_stored_at": None},
      "mta": stored(0, 0, 0)}),
    ("reject a message", nothing,
     lambda s: s.reject("smtpd", reason="5.7.1 spam", at=E),
     {"smtpd": {"rejected_messages": 1, "last_message_rejection_reason": "5.7.1 spam"}}),
    ("open an inbound association", nothing,
     lambda s: s.open_inbound("smtpd", remote="mx.example.org", at=E),
     {"smtpd": {"inbound_associations": 1, "accumulated_inbound_associations": 1,
                "last_inbound_activity": E, "inbound_rejection_reason": ""}}),
    ("open an outbound association", nothing,
     lambda s: s.open_outbound("smtp", remote="mx.example.net", at=E),
     {"smtp": {"outbound_associations": 1, "accumulated_outbound_associations": 1,
               "last_outbound_activity": E, "outbound_failure_reason": ""}}),
    ("close an inbound association",
     lambda s: s.open_inbound("smtpd", key="smtpd[1]", at=T),
     lambda s: s.close_association("smtpd", key="smtpd[1]", at=E),
     {"smtpd": {"inbound_associations": 0, "last_inbound_activity": E}}),
    ("close an outbound association",
     lambda s: s.open_outbound("smtp", key="smtp[2]", at=T),
     lambda s: s.close_association("smtp", key="smtp[2]", at=E),
     {"smtp": {"outbound_associations": 0, "last_outbound_activity": E}}),
    ("refuse an inbound association",
     lambda s: s.open_inbound("smtpd", at=T),
     lambda s: s.refuse_inbound("smtpd", reason="too many connections", at=E),
     {"smtpd": {"rejected_inbound_associations": 1,
                "inbound_rejection_reason": "too many connections"}}),
    ("fail an outbound association", nothing,
     lambda s: s.fail_outbound("smtp", reason="connection refused", at=E),
     {"smtp": {"failed_outbound_associations": 1,
               "outbound_failure_reason": "connection refused"}}),
    ("schedule a retry", nothing,
     lambda s: s.schedule_retry("smtp", retry_at=E + 600),
     {"smtp": {"next_retry_at": E + 600}}),
    ("cancel a retry", lambda s: s.schedule_retry("smtp", retry_at=T),
     lambda s: s.schedule_retry("smtp", retry_at=None),
     {"smtp": {"next_retry_at": None}}),
    ("transfer from an inbound-only to an outbound-only channel",
     lambda s: s.receive("smtpd", "m1", octets=1200, recipients=3, at=T),
     lambda s: s.transfer("smtpd", "smtp", "m1", at=E),
     {"smtpd": {**stored(0, 0, 0), "oldest_stored_at": None},
      "smtp": {**stored(1, 1200, 3), "oldest_stored_at": E}}),
    ("transfer some recipients between channels with both sides", received_m1,
     lambda s: s.transfer("local", "relay", "m1", recipients=1, at=E),
     {"local": {"transmitted_messages": 1, "transmitted_octets": 1200,
                "transmitted_recipients": 1, "stored_recipients": 2},
      "relay": {"received_messages": 1, "received_octets": 1200, "received_recipients": 1,
                **stored(1, 1200, 1), "oldest_stored_at": E}}),
]


@pytest.mark.parametrize(("setup", "event", "expected"), [case[1:] for case in EVENTS],
                         ids=[case[0] for case in EVENTS])
def test_event_effect(store: Store, setup: Event, event: Event,
                      expected: dict[str, dict[str, Any]]) -> None:
    setup(store)
    before = store.snapshot()
    event(store)
    assert changes(before, store.snapshot()) == expected


# --- stored values, hand-offs ----------------------------------------------------------------

def test_stored_values_are_derived_from_the_queue(store: Store) -> None:
    store.receive("local", "a", octets=1000, recipients=1, at=100.0)
    store.receive("local", "b", octets=2000, recipients=2, at=200.0)
    store.receive("local", "c", octets=3000, recipients=3, at=300.0)
    local = store.snapshot().channel("local")
    assert local is not None
    assert (local.stored_messages, local.stored_octets, local.stored_recipients,
            local.oldest_stored_at) == (3, 6000, 6, 100.0)

    store.transmit("local", "a", at=400.0)
    store.remove("local", "b", at=500.0)
    snap = store.snapshot()
    local = snap.channel("local")
    assert local is not None
    assert (local.stored_messages, local.stored_octets, local.stored_recipients,
            local.oldest_stored_at) == (1, 3000, 3, 300.0)
    assert (snap.mta.stored_messages, snap.mta.stored_octets,
            snap.mta.stored_recipients) == (1, 3000, 3)
    assert (local.received_messages, local.transmitted_messages) == (3, 1)


def test_hand_off_counts_once_at_mta_level(store: Store) -> None:
    store.receive("smtpd", "m1", octets=5000, recipients=2, at=T)
    store.transfer("smtpd", "smtp", "m1", at=T + 1)
    store.transmit("smtp", "m1", at=T + 2)
    snap = store.snapshot()
    mta = snap.mta
    assert (mta.received_messages, mta.received_octets, mta.received_recipients) == (1, 5000, 2)
    assert (mta.transmitted_messages, mta.transmitted_octets,
            mta.transmitted_recipients) == (1, 5000, 2)
    assert (mta.stored_messages, mta.stored_octets, mta.stored_recipients) == (0, 0, 0)
    smtpd, smtp = snap.channel("smtpd"), snap.channel("smtp")
    assert smtpd is not None and smtp is not None
    # smtpd has no outbound side and smtp no inbound side: the hand-off counts on neither
    assert (smtpd.received_messages, smtpd.transmitted_messages) == (1, 0)
    assert (smtp.received_messages, smtp.transmitted_messages) == (0, 1)

    # between two channels with both sides, the hand-off counts on both, still once in the MTA
    store.receive("local", "m2", octets=100, recipients=1, at=T)
    store.transfer("local", "relay", "m2", at=T + 1)
    store.transmit("relay", "m2", at=T + 2)
    snap = store.snapshot()
    local, relay = snap.channel("local"), snap.channel("relay")
    assert local is not None and relay is not None
    assert (local.received_messages, local.transmitted_messages) == (1, 1)
    assert (relay.received_messages, relay.transmitted_messages) == (1, 1)
    assert (snap.mta.received_messages, snap.mta.transmitted_messages) == (2, 2)


def test_message_split_over_channels_is_stored_once(store: Store) -> None:
    store.receive("smtpd", "m1", octets=1200, recipients=3, at=T)
    store.transfer("smtpd", "smtp", "m1", recipients=2, at=T + 1)
    snap = store.snapshot()
    smtpd, smtp = snap.channel("smtpd"), snap.channel("smtp")
    assert smtpd is not None and smtp is not None
    assert (smtpd.stored_messages, smtpd.stored_octets, smtpd.stored_recipients) == (1, 1200, 1)
    assert (smtp.stored_messages, smtp.stored_octets, smtp.stored_recipients) == (1, 1200, 2)
    assert (snap.mta.stored_messages, snap.mta.stored_octets,
            snap.mta.stored_recipients) == (1, 1200, 3)
    store.transmit("smtp", "m1", recipients=1, at=T + 2)
    store.transmit("smtp", "m1", at=T + 3)
    store.remove("smtpd", "m1")  # the third recipient bounced
    snap = store.snapshot()
    assert (snap.mta.transmitted_messages, snap.mta.transmitted_octets,
            snap.mta.transmitted_recipients) == (2, 2400, 2)
    assert (snap.mta.stored_messages, snap.mta.stored_recipients) == (0, 0)


def test_transfer_in_batches_merges_into_one_queue_entry(store: Store) -> None:
    store.receive("local", "m1", octets=900, recipients=4, at=T)
    store.transfer("local", "relay", "m1", recipients=1, at=T + 10)
    store.transfer("local", "relay", "m1", recipients=2, at=T + 20)
    snap = store.snapshot()
    local, relay = snap.channel("local"), snap.channel("relay")
    assert local is not None and relay is not None
    assert (relay.stored_messages, relay.stored_recipients, relay.oldest_stored_at) == (
        1, 3, T + 10)
    assert (relay.received_messages, relay.received_recipients) == (2, 3)
    assert (local.stored_recipients, local.transmitted_recipients) == (1, 3)


def test_transmit_of_unqueued_message_needs_octets_and_recipients(store: Store) -> None:
    before = store.snapshot(at=E)
    with pytest.raises(BadEvent, match="not queued"):
        store.transmit("smtp", "x1")
    with pytest.raises(BadEvent, match="not queued"):
        store.transmit("smtp", "x1", octets=500)
    with pytest.raises(BadEvent, match="not queued"):
        store.transmit("smtp", "x1", recipients=1)
    assert store.snapshot(at=E) == before


def test_transmit_recipients_run_out(store: Store) -> None:
    received_m1(store)
    store.transmit("local", "m1", recipients=1)
    store.transmit("local", "m1", recipients=2)  # the last ones: it leaves the queue
    local = store.snapshot().channel("local")
    assert local is not None
    assert (local.stored_messages, local.transmitted_messages,
            local.transmitted_recipients) == (0, 2, 3)
    with pytest.raises(BadEvent, match="not queued"):
        store.transmit("local", "m1", recipients=1)  # gone: needs octets now


# --- errors change nothing --------------------------------------------------------------------

ERRORS: list[tuple[str, Event, type[Exception], str]] = [
    # direction
    ("receive on outbound-only", lambda s: s.receive("smtp", "n1", octets=1, recipients=1),
     BadEvent, "channel 'smtp' is outbound-only; it cannot receive"),
    ("reject on outbound-only", lambda s: s.reject("smtp", reason="x"),
     BadEvent, "outbound-only"),
    ("open_inbound on outbound-only", lambda s: s.open_inbound("smtp"),
     BadEvent, "outbound-only"),
    ("refuse_inbound on outbound-only", lambda s: s.refuse_inbound("smtp", reason="x"),
     BadEvent, "outbound-only"),
    ("transmit on inbound-only", lambda s: s.transmit("smtpd", "m0"),
     BadEvent, "channel 'smtpd' is inbound-only; it cannot transmit"),
    ("open_outbound on inbound-only", lambda s: s.open_outbound("smtpd"),
     BadEvent, "inbound-only"),
    ("fail_outbound on inbound-only", lambda s: s.fail_outbound("smtpd", reason="x"),
     BadEvent, "inbound-only"),
    ("schedule_retry on inbound-only", lambda s: s.schedule_retry("smtpd", retry_at=E),
     BadEvent, "inbound-only"),
    # amounts
    ("negative octets", lambda s: s.receive("local", "n1", octets=-1, recipients=1),
     BadEvent, "octets must be >= 0"),
    ("bool octets", lambda s: s.receive("local", "n1", octets=True, recipients=1),
     BadEvent, "octets must be an integer"),
    ("float octets", lambda s: s.receive("local", "n1", octets=1.5, recipients=1),  # type: ignore[arg-type]
     BadEvent, "octets must be an integer"),
    ("string recipients", lambda s: s.receive("local", "n1", octets=1, recipients="2"),  # type: ignore[arg-type]
     BadEvent, "recipients must be an integer"),
    ("negative recipients", lambda s: s.receive("local", "n1", octets=1, recipients=-2),
     BadEvent, "recipients must be >= 0"),
    ("huge octets", lambda s: s.receive("local", "n1", octets=2**63, recipients=1),
     BadEvent, "out of range"),
    ("negative transmit octets", lambda s: s.transmit("local", "m0", octets=-5),
     BadEvent, "octets"),
    # message ids
    ("empty message id", lambda s: s.receive("local", "", octets=1, recipients=1),
     BadEvent, "invalid message id"),
    ("message id with a space", lambda s: s.receive("local", "a b", octets=1, recipients=1),
     BadEvent, "invalid message id"),
    ("message id with a newline", lambda s: s.remove("local", "m0\n"),
     BadEvent, "invalid message id"),
    ("non-ASCII message id", lambda s: s.receive("local", "é1", octets=1, recipients=1),
     BadEvent, "invalid message id"),
    ("256-character message id",
     lambda s: s.receive("local", "x" * 256, octets=1, recipients=1),
     BadEvent, "invalid message id"),
    # times
    ("NaN time", lambda s: s.receive("local", "n1", octets=1, recipients=1, at=float("nan")),
     BadEvent, "finite"),
    ("infinite time", lambda s: s.open_inbound("smtpd", at=float("inf")), BadEvent, "finite"),
    ("huge integer time", lambda s: s.reject("smtpd", at=10**400), BadEvent, "finite"),
    ("string time", lambda s: s.reject("smtpd", at="now"),  # type: ignore[arg-type]
     BadEvent, "at must be a time"),
    ("infinite retry", lambda s: s.schedule_retry("smtp", retry_at=float("-inf")),
     BadEvent, "retry_at"),
    # queue rules
    ("receive an id already queued there",
     lambda s: s.receive("local", "m0", octets=1, recipients=1),
     BadEvent, "already queued in channel 'local'"),
    ("transmit more recipients than remain", lambda s: s.transmit("local", "m0", recipients=4),
     BadEvent, "only 3 remain"),
    ("transfer more recipients than remain",
     lambda s: s.transfer("local", "relay", "m0", recipients=4), BadEvent, "only 3 remain"),
    ("transfer to the same channel", lambda s: s.transfer("local", "local", "m0"),
     BadEvent, "to itself"),
    ("transfer of an unqueued message", lambda s: s.transfer("relay", "local", "m0"),
     UnknownMessage, "not queued in channel 'relay'"),
    ("remove of an unqueued message", lambda s: s.remove("relay", "m0"),
     UnknownMessage, "not queued"),
    # channels
    ("unknown channel", lambda s: s.receive("nope", "n1", octets=1, recipients=1),
     UnknownChannel, "no channel named 'nope'"),
    ("unknown transfer destination", lambda s: s.transfer("local", "nope", "m0"),
     UnknownChannel, "nope"),
    ("duplicate channel", lambda s: s.add_channel("local"), DuplicateChannel, "exists"),
    ("empty channel name", lambda s: s.add_channel(""), BadEvent, "channel name"),
    ("channel name with a leading space", lambda s: s.add_channel(" x"),
     BadEvent, "leading or trailing"),
    ("channel name with a trailing space", lambda s: s.ensure_channel("x "),
     BadEvent, "leading or trailing"),
    ("channel name with a tab", lambda s: s.add_channel("a\tb"), BadEvent, "channel name"),
    ("non-ASCII channel name", lambda s: s.add_channel("kanäle"), BadEvent, "channel name"),
    ("256-character channel name", lambda s: s.add_channel("c" * 256),
     BadEvent, "channel name"),
    ("bad direction", lambda s: s.add_channel("x", direction="sideways"),  # type: ignore[arg-type]
     BadEvent, "direction"),
    ("one-arc protocol", lambda s: s.add_channel("x", protocol="1"), BadEvent, "protocol"),
    ("first arc 3", lambda s: s.add_channel("x", protocol="3.1"), BadEvent, "protocol"),
    ("second arc 40 under 1", lambda s: s.add_channel("x", protocol="1.40"),
     BadEvent, "protocol"),
    ("arc too large", lambda s: s.add_channel("x", protocol="1.3.4294967296"),
     BadEvent, "protocol"),
    ("negative arc", lambda s: s.add_channel("x", protocol="1.3.-6"), BadEvent, "protocol"),
    ("empty arc", lambda s: s.add_channel("x", protocol="1..3"), BadEvent, "protocol"),
    ("named arc", lambda s: s.add_channel("x", protocol="1.3.six"), BadEvent, "protocol"),
    ("set_mta empty name", lambda s: s.set_mta(name=""), BadEvent, "application name"),
    ("set_mta control character", lambda s: s.set_mta(version="1.0\n"),
     BadEvent, "application version"),
    # associations
    ("key reused while live", lambda s: s.open_inbound("smtpd", key="k1"),
     BadEvent, "already live"),
    ("close with neither index nor key", lambda s: s.close_association("smtpd"),
     BadEvent, "exactly one"),
    ("close with both index and key", lambda s: s.close_association("smtpd", index=1, key="k1"),
     BadEvent, "exactly one"),
    ("close with a bool index", lambda s: s.close_association("smtpd", index=True),
     BadEvent, "association index"),
    ("close an unknown key", lambda s: s.close_association("smtpd", key="k2"),
     UnknownAssociation, "key 'k2'"),
    ("close another channel's association", lambda s: s.close_association("local", index=1),
     UnknownAssociation, "index 1"),
    ("bad remote kind", lambda s: s.open_inbound("smtpd", remote_kind="robot"),  # type: ignore[arg-type]
     BadEvent, "remote kind"),
    ("empty key", lambda s: s.open_inbound("smtpd", key=""), BadEvent, "association key"),
    # clear
    ("clear an unknown channel", lambda s: s.clear(["local", "nope"], at=E),
     UnknownChannel, "nope"),
]


@pytest.mark.parametrize(("call", "error", "message"), [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_errors_leave_the_database_unchanged(store: Store, call: Event,
                                             error: type[Exception], message: str) -> None:
    store.receive("local", "m0", octets=1200, recipients=3, at=T)
    store.reject("smtpd", reason="earlier", at=T)
    assert store.open_inbound("smtpd", key="k1", at=T) == 1
    before = store.snapshot(at=E)
    with pytest.raises(error, match=message) as info:
        call(store)
    assert "\n" not in str(info.value)
    assert store.snapshot(at=E) == before
    # ...and the same handle still works afterwards
    store.receive("local", "after", octets=1, recipients=1)


def test_failure_midway_through_an_event_rolls_all_of_it_back(store: Store, db: Path) -> None:
    # A real SQLite trigger makes the last statement of receive() (the MTA totals) fail after
    # the queue row and the channel counters have been written in the same transaction.
    raw = sqlite3.connect(db)
    raw.execute("CREATE TRIGGER boom BEFORE UPDATE ON mta"
                " BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    raw.commit()
    before = store.snapshot(at=E)
    with pytest.raises(DatabaseError, match="injected failure"):
        store.receive("local", "m1", octets=10, recipients=1)
    assert store.snapshot(at=E) == before
    raw.execute("DROP TRIGGER boom")
    raw.commit()
    raw.close()
    store.receive("local", "m1", octets=10, recipients=1)  # nothing of the first try was left
    snap = store.snapshot()
    assert (snap.mta.received_messages, snap.mta.stored_messages) == (1, 1)


# --- associations and reasons -----------------------------------------------------------------

def test_associations_in_the_snapshot(store: Store) -> None:
    a = store.open_inbound("smtpd", remote="mx.example.org", key="smtpd[10]", at=T)
    b = store.open_outbound("relay", remote="lmtp.example.net", remote_kind=RemoteKind.UA,
                            at=T + 1)
    c = store.open_inbound("local", remote="client", remote_kind=RemoteKind.UA, at=T + 2)
    assert (a, b, c) == (1, 2, 3)
    snap = store.snapshot()
    assert [(x.index, x.channel_index, x.inbound, x.remote, x.remote_kind, x.protocol,
             x.opened_at) for x in snap.associations] == [
        (1, 1, True, "mx.example.org", RemoteKind.PEER, counters.SMTP_PROTOCOL, T),
        (2, 4, False, "lmtp.example.net", RemoteKind.UA, LMTP, T + 1),
        (3, 3, True, "client", RemoteKind.UA, counters.SMTP_PROTOCOL, T + 2),
    ]
    store.close_association("relay", index=b)
    store.close_association("smtpd", key="smtpd[10]")
    assert [x.index for x in store.snapshot().associations] == [3]


def test_association_keys_are_unique_only_among_a_channels_live_ones(store: Store) -> None:
    first = store.open_inbound("smtpd", key="smtpd[7]")
    other_channel = store.open_inbound("local", key="smtpd[7]")
    store.close_association("smtpd", key="smtpd[7]")
    again = store.open_inbound("smtpd", key="smtpd[7]")  # free again once closed
    assert (first, other_channel, again) == (1, 2, 3)
    store.close_association("smtpd", key="smtpd[7]")
    with pytest.raises(UnknownAssociation):
        store.close_association("smtpd", key="smtpd[7]")
    assert [x.channel_index for x in store.snapshot().associations] == [3]


def test_association_indexes_are_never_reused(db: Path) -> None:
    with Store(db) as s:
        s.add_channel("smtpd")
        assert [s.open_inbound("smtpd") for _ in range(3)] == [1, 2, 3]
        s.close_association("smtpd", index=3)  # the highest: a plain rowid would hand it out again
        assert s.open_inbound("smtpd") == 4
        for index in (1, 2, 4):
            s.close_association("smtpd", index=index)
    with Store(db) as s:  # and after a reopen, with no association left at all
        assert s.snapshot().associations == ()
        assert s.open_outbound("smtpd") == 5


def test_reasons_and_remotes_become_display_strings(store: Store) -> None:
    store.reject("smtpd", reason="r" * 300)
    store.refuse_inbound("smtpd", reason="bad\tnews \u00e9\x00!\n")
    store.fail_outbound("smtp", reason="")
    store.open_inbound("local", remote="h\u00f6st\r\n" + "x" * 300)
    snap = store.snapshot()
    smtpd, smtp = snap.channel("smtpd"), snap.channel("smtp")
    assert smtpd is not None and smtp is not None
    assert smtpd.last_message_rejection_reason == "r" * 255
    assert smtpd.inbound_rejection_reason == "bad?news ??!?"
    assert smtp.outbound_failure_reason == ""  # a failure with no text is not 'never'
    assert snap.associations[0].remote == "h?st??" + "x" * 249


def test_a_success_after_a_failure_clears_the_reason(store: Store) -> None:
    store.refuse_inbound("smtpd", reason="busy")
    store.fail_outbound("smtp", reason="refused")
    store.open_inbound("smtpd")
    store.open_outbound("smtp")
    snap = store.snapshot()
    smtpd, smtp = snap.channel("smtpd"), snap.channel("smtp")
    assert smtpd is not None and smtp is not None
    assert (smtpd.inbound_rejection_reason, smtp.outbound_failure_reason) == ("", "")
    assert (smtpd.rejected_inbound_associations, smtp.failed_outbound_associations) == (1, 1)
    assert (smtpd.accumulated_inbound_associations,
            smtp.accumulated_outbound_associations) == (1, 1)


# --- channels ---------------------------------------------------------------------------------

def test_channel_indexes_are_never_reused(db: Path) -> None:
    with Store(db) as s:
        assert [s.add_channel(n) for n in ("a", "b", "c")] == [1, 2, 3]
        with pytest.raises(DuplicateChannel):
            s.add_channel("b")
    # The API never deletes a channel; an operator editing the file by hand might.
    raw = sqlite3.connect(db)
    raw.execute("DELETE FROM channels WHERE idx = 3")
    raw.commit()
    raw.close()
    with Store(db) as s:
        assert s.add_channel("d") == 4
        assert s.ensure_channel("e") == 5
        assert [c.index for c in s.snapshot().channels] == [1, 2, 4, 5]


def test_ensure_channel(store: Store, db: Path) -> None:
    assert store.ensure_channel("smtp") == 2  # exists: returned as it is
    assert store.ensure_channel("lmtp", direction=Direction.OUT, protocol=LMTP) == 5
    assert store.ensure_channel("lmtp") == 5
    with Store(db) as other:  # another handle sees it and does not create it again
        assert other.ensure_channel("lmtp", direction=Direction.IN) == 5
    lmtp = store.snapshot().channel("lmtp")
    assert lmtp is not None
    assert (lmtp.direction, lmtp.protocol) == (Direction.OUT, LMTP)


def test_new_channel_row(store: Store) -> None:
    before = time.time()
    store.add_channel("uucp", direction=Direction.IN, protocol=".1.3.6.1.2.1.27.4.540")
    snap = store.snapshot()
    assert [c.name for c in snap.channels] == ["smtpd", "smtp", "local", "relay", "uucp"]
    uucp = snap.channels[-1]
    assert (uucp.index, uucp.direction, uucp.protocol) == (5, Direction.IN,
                                                           "1.3.6.1.2.1.27.4.540")
    assert before <= uucp.created_at <= time.time()
    assert all(getattr(uucp, f) == 0 for f in (
        "received_messages", "rejected_messages", "transmitted_messages", "stored_messages",
        "inbound_associations", "accumulated_outbound_associations"))
    assert (uucp.oldest_stored_at, uucp.last_inbound_activity, uucp.inbound_rejection_reason,
            uucp.last_message_rejection_reason, uucp.next_retry_at) == (None,) * 5


# --- clear ------------------------------------------------------------------------------------

def busy_day(s: Store) -> None:
    s.receive("local", "m1", octets=1000, recipients=2, at=T)
    s.receive("local", "m2", octets=500, recipients=1, at=T)
    s.transmit("local", "m2", at=T)
    s.reject("local", reason="spam", at=T)
    s.refuse_inbound("local", reason="busy", at=T)
    s.open_inbound("local", key="k", at=T)
    s.fail_outbound("smtp", reason="refused", at=T)
    s.transmit("smtp", "x", octets=10, recipients=1, at=T)
    s.schedule_retry("smtp", retry_at=E)


CUMULATIVE = ("received_messages", "rejected_messages", "transmitted_messages",
              "received_octets", "transmitted_octets", "received_recipients",
              "transmitted_recipients", "accumulated_inbound_associations",
              "accumulated_outbound_associations", "rejected_inbound_associations",
              "failed_outbound_associations")
REASONS = ("inbound_rejection_reason", "outbound_failure_reason",
           "last_message_rejection_reason")


def test_clear_some_channels(store: Store) -> None:
    busy_day(store)
    before = store.snapshot(at=E)
    store.clear(["local"], at=5_000.0)
    after = store.snapshot(at=E)
    assert after.restarted_at == 5_000.0
    assert after.mta == before.mta  # only clearing everything zeroes the MTA totals
    assert after.channel("smtp") == before.channel("smtp")
    local = after.channel("local")
    assert local is not None
    assert changes(before, after) == {"local": {
        "received_messages": 0, "rejected_messages": 0, "transmitted_messages": 0,
        "received_octets": 0, "transmitted_octets": 0, "received_recipients": 0,
        "transmitted_recipients": 0, "accumulated_inbound_associations": 0,
        "rejected_inbound_associations": 0, "inbound_rejection_reason": None,
        "last_message_rejection_reason": None}}
    # the present stays: the queue, the live association, the last activity
    assert (local.stored_messages, local.stored_octets, local.oldest_stored_at) == (1, 1000, T)
    assert (local.inbound_associations, local.last_inbound_activity) == (1, T)
    assert after.associations == before.associations


def test_clear_everything(store: Store) -> None:
    busy_day(store)
    before = store.snapshot(at=E)
    store.clear(at=6_000.0)
    after = store.snapshot(at=E)
    assert after.restarted_at == 6_000.0
    assert after.database_id == before.database_id
    mta = after.mta
    assert (mta.received_messages, mta.received_octets, mta.received_recipients,
            mta.transmitted_messages, mta.transmitted_octets,
            mta.transmitted_recipients) == (0,) * 6
    assert (mta.stored_messages, mta.stored_octets, mta.stored_recipients) == (1, 1000, 2)
    for channel in after.channels:
        assert all(getattr(channel, f) == 0 for f in CUMULATIVE), channel.name
        assert all(getattr(channel, f) is None for f in REASONS), channel.name
    smtp = after.channel("smtp")
    assert smtp is not None and smtp.next_retry_at == E and smtp.last_outbound_activity == T
    assert after.associations == before.associations


def test_clear_with_an_unknown_name_or_no_names_clears_nothing(store: Store) -> None:
    busy_day(store)
    before = store.snapshot(at=E)
    with pytest.raises(UnknownChannel, match="'nope'"):
        store.clear(["local", "nope"], at=7_000.0)
    store.clear([], at=7_000.0)
    assert store.snapshot(at=E) == before


# --- the MTA row ------------------------------------------------------------------------------

def test_mta_identity(db: Path, tmp_path: Path) -> None:
    before = time.time()
    with Store(db) as s:
        snap = s.snapshot(at=E)
        assert (snap.appl_index, snap.appl_name, snap.appl_version) == (
            1, "mailmib", "mailmib " + counters.__version__)
        assert before <= snap.restarted_at <= time.time()
        assert len(snap.database_id) == 32 and int(snap.database_id, 16) >= 0
        assert snap.taken_at == E
        s.set_mta(name="postfix", version="3.7.11")
        s.set_mta(version="3.7.12")
    with Store(db) as s:
        again = s.snapshot()
        assert (again.appl_name, again.appl_version) == ("postfix", "3.7.12")
        assert again.database_id == snap.database_id
        assert again.restarted_at == snap.restarted_at
    with Store(tmp_path / "other.db") as s:  # a recreated database is told apart
        assert s.snapshot().database_id != snap.database_id


def test_in_memory_store() -> None:
    with Store(":memory:") as s:
        s.add_channel("local")
        s.receive("local", "m1", octets=3, recipients=1)
        assert s.snapshot().mta.stored_octets == 3


# --- files and failures -----------------------------------------------------------------------

def test_new_files_and_directories_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "mailmib.db"
    old = os.umask(0)  # so only the store's own modes can explain the result
    try:
        with Store(path) as s:
            s.add_channel("local")
            s.receive("local", "m1", octets=1, recipients=1)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        os.umask(old)
    assert modes == {"mailmib.db": 0o600, "mailmib.db-wal": 0o600, "mailmib.db-shm": 0o600}
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "var" / "lib").stat().st_mode) == 0o700
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    raw.close()


def test_missing_file_without_create(db: Path) -> None:
    with pytest.raises(DatabaseError, match=f"database {db} does not exist"):
        Store(db, create=False)
    assert not db.exists()
    Store(db).close()
    with Store(db, create=False) as s:
        assert s.snapshot().channels == ()


def test_schema_newer_than_the_code(db: Path) -> None:
    Store(db).close()
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    message = (f"database {db}: schema version {schema.SCHEMA_VERSION + 1} is newer than this"
               f" mailmib supports ({schema.SCHEMA_VERSION})")
    with pytest.raises(DatabaseError) as info:
        Store(db)
    assert str(info.value) == message
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION + 1,)
    raw.close()


def test_file_that_is_not_sqlite(db: Path) -> None:
    db.write_bytes(b"this is a mail log, not a database\n" * 200)
    with pytest.raises(DatabaseError) as info:
        Store(db)
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    assert "not a usable SQLite database" in str(info.value)


def test_corrupt_sqlite_file(db: Path) -> None:
    with Store(db) as s:
        s.add_channel("local")
        for i in range(200):
            s.receive("local", f"m{i}", octets=i, recipients=1)
    data = bytearray(db.read_bytes())
    assert len(data) > 8 * schema.PAGE_SIZE
    data[2 * schema.PAGE_SIZE:] = b"\xa5" * (len(data) - 2 * schema.PAGE_SIZE)
    db.write_bytes(bytes(data))
    with pytest.raises(DatabaseError) as info, Store(db) as s:
        s.snapshot()
    assert str(db) in str(info.value) and "\n" not in str(info.value)


def test_someone_elses_sqlite_database(db: Path) -> None:
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE recipes (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(DatabaseError, match="not a mailmib one"):
        Store(db)
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("recipes",)]
    raw.close()


def test_directory_in_place_of_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="is a directory"):
        Store(tmp_path)


def test_locked_past_the_timeout(store: Store, db: Path) -> None:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(db, busy_timeout=0.2) as waiting:
            started = time.monotonic()
            with pytest.raises(DatabaseError) as info:
                waiting.receive("local", "m1", octets=1, recipients=1)
            assert time.monotonic() - started >= 0.15
            assert str(info.value) == f"database {db} is locked (still busy after 0.2 s)"
            assert waiting.snapshot().mta.received_messages == 0  # WAL: readers go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.receive("local", "m1", octets=1, recipients=1)
    assert store.snapshot().mta.received_messages == 1


def test_closed_store(db: Path) -> None:
    s = Store(db)
    s.close()
    s.close()
    with pytest.raises(DatabaseError, match="is closed"):
        s.snapshot()
    with pytest.raises(DatabaseError, match="is closed"):
        s.add_channel("x")


WRITES: list[Event] = [
    lambda s: s.add_channel("new"),
    lambda s: s.ensure_channel("new"),
    lambda s: s.set_mta(name="x"),
    lambda s: s.receive("local", "m2", octets=1, recipients=1),
    lambda s: s.transmit("local", "m1"),
    lambda s: s.transfer("local", "relay", "m1"),
    lambda s: s.remove("local", "m1"),
    lambda s: s.reject("local"),
    lambda s: s.open_inbound("local"),
    lambda s: s.open_outbound("local"),
    lambda s: s.close_association("local", index=1),
    lambda s: s.refuse_inbound("local", reason="x"),
    lambda s: s.fail_outbound("local", reason="x"),
    lambda s: s.schedule_retry("local", retry_at=E),
    lambda s: s.clear(),
]


def read_only_fixture(db: Path) -> None:
    with Store(db) as s:
        s.add_channel("local")
        s.add_channel("relay")
        s.receive("local", "m1", octets=100, recipients=1, at=T)
        s.open_inbound("local", at=T)


def test_read_only_option(db: Path) -> None:
    read_only_fixture(db)
    with Store(db, read_only=True) as s:
        before = s.snapshot(at=E)
        assert before.mta.stored_messages == 1
        for write in WRITES:
            with pytest.raises(DatabaseError, match=f"database {db} is read-only"):
                write(s)
        assert s.snapshot(at=E) == before
    with pytest.raises(DatabaseError, match="does not exist"):
        Store(db.with_name("missing.db"), read_only=True)


def _permission_scenario(directory: str) -> list[str]:
    """Run as an unprivileged user: what a store on unwritable files reports."""
    out = []
    db = os.path.join(directory, "counters.db")
    with Store(db) as s:
        out.append(f"read {s.snapshot().mta.stored_messages}")
        for write in WRITES:
            try:
                write(s)
                out.append("wrote")
            except DatabaseError as exc:
                out.append(str(exc))
    try:
        Store(os.path.join(directory, "locked-dir", "sub", "new.db"))
        out.append("created")
    except DatabaseError as exc:
        out.append(str(exc))
    return out


def _as_nobody(scenario: Callable[[], list[str]]) -> list[str]:
    """Run `scenario` in a forked child that has given up root for 'nobody'."""
    nobody = 65534
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(nobody)
            os.setuid(nobody)
            result: object = scenario()
        except BaseException as exc:
            result = {"child failed": repr(exc)}
        os.write(writer, json.dumps(result).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    assert isinstance(out, list), out
    return out


def test_unwritable_files() -> None:
    """File permissions, really enforced. Root ignores them (and CI runs as root), so there
    the scenario runs in a forked child that has become 'nobody'."""
    directory = tempfile.mkdtemp(prefix="mailmib-ro-")  # tmp_path's parents are root-only
    try:
        db = Path(directory, "counters.db")
        read_only_fixture(db)
        locked_dir = os.path.join(directory, "locked-dir")
        os.mkdir(locked_dir, 0o500)
        os.chmod(db, 0o444)
        if os.geteuid() == 0:
            for path in (directory, str(db), locked_dir):
                os.chown(path, 65534, 65534)
            out = _as_nobody(lambda: _permission_scenario(directory))
        else:
            out = _permission_scenario(directory)
    finally:
        shutil.rmtree(directory)
    assert out[0] == "read 1"
    assert out[1:-1] == [f"database {db} is read-only (attempt to write a readonly database)"
                         ] * len(WRITES)
    assert out[-1] == (f"cannot create database {directory}/locked-dir/sub/new.db:"
                       " Permission denied")


# --- scale and concurrency --------------------------------------------------------------------

def test_snapshot_of_many_channels_and_messages(db: Path) -> None:
    with Store(db) as s:
        names = [f"ch{i:04d}" for i in range(1000)]
        for name in names:
            s.add_channel(name)
        for i in range(5000):
            s.receive(names[i % 1000], f"<{i}@example.org>", octets=i, recipients=1 + i % 3,
                      at=float(i))
        for i in range(0, 5000, 7):  # the same ids, again, in the next channel
            s.transfer(names[i % 1000], names[(i + 1) % 1000], f"<{i}@example.org>",
                       at=10_000.0 + i)
        snap = s.snapshot()
    assert [c.index for c in snap.channels] == list(range(1, 1001))
    queue: dict[int, list[tuple[int, int, float]]] = {i: [] for i in range(1000)}
    for i in range(5000):
        if i % 7 == 0:  # transferred: queued in the next channel since the transfer
            queue[(i + 1) % 1000].append((i, 1 + i % 3, 10_000.0 + i))
        else:
            queue[i % 1000].append((i, 1 + i % 3, float(i)))
    for n, channel in enumerate(snap.channels):
        held = queue[n]
        assert (channel.stored_messages, channel.stored_octets, channel.stored_recipients,
                channel.oldest_stored_at) == (
            len(held), sum(h[0] for h in held), sum(h[1] for h in held),
            min((h[2] for h in held), default=None)), channel.name
    assert (snap.mta.stored_messages, snap.mta.stored_octets, snap.mta.stored_recipients) == (
        5000, sum(range(5000)), sum(1 + i % 3 for i in range(5000)))
    assert snap.mta.received_messages == 5000


WORKERS = 4
PER_WORKER = 500


def _worker(path: str, number: int) -> None:
    with Store(path) as s:
        for i in range(PER_WORKER):
            mid = f"w{number}-{i}"
            s.receive("local", mid, octets=100, recipients=2)
            s.transmit("local", mid, recipients=1)
            s.transfer("local", "relay", mid)
            s.transmit("relay", mid)
            # all workers receive the same id, each into its own channel: exactly one of them
            # may find it new to the MTA
            s.receive(f"in{number}", f"shared-{i}", octets=10, recipients=1)
            key = s.open_inbound(f"in{number}")
            s.close_association(f"in{number}", index=key)


def test_concurrent_writers_lose_nothing(db: Path) -> None:
    with Store(db) as s:
        s.add_channel("local")
        s.add_channel("relay")
        for n in range(WORKERS):
            s.add_channel(f"in{n}", direction=Direction.IN)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(str(db), n)) for n in range(WORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    with Store(db) as s:
        snap = s.snapshot()
    n = WORKERS * PER_WORKER
    mta = snap.mta
    # received: n own ids + PER_WORKER shared ids, each once; transmitted: two copies per own id
    assert (mta.received_messages, mta.received_octets, mta.received_recipients) == (
        n + PER_WORKER, n * 100 + PER_WORKER * 10, n * 2 + PER_WORKER)
    assert (mta.transmitted_messages, mta.transmitted_octets,
            mta.transmitted_recipients) == (2 * n, 2 * n * 100, 2 * n)
    assert (mta.stored_messages, mta.stored_octets, mta.stored_recipients) == (
        PER_WORKER, PER_WORKER * 10, n)
    local, relay = snap.channel("local"), snap.channel("relay")
    assert local is not None and relay is not None
    assert (local.received_messages, local.transmitted_messages,
            local.transmitted_recipients, local.stored_messages) == (n, 2 * n, 2 * n, 0)
    assert (relay.received_messages, relay.received_recipients,
            relay.transmitted_messages, relay.stored_messages) == (n, n, n, 0)
    for k in range(WORKERS):
        inbound = snap.channel(f"in{k}")
        assert inbound is not None
        assert (inbound.received_messages, inbound.stored_messages,
                inbound.accumulated_inbound_associations,
                inbound.inbound_associations) == (PER_WORKER, PER_WORKER, PER_WORKER, 0)
    assert snap.associations == ()


# --- batches ------------------------------------------------------------------------------


def test_batch_commits_all_its_events_at_once(tmp_path: Path) -> None:
    db = tmp_path / "batch.db"
    with Store(db) as store, Store(db) as reader:
        store.add_channel("in", direction=Direction.IN)
        with store.batch():
            for n in range(5):
                store.receive("in", f"m{n}", octets=100 + n, recipients=1)
            inside = reader.snapshot().channel("in")
            assert inside is not None and inside.received_messages == 0  # not yet committed
        after = reader.snapshot().channel("in")
        assert after is not None
        assert after.received_messages == 5
        assert after.received_octets == sum(100 + n for n in range(5))


def test_a_failed_event_inside_a_batch_is_undone_alone(tmp_path: Path) -> None:
    with Store(tmp_path / "batch.db") as store:
        store.add_channel("both")
        with store.batch():
            store.receive("both", "m1", octets=10, recipients=2)
            with pytest.raises(BadEvent):
                store.transmit("both", "m1", recipients=3)  # more than are queued
            store.transmit("both", "m1", recipients=1)
        channel = store.snapshot().channel("both")
        assert channel is not None
        assert (channel.transmitted_messages, channel.transmitted_recipients) == (1, 1)
        assert channel.stored_recipients == 1


def test_an_exception_leaving_a_batch_rolls_it_all_back(tmp_path: Path) -> None:
    with Store(tmp_path / "batch.db") as store:
        before = store.snapshot(at=1000.0)
        with pytest.raises(RuntimeError), store.batch():
            store.ensure_channel("new", direction=Direction.IN)
            store.receive("new", "m1", octets=1, recipients=1)
            raise RuntimeError("caller gave up")
        assert store.snapshot(at=1000.0) == before
        with pytest.raises(UnknownChannel):
            store.receive("new", "m2", octets=1, recipients=1)  # nothing remembered either
