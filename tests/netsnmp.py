"""Run the real Net-SNMP tools and read what they print.

Used by the end-to-end tests: every value is read back exactly as a monitoring host would see
it. Output options `-On -Ox -Oe`: numeric OIDs, strings in hex (so an empty string, a quote or
a space cannot be misread), enums as numbers.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agent.view import Kind, Oid

T = TypeVar("T")
MIBS = Path(__file__).resolve().parents[1] / "mibs"
NUMERIC = ("-On", "-Ox", "-Oe")

_TYPES = {
    "Counter32": Kind.COUNTER32,
    "Gauge32": Kind.GAUGE32,
    "INTEGER": Kind.INTEGER,
    "Timeticks": Kind.TIMETICKS,
    "OID": Kind.OBJECT_IDENTIFIER,
    "Hex-STRING": Kind.OCTET_STRING,
    "STRING": Kind.OCTET_STRING,
}
END_OF_VIEW = "No more variables left in this MIB View"
_LINE = re.compile(r"^(\.[\d.]+) = (?:(?P<type>[\w-]+): )?(?P<value>.*)$")


@dataclass(frozen=True)
class Served:
    kind: Kind
    value: int | bytes | Oid


def wait_until(condition: Callable[[], T], timeout: float = 5.0, step: float = 0.05) -> T:
    """Poll `condition` until it returns something true, and return that; fail after
    `timeout` s. The agent shows a database change after its next refresh (a fraction of a
    second), so tests that change the database and then poll use this; it bounds, not times."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            assert result, f"condition still false after {timeout} s"
            return result
        time.sleep(step)


def oid_text(oid: Oid) -> str:
    return "." + ".".join(map(str, oid))


def parse_oid(text: str) -> Oid:
    return tuple(int(arc) for arc in text.strip(".").split("."))


def run(tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a Net-SNMP tool; the caller checks returncode and output."""
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def target(port: int, host: str = "127.0.0.1") -> str:
    return f"udp:{host}:{port}"


def parse_value(type_name: str | None, raw: str) -> Served:
    """One value as printed with NUMERIC options."""
    if type_name is None:
        if raw == '""':
            return Served(Kind.OCTET_STRING, b"")
        raise ValueError(f"untyped value {raw!r}")
    kind = _TYPES[type_name]
    if type_name == "Timeticks":
        match = re.match(r"\((\d+)\)", raw)
        if match is None:
            raise ValueError(f"bad Timeticks {raw!r}")
        return Served(kind, int(match.group(1)))
    if kind is Kind.OBJECT_IDENTIFIER:
        return Served(kind, parse_oid(raw))
    if type_name == "Hex-STRING":
        return Served(kind, bytes.fromhex(raw.replace(" ", "")))
    if type_name == "STRING":
        return Served(kind, raw.strip('"').encode("ascii"))
    return Served(kind, int(raw))


def parse_varbinds(stdout: str) -> list[tuple[Oid, Served | str]]:
    """Lines `OID = TYPE: VALUE` → [(oid, Served)]; exceptions such as 'No Such Instance …'
    come back as their text. Hex strings may wrap over several lines."""
    result: list[tuple[Oid, Served | str]] = []
    pending: tuple[Oid, str | None, str] | None = None

    def flush() -> None:
        if pending is None:
            return
        oid, type_name, raw = pending
        if type_name is None and raw != '""':
            result.append((oid, raw))
        else:
            result.append((oid, parse_value(type_name, raw.strip())))

    for line in stdout.splitlines():
        if line == "End of MIB":  # how snmpwalk -v1 reports noSuchName at the end of a walk
            continue
        match = _LINE.match(line)
        if match is None:
            if pending is not None and pending[1] == "Hex-STRING":
                pending = (pending[0], pending[1], pending[2] + " " + line.strip())
                continue
            raise ValueError(f"unexpected output line {line!r}")
        flush()
        type_name = match.group("type")
        value = match.group("value")
        if type_name is not None and type_name not in _TYPES:
            # 'No Such Instance currently exists at this OID' has no type prefix but a colon
            # may not appear; anything unknown is kept as text for the test to assert on.
            pending = (parse_oid(match.group(1)), None, line.split(" = ", 1)[1])
        else:
            pending = (parse_oid(match.group(1)), type_name, value)
    flush()
    return result


def walk(tool: str, port: int, *args: str, root: str = ".1.3.6.1") -> dict[Oid, Served]:
    """A complete walk with `tool` (snmpwalk or snmpbulkwalk); fails on any error output."""
    proc = run(tool, *args, *NUMERIC, "-Cc", target(port), root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    served: dict[Oid, Served] = {}
    for oid, value in parse_varbinds(proc.stdout):
        if isinstance(value, str) and value.startswith(END_OF_VIEW):
            continue
        assert isinstance(value, Served), f"{oid_text(oid)}: {value}"
        assert oid not in served, f"{oid_text(oid)} returned twice"
        served[oid] = value
    return served
