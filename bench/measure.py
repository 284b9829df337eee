"""One measurement of one server: walks with Net-SNMP's tools, GETs under concurrent load from a
raw-UDP generator, change visibility, request latency while the database is written.

Each returns a plain dict of numbers; the harness repeats and summarises them. Every loop here
is bounded in time and count, and only talks to 127.0.0.1.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import selectors
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import snmpwire
from bench.servers import COMMUNITY, Server

MTA_ROOT = "1.3.6.1.2.1.28"


def quiesce(servers: list[Server], *, settle: float = 0.05, limit: float = 5.0) -> None:
    """Wait until no server burns CPU (a capped walk or a load run may leave work queued)."""
    deadline = time.monotonic() + limit
    before = [s.cpu_seconds() for s in servers]
    while time.monotonic() < deadline:
        time.sleep(settle)
        after = [s.cpu_seconds() for s in servers]
        if after == before:
            return
        before = after


def _walk_command(tool: str, server: Server, max_repetitions: int | None,
                  timeout: float) -> list[str]:
    command = [tool, "-v2c", "-c", COMMUNITY, "-On", "-Oq", "-t", f"{timeout:g}", "-r", "0"]
    if max_repetitions is not None:
        command.append(f"-Cr{max_repetitions}")
    return [*command, server.target, MTA_ROOT]


def request_seconds(server: Server, pdu: int, max_repetitions: int, count: int = 3,
                    timeout: float = 10.0) -> float:
    """Median time of `count` requests from the start of the MTA subtree (a cheap probe)."""
    oid = snmpwire.parse_oid(MTA_ROOT)
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for i in range(count):
            request = snmpwire.encode_request(COMMUNITY, 1000 + i, [oid], pdu=pdu,
                                              max_repetitions=max_repetitions)
            start = time.perf_counter()
            sock.sendto(request, server.address)
            try:
                sock.recv(65535)
            except TimeoutError:
                return timeout
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def walk(server: Server, tool: str, max_repetitions: int | None, *, expected: int,
         cap: float, min_time: float, streaming: bool) -> dict[str, Any]:
    """Walk 1.3.6.1.2.1.28 with `tool` (snmpbulkwalk / snmpwalk), back to back until `min_time`
    has passed, each walk cut at `cap` seconds.

    `streaming` runs the tool line-buffered (stdbuf -oL) so a walk cut at the cap still tells
    how far it got; it costs the client ~15 %, so it is used only where a whole walk cannot
    finish within the cap. The rate counts the tool's own start-up, as a poller pays it.
    """
    command = _walk_command(tool, server, max_repetitions, timeout=max(cap, 5.0))
    if streaming:
        command = ["stdbuf", "-oL", *command]
    varbinds = walks = 0
    complete = True
    counts: list[int] = []
    cpu0 = server.cpu_seconds()
    started = time.perf_counter()
    while True:
        walk_start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        lines = 0
        cut = False
        os.set_blocking(proc.stdout.fileno(), False)
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        pending = b""
        while True:
            left = walk_start + cap - time.perf_counter()
            if left <= 0:
                cut = True
                break
            if not selector.select(min(left, 0.5)):
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            pending += chunk
            lines += pending.count(b"\n")
            pending = pending[pending.rfind(b"\n") + 1:]
        selector.close()
        if cut:
            proc.kill()
        proc.wait()
        elapsed_end = time.perf_counter()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
        if not cut and proc.returncode != 0:
            raise RuntimeError(f"{tool} against {server.label} failed: {stderr.strip()[:300]}")
        varbinds += lines
        walks += 1
        counts.append(lines)
        if cut:
            complete = False
            break
        if elapsed_end - started >= min_time or elapsed_end - started + (
                elapsed_end - walk_start) > cap:
            break
    seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu0
    return {
        "varbinds": varbinds, "seconds": seconds, "walks": walks, "complete": complete,
        "rate": varbinds / seconds if seconds > 0 else 0.0,
        "per_walk": counts[0] if complete else None, "expected": expected,
        "cpu_s": cpu, "cpu_us_per_vb": cpu / varbinds * 1e6 if varbinds else math.nan,
    }


def get_load(server: Server, requests: list[bytes], *, inflight: int, duration: float,
             varbinds_per_request: int, resend_after: float = 5.0,
             drain: float = 5.0, max_responses: int = 2_000_000) -> dict[str, Any]:
    """Send pre-encoded GETs from `inflight` sockets (one outstanding request each) for
    `duration` seconds (or until `max_responses`); count responses. A request unanswered after
    `resend_after` s is sent again and counted as a timeout. Outstanding replies are drained
    (not counted) afterwards."""
    selector = selectors.DefaultSelector()
    sockets = []
    sent_at: dict[int, float] = {}
    position: dict[int, int] = {}
    latencies: list[float] = []
    timeouts = 0
    for k in range(inflight):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(server.address)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
        position[sock.fileno()] = (k * 7919) % len(requests)
    sockets_by_fd = {s.fileno(): s for s in sockets}
    cpu0 = server.cpu_seconds()
    client0 = time.process_time()
    start = time.perf_counter()
    deadline = start + duration
    for sock in sockets:
        fd = sock.fileno()
        sock.send(requests[position[fd]])
        sent_at[fd] = time.perf_counter()
    responses = 0
    outstanding = {s.fileno() for s in sockets}
    now = start
    while now < deadline and responses < max_responses:
        events = selector.select(min(0.1, deadline - now))
        now = time.perf_counter()
        for key, _ in events:
            sock = sockets_by_fd[key.fd]
            fd = key.fd
            try:
                sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            responses += 1
            latencies.append(now - sent_at[fd])
            if now < deadline and responses < max_responses:
                index = position[fd] = (position[fd] + 1) % len(requests)
                sock.send(requests[index])
                sent_at[fd] = time.perf_counter()
            else:
                outstanding.discard(fd)
        for sock in sockets:
            fd = sock.fileno()
            if now - sent_at[fd] > resend_after and now < deadline:
                timeouts += 1
                sock.send(requests[position[fd]])
                sent_at[fd] = now
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - client0
    cpu = server.cpu_seconds() - cpu0
    # Drain what is still in flight so the next measurement starts on an idle server.
    drain_end = time.perf_counter() + drain
    while outstanding and time.perf_counter() < drain_end:
        for key, _ in selector.select(0.1):
            sock = sockets_by_fd[key.fd]
            try:
                sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            outstanding.discard(sock.fileno())
    selector.close()
    for sock in sockets:
        sock.close()
    latencies.sort()
    return {
        "responses": responses, "seconds": elapsed, "rate": responses / elapsed,
        "varbind_rate": responses * varbinds_per_request / elapsed, "timeouts": timeouts,
        "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3,
        "client_cpu_frac": client_cpu / elapsed,
        "cpu_s": cpu,
        "cpu_us_per_vb": (cpu / (responses * varbinds_per_request) * 1e6
                          if responses else math.nan),
    }


def _pct(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class Poller:
    """GET one OID at a time over one socket and decode the answer."""

    def __init__(self, server: Server, timeout: float = 10.0) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(server.address)
        self.sock.settimeout(timeout)
        self.request_id = random.randrange(1 << 20)

    def get(self, oids: list[snmpwire.Oid]) -> snmpwire.Response:
        self.request_id += 1
        self.sock.send(snmpwire.encode_request(COMMUNITY, self.request_id, oids))
        while True:
            response = snmpwire.decode_response(self.sock.recv(65535))
            if response.request_id == self.request_id:
                return response

    def value(self, oid: snmpwire.Oid) -> object:
        return self.get([oid]).varbinds[0][2]

    def close(self) -> None:
        self.sock.close()


def visibility(server: Server, db: Path, channel: str, oid: snmpwire.Oid, *, trials: int,
               limit: float) -> dict[str, Any]:
    """Seconds from a committed `store.receive` on `channel` to a GET of `oid` (its
    mtaGroupReceivedMessages) returning the new value, polled in a tight loop."""
    from counters import Store

    results: list[float] = []
    misses = 0
    poller = Poller(server)
    try:
        with Store(db) as store:
            for trial in range(trials):
                before = poller.value(oid)
                store.receive(channel, f"vis-{server.key}-{time.time_ns()}-{trial}",
                              octets=1000, recipients=1)
                changed = time.perf_counter()
                seen = None
                while time.perf_counter() - changed < limit:
                    if poller.value(oid) != before:
                        seen = time.perf_counter() - changed
                        break
                if seen is None:
                    misses += 1
                else:
                    results.append(seen)
                time.sleep(0.05)
    finally:
        poller.close()
    results.sort()
    return {"trials": trials, "seen": len(results), "misses": misses, "limit": limit,
            "median_s": statistics.median(results) if results else math.nan,
            "max_s": results[-1] if results else math.nan}


def _writer(db: str, channels: list[str], rate: float, duration: float,
            ready: Any, go: Any, out: Any) -> None:
    from counters import Store

    with Store(db) as store:
        ready.set()
        go.wait(30)
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < duration:
            channel = channels[n % len(channels)]
            store.receive(channel, f"stall-{os.getpid()}-{n}", octets=2000, recipients=1)
            n += 1
            ahead = start + n / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    out.put(n)


def latency_during_writes(server: Server, db: Path, channels: list[str], oid: snmpwire.Oid,
                          *, duration: float, rate: float) -> dict[str, Any]:
    """GET latency (one request at a time) while another process writes `rate` events/s."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_writer, args=(str(db), channels, rate, duration, ready, go, out))
    proc.start()
    latencies: list[float] = []
    errors = 0
    try:
        if not ready.wait(30):
            raise RuntimeError("writer process did not start")
        poller = Poller(server, timeout=5.0)
        go.set()
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            t = time.perf_counter()
            try:
                poller.get([oid])
            except TimeoutError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)
        poller.close()
        written = out.get(timeout=30)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    latencies.sort()
    return {"requests": len(latencies), "timeouts": errors, "events_written": written,
            "rate": rate, "duration": duration,
            "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3,
            "max_ms": latencies[-1] * 1e3 if latencies else math.nan}
