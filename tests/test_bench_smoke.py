"""Smoke run of the benchmark harness (`bench/`, `make bench`) so it cannot rot.

One tiny size (10 channels), one round, short durations: it must start all three servers
(mailmib-agent, snmpd with a native table, snmpd with pass_persist), find them serving the same
cells, measure each of them and write a report. Nothing here asserts a timing. Needs Debian's
`snmpd` (and `snmp`) packages; runs in about 10 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVERS = ("mailmib-agent (A)", "snmpd native table (B)", "snmpd + pass_persist (C)")
RATE_ROWS = ("snmpbulkwalk, -Cr10", "snmpbulkwalk -Cr50", "snmpwalk (GETNEXT)", "GET 1 OID",
             "GET 10 OIDs, 4 in flight")

pytestmark = pytest.mark.netsnmp


def _snmpd_installed() -> bool:
    return any(shutil.which(p) or Path(p).exists()
               for p in ("snmpd", "/usr/sbin/snmpd", "/usr/local/sbin/snmpd"))


def _number(text: str) -> float:
    match = re.match(r"\s*([\d,]+(?:\.\d+)?(?:e[-+]?\d+)?)", text)
    assert match, f"no number in {text!r}"
    return float(match.group(1).replace(",", ""))


def test_quick_bench_reports_all_three_servers(tmp_path: Path) -> None:
    assert _snmpd_installed(), "the benchmark needs Net-SNMP's agent: apt-get install snmpd"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--sizes", "10", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = (tmp_path / "latest.md").read_text()
    stamped = [p for p in tmp_path.glob("*.md") if p.name != "latest.md"]
    assert len(stamped) == 1 and stamped[0].read_text() == report
    assert report in proc.stdout

    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert all(name in header for name in SERVERS)
    assert "A: whole walk, identical; B: whole walk, identical; C: whole walk, identical" \
        in report

    for prefix in RATE_ROWS:
        row = next(line for line in report.splitlines() if line.startswith(f"| {prefix}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        values = [_number(c) for c in cells[1:4]]
        assert all(v > 0 for v in values), row
    cpu = next(line for line in report.splitlines()
               if line.startswith("| server CPU µs per varbind, snmpbulkwalk -Cr10"))
    assert all(c.strip() != "\N{EN DASH}" for c in cpu.strip("|").split("|")[1:4]), cpu
    rss = next(line for line in report.splitlines() if line.startswith("| peak RSS"))
    assert all(_number(c) > 0 for c in rss.strip("|").split("|")[1:4]), rss

    assert "## Ingest" in report and "## Targets" in report
    assert "LOST UPDATES" not in report and "WRONG" not in report
