"""Write-side benchmarks: how fast counters get into the database.

- Python API with 1, 4 and 8 writer processes on one database; each message is a `receive`
  and a `transmit` (two events, two transactions); per-event latency; the final counts are
  checked exact against what the writers report.
- The CLI: `python -m counters receive …` as a subprocess, one event per run.
- The bulk paths: the `counters` stdin bulk command (`counters ingest`, JSON lines) when there
  is one, and `store.batch()` with 1,000 events per batch from Python.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from counters import Store
from counters.snapshot import Direction

CHANNELS = [f"relay-{k:02d}" for k in range(16)]
BULK_COMMAND_NAMES = ("bulk", "ingest", "import", "feed", "events", "load")


def _prepare(db: Path) -> None:
    with Store(db) as store, store.batch():
        for name in CHANNELS:
            store.add_channel(name, direction=Direction.BOTH)


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    k = min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))
    return values[k]


def _api_writer(db: str, number: int, duration: float, max_messages: int,
                ready: Any, go: Any, out: Any) -> None:
    clock = time.perf_counter
    latencies: list[float] = []
    append = latencies.append
    with Store(db) as store:
        receive, transmit = store.receive, store.transmit
        ready.set()
        go.wait(60)
        start = clock()
        deadline = start + duration
        n = 0
        while n < max_messages:
            t0 = clock()
            if t0 >= deadline:
                break
            channel = CHANNELS[(number + n) % len(CHANNELS)]
            message = f"w{number}.{n}"
            receive(channel, message, octets=4096 + n % 5000, recipients=1 + n % 3)
            t1 = clock()
            transmit(channel, message)
            t2 = clock()
            append(t1 - t0)
            append(t2 - t1)
            n += 1
        elapsed = clock() - start
    # A sample of the latencies is enough for percentiles and keeps the queue small.
    step = max(1, len(latencies) // 20000)
    out.put((number, n, elapsed, latencies[::step]))


def api_writers(workdir: Path, writers: int, *, duration: float,
                max_messages: int = 2_000_000) -> dict[str, Any]:
    """`writers` processes write messages as fast as they can for `duration` seconds."""
    db = workdir / f"ingest-{writers}.db"
    _prepare(db)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(writers)]
    procs = [ctx.Process(target=_api_writer,
                         args=(str(db), k, duration, max_messages, readies[k], go, out))
             for k in range(writers)]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            if not ready.wait(60):
                raise RuntimeError("an ingest writer did not start")
        start = time.perf_counter()
        go.set()
        results = [out.get(timeout=duration + 120) for _ in procs]
        wall = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    messages = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[3])
    with Store(db, read_only=True) as store:
        snap = store.snapshot()
    exact = (snap.mta.received_messages == messages
             and snap.mta.transmitted_messages == messages
             and snap.mta.stored_messages == 0
             and sum(c.received_messages for c in snap.channels) == messages)
    longest = max(r[2] for r in results)
    return {
        "writers": writers, "messages": messages, "events": 2 * messages,
        "seconds": longest, "wall": wall,
        "messages_per_s": messages / longest, "events_per_s": 2 * messages / longest,
        "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3,
        "exact": exact,
        "found": (snap.mta.received_messages, snap.mta.transmitted_messages),
    }


def cli_events(workdir: Path, runs: int) -> dict[str, Any]:
    """`python -m counters --db DB receive CH ID --octets N --recipients N`, `runs` times."""
    db = workdir / "cli.db"
    _prepare(db)
    times = []
    env = dict(os.environ)
    for n in range(runs):
        command = [sys.executable, "-m", "counters", "--db", str(db), "receive", CHANNELS[0],
                   f"cli.{n}", "--octets", "2048", "--recipients", "1"]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                              check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"counters receive failed: {proc.stderr.strip()[:300]}")
    with Store(db, read_only=True) as store:
        exact = store.snapshot().mta.received_messages == runs
    times.sort()
    return {"runs": runs, "median_ms": statistics.median(times) * 1e3,
            "p99_ms": _pct(times, 99) * 1e3, "events_per_s": runs / sum(times),
            "exact": exact}


def cli_bulk(workdir: Path, command: str, *, events: int) -> dict[str, Any]:
    """`python -m counters --db DB <command>` reading `events` JSON lines (receive + transmit
    pairs) on stdin; wall time includes the process start-up."""
    db = workdir / "cli-bulk.db"
    _prepare(db)
    messages = events // 2
    lines = []
    for n in range(messages):
        channel = CHANNELS[n % len(CHANNELS)]
        lines.append(json.dumps({"event": "receive", "channel": channel, "message_id": f"j.{n}",
                                 "octets": 4096, "recipients": 2}))
        lines.append(json.dumps({"event": "transmit", "channel": channel,
                                 "message_id": f"j.{n}"}))
    data = ("\n".join(lines) + "\n").encode()
    argv = [sys.executable, "-m", "counters", "--db", str(db), command]
    idle = []
    for _ in range(3):  # the command's start-up alone: no input
        start = time.perf_counter()
        subprocess.run(argv, input=b"", capture_output=True, timeout=60, check=False)
        idle.append(time.perf_counter() - start)
    startup = statistics.median(idle)
    start = time.perf_counter()
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"counters {command} failed: "
                           f"{proc.stderr.decode(errors='replace').strip()[:300]}")
    with Store(db, read_only=True) as store:
        snap = store.snapshot()
    exact = (snap.mta.received_messages == messages
             and snap.mta.transmitted_messages == messages)
    return {"command": command, "events": 2 * messages, "seconds": elapsed,
            "events_per_s": 2 * messages / elapsed, "startup_s": startup,
            "steady_events_per_s": 2 * messages / max(elapsed - startup, 1e-9),
            "exact": exact}


def bulk_command() -> str | None:
    """The name of a `counters` bulk (stdin) command, if there is one yet."""
    from counters.cli import cli

    for name in getattr(cli, "commands", {}):
        if name in BULK_COMMAND_NAMES:
            return str(name)
    return None


def bulk_batches(workdir: Path, *, events: int, per_batch: int = 1000) -> dict[str, Any]:
    """`store.batch()` with `per_batch` events (receive + transmit pairs) per transaction."""
    db = workdir / "bulk.db"
    _prepare(db)
    messages = events // 2
    per = per_batch // 2
    batch_times = []
    with Store(db) as store:
        start = time.perf_counter()
        n = 0
        while n < messages:
            t = time.perf_counter()
            with store.batch():
                for _ in range(min(per, messages - n)):
                    channel = CHANNELS[n % len(CHANNELS)]
                    store.receive(channel, f"b.{n}", octets=4096, recipients=2)
                    store.transmit(channel, f"b.{n}")
                    n += 1
            batch_times.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        snap = store.snapshot()
    exact = (snap.mta.received_messages == messages
             and snap.mta.transmitted_messages == messages)
    return {"events": 2 * messages, "seconds": elapsed, "events_per_s": 2 * messages / elapsed,
            "per_batch": per_batch, "batch_p50_ms": statistics.median(batch_times) * 1e3,
            "exact": exact}
