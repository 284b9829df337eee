"""Just enough SNMPv2c BER for the benchmark's own clients: encode GET / GETNEXT / GETBULK
requests and decode responses.

The load generator sends pre-encoded requests and the pollers decode a handful of values; no
pysnmp here, so the harness does not depend on pysnmp's API and costs little CPU per request.
"""

from __future__ import annotations

from dataclasses import dataclass

Oid = tuple[int, ...]

GET = 0xA0
GETNEXT = 0xA1
RESPONSE = 0xA2
GETBULK = 0xA5

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

EXCEPTIONS = {NO_SUCH_OBJECT: "noSuchObject", NO_SUCH_INSTANCE: "noSuchInstance",
              END_OF_MIB_VIEW: "endOfMibView"}


class WireError(ValueError):
    """A datagram that is not the SNMP response this module understands."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def _int(tag: int, value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return _tlv(tag, value.to_bytes(size, "big", signed=True))


def encode_oid(oid: Oid) -> bytes:
    if len(oid) < 2:
        raise ValueError(f"OID too short: {oid}")
    arcs = [oid[0] * 40 + oid[1], *oid[2:]]
    out = bytearray()
    for arc in arcs:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return _tlv(OBJECT_IDENTIFIER, bytes(out))


def encode_request(community: str, request_id: int, oids: list[Oid], *, pdu: int = GET,
                   non_repeaters: int = 0, max_repetitions: int = 0) -> bytes:
    """One SNMPv2c request message (GETBULK takes non_repeaters / max_repetitions)."""
    varbinds = b"".join(_tlv(SEQUENCE, encode_oid(oid) + b"\x05\x00") for oid in oids)
    second, third = (non_repeaters, max_repetitions) if pdu == GETBULK else (0, 0)
    body = (_int(INTEGER, request_id) + _int(INTEGER, second) + _int(INTEGER, third)
            + _tlv(SEQUENCE, varbinds))
    message = (_int(INTEGER, 1) + _tlv(OCTET_STRING, community.encode())
               + _tlv(pdu, body))
    return _tlv(SEQUENCE, message)


def _read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at `pos`."""
    if pos + 2 > len(data):
        raise WireError("truncated TLV")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or pos + count > len(data):
            raise WireError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    else:
        length = first
    end = pos + length
    if end > len(data):
        raise WireError("truncated value")
    return tag, pos, end


def decode_oid(body: bytes) -> Oid:
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise WireError("empty OID")
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return (*head, *arcs[1:])


@dataclass(frozen=True, slots=True)
class Response:
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, int, object]]  # (oid, BER tag, decoded value)


def _value(tag: int, body: bytes) -> object:
    if tag in (INTEGER,):
        return int.from_bytes(body, "big", signed=True)
    if tag in (COUNTER32, GAUGE32, TIMETICKS):
        return int.from_bytes(body, "big", signed=False)
    if tag == OBJECT_IDENTIFIER:
        return decode_oid(body)
    if tag in EXCEPTIONS or tag == NULL:
        return None
    return bytes(body)


def decode_response(data: bytes) -> Response:
    """Decode an SNMPv1/v2c GetResponse message."""
    tag, pos, _ = _read(data, 0)
    if tag != SEQUENCE:
        raise WireError("not a SEQUENCE")
    pos = _read(data, pos)[2]  # version
    pos = _read(data, pos)[2]  # community
    tag, pos, _ = _read(data, pos)
    if tag != RESPONSE:
        raise WireError(f"PDU type 0x{tag:02x} is not a response")
    _, s, pos = _read(data, pos)
    request_id = int.from_bytes(data[s:pos], "big", signed=True)
    _, s, pos = _read(data, pos)
    error_status = int.from_bytes(data[s:pos], "big", signed=True)
    _, s, pos = _read(data, pos)
    error_index = int.from_bytes(data[s:pos], "big", signed=True)
    tag, pos, list_end = _read(data, pos)
    varbinds: list[tuple[Oid, int, object]] = []
    while pos < list_end:
        _, vb_start, vb_end = _read(data, pos)
        _, os_, oe = _read(data, vb_start)
        oid = decode_oid(data[os_:oe])
        vtag, vs, ve = _read(data, oe)
        varbinds.append((oid, vtag, _value(vtag, data[vs:ve])))
        pos = vb_end
    return Response(request_id, error_status, error_index, varbinds)


def parse_oid(text: str) -> Oid:
    return tuple(int(arc) for arc in text.strip().strip(".").split("."))


def format_oid(oid: Oid) -> str:
    return "." + ".".join(map(str, oid))
