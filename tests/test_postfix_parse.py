"""The Postfix log parser (pure) and the feed that maps its records to store events, on a
sanitized log captured from a real Postfix 3.7 run (tests/data/postfix-sample.log: two runs of
a private instance, as tests/postfixlab.py sets it up) and on hand-made lines for the shapes
that run did not produce."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from counters import Store
from counters import postfix as pf
from counters.feed import SOURCE, PostfixFeed, load_message
from counters.snapshot import Snapshot

SAMPLE = Path(__file__).parent / "data" / "postfix-sample.log"
#: The sample was logged on Nov 27; read it as if it were early December of 2026.
NOW = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
H = "Nov 27 15:37:49 mx"


def parse(line: str, now: float = NOW) -> pf.Record:
    return pf.parse(line, now=now)


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines()


# --- the parser ----------------------------------------------------------------------------


def test_every_sample_line_is_a_known_shape() -> None:
    kinds: dict[str, int] = {}
    for line in sample_lines():
        record = parse(line)
        assert not isinstance(record, pf.Unparsed), line
        assert record.at is not None
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    others = {kind for kind in kinds if kind.endswith(": other")}
    # The noise the sample holds: postfix-script start, master start lines of the second
    # run, postsuper's summaries.
    assert others == {"postfix-script: other", "postsuper: other"}
    assert kinds["qmgr: queue active"] == 12
    assert kinds["smtp: deferred"] == 5


@pytest.mark.parametrize(("line", "expected"), [
    (f"{H} postfix/smtpd[24686]: connect from unknown[127.0.0.1]",
     pf.Connect("smtpd: connect", NOW, "smtpd", "smtpd", 24686, "unknown[127.0.0.1]")),
    (f"{H} postfix/smtpd[24686]: disconnect from unknown[127.0.0.1] ehlo=1 mail=8 rcpt=8/10"
     " data=6 rset=2 quit=1 commands=26/28",
     pf.Disconnect("smtpd: disconnect", NOW, "smtpd", "smtpd", 24686, "unknown[127.0.0.1]")),
    (f"{H} postfix/smtpd[1]: lost connection after DATA (0 bytes) from x[192.0.2.1]",
     pf.SessionTrouble("smtpd: lost connection", NOW, "smtpd", "smtpd", 1,
                       "lost connection", "DATA", "x[192.0.2.1]")),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1"
     " <nosuch@localhost>: Recipient address rejected: User unknown in local recipient table;"
     " from=<a@client.test> to=<nosuch@localhost> proto=ESMTP helo=<[127.0.0.1]>",
     pf.Reject("smtpd: NOQUEUE reject RCPT", NOW, "smtpd", "smtpd", 1, None, "reject", "RCPT",
               "unknown[127.0.0.1]", "550 5.1.1 <nosuch@localhost>: Recipient address"
               " rejected: User unknown in local recipient table", "a@client.test",
               "nosuch@localhost")),
    (f"{H} postfix/submission/smtpd[7]: NOQUEUE: reject: CONNECT from x[192.0.2.7]: 554"
     " 5.7.1 <x[192.0.2.7]>: Client host rejected: Access denied; proto=SMTP",
     pf.Reject("smtpd: NOQUEUE reject CONNECT", NOW, "submission", "smtpd", 7, None,
               "reject", "CONNECT", "x[192.0.2.7]",
               "554 5.7.1 <x[192.0.2.7]>: Client host rejected: Access denied; proto=SMTP",
               None, None)),
    (f"{H} postfix/smtpd[1]: BA030210925: client=unknown[127.0.0.1]",
     pf.Client("smtpd: client", NOW, "smtpd", "smtpd", 1, "BA030210925",
               "unknown[127.0.0.1]")),
    (f"{H} postfix/pickup[2]: C6CE021076C: uid=0 from=<root@localhost>",
     pf.Pickup("pickup: uid", NOW, "pickup", "pickup", 2, "C6CE021076C", "root@localhost")),
    (f"{H} postfix/qmgr[3]: BA75921076A: from=<a@client.test>, size=492, nrcpt=2"
     " (queue active)",
     pf.Queued("qmgr: queue active", NOW, "qmgr", "qmgr", 3, "BA75921076A", "a@client.test",
               492, 2)),
    (f"{H} postfix/local[4]: BA030210925: to=<nobody@mx.mailmib.test>, orig_to=<alice@localhost>,"
     " relay=local, delay=0.02, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (delivered to"
     " mailbox)",
     pf.Delivery("local: sent", NOW, "local", "local", 4, "BA030210925",
                 "nobody@mx.mailmib.test", "alice@localhost", "local", None, "2.0.0", "sent",
                 "delivered to mailbox")),
    (f"{H} postfix/relay/smtp[5]: 4Qr8Fz0Dq5z1vG6: to=<x@example.net>,"
     " relay=mx.example.net[192.0.2.5]:25, conn_use=2, delay=1.2, delays=0.1/0/0.5/0.6,"
     " dsn=4.7.1, status=deferred (host mx.example.net[192.0.2.5] said: 451 4.7.1 later (in"
     " reply to RCPT TO command))",
     pf.Delivery("smtp: deferred", NOW, "relay", "smtp", 5, "4Qr8Fz0Dq5z1vG6", "x@example.net",
                 None, "mx.example.net[192.0.2.5]:25", 2, "4.7.1", "deferred",
                 "host mx.example.net[192.0.2.5] said: 451 4.7.1 later (in reply to RCPT TO"
                 " command)")),
    (f"{H} postfix/smtp[6]: connect to 127.0.0.1[127.0.0.1]:57253: Connection refused",
     pf.ConnectFailed("smtp: connect to", NOW, "smtp", "smtp", 6, "127.0.0.1[127.0.0.1]:57253",
                      "connect to 127.0.0.1[127.0.0.1]:57253: Connection refused")),
    (f"{H} postfix/bounce[7]: BA7E8210A82: sender non-delivery notification: C295C210A96",
     pf.Notification("bounce: sender notification", NOW, "bounce", "bounce", 7, "BA7E8210A82",
                     "non-delivery", "C295C210A96")),
    (f"{H} postfix/qmgr[3]: BA7E8210A82: from=<root@localhost>, status=expired, returned to"
     " sender",
     pf.Expired("qmgr: expired", NOW, "qmgr", "qmgr", 3, "BA7E8210A82", "expired")),
    (f"{H} postfix/qmgr[3]: BA7E8210A82: removed",
     pf.Removed("qmgr: removed", NOW, "qmgr", "qmgr", 3, "BA7E8210A82")),
    (f"{H} postfix/master[9]: daemon started -- version 3.7.11, configuration /etc/postfix",
     pf.MasterStarted("master: started", NOW, "master", "master", 9, "3.7.11")),
    (f"{H} postfix/master[9]: terminating on signal 15",
     pf.MasterStopped("master: terminating", NOW, "master", "master", 9)),
    (f"{H} postfix/cleanup[8]: ABCDEF123: reject: header Subject: spam from x[192.0.2.1];"
     " from=<a@b> to=<c@d> proto=ESMTP helo=<x>: 5.7.1 message content rejected",
     pf.Reject("cleanup: reject", NOW, "cleanup", "cleanup", 8, "ABCDEF123", "reject",
               "header", "", "5.7.1 message content rejected", None, None)),
])
def test_line_shapes(line: str, expected: pf.Record) -> None:
    record = parse(line)
    assert record == pf.parse(line, now=NOW)
    expected_at = time.mktime((2026, 11, 27, 15, 37, 49, 0, 0, -1))
    assert record.at == expected_at
    assert record == type(expected)(*(
        [expected.kind, expected_at] + [getattr(expected, f) for f in _fields(expected)[2:]]))


def _fields(record: pf.Record) -> list[str]:
    import dataclasses

    return [field.name for field in dataclasses.fields(record)]


@pytest.mark.parametrize(("line", "kind"), [
    ("", "malformed"),
    ("garbage \x00\x01\x02 \ufffd\ufffd", "malformed"),
    ("Nov 27 15:37:49 mx postfix/smtpd[1]", "malformed"),          # truncated: no text
    ("Nov 27 15:37:49 mx dovecot[12]: imap-login: Login: user=<a>", "not postfix"),
    ("x" * (pf.MAX_LINE + 1), "oversized"),
    (f"{H} postfix/smtpd[1]: something new in Postfix 4", "smtpd: other"),
    (f"{H} postfix/smtpd[1]: warning: hostname x does not resolve", "smtpd: warning"),
    (f"{H} postfix/qmgr[1]: ABCDEF123: from=<a@b>, size=12", "qmgr: other"),      # truncated
    (f"{H} postfix/smtp[1]: ABCDEF123: to=<a@b>, relay=none, delay=0", "smtp: other"),
    (f"{H} postfix/anvil[1]: statistics: max connection rate 1/60s", "anvil: other"),
    (f"{H} postfix/qmgr[1]: ABCDEF123: from=<a@b>, size=99999999999999999999, nrcpt=1"
     " (queue active)", "qmgr: other"),
])
def test_lines_not_understood_are_kinds_not_errors(line: str, kind: str) -> None:
    assert parse(line).kind == kind


def test_rfc3339_timestamps_and_service_names() -> None:
    record = parse("2026-05-01T12:00:00.250000+02:00 mx postfix/submission/smtpd[77]:"
                   " connect from client.example[192.0.2.9]")
    assert isinstance(record, pf.Connect)
    assert record.at == 1777629600.25
    assert (record.service, record.process, record.pid) == ("submission", "smtpd", 77)
    assert parse(f"{H} postfix-out/smtp[1]: connect to x[192.0.2.1]:25: Connection timed out"
                 ).service == "smtp"


@pytest.mark.parametrize(("stamp", "now", "year"), [
    ("Dec 31 23:59:59", (2027, 1, 1, 0, 0, 5), 2026),    # read just after New Year
    ("Jan  1 00:00:03", (2026, 12, 31, 23, 59, 59), 2027),  # clock a little behind the log
    ("Jan  1 00:00:03", (2027, 1, 1, 0, 0, 5), 2027),
    ("Nov 27 15:37:49", (2026, 12, 1, 12, 0, 0), 2026),
    ("Feb 29 12:00:00", (2026, 3, 1, 0, 0, 0), 2024),    # the latest year that had a Feb 29
])
def test_year_is_the_one_nearest_now_without_being_in_the_future(
        stamp: str, now: tuple[int, ...], year: int) -> None:
    reference = time.mktime((*now, 0, 0, -1))
    record = parse(f"{stamp} mx postfix/qmgr[1]: ABCDEF123: removed", reference)
    assert record.at is not None
    assert time.localtime(record.at).tm_year == year


def test_impossible_dates_have_no_time() -> None:
    assert parse("Feb 30 12:00:00 mx postfix/qmgr[1]: ABCDEF123: removed").at is None
    assert parse("Nov 27 25:00:00 mx postfix/qmgr[1]: ABCDEF123: removed").at is None


# --- the feed, on the real sample --------------------------------------------------------


def feed(store: Store, lines: list[str], now: float = NOW) -> None:
    with store.batch():
        PostfixFeed(store, now=lambda: now).apply([line.encode() for line in lines])


def counts(shot: Snapshot, name: str) -> tuple[int, ...]:
    channel = shot.channel(name)
    assert channel is not None, name
    return (channel.received_messages, channel.received_recipients,
            channel.transmitted_messages, channel.transmitted_recipients,
            channel.stored_messages, channel.stored_recipients)


def test_the_sample_log_gives_the_counts_of_its_traffic(store: Store) -> None:
    feed(store, sample_lines())
    shot = store.snapshot(at=NOW)
    # in, in-recipients, out, out-recipients, stored, stored-recipients
    assert counts(shot, "smtpd") == (9, 11, 0, 0, 0, 0)
    assert counts(shot, "pickup") == (1, 2, 0, 0, 0, 0)
    assert counts(shot, "internal") == (1, 1, 0, 0, 0, 0)      # the bounce notice
    assert counts(shot, "local") == (0, 0, 5, 5, 0, 0)
    # smtp still holds two messages postsuper -d ALL removed without a line each, and the
    # one deferred in the second run.
    assert counts(shot, "smtp") == (0, 0, 3, 4, 3, 3)
    smtpd, smtp = shot.channel("smtpd"), shot.channel("smtp")
    assert smtpd is not None and smtp is not None
    assert smtpd.rejected_messages == 2
    assert (smtpd.accumulated_inbound_associations, smtpd.inbound_associations) == (4, 1)
    assert (smtp.failed_outbound_associations, smtp.accumulated_outbound_associations) == (5, 3)
    assert smtp.outbound_failure_reason == ("connect to 127.0.0.1[127.0.0.1]:42437:"
                                            " Connection refused")
    mta = shot.mta
    assert (mta.received_messages, mta.received_recipients) == (11, 14)
    assert (mta.transmitted_messages, mta.transmitted_recipients) == (8, 9)
    assert (mta.stored_messages, mta.stored_recipients) == (3, 3)
    assert (shot.appl_name, shot.appl_version) == ("postfix", "3.7.11")
    # The transaction reset after RCPT left a queue id that never became a message.
    assert load_message(store, "C0A5B210954") is None
    kinds = {k.kind: k for k in store.line_kinds(SOURCE)}
    assert sum(k.lines for k in kinds.values()) == len(sample_lines())
    assert not kinds["bounce: sender notification"].mapped
    assert kinds["qmgr: queue active"].mapped


def test_applying_the_sample_twice_in_pieces_is_the_same_as_once(tmp_path: Path) -> None:
    lines = sample_lines()
    with Store(tmp_path / "a.db") as whole, Store(tmp_path / "b.db") as pieces:
        feed(whole, lines)
        for start in range(0, len(lines), 7):
            feed(pieces, lines[start:start + 7])
        assert whole.snapshot(at=NOW).mta == pieces.snapshot(at=NOW).mta
        assert [counts(whole.snapshot(at=NOW), c.name) for c in whole.snapshot().channels] == [
            counts(pieces.snapshot(at=NOW), c.name) for c in whole.snapshot().channels]


# --- the feed, on hand-made situations -----------------------------------------------------


def qline(process: str, text: str, pid: int = 100, at: str = "15:37:49") -> str:
    return f"Nov 27 {at} mx postfix/{process}[{pid}]: {text}"


def delivery(process: str, qid: str, to: str, status: str, relay: str = "local",
             pid: int = 200, extra: str = "") -> str:
    return qline(process, f"{qid}: to=<{to}>, {extra}relay={relay}, delay=0.1,"
                 f" delays=0/0/0/0.1, dsn={'2.0.0' if status == 'sent' else '4.4.1'},"
                 f" status={status} (text)", pid)


def smtp_message(qid: str, recipients: int, size: int = 1000) -> list[str]:
    return [qline("smtpd", f"{qid}: client=c[192.0.2.1]"),
            qline("cleanup", f"{qid}: message-id=<{qid}@x>"),
            qline("qmgr", f"{qid}: from=<a@b>, size={size}, nrcpt={recipients}"
                  " (queue active)")]


def test_retries_repeat_the_qmgr_line_and_deliveries_move_recipients(store: Store) -> None:
    lines = [
        *smtp_message("AAAA1", 3),
        delivery("smtp", "AAAA1", "r1@far", "deferred", relay="none"),
        delivery("local", "AAAA1", "r2@here", "sent"),
        delivery("smtp", "AAAA1", "r3@far", "bounced", relay="mx[192.0.2.2]:25"),
        qline("qmgr", "AAAA1: from=<a@b>, size=1000, nrcpt=3 (queue active)"),  # the retry
        delivery("error", "AAAA1", "r1@far", "deferred", relay="none"),
    ]
    feed(store, lines)
    shot = store.snapshot(at=NOW)
    assert counts(shot, "smtpd") == (1, 3, 0, 0, 0, 0)
    assert counts(shot, "local") == (0, 0, 1, 1, 0, 0)
    assert counts(shot, "smtp") == (0, 0, 0, 0, 1, 1)   # r1 stored, r3 bounced away
    feed(store, [delivery("smtp", "AAAA1", "r1@far", "sent", relay="mx[192.0.2.2]:25"),
                 qline("qmgr", "AAAA1: removed")])
    shot = store.snapshot(at=NOW)
    assert counts(shot, "smtp") == (0, 0, 1, 1, 0, 0)
    assert (shot.mta.received_messages, shot.mta.transmitted_messages) == (1, 2)
    assert load_message(store, "AAAA1") is None


def test_one_copy_per_channel_many_recipients(store: Store) -> None:
    feed(store, [*smtp_message("BBBB1", 3, size=2048),
                 *(delivery("smtp", "BBBB1", f"r{i}@far", "sent", relay="mx[192.0.2.2]:25")
                   for i in range(3)),
                 qline("qmgr", "BBBB1: removed")])
    shot = store.snapshot(at=NOW)
    smtp = shot.channel("smtp")
    assert smtp is not None
    assert (smtp.transmitted_messages, smtp.transmitted_recipients,
            smtp.transmitted_octets) == (1, 3, 2048)
    assert smtp.accumulated_outbound_associations == 1   # one delivery request


def test_refusals_and_rejections(store: Store) -> None:
    feed(store, [
        qline("smtpd", "connect from c[192.0.2.1]", pid=7),
        qline("smtpd", "NOQUEUE: reject: CONNECT from c[192.0.2.1]: 554 5.7.1 go away;"
              " proto=SMTP", pid=7),
        qline("smtpd", "disconnect from c[192.0.2.1] commands=0", pid=7),
        *smtp_message("CCCC1", 1),
        qline("cleanup", "CCCC1: reject: body spam from c[192.0.2.1]; from=<a@b> to=<c@d>"
              " proto=ESMTP helo=<c>: 5.7.1 content rejected"),
    ])
    smtpd = store.snapshot(at=NOW).channel("smtpd")
    assert smtpd is not None
    assert smtpd.rejected_inbound_associations == 1
    assert smtpd.inbound_rejection_reason == "554 5.7.1 go away; proto=SMTP"
    assert smtpd.rejected_messages == 1
    assert smtpd.last_message_rejection_reason == "5.7.1 content rejected"


def test_queue_ids_are_reused_after_removal_and_unknown_ones_adopted(store: Store) -> None:
    feed(store, [
        # first seen on a retry: stored in `queue`, not counted as received
        qline("qmgr", "DDDD1: from=<a@b>, size=500, nrcpt=2 (queue active)"),
        delivery("smtp", "DDDD1", "r1@far", "sent", relay="mx[192.0.2.2]:25"),
        qline("qmgr", "DDDD1: removed"),
        *smtp_message("DDDD1", 1),                          # the id used again
    ])
    shot = store.snapshot(at=NOW)
    assert counts(shot, "queue") == (0, 0, 0, 0, 0, 0)
    assert counts(shot, "smtpd") == (1, 1, 0, 0, 1, 1)
    assert counts(shot, "smtp") == (0, 0, 1, 1, 0, 0)
    assert shot.mta.received_messages == 1


def test_master_stop_closes_live_sessions(store: Store) -> None:
    feed(store, [qline("smtpd", "connect from c[192.0.2.1]", pid=1),
                 qline("smtpd", "connect from d[192.0.2.2]", pid=2)])
    assert len(store.snapshot().associations) == 2
    feed(store, [qline("master", "terminating on signal 15", pid=3)])
    assert store.snapshot().associations == ()


def test_what_the_store_refuses_is_counted_not_fatal(store: Store) -> None:
    # An operator made "smtp" an inbound channel: deliveries by it cannot be transmitted.
    store.add_channel("smtp", direction="in")  # type: ignore[arg-type]
    feed(store, [*smtp_message("EEEE1", 1),
                 delivery("smtp", "EEEE1", "r@far", "sent", relay="mx[192.0.2.2]:25"),
                 qline("qmgr", "EEEE1: removed")])
    kinds = {k.kind: k for k in store.line_kinds(SOURCE)}
    assert kinds["refused: smtp: sent"].lines == 1
    assert "inbound-only" in kinds["refused: smtp: sent"].sample
    assert store.snapshot().mta.stored_messages == 0
