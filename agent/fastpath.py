"""The fast path: SNMPv1/v2c GET, GETNEXT and GETBULK answered from pre-encoded varbinds.

Sans-IO, like h11: `FastPath.accept(datagram, source)` reads a request and decides whether the
fast path handles it, and `FastPath.respond(accepted, view, now)` makes the response bytes.
Anything not accepted goes to pysnmp, the protocol engine for everything else (SNMPv3, SET,
unknown communities, a community used from a source it is not allowed from, a switched-off
version, malformed or unusual encodings, v1 GETBULK) — pysnmp then drops and counts what must
be dropped. pysnmp's own answer is the oracle: `tests/test_fastpath_oracle.py`
sends thousands of random requests down both paths and requires identical responses.

Why: the stock pysnmp path costs ~0.5 ms per request plus ~35 µs per varbind; a monitoring host
walking 1,000 channels every minute would keep the agent busy. Here each cell of the view is
encoded once as a complete VarBind when the view is built (`EncodedView`), and a request is a
bisect and a join. Cells whose value follows the clock (sysUpTime, the TimeInterval columns)
are encoded at the moment of the request, so they are exact even though the view is kept.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent import ber
from agent.oids import Kind, Oid
from agent.view import Clock, LiveReader, Missing, View, clock_value

GET, GETNEXT, RESPONSE, SET, GETBULK = 0xA0, 0xA1, 0xA2, 0xA3, 0xA5
NO_ERROR, TOO_BIG, NO_SUCH_NAME = 0, 1, 2
V1, V2C = 0, 1

_EXCEPTION = {Missing.NO_SUCH_OBJECT: b"\x80\x00", Missing.NO_SUCH_INSTANCE: b"\x81\x00"}
_END_OF_MIB_VIEW = b"\x82\x00"
_NULL = b"\x05\x00"
_READS = frozenset((GET, GETNEXT, GETBULK))
_NO_ERRORS = b"\x02\x01\x00\x02\x01\x00"


def encode_value(kind: Kind, raw: int | bytes | Oid) -> bytes:
    """One value as BER, by its kind."""
    if kind is Kind.OCTET_STRING:
        assert isinstance(raw, bytes)
        return ber.tlv(ber.OCTET_STRING, raw)
    if kind is Kind.OBJECT_IDENTIFIER:
        assert isinstance(raw, tuple)
        return ber.object_identifier(raw)
    assert isinstance(raw, int)
    return ber.integer(kind.value, raw)


class EncodedView:
    """A `View` with every cell encoded once as a whole VarBind (SEQUENCE {name, value}).

    Immutable; built off the request path and swapped in whole. `cell(i, now)` is the varbind
    at position i as it reads at `now`: clocked cells are encoded at `now`, live ones (the
    agent's own statistics) with the value `live` reads at that moment.
    """

    __slots__ = ("_cells", "_dynamic", "_dynamic_positions", "keys", "view")

    def __init__(self, view: View, live: LiveReader | None = None,
                 previous: EncodedView | None = None) -> None:
        """Encode `view`. With `previous` (the view served until now), a cell at the same
        position with the same name, kind and value reuses its encoding: most cells do not
        change between two rebuilds, and encoding is most of a rebuild's cost."""
        self.view = view
        oids, kinds, raw = view.cells()
        old_oids: Sequence[Oid] = ()
        old_kinds: Sequence[Kind] = ()
        old_raw: Sequence[Any] = ()
        old_keys: list[bytes] = []
        old_cells: list[bytes] = []
        if previous is not None:
            old_oids, old_kinds, old_raw = previous.view.cells()
            old_keys, old_cells = previous.keys, previous._cells
        tlv, oid_content = ber.tlv, ber.oid_content
        #: Each cell's name as BER contents octets: minimal encodings sort as the OIDs do, so
        #: requests are looked up by their names' bytes, never decoded.
        self.keys: list[bytes] = []
        self._cells: list[bytes] = []
        reusable = len(old_oids)
        for i, oid in enumerate(oids):
            if i < reusable and old_oids[i] == oid:
                key = old_keys[i]
                if old_kinds[i] is kinds[i] and old_raw[i] == raw[i]:
                    self.keys.append(key)
                    self._cells.append(old_cells[i])
                    continue
            else:
                key = oid_content(oid)
            self.keys.append(key)
            self._cells.append(tlv(ber.SEQUENCE, tlv(ber.OBJECT_IDENTIFIER, key)
                                   + encode_value(kinds[i], raw[i])))
        names = _Names(self.keys)
        #: position → the function encoding that cell at a moment.
        self._dynamic: dict[int, Callable[[float], bytes]] = {}
        for i, clock, reference in view.clocked:
            self._dynamic[i] = _clocked_cell(names[i], kinds[i].value, clock, reference)
        if live is not None:
            for i, object_name in view.live:
                self._dynamic[i] = _live_cell(names[i], kinds[i], live, object_name)
        self._dynamic_positions = sorted(self._dynamic)

    def __len__(self) -> int:
        return len(self.keys)

    def cell(self, i: int, now: float) -> bytes:
        dynamic = self._dynamic.get(i)
        return self._cells[i] if dynamic is None else dynamic(now)

    def cells(self, start: int, stop: int, now: float) -> list[bytes]:
        """The varbinds at positions start..stop-1."""
        out = self._cells[start:stop]
        first = bisect_left(self._dynamic_positions, start)
        last = bisect_left(self._dynamic_positions, stop)
        for i in self._dynamic_positions[first:last]:
            out[i - start] = self._dynamic[i](now)
        return out


class _Names:
    """The name TLV of a cell, made only for the few cells that are encoded per request."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = keys

    def __getitem__(self, i: int) -> bytes:
        return ber.tlv(ber.OBJECT_IDENTIFIER, self._keys[i])


def _clocked_cell(name: bytes, tag: int, clock: Clock,
                  reference: float) -> Callable[[float], bytes]:
    def encode(now: float) -> bytes:
        return ber.tlv(ber.SEQUENCE, name + ber.integer(tag, clock_value(clock, reference, now)))
    return encode


def _live_cell(name: bytes, kind: Kind, live: LiveReader,
               object_name: str) -> Callable[[float], bytes]:
    def encode(now: float) -> bytes:
        return ber.tlv(ber.SEQUENCE, name + encode_value(kind, live(object_name)))
    return encode


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of a v1/v2c request message the fast path needs."""

    version: int
    community: bytes
    pdu_type: int
    request_id: int
    error_status: int  # non-repeaters for GETBULK
    error_index: int  # max-repetitions for GETBULK
    #: (name's contents octets, name's TLV, the whole VarBind) as received.
    varbinds: tuple[tuple[bytes, bytes, bytes], ...]
    #: The request's version and community TLVs, and its request-id TLV, as received: a
    #: response repeats them.
    head: bytes = b""
    request_id_tlv: bytes = b""


def read_header(datagram: bytes) -> tuple[int, bytes] | None:
    """(version, community) of a v1/v2c message, reading nothing past the community; None if
    the datagram does not start like one. Lets the agent drop a message with a community it
    does not know before pysnmp decodes the rest (which costs ~57 µs a varbind)."""
    try:
        end = len(datagram)
        tag, at, stop = ber.read_tlv(datagram, 0, end)
        if tag != ber.SEQUENCE or stop != end:
            return None
        version, at = ber.read_integer(datagram, at, end)
        tag, start, at = ber.read_tlv(datagram, at, end)
    except ber.BerError:
        return None
    if version not in (V1, V2C) or tag != ber.OCTET_STRING:
        return None
    return version, datagram[start:at]


def parse_request(datagram: bytes, versions: Iterable[int] = (V1, V2C)) -> Request:
    """Read a v1/v2c GET/GETNEXT/GETBULK message of one of `versions`; BerError for anything
    else. Written flat: it runs for every request the agent answers."""
    read_tlv = ber.read_tlv
    end = len(datagram)
    tag, at, stop = read_tlv(datagram, 0, end)
    if tag != ber.SEQUENCE or stop != end:
        raise ber.BerError("not one SEQUENCE")
    head_at = at
    version, at = ber.read_integer(datagram, at, end)
    if version not in versions:
        raise ber.BerError("not a version served")
    tag, start, at = read_tlv(datagram, at, end)
    if tag != ber.OCTET_STRING:
        raise ber.BerError("no community")
    community = datagram[start:at]
    head = datagram[head_at:at]
    pdu_type, at, stop = read_tlv(datagram, at, end)
    if pdu_type not in _READS or stop != end or (pdu_type == GETBULK and version == V1):
        raise ber.BerError("not a read request served")
    request_id_at = at
    request_id, at = ber.read_integer(datagram, at, end)
    request_id_tlv = datagram[request_id_at:at]
    error_status, at = ber.read_integer(datagram, at, end)
    error_index, at = ber.read_integer(datagram, at, end)
    if error_index < 0 and pdu_type != GETBULK:  # outside 0..max-bindings: pysnmp drops it
        raise ber.BerError("negative error-index")
    tag, at, stop = read_tlv(datagram, at, end)
    if tag != ber.SEQUENCE or stop != end:
        raise ber.BerError("no varbind list")
    varbinds = []
    check_oid = ber.check_oid
    while at < end:
        tag, inner, next_at = read_tlv(datagram, at, end)
        if tag != ber.SEQUENCE:
            raise ber.BerError("not a VarBind")
        tag, start, value_at = read_tlv(datagram, inner, next_at)
        # What managers send in a read request is a NULL value. Any other is left to pysnmp,
        # which decides whether it is valid SNMP at all (an answer may echo it back).
        if tag != ber.OBJECT_IDENTIFIER or datagram[value_at:next_at] != _NULL:
            raise ber.BerError("not a VarBind of a name and NULL")
        varbinds.append((check_oid(datagram[start:value_at]), datagram[inner:value_at],
                         datagram[at:next_at]))
        at = next_at
    return Request(version, community, pdu_type, request_id, error_status, error_index,
                   tuple(varbinds), head, request_id_tlv)


@dataclass(frozen=True, slots=True)
class FastCommunity:
    """A community the fast path answers: from the sources `allows` accepts (given the source
    host as a string), from `context`'s view."""

    name: bytes
    allows: Callable[[str], bool]
    context: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request the fast path will answer, and for which context."""

    request: Request
    context: str
    budget: int


#: Sources remembered per community before the memory is cleared (bounds it under a flood of
#: spoofed source addresses).
SOURCE_MEMORY = 4096


class FastPath:
    """Answers the common read requests of the given communities from an `EncodedView`.

    `budget(community)` is the room, in octets, for a response's varbind list — the same
    figure the pysnmp path uses (`agent.responder.varbind_budget`). A GETBULK answer is cut to
    fit (as Net-SNMP does); a GET/GETNEXT answer that cannot fit is tooBig with no varbinds
    (SNMPv1: the request's varbinds echoed, as RFC 2576's mapping gives). Only the message
    `versions` given are answered (0 SNMPv1, 1 SNMPv2c).
    """

    def __init__(self, communities: Iterable[FastCommunity], *,
                 budget: Callable[[bytes], int], versions: Iterable[int] = (V1, V2C)) -> None:
        self.communities = {c.name: c for c in communities}
        self.budgets = {name: budget(name) for name in self.communities}
        self.versions = frozenset(versions)
        self._allowed: dict[tuple[bytes, str], bool] = {}

    def accept(self, datagram: bytes, source: str) -> Accepted | None:
        """The request in `datagram` if the fast path answers it, else None (for pysnmp)."""
        try:
            request = parse_request(datagram, self.versions)
        except ber.BerError:
            return None
        community = self.communities.get(request.community)
        if community is None or not self._allows(community, source):
            return None
        return Accepted(request, community.context, self.budgets[request.community])

    def respond(self, accepted: Accepted, view: EncodedView, now: float) -> bytes:
        """The response to an accepted request, from `view` as it reads at `now`."""
        request, budget = accepted.request, accepted.budget
        if request.pdu_type == GETBULK:
            return self._bulk(request, view, now, budget)
        if request.pdu_type == GET:
            return self._get(request, view, now, budget)
        return self._next(request, view, now, budget)

    def answer(self, datagram: bytes, source: str, view: EncodedView,
               now: float) -> bytes | None:
        """`accept` and `respond` in one, for a single view (any context)."""
        accepted = self.accept(datagram, source)
        return None if accepted is None else self.respond(accepted, view, now)

    def _allows(self, community: FastCommunity, source: str) -> bool:
        key = (community.name, source)
        allowed = self._allowed.get(key)
        if allowed is None:
            if len(self._allowed) >= SOURCE_MEMORY:
                self._allowed.clear()
            allowed = self._allowed[key] = community.allows(source)
        return allowed

    def _get(self, request: Request, view: EncodedView, now: float, budget: int) -> bytes:
        out = []
        keys = view.keys
        for n, (key, name, _) in enumerate(request.varbinds):
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                out.append(view.cell(i, now))
            elif request.version == V1:
                return self._v1_error(request, n)
            else:
                missing = view.view.missing(ber.read_oid(key))
                out.append(_exception(name, _EXCEPTION[missing]))
        return self._fit(request, out, budget)

    def _next(self, request: Request, view: EncodedView, now: float, budget: int) -> bytes:
        out = []
        keys = view.keys
        for n, (key, name, _) in enumerate(request.varbinds):
            i = bisect_right(keys, key)
            if i < len(keys):
                out.append(view.cell(i, now))
            elif request.version == V1:
                return self._v1_error(request, n)
            else:
                out.append(_exception(name, _END_OF_MIB_VIEW))
        return self._fit(request, out, budget)

    def _bulk(self, request: Request, view: EncodedView, now: float, budget: int) -> bytes:
        n = min(max(request.error_status, 0), len(request.varbinds))
        m = max(request.error_index, 0)
        keys = view.keys
        end = len(keys)
        out: list[bytes] = []
        used = 0

        def add(varbind: bytes) -> bool:
            nonlocal used
            if used + len(varbind) > budget:
                return False
            out.append(varbind)
            used += len(varbind)
            return True

        for key, name, _ in request.varbinds[:n]:
            i = bisect_right(keys, key)
            if not add(view.cell(i, now) if i < end else _exception(name, _END_OF_MIB_VIEW)):
                return self._cut(request, out)
        # A repeater's name for endOfMibView is the last name it returned — the view's last,
        # as it steps one cell at a time — or, if it returned none, the name asked about.
        names: list[bytes | None] = [name for _, name, _ in request.varbinds[n:]]
        positions = [bisect_right(keys, key) for key, _, _ in request.varbinds[n:]]
        for _ in range(m if positions else 0):
            at_end = True
            for j, i in enumerate(positions):
                if i < end:
                    varbind = view.cell(i, now)
                    positions[j] = i + 1
                    names[j] = None
                    at_end = False
                else:
                    last = names[j]
                    if last is None:
                        last = names[j] = ber.tlv(ber.OBJECT_IDENTIFIER, keys[end - 1])
                    varbind = _exception(last, _END_OF_MIB_VIEW)
                if not add(varbind):
                    return self._cut(request, out)
            if at_end:
                break
        return self._message(request, NO_ERROR, 0, b"".join(out))

    def _cut(self, request: Request, out: list[bytes]) -> bytes:
        """The answer when the next varbind would not fit: what fits, or tooBig if nothing."""
        if not out:
            return self._too_big(request)
        return self._message(request, NO_ERROR, 0, b"".join(out))

    def _fit(self, request: Request, out: list[bytes], budget: int) -> bytes:
        varbinds = b"".join(out)
        if len(varbinds) > budget:
            return self._too_big(request)
        return self._message(request, NO_ERROR, 0, varbinds)

    def _too_big(self, request: Request) -> bytes:
        echoed = b"".join(v for _, _, v in request.varbinds) if request.version == V1 else b""
        return self._message(request, TOO_BIG, 0, echoed)

    def _v1_error(self, request: Request, n: int) -> bytes:
        """SNMPv1 noSuchName for varbind n (0-based), the request's varbinds echoed."""
        echoed = b"".join(varbind for _, _, varbind in request.varbinds)
        return self._message(request, NO_SUCH_NAME, n + 1, echoed)

    @staticmethod
    def _message(request: Request, status: int, index: int, varbinds: bytes) -> bytes:
        """The Response message. Version, community and request-id are the request's own
        octets (what a decoder reads back is the same value), the rest is encoded here."""
        tlv = ber.tlv
        errors = _NO_ERRORS if status == index == 0 else (
            ber.integer(ber.INTEGER, status) + ber.integer(ber.INTEGER, index))
        pdu = request.request_id_tlv + errors + tlv(ber.SEQUENCE, varbinds)
        return tlv(ber.SEQUENCE, request.head + tlv(RESPONSE, pdu))


def _exception(name: bytes, value: bytes) -> bytes:
    """A VarBind of `name` (an OID's whole TLV) and an exception value."""
    return ber.tlv(ber.SEQUENCE, name + value)
