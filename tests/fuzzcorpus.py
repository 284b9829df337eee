"""A seeded, reproducible corpus of hostile SNMP datagrams, for `tests/test_fuzz.py`.

`corpus(count, seed)` yields `count` `Case`s; the same arguments always give the same bytes, so
a datagram that upsets the agent can be regenerated from its number alone
(`python -m tests.fuzzcorpus SEED NUMBER` prints it in hex). Every case is at most 65507
octets, the largest UDP payload over IPv4.

What is in it (the weights are in `KINDS`): random bytes, with and without a plausible outer
SEQUENCE header; well-formed v1/v2c/v3 requests mutated by bit flips, byte insertions,
deletions and overwrites; every truncation of each seed; TLVs whose length overruns the
enclosing one; absurd long-form lengths (1 to 4 octets claiming up to 4 GB, and the forbidden
5-to-127-octet, indefinite and reserved forms) at every TLV of a seed; SEQUENCEs nested up to
10,000 deep; OIDs of 10,000 arcs, arcs beyond 2^64 and non-minimal arcs; GETBULKs with
max-repetitions 2^31-1 and up to several hundred repeaters; communities of 256 to 60,000 octets;
SNMPv3 messages with broken msgGlobalData and USM security parameters; versions other than
0, 1 and 3; every PDU tag; trailing bytes, concatenated messages, multi-octet tags.

`Case.malformed` is True only when the datagram cannot be a decodable SNMP message of a known
version (a prefix of a message, a length that overruns the datagram, not a SEQUENCE, a version
nobody speaks): the agent must count each of those as a parse error (snmpInASNParseErrs or
snmpInBadVersions, or its own "malformed datagram" log line). Other cases may be valid requests
by construction or by chance; they only must not hurt the agent.

The request builders (`request`, `bulk`, `v3_message`, `oid`, `tlv` …) are also what the
robustness tests build their probes with; they encode exactly the bytes asked for, never
normalising anything. `exchange` (one UDP round trip) and `decode` (the answer, decoded by
pyasn1 rather than by the agent's own BER code) are the checking side.
"""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

Oid = tuple[int, ...]

MAX_DATAGRAM = 65507

SEQUENCE, INTEGER, OCTET_STRING, NULL_TAG, OBJECT_IDENTIFIER = 0x30, 0x02, 0x04, 0x05, 0x06
GET, GETNEXT, RESPONSE, SET, TRAP, GETBULK, INFORM, TRAP2, REPORT = range(0xA0, 0xA9)
V1, V2C, V3 = 0, 1, 3
NULL = b"\x05\x00"

SYS_DESCR: Oid = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME: Oid = (1, 3, 6, 1, 2, 1, 1, 5, 0)
MTA_RECEIVED: Oid = (1, 3, 6, 1, 2, 1, 28, 1, 1, 1, 1)  # mtaReceivedMessages.1
GROUP_NAME: Oid = (1, 3, 6, 1, 2, 1, 28, 2, 1, 25, 1, 1)  # mtaGroupName.1.1
ROOT: Oid = (1, 3, 6, 1)

#: The SNMPv3 identity the fuzz test gives its agent (when the agent has SNMPv3): an engine ID
#: and two users, authNoPriv and authPriv. v3 garbage often names them.
ENGINE_ID = bytes.fromhex("80001f888059dc486145a26322")
V3_USERS = (b"robust", b"private")


# --- BER, exactly as asked ----------------------------------------------------------------------

def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def integer(value: int, tag: int = INTEGER) -> bytes:
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def subid(arc: int) -> bytes:
    chunk = [arc & 0x7F]
    arc >>= 7
    while arc:
        chunk.append(0x80 | (arc & 0x7F))
        arc >>= 7
    return bytes(reversed(chunk))


def oid(arcs: Sequence[int]) -> bytes:
    """An OBJECT IDENTIFIER of any arcs (no range checks: arcs > 2^64 and 10,000 arcs too)."""
    first = arcs[0] * 40 + arcs[1] if len(arcs) > 1 else arcs[0] * 40
    return tlv(OBJECT_IDENTIFIER, b"".join(subid(a) for a in (first, *arcs[2:])))


def varbinds(names: Sequence[Sequence[int]], value: bytes = NULL) -> bytes:
    return tlv(SEQUENCE, b"".join(tlv(SEQUENCE, oid(name) + value) for name in names))


def request(pdu: int, names: Sequence[Sequence[int]], *, version: int = V2C,
            community: bytes = b"public", request_id: int = 1, second: int = 0,
            third: int = 0, value: bytes = NULL) -> bytes:
    """A v1/v2c message; `second`/`third` are error-status/index (GETBULK: non-repeaters and
    max-repetitions)."""
    body = integer(request_id) + integer(second) + integer(third) + varbinds(names, value)
    return tlv(SEQUENCE, integer(version) + octets(community) + tlv(pdu, body))


def bulk(names: Sequence[Sequence[int]], non_repeaters: int, max_repetitions: int, *,
         community: bytes = b"public", request_id: int = 1) -> bytes:
    return request(GETBULK, names, community=community, request_id=request_id,
                   second=non_repeaters, third=max_repetitions)


def usm(engine_id: bytes = b"", boots: int = 0, time: int = 0, user: bytes = b"",
        auth: bytes = b"", priv: bytes = b"") -> bytes:
    """UsmSecurityParameters (RFC 3414 §2.4), already wrapped in its OCTET STRING."""
    return octets(tlv(SEQUENCE, octets(engine_id) + integer(boots) + integer(time)
                      + octets(user) + octets(auth) + octets(priv)))


def v3_message(*, msg_id: int = 1, max_size: int = 65507, flags: bytes = b"\x04",
               security_model: int = 3, security: bytes | None = None,
               scoped: bytes | None = None, version: int = V3) -> bytes:
    """An SNMPv3 message (RFC 3412 §6); by default a reportable noAuthNoPriv discovery GET."""
    global_data = tlv(SEQUENCE, integer(msg_id) + integer(max_size) + octets(flags)
                      + integer(security_model))
    if security is None:
        security = usm()
    if scoped is None:
        scoped = tlv(SEQUENCE, octets(b"") + octets(b"")
                     + tlv(GET, integer(msg_id) + integer(0) + integer(0) + varbinds([SYS_NAME])))
    return tlv(SEQUENCE, integer(version) + global_data + security + scoped)


# --- the seeds: well-formed requests the mutators start from --------------------------------------

def seeds() -> list[bytes]:
    """Well-formed requests of each kind the agent meets (v1, v2c, v3; read, write, bulk)."""
    engine = ENGINE_ID
    return [
        request(GET, [SYS_NAME, MTA_RECEIVED], version=V1, request_id=0x1234),
        request(GETNEXT, [SYS_DESCR, GROUP_NAME], request_id=-7),
        bulk([SYS_NAME, ROOT, GROUP_NAME], 1, 25, request_id=2**31 - 1),
        request(SET, [SYS_NAME], value=octets(b"hijacked"), request_id=99),
        request(GET, [MTA_RECEIVED], version=V1, community=b"not-the-community"),
        v3_message(),
        v3_message(flags=b"\x07", security=usm(engine, 7, 123456, b"private", b"\x00" * 12,
                                               b"\x00" * 8),
                   scoped=octets(bytes(range(64)))),
    ]


# --- the checking side: send one request, read the answer -------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded Response-PDU. Values: (BER tag, plain value); exceptions as their names."""

    size: int
    version: int
    community: bytes
    request_id: int
    status: int
    index: int
    varbinds: list[tuple[Oid, Any]]


_EXCEPTIONS = {0: "noSuchObject", 1: "noSuchInstance", 2: "endOfMibView"}


def decode(data: bytes) -> Reply:
    """A v1/v2c response, decoded with pyasn1 (not with the agent's own BER code); raises if
    it is not one well-formed message with nothing after it."""
    from pyasn1.codec.ber import decoder
    from pysnmp.proto.api import v1, v2c

    header = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
    version = data[header + 2]  # INTEGER, one octet: 0 or 1
    api: Any = v1 if version == V1 else v2c
    message, rest = decoder.decode(data, asn1Spec=api.Message())
    if rest:
        raise ValueError(f"{len(rest)} octets after the message")
    pdu = api.apiMessage.get_pdu(message)
    if pdu.tagSet[-1].tagId != RESPONSE & 0x1F:
        raise ValueError(f"not a Response-PDU: {pdu.tagSet}")
    out: list[tuple[Oid, Any]] = []
    for name, value in api.apiPDU.get_varbinds(pdu):
        tag = value.tagSet[-1]
        plain: Any
        if tag.tagClass == 0x80:
            plain = _EXCEPTIONS[tag.tagId]
        elif tag.tagClass == 0 and tag.tagId == 5:
            plain = "null"
        elif (tag.tagClass, tag.tagId) in ((0, 4), (0x40, 0), (0x40, 4), (0x40, 5)):
            # OCTET STRING, IpAddress, Opaque, NsapAddress (a SET's answer echoes any type)
            plain = (tag.tagClass | tag.tagId, value.asOctets())
        elif tag.tagClass == 0 and tag.tagId == 6:
            plain = (OBJECT_IDENTIFIER, tuple(value))
        else:
            plain = (tag.tagClass | tag.tagId, int(value))
        out.append((tuple(name), plain))
    return Reply(len(data), int(api.apiMessage.get_version(message)),
                 api.apiMessage.get_community(message).asOctets(),
                 int(api.apiPDU.get_request_id(pdu)), int(api.apiPDU.get_error_status(pdu)),
                 int(api.apiPDU.get_error_index(pdu)), out)


def exchange(port: int, data: bytes, *, timeout: float = 5.0,
             host: str = "127.0.0.1") -> bytes | None:
    """Send one datagram from a fresh socket; the answer's bytes, or None after `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            return sock.recv(MAX_DATAGRAM + 1)
        except TimeoutError:
            return None


# --- the corpus -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    data: bytes
    #: True: cannot be a decodable SNMP message of a known version; must count as a parse error.
    malformed: bool = False


Maker = Callable[[random.Random, list[bytes]], Case]


def _random_bytes(rnd: random.Random, seeds: list[bytes]) -> Case:
    size = rnd.choice((0, 1, 2, 3, 5, 8, 20, 64, 200, 484, 1400, 1500, 9000, 65507))
    data = rnd.randbytes(size)
    if data[:1] == b"\x30":  # keep 'malformed' certain: an SNMP message starts with 0x30
        data = b"\x31" + data[1:]
    return Case("random", data, malformed=True)


def _random_in_sequence(rnd: random.Random, seeds: list[bytes]) -> Case:
    """Random contents behind a correct outer SEQUENCE header: past the first check."""
    body = rnd.randbytes(rnd.choice((1, 3, 10, 40, 100, 300, 1000)))
    if rnd.random() < 0.5:  # a correct version and community, then garbage
        body = integer(rnd.choice((V1, V2C, V3))) + octets(b"public") + body
    return Case("random-in-sequence", tlv(SEQUENCE, body))


def _bit_flips(rnd: random.Random, seeds: list[bytes]) -> Case:
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.choice((1, 1, 2, 3, 8))):
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    return Case("bit-flip", bytes(data))


def _insert_delete(rnd: random.Random, seeds: list[bytes]) -> Case:
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.choice((1, 1, 2, 4))):
        at = rnd.randrange(len(data) + 1)
        if rnd.random() < 0.5 and len(data) > 1:
            del data[at:at + rnd.choice((1, 1, 2, 5))]
        else:
            data[at:at] = rnd.randbytes(rnd.choice((1, 1, 2, 7)))
    return Case("insert-delete", bytes(data))


def _overwrite(rnd: random.Random, seeds: list[bytes]) -> Case:
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.choice((1, 2, 3))):
        data[rnd.randrange(len(data))] = rnd.choice((0x00, 0x7F, 0x80, 0x81, 0xFF,
                                                     rnd.randrange(256)))
    return Case("overwrite", bytes(data))


class _Truncations:
    """Every proper prefix of every seed, in turn (then round again)."""

    def __init__(self) -> None:
        self._seed = 0
        self._cut = 0

    def __call__(self, rnd: random.Random, seeds: list[bytes]) -> Case:
        data = seeds[self._seed]
        case = Case("truncation", data[:self._cut], malformed=True)
        self._cut += 1
        if self._cut >= len(data):
            self._cut = 0
            self._seed = (self._seed + 1) % len(seeds)
        return case


def _tlv_starts(data: bytes, depth: int = 64) -> list[tuple[int, int, int]]:
    """(offset of tag, offset of the length octets, end) of every TLV in a well-formed seed,
    down to `depth` levels below the outer one."""
    out = []

    def walk(at: int, end: int, level: int = 0) -> None:
        while at < end:
            tag = data[at]
            first = data[at + 1]
            if first < 0x80:
                size, start = first, at + 2
            else:
                count = first & 0x7F
                size = int.from_bytes(data[at + 2:at + 2 + count], "big")
                start = at + 2 + count
            out.append((at, at + 1, start + size))
            if tag & 0x20 and level < depth:  # constructed: SEQUENCE and the PDUs
                walk(start, start + size, level + 1)
            at = start + size

    walk(0, len(data))
    return out


def _overrun(rnd: random.Random, seeds: list[bytes]) -> Case:
    """One inner TLV claims more octets than its parent holds (a truncated inner BER)."""
    data = rnd.choice(seeds)
    _, length_at, end = rnd.choice(_tlv_starts(data)[1:])
    first = data[length_at]
    header = 1 if first < 0x80 else 1 + (first & 0x7F)
    size = end - (length_at + header)
    claimed = size + rnd.choice((1, 2, 100, 2**16))
    return Case("inner-overrun", data[:length_at] + length(claimed) + data[length_at + header:])


def _absurd_length(rnd: random.Random, seeds: list[bytes]) -> Case:
    """A long-form length claiming up to 4 GB, or a forbidden form, at one TLV of a seed."""
    data = rnd.choice(seeds)
    starts = _tlv_starts(data)
    outer = rnd.random() < 0.3
    _, length_at, _ = starts[0] if outer else rnd.choice(starts)
    first = data[length_at]
    header = 1 if first < 0x80 else 1 + (first & 0x7F)
    form = rnd.randrange(6)
    if form == 0:  # 4 octets, claiming GBs
        claimed = rnd.choice((0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, rnd.randrange(2**20, 2**32)))
        new = b"\x84" + claimed.to_bytes(4, "big")
    elif form == 1:  # 1 to 3 octets, the most they can say (more than the datagram holds)
        count = rnd.randint(1, 3)
        new = bytes((0x80 | count,)) + b"\xff" * count
    elif form == 2:  # 5 to 9 length octets, claiming at least 2^32
        count = rnd.randint(5, 9)
        new = bytes((0x80 | count, rnd.randint(1, 255))) + rnd.randbytes(count - 1)
    elif form == 3:
        new = b"\x80"  # indefinite length, and no end-of-contents octets anywhere
    elif form == 4:
        new = b"\xff"  # reserved (X.690 8.1.3.5 c)
    else:  # 126 length octets
        new = b"\xfe" + b"\xff" * 126
    mutated = data[:length_at] + new + data[length_at + header:]
    # At the outer SEQUENCE every form overruns the datagram (or never ends): surely malformed.
    # Inside, a lenient decoder might still make something of it.
    return Case("absurd-length", mutated, malformed=outer)


def _deep_nesting(rnd: random.Random, seeds: list[bytes]) -> Case:
    """SEQUENCE inside SEQUENCE, up to 10,000 deep: as the message, a varbind, or a value."""
    depth = rnd.choice((100, 1000, 2500, 5000, 10_000))
    where = rnd.randrange(3)
    inner = b""
    for _ in range(depth):
        inner = tlv(SEQUENCE, inner)
        if len(inner) > MAX_DATAGRAM - 200:
            break
    if where == 0:
        return Case("deep-nesting", inner, malformed=True)  # no version: not a message
    if where == 1:  # as the varbind list's only varbind
        body = integer(1) + integer(0) + integer(0) + tlv(SEQUENCE, inner)
        return Case("deep-nesting", tlv(SEQUENCE, integer(V2C) + octets(b"public")
                                        + tlv(GET, body)))
    return Case("deep-nesting", request(SET, [SYS_NAME], value=inner))


def _huge_oid(rnd: random.Random, seeds: list[bytes]) -> Case:
    """OIDs of up to 10,000 arcs, arcs beyond 2^32 and 2^64, non-minimal and empty OIDs."""
    form = rnd.randrange(6)
    pdu = rnd.choice((GET, GETNEXT, GETBULK))
    version = V2C if pdu == GETBULK else rnd.choice((V1, V2C))
    if form == 0:
        name: Sequence[int] = SYS_NAME + (7,) * (rnd.choice((129, 1000, 10_000)) - len(SYS_NAME))
        return Case("huge-oid", request(pdu, [name], version=version, third=5))
    if form == 1:
        arc = rnd.choice((2**32, 2**63, 2**64, 2**64 + 1, 2**200, 2**1000))
        return Case("huge-oid", request(pdu, [(1, 3, 6, 1, arc, 1)], version=version, third=5))
    if form == 2:  # 0x80 padding before an arc: not minimal
        raw = oid(SYS_NAME)
        content = raw[2:4] + b"\x80" * rnd.choice((1, 9, 200)) + raw[4:]
        bad = tlv(OBJECT_IDENTIFIER, content)
    elif form == 3:
        bad = tlv(OBJECT_IDENTIFIER, b"")
    elif form == 4:  # an arc that never ends (last octet has the high bit)
        bad = tlv(OBJECT_IDENTIFIER, b"\x2b" + b"\xff" * rnd.choice((1, 10, 5000)))
    else:  # a 60,000-octet first arc
        bad = tlv(OBJECT_IDENTIFIER, b"\x81" * 60_000 + b"\x01")
    body = integer(1) + integer(0) + integer(5) + tlv(SEQUENCE, tlv(SEQUENCE, bad + NULL))
    return Case("huge-oid", tlv(SEQUENCE, integer(version) + octets(b"public")
                                + tlv(pdu, body)))


def _big_bulk(rnd: random.Random, seeds: list[bytes]) -> Case:
    """Valid GETBULKs asking for everything: 2^31-1 repetitions, many repeaters."""
    repeaters = rnd.choice((1, 2, 10, 100, 500))
    names = [rnd.choice((ROOT, SYS_NAME, GROUP_NAME, (1, 3, 6, 1, 2, 1, 28)))
             for _ in range(repeaters)]
    non_repeaters = rnd.choice((0, 0, 1, repeaters // 2, 2**31 - 1, -1))
    repetitions = rnd.choice((2**31 - 1, 2**31 - 1, 100_000, 0, -(2**31)))
    return Case("big-bulk", bulk(names, non_repeaters, repetitions,
                                 request_id=rnd.randrange(-(2**31), 2**31)))


def _big_community(rnd: random.Random, seeds: list[bytes]) -> Case:
    size = rnd.choice((256, 1000, 4096, 60_000))
    community = rnd.choice((b"public" + b"x" * (size - 6), rnd.randbytes(size)))
    pdu = rnd.choice((GET, GETNEXT, GETBULK, SET))
    return Case("big-community", request(pdu, [SYS_NAME], community=community, third=3))


def _v3_garbage(rnd: random.Random, seeds: list[bytes]) -> Case:
    """msgVersion 3 with broken msgGlobalData or USM parameters (RFC 3412, RFC 3414); often
    for the engine ID and user names the fuzz test configures (`ENGINE_ID`, `V3_USERS`), so
    the garbage gets as far as USM's timeliness and digest checks."""
    engine = rnd.choice((b"", ENGINE_ID, ENGINE_ID, b"\x00" * 4,
                         rnd.randbytes(33), rnd.randbytes(5)))
    user = rnd.choice((b"", b"admin", V3_USERS[0], V3_USERS[1], b"u" * 32, b"u" * 33,
                       rnd.randbytes(200)))
    fields = dict(
        msg_id=rnd.choice((0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1)),
        max_size=rnd.choice((65507, 484, 483, 0, -1, 2**31 - 1, 2**31, 2**64)),
        flags=rnd.choice((b"\x04", b"\x00", b"\x01", b"\x02", b"\x03", b"\x07", b"\xff",
                          b"", b"\x04\x04")),
        security_model=rnd.choice((3, 3, 0, 1, 2, 4, 99, -3, 2**31 - 1, 2**31)),
    )
    security: bytes
    form = rnd.randrange(8)
    if form == 0:  # USM parameters that are not a SEQUENCE, or not wrapped
        security = rnd.choice((octets(rnd.randbytes(40)), octets(b""),
                               tlv(SEQUENCE, octets(engine)), integer(5)))
    elif form == 1:  # fields of the wrong type or missing
        parts = [octets(engine), integer(rnd.randrange(2**31)), integer(rnd.randrange(2**31)),
                 octets(user), octets(rnd.randbytes(12)), octets(rnd.randbytes(8))]
        at = rnd.randrange(len(parts))
        if rnd.random() < 0.5:
            del parts[at]
        else:
            parts[at] = rnd.choice((NULL, integer(-1), octets(b"x"), oid(SYS_NAME)))
        security = octets(tlv(SEQUENCE, b"".join(parts)))
    else:
        security = usm(engine, rnd.choice((0, 1, 2**31 - 1, -1)),
                       rnd.choice((0, 1, 2**31 - 1, -5)), user,
                       rnd.choice((b"", b"\x00" * 12, rnd.randbytes(11), rnd.randbytes(48))),
                       rnd.choice((b"", b"\x00" * 8, rnd.randbytes(7), rnd.randbytes(16))))
    scoped = rnd.choice((
        None,
        octets(rnd.randbytes(rnd.choice((0, 15, 16, 17, 64, 1000)))),  # "encrypted"
        tlv(SEQUENCE, octets(engine) + octets(b"ctx")),  # no PDU
        tlv(SEQUENCE, octets(engine) + octets(b"") + tlv(0xBF, b"")),
        tlv(SEQUENCE, octets(engine) + octets(b"")
            + tlv(GETBULK, integer(1) + integer(0) + integer(10) + varbinds([ROOT]))),
        integer(7),
    ))
    if form == 7:  # global data itself broken: missing, reordered, wrong types
        good = v3_message(security=security, scoped=scoped, **fields)
        tag_at, _, end = _tlv_starts(good, depth=1)[2]  # msgGlobalData
        replacement = rnd.choice((b"", octets(b"abc"), tlv(SEQUENCE, b""),
                                  tlv(SEQUENCE, integer(1) + integer(2)),
                                  tlv(SEQUENCE, octets(b"\x04") + integer(1) + integer(1)
                                      + integer(3))))
        data = good[:tag_at] + replacement + good[end:]
        return Case("v3-garbage", tlv(SEQUENCE, _tlv_body(data)))
    return Case("v3-garbage", v3_message(security=security, scoped=scoped, **fields))


def _tlv_body(data: bytes) -> bytes:
    """The contents of the outer TLV of `data` (whose length may now be wrong)."""
    first = data[1]
    return data[2:] if first < 0x80 else data[2 + (first & 0x7F):]


def _wrong_version(rnd: random.Random, seeds: list[bytes]) -> Case:
    version = rnd.choice((2, 4, 5, 255, -1, 2**31 - 1, 2**32, 2**64, -(2**63)))
    if rnd.random() < 0.3:  # a v3-shaped body with another version number
        return Case("wrong-version", v3_message(version=version), malformed=True)
    return Case("wrong-version", request(rnd.choice((GET, GETNEXT, GETBULK)), [SYS_NAME],
                                         version=version), malformed=True)


def _wrong_pdu(rnd: random.Random, seeds: list[bytes]) -> Case:
    tag = rnd.randrange(256)
    # A low tag number of 31 means a multi-octet tag: give it its next octets.
    tag_bytes = bytes((tag, 0x81, 0x00)) if tag & 0x1F == 0x1F else bytes((tag,))
    body = integer(5) + integer(0) + integer(0) + varbinds([SYS_NAME])
    version = rnd.choice((V1, V2C))
    message = tlv(SEQUENCE, integer(version) + octets(b"public")
                  + tag_bytes + length(len(body)) + body)
    return Case("wrong-pdu", message)


def _misc(rnd: random.Random, seeds: list[bytes]) -> Case:
    good = rnd.choice(seeds)
    form = rnd.randrange(6)
    if form == 0:
        return Case("trailing-bytes", good + rnd.randbytes(rnd.choice((1, 2, 100))))
    if form == 1:
        return Case("two-messages", good + rnd.choice(seeds))
    if form == 2:  # the outer tag as a multi-octet tag
        return Case("high-tag-form", b"\x3f\x10" + good[1:])  # SEQUENCE, long form
    if form == 3:  # a non-minimal INTEGER version (0x00 0x01)
        return Case("padded-version", tlv(SEQUENCE, tlv(INTEGER, b"\x00" * 5 + b"\x01")
                                          + _tlv_body(good)[3:]))
    if form == 4:  # NULL or INTEGER where the community should be
        body = _tlv_body(request(GET, [SYS_NAME]))
        return Case("bad-community-type", tlv(SEQUENCE, body[:3] + rnd.choice(
            (NULL, integer(7), oid(SYS_NAME))) + body[3 + 8:]))
    return Case("constructed-string", tlv(SEQUENCE, integer(V2C) + tlv(0x24, octets(b"pub")
                                                                        + octets(b"lic"))
                                          + _tlv_body(request(GET, [SYS_NAME]))[3 + 8:]))


KINDS: tuple[tuple[Maker, int], ...] = (
    (_random_bytes, 14),
    (_random_in_sequence, 8),
    (_bit_flips, 14),
    (_insert_delete, 10),
    (_overwrite, 6),
    (_Truncations(), 10),  # replaced by a fresh instance per corpus
    (_overrun, 5),
    (_absurd_length, 8),
    (_deep_nesting, 1),
    (_huge_oid, 3),
    (_big_bulk, 1),
    (_big_community, 2),
    (_v3_garbage, 10),
    (_wrong_version, 3),
    (_wrong_pdu, 3),
    (_misc, 2),
)


def corpus(count: int, seed: int = 1566) -> Iterator[Case]:
    """`count` cases, the same for the same `seed`."""
    rnd = random.Random(seed)
    base = seeds()
    makers = [maker if not isinstance(maker, _Truncations) else _Truncations()
              for maker, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    for _ in range(count):
        (maker,) = rnd.choices(makers, weights)
        case = maker(rnd, base)
        if len(case.data) > MAX_DATAGRAM:
            case = Case(case.kind, case.data[:MAX_DATAGRAM], malformed=True)
        yield case


def case(seed: int, number: int) -> Case:
    """Case `number` (0-based) of `corpus(…, seed)`."""
    for n, found in enumerate(corpus(number + 1, seed)):
        if n == number:
            return found
    raise IndexError(number)


if __name__ == "__main__":
    found = case(int(sys.argv[1]), int(sys.argv[2]))
    print(found.kind, "malformed" if found.malformed else "", found.data.hex())
