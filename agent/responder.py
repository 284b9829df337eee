"""pysnmp glue: the engine, its UDP transports, communities and VACM, and the command
responders that answer from a `View`.

pysnmp stays the protocol engine (message decoding, community and later USM security, the
access control model, encoding). What it does not do well for a read-only agent is replaced
here, once, at this boundary:

- Reads are answered by our own Get/Next/Bulk responders straight from one `View` per PDU,
  with Net-SNMP's per-varbind exceptions (a GET with one unknown OID must not fail the whole
  request, notes gotcha 5) and with the response size capped before pysnmp encodes it (pysnmp
  would silently drop an oversized response).
- SET is answered `noAccess` by our own responder; pysnmp's SetCommandResponder is never
  registered (gotcha 1: its VACM check lets a read community write).
- Every datagram goes through `DatagramGuard`, so a malformed packet that makes pysnmp or
  pyasn1 raise is counted and logged as one rate-limited line, never a traceback (gotcha 6).
- Transports are bound on sockets we bind ourselves, so a busy port fails at start-up
  (gotcha 4: `open_server_mode` only schedules the bind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyasn1.type import namedtype, univ
from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as snmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413.cmdrsp import CommandResponderBase
from pysnmp.entity.rfc3413.context import SnmpContext
from pysnmp.proto import errind, rfc1901, rfc1902, rfc1905
from pysnmp.proto import error as proto_error
from pysnmp.proto.api import v2c

from agent.oids import APPLICATION, MTA, SYSTEM, Kind, Oid
from agent.view import Missing, Value, View

log = logging.getLogger("mailmib.agent")

#: What a request's varbinds and our answers look like at the pysnmp boundary:
#: (ObjectIdentifier or OID tuple, pyasn1 value). pysnmp is untyped.
VarBind = tuple[Any, Any]

# Error-status values (RFC 3416); pysnmp maps them to SNMPv1's (RFC 2576 §4.4) on the way out.
NO_ERROR = 0
TOO_BIG = 1
GEN_ERR = 5
NO_ACCESS = 6
AUTHORIZATION_ERROR = 16

#: Subtrees the read view grants: exactly what the MIB view serves.
SERVED_SUBTREES: tuple[Oid, ...] = (SYSTEM, APPLICATION, MTA)

#: One community maps to this security name; its group reads the served subtrees only.
COMMUNITY_INDEX = "mailmib-ro"
READ_GROUP = "mailmib-readers"
READ_VIEW = "mailmib-read"
#: The write and notify views: one entry excluding all of iso(1), so they match nothing. A view
#: name with no entries at all would be *allowed* by pysnmp 7.1.30's Vacm (gotcha 1).
EMPTY_VIEW = "mailmib-none"

#: Octets a Response-PDU needs around its varbind list: PDU tag and length, request-id,
#: error-status, error-index, the varbind list's own tag and length (all at their largest).
PDU_OVERHEAD = 32
#: pysnmp's room for a v1/v2c scoped PDU: the largest UDP payload less its header headroom.
V1V2C_MAX_SCOPED_PDU = 65507 - 128
#: The community length pysnmp's headroom already allows for.
COMMUNITY_HEADROOM = 64


def varbind_budget(max_scoped_pdu: int, community: bytes) -> int:
    """Octets a response's varbind list may take: the scoped PDU's room less the Response-PDU
    header and, conservatively, a community longer than pysnmp's headroom assumes. The fast
    path uses the same figure, so both paths cut and refuse at the same point."""
    return max_scoped_pdu - PDU_OVERHEAD - max(0, len(community) - COMMUNITY_HEADROOM)


# --- values ---------------------------------------------------------------------------------

_SYNTAX: dict[Kind, Callable[[Any], Any]] = {
    Kind.INTEGER: rfc1902.Integer32,
    Kind.OCTET_STRING: rfc1902.OctetString,
    Kind.OBJECT_IDENTIFIER: rfc1902.ObjectIdentifier,
    Kind.COUNTER32: rfc1902.Counter32,
    Kind.GAUGE32: rfc1902.Gauge32,
    Kind.TIMETICKS: rfc1902.TimeTicks,
}

_MISSING: dict[Missing, Any] = {
    Missing.NO_SUCH_OBJECT: rfc1905.noSuchObject,
    Missing.NO_SUCH_INSTANCE: rfc1905.noSuchInstance,
}


def to_syntax(value: Value) -> Any:
    """A view value as the pysnmp (SMIv2, rfc1902) object that encodes it."""
    return _SYNTAX[value.kind](value.value)


# --- BER sizes: what a varbind will cost on the wire, computed without encoding it ----------

def _length_octets(n: int) -> int:
    return 1 if n < 0x80 else 1 + (n.bit_length() + 7) // 8


def _tlv(content: int) -> int:
    return 1 + _length_octets(content) + content


def _integer_content(v: int) -> int:
    # pyasn1's encoder, not minimal BER: -128 takes two octets (ff 80), -2^31 five.
    return abs(v).bit_length() // 8 + 1


def _subid_octets(arc: int) -> int:
    return 1 if arc < 0x80 else (arc.bit_length() + 6) // 7


def _oid_content(oid: Oid) -> int:
    if len(oid) < 2:
        return 1
    return _subid_octets(oid[0] * 40 + oid[1]) + sum(_subid_octets(a) for a in oid[2:])


def varbind_size(oid: Oid, value: Value | None) -> int:
    """Encoded size of one VarBind; `None` is an exception value (noSuchObject, endOfMibView…)."""
    if value is None:
        value_size = 2
    elif value.kind is Kind.OCTET_STRING:
        assert isinstance(value.value, bytes)
        value_size = _tlv(len(value.value))
    elif value.kind is Kind.OBJECT_IDENTIFIER:
        assert isinstance(value.value, tuple)
        value_size = _tlv(_oid_content(value.value))
    else:
        assert isinstance(value.value, int)
        value_size = _tlv(_integer_content(value.value))
    return _tlv(_tlv(_oid_content(oid)) + value_size)


# --- rate-limited one-line logging ----------------------------------------------------------

class RateLimitedLog:
    """Counts an event and logs it at most once per `interval` seconds, as one line.

    The first event is logged at once; later ones are summed and logged when the interval has
    passed (a timer makes sure a burst's total is logged even if nothing follows it).
    """

    def __init__(self, logger: logging.Logger, summary: Callable[[int], str], *,
                 interval: float = 10.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._summary = summary
        self._interval = interval
        self._level = level
        self._clock = clock
        self._pending = 0
        self._total = 0
        self._last = ""
        self._emitted_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def total(self) -> int:
        """Events noted since this log was made."""
        return self._total

    def note(self, detail: str) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("%s (%s)", self._summary(1), detail)
        self._pending += 1
        self._total += 1
        self._last = detail
        now = self._clock()
        if self._emitted_at is None or now - self._emitted_at >= self._interval:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            delay = self._emitted_at + self._interval - now
            self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Log what is pending now (also called at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        now = self._clock()
        window = ""
        if self._emitted_at is not None:
            window = f" in the last {now - self._emitted_at:.0f} s"
        self._logger.log(self._level, "%s%s (last %s)", self._summary(self._pending), window,
                         self._last)
        self._pending = 0
        self._emitted_at = now


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_exception(exc: BaseException, limit: int = 120) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- endpoints --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Endpoint:
    """A UDP address to listen on; `host` is an IPv4 or IPv6 literal."""

    host: str
    port: int

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.host).version == 6

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


class ListenError(Exception):
    """A listen address could not be bound (one-line message)."""


# --- the receive path -----------------------------------------------------------------------

class DatagramGuard:
    """Runs pysnmp's receive path for one datagram and contains whatever goes wrong.

    pysnmp counts most bad input in snmpInASNParseErrs / snmpInBadVersions and drops it
    quietly, but some malformed messages raise TypeError/IndexError out of the receive path
    (gotcha 6). Both kinds are counted here as one rate-limited log line; requests with an
    unknown community (snmpInBadCommunityNames) get a line of their own.
    """

    def __init__(self, engine: Any) -> None:
        parse_errs, bad_versions, bad_communities = engine.get_mib_builder().import_symbols(
            "__SNMPv2-MIB", "snmpInASNParseErrs", "snmpInBadVersions",
            "snmpInBadCommunityNames")
        self._parse_errs: Any = parse_errs
        self._bad_versions: Any = bad_versions
        self._bad_communities: Any = bad_communities
        self.malformed = RateLimitedLog(log, lambda n: f"dropped {plural(n, 'malformed datagram')}")
        self.bad_community = RateLimitedLog(
            log, lambda n: f"ignored {plural(n, 'request')} with an unknown community")

    def _bad_input(self) -> int:
        return int(self._parse_errs.syntax) + int(self._bad_versions.syntax)

    #: The fast path (`agent.fastpath`): the response to a datagram it handles, else None.
    fast: Callable[[bytes], bytes | None] | None = None

    def receive(self, transport: Any, datagram: bytes, address: tuple[Any, ...]) -> None:
        if self.fast is not None:
            try:
                response = self.fast(datagram)
            except Exception as exc:  # a fast-path bug: log it, let pysnmp answer
                self.malformed.note(f"fast path failed on a datagram from "
                                    f"{_format_address(address)}: {describe_exception(exc)}")
                response = None
            if response is not None:
                transport.transport.sendto(response, address)
                return
        bad, communities = self._bad_input(), int(self._bad_communities.syntax)
        try:
            transport._callback_function(transport, address, datagram)
        except Exception as exc:  # any exception here is a bad datagram; never a traceback
            self.malformed.note(f"from {_format_address(address)}: {describe_exception(exc)}")
            return
        if self._bad_input() != bad:
            self.malformed.note(f"from {_format_address(address)}: not a decodable SNMP "
                                f"message ({len(datagram)} octets)")
        elif int(self._bad_communities.syntax) != communities:
            self.bad_community.note(f"from {_format_address(address)}")

    def flush(self) -> None:
        self.malformed.flush()
        self.bad_community.flush()


def _format_address(address: tuple[Any, ...]) -> str:
    try:
        host, port = address[0], address[1]
    except (IndexError, TypeError):
        return repr(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _GuardedUdp(udp.UdpAsyncioTransport):  # type: ignore[misc]
    """UDP/IPv4 transport whose datagrams go through a `DatagramGuard`, synchronously."""

    guard: DatagramGuard

    def datagram_received(self, datagram: bytes, transportAddress: tuple[Any, ...]) -> None:
        self.guard.receive(self, datagram, transportAddress)


class _GuardedUdp6(udp6.Udp6AsyncioTransport):  # type: ignore[misc]
    """UDP/IPv6 transport whose datagrams go through a `DatagramGuard`, synchronously."""

    guard: DatagramGuard

    def datagram_received(self, datagram: bytes, transportAddress: tuple[Any, ...]) -> None:
        self.guard.receive(self, datagram, transportAddress)


# --- access control -------------------------------------------------------------------------

class _Refused(Exception):
    """The whole request fails with `status` at 1-based `index` (RFC 3413 §3.2 step 5)."""

    def __init__(self, status: int, index: int) -> None:
        super().__init__(status, index)
        self.status = status
        self.index = index


@dataclass(frozen=True, slots=True)
class _Principal:
    """Who sent the request being answered, as VACM needs it, and the room for its answer."""

    engine: Any
    security_model: int
    security_name: Any
    security_level: int
    context_name: Any
    budget: int  # octets the encoded varbinds of the response may take

    def readable(self, oid: Oid, index: int) -> bool:
        """Whether VACM's read view holds `oid` (for the varbind at 0-based `index`)."""
        acm = self.engine.access_control_model[3]
        try:
            refused = acm.is_access_allowed(self.engine, self.security_model, self.security_name,
                                            self.security_level, "read", self.context_name, oid)
        except proto_error.StatusInformation as info:
            indication = info["errorIndication"]
            if indication == errind.notInView:
                return False
            if indication in (errind.noSuchView, errind.noAccessEntry, errind.noGroupName):
                raise _Refused(AUTHORIZATION_ERROR, index + 1) from None
            raise _Refused(GEN_ERR, index + 1) from None
        # pysnmp 7.1.30 *returns* notInView for a view with no entries (gotcha 1).
        return refused is None


# --- a GetBulkRequest-PDU spec that takes negative counts -------------------------------------

class _LenientGetBulkRequestPDU(rfc1905.GetBulkRequestPDU):  # type: ignore[misc]
    """GetBulkRequest-PDU with unconstrained non-repeaters and max-repetitions.

    pysnmp's spec constrains both to 0..2147483647, so a request with a negative count fails
    to decode and is dropped; RFC 3416 §4.2.3 computes N and M with max(…, 0), and Net-SNMP
    answers such requests treating the negative count as 0. `BulkResponder` clamps.
    """

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("request-id", rfc1902.Integer32()),
        namedtype.NamedType("non-repeaters", univ.Integer()),
        namedtype.NamedType("max-repetitions", univ.Integer()),
        namedtype.NamedType("variable-bindings", rfc1905.VarBindList()),
    )


class _LenientPDUs(rfc1905.PDUs):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(*(
        namedtype.NamedType(t.name, _LenientGetBulkRequestPDU())
        if t.name == "get-bulk-request" else t
        for t in rfc1905.PDUs.componentType.namedTypes))


class _LenientV2cMessage(rfc1901.Message):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(*(
        namedtype.NamedType(t.name, _LenientPDUs()) if t.name == "data" else t
        for t in rfc1901.Message.componentType.namedTypes))


def _accept_negative_bulk_counts(engine: Any) -> None:
    """Decode SNMPv2c messages with `_LenientV2cMessage` (SNMPv3's ScopedPDU: not yet)."""
    engine.message_processing_subsystems[1]._snmpMsgSpec = _LenientV2cMessage()


# --- the command responders -----------------------------------------------------------------

ViewSource = Callable[[], View]


class _ViewResponder(CommandResponderBase):  # type: ignore[misc]
    """Answers one kind of read PDU from one `View` taken once for the whole PDU.

    pysnmp calls `process_pdu` (which converts SNMPv1 to SNMPv2 and back, RFC 2576) and that
    calls `handle_management_operation`; subclasses only implement `answer`. Anything that
    goes wrong while answering becomes genErr plus one rate-limited log line.
    """

    def __init__(self, engine: Any, context: Any, view_source: ViewSource,
                 faults: RateLimitedLog, community: bytes) -> None:
        super().__init__(engine, context)
        self._view_source = view_source
        self._faults = faults
        self._community = community
        self._principal: _Principal | None = None
        self._answering = False

    def process_pdu(self, snmpEngine: Any, messageProcessingModel: Any, securityModel: Any,
                    securityName: Any, securityLevel: Any, contextEngineId: Any,
                    contextName: Any, pduVersion: Any, PDU: Any,
                    maxSizeResponseScopedPDU: Any, stateReference: Any) -> None:
        # The room pysnmp leaves for the scoped PDU (message size minus the security header;
        # for v1/v2c 65507 - 128) less the Response-PDU's own header and, conservatively, a
        # community longer than pysnmp's headroom assumes.
        budget = varbind_budget(int(maxSizeResponseScopedPDU), self._community)
        # process_pdu runs to completion synchronously, so one attribute carries the request.
        self._principal = _Principal(snmpEngine, int(securityModel), securityName,
                                     int(securityLevel), contextName, budget)
        self._answering = False
        try:
            super().process_pdu(snmpEngine, messageProcessingModel, securityModel,
                                securityName, securityLevel, contextEngineId, contextName,
                                pduVersion, PDU, maxSizeResponseScopedPDU, stateReference)
        except Exception as exc:
            self.release_state_information(stateReference)
            if not self._answering:
                # pysnmp could not even convert the request (e.g. an SNMPv1 PDU with a
                # negative error-index): a malformed datagram, for DatagramGuard to count.
                raise
            self._faults.note(describe_exception(exc))
        finally:
            self._principal = None

    def handle_management_operation(self, snmpEngine: Any, stateReference: Any,
                                    contextName: Any, PDU: Any) -> None:
        principal = self._principal
        assert principal is not None
        self._answering = True
        varbinds: list[VarBind] = list(v2c.apiPDU.get_varbinds(PDU))
        try:
            status, index, answer = self.answer(self._view_source(), PDU, varbinds, principal)
        except _Refused as refused:
            status, index, answer = refused.status, refused.index, varbinds
        except Exception as exc:
            self._faults.note(describe_exception(exc))
            status, index, answer = GEN_ERR, 1 if varbinds else 0, varbinds
        self.send_varbinds(snmpEngine, stateReference, status, index, answer)
        self.release_state_information(stateReference)

    def answer(self, view: View, pdu: Any, varbinds: list[VarBind],
               principal: _Principal) -> tuple[int, int, list[VarBind]]:
        raise NotImplementedError

    @staticmethod
    def next_readable(view: View, oid: Oid, principal: _Principal,
                      index: int) -> tuple[Oid, Value] | None:
        """The first instance after `oid` that the principal may read, or None at the end."""
        while True:
            step = view.get_next(oid)
            if step is None or principal.readable(step[0], index):
                return step
            oid = step[0]


class GetResponder(_ViewResponder):
    """GetRequest-PDU (RFC 3416 §4.2.1): per-varbind noSuchObject/noSuchInstance."""

    SUPPORTED_PDU_TYPES = (rfc1905.GetRequestPDU.tagSet,)

    def answer(self, view: View, pdu: Any, varbinds: list[VarBind],
               principal: _Principal) -> tuple[int, int, list[VarBind]]:
        answer: list[VarBind] = []
        size = 0
        for index, (name, _) in enumerate(varbinds):
            oid: Oid = tuple(name)
            got = view.get(oid) if principal.readable(oid, index) else Missing.NO_SUCH_OBJECT
            if isinstance(got, Missing):
                answer.append((name, _MISSING[got]))
                size += varbind_size(oid, None)
            else:
                answer.append((name, to_syntax(got)))
                size += varbind_size(oid, got)
            if size > principal.budget:
                return TOO_BIG, 0, []
        return NO_ERROR, 0, answer


class NextResponder(_ViewResponder):
    """GetNextRequest-PDU (RFC 3416 §4.2.2): endOfMibView per varbind at the end."""

    SUPPORTED_PDU_TYPES = (rfc1905.GetNextRequestPDU.tagSet,)

    def answer(self, view: View, pdu: Any, varbinds: list[VarBind],
               principal: _Principal) -> tuple[int, int, list[VarBind]]:
        answer: list[VarBind] = []
        size = 0
        for index, (name, _) in enumerate(varbinds):
            oid: Oid = tuple(name)
            step = self.next_readable(view, oid, principal, index)
            if step is None:
                answer.append((name, rfc1905.endOfMibView))
                size += varbind_size(oid, None)
            else:
                answer.append((step[0], to_syntax(step[1])))
                size += varbind_size(*step)
            if size > principal.budget:
                return TOO_BIG, 0, []
        return NO_ERROR, 0, answer


class BulkResponder(_ViewResponder):
    """GetBulkRequest-PDU (RFC 3416 §4.2.3).

    N non-repeaters get one successor each, then up to M rows of the R repeaters. Negative
    non-repeaters/max-repetitions count as 0. The list stops early once every repeater is at
    endOfMibView, and is cut (not answered tooBig) where the next varbind would not fit, as
    Net-SNMP does; only if not even the first varbind fits is the answer tooBig.
    """

    SUPPORTED_PDU_TYPES = (rfc1905.GetBulkRequestPDU.tagSet,)

    def answer(self, view: View, pdu: Any, varbinds: list[VarBind],
               principal: _Principal) -> tuple[int, int, list[VarBind]]:
        non_repeaters = max(int(v2c.apiBulkPDU.get_non_repeaters(pdu)), 0)
        max_repetitions = max(int(v2c.apiBulkPDU.get_max_repetitions(pdu)), 0)
        n = min(non_repeaters, len(varbinds))
        answer: list[VarBind] = []
        size = 0

        def add(name: Any, oid: Oid, value: Value | None) -> bool:
            nonlocal size
            cost = varbind_size(oid, value)
            if size + cost > principal.budget:
                return False
            size += cost
            answer.append((name, rfc1905.endOfMibView if value is None else to_syntax(value)))
            return True

        for index in range(n):
            name = varbinds[index][0]
            oid: Oid = tuple(name)
            step = self.next_readable(view, oid, principal, index)
            fits = add(name, oid, None) if step is None else add(step[0], *step)
            if not fits:
                return self._cut(answer)

        cursors: list[Oid] = [tuple(name) for name, _ in varbinds[n:]]
        ended = [False] * len(cursors)
        for _ in range(max_repetitions if cursors else 0):
            for j, oid in enumerate(cursors):
                step = None if ended[j] else self.next_readable(view, oid, principal, n + j)
                if step is None:
                    ended[j] = True
                    fits = add(oid, oid, None)
                else:
                    cursors[j] = step[0]
                    fits = add(step[0], *step)
                if not fits:
                    return self._cut(answer)
            if all(ended):
                break
        return NO_ERROR, 0, answer

    @staticmethod
    def _cut(answer: list[VarBind]) -> tuple[int, int, list[VarBind]]:
        return (NO_ERROR, 0, answer) if answer else (TOO_BIG, 0, [])


class RefusingSetResponder(CommandResponderBase):  # type: ignore[misc]
    """SetRequest-PDU: always noAccess at index 1, nothing changes.

    This is what Net-SNMP answers a read-only community; for SNMPv1 pysnmp's RFC 2576 mapping
    turns noAccess into noSuchName with the request's varbinds echoed.
    """

    SUPPORTED_PDU_TYPES = (rfc1905.SetRequestPDU.tagSet,)

    def handle_management_operation(self, snmpEngine: Any, stateReference: Any,
                                    contextName: Any, PDU: Any) -> None:
        varbinds = list(v2c.apiPDU.get_varbinds(PDU))
        self.send_varbinds(snmpEngine, stateReference, NO_ACCESS, 1 if varbinds else 0,
                           varbinds)
        self.release_state_information(stateReference)


# --- the service ----------------------------------------------------------------------------

class SnmpService:
    """One pysnmp engine serving views read-only over SNMPv1/v2c on some UDP endpoints.

    Build it inside the running event loop (pysnmp binds its dispatcher to the current loop).
    `start` binds every endpoint itself first, so a busy or unusable address is a
    `ListenError` before anything is served.
    """

    def __init__(self, *, community: str, view_source: ViewSource,
                 fast: Callable[[bytes], bytes | None] | None = None) -> None:
        self._community = community
        self._view_source = view_source
        self._fast = fast
        self._engine: Any = None
        self._guard: DatagramGuard | None = None
        self._responders: list[Any] = []
        self._transports: list[Any] = []
        self.faults = RateLimitedLog(
            log, lambda n: f"answered {plural(n, 'request')} genErr after an internal error")
        self.endpoints: tuple[Endpoint, ...] = ()

    @property
    def engine(self) -> Any:
        """The pysnmp SnmpEngine (for tests and for later SNMPv3 configuration)."""
        return self._engine

    async def start(self, endpoints: Sequence[Endpoint]) -> None:
        sockets = [_bind(endpoint) for endpoint in endpoints] if endpoints else []
        try:
            self._engine = engine = SnmpEngine()
            self._guard = DatagramGuard(engine)
            self._guard.fast = self._fast
            _accept_negative_bulk_counts(engine)
            self._configure_access(engine)
            context = SnmpContext(engine)
            for cls in (GetResponder, NextResponder, BulkResponder):
                self._responders.append(
                    cls(engine, context, self._view_source, self.faults,
                        self._community.encode()))
            self._responders.append(RefusingSetResponder(engine, context))
            bound = []
            for number, sock in enumerate(sockets, start=1):
                transport = _GuardedUdp6() if sock.family == socket.AF_INET6 else _GuardedUdp()
                transport.guard = self._guard
                domain = udp6.DOMAIN_NAME if sock.family == socket.AF_INET6 else udp.DOMAIN_NAME
                snmp_config.add_transport(engine, (*domain, number),
                                          transport.open_server_mode(sock=sock))
                self._transports.append(transport)
                await transport._lport  # the endpoint exists once this is done
                host, port = sock.getsockname()[:2]
                bound.append(Endpoint(host, port))
            self.endpoints = tuple(bound)
        except BaseException:
            for sock in sockets:
                sock.close()
            self.close()
            raise

    def _configure_access(self, engine: Any) -> None:
        """One community for SNMPv1 and v2c; VACM: read the served subtrees, write nothing."""
        snmp_config.add_v1_system(engine, COMMUNITY_INDEX, self._community)
        snmp_config.add_context(engine, b"")
        no_auth_no_priv = 1
        for security_model in (1, 2):
            snmp_config.add_vacm_group(engine, READ_GROUP, security_model, COMMUNITY_INDEX)
            snmp_config.add_vacm_access(engine, READ_GROUP, b"", security_model,
                                        no_auth_no_priv, "exact", READ_VIEW, EMPTY_VIEW,
                                        EMPTY_VIEW)
        for subtree in SERVED_SUBTREES:
            snmp_config.add_vacm_view(engine, READ_VIEW, "included", subtree, b"")
        snmp_config.add_vacm_view(engine, EMPTY_VIEW, "excluded", (1,), b"")

    def close(self) -> None:
        """Stop receiving, unregister the responders and close every transport."""
        engine, self._engine = self._engine, None
        if engine is not None:
            for responder in self._responders:
                responder.close(engine)
            if engine.transport_dispatcher is not None:
                engine.close_dispatcher()
        for transport in self._transports:
            transport.close_transport()
        self._responders.clear()
        self._transports.clear()
        if self._guard is not None:
            self._guard.flush()
        self.faults.flush()


def _bind(endpoint: Endpoint) -> socket.socket:
    """A non-blocking UDP socket bound to `endpoint`, or a one-line `ListenError`."""
    family = socket.AF_INET6 if endpoint.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {endpoint}: {reason}") from None
    return sock
