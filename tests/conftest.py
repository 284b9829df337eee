"""Shared fixtures: a free UDP port, a store on a temporary file, and the real agent running as
a subprocess (`python -m agent`) on a real UDP port.

    def test_something(store, agent):
        store.add_channel("smtpd")
        running = agent("--sys-name", "mx1")          # extra CLI args; db is the store's file
        proc = netsnmp.run("snmpget", "-v2c", "-c", "public", running.target, "1.3.6.1.2.1.1.5.0")

    @pytest.fixture(scope="module")
    def live(served_db, agent_process):             # module/session scope: a context manager
        with agent_process(served_db, "--sys-name", "mx1") as running:
            yield running
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from counters import Store

REPO = Path(__file__).resolve().parents[1]
READY_MARK = "mailmib-agent: serving "


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netsnmp: uses the real Net-SNMP tools")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now on `host` (IPv4 or IPv6 literal)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def agent_command(*args: str) -> list[str]:
    """The command line that runs the agent from this source tree."""
    return [sys.executable, "-m", "agent", *args]


def run_agent(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run the agent to completion (for start-up failures); stdout and stderr captured."""
    return subprocess.run(agent_command(*args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


class AgentProcess:
    """A running `python -m agent`; stderr goes to a file readable at any time."""

    def __init__(self, db: Path, args: tuple[str, ...], *, workdir: Path, port: int | None,
                 host: str, ready_timeout: float) -> None:
        self.db = db
        self.host = host
        self.port = port if port is not None else free_udp_port(host)
        self.listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.stderr_path = workdir / f"agent-{self.port}-{time.monotonic_ns()}.stderr"
        command = agent_command("--db", str(db), "--listen", self.listen, *args)
        #: Taken just before the process starts: a lower bound of the agent's sysUpTime zero.
        self.started_at = time.time()
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        self._wait_ready(ready_timeout)

    @property
    def target(self) -> str:
        """The Net-SNMP agent address: udp:127.0.0.1:PORT or udp6:[::1]:PORT."""
        return f"udp6:{self.listen}" if ":" in self.host else f"udp:{self.listen}"

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_MARK in self.stderr_text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.stderr_text()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"agent not ready within {timeout} s:\n{self.stderr_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send `sig`, wait up to `timeout` s (then kill); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


AgentProcessFactory = Callable[..., contextlib.AbstractContextManager[AgentProcess]]


@pytest.fixture(scope="session")
def agent_process(tmp_path_factory: pytest.TempPathFactory) -> AgentProcessFactory:
    """`with agent_process(db, *cli_args, port=None, host="127.0.0.1") as running:` — the agent
    on a free port, stopped (SIGTERM, then kill) when the block ends. Usable from fixtures of
    any scope."""
    workdir = tmp_path_factory.mktemp("agent-logs")

    @contextlib.contextmanager
    def start(db: Path, *args: str, port: int | None = None, host: str = "127.0.0.1",
              ready_timeout: float = 20.0) -> Iterator[AgentProcess]:
        running = AgentProcess(Path(db), args, workdir=workdir, port=port, host=host,
                               ready_timeout=ready_timeout)
        try:
            yield running
        finally:
            running.stop()

    return start


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database path in a fresh temporary directory (the file does not exist yet)."""
    return tmp_path / "mailmib.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """A `counters.Store` on `db_path`, closed after the test."""
    with Store(db_path) as opened:
        yield opened


@pytest.fixture
def agent(db_path: Path, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: `agent(*cli_args, db=db_path, port=None, host="127.0.0.1")` starts the agent
    and waits until it serves; every agent started is stopped at teardown."""
    started: list[AgentProcess] = []

    def start(*args: str, db: Path | None = None, port: int | None = None,
              host: str = "127.0.0.1", ready_timeout: float = 20.0) -> AgentProcess:
        running = AgentProcess(db if db is not None else db_path, args, workdir=tmp_path,
                               port=port, host=host, ready_timeout=ready_timeout)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
