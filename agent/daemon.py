"""The agent's controller: one object that starts and stops the whole agent.

`Agent` is used the same way by `mailmib-agent` and by tests running the agent in-process
(aiosmtpd's Controller pattern): `await agent.start()`, poll it, `await agent.stop()`. It owns
the counter store, decides which `View` a request is answered from, and owns the pysnmp
service (`agent.responder`), the asyncio exception handler and the start-up checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.config import (
    DEFAULT_COMMUNITY,
    DEFAULT_LISTEN,
    DEFAULT_SYS_OBJECT_ID,
    VERSION,
    AgentConfig,
    Endpoint,
    default_sys_descr,
    source_address,
)
from agent.engine_state import EngineStateError, boot
from agent.fastpath import EncodedView, FastCommunity, FastPath
from agent.oids import AGENT_SCALARS
from agent.responder import (
    V1V2C_MAX_SCOPED_PDU,
    ListenError,
    RateLimitedLog,
    SnmpService,
    check_crypto,
    describe_exception,
    plural,
    varbind_budget,
)
from agent.view import AgentInfo, Raw, View
from counters.errors import CountersError
from counters.snapshot import Snapshot
from counters.store import Store

__all__ = ["DEFAULT_COMMUNITY", "DEFAULT_LISTEN", "DEFAULT_SYS_OBJECT_ID", "VERSION", "Agent",
           "AgentConfig", "AgentError", "check_listen", "default_sys_descr"]

log = logging.getLogger("mailmib.agent")


class AgentError(Exception):
    """The agent cannot start; the message is one line fit to show as it is."""


def check_listen(endpoints: tuple[Endpoint, ...], allow_remote: bool) -> None:
    """Loopback only unless remote access was asked for explicitly."""
    if not endpoints:
        raise AgentError("no address to listen on")
    for endpoint in endpoints:
        if not endpoint.loopback and not allow_remote:
            raise AgentError(f"refusing to listen on non-loopback address {endpoint} "
                             "without --allow-remote")


StoreFactory = Callable[..., Store]


class _Source:
    """One database served in one context: its store, the current view and its encoding."""

    def __init__(self, context: str, path: Path) -> None:
        self.context = context
        self.path = path
        self.store: Store | None = None
        self.identity: tuple[int, int] | None = None
        self.data_version: int | None = None
        self.view: View | None = None
        self.encoded: EncodedView | None = None
        self.failing = False
        where = f" of context {context!r}" if context else ""
        self.faults = RateLimitedLog(
            log, lambda n: f"database{where} read failed {plural(n, 'time')}, "
                           "serving the last good view")


class Agent:
    """Serves counters databases over SNMP until stopped: `config.db` in the default context
    and each of `config.contexts` in its own.

    For each database the agent keeps one current view, built from one snapshot, and answers
    every request from it: the fast path (`agent.fastpath`, SNMPv1/v2c reads) from its
    pre-encoded form, pysnmp (everything else) from the view itself; both serve the
    clock-driven cells at the request's own moment, and the agent's own statistics (snmp
    group, usmStats, snmpEngine) as pysnmp counts them at that moment. A refresher polls each
    database's data version every `poll_interval` seconds and, when another process has
    committed, builds the next view on the database thread and swaps it in whole, so no
    request waits for SQLite or for a rebuild. Rebuilds are paced to at most half the time (a
    rebuild of T seconds is followed by at least T seconds of rest).

    A recreated database file is noticed and reopened; a database that fails while serving
    leaves the last good view in service and is reported as one rate-limited log line.
    `clock` (wall time) is injectable so tests can freeze it. At each start the engine's boot
    count, kept beside the database (`agent.engine_state`), goes up by one.
    """

    poll_interval = 0.1

    def __init__(self, config: AgentConfig, *, store_factory: StoreFactory = Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._store_factory = store_factory
        self._clock = clock
        self._sources = {context: _Source(context, path) for context, path in config.databases}
        self._info: AgentInfo | None = None
        self._fast: FastPath | None = None
        self._service: SnmpService | None = None
        self._db_thread: ThreadPoolExecutor | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._previous_handler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.engine_id: bytes | None = None
        self.engine_boots: int | None = None
        self.rebuilds = 0
        self.loop_faults = RateLimitedLog(
            log, lambda n: f"caught {plural(n, 'unexpected error')} in the event loop")

    @property
    def db_faults(self) -> RateLimitedLog:
        """The default context's database fault log."""
        return self._sources[""].faults

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the databases, build first views, bind every endpoint, start answering.

        Raises AgentError (one line) when anything is wrong; nothing is left open then.
        """
        config = self.config
        check_listen(config.listen, config.allow_remote)
        if any(user.priv is not None for user in config.users):
            missing = check_crypto()
            if missing is not None:
                raise AgentError(missing)
        self._loop = loop = asyncio.get_running_loop()
        self._info = AgentInfo(
            started_at=self._clock(), sys_descr=config.sys_descr,
            sys_object_id=config.sys_object_id, sys_contact=config.sys_contact,
            sys_name=config.sys_name, sys_location=config.sys_location)
        # SQLite connections belong to the thread that made them: every store call runs here.
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailmib-db")
        for source in self._sources.values():
            try:
                await loop.run_in_executor(self._db_thread, self._open_store, source, True)
                self._install(source, *await loop.run_in_executor(self._db_thread, self._build,
                                                                  source))
            except (CountersError, sqlite3.Error, OSError, ValueError) as exc:
                await self._close_db_thread()
                raise AgentError(f"cannot serve {source.path}: {_one_line(exc)}") from None
        try:
            state = await loop.run_in_executor(self._db_thread, boot, config.engine_state_path,
                                               config.engine_id)
        except EngineStateError as exc:
            await self._close_db_thread()
            raise AgentError(f"engine state: {exc}") from None
        self.engine_id, self.engine_boots = state.engine_id, state.boots
        versions = config.community_versions
        if config.fast_path and versions:
            self._fast = FastPath(
                [FastCommunity(c.name.encode(), _allows(c.allows), c.context)
                 for c in config.communities],
                budget=lambda c: varbind_budget(V1V2C_MAX_SCOPED_PDU, c), versions=versions)
        self._service = SnmpService(config, views=self.current_view, engine_id=state.engine_id,
                                    boots=state.boots,
                                    fast=self.fast_answer if self._fast is not None else None)
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
        """Stop answering, close the transports and the stores. Safe to call twice."""
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
        for source in self._sources.values():
            source.faults.flush()
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
        databases = ", ".join([str(self.config.db)] + [
            f"{c.db} (context {c.name!r})" for c in self.config.contexts])
        return f"serving {databases} on {where} ({self.config.describe()})"

    # --- the views requests are answered from --------------------------------------------

    def current_view(self, context: str | None = "") -> View | None:
        """The view a pysnmp-path request in `context` is answered from, read at this moment;
        None for a context not served."""
        source = self._sources.get(context) if context is not None else None
        if source is None or source.view is None:
            return None
        return source.view.at(self._clock(), self._live_value)

    def fast_answer(self, datagram: bytes, address: tuple[Any, ...]) -> bytes | None:
        """The fast path's response to `datagram` from `address`, or None to let pysnmp
        answer it (or drop it: a community not allowed from that source, a version off)."""
        assert self._fast is not None
        accepted = self._fast.accept(datagram, str(address[0]))
        if accepted is None:
            return None
        encoded = self._sources[accepted.context].encoded
        if encoded is None:
            return None
        if self._service is not None:
            self._service.count_in_packet()  # before answering, as pysnmp counts on receipt
        return self._fast.respond(accepted, encoded, self._clock())

    def _live_value(self, name: str) -> Raw:
        return self._service.live_value(name) if self._service is not None else 0

    async def refresh(self) -> bool:
        """Build and swap in a new view of each database that changed since its last one;
        whether any did. The refresher calls this; tests may too, to skip the wait."""
        any_changed = False
        for source in self._sources.values():
            any_changed |= await self._refresh(source)
        return any_changed

    async def _refresh(self, source: _Source) -> bool:
        assert self._loop is not None and self._db_thread is not None
        try:
            changed = await self._loop.run_in_executor(self._db_thread, self._changed, source)
            if changed:
                self._install(source, *await self._loop.run_in_executor(
                    self._db_thread, self._build, source))
        except Exception as exc:  # sqlite, the store, the view: keep serving regardless
            source.failing = True
            source.faults.note(_one_line(exc))
            return False
        if changed and source.failing:  # only a view actually built again is a recovery
            source.failing = False
            log.warning("database %s readable again", source.path)
        return changed

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            began = time.monotonic()
            if await self.refresh():
                await asyncio.sleep(time.monotonic() - began)  # pacing: rest as long as it took

    def _install(self, source: _Source, view: View, encoded: EncodedView | None) -> None:
        source.view, source.encoded = view, encoded
        self.rebuilds += 1

    # --- on the database thread ----------------------------------------------------------

    def _changed(self, source: _Source) -> bool:
        """Whether the database was committed to (or replaced) since the current view."""
        if self._reopen_if_recreated(source):
            return True
        assert source.store is not None
        return source.store.data_version() != source.data_version

    def _build(self, source: _Source) -> tuple[View, EncodedView | None]:
        assert source.store is not None and self._info is not None
        # Read before the snapshot, so a commit after it shows as a change; kept only once the
        # build succeeded, so a failed one is tried again at the next poll.
        version = source.store.data_version()
        snapshot: Snapshot = source.store.snapshot(at=self._clock())
        view = View.build(snapshot, self._info, live=AGENT_SCALARS)
        encoded = (EncodedView(view, self._live_value, previous=source.encoded)
                   if self.config.fast_path else None)
        source.data_version = version
        return view, encoded

    def _open_store(self, source: _Source, create: bool) -> None:
        store = self._store_factory(source.path, create=create)
        try:
            st = os.stat(source.path)
        except OSError:
            store.close()
            raise
        self._close_store(source)
        source.store = store
        source.identity = (st.st_dev, st.st_ino)
        source.data_version = None

    def _reopen_if_recreated(self, source: _Source) -> bool:
        """Reopen the database if its path now names another file (deleted and recreated)."""
        try:
            st = os.stat(source.path)
        except FileNotFoundError:
            # Deleted and not recreated: the open handle still reads the old file.
            return False
        if (st.st_dev, st.st_ino) != source.identity:
            log.info("database %s was recreated; reopening it", source.path)
            self._open_store(source, create=False)
            return True
        return False

    def _close_store(self, source: _Source) -> None:
        store, source.store = source.store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                log.warning("closing %s: %s", source.path, _one_line(exc))

    def _close_all_stores(self) -> None:
        for source in self._sources.values():
            self._close_store(source)

    async def _close_db_thread(self) -> None:
        pool, self._db_thread = self._db_thread, None
        if pool is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, self._close_all_stores)
        pool.shutdown(wait=True)

    # --- the event loop's exception handler ----------------------------------------------

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One rate-limited line instead of asyncio's default traceback."""
        message = str(context.get("message", "error"))
        exc = context.get("exception")
        detail = f"{message}: {describe_exception(exc)}" if exc is not None else message
        self.loop_faults.note(detail)


def _allows(check: Callable[[Any], bool]) -> Callable[[str], bool]:
    """A community's source check on a host string, as the fast path asks it."""
    return lambda host: check(source_address(host))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
