"""A real Postfix, followed by the real `counters follow postfix`, served by the real agent.

One private Postfix instance (tests/postfixlab.py: its own config and queue directory, smtpd on
127.0.0.1 and a free port, logging to a file) gets mail through smtplib and sendmail:
to a local mailbox, relayed to a tiny SMTP sink on loopback, to a route whose next hop is a
closed port (deferred, failed associations), and to a recipient refused at RCPT. The
follower, killed with SIGKILL halfway and restarted, must end with counters equal to what was
sent and stored values equal to `postqueue -j`; `counters sync postfix` must then find nothing
to change, and snmpwalk of mtaGroupTable must show the same numbers.

Needs root and Debian's postfix package (`make system-deps` installs it); skips otherwise.
"""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from counters import Store
from counters.feed import SOURCE
from counters.snapshot import Snapshot
from tests.conftest import REPO, AgentProcessFactory
from tests.netsnmp import Served, walk
from tests.postfixlab import PostfixLab, SmtpSink, free_tcp_port, postfix_available, wait_for

pytestmark = pytest.mark.netsnmp

UNAVAILABLE = postfix_available()
if UNAVAILABLE is not None:
    pytest.skip(UNAVAILABLE, allow_module_level=True)

MESSAGE = (b"From: a@client.test\r\nSubject: mailmib test\r\n\r\n"
           + b"A line of text that makes the message a little longer.\r\n" * 5)
GROUP_ENTRY = (1, 3, 6, 1, 2, 1, 28, 2, 1)


def counters(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "counters", "--db", str(db), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


class Follower:
    """`counters follow postfix LOG` as a subprocess."""

    def __init__(self, db: Path, log: Path, stderr: Path) -> None:
        self.stderr = stderr
        with open(stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "counters", "--db", str(db), "follow", "postfix",
                 str(log), "--poll", "0.05"], cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(10)


def snapshot(db: Path) -> Snapshot:
    with Store(db, read_only=True) as store:
        return store.snapshot()


def send(port: int, recipients: list[str]) -> dict[str, Any]:
    """One message over SMTP; the recipients refused at RCPT (all refused raises)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return dict(client.sendmail("a@client.test", recipients, MESSAGE))


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the whole scenario once; the tests check its outcome."""
    work = tmp_path_factory.mktemp("postfix-real")
    db = work / "mailmib.db"
    closed = free_tcp_port()
    with SmtpSink() as sink, PostfixLab.start(
            smtp_port=free_tcp_port(), routes={"sink.test": sink.port, "closed.test": closed},
            aliases={"alice": "nobody"}) as lab:
        follower = Follower(db, lab.log_path, work / "follower.stderr")
        try:
            port = lab.smtp_port
            send(port, ["alice@localhost"])                          # local
            send(port, ["x@sink.test", "y@sink.test"])               # relayed, 2 recipients
            send(port, ["x@sink.test"])                              # relayed
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(port, ["nosuch@localhost"])                     # refused at RCPT
            # Half-way: kill the follower at whatever it is doing, and start it again.
            time.sleep(0.3)
            assert follower.stop(signal.SIGKILL) == -signal.SIGKILL
            follower = Follower(db, lab.log_path, work / "follower.stderr")
            lab.sendmail("root@localhost", ["alice@localhost", "q@sink.test"], MESSAGE)
            # The sink has everything before the closed next hop is tried, so the last
            # outbound attempt is a failure (its reason is what mtaGroupOutboundFailureReason
            # then shows).
            wait_for(lambda: len(sink.received) == 3, timeout=20)
            send(port, ["z@closed.test"])                            # next hop closed
            refused = send(port, ["z2@closed.test", "alice@localhost", "nosuch@localhost"])
            assert list(refused) == ["nosuch@localhost"]
            with smtplib.SMTP("127.0.0.1", port) as client:          # client= but no message
                client.mail("a@client.test")
                client.rcpt("alice@localhost")
                client.rset()

            def settled() -> list[dict[str, Any]] | None:
                queue = lab.queue()
                if len(queue) != 2 or any(m["queue_name"] != "deferred" for m in queue):
                    return None
                if len(sink.received) != 3:
                    return None
                mta = snapshot(db).mta if db.exists() else None
                if mta is None or (mta.stored_messages, mta.transmitted_messages) != (2, 6):
                    return None
                # A hand-off between channels leaves the MTA totals as they were: wait until
                # the follower has applied the whole log, not just the lines that move them.
                with Store(db, read_only=True) as store:
                    position = store.log_position(SOURCE)
                if position is None or position.offset != lab.log_path.stat().st_size:
                    return None
                return queue

            queue = wait_for(settled, timeout=30)
            after_traffic = snapshot(db)
            with Store(db, read_only=True) as store:
                entries = {entry.message_id: entry for entry in store.queue_entries()}
            sync = counters(db, "sync", "postfix", "-c", str(lab.config_dir))
            after_sync = snapshot(db)
            with Store(db, read_only=True) as store:
                kinds = {k.kind: k for k in store.line_kinds(SOURCE)}
            # Empty the queue: the follower sees what postsuper logs, sync does the rest.
            lab.delete_all()
            time.sleep(0.5)
            sync_after_delete = counters(db, "sync", "postfix", "-c", str(lab.config_dir))
            after_delete = snapshot(db)
            log = lab.log_path.read_text(errors="replace")
        finally:
            follower.stop()
        yield {"db": db, "queue": queue, "entries": entries, "sink": sink.received,
               "after_traffic": after_traffic,
               "sync": sync, "after_sync": after_sync, "kinds": kinds, "log": log,
               "sync_after_delete": sync_after_delete, "after_delete": after_delete,
               "closed_port": closed, "stderr": (work / "follower.stderr").read_text()}


def test_the_scenario_settled(traffic: dict[str, Any]) -> None:
    assert traffic["queue"], (f"Postfix or the follower did not settle in 30 s;\n"
                              f"follower: {traffic['stderr']}\nlog:\n{traffic['log'][-4000:]}")


def test_counters_match_what_was_sent(traffic: dict[str, Any]) -> None:
    shot: Snapshot = traffic["after_traffic"]
    smtpd, pickup = shot.channel("smtpd"), shot.channel("pickup")
    local, smtp = shot.channel("local"), shot.channel("smtp")
    assert smtpd and pickup and local and smtp, [c.name for c in shot.channels]
    # 5 messages accepted over SMTP (7 accepted recipients), 1 submitted locally (2).
    assert (smtpd.received_messages, smtpd.received_recipients) == (5, 7)
    assert (pickup.received_messages, pickup.received_recipients) == (1, 2)
    assert smtpd.rejected_messages == 1
    assert "User unknown" in (smtpd.last_message_rejection_reason or "")
    # Sessions: 7 over SMTP (one per send() and the RSET one), all closed again.
    assert smtpd.accumulated_inbound_associations == 7
    assert smtpd.inbound_associations == 0
    # local delivered 3 copies; smtp relayed 3 messages (one with 2 recipients) to the sink.
    assert (local.transmitted_messages, local.transmitted_recipients) == (3, 3)
    assert (smtp.transmitted_messages, smtp.transmitted_recipients) == (3, 4)
    assert len(traffic["sink"]) == 3
    # The closed next hop: failed associations with Postfix's reason, mail stored in smtp.
    assert smtp.failed_outbound_associations >= 1
    assert smtp.outbound_failure_reason == (
        f"connect to 127.0.0.1[127.0.0.1]:{traffic['closed_port']}: Connection refused")
    assert smtp.accumulated_outbound_associations >= 1
    assert (smtp.stored_messages, smtp.stored_recipients) == (2, 2)
    for channel in (smtpd, pickup, local):
        assert channel.stored_messages == 0
    mta = shot.mta
    assert (mta.received_messages, mta.received_recipients) == (6, 9)
    assert (mta.transmitted_messages, mta.transmitted_recipients) == (6, 7)
    assert mta.received_octets == smtpd.received_octets + pickup.received_octets
    assert shot.appl_name == "postfix" and shot.appl_version.startswith("3.")


def test_stored_values_match_postqueue(traffic: dict[str, Any]) -> None:
    queue = traffic["queue"]
    shot: Snapshot = traffic["after_traffic"]
    assert shot.mta.stored_messages == len(queue)
    assert shot.mta.stored_octets == sum(m["message_size"] for m in queue)
    assert shot.mta.stored_recipients == sum(len(m["recipients"]) for m in queue)
    entries = traffic["entries"]
    assert sorted(entries) == sorted(m["queue_id"] for m in queue)
    for message in queue:
        entry = entries[message["queue_id"]]
        assert (entry.channel, entry.octets, entry.recipients) == (
            "smtp", message["message_size"], len(message["recipients"]))
    oldest = min(m["arrival_time"] for m in queue)
    smtp = shot.channel("smtp")
    assert smtp is not None and smtp.oldest_stored_at is not None
    assert abs(smtp.oldest_stored_at - oldest) <= 2


def test_sync_finds_nothing_to_change(traffic: dict[str, Any]) -> None:
    sync = traffic["sync"]
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout.strip() == ("2 queued; 0 added, 0 changed, 0 removed,"
                                   " 0 left to the follower")
    before, after = traffic["after_traffic"], traffic["after_sync"]
    assert before.mta == after.mta
    assert before.channels == after.channels


def test_emptied_queue_is_reconciled(traffic: dict[str, Any]) -> None:
    sync = traffic["sync_after_delete"]
    assert sync.returncode == 0, sync.stderr
    shot: Snapshot = traffic["after_delete"]
    assert (shot.mta.stored_messages, shot.mta.stored_recipients) == (0, 0)
    assert shot.mta.received_messages == 6  # nothing counted by the clean-up


def test_every_line_was_understood(traffic: dict[str, Any]) -> None:
    kinds = traffic["kinds"]
    assert "malformed" not in kinds and "oversized" not in kinds
    assert not [k for k in kinds if k.startswith("refused: ")], kinds
    for kind in ("smtpd: connect", "smtpd: client", "qmgr: queue active", "smtp: sent",
                 "smtp: deferred", "smtp: connect to", "local: sent", "qmgr: removed",
                 "smtpd: NOQUEUE reject RCPT", "pickup: uid"):
        assert kinds[kind].mapped, kind


def test_snmpwalk_shows_the_channels(traffic: dict[str, Any],
                                     agent_process: AgentProcessFactory) -> None:
    shot: Snapshot = traffic["after_delete"]
    with agent_process(traffic["db"]) as running:
        served = walk("snmpwalk", running.port, "-v2c", "-c", "public",
                      root=".1.3.6.1.2.1.28.2")
    names = {oid[-1]: value.value for oid, value in served.items()
             if oid[:len(GROUP_ENTRY) + 1] == (*GROUP_ENTRY, 25)}
    assert set(names.values()) >= {b"smtpd", b"pickup", b"local", b"smtp"}
    for channel in shot.channels:
        assert names[channel.index] == channel.name.encode()

    def column(number: int, index: int) -> Served:
        return served[(*GROUP_ENTRY, number, 1, index)]

    by_name = {channel.name: channel for channel in shot.channels}
    smtpd, smtp = by_name["smtpd"], by_name["smtp"]
    assert column(2, smtpd.index).value == 5      # mtaGroupReceivedMessages
    assert column(3, smtpd.index).value == 1      # mtaGroupRejectedMessages
    assert column(5, smtp.index).value == 3       # mtaGroupTransmittedMessages
    assert column(4, smtp.index).value == 0       # mtaGroupStoredMessages, after the clean-up
    assert column(20, smtp.index).value == smtp.failed_outbound_associations
    assert (*GROUP_ENTRY, 5, 1, smtpd.index) not in served  # inbound-only: no transmit side
