"""Crash safety: writers and the agent killed with SIGKILL at random moments during traffic.

Each round starts 8 writer processes on one database; each records events as fast as it can
and appends every event's id to its own log file, fsync'ed, only after the event's commit has
returned. Each event is ONE batch touching three tables:

    receive message e into channel A (3 recipients)      queue, channels, mta
    transfer 1 of its recipients to channel B            queue, channels
    open inbound association keyed e on A                associations, channels

While they write, every writer is killed with SIGKILL at a random moment (some within
milliseconds of starting, some mid-commit or mid-checkpoint by chance), and in most rounds the
agent serving the database is killed too. After each round, with nothing running, the database
is read with plain sqlite3 (not the Store) and must hold:

- `PRAGMA integrity_check` = ok;
- every logged id (no committed event lost), and besides those at most the one event each
  writer had in flight when it died (committed, not yet logged);
- every id it holds complete (queue rows in A and B with 2 and 1 recipients, the association)
  and the counters agreeing with the rows (nothing half-applied);

and the restarted agent must serve exactly the database's counts.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from counters import Direction, Store
from tests import fuzzcorpus as fc
from tests.conftest import AgentProcess
from tests.netsnmp import wait_until

ROUNDS = int(os.environ.get("MAILMIB_CRASH_ROUNDS", "4"))
WRITERS = 8
A, B = "smtpd", "relay"


def writer(db: str, log: str, prefix: str) -> None:
    """Record events until killed; log each id once its commit has returned."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with Store(db) as store:
        step = 0
        while True:
            event = f"{prefix}k{step}"
            with store.batch():
                store.receive(A, event, octets=100 + step, recipients=3)
                store.transfer(A, B, event, recipients=1)
                store.open_inbound(A, key=event, remote="crash.example")
            os.write(fd, f"{event}\n".encode())
            os.fsync(fd)
            step += 1


def in_flight(last_logged: str | None, prefix: str) -> str:
    """The id a writer was recording when it died, given the last one it logged."""
    step = 0 if last_logged is None else int(last_logged.rsplit("k", 1)[1]) + 1
    return f"{prefix}k{step}"


def read_database(db: Path) -> dict[str, Any]:
    """Everything the checks need, read with plain sqlite3 in one transaction."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
        conn.execute("BEGIN")
        channels = {name: idx for idx, name in conn.execute("SELECT idx, name FROM channels")}
        queue: dict[str, dict[str, int]] = {}
        for channel, message, recipients in conn.execute(
                "SELECT channel, message_id, recipients FROM queue"):
            name = A if channel == channels[A] else B
            queue.setdefault(message, {})[name] = recipients
        keys = {key for (key,) in conn.execute("SELECT key FROM associations")}
        counters = {name: row for name, *row in conn.execute(
            "SELECT name, received_messages, transmitted_messages, received_recipients,"
            " transmitted_recipients, accumulated_inbound_associations FROM channels")}
        (mta_received, mta_recipients) = conn.execute(
            "SELECT received_messages, received_recipients FROM mta").fetchone()
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"integrity": integrity, "queue": queue, "keys": keys, "counters": counters,
            "mta": (mta_received, mta_recipients)}


def check_database(db: Path, logs: dict[str, Path]) -> tuple[int, int]:
    """The crash-safety checks; how many events the database holds, and how many of them were
    committed but not yet logged when their writer died."""
    state = read_database(db)
    assert state["integrity"] == "ok"
    queue, keys = state["queue"], state["keys"]
    held = set(queue) | keys
    for event in held:  # nothing half-applied
        assert queue.get(event) == {A: 2, B: 1} and event in keys, (event, queue.get(event))
    logged: set[str] = set()
    allowed: set[str] = set()
    for prefix, log in logs.items():
        lines = log.read_text().split("\n") if log.exists() else [""]
        assert lines[-1] == "", f"{log}: a torn line {lines[-1]!r}"  # fsync'ed whole lines
        ids = lines[:-1]
        logged.update(ids)
        allowed.add(in_flight(ids[-1] if ids else None, prefix))
    lost = logged - held
    assert not lost, f"committed events lost: {sorted(lost)[:10]}"
    extra = held - logged
    assert extra <= allowed, f"events nobody logged or had in flight: {sorted(extra - allowed)}"
    n = len(held)
    counters = state["counters"]
    # (received, transmitted, received recipients, transmitted recipients, accumulated inbound)
    assert counters[A] == [n, n, 3 * n, n, n], counters
    assert counters[B] == [n, 0, n, 0, 0], counters
    assert state["mta"] == (n, 3 * n)
    return n, len(extra)


def served_counts(port: int, appl: int, a: int, b: int) -> list[int] | None:
    oids = [(1, 3, 6, 1, 2, 1, 28, 1, 1, column, appl) for column in (1, 2, 7, 8)]
    oids += [(1, 3, 6, 1, 2, 1, 28, 2, 1, column, appl, channel)
             for channel in (a, b) for column in (2, 4, 5, 15)]
    data = fc.exchange(port, fc.request(fc.GET, oids), timeout=3)
    if data is None:
        return None
    return [value[1] for _, value in fc.decode(data).varbinds]


def expected_counts(n: int) -> list[int]:
    # mtaTable: received, stored messages; received, stored recipients.
    # A: received, stored, transmitted (transfers out), accumulated inbound; B: received,
    # stored, transmitted (B transmits nothing), accumulated inbound (none).
    return [n, n, 3 * n, 3 * n, n, n, n, n, n, n, 0, 0]


def test_kill_writers_and_agent_at_random_moments(store: Store, agent: Any,
                                                 tmp_path: Path) -> None:
    store.add_channel(A, direction=Direction.BOTH)
    store.add_channel(B, direction=Direction.BOTH)
    snapshot = store.snapshot()
    appl = snapshot.appl_index
    a, b = (channel.index for channel in snapshot.channels)
    db = Path(store.path)
    store.close()
    rnd = random.Random(int(os.environ.get("MAILMIB_CRASH_SEED", "1566")))
    context = multiprocessing.get_context("fork")
    logs: dict[str, Path] = {}
    running: AgentProcess = agent()
    writer_kills = agent_kills = 0
    held = unlogged = 0
    began = time.monotonic()
    for round_number in range(ROUNDS):
        processes = []
        for number in range(WRITERS):
            prefix = f"r{round_number}w{number}"
            logs[prefix] = tmp_path / f"{prefix}.log"
            process = context.Process(target=writer, args=(str(db), str(logs[prefix]), prefix))
            process.start()
            processes.append(process)
        # Each writer dies at its own random moment in the next 1.2 s; the agent, in most
        # rounds, at another. Polls keep the agent busy meanwhile.
        deadlines = sorted((rnd.uniform(0.005, 1.2), "writer", process)
                           for process in processes)
        kill_agent = rnd.random() < 0.8
        if kill_agent:
            deadlines.append((rnd.uniform(0.05, 1.2), "agent", None))
            deadlines.sort(key=lambda item: item[0])
        start = time.monotonic()
        agent_alive = True
        for at, what, process in deadlines:
            while time.monotonic() - start < at:
                if agent_alive:
                    served_counts(running.port, appl, a, b)
                else:
                    time.sleep(0.005)
            if what == "writer":
                os.kill(process.pid, signal.SIGKILL)
                writer_kills += 1
            else:
                running.proc.send_signal(signal.SIGKILL)
                agent_kills += 1
                agent_alive = False
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == -signal.SIGKILL
        if kill_agent:
            running.proc.wait(timeout=10)
            running = agent()  # restarted on the database as the crash left it

        before = held
        held, extra = check_database(db, logs)
        unlogged += extra
        assert held >= before
        # The (re)started agent serves exactly what the database holds.
        port, want = running.port, expected_counts(held)
        wait_until(lambda port=port, want=want: served_counts(port, appl, a, b) == want,
                   timeout=10)
    assert held > 100, "the writers hardly wrote anything: the test proved little"
    text = running.stderr_text()
    assert "Traceback" not in text, text
    print(f"\ncrash: {ROUNDS} rounds, {writer_kills} writers and {agent_kills} agents killed "
          f"with SIGKILL, {held} events verified complete (none lost, none half-applied; "
          f"{unlogged} committed but killed before logging), "
          f"{time.monotonic() - began:.1f} s")
