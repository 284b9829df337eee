"""The benchmark run: build the databases, start A/B/C per size, check they serve the same
cells, measure them interleaved (A B C A B C …) over several rounds, then the write side.

`run(config)` returns a plain dict that `bench.report` turns into Markdown.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import dataset, ingest, measure, mibvalues, servers, snmpwire
from counters import Store
from counters.snapshot import Snapshot

KINDS: list[tuple[str, str]] = [
    ("bulk10", "snmpbulkwalk, -Cr10 (Net-SNMP default): varbinds/s"),
    ("bulk50", "snmpbulkwalk -Cr50: varbinds/s"),
    ("walk", "snmpwalk (GETNEXT): varbinds/s"),
    ("get1", "GET 1 OID, 4 in flight: requests/s"),
    ("get10", "GET 10 OIDs, 4 in flight: requests/s"),
]
WALKS = {"bulk10": ("snmpbulkwalk", 10), "bulk50": ("snmpbulkwalk", 50),
         "walk": ("snmpwalk", None)}


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"bench: [{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    sizes: list[int] = field(default_factory=lambda: [10, 100, 1000, 10000])
    rounds: int = 5
    rounds_large: int = 3  # at 10,000 channels and more
    walk_cap: float = 3.0  # a walk still running after this is cut (and counted so far)
    walk_min_time: float = 0.3  # fast walks are repeated back to back for at least this long
    get_duration: float = 1.0
    inflight: int = 4
    validate_cap: float = 20.0  # the cell-by-cell check walks at most this long per server
    validate_cap_large: float = 5.0  # … at 10,000 channels and more (a prefix is checked)
    visibility_trials: int = 5
    visibility_limit: float = 5.0
    stall_duration: float = 3.0
    stall_rate: float = 200.0  # events/s written during the stall test
    ingest_writers: list[int] = field(default_factory=lambda: [1, 4, 8])
    ingest_duration: float = 3.0
    cli_runs: int = 200
    bulk_events: int = 100_000
    quick: bool = False

    def rounds_for(self, size: int) -> int:
        return self.rounds_large if size >= 10_000 else self.rounds

    @classmethod
    def quick_config(cls, sizes: list[int] | None = None) -> Config:
        return cls(sizes=sizes or [10, 100], rounds=1, rounds_large=1, walk_cap=1.0,
                   walk_min_time=0.05, get_duration=0.3, validate_cap=5.0,
                   validate_cap_large=2.0,
                   visibility_trials=2, visibility_limit=3.0, stall_duration=0.5,
                   ingest_writers=[1, 4], ingest_duration=0.5, cli_runs=5,
                   bulk_events=4000, quick=True)


# --- the machine ---------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def machine(snmpd: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    netsnmp = "unknown"
    for line in subprocess.run([snmpd, "-v"], capture_output=True, text=True,
                               timeout=20, check=False).stdout.splitlines():
        if "version" in line.lower():
            netsnmp = line.split(":", 1)[-1].strip()
            break

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "netsnmp": netsnmp,
        "pysnmp": version("pysnmp"), "mailmib": version("mailmib"),
        "load_before": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --- checking the servers against each other ---------------------------------------------------


def walk_cells(server: servers.Server, cap: float) -> tuple[list[tuple[snmpwire.Oid, int, object]],
                                                             bool]:
    """GETBULK (max-repetitions 50) through 1.3.6.1.2.1.28 with our own client, up to `cap`
    seconds: the cells seen and whether the walk reached the end of the subtree."""
    root = snmpwire.parse_oid(measure.MTA_ROOT)
    cells: list[tuple[snmpwire.Oid, int, object]] = []
    current = root
    deadline = time.monotonic() + cap
    request_id = 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server.address)
        sock.settimeout(max(cap, 5.0))
        while time.monotonic() < deadline:
            request_id += 1
            sock.send(snmpwire.encode_request(servers.COMMUNITY, request_id, [current],
                                              pdu=snmpwire.GETBULK, max_repetitions=50))
            while True:
                response = snmpwire.decode_response(sock.recv(65535))
                if response.request_id == request_id:
                    break
            if response.error_status:
                raise RuntimeError(f"{server.label}: GETBULK error {response.error_status}")
            for oid, tag, value in response.varbinds:
                if tag == snmpwire.END_OF_MIB_VIEW or oid[:len(root)] != root:
                    return cells, True
                cells.append((oid, tag, value))
                current = oid
            if not response.varbinds:
                return cells, True
    return cells, False


def compare(walked: list[tuple[snmpwire.Oid, int, object]], expected: list[mibvalues.Cell],
            complete: bool, tolerance_ticks: int) -> dict[str, Any]:
    """Cell by cell: the walked prefix against the expected cells."""
    mismatches = 0
    first = ""
    for k, (oid, tag, value) in enumerate(walked):
        if k >= len(expected):
            mismatches += 1
            first = first or f"extra cell {snmpwire.format_oid(oid)}"
            continue
        cell = expected[k]
        if cell.oid != oid or not mibvalues.same_value(cell, (tag, value), oid,
                                                       tolerance_ticks=tolerance_ticks):
            mismatches += 1
            first = first or (f"{snmpwire.format_oid(oid)} = {value!r} (0x{tag:02x}), expected "
                              f"{snmpwire.format_oid(cell.oid)} = {cell.value!r}")
    if complete and len(walked) < len(expected):
        mismatches += len(expected) - len(walked)
        first = first or f"walk ended after {len(walked)} of {len(expected)} cells"
    return {"walked": len(walked), "expected": len(expected), "complete": complete,
            "mismatches": mismatches, "first_mismatch": first}


# --- the request pools for the GET load ----------------------------------------------------------


def get_pools(expected: list[mibvalues.Cell], rng: random.Random, size: int = 256
              ) -> dict[str, list[list[mibvalues.Cell]]]:
    """GETs that every server can answer: cells mailmib serves in mtaGroupTable. GET-10 asks
    for ten columns of one row, as a poller graphing a channel does."""
    group = [c for c in expected if c.oid[:len(mibvalues.GROUP_ENTRY)] == mibvalues.GROUP_ENTRY]
    rows: dict[int, list[mibvalues.Cell]] = {}
    for cell in group:
        rows.setdefault(cell.oid[-1], []).append(cell)
    row_list = [cells for cells in rows.values() if len(cells) >= 10]
    return {
        "get1": [[rng.choice(group)] for _ in range(size)],
        "get10": [sorted(rng.sample(rng.choice(row_list), 10), key=lambda c: c.oid)
                  for _ in range(size)],
    }


def check_pool(server: servers.Server, pool: list[list[mibvalues.Cell]], samples: int,
               tolerance_ticks: int) -> int:
    """Mismatches in the answers to the first `samples` requests of a pool."""
    poller = measure.Poller(server)
    bad = 0
    try:
        for cells in pool[:samples]:
            response = poller.get([c.oid for c in cells])
            if response.error_status or len(response.varbinds) != len(cells):
                bad += len(cells)
                continue
            for cell, (oid, tag, value) in zip(cells, response.varbinds, strict=True):
                if oid != cell.oid or not mibvalues.same_value(
                        cell, (tag, value), oid, tolerance_ticks=tolerance_ticks):
                    bad += 1
    finally:
        poller.close()
    return bad


# --- one size ------------------------------------------------------------------------------------


def _tolerance(snapshot: Snapshot) -> int:
    return int((time.time() - snapshot.taken_at + 15) * 100)


def run_size(size: int, config: Config, workdir: Path, snmpd: str) -> dict[str, Any]:
    result: dict[str, Any] = {"size": size}
    db = workdir / f"channels-{size}.db"
    log(f"{size} channels: building the database")
    t = time.perf_counter()
    result["build"] = dataset.build(db, size)
    result["build"]["seconds"] = time.perf_counter() - t
    with Store(db, read_only=True) as store:
        snapshot = store.snapshot()
    expected = mibvalues.cells(snapshot)
    expected_b = mibvalues.cells(snapshot, all_columns=True)
    result["cells"] = {"A": len(expected), "B": len(expected_b), "C": len(expected),
                       "absent": mibvalues.absent_cells(snapshot)}

    rundir = workdir / f"run-{size}"
    rundir.mkdir()
    a = servers.Mailmib(rundir, db)
    b = servers.SnmpdNative(rundir, snmpd, snapshot)
    c = servers.SnmpdPassPersist(rundir, snmpd, db)
    trio: list[servers.Server] = [a, b, c]
    try:
        for server in trio:
            t = time.perf_counter()
            server.start()
            log(f"{size} channels: {server.label} on {server.target}"
                f" ({time.perf_counter() - t:.2f} s to start)")
        # The pass_persist script starts on the first request: let it build its table.
        first = measure.Poller(c, timeout=60)
        try:
            first.value((*mibvalues.MTA_ENTRY, 1, 1))
        finally:
            first.close()

        log(f"{size} channels: checking the three servers serve the same cells")
        validation = {}
        for server in trio:
            want = expected_b if server is b else expected
            cap = config.validate_cap if size < 10_000 else config.validate_cap_large
            walked, complete = walk_cells(server, cap)
            validation[server.key] = compare(walked, want, complete, _tolerance(snapshot))
        rng = random.Random(size)
        pools = get_pools(expected, rng)
        for server in trio:
            validation[server.key]["get_mismatches"] = sum(
                check_pool(server, pool, 8, _tolerance(snapshot)) for pool in pools.values())
        result["validation"] = validation
        encoded = {kind: [snmpwire.encode_request(servers.COMMUNITY, 0x4000 + k,
                                                  [c_.oid for c_ in cells])
                          for k, cells in enumerate(pool)]
                   for kind, pool in pools.items()}

        # A walk that cannot finish within the cap runs line-buffered so its count is exact.
        modes: dict[str, dict[str, bool]] = {}
        for server in trio:
            modes[server.key] = {}
            count = result["cells"][server.key]
            for kind, (_tool, reps) in WALKS.items():
                per_request = measure.request_seconds(
                    server, snmpwire.GETBULK if reps else snmpwire.GETNEXT, reps or 0)
                estimate = per_request * count / (reps or 1)
                modes[server.key][kind] = estimate > 0.5 * config.walk_cap
        result["streaming"] = modes

        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
            kind: {s.key: [] for s in trio} for kind, _ in KINDS}
        n_rounds = config.rounds_for(size)
        for r in range(n_rounds):
            log(f"{size} channels: round {r + 1}/{n_rounds}")
            for kind, _ in KINDS:
                for server in trio:
                    measure.quiesce(trio)
                    rounds[kind][server.key].append(
                        _measure(kind, server, config, result, modes, encoded))
        result["rounds"] = rounds
        result["rss_mib"] = {s.key: s.peak_rss_mib() for s in trio}
        result["rss_parts_mib"] = {s.key: [servers.peak_rss_kib(p) / 1024 for p in s.pids()]
                                   for s in trio}

        log(f"{size} channels: change visibility and latency during writes")
        inbound = [ch for ch in snapshot.channels if ch.direction.inbound]
        target = inbound[len(inbound) // 2]
        oid = (*mibvalues.GROUP_ENTRY, 2, snapshot.appl_index, target.index)
        result["visibility"] = {"B": None}
        for server in (a, c):
            measure.quiesce(trio)
            result["visibility"][server.key] = measure.visibility(
                server, db, target.name, oid, trials=config.visibility_trials,
                limit=config.visibility_limit)
        measure.quiesce(trio)
        writers_channels = [ch.name for ch in inbound[:50]]
        result["stall"] = measure.latency_during_writes(
            a, db, writers_channels, (*mibvalues.GROUP_ENTRY, 25, snapshot.appl_index,
                                      target.index),
            duration=config.stall_duration, rate=config.stall_rate)
    finally:
        for server in trio:
            server.stop()
    with contextlib.suppress(OSError):
        db.unlink()
    return result


def _measure(kind: str, server: servers.Server, config: Config, result: dict[str, Any],
             modes: dict[str, dict[str, bool]], encoded: dict[str, list[bytes]]
             ) -> dict[str, Any]:
    if kind in WALKS:
        tool, reps = WALKS[kind]
        streaming = modes[server.key][kind]
        outcome = measure.walk(server, tool, reps, expected=result["cells"][server.key],
                               cap=config.walk_cap, min_time=config.walk_min_time,
                               streaming=streaming)
        if not outcome["complete"] and not streaming:
            # The estimate was wrong: a buffered walk cut short undercounts. Redo it, streamed.
            modes[server.key][kind] = True
            measure.quiesce([server])
            outcome = measure.walk(server, tool, reps, expected=result["cells"][server.key],
                                   cap=config.walk_cap, min_time=config.walk_min_time,
                                   streaming=True)
        return outcome
    per_request = 10 if kind == "get10" else 1
    return measure.get_load(server, encoded[kind], inflight=config.inflight,
                            duration=config.get_duration, varbinds_per_request=per_request)


# --- the whole run ----------------------------------------------------------------------------


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM / SIGHUP end the run like Ctrl-C does, so every server is stopped."""
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        servers.stop_all()
        for s, handler in previous.items():
            signal.signal(s, handler)


def preflight() -> str:
    snmpd = servers.snmpd_path()
    if snmpd is None:
        raise servers.ServerError("snmpd not found: install Debian's snmpd package"
                                  " (`make bench-deps`)")
    for tool in ("snmpbulkwalk", "snmpwalk", "stdbuf"):
        if shutil.which(tool) is None:
            package = "coreutils" if tool == "stdbuf" else "snmp"
            raise servers.ServerError(f"{tool} not found: install Debian's {package} package")
    return snmpd


def run(config: Config, *, progress: Callable[[str], None] = log) -> dict[str, Any]:
    snmpd = preflight()
    started = time.perf_counter()
    results: dict[str, Any] = {"config": asdict(config), "machine": machine(snmpd),
                               "sizes": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    workdir = Path(tempfile.mkdtemp(prefix="mailmib-bench-"))
    try:
        with _stopping_on_signals():
            for size in config.sizes:
                results["sizes"][size] = run_size(size, config, workdir, snmpd)
            progress("ingest: Python API writers, CLI, bulk batches")
            results["ingest"] = run_ingest(config, workdir)
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_after"] = _loadavg()
    results["wall_s"] = time.perf_counter() - started
    return results


def run_ingest(config: Config, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"api": []}
    for writers in config.ingest_writers:
        log(f"ingest: {writers} writer process(es), {config.ingest_duration:g} s")
        out["api"].append(ingest.api_writers(workdir, writers, duration=config.ingest_duration))
    log(f"ingest: CLI, {config.cli_runs} runs")
    out["cli"] = ingest.cli_events(workdir, config.cli_runs)
    log(f"ingest: store.batch(), {config.bulk_events} events")
    out["bulk"] = ingest.bulk_batches(workdir, events=config.bulk_events)
    command = out["bulk_command"] = ingest.bulk_command()
    if command is not None:
        log(f"ingest: `counters {command}` reading {config.bulk_events} JSON lines on stdin")
        out["cli_bulk"] = ingest.cli_bulk(workdir, command, events=config.bulk_events)
    return out
