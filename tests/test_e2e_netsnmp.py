"""End to end: traffic recorded with the real `counters` CLI, served by the real agent on a real
UDP port, read back with the real Net-SNMP tools, compared with the store's own snapshot.

Values that depend on the clock (sysUpTime, the TimeInterval columns) are checked to lie between
what a snapshot taken just before and one taken just after the poll give; the agent's own
statistics (snmp group, snmpEngine, usmStats), which the poll itself moves, by type only;
everything else must be equal exactly.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import default_sys_descr
from agent.oids import AGENT_SCALARS, AGENT_SUBTREES, MTA, parse_oid
from agent.view import AgentInfo, Kind, Oid, View
from counters import Store
from counters.snapshot import Snapshot
from tests.netsnmp import (
    MIBS,
    NUMERIC,
    Served,
    oid_text,
    parse_varbinds,
    run,
    target,
    wait_until,
    walk,
)

pytestmark = pytest.mark.netsnmp

SYSTEM = (1, 3, 6, 1, 2, 1, 1)
APPL_TABLE = (1, 3, 6, 1, 2, 1, 27, 1)
MTA_TABLE = (*MTA, 1)
GROUP_ENTRY = (*MTA, 2, 1)
SYS_UPTIME = (*SYSTEM, 3, 0)
APPL_UPTIME = (*APPL_TABLE, 1, 5, 1)
APPL_LAST_CHANGE = (*APPL_TABLE, 1, 7, 1)
MTA_RECEIVED = (*MTA_TABLE, 1, 1, 1)
TIME_INTERVAL_COLUMNS = {(*GROUP_ENTRY, column) for column in (12, 17, 18, 23)}
SYS_FIELDS = {"--sys-contact": "postmaster@example.org", "--sys-name": "mx1.example.org",
              "--sys-location": "rack 4"}


def counters(db: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "counters", "--db", str(db), *args],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def record_scenario(db: Path) -> None:
    """A small MTA: smtpd in, smtp and local out, a two-way relay channel."""
    counters(db, "mta", "set", "--name", "mx1 mail", "--version", "3.7.10")
    counters(db, "channel", "add", "smtpd", "--direction", "in")
    counters(db, "channel", "add", "smtp", "--direction", "out")
    counters(db, "channel", "add", "local", "--direction", "out",
             "--protocol", "1.3.6.1.2.1.27.4.24")
    counters(db, "channel", "add", "relay", "--direction", "both")
    counters(db, "inbound", "open", "smtpd", "--remote", "client.example.net", "--key", "s1")
    counters(db, "inbound", "open", "smtpd", "--remote", "other.example.net", "--key", "s2")
    counters(db, "inbound", "refuse", "smtpd", "--reason", "554 5.7.1 relay access denied")
    counters(db, "receive", "smtpd", "m1", "--octets", "1500", "--recipients", "2")
    counters(db, "receive", "smtpd", "m2", "--octets", "70000", "--recipients", "1")
    counters(db, "receive", "smtpd", "m3", "--octets", "10", "--recipients", "3")
    counters(db, "reject", "smtpd", "--reason", "spam")
    counters(db, "inbound", "close", "smtpd", "--key", "s2")
    counters(db, "transfer", "smtpd", "smtp", "m1")
    counters(db, "outbound", "open", "smtp", "--remote", "mx.example.com", "--key", "o1")
    counters(db, "transmit", "smtp", "m1")
    counters(db, "outbound", "fail", "smtp", "--reason", "connect to mx2[192.0.2.7]:25: refused")
    counters(db, "retry", "smtp", "--in", "600")
    counters(db, "transfer", "smtpd", "local", "m2")
    counters(db, "receive", "relay", "r1", "--octets", "2048", "--recipients", "4")
    counters(db, "transmit", "relay", "r1", "--recipients", "3")


@pytest.fixture(scope="module")
def served_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("e2e") / "mailmib.db"
    record_scenario(db)
    return db


@pytest.fixture(scope="module")
def live(served_db: Path, agent_process: Any) -> Iterator[Any]:
    args: list[str] = []
    for option, value in SYS_FIELDS.items():
        args += [option, value]
    with agent_process(served_db, *args) as agent:
        yield agent


def expected_views(db: Path, agent: Any, before: float, after: float) -> tuple[View, View]:
    """The views a snapshot at `before` and at `after` give."""
    info = AgentInfo(started_at=agent.started_at, sys_descr=default_sys_descr(),
                     sys_object_id=MTA, sys_contact=SYS_FIELDS["--sys-contact"],
                     sys_name=SYS_FIELDS["--sys-name"], sys_location=SYS_FIELDS["--sys-location"])
    with Store(db) as store:
        early, late = store.snapshot(at=before), store.snapshot(at=after)
    return (View.build(early, info, live=AGENT_SCALARS),
            View.build(late, info, live=AGENT_SCALARS))


def assert_matches(served: dict[Oid, Served], early: View, late: View, agent: Any) -> None:
    expected_oids = [oid for oid, _ in early.items]
    assert list(served) == expected_oids, "served OIDs differ from the snapshot's view"
    late_values = dict(late.items)
    for oid, value in early.items:
        got = served[oid]
        assert got.kind is value.kind, oid_text(oid)
        if oid == SYS_UPTIME:
            limit = math.ceil((time.time() - agent.started_at) * 100)
            assert 0 <= int(got.value) <= limit  # type: ignore[arg-type]
        elif any(oid[:len(subtree)] == subtree for subtree in AGENT_SUBTREES):
            continue  # the agent's own statistics, which the walk itself moves: kind only
        elif oid[:-2] in TIME_INTERVAL_COLUMNS:
            bounds = sorted((int(value.value), int(late_values[oid].value)))  # type: ignore[arg-type]
            assert bounds[0] <= int(got.value) <= bounds[1] + 1, oid_text(oid)  # type: ignore[arg-type]
        else:
            assert got.value == value.value, oid_text(oid)


@pytest.mark.parametrize("tool, version", [("snmpwalk", "2c"), ("snmpwalk", "1"),
                                           ("snmpbulkwalk", "2c")])
def test_walk_serves_exactly_the_snapshot(live: Any, tool: str, version: str) -> None:
    before = time.time()
    served = walk(tool, live.port, "-v", version, "-c", "public")
    after = time.time()
    early, late = expected_views(live.db, live, before, after)
    assert_matches(served, early, late, live)


def test_bulkwalk_with_large_repetitions_serves_the_same(live: Any) -> None:
    before = time.time()
    served = walk("snmpbulkwalk", live.port, "-v2c", "-c", "public", "-Cr200")
    after = time.time()
    assert_matches(served, *expected_views(live.db, live, before, after), live)


def test_mta_table_is_the_snapshot_by_the_rfc_rules(live: Any) -> None:
    """An independent reading: mtaTable columns computed here from the snapshot's totals."""
    served = walk("snmpwalk", live.port, "-v2c", "-c", "public", root=oid_text(MTA_TABLE))
    with Store(live.db) as store:
        mta = store.snapshot().mta

    def k(octets: int) -> int:
        return -(-octets // 1024)

    expected = [mta.received_messages, mta.stored_messages, mta.transmitted_messages,
                k(mta.received_octets), k(mta.stored_octets), k(mta.transmitted_octets),
                mta.received_recipients, mta.stored_recipients, mta.transmitted_recipients]
    assert [served[(*MTA_TABLE, 1, column, 1)].value for column in range(1, 10)] == expected
    # The scenario's hand-offs count once: three messages in through smtpd, one through relay.
    assert mta.received_messages == 4


def test_snmptable_with_the_shipped_mibs(live: Any) -> None:
    def snmptable(*args: str) -> list[str]:
        proc = run("snmptable", "-v2c", "-c", "public", "-M", f"+{MIBS}", "-m", "MTA-MIB",
                   "-Cf", "|", *args, target(live.port), "mtaGroupTable")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        return proc.stdout.strip().splitlines()

    columns = snmptable("-Ch")[0].split("|")  # -Ch: the column names (then "No entries")
    rows = [dict(zip(columns, line.split("|"), strict=True)) for line in snmptable("-CH")]
    with Store(live.db) as store:
        snapshot = store.snapshot()
    # snmptable lists a sparse table's rows in the order it first meets them, so key by name.
    by_name = {row["mtaGroupName"]: row for row in rows}
    assert len(by_name) == len(rows)
    assert sorted(by_name) == sorted(c.name for c in snapshot.channels)
    for channel in snapshot.channels:
        row = by_name[channel.name]
        stored_k = -(-channel.stored_octets // 1024)
        assert row["mtaGroupStoredMessages"] == str(channel.stored_messages)
        assert row["mtaGroupStoredVolume"] == f"{stored_k} K-octets"
        if channel.direction.inbound:
            assert row["mtaGroupReceivedMessages"] == str(channel.received_messages)
            assert row["mtaGroupRejectedMessages"] == str(channel.rejected_messages)
            assert row["mtaGroupInboundRejectionReason"] == (
                channel.inbound_rejection_reason if channel.inbound_rejection_reason is not None
                else "never")
        else:
            assert row["mtaGroupReceivedMessages"] == "?"  # absent instance
        if channel.direction.outbound:
            assert row["mtaGroupTransmittedMessages"] == str(channel.transmitted_messages)
            assert row["mtaGroupFailedOutboundAssociations"] == str(
                channel.failed_outbound_associations)
        else:
            assert row["mtaGroupTransmittedMessages"] == "?"


def test_every_served_mib_object_has_the_mibs_name_and_type(live: Any) -> None:
    """Walked with the shipped MIBs loaded, every applTable/assocTable/MTA-MIB value resolves
    to a named object and Net-SNMP reports no type mismatch against the MIB."""
    proc = run("snmpwalk", "-v2c", "-c", "public", "-M", f"+{MIBS}", "-m", "MTA-MIB",
               "-Os", target(live.port), ".1.3.6.1.2.1")
    assert proc.returncode == 0, proc.stderr
    assert "Wrong Type" not in proc.stdout
    lines = [line for line in proc.stdout.splitlines()
             if not line.startswith(("sys", "iso.3.6.1.2.1.1.")) and " = " in line]
    names = {line.split(" = ")[0].split(".")[0] for line in lines}
    assert names >= {"mtaReceivedMessages", "mtaGroupName", "mtaGroupScheduledRetry",
                     "applName", "assocDuration", "mtaGroupAssociationIndex"}
    assert all(not name[0].isdigit() and not name.startswith("iso") for name in names), names


def test_get_of_several_oids_in_one_request(live: Any) -> None:
    with Store(live.db) as store:
        snapshot: Snapshot = store.snapshot()
    smtpd = snapshot.channel("smtpd")
    smtp = snapshot.channel("smtp")
    assert smtpd is not None and smtp is not None
    oids = [(*GROUP_ENTRY, 2, 1, smtpd.index), (*GROUP_ENTRY, 5, 1, smtp.index),
            (*GROUP_ENTRY, 25, 1, smtp.index), (*GROUP_ENTRY, 5, 1, smtpd.index)]
    proc = run("snmpget", "-v2c", "-c", "public", *NUMERIC, target(live.port),
               *map(oid_text, oids))
    assert proc.returncode == 0, proc.stderr
    got = dict(parse_varbinds(proc.stdout))
    assert got[oids[0]] == Served(Kind.COUNTER32, smtpd.received_messages)
    assert got[oids[1]] == Served(Kind.COUNTER32, smtp.transmitted_messages)
    assert got[oids[2]] == Served(Kind.OCTET_STRING, b"smtp")
    assert str(got[oids[3]]).startswith("No Such Instance")  # smtpd has no transmit side


def test_getnext_crosses_column_boundaries(live: Any) -> None:
    with Store(live.db) as store:
        snapshot = store.snapshot()
    last = snapshot.channels[-1].index
    first = snapshot.channels[0].index
    proc = run("snmpgetnext", "-v2c", "-c", "public", *NUMERIC, target(live.port),
               oid_text((*GROUP_ENTRY, 24, 1, last)))
    assert proc.returncode == 0, proc.stderr
    [(oid, value)] = parse_varbinds(proc.stdout)
    assert oid == (*GROUP_ENTRY, 25, 1, first)
    assert value == Served(Kind.OCTET_STRING, snapshot.channels[0].name.encode())


def test_counter_change_is_seen_by_the_next_poll(live: Any) -> None:
    with Store(live.db) as store:
        before = store.snapshot().channel("relay")
    assert before is not None
    oid = (*GROUP_ENTRY, 2, 1, before.index)
    counters(live.db, "receive", "relay", "r-new", "--octets", "1", "--recipients", "1")
    expected = Served(Kind.COUNTER32, before.received_messages + 1)

    def poll() -> bool:
        proc = run("snmpget", "-v2c", "-c", "public", *NUMERIC, target(live.port),
                   oid_text(oid))
        [(_, value)] = parse_varbinds(proc.stdout)
        return value == expected

    wait_until(poll)  # the agent picks a change up at its next refresh


def test_assoc_table_lists_the_live_associations(live: Any) -> None:
    served = walk("snmpwalk", live.port, "-v2c", "-c", "public",
                  root=oid_text(parse_oid("1.3.6.1.2.1.27.2")))
    with Store(live.db) as store:
        snapshot = store.snapshot()
    remotes = {oid[-1]: value.value for oid, value in served.items() if oid[-3] == 2}
    assert remotes == {a.index: a.remote.encode() for a in snapshot.associations}
    assert len(remotes) == 2  # s1 into smtpd and o1 out of smtp are still open
    members = walk("snmpwalk", live.port, "-v2c", "-c", "public",
                   root=oid_text((*MTA, 3)))
    assert {(oid[-2], oid[-1]) for oid in members} == {
        (a.channel_index, a.index) for a in snapshot.associations}
    assert all(value == Served(Kind.INTEGER, oid[-1]) for oid, value in members.items())



def test_a_clear_moves_appl_uptime_so_pollers_see_a_reset(tmp_path: Path,
                                                          agent_process: Any) -> None:
    db = tmp_path / "reset.db"
    counters(db, "channel", "add", "relay")
    counters(db, "receive", "relay", "m1", "--octets", "10", "--recipients", "1")

    def poll(agent: Any) -> dict[Oid, Served]:
        proc = run("snmpget", "-v2c", "-c", "public", *NUMERIC, target(agent.port),
                   *map(oid_text, (APPL_UPTIME, APPL_LAST_CHANGE, MTA_RECEIVED, SYS_UPTIME)))
        assert proc.returncode == 0, proc.stderr
        return {oid: value for oid, value in parse_varbinds(proc.stdout)
                if isinstance(value, Served)}

    with agent_process(db) as agent:
        before = poll(agent)
        # Counting began before the agent started: RFC 1565 says 0.
        assert before[APPL_UPTIME] == Served(Kind.TIMETICKS, 0)
        assert before[MTA_RECEIVED] == Served(Kind.COUNTER32, 1)
        counters(db, "clear", "--all")
        after = wait_until(lambda: (p := poll(agent))[MTA_RECEIVED].value == 0 and p)
    uptime = after[APPL_UPTIME]
    assert uptime.kind is Kind.TIMETICKS
    assert 0 < int(uptime.value) <= int(after[SYS_UPTIME].value)  # type: ignore[arg-type]
    assert after[APPL_LAST_CHANGE] == uptime  # applLastChange moved with it
