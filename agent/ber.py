"""The few BER (X.690) pieces SNMPv1/v2c messages need, as plain functions on bytes.

Used by the fast path (`agent.fastpath`) to read requests and to pre-encode the view. The
decoder is deliberately strict: anything it does not fully understand — an indefinite or
oversized length, a multi-octet tag, a non-minimal OID arc, trailing bytes — raises
`BerError`, and the fast path then leaves the datagram to pysnmp, which decides what the RFCs
want done with it. Encodings are the minimal DER forms pysnmp produces, so the fast path's
answers match pysnmp's byte for byte.
"""

from __future__ import annotations

import re

from agent.oids import Oid

SEQUENCE = 0x30
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

#: The largest sub-identifier SNMP allows (RFC 2578 §7.1.3) and the most arcs.
MAX_SUBID = 2**32 - 1
MAX_OID_ARCS = 128


class BerError(ValueError):
    """Not a BER encoding the fast path handles."""


def length(n: int) -> bytes:
    """A definite length: short form below 128, else the minimal long form."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def integer(tag: int, value: int) -> bytes:
    """INTEGER (or an application type built on it: Counter32, Gauge32, TimeTicks) in two's
    complement, minimal length; unsigned 32-bit values get their leading zero octet."""
    n = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(n, "big", signed=True))


def oid_content(oid: Oid) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER (at least two arcs)."""
    first, second, *rest = oid
    out = bytearray()
    for arc in (first * 40 + second, *rest):
        if arc < 0x80:
            out.append(arc)
            continue
        chunk = bytearray()
        while arc:
            chunk.append((arc & 0x7F) | 0x80)
            arc >>= 7
        chunk[0] &= 0x7F
        chunk.reverse()
        out += chunk
    return bytes(out)


def object_identifier(oid: Oid) -> bytes:
    return tlv(OBJECT_IDENTIFIER, oid_content(oid))


def read_tlv(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the TLV at `at`, within `data[:end]`."""
    if at + 2 > end:
        raise BerError("truncated")
    tag = data[at]
    if tag & 0x1F == 0x1F:
        raise BerError("multi-octet tag")
    first = data[at + 1]
    at += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > end:
            raise BerError("bad length")
        size = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + size > end:
        raise BerError("truncated")
    return tag, at, at + size


def read_integer(data: bytes, at: int, end: int) -> tuple[int, int]:
    """(value, next position) of an INTEGER at `at`."""
    tag, start, stop = read_tlv(data, at, end)
    if tag != INTEGER or stop == start or stop - start > 4:
        raise BerError("not a 32-bit INTEGER")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


#: A minimal OBJECT IDENTIFIER contents encoding whose every sub-identifier is < 2^32 (at most
#: five octets, and a five-octet one starting at most 0x8F), as `read_oid` accepts them. The
#: first sub-identifier (40 * arc1 + arc2) is held to the same bound, which only matters under
#: 2.x, where a second arc within 80 of 2^32 is then left to pysnmp.
_MINIMAL_OID = re.compile(
    rb"(?:[\x00-\x7f]|[\x81-\xff](?:[\x80-\xff]{0,2})[\x00-\x7f]"
    rb"|[\x81-\x8f][\x80-\xff]{3}[\x00-\x7f])+")
_HIGH_OCTETS = bytes(range(0x80, 0x100))


def check_oid(content: bytes) -> bytes:
    """`content` itself if it is an OBJECT IDENTIFIER encoding `read_oid` accepts (minimal,
    sub-identifiers < 2^32, at most 128 arcs), else BerError. Minimal encodings of OIDs sort as
    bytes exactly as the OIDs do, so the fast path compares them without decoding."""
    if (len(content) > 5 * MAX_OID_ARCS or _MINIMAL_OID.fullmatch(content) is None
            or len(content.translate(None, _HIGH_OCTETS)) + 1 > MAX_OID_ARCS):
        raise BerError("OID the fast path does not handle")
    return content


def read_oid(content: bytes) -> Oid:
    """An OBJECT IDENTIFIER's contents → arcs; strict (minimal arcs, ≤ 2^32-1, ≤ 128 arcs)."""
    if not content or content[-1] & 0x80:
        raise BerError("bad OID")
    if len(content) > 5 * MAX_OID_ARCS:  # 128 arcs of <= 5 octets; bounds the work below
        raise BerError("OID out of range")
    arcs: list[int] = []
    value = 0
    fresh = True
    for octet in content:
        if fresh and octet == 0x80:
            raise BerError("non-minimal OID arc")
        value = (value << 7) | (octet & 0x7F)
        fresh = not octet & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    out = (*head, *arcs[1:])
    if len(out) > MAX_OID_ARCS or max(out) > MAX_SUBID:
        raise BerError("OID out of range")
    return out
