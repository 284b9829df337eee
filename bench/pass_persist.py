"""Serve a mailmib counters database under 1.3.6.1.2.1.28 through snmpd's `pass_persist`.

What a sysadmin would write instead of mailmib (benchmark server C):

    pass_persist .1.3.6.1.2.1.28 /path/to/python /path/to/bench/pass_persist.py /path/to/db

It reads a snapshot through `counters.Store`, lays the cells out as a sorted OID list with the
answer lines pre-formatted, and answers snmpd's `get` / `getnext` by bisection. It looks at
SQLite's `PRAGMA data_version` at most every CHECK_INTERVAL seconds and rebuilds the list when
the database changed (or when the list is older than MAX_AGE, so the TimeInterval columns move).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from urllib.request import pathname2url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mibvalues
from counters import Store

CHECK_INTERVAL = 0.5  # seconds between two looks at the database
MAX_AGE = 10.0  # rebuild at least this often, for the clock-driven columns

_TYPE = {mibvalues.INTEGER: "integer", mibvalues.OCTET_STRING: "string",
         mibvalues.OBJECT_IDENTIFIER: "objectid", mibvalues.COUNTER32: "counter",
         mibvalues.GAUGE32: "gauge"}


def _format(cell: mibvalues.Cell) -> str:
    oid = "." + ".".join(map(str, cell.oid))
    value = cell.value
    if isinstance(value, bytes):
        text = value.decode("ascii")
    elif isinstance(value, tuple):
        text = "." + ".".join(map(str, value))
    else:
        text = str(value)
    return f"{oid}\n{_TYPE[cell.kind]}\n{text}\n"


class Table:
    def __init__(self, db: str) -> None:
        self.store = Store(db, read_only=True)
        uri = "file:" + pathname2url(str(Path(db).resolve())) + "?mode=ro"
        self.version_conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        self.version = -1
        self.built = 0.0
        self.checked = 0.0
        self.oids: list[tuple[int, ...]] = []
        self.answers: list[str] = []

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.checked < CHECK_INTERVAL:
            return
        self.checked = now
        version = self.version_conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self.version and now - self.built < MAX_AGE:
            return
        cells = mibvalues.cells(self.store.snapshot())
        self.oids = [cell.oid for cell in cells]
        self.answers = [_format(cell) for cell in cells]
        self.version = version
        self.built = time.monotonic()

    def get(self, oid: tuple[int, ...]) -> str:
        i = bisect_left(self.oids, oid)
        if i < len(self.oids) and self.oids[i] == oid:
            return self.answers[i]
        return "NONE\n"

    def getnext(self, oid: tuple[int, ...]) -> str:
        i = bisect_right(self.oids, oid)
        return self.answers[i] if i < len(self.oids) else "NONE\n"


def _oid(line: str) -> tuple[int, ...]:
    try:
        return tuple(int(arc) for arc in line.strip().strip(".").split("."))
    except ValueError:
        return ()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: pass_persist.py DB", file=sys.stderr)
        return 2
    table = Table(argv[1])
    readline = sys.stdin.readline
    write = sys.stdout.write
    flush = sys.stdout.flush
    while True:
        command = readline()
        if not command:
            return 0
        command = command.strip().lower()
        if command == "ping":
            write("PONG\n")
        elif command in ("get", "getnext"):
            oid = _oid(readline())
            table.refresh()
            write(table.get(oid) if command == "get" else table.getnext(oid))
        elif command == "set":
            readline()
            readline()
            write("not-writable\n")
        elif command == "":
            continue
        else:
            write("NONE\n")
        flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
