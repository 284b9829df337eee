"""The three servers the benchmark compares, each started on its own free loopback UDP port:

A. `mailmib-agent` over the database (`python -m agent`);
B. Net-SNMP's snmpd serving the same rows natively from `table` / `add_row` lines generated
   from a snapshot of that database (the C reference);
C. snmpd with `pass_persist` running `bench/pass_persist.py` over the same database.

Every process started here is registered, and `stop_all()` (run on exit, on failure and on
Ctrl-C) ends them: SIGTERM, then SIGKILL. Children also get PR_SET_PDEATHSIG, so they die with
the harness even if it is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import mibvalues, snmpwire
from counters.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[1]
MIBS = REPO / "mibs"
PYTHON = sys.executable
COMMUNITY = "public"
READY_MARK = "mailmib-agent: serving "
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: snmpd's config reader keeps lines shorter than this (read_config.c, STRINGMAX).
SNMPD_MAX_LINE = 1000


class ServerError(RuntimeError):
    """A server could not be started; the message is one line plus the server's log."""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def snmpd_path() -> str | None:
    found = shutil.which("snmpd")
    if found:
        return found
    for candidate in ("/usr/sbin/snmpd", "/usr/local/sbin/snmpd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_RUNNING: list[subprocess.Popen[bytes]] = []


def _spawn(command: list[str], log: Path, *, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
    _RUNNING.append(proc)
    return proc


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    children = _children(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    for child in children:  # e.g. the pass_persist script, if snmpd left it behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def stop_all() -> None:
    while _RUNNING:
        _terminate(_RUNNING.pop())


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of `pid` in KiB (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    key = "?"
    label = "?"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.key}.log"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def target(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The processes whose CPU time counts as this server's."""
        return [self.proc.pid] if self.proc is not None else []

    def cpu_seconds(self) -> float:
        return sum(cpu_ticks(pid) for pid in self.pids()) / CLK_TCK

    def peak_rss_mib(self) -> float:
        return sum(peak_rss_kib(pid) for pid in self.pids()) / 1024

    def log_text(self, limit: int = 4000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            if self.proc in _RUNNING:
                _RUNNING.remove(self.proc)

    def _fail(self, what: str) -> ServerError:
        log = self.log_text()
        self.stop()
        return ServerError(f"{self.label}: {what}; its log:\n{log}")

    def wait_answering(self, timeout: float, probe: snmpwire.Oid) -> None:
        """Until a GET of `probe` gets an answer; ServerError if it exits or times out."""
        request = snmpwire.encode_request(COMMUNITY, 1, [probe])
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise self._fail(f"exited with status {self.proc.returncode} at start")
                sock.sendto(request, self.address)
                try:
                    sock.recv(65535)
                    return
                except TimeoutError:
                    continue
        raise self._fail(f"no answer within {timeout:g} s")


class Mailmib(Server):
    key = "A"
    label = "mailmib-agent"

    def __init__(self, workdir: Path, db: Path) -> None:
        super().__init__(workdir)
        self.db = db

    def start(self, timeout: float = 60.0) -> None:
        command = [PYTHON, "-m", "agent", "--db", str(self.db),
                   "--listen", f"127.0.0.1:{self.port}"]
        self.proc = _spawn(command, self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_MARK in self.log_text():
                return
            if self.proc.poll() is not None:
                raise self._fail(f"exited with status {self.proc.returncode} at start")
            time.sleep(0.02)
        raise self._fail(f"not ready within {timeout:g} s")


class _Snmpd(Server):
    def __init__(self, workdir: Path, snmpd: str) -> None:
        super().__init__(workdir)
        self.snmpd = snmpd
        self.conf = workdir / f"{self.key}-snmpd.conf"
        self.state = workdir / f"{self.key}-state"

    def conf_lines(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        # Debian's snmpd logs every request's peer otherwise (a log write per request).
        lines = [f"rocommunity {COMMUNITY} 127.0.0.1", "dontLogTCPWrappersConnects yes",
                 *self.conf_lines()]
        self.conf.write_text("\n".join(lines) + "\n")
        self.state.mkdir(exist_ok=True)
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(self.state), MIBS="", MIBDIRS="")
        command = [self.snmpd, "-f", "-Lo", "-C", "-c", str(self.conf),
                   "-M", f"/usr/share/snmp/mibs:{MIBS}", "-m", "MTA-MIB",
                   "-I", "-mta_sendmail,smux", self.target]
        self.proc = _spawn(command, self.log, env=env)
        self.wait_answering(timeout, (*mibvalues.MTA_ENTRY, 1, 1))
        self.check_log()

    def check_log(self) -> None:
        """snmpd reports bad config lines in its log and carries on; fail loudly instead."""
        bad = [line for line in self.log_text(100_000).splitlines()
               if str(self.conf) in line or "Error" in line]
        if bad:
            raise self._fail(f"snmpd rejected its configuration: {bad[0]}")


def _add_row_value(kind: int, value: object) -> str:
    if kind == mibvalues.OCTET_STRING:
        assert isinstance(value, bytes)
        return "0x" + value.hex() if value else '""'
    if kind == mibvalues.OBJECT_IDENTIFIER:
        assert isinstance(value, tuple)
        return "." + ".".join(map(str, value))
    return str(value)


class SnmpdNative(_Snmpd):
    """snmpd serving the snapshot from `table` + `add_row` (the MIB loaded from mibs/).

    add_row must give every column, so a channel that does not use a side still has those
    cells here (mailmib leaves them out): see `extra_cells`.
    """

    key = "B"
    label = "snmpd-native"

    def __init__(self, workdir: Path, snmpd: str, snapshot: Snapshot) -> None:
        super().__init__(workdir, snmpd)
        self.snapshot = snapshot
        self.extra_cells = mibvalues.absent_cells(snapshot)

    def conf_lines(self) -> list[str]:
        snap = self.snapshot
        appl = snap.appl_index
        lines = ["table MTA-MIB::mtaTable", "table MTA-MIB::mtaGroupTable",
                 "table MTA-MIB::mtaGroupAssociationTable",
                 "add_row MTA-MIB::mtaTable " + " ".join(
                     [str(appl)] + [str(v) for _, _, v in mibvalues.mta_row(snap)])]
        for channel in sorted(snap.channels, key=lambda c: c.index):
            row = mibvalues.group_row(channel, snap.taken_at, all_columns=True)
            lines.append(f"add_row MTA-MIB::mtaGroupTable {appl} {channel.index} " + " ".join(
                _add_row_value(kind, value) for _, kind, value in row))
        for assoc in sorted(snap.associations, key=lambda a: (a.channel_index, a.index)):
            lines.append(f"add_row MTA-MIB::mtaGroupAssociationTable {appl} "
                         f"{assoc.channel_index} {assoc.index} {assoc.index}")
        too_long = [line for line in lines if len(line) >= SNMPD_MAX_LINE]
        if too_long:
            raise ServerError(f"{self.label}: an add_row line is {len(too_long[0])} characters,"
                              f" past snmpd's limit: {too_long[0][:80]}…")
        return lines


class SnmpdPassPersist(_Snmpd):
    key = "C"
    label = "snmpd+pass_persist"

    def __init__(self, workdir: Path, snmpd: str, db: Path) -> None:
        super().__init__(workdir, snmpd)
        self.db = db

    def conf_lines(self) -> list[str]:
        script = REPO / "bench" / "pass_persist.py"
        return [f"pass_persist .1.3.6.1.2.1.28 {PYTHON} {script} {self.db}"]

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid, *_children(self.proc.pid)]
