"""The SNMP engine's identity, kept across restarts in a small file beside the database.

SNMPv3 clients remember an agent's snmpEngineID, snmpEngineBoots and snmpEngineTime (RFC 3414
§2.2.3). If the engine ID changed at every start (pysnmp's default, notes gotcha 7) every client
would rediscover it, and keys localized to it would stop working; if snmpEngineBoots went back,
a recorded message could be replayed within the time window. So the agent keeps both here:

    {"engine_id": "80004fb805…", "boots": 17}

At each start `boot` reads the file, adds one to `boots` and writes it back atomically (a new
file, fsync'd, renamed over the old one), owner-only (0600). The engine ID is the configured
`engine_id` if there is one, else the one stored, else a new one made once: RFC 3411 format 5
("octets, administratively assigned") under pysnmp's enterprise number 20408, as pysnmp's own
default is, with 12 random octets. A configured engine ID that differs from the stored one
starts `boots` again at 1 (RFC 3411: boots count re-initializations "since snmpEngineID was
last configured"). `boots` stops at 2147483647, where RFC 3414 §2.2.2 wants the engine to
need reconfiguring.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: pysnmp's IANA enterprise number, which its generated engine IDs use too.
PYSNMP_ENTERPRISE = 20408
MAX_BOOTS = 2**31 - 1


class EngineStateError(Exception):
    """The state file cannot be read or written; one line."""


@dataclass(frozen=True, slots=True)
class EngineState:
    engine_id: bytes
    boots: int


def generate_engine_id() -> bytes:
    """A new engine ID: '80004fb805'H followed by 12 random octets."""
    return (0x80000000 | PYSNMP_ENTERPRISE).to_bytes(4, "big") + b"\x05" + os.urandom(12)


def read(path: Path) -> EngineState | None:
    """The stored state, or None if there is no file yet."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EngineStateError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(4096)
    try:
        document = json.loads(data)
        engine_id = bytes.fromhex(document["engine_id"])
        boots = document["boots"]
        if not isinstance(boots, int) or isinstance(boots, bool) or not 1 <= boots <= MAX_BOOTS:
            raise ValueError("boots out of range")
        if not 5 <= len(engine_id) <= 32:
            raise ValueError("engine ID length")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EngineStateError(
            f"{path} is not a mailmib engine state file (move it away to start afresh: SNMPv3 "
            "clients will then see a new engine)") from None
    return EngineState(engine_id, boots)


def write(path: Path, state: EngineState) -> None:
    """Replace the state file atomically; the file is created 0600."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"engine_id": state.engine_id.hex(), "boots": state.boots}) + "\n"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise EngineStateError(f"cannot write {path}: {exc.strerror or exc}") from None


def boot(path: Path, configured: bytes | None) -> EngineState:
    """Count one more boot of the engine whose state is kept at `path`; the state to run with."""
    stored = read(path)
    if stored is None:
        state = EngineState(configured or generate_engine_id(), 1)
    else:
        engine_id = configured if configured is not None else stored.engine_id
        boots = min(stored.boots + 1, MAX_BOOTS) if engine_id == stored.engine_id else 1
        state = EngineState(engine_id, boots)
    write(path, state)
    return state
