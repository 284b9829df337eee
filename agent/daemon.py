"""The agent's controller: one object that starts and stops the whole agent.

`Agent` is used the same way by `mailmib-agent` and by tests running the agent in-process
(aiosmtpd's Controller pattern): `await agent.start()`, poll it, `await agent.stop()`. It owns
the counter store, decides which `View` a request is answered from, and owns the pysnmp
service (`agent.responder`), the asyncio exception handler and the start-up checks.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import platform
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.oids import MTA, Oid
from agent.responder import (
    Endpoint,
    ListenError,
    RateLimitedLog,
    SnmpService,
    describe_exception,
    plural,
)
from agent.view import AgentInfo, View
from counters.errors import CountersError
from counters.snapshot import Snapshot
from counters.store import DEFAULT_DB_PATH, Store

log = logging.getLogger("mailmib.agent")

try:
    VERSION = importlib.metadata.version("mailmib")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "unknown"

DEFAULT_LISTEN = Endpoint("127.0.0.1", 1161)
DEFAULT_COMMUNITY = "public"
#: sysObjectID: mailmib has no enterprise number of its own, so it names itself by the MIB
#: module it implements (MTA-MIB, mib-2 28).
DEFAULT_SYS_OBJECT_ID: Oid = MTA


def default_sys_descr() -> str:
    return (f"mailmib {VERSION} mail counters agent (RFC 1566 MTA-MIB), "
            f"Python {platform.python_version()} on {platform.system()} {platform.release()}")


class AgentError(Exception):
    """The agent cannot start; the message is one line fit to show as it is."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything `mailmib-agent`'s options decide."""

    db: Path = DEFAULT_DB_PATH
    listen: tuple[Endpoint, ...] = (DEFAULT_LISTEN,)
    community: str = DEFAULT_COMMUNITY
    allow_remote: bool = False
    sys_descr: str = field(default_factory=default_sys_descr)
    sys_object_id: Oid = DEFAULT_SYS_OBJECT_ID
    sys_contact: str = ""
    sys_name: str = field(default_factory=socket.gethostname)
    sys_location: str = ""


def check_listen(endpoints: tuple[Endpoint, ...], allow_remote: bool) -> None:
    """Loopback only unless remote access was asked for explicitly."""
    if not endpoints:
        raise AgentError("no address to listen on")
    for endpoint in endpoints:
        if not endpoint.loopback and not allow_remote:
            raise AgentError(f"refusing to listen on non-loopback address {endpoint} "
                             "without --allow-remote")


StoreFactory = Callable[..., Store]


class Agent:
    """Serves one counters database over SNMP until stopped.

    Reads take one snapshot and build one `View` per request (`current_view`); the view is
    answered from for every varbind of that PDU. A recreated database file is noticed and
    reopened; a database that fails while serving leaves the last good view in service and
    is reported as one rate-limited log line.
    """

    def __init__(self, config: AgentConfig, *, store_factory: StoreFactory = Store) -> None:
        self.config = config
        self._store_factory = store_factory
        self._store: Store | None = None
        self._identity: tuple[int, int] | None = None
        self._info: AgentInfo | None = None
        self._view: View | None = None
        self._failing = False
        self._service: SnmpService | None = None
        self._previous_handler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.db_faults = RateLimitedLog(
            log, lambda n: f"database read failed {plural(n, 'time')}, "
                           "serving the last good view")
        self.loop_faults = RateLimitedLog(
            log, lambda n: f"caught {plural(n, 'unexpected error')} in the event loop")

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, build a first view, bind every endpoint, start answering.

        Raises AgentError (one line) when anything is wrong; nothing is left open then.
        """
        config = self.config
        check_listen(config.listen, config.allow_remote)
        self._loop = asyncio.get_running_loop()
        self._info = AgentInfo(
            started_at=time.time(), sys_descr=config.sys_descr, sys_object_id=config.sys_object_id,
            sys_contact=config.sys_contact, sys_name=config.sys_name,
            sys_location=config.sys_location)
        try:
            self._open_store(create=True)
            self._view = self._build_view()
        except (CountersError, sqlite3.Error, OSError, ValueError) as exc:
            self._close_store()
            raise AgentError(f"cannot serve {config.db}: {_one_line(exc)}") from None
        self._service = SnmpService(community=config.community, view_source=self.current_view)
        try:
            await self._service.start(config.listen)
        except BaseException as exc:
            self._service = None
            self._close_store()
            if isinstance(exc, ListenError):
                raise AgentError(str(exc)) from None
            raise
        self._previous_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._loop_exception)

    async def stop(self) -> None:
        """Stop answering, close the transports and the store. Safe to call twice."""
        if self._service is not None:
            self._service.close()
            self._service = None
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)
            self._loop = None
        self.db_faults.flush()
        self.loop_faults.flush()
        self._close_store()
        await asyncio.sleep(0)  # let the closed transports release their sockets

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The addresses actually bound (a port 0 in the config becomes the real port)."""
        return self._service.endpoints if self._service is not None else ()

    @property
    def service(self) -> SnmpService | None:
        return self._service

    @property
    def started_at(self) -> float | None:
        """Wall time of sysUpTime 0 (None before `start`)."""
        return self._info.started_at if self._info is not None else None

    def ready_line(self) -> str:
        where = ", ".join(str(e) for e in self.endpoints)
        return (f"serving {self.config.db} on {where} "
                f"(SNMPv1/v2c, community {self.config.community!r})")

    # --- the view requests are answered from ---------------------------------------------

    def current_view(self) -> View:
        """The view one request is answered from: today a fresh snapshot per request.

        This is the one place that decides it; a cached view rebuilt off the request path
        replaces only this method.
        """
        try:
            self._reopen_if_recreated()
            view = self._build_view()
        except Exception as exc:  # sqlite, the store, the view: keep serving regardless
            self._failing = True
            self.db_faults.note(_one_line(exc))
            assert self._view is not None
            return self._view
        if self._failing:
            self._failing = False
            log.warning("database %s readable again", self.config.db)
        self._view = view
        return view

    def _build_view(self) -> View:
        assert self._store is not None and self._info is not None
        snapshot: Snapshot = self._store.snapshot()
        return View.build(snapshot, self._info)

    # --- the store -----------------------------------------------------------------------

    def _open_store(self, *, create: bool) -> None:
        path = self.config.db
        store = self._store_factory(path, create=create)
        try:
            st = os.stat(path)
        except OSError:
            store.close()
            raise
        self._close_store()
        self._store = store
        self._identity = (st.st_dev, st.st_ino)

    def _reopen_if_recreated(self) -> None:
        """Reopen the database if its path now names another file (deleted and recreated)."""
        try:
            st = os.stat(self.config.db)
        except FileNotFoundError:
            # Deleted and not recreated: the open handle still reads the old file.
            return
        if (st.st_dev, st.st_ino) != self._identity:
            log.info("database %s was recreated; reopening it", self.config.db)
            self._open_store(create=False)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                log.warning("closing %s: %s", self.config.db, _one_line(exc))

    # --- the event loop's exception handler ----------------------------------------------

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One rate-limited line instead of asyncio's default traceback."""
        message = str(context.get("message", "error"))
        exc = context.get("exception")
        detail = f"{message}: {describe_exception(exc)}" if exc is not None else message
        self.loop_faults.note(detail)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
