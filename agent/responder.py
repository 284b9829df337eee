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
- Access: each community is accepted only from its source networks (a pysnmp observer hook
  turns a disallowed use into an unknown community, so pysnmp drops it and counts it in
  snmpInBadCommunityNames, RFC 3418's "additional checks"); SNMPv3 users are pysnmp's USM with
  a fixed engine ID and the engineBoots the daemon keeps (`agent.engine_state`); VACM gives
  every principal the read view of the served subtrees in every context, and nothing to write.
- The SNMP entity's own statistics (snmp group, usmStats …) are read from pysnmp's counters by
  `EngineCounters`, which the views serve as live cells.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
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
from pysnmp.proto.mpmod import rfc3412 as mpmod_v3

from agent.config import (
    AgentConfig,
    AuthProtocol,
    Endpoint,
    PrivProtocol,
    User,
    source_address,
)
from agent.fastpath import read_header
from agent.oids import AGENT_SCALARS, AGENT_SUBTREES, APPLICATION, MTA, SYSTEM, Kind, Oid
from agent.view import Missing, Raw, Value, View, counter32

__all__ = ["Endpoint", "ListenError", "SnmpService"]

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
SERVED_SUBTREES: tuple[Oid, ...] = (SYSTEM, APPLICATION, MTA, *AGENT_SUBTREES)

#: The first community maps to this security name (community index), the others to
#: `mailmib-ro-2`, `mailmib-ro-3` …; their group reads the served subtrees only.
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


#: The largest UDP payload over IPv4: the most the engine ever sends.
MAX_DATAGRAM = 65507
#: pysnmp's allowance for the SNMPv3 message header around the scoped PDU (USM 3.2.9).
V3_HEADER = 48
#: The most USM security parameters take: engine ID (32) and user name (32), boots, time,
#: the longest authentication parameters (HMAC-SHA-512: 48) and the salt, with their TLVs.
V3_SECURITY_PARAMETERS = 160
#: A scoped PDU's own header: SEQUENCE, contextEngineID (≤ 32) and contextName (≤ 32).
SCOPED_PDU_HEADER = 4 + 34 + 34
#: Slack for the response's security parameters being a little longer than the request's
#: (engine time and boots may take an octet more each).
V3_SLACK = 8


def v3_varbind_budget(max_scoped_pdu: int) -> int:
    """Octets an SNMPv3 response's varbind list may take. `max_scoped_pdu` is what USM derives
    from the request's msgMaxSize (RFC 3414 §3.2.9); the engine never sends more than one UDP
    datagram either. pysnmp drops (and counts in snmpSilentDrops) a response over the limit,
    so the room is reckoned conservatively."""
    room = min(max_scoped_pdu, MAX_DATAGRAM - V3_HEADER - V3_SECURITY_PARAMETERS)
    return room - PDU_OVERHEAD - SCOPED_PDU_HEADER - V3_SLACK


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

class ListenError(Exception):
    """A listen address could not be bound (one-line message)."""


# --- the engine's own statistics ------------------------------------------------------------

#: pysnmp module holding the instance of each of `agent.oids.AGENT_SCALARS`.
_INSTANCE_MODULES = {
    "SNMPv2-MIB": "__SNMPv2-MIB",
    "SNMP-FRAMEWORK-MIB": "__SNMP-FRAMEWORK-MIB",
    "SNMP-MPD-MIB": "__SNMP-MPD-MIB",
    "SNMP-TARGET-MIB": "__SNMP-TARGET-MIB",
    "SNMP-USER-BASED-SM-MIB": "__SNMP-USER-BASED-SM-MIB",
}

#: USM counters that mean someone failed to authenticate (logged, rate-limited); the others
#: (unknown engine ID, not in time window) are the normal discovery steps of every client.
AUTH_FAILURES = ("usmStatsWrongDigests", "usmStatsDecryptionErrors", "usmStatsUnknownUserNames",
                 "usmStatsUnsupportedSecLevels")


class EngineCounters:
    """The SNMP entity's own statistics, read from (and for the fast path, counted into)
    pysnmp's instances, so that both paths serve one set of numbers.

    `value(name)` is what a view's live cell serves: Counter32 values wrapped, the engine's
    time in seconds since it started, snmpEnableAuthenTraps always disabled(2) (the agent
    sends no notifications)."""

    def __init__(self, engine: Any) -> None:
        builder = engine.get_mib_builder()
        self._instances: dict[str, Any] = {}
        self._kinds: dict[str, Kind] = {}
        for column in AGENT_SCALARS:
            (instance,) = builder.import_symbols(_INSTANCE_MODULES[column.module], column.name)
            self._instances[column.name] = instance
            self._kinds[column.name] = column.kind
        enable = self._instances["snmpEnableAuthenTraps"]
        enable.syntax = enable.syntax.clone(2)
        #: What the fast path counted, kept as plain ints (a pyasn1 clone per request costs
        #: a fifth of a fast-path GET) and added to pysnmp's own counts when read.
        self._extra: dict[str, int] = {}

    def value(self, name: str) -> Raw:
        instance = self._instances[name]
        if name == "snmpEngineTime":
            return int(instance.syntax.clone())  # pysnmp: clone() is the time since start
        if self._kinds[name] is Kind.OCTET_STRING:
            return bytes(instance.syntax.asOctets())
        value = int(instance.syntax) + self._extra.get(name, 0)
        return counter32(value) if self._kinds[name] is Kind.COUNTER32 else value

    def count(self, name: str) -> None:
        """One more of counter `name` (for what the fast path handles itself)."""
        self._extra[name] = self._extra.get(name, 0) + 1

    def snapshot(self, names: Sequence[str]) -> tuple[int, ...]:
        return tuple(int(self._instances[n].syntax) + self._extra.get(n, 0) for n in names)


# --- the receive path -----------------------------------------------------------------------

UNKNOWN_COMMUNITY = "unknown community"
REFUSED_SOURCE = "community not allowed from that source"


class CommunityScreen:
    """Decides from a v1/v2c message's first octets alone whether its community may be used at
    all: pysnmp would drop an unknown community, or one used from a source it is not allowed
    from, only after decoding every varbind — a few large datagrams a second could keep the
    agent busy. Messages of a version not served, and anything unusual, are left to pysnmp."""

    def __init__(self, config: AgentConfig) -> None:
        self._versions = frozenset(config.community_versions)
        self._allows = {c.name.encode(): c.allows for c in config.communities}

    def __call__(self, datagram: bytes, address: tuple[Any, ...]) -> str | None:
        header = read_header(datagram)
        if header is None or header[0] not in self._versions:
            return None
        allows = self._allows.get(header[1])
        if allows is None:
            return UNKNOWN_COMMUNITY
        if not allows(source_address(str(address[0]))):
            return REFUSED_SOURCE
        return None


#: The fast path: the response to a datagram from an address, or None to let pysnmp have it.
FastAnswer = Callable[[bytes, tuple[Any, ...]], bytes | None]


class DatagramGuard:
    """Runs pysnmp's receive path for one datagram and contains whatever goes wrong.

    pysnmp counts most bad input in snmpInASNParseErrs / snmpInBadVersions and drops it
    quietly, but some malformed messages raise TypeError/IndexError out of the receive path
    (gotcha 6). Both kinds are counted here as one rate-limited log line. Requests pysnmp
    refuses for who sent them get rate-limited lines of their own, with the source address:
    an unknown community, a community used from a source it is not allowed from, and a failed
    SNMPv3 authentication (wrong digest, decryption error, unknown user, wrong security level).
    """

    def __init__(self, engine: Any, counters: EngineCounters) -> None:
        self._counters = counters
        self.malformed = RateLimitedLog(log, lambda n: f"dropped {plural(n, 'malformed datagram')}")
        self.bad_community = RateLimitedLog(
            log, lambda n: f"ignored {plural(n, 'request')} with an unknown community")
        self.refused_source = RateLimitedLog(
            log, lambda n: f"refused {plural(n, 'request')} with a community not allowed "
                           "from its source")
        self.auth_failure = RateLimitedLog(
            log, lambda n: f"refused {plural(n, 'SNMPv3 request')} that failed authentication")
        #: Set by the source check when it refuses the datagram being received.
        self.source_refused = False

    def _bad_input(self) -> int:
        parse_errs, bad_versions = self._counters.snapshot(
            ("snmpInASNParseErrs", "snmpInBadVersions"))
        return parse_errs + bad_versions

    #: The fast path (`agent.fastpath`), or None when it is off.
    fast: FastAnswer | None = None
    #: Drops v1/v2c messages whose community is unknown or not allowed from their source
    #: before pysnmp decodes them (`CommunityScreen`).
    screen: Callable[[bytes, tuple[Any, ...]], str | None] | None = None

    def receive(self, transport: Any, datagram: bytes, address: tuple[Any, ...]) -> None:
        if self.fast is not None:
            try:
                response = self.fast(datagram, address)
            except Exception as exc:  # a fast-path bug: log it, let pysnmp answer
                self.malformed.note(f"fast path failed on a datagram from "
                                    f"{_format_address(address)}: {describe_exception(exc)}")
                response = None
            if response is not None:
                transport.transport.sendto(response, address)
                return
        if self.screen is not None:
            refused = self.screen(datagram, address)
            if refused is not None:  # dropped and counted as pysnmp would, without decoding
                self._counters.count("snmpInPkts")
                self._counters.count("snmpInBadCommunityNames")
                log_line = self.refused_source if refused == REFUSED_SOURCE else self.bad_community
                log_line.note(f"from {_format_address(address)}")
                return
        bad = self._bad_input()
        (communities,) = self._counters.snapshot(("snmpInBadCommunityNames",))
        failures = self._counters.snapshot(AUTH_FAILURES)
        self.source_refused = False
        try:
            transport._callback_function(transport, address, datagram)
        except Exception as exc:  # any exception here is a bad datagram; never a traceback
            self.malformed.note(f"from {_format_address(address)}: {describe_exception(exc)}")
            return
        if self._bad_input() != bad:
            self.malformed.note(f"from {_format_address(address)}: not a decodable SNMP "
                                f"message of a version served ({len(datagram)} octets)")
        elif self._counters.snapshot(("snmpInBadCommunityNames",)) != (communities,):
            if self.source_refused:
                self.refused_source.note(f"from {_format_address(address)}")
            else:
                self.bad_community.note(f"from {_format_address(address)}")
        else:
            after = self._counters.snapshot(AUTH_FAILURES)
            if after != failures:
                what = next(name for name, a, b in zip(AUTH_FAILURES, failures, after,
                                                         strict=True) if a != b)
                self.auth_failure.note(f"{_AUTH_FAILURE_TEXT[what]} from "
                                       f"{_format_address(address)}")

    def flush(self) -> None:
        for limited in (self.malformed, self.bad_community, self.refused_source,
                        self.auth_failure):
            limited.flush()


_AUTH_FAILURE_TEXT = {
    "usmStatsWrongDigests": "wrong digest",
    "usmStatsDecryptionErrors": "decryption error",
    "usmStatsUnknownUserNames": "unknown user",
    "usmStatsUnsupportedSecLevels": "security level not allowed for the user",
}


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


def _with_component(base: Any, name: str, component: Any) -> Any:
    """`base`'s components, with the one called `name` replaced by `component`."""
    return namedtype.NamedTypes(*(
        namedtype.NamedType(t.name, component) if t.name == name else t
        for t in base.componentType.namedTypes))


class _LenientPDUs(rfc1905.PDUs):  # type: ignore[misc]
    componentType = _with_component(rfc1905.PDUs, "get-bulk-request",
                                    _LenientGetBulkRequestPDU())


class _LenientV2cMessage(rfc1901.Message):  # type: ignore[misc]
    componentType = _with_component(rfc1901.Message, "data", _LenientPDUs())


class _LenientScopedPDU(mpmod_v3.ScopedPDU):  # type: ignore[misc]
    componentType = _with_component(mpmod_v3.ScopedPDU, "data", _LenientPDUs())


class _LenientScopedPduData(mpmod_v3.ScopedPduData):  # type: ignore[misc]
    componentType = _with_component(mpmod_v3.ScopedPduData, "plaintext", _LenientScopedPDU())


class _LenientV3Message(mpmod_v3.SNMPv3Message):  # type: ignore[misc]
    componentType = _with_component(mpmod_v3.SNMPv3Message, "msgData", _LenientScopedPduData())


def _accept_negative_bulk_counts(engine: Any) -> None:
    """Decode SNMPv2c messages with `_LenientV2cMessage` and SNMPv3 ones with
    `_LenientV3Message` (whose scoped PDU, plain or decrypted, is read with the lenient
    GetBulkRequest-PDU: USM decrypts into the message spec's plaintext type)."""
    subsystems = engine.message_processing_subsystems
    if 1 in subsystems:
        subsystems[1]._snmpMsgSpec = _LenientV2cMessage()
    if 3 in subsystems:
        subsystems[3]._snmpMsgSpec = _LenientV3Message()


# --- the command responders -----------------------------------------------------------------

#: The view of a context (by name), taken once per PDU; None for a context not served.
ViewSource = Callable[[str | None], View | None]


class _ViewResponder(CommandResponderBase):  # type: ignore[misc]
    """Answers one kind of read PDU from one `View` taken once for the whole PDU.

    pysnmp calls `process_pdu` (which converts SNMPv1 to SNMPv2 and back, RFC 2576) and that
    calls `handle_management_operation`; subclasses only implement `answer`. Anything that
    goes wrong while answering becomes genErr plus one rate-limited log line. The view is
    the one of the request's context (a community's, or the one an SNMPv3 request names).
    """

    def __init__(self, engine: Any, context: Any, views: ViewSource,
                 faults: RateLimitedLog, communities: Mapping[str, bytes]) -> None:
        super().__init__(engine, context)
        self._views = views
        self._faults = faults
        self._communities = communities
        self._principal: _Principal | None = None
        self._answering = False

    def budget(self, security_model: int, security_name: Any, max_scoped_pdu: int) -> int:
        """The room for the response's varbinds: for v1/v2c what pysnmp leaves for the scoped
        PDU (65507 - 128) less the Response-PDU's header and, conservatively, a community
        longer than pysnmp's headroom assumes; for v3 see `v3_varbind_budget`."""
        if security_model == 3:
            return v3_varbind_budget(max_scoped_pdu)
        return varbind_budget(max_scoped_pdu, self._communities.get(str(security_name), b""))

    def process_pdu(self, snmpEngine: Any, messageProcessingModel: Any, securityModel: Any,
                    securityName: Any, securityLevel: Any, contextEngineId: Any,
                    contextName: Any, pduVersion: Any, PDU: Any,
                    maxSizeResponseScopedPDU: Any, stateReference: Any) -> None:
        budget = self.budget(int(securityModel), securityName, int(maxSizeResponseScopedPDU))
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
        view = self._views(_context_text(contextName))
        if view is None:
            self._report_unknown_context(snmpEngine, stateReference)
            self.release_state_information(stateReference)
            return
        try:
            status, index, answer = self.answer(view, PDU, varbinds, principal)
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

    def _report_unknown_context(self, engine: Any, state_reference: Any) -> None:
        """RFC 3413 §3.2 step 4: count snmpUnknownContexts and send a Report-PDU of it.

        pysnmp's own path for this (an SmiError carrying `oid`) hands the message processing
        model the Response-PDU, which it then refuses to report on (RFC 3412 §7.1.3b wants a
        confirmed-class PDU) and the Report is silently dropped; with no PDU at all it builds
        the Report as it should (request-id 0; managers match it by msgID)."""
        (unknown,) = engine.get_mib_builder().import_symbols("__SNMP-TARGET-MIB",
                                                             "snmpUnknownContexts")
        unknown.syntax = unknown.syntax.clone(counter32(int(unknown.syntax) + 1))
        pending = self._CommandResponderBase__pendingReqs.get(state_reference)
        if pending is None:
            return
        (model, security_model, security_name, security_level, context_engine_id,
         context_name, pdu_version, _, _, max_size, _) = pending
        if int(model) != 3:
            return  # SNMPv1/v2c have no Reports; their communities name served contexts
        status = {"oid": unknown.name, "val": unknown.syntax, "securityLevel": security_level}
        try:
            engine.message_dispatcher.return_response_pdu(
                engine, model, security_model, security_name, security_level,
                context_engine_id, context_name, pdu_version, None, max_size, state_reference,
                status)
        except proto_error.StatusInformation:
            (drops,) = engine.get_mib_builder().import_symbols("__SNMPv2-MIB", "snmpSilentDrops")
            drops.syntax = drops.syntax.clone(counter32(int(drops.syntax) + 1))

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


def _context_text(name: Any) -> str | None:
    try:
        return bytes(name).decode("utf-8")
    except (UnicodeDecodeError, TypeError, ValueError):
        return None


class RefusingSetResponder(CommandResponderBase):  # type: ignore[misc]
    """SetRequest-PDU: always noAccess at index 1, nothing changes.

    This is what Net-SNMP answers a read-only community (and counts in
    snmpInBadCommunityUses, RFC 3418: "an SNMP operation that was not allowed for the SNMP
    community"); for SNMPv1 pysnmp's RFC 2576 mapping turns noAccess into noSuchName with the
    request's varbinds echoed. SNMPv3 users get noAccess as well.
    """

    SUPPORTED_PDU_TYPES = (rfc1905.SetRequestPDU.tagSet,)

    def __init__(self, engine: Any, context: Any, counters: EngineCounters) -> None:
        super().__init__(engine, context)
        self._counters = counters

    def process_pdu(self, snmpEngine: Any, messageProcessingModel: Any, securityModel: Any,
                    *args: Any) -> None:
        if int(securityModel) in (1, 2):
            self._counters.count("snmpInBadCommunityUses")
        super().process_pdu(snmpEngine, messageProcessingModel, securityModel, *args)

    def handle_management_operation(self, snmpEngine: Any, stateReference: Any,
                                    contextName: Any, PDU: Any) -> None:
        varbinds = list(v2c.apiPDU.get_varbinds(PDU))
        self.send_varbinds(snmpEngine, stateReference, NO_ACCESS, 1 if varbinds else 0,
                           varbinds)
        self.release_state_information(stateReference)


# --- the service ----------------------------------------------------------------------------

_AUTH_PROTOCOLS: dict[AuthProtocol, Any] = {
    AuthProtocol.SHA: snmp_config.USM_AUTH_HMAC96_SHA,
    AuthProtocol.SHA224: snmp_config.USM_AUTH_HMAC128_SHA224,
    AuthProtocol.SHA256: snmp_config.USM_AUTH_HMAC192_SHA256,
    AuthProtocol.SHA384: snmp_config.USM_AUTH_HMAC256_SHA384,
    AuthProtocol.SHA512: snmp_config.USM_AUTH_HMAC384_SHA512,
}
#: AES-192/256 with Blumenthal key extension: what Net-SNMP's AES-192/AES-256 interoperate
#: with (pysnmp's other variant, Reeder's, does not for SHA-1 and SHA-224).
_PRIV_PROTOCOLS: dict[PrivProtocol, Any] = {
    PrivProtocol.AES128: snmp_config.USM_PRIV_CFB128_AES,
    PrivProtocol.AES192: snmp_config.USM_PRIV_CFB192_AES_BLUMENTHAL,
    PrivProtocol.AES256: snmp_config.USM_PRIV_CFB256_AES_BLUMENTHAL,
}
_SOURCE_CHECK = "rfc2576.processIncomingMsg:writable"
#: What a refused community is replaced by: no community can be named this (names are
#: printable), so pysnmp's lookup fails, drops the request and counts it.
_REFUSED = b"\x00refused"


def community_security_name(index: int) -> str:
    return COMMUNITY_INDEX if index == 0 else f"{COMMUNITY_INDEX}-{index + 1}"


def check_crypto() -> str | None:
    """Why SNMPv3 privacy cannot work here (gotcha 2: pysnmp needs `cryptography` and does not
    install it), or None."""
    try:
        import cryptography.hazmat.primitives.ciphers  # noqa: F401
    except ImportError:
        return "SNMPv3 privacy needs the Python package 'cryptography' (pip install cryptography)"
    return None


class SnmpService:
    """One pysnmp engine serving views read-only on some UDP endpoints.

    Build it inside the running event loop (pysnmp binds its dispatcher to the current loop).
    `start` binds every endpoint itself first, so a busy or unusable address is a
    `ListenError` before anything is served. `views(context)` gives the view to answer a
    request in `context` from (None: no such context); `fast`, if given, sees each datagram
    first. The engine runs with `engine_id` and `boots` (see `agent.engine_state`).
    """

    def __init__(self, config: AgentConfig, *, views: ViewSource, engine_id: bytes,
                 boots: int, fast: FastAnswer | None = None) -> None:
        self._config = config
        self._views = views
        self._fast = fast
        self._engine_id = engine_id
        self._boots = boots
        self._engine: Any = None
        self._guard: DatagramGuard | None = None
        self.counters: EngineCounters | None = None
        self._responders: list[Any] = []
        self._transports: list[Any] = []
        self._communities = {community_security_name(i): c
                             for i, c in enumerate(config.communities)}
        self.faults = RateLimitedLog(
            log, lambda n: f"answered {plural(n, 'request')} genErr after an internal error")
        self.endpoints: tuple[Endpoint, ...] = ()

    @property
    def engine(self) -> Any:
        """The pysnmp SnmpEngine (for tests)."""
        return self._engine

    @property
    def guard(self) -> DatagramGuard | None:
        return self._guard

    async def start(self, endpoints: Sequence[Endpoint]) -> None:
        sockets = [_bind(endpoint) for endpoint in endpoints] if endpoints else []
        try:
            self._engine = engine = SnmpEngine()
            self._set_identity(engine)
            self.counters = counters = EngineCounters(engine)
            self._guard = DatagramGuard(engine, counters)
            self._guard.fast = self._fast
            self._guard.screen = CommunityScreen(self._config)
            self._select_versions(engine)
            _accept_negative_bulk_counts(engine)
            self._configure_access(engine)
            context = SnmpContext(engine)
            names = {name: c.name.encode() for name, c in self._communities.items()}
            for cls in (GetResponder, NextResponder, BulkResponder):
                self._responders.append(cls(engine, context, self._views, self.faults, names))
            self._responders.append(RefusingSetResponder(engine, context, counters))
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

    def _set_identity(self, engine: Any) -> None:
        """The fixed engine ID and the kept boot count, set before anything reads them (user
        keys are localized to the ID, the responders register under it). Not through
        SnmpEngine(snmpEngineID=…), which would also keep a boot counter of its own in a
        world-writable temporary directory."""
        builder = engine.get_mib_builder()
        engine_id, boots = builder.import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineID",
                                                  "snmpEngineBoots")
        engine_id.syntax = engine_id.syntax.clone(self._engine_id)
        engine.snmpEngineID = engine_id.syntax
        boots.syntax = boots.syntax.clone(self._boots)

    def _select_versions(self, engine: Any) -> None:
        """Switched-off versions have no message processing model: pysnmp drops their
        messages and counts them in snmpInBadVersions. A version with no community (SNMPv1,
        v2c) is off too."""
        served = set(self._config.community_versions) | {3}
        subsystems = engine.message_processing_subsystems
        for model in list(subsystems):
            if int(model) not in served:
                del subsystems[model]

    def _configure_access(self, engine: Any) -> None:
        """Communities and users; VACM: read the served subtrees in every context, write and
        notify nothing (gotcha 1)."""
        config = self._config
        for name in {c.name for c in config.contexts}:
            snmp_config.add_context(engine, name.encode())
        snmp_config.add_context(engine, b"")
        for security_name, community in self._communities.items():
            snmp_config.add_v1_system(engine, security_name, community.name,
                                      contextName=community.context.encode())
            for security_model in (1, 2):
                snmp_config.add_vacm_group(engine, READ_GROUP, security_model, security_name)
        if self._communities:
            engine.observer.register_observer(self._check_source, _SOURCE_CHECK)
        for user in config.users:
            self._add_user(engine, user)
            snmp_config.add_vacm_group(engine, READ_GROUP, 3, user.name)
        no_auth_no_priv, auth_no_priv = 1, 2
        for security_model, level in ((1, no_auth_no_priv), (2, no_auth_no_priv),
                                      (3, auth_no_priv)):
            # Context prefix "" with prefix matching: every context this agent has.
            snmp_config.add_vacm_access(engine, READ_GROUP, b"", security_model, level,
                                        "prefix", READ_VIEW, EMPTY_VIEW, EMPTY_VIEW)
        for subtree in SERVED_SUBTREES:
            snmp_config.add_vacm_view(engine, READ_VIEW, "included", subtree, b"")
        snmp_config.add_vacm_view(engine, EMPTY_VIEW, "excluded", (1,), b"")

    @staticmethod
    def _add_user(engine: Any, user: User) -> None:
        key_types = {False: snmp_config.USM_KEY_TYPE_PASSPHRASE,
                     True: snmp_config.USM_KEY_TYPE_LOCALIZED}
        arguments: dict[str, Any] = {
            "authProtocol": _AUTH_PROTOCOLS[user.auth],
            "authKey": user.auth_key.secret,
            "authKeyType": key_types[user.auth_key.localized],
        }
        if user.priv is not None and user.priv_key is not None:
            arguments |= {
                "privProtocol": _PRIV_PROTOCOLS[user.priv],
                "privKey": user.priv_key.secret,
                "privKeyType": key_types[user.priv_key.localized],
            }
        snmp_config.add_v3_user(engine, user.name, **arguments)
        # pysnmp keeps pass phrases in clear in its PYSNMP-USM-MIB secret table once the keys
        # are localized; nothing reads them afterwards, so drop them from memory's easy reach.
        _forget_passphrases(engine, user.name)

    def _check_source(self, engine: Any, execpoint: str, variables: dict[str, Any],
                      context: Any) -> None:
        """pysnmp's hook before it looks the community up: refuse a community used from a
        source outside its networks by making it unknown (dropped, counted)."""
        name = bytes(variables.get("communityName", b""))
        information: Any = variables.get("transportInformation")
        try:
            host = str(information[1][0])  # (transport domain, (host, port))
        except (IndexError, TypeError, KeyError):
            host = ""
        for community in self._communities.values():
            if community.name.encode() == name:
                if not community.allows(source_address(host)):
                    variables["communityName"] = _REFUSED
                    if self._guard is not None:
                        self._guard.source_refused = True
                return

    def count_in_packet(self) -> None:
        """snmpInPkts for a message the fast path answers (pysnmp counts its own)."""
        if self.counters is not None:
            self.counters.count("snmpInPkts")

    def live_value(self, name: str) -> Raw:
        """A live scalar's value for the views (0 before the engine exists)."""
        return self.counters.value(name) if self.counters is not None else 0

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


def _forget_passphrases(engine: Any, user_name: str) -> None:
    """Remove the user's row from pysnmp's pass phrase table (PYSNMP-USM-MIB
    pysnmpUsmSecretTable): the localized keys are all USM uses."""
    builder = engine.get_mib_builder()
    (entry,) = builder.import_symbols("PYSNMP-USM-MIB", "pysnmpUsmSecretEntry")
    index = entry.getInstIdFromIndices(user_name)
    engine.message_dispatcher.mib_instrum_controller.write_variables(
        ((*entry.name, 4, *index), "destroy"), snmpEngine=engine)


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
