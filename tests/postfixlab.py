"""A private Postfix for the tests: its own config and queue directory, loopback only.

    with PostfixLab.start(smtp_port=free_tcp_port()) as lab, SmtpSink() as sink:
        lab.route("sink.test", sink.port)            # transport_maps entries, set before start
        smtplib.SMTP("127.0.0.1", lab.smtp_port).sendmail(...)
        lab.queue()                                  # postqueue -j, parsed
        lab.log_path                                 # Postfix's own log file (maillog_file)

Everything lives under one directory made for the instance (world-traversable, because
Postfix's daemons run as the `postfix` user and local delivery as `nobody`); `stop()` stops
Postfix and deletes it. Facts about running Postfix this way: shared/notes/postfix.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
        -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.mailmib.test
mydomain = mailmib.test
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {base}/log/postfix.log
maillog_file_prefixes = {base}/log
alias_maps = hash:{base}/etc/aliases
alias_database = hash:{base}/etc/aliases
transport_maps = hash:{base}/etc/transport
mail_spool_directory = {base}/mail
biff = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_banner = $myhostname ESMTP
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_connect_timeout = 5s
delay_warning_time = 0
"""


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (and, closed again, one nothing answers on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def postfix_available() -> str | None:
    """None if Postfix can run here, else why not (for pytest.skip)."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "Postfix is not installed (make system-deps installs Debian's postfix)"
    if os.geteuid() != 0:
        return "running a private Postfix needs root (its daemons switch to the postfix user)"
    return None


@dataclass
class PostfixLab:
    """One private Postfix instance; build with `PostfixLab.start(...)`."""

    base: Path
    smtp_port: int
    routes: dict[str, int] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def log_path(self) -> Path:
        return self.base / "log" / "postfix.log"

    @property
    def queue_dir(self) -> Path:
        return self.base / "spool"

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, smtp_port: int, routes: dict[str, int] | None = None,
              aliases: dict[str, str] | None = None) -> Iterator[PostfixLab]:
        """Write the config (routes: domain → loopback SMTP port), start Postfix, and stop it
        and delete everything at the end of the block."""
        base = Path(tempfile.mkdtemp(prefix="mailmib-postfix-"))
        base.chmod(0o755)
        lab = cls(base, smtp_port, dict(routes or {}))
        try:
            lab._configure(aliases or {})
            lab._postfix("start")
            yield lab
        finally:
            with contextlib.suppress(Exception):
                lab._postfix("stop")
            shutil.rmtree(base, ignore_errors=True)

    def _configure(self, aliases: dict[str, str]) -> None:
        etc = self.config_dir
        for sub in ("etc", "spool", "data", "log"):
            (self.base / sub).mkdir(mode=0o755)
        shutil.chown(self.base / "data", "postfix", "postfix")
        mail = self.base / "mail"
        mail.mkdir()
        mail.chmod(0o1777)
        (etc / "main.cf").write_text(MAIN_CF.format(base=self.base))
        (etc / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.smtp_port}"))
        table = {"postmaster": "root", **aliases}
        (etc / "aliases").write_text("".join(f"{k}: {v}\n" for k, v in table.items()))
        (etc / "transport").write_text("".join(
            f"{domain} smtp:[127.0.0.1]:{port}\n" for domain, port in self.routes.items()))
        self._run("postalias", "-c", str(etc), f"hash:{etc}/aliases")
        self._run("postmap", "-c", str(etc), f"hash:{etc}/transport")

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n"
                               f"{proc.stdout}{proc.stderr}\n{log[-3000:]}")
        return proc

    def _postfix(self, action: str) -> None:
        self._run("postfix", "-c", str(self.config_dir), action)

    def queue(self) -> list[dict[str, Any]]:
        """`postqueue -j`: one dict per queued message."""
        proc = self._run("postqueue", "-c", str(self.config_dir), "-j")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def sendmail(self, sender: str, recipients: list[str], body: bytes) -> None:
        """Local submission (sendmail → postdrop → pickup)."""
        proc = subprocess.run(["sendmail", "-C", str(self.config_dir), "-f", sender, "--",
                               *recipients], input=body, capture_output=True, timeout=30,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"sendmail exited {proc.returncode}: {proc.stderr!r}")

    def delete_all(self) -> None:
        """`postsuper -d ALL`: empty the queue (each message logs `removed`)."""
        self._run("postsuper", "-c", str(self.config_dir), "-d", "ALL")

    def flush(self) -> None:
        """`postqueue -f`: attempt deferred mail now."""
        self._run("postqueue", "-c", str(self.config_dir), "-f")


# --- a tiny SMTP sink -------------------------------------------------------------------------


class _SinkHandler(socketserver.StreamRequestHandler):
    server: _SinkServer

    def handle(self) -> None:
        self._reply("220 sink.mailmib.test ESMTP")
        recipients: list[str] = []
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self._reply("250 sink.mailmib.test")
            elif verb == b"MAIL":
                recipients = []
                self._reply("250 2.1.0 ok")
            elif verb == b"RCPT":
                recipients.append(line.decode("ascii", "replace").split(":", 1)[1].strip())
                self._reply("250 2.1.5 ok")
            elif verb == b"DATA":
                self._reply("354 go ahead")
                size = 0
                while (data := self.rfile.readline(65536)) not in (b".\r\n", b""):
                    size += len(data)
                with self.server.lock:
                    self.server.received.append((recipients, size))
                self._reply("250 2.0.0 queued as sink")
            elif verb == b"RSET":
                recipients = []
                self._reply("250 2.0.0 ok")
            elif verb == b"QUIT":
                self._reply("221 2.0.0 bye")
                return
            else:
                self._reply("250 2.0.0 ok")

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode("ascii") + b"\r\n")
        self.wfile.flush()


class _SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.received: list[tuple[list[str], int]] = []


class SmtpSink:
    """An SMTP server on loopback that accepts everything: `with SmtpSink() as sink:`;
    `sink.received` lists (recipients, octets of DATA) per message."""

    def __init__(self) -> None:
        self._server = _SinkServer()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def received(self) -> list[tuple[list[str], int]]:
        with self._server.lock:
            return list(self._server.received)

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(condition: Any, timeout: float, step: float = 0.1) -> Any:
    """Poll until `condition()` is true-ish; its value, or the last one after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
