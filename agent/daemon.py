"""The agent's controller: one object that starts and stops the whole agent.

`Agent` is used the same way by `mailmib-agent` and by tests running the agent in-process
(aiosmtpd's Controller pattern): `await agent.start()`, poll it, `await agent.stop()`. It owns
the counter store, decides which `View` a request is answered from, and owns the pysnmp
service (`agent.responder`), the asyncio exception handler and the start-up checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import platform
import socket
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.fastpath import EncodedView, FastPath
from agent.oids import MTA, Oid
from agent.responder import (
    V1V2C_MAX_SCOPED_PDU,
    Endpoint,
    ListenError,
    RateLimitedLog,
    SnmpService,
    describe_exception,
    plural,
    varbind_budget,
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
    fast_path: bool = True


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

    The agent keeps one current view, built from one snapshot, and answers every request from
    it: the fast path (`agent.fastpath`, SNMPv1/v2c reads) from its pre-encoded form, pysnmp
    (everything else) from the view itself; both serve the clock-driven cells at the request's
    own moment. A refresher polls the database's data version every `poll_interval` seconds
    and, when another process has committed, builds the next view on the database thread and
    swaps it in whole, so no request waits for SQLite or for a rebuild. Rebuilds are paced to
    at most half the time (a rebuild of T seconds is followed by at least T seconds of rest).

    A recreated database file is noticed and reopened; a database that fails while serving
    leaves the last good view in service and is reported as one rate-limited log line.
    `clock` (wall time) is injectable so tests can freeze it.
    """

    poll_interval = 0.1

    def __init__(self, config: AgentConfig, *, store_factory: StoreFactory = Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._store_factory = store_factory
        self._clock = clock
        self._store: Store | None = None
        self._identity: tuple[int, int] | None = None
        self._data_version: int | None = None
        self._info: AgentInfo | None = None
        self._view: View | None = None
        self._encoded: EncodedView | None = None
        self._fast: FastPath | None = None
        self._failing = False
        self._service: SnmpService | None = None
        self._db_thread: ThreadPoolExecutor | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._previous_handler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rebuilds = 0
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
        self._loop = loop = asyncio.get_running_loop()
        self._info = AgentInfo(
            started_at=self._clock(), sys_descr=config.sys_descr,
            sys_object_id=config.sys_object_id, sys_contact=config.sys_contact,
            sys_name=config.sys_name, sys_location=config.sys_location)
        # SQLite connections belong to the thread that made them: every store call runs here.
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmib-db")
        try:
            await loop.run_in_executor(self._db_thread, self._open_store, True)
            self._install(*await loop.run_in_executor(self._db_thread, self._build))
        except (CountersError, sqlite3.Error, OSError, ValueError) as exc:
            await self._close_db_thread()
            raise AgentError(f"cannot serve {config.db}: {_one_line(exc)}") from None
        community = config.community.encode()
        if config.fast_path:
            self._fast = FastPath([community], budget=lambda c: varbind_budget(
                V1V2C_MAX_SCOPED_PDU, c))
        self._service = SnmpService(community=config.community, view_source=self.current_view,
                                    fast=self.fast_answer if config.fast_path else None)
        try:
            await self._service.start(config.listen)
        except BaseException as exc:
            self._service = None
            await self._close_db_thread()
            if isinstance(exc, ListenError):
                raise AgentError(str(exc)) from None
            raise
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        """Stop answering, close the transports and the store. Safe to call twice."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._service is not None:
            self._service.close()
            self._service = None
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)
            self._loop = None
        self.db_faults.flush()
        self.loop_faults.flush()
        await self._close_db_thread()
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
        """The view a pysnmp-path request is answered from, read at this moment."""
        assert self._view is not None
        return self._view.at(self._clock())

    def fast_answer(self, datagram: bytes) -> bytes | None:
        """The fast path's response to `datagram`, or None to let pysnmp answer it."""
        assert self._fast is not None and self._encoded is not None
        return self._fast.answer(datagram, self._encoded, self._clock())

    async def refresh(self) -> bool:
        """Build and swap in a new view if the database changed since the last one; whether
        it did. The refresher calls this; tests may too, to skip the wait."""
        assert self._loop is not None and self._db_thread is not None
        try:
            changed = await self._loop.run_in_executor(self._db_thread, self._changed)
            if changed:
                self._install(*await self._loop.run_in_executor(self._db_thread, self._build))
        except Exception as exc:  # sqlite, the store, the view: keep serving regardless
            self._failing = True
            self.db_faults.note(_one_line(exc))
            return False
        if self._failing:
            self._failing = False
            log.warning("database %s readable again", self.config.db)
        return changed

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            began = time.monotonic()
            if await self.refresh():
                await asyncio.sleep(time.monotonic() - began)  # pacing: rest as long as it took

    def _install(self, view: View, encoded: EncodedView | None) -> None:
        self._view, self._encoded = view, encoded
        self.rebuilds += 1

    # --- on the database thread ----------------------------------------------------------

    def _changed(self) -> bool:
        """Whether the database was committed to (or replaced) since the current view."""
        if self._reopen_if_recreated():
            return True
        assert self._store is not None
        return self._store.data_version() != self._data_version

    def _build(self) -> tuple[View, EncodedView | None]:
        assert self._store is not None and self._info is not None
        self._data_version = self._store.data_version()  # before: a later commit shows again
        snapshot: Snapshot = self._store.snapshot(at=self._clock())
        view = View.build(snapshot, self._info)
        return view, EncodedView(view) if self.config.fast_path else None

    def _open_store(self, create: bool) -> None:
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
        self._data_version = None

    def _reopen_if_recreated(self) -> bool:
        """Reopen the database if its path now names another file (deleted and recreated)."""
        try:
            st = os.stat(self.config.db)
        except FileNotFoundError:
            # Deleted and not recreated: the open handle still reads the old file.
            return False
        if (st.st_dev, st.st_ino) != self._identity:
            log.info("database %s was recreated; reopening it", self.config.db)
            self._open_store(create=False)
            return True
        return False

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                log.warning("closing %s: %s", self.config.db, _one_line(exc))

    async def _close_db_thread(self) -> None:
        pool, self._db_thread = self._db_thread, None
        if pool is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, self._close_store)
        pool.shutdown(wait=True)

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
