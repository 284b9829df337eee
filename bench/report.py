"""The benchmark's results as Markdown: machine, one table per size, ingest, targets."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.harness import KINDS

DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"

NAMES = {"A": "mailmib-agent (A)", "B": "snmpd native table (B)",
         "C": "snmpd + pass_persist (C)"}


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if x == 0:
        return "0"
    magnitude = abs(x)
    if magnitude >= 100:
        return f"{x:,.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return DASH
    r = a / b
    return f"{r:.2f}{TIMES}" if r < 10 else f"{r:.0f}{TIMES}"


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def _spread(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if len(values) < 2:
        return ""
    return f" ({_num(min(values))}{DASH}{_num(max(values))})"


def _cell(values: list[float], mark: str = "") -> str:
    median = _median(values)
    if median is None:
        return DASH
    return f"{_num(median)}{mark}{_spread(values)}"


def metric(size_result: dict[str, Any], kind: str, key: str, field: str) -> list[float]:
    return [r[field] for r in size_result["rounds"][kind][key]]


def _cut(size_result: dict[str, Any], kind: str, key: str) -> bool:
    return any(not r.get("complete", True) for r in size_result["rounds"][kind][key])


def size_table(size: int, res: dict[str, Any], cap: float) -> list[str]:
    keys = ("A", "B", "C")
    lines = [f"### {size:,} channels", ""]
    cells = res["cells"]
    val = res["validation"]
    rounds = len(res["rounds"]["bulk10"]["A"])
    lines.append(
        f"Cells under 1.3.6.1.2.1.28: A {cells['A']:,}, B {cells['B']:,}, C {cells['C']:,}"
        f" (B serves {cells['absent']:,} more: the columns of the side a channel does not use,"
        " which mailmib leaves out and `add_row` cannot). Database: "
        f"{res['build']['events']:,} events, {res['build']['live_associations']:,} live"
        f" associations, {res['build']['queued']:,} queued messages. {rounds} round(s),"
        " interleaved A B C.")
    checks = []
    for key in keys:
        v = val[key]
        state = "whole walk" if v["complete"] else f"first {v['walked']:,} cells (cut at the cap)"
        verdict = ("identical" if not v["mismatches"] and not v["get_mismatches"]
                   else f"{v['mismatches']} walk + {v['get_mismatches']} GET mismatches"
                   f" ({v['first_mismatch']})")
        checks.append(f"{key}: {state}, {verdict}")
    lines.append("Checked against the snapshot, cell by cell: " + "; ".join(checks) + ".")
    lines.append("")
    lines.append(f"| metric (median, min{DASH}max) | " + " | ".join(NAMES[k] for k in keys)
                 + " | A ÷ B | A ÷ C |")
    lines.append("|---|---:|---:|---:|---:|---:|")

    def row(label: str, getter: Any, marks: dict[str, str] | None = None) -> None:
        values = {k: getter(k) for k in keys}
        marks = marks or {}
        medians = {k: _median(values[k]) for k in keys}
        lines.append(f"| {label} | " + " | ".join(_cell(values[k], marks.get(k, ""))
                                                  for k in keys)
                     + f" | {_ratio(medians['A'], medians['B'])}"
                       f" | {_ratio(medians['A'], medians['C'])} |")

    for kind, label in KINDS:
        field = "rate"
        marks = {k: "†" for k in keys if kind in ("bulk10", "bulk50", "walk")
                 and _cut(res, kind, k)}
        row(label, lambda k, kind=kind, field=field: metric(res, kind, k, field), marks)
    row("server CPU µs per varbind, snmpbulkwalk -Cr10 (lower is better)",
        lambda k: metric(res, "bulk10", k, "cpu_us_per_vb"))
    row("server CPU µs per varbind, snmpbulkwalk -Cr50 (lower is better)",
        lambda k: metric(res, "bulk50", k, "cpu_us_per_vb"))
    row("server CPU µs per varbind, GET 10 OIDs (lower is better)",
        lambda k: metric(res, "get10", k, "cpu_us_per_vb"))
    row("GET 1 OID latency p50, ms (lower is better)",
        lambda k: metric(res, "get1", k, "p50_ms"))
    row("GET 10 OIDs latency p99, ms (lower is better)",
        lambda k: metric(res, "get10", k, "p99_ms"))
    rss = res["rss_mib"]
    lines.append("| peak RSS, MiB (VmHWM; C = snmpd + script) | "
                 + " | ".join(_num(rss[k]) for k in keys)
                 + f" | {_ratio(rss['A'], rss['B'])} | {_ratio(rss['A'], rss['C'])} |")
    vis = res["visibility"]

    def vis_cell(key: str) -> str:
        v = vis.get(key)
        if v is None:
            return "n/a (static config)"
        if not v["seen"]:
            return f"not within {v.get('limit', '')} s"
        text = f"{_num(v['median_s'])} (max {_num(v['max_s'])})"
        return text + (f", {v['misses']} missed" if v["misses"] else "")

    lines.append("| counter change → visible to a poller, s (median, max) | "
                 + " | ".join(vis_cell(k) for k in keys) + " | | |")
    lines.append("")
    notes = []
    if any(_cut(res, kind, k) for kind in ("bulk10", "bulk50", "walk") for k in keys):
        notes.append(f"† a whole walk did not finish within the {cap:g} s cap: the rate is over"
                     " the part walked (cells counted as they arrived).")
    timeouts = {k: sum(r["timeouts"] for kind in ("get1", "get10")
                       for r in res["rounds"][kind][k]) for k in keys}
    if any(timeouts.values()):
        notes.append("GET timeouts (resent after 5 s): "
                     + ", ".join(f"{k} {n}" for k, n in timeouts.items()))
    client = max(r["client_cpu_frac"] for kind in ("get1", "get10") for k in keys
                 for r in res["rounds"][kind][k])
    if client > 0.85:
        notes.append(f"The load generator itself used up to {client:.0%} of a core: the"
                     " fastest GET rates here are bounded by the client, not the server.")
    stall = res["stall"]
    notes.append(f"mailmib GET latency while another process writes {stall['rate']:g} events/s"
                 f" ({stall['events_written']:,} events in {stall['duration']:g} s;"
                 f" {stall['requests']:,} GETs, one at a time): p50"
                 f" {_num(stall['p50_ms'])} ms, p99 {_num(stall['p99_ms'])} ms,"
                 f" max {_num(stall['max_ms'])} ms"
                 + (f", {stall['timeouts']} timeouts" if stall["timeouts"] else "") + ".")
    lines.extend(f"- {n}" for n in notes)
    lines.append("")
    return lines


def ingest_table(ing: dict[str, Any]) -> list[str]:
    lines = ["## Ingest", "",
             "| path | messages/s | events/s | p50 ms/event | p99 ms/event | final counts |",
             "|---|---:|---:|---:|---:|---|"]
    for r in ing["api"]:
        found = "exact" if r["exact"] else f"**LOST UPDATES** (found {r['found']})"
        lines.append(f"| Python API, {r['writers']} writer process(es)"
                     f" ({r['messages']:,} messages) | {_num(r['messages_per_s'])}"
                     f" | {_num(r['events_per_s'])} | {_num(r['p50_ms'])} | {_num(r['p99_ms'])}"
                     f" | {found} |")
    cli = ing["cli"]
    lines.append(f"| CLI `python -m counters receive …` ({cli['runs']} runs, one event each)"
                 f" | {DASH} | {_num(cli['events_per_s'])} | {_num(cli['median_ms'])}"
                 f" | {_num(cli['p99_ms'])} | {'exact' if cli['exact'] else 'WRONG'} |")
    bulk = ing["bulk"]
    name = ing.get("bulk_command")
    cli_bulk = ing.get("cli_bulk")
    if cli_bulk:
        lines.append(f"| bulk, CLI: `counters {cli_bulk['command']}` reading"
                     f" {cli_bulk['events']:,} JSON lines on stdin (one process, its"
                     f" {_num(cli_bulk['startup_s'] * 1e3)} ms start-up included; without it"
                     f" {_num(cli_bulk['steady_events_per_s'])} events/s)"
                     f" | {_num(cli_bulk['events_per_s'] / 2)}"
                     f" | {_num(cli_bulk['events_per_s'])} | {DASH} | {DASH} |"
                     f" {'exact' if cli_bulk['exact'] else 'WRONG'} |")
    label = (f"bulk, Python: `store.batch()`, {bulk['per_batch']:,} events per batch"
             + ("" if name else " (stand-in: no CLI bulk command yet)"))
    lines.append(f"| {label} | {_num(bulk['events_per_s'] / 2)} | {_num(bulk['events_per_s'])}"
                 f" | {_num(bulk['batch_p50_ms'] / bulk['per_batch'])} | {DASH} |"
                 f" {'exact' if bulk['exact'] else 'WRONG'} |")
    lines.append("")
    lines.append("A message is a `receive` and a `transmit` (two events, two transactions);"
                 " the counts are checked against the snapshot's mtaTable totals afterwards."
                 + ("" if name else " `counters` has no stdin bulk command yet: the bulk row"
                    " measures `store.batch()` and the CLI bulk path is pending."))
    lines.append("")
    return lines


def _target(ok: bool | None, text: str) -> str:
    mark = DASH if ok is None else ("✓" if ok else "✗")
    return f"- {mark} {text}"


def targets(results: dict[str, Any]) -> list[str]:
    sizes = results["sizes"]
    lines = ["## Targets (issue 3)", ""]
    at = sizes.get(1000)

    def med(res: dict[str, Any] | None, kind: str, key: str, field: str = "rate"
            ) -> float | None:
        return None if res is None else _median(metric(res, kind, key, field))

    def ratio_line(kind: str, key: str, need: float, what: str) -> str:
        a, other = med(at, kind, "A"), med(at, kind, key)
        if a is None or not other:
            return _target(None, f"{what}: not measured (no 1,000-channel run)")
        r = a / other
        return _target(r >= need, f"{what} ≥ {need:g}{TIMES}: {r:.2f}{TIMES}"
                                  f" ({_num(a)} vs {_num(other)})")

    lines.append(ratio_line("bulk10", "B", 1.0,
                            "snmpbulkwalk (-Cr10) at 1,000 channels vs snmpd-native"))
    lines.append(ratio_line("bulk50", "B", 1.0,
                            "snmpbulkwalk -Cr50 at 1,000 channels vs snmpd-native"))
    lines.append(ratio_line("bulk10", "C", 10.0,
                            "snmpbulkwalk (-Cr10) at 1,000 channels vs snmpd + pass_persist"))
    lines.append(ratio_line("get10", "B", 0.8, "GET of 10 OIDs at 1,000 channels vs native"))
    lines.append(ratio_line("walk", "B", 0.8, "snmpwalk at 1,000 channels vs native"))
    cpu = med(at, "bulk10", "A", "cpu_us_per_vb")
    lines.append(_target(None if cpu is None else cpu <= 10,
                         f"server CPU ≤ 10 µs per varbind in bulk (1,000 channels, -Cr10):"
                         f" {_num(cpu)} µs"))
    big = sizes.get(10000)
    if big is None:
        lines.append(_target(None, "agent RSS ≤ 100 MB at 10,000 channels: not measured"))
    else:
        mib = big["rss_mib"]["A"]
        lines.append(_target(mib * 1.048576 <= 100, f"agent RSS ≤ 100 MB at 10,000 channels:"
                             f" {mib * 1.048576:.0f} MB ({mib:.0f} MiB)"))
    for size in (1000, 10000):
        res = sizes.get(size)
        if res is None:
            lines.append(_target(None, f"a counter change visible to pollers within 1 s at"
                                       f" {size:,} channels: not measured"))
            continue
        v = res["visibility"]["A"]
        worst = v["max_s"] if v["seen"] == v["trials"] else math.inf
        lines.append(_target(worst <= 1.0, f"a counter change visible to pollers within 1 s at"
                                           f" {size:,} channels: median {_num(v['median_s'])} s,"
                                           f" worst {_num(worst)} s of {v['trials']}"))
    if big is None:
        lines.append(_target(None, "no request stalled > 50 ms by a rebuild at 10,000"
                                   " channels: not measured"))
    else:
        stall = big["stall"]
        lines.append(_target(stall["max_ms"] <= 50 and not stall["timeouts"],
                             f"no request stalled > 50 ms while writing at 10,000 channels:"
                             f" max {_num(stall['max_ms'])} ms, p99 {_num(stall['p99_ms'])} ms"))
    ing = results.get("ingest")
    if ing:
        four = next((r for r in ing["api"] if r["writers"] == 4), None)
        if four is None:
            lines.append(_target(None, "ingest with 4 writers: not measured"))
        else:
            lines.append(_target(four["messages_per_s"] >= 20000 and four["exact"],
                                 f"ingest ≥ 20,000 messages/s across 4 writers, no lost"
                                 f" update: {_num(four['messages_per_s'])} messages/s,"
                                 f" {'exact' if four['exact'] else 'LOST UPDATES'}"))
        bulk = ing["bulk"]
        cli_bulk = ing.get("cli_bulk")
        if cli_bulk:
            lines.append(_target(cli_bulk["events_per_s"] >= 50000 and cli_bulk["exact"],
                                 f"bulk path ≥ 50,000 events/s: `counters"
                                 f" {cli_bulk['command']}` {_num(cli_bulk['events_per_s'])}"
                                 f" events/s ({cli_bulk['events']:,} events, start-up"
                                 f" included; {_num(cli_bulk['steady_events_per_s'])} without);"
                                 f" `store.batch()` {_num(bulk['events_per_s'])}"))
        else:
            lines.append(_target(bulk["events_per_s"] >= 50000,
                                 f"bulk path ≥ 50,000 events/s: {_num(bulk['events_per_s'])}"
                                 " events/s (store.batch(); CLI bulk command pending)"))
    lines.append("")
    return lines


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    cfg = results["config"]
    lines = ["# mailmib benchmark", "",
             f"Run {results['started']}, {results['wall_s']:.0f} s wall"
             + (" (--quick: numbers are only a smoke test)" if cfg.get("quick") else "")
             + ". Rerun with `make bench` (`BENCH_SIZES=10,100 make bench` for a subset).", "",
             "## Machine", "",
             f"- {m['nproc']} CPUs: {m['cpu']}; Linux {m['kernel']}",
             f"- Python {m['python']}, pysnmp {m['pysnmp']}, mailmib {m['mailmib']},"
             f" Net-SNMP {m['netsnmp']}",
             f"- load average before / after: {m['load_before']} / {m.get('load_after', '?')}"
             " (other work on the machine skews every number)",
             "- everything on 127.0.0.1; clients (Net-SNMP tools, the Python GET generator)"
             " share the cores with the servers", "",
             "## Serving 1.3.6.1.2.1.28", "",
             "A: `python -m agent` over the database. B: `snmpd -f -Lo -C -c CONF"
             " -I -mta_sendmail,smux` with `table` / `add_row` lines generated from a snapshot"
             " of the same database (MTA-MIB loaded from mibs/). C: the same snmpd with"
             " `pass_persist .1.3.6.1.2.1.28` running bench/pass_persist.py over the database."
             " Walks are the Net-SNMP tools, timed including their start-up, repeated back to"
             f" back for at least {cfg['walk_min_time']:g} s and cut at {cfg['walk_cap']:g} s."
             f" GETs come from a raw-UDP generator with {cfg['inflight']} requests in flight for"
             f" {cfg['get_duration']:g} s. Ratios are of medians (for CPU, latency and RSS a"
             " ratio below 1 favours mailmib).", ""]
    for size, res in results["sizes"].items():
        lines.extend(size_table(int(size), res, cfg["walk_cap"]))
    if results.get("ingest"):
        lines.extend(ingest_table(results["ingest"]))
    lines.extend(targets(results))
    return "\n".join(lines).rstrip() + "\n"
