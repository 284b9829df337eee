"""Concurrent writers and pollers: 8 writer processes record mail events through the Store API
while 4 pollers read the MTA-MIB tables from two running agents (one answering through the fast
path, one through pysnmp only), continuously, for several seconds.

The writes are designed so that an invariant holds at every commit. Writer w's step k is ONE
batch (one transaction):

    open inbound association w-k on channel A, close w-(k-1)
    receive message w-m(k) into A           (1024 octets, 1 to 3 recipients)
    transfer message w-m(k-1) from A to B
    transmit message w-m(k-2) from B

and a last batch drains what is left. So in any consistent snapshot: received - transmitted ==
stored, for messages, recipients and volume (every message is exactly 1 K), MTA-wide and per
channel; A's stored + B's stored == the MTA's; A's received == its accumulated inbound
associations; A's live inbound associations == its rows in mtaGroupAssociationTable. A torn
read (two snapshots in one answer) breaks one of these equations.

Every poll is one PDU: a GETBULK whose max-repetitions covers the whole of mtaTable,
mtaGroupTable and mtaGroupAssociationTable (checked: the answer runs past the MTA-MIB), so it
must come from one view. Two pollers use a hand-built GETBULK, two run Net-SNMP's snmpbulkwalk
with -Cr200 (its first request already covers the subtree). At the end, once the agents have
refreshed, the served counts must equal what the writers report they committed, exactly.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from counters import Direction, Store
from tests import fuzzcorpus as fc
from tests.conftest import AgentProcess
from tests.netsnmp import END_OF_VIEW, NUMERIC, parse_varbinds, run, wait_until

WRITERS = 8
WRITE_SECONDS = 4.0
OCTETS = 1024  # one K each: volumes are then exact counts
MTA_MIB: fc.Oid = (1, 3, 6, 1, 2, 1, 28)
REPETITIONS = 200

A, B = "smtpd", "relay"


def recipients(writer: int, step: int) -> int:
    return 1 + (writer + step) % 3


def writer(db: str, number: int, deadline: float, result: str) -> None:
    """One writer process: batches until `deadline`, then a draining batch; writes how many
    steps it committed to `result` once the last commit has returned."""
    with Store(db) as store:
        step = 0
        while time.time() < deadline:
            with store.batch():
                store.open_inbound(A, key=f"w{number}-{step}", remote=f"client{number}")
                if step >= 1:
                    store.close_association(A, key=f"w{number}-{step - 1}")
                store.receive(A, f"w{number}-m{step}", octets=OCTETS,
                              recipients=recipients(number, step))
                if step >= 1:
                    store.transfer(A, B, f"w{number}-m{step - 1}")
                if step >= 2:
                    store.transmit(B, f"w{number}-m{step - 2}")
            step += 1
        with store.batch():
            if step >= 1:
                store.close_association(A, key=f"w{number}-{step - 1}")
                store.transfer(A, B, f"w{number}-m{step - 1}")
                store.transmit(B, f"w{number}-m{step - 1}")
            if step >= 2:
                store.transmit(B, f"w{number}-m{step - 2}")
    Path(result).write_text(str(step))


# --- reading one snapshot -----------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    appl: int
    a: int
    b: int

    def mta(self, column: int) -> fc.Oid:
        return (*MTA_MIB, 1, 1, column, self.appl)

    def group(self, column: int, channel: int) -> fc.Oid:
        return (*MTA_MIB, 2, 1, column, self.appl, channel)


@dataclass(frozen=True, order=True)
class State:
    """The figures a poll saw, in one consistent snapshot."""

    received: int
    transmitted: int
    stored: int


def check(values: dict[fc.Oid, int], layout: Layout, live_rows: dict[int, int]) -> State:
    """The invariants every consistent snapshot keeps; the state it shows."""
    def mta(column: int) -> int:
        return values[layout.mta(column)]

    def group(column: int, channel: int) -> int:
        return values[layout.group(column, channel)]

    a, b = layout.a, layout.b
    for received, stored, transmitted in ((1, 2, 3), (4, 5, 6), (7, 8, 9)):
        assert mta(received) - mta(transmitted) == mta(stored), (received, values)
    # (group received, stored, transmitted, the MTA's stored): messages, volume, recipients.
    for received, stored, transmitted, mta_stored in ((2, 4, 5, 2), (6, 7, 8, 5),
                                                       (9, 10, 11, 8)):
        for channel in (a, b):
            assert (group(received, channel) - group(transmitted, channel)
                    == group(stored, channel)), (received, channel, values)
        assert group(stored, a) + group(stored, b) == mta(mta_stored), (stored, values)
    assert mta(1) == group(2, a)  # every message enters the MTA through A …
    assert mta(3) == group(5, b)  # … and leaves it from B
    assert group(5, a) == group(2, b)  # A's transfers out are B's receipts
    assert group(15, a) == group(2, a)  # one association opened per message received
    assert group(13, a) == live_rows.get(a, 0), (values, live_rows)
    assert group(13, a) <= WRITERS
    return State(mta(1), mta(3), mta(2))


def gather(varbinds: list[tuple[fc.Oid, Any]]) -> tuple[dict[fc.Oid, int], dict[int, int]]:
    """The integer values under the MTA-MIB, and live association rows per channel; asserts
    the answer ran past the MTA-MIB (or to the end of the view), so it held the whole
    subtree."""
    values: dict[fc.Oid, int] = {}
    rows: dict[int, int] = {}
    past = False
    for oid, value in varbinds:
        if oid[:len(MTA_MIB)] != MTA_MIB or value == "endOfMibView":
            past = True
            break
        if oid[len(MTA_MIB)] == 3:  # mtaGroupAssociationTable: …28.3.1.1.appl.group.assoc
            rows[oid[-2]] = rows.get(oid[-2], 0) + 1
        elif isinstance(value, int):
            values[oid] = value
    assert past, "one answer did not cover the whole MTA-MIB"
    return values, rows


def poll_with_getbulk(port: int) -> list[tuple[fc.Oid, Any]]:
    data = fc.exchange(port, fc.bulk([MTA_MIB], 0, REPETITIONS), timeout=10)
    assert data is not None, "no answer"
    reply = fc.decode(data)
    assert reply.status == 0
    return [(oid, value[1] if isinstance(value, tuple) else value)
            for oid, value in reply.varbinds]


def poll_with_snmpbulkwalk(running: AgentProcess) -> list[tuple[fc.Oid, Any]]:
    # The first GETBULK (200 repetitions) already holds the whole subtree: fewer than 200
    # instances come back, so snmpbulkwalk asked once and the walk is one PDU, one view.
    proc = run("snmpbulkwalk", "-v2c", "-c", "public", *NUMERIC, f"-Cr{REPETITIONS}",
               "-t5", "-r1", running.target, ".1.3.6.1.2.1.28")
    assert proc.returncode == 0, proc.stderr
    out: list[tuple[fc.Oid, Any]] = []
    for oid, value in parse_varbinds(proc.stdout):
        if isinstance(value, str):  # Net-SNMP prints endOfMibView with the last OID again
            assert value.startswith(END_OF_VIEW), value
            out.append((oid, "endOfMibView"))
        else:
            out.append((oid, value.value))
    assert len(out) < REPETITIONS
    return [*out, ((1, 3, 6, 1, 2, 1, 29), "past")]  # the walk ended: the subtree is complete


@dataclass
class Poller:
    name: str
    poll: Callable[[], list[tuple[fc.Oid, Any]]]
    layout: Layout
    polls: int = 0
    states: list[State] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                values, rows = gather(self.poll())
                state = check(values, self.layout, rows)
            except Exception as exc:  # an assertion, or an answer that does not decode
                self.failures.append(f"{self.name}: {type(exc).__name__}: {str(exc)[:2000]}")
                continue
            if self.states and state.received < self.states[-1].received:
                self.failures.append(f"{self.name}: went back from {self.states[-1]} to {state}")
            self.polls += 1
            if not self.states or state != self.states[-1]:
                self.states.append(state)


@pytest.mark.netsnmp
def test_concurrent_writers_and_pollers(store: Store, agent: Any, tmp_path: Path) -> None:
    store.add_channel(A, direction=Direction.BOTH)
    store.add_channel(B, direction=Direction.BOTH)
    snapshot = store.snapshot()
    a, b = (channel.index for channel in snapshot.channels)
    layout = Layout(snapshot.appl_index, a, b)
    db = Path(store.path)
    store.close()
    fast: AgentProcess = agent()
    slow: AgentProcess = agent("--no-fast-path")
    pollers = [
        Poller("getbulk/fast path", lambda: poll_with_getbulk(fast.port), layout),
        Poller("getbulk/pysnmp", lambda: poll_with_getbulk(slow.port), layout),
        Poller("snmpbulkwalk/fast path", lambda: poll_with_snmpbulkwalk(fast), layout),
        Poller("snmpbulkwalk/pysnmp", lambda: poll_with_snmpbulkwalk(slow), layout),
    ]
    # Writers first: fork before this process has any thread of its own.
    context = multiprocessing.get_context("fork")
    deadline = time.time() + WRITE_SECONDS
    results = [tmp_path / f"writer{number}.steps" for number in range(WRITERS)]
    processes = [context.Process(target=writer, args=(str(db), number, deadline, str(result)))
                 for number, result in enumerate(results)]
    began = time.monotonic()
    for process in processes:
        process.start()
    stop = threading.Event()
    threads = [threading.Thread(target=poller.run, args=(stop,), daemon=True)
               for poller in pollers]
    for thread in threads:
        thread.start()
    for process in processes:
        process.join(timeout=WRITE_SECONDS + 60)
        assert process.exitcode == 0, process.exitcode
    wrote = time.monotonic() - began
    during = [len(poller.states) for poller in pollers]

    steps = [int(result.read_text()) for result in results]
    total = sum(steps)
    total_recipients = sum(recipients(w, k) for w, n in enumerate(steps) for k in range(n))
    expected = {
        layout.mta(1): total, layout.mta(2): 0, layout.mta(3): total,
        layout.mta(4): total, layout.mta(5): 0, layout.mta(6): total,
        layout.mta(7): total_recipients, layout.mta(8): 0, layout.mta(9): total_recipients,
        layout.group(2, a): total, layout.group(5, a): total, layout.group(2, b): total,
        layout.group(5, b): total, layout.group(15, a): total, layout.group(13, a): 0,
        layout.group(9, a): total_recipients, layout.group(11, b): total_recipients,
    }

    def served(port: int) -> bool:
        values, _ = gather(poll_with_getbulk(port))
        return all(values.get(oid) == value for oid, value in expected.items())

    for running in (fast, slow):
        wait_until(lambda running=running: served(running.port), timeout=10)
    time.sleep(0.5)  # a few more polls of the final state
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    with Store(db) as check_store:
        final = check_store.snapshot()
    assert (final.mta.received_messages, final.mta.transmitted_messages,
            final.mta.stored_messages) == (total, total, 0)
    for poller in pollers:
        assert poller.failures == [], poller.failures[:3]
        assert poller.states[-1] == State(total, total, 0), poller.name
    # The pollers really ran while the writers wrote: each saw many intermediate states.
    assert all(count >= 5 for count in during), during
    for running in (fast, slow):
        text = running.stderr_text()
        assert "Traceback" not in text and "internal error" not in text, text
    print(f"\nconcurrency: {WRITERS} writers committed {total} batches ({total * 5} events, "
          f"{total_recipients} recipients) in {wrote:.1f} s; polls "
          f"{[poller.polls for poller in pollers]}, distinct states seen "
          f"{[len(poller.states) for poller in pollers]}")
