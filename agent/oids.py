"""The OIDs mailmib serves, as data.

Every object type the view serves is one `Column` row below (a scalar counts as a column whose
only instance is `.0`): its OID, its name and SYNTAX as written in the MIB module, the BER kind
it is sent as, and for mtaGroupTable which side of a channel it belongs to. `tests/test_view.py`
checks these rows against the shipped modules in `mibs/` (RFC1565.txt, RFC1566.txt and
RFC1213-MIB.txt for the system group, which SNMPv2-MIB keeps at the same OIDs), so the view's
code never spells an OID or a column number itself.

Module names: RFC 1565's module is APPLICATION-MIB (RFC 2788 renamed it NETWORK-SERVICES-MIB,
same OIDs); the system group is named for SNMPv2-MIB (RFC 3418), its current home.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

Oid = tuple[int, ...]


class Kind(IntEnum):
    """How a value goes on the wire; the values are the BER tags (RFC 2578 / RFC 3416)."""

    INTEGER = 0x02
    OCTET_STRING = 0x04
    OBJECT_IDENTIFIER = 0x06
    COUNTER32 = 0x41
    GAUGE32 = 0x42
    TIMETICKS = 0x43


class Side(StrEnum):
    """Which side of a channel a column describes.

    RFC 1566 §4 (and RFC 2789 "must be inaccessible"): a group that does not use a column has
    no instance of it. An inbound-only channel has no `OUTBOUND` instances and vice versa;
    `ALWAYS` columns exist in every row (every channel has a queue, a protocol and a name).
    """

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    ALWAYS = "always"


SNMPV2_MIB = "SNMPv2-MIB"
APPLICATION_MIB = "APPLICATION-MIB"
MTA_MIB = "MTA-MIB"


@dataclass(frozen=True, slots=True)
class Column:
    """One served object type; its instances are `oid + index`."""

    oid: Oid
    name: str
    module: str
    kind: Kind
    syntax: str
    side: Side = Side.ALWAYS


#: The SNMP limit on one sub-identifier (RFC 2578 §7.1.3) and on the number of them.
MAX_SUBID = 2**32 - 1
MAX_OID_LENGTH = 128


def parse_oid(dotted: str) -> Oid:
    """'1.3.6.1.2.1.27.4.25' (a leading dot is allowed) → (1, 3, 6, 1, 2, 1, 27, 4, 25).

    Raises ValueError unless it is a valid BER-encodable OID: ASCII decimal arcs, at least two,
    the first 0..2, the second 0..39 under 0 and 1, each at most 2^32-1, at most 128 arcs.
    """
    text = dotted.strip()
    if text.startswith("."):
        text = text[1:]
    parts = text.split(".")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"not a dotted OID: {dotted!r}")
    arcs = tuple(int(p) for p in parts)
    if (
        not 2 <= len(arcs) <= MAX_OID_LENGTH
        or arcs[0] > 2
        or (arcs[0] < 2 and arcs[1] > 39)
        or max(arcs) > MAX_SUBID
    ):
        raise ValueError(f"not a valid OID: {dotted!r}")
    return arcs


def format_oid(oid: Oid) -> str:
    """(1, 3, 6) → '1.3.6'."""
    return ".".join(map(str, oid))


# --- the tree --------------------------------------------------------------------------------

MIB_2: Oid = (1, 3, 6, 1, 2, 1)
SYSTEM: Oid = (*MIB_2, 1)
APPLICATION: Oid = (*MIB_2, 27)
MTA: Oid = (*MIB_2, 28)

APPL_ENTRY: Oid = (*APPLICATION, 1, 1)  # applTable.applEntry, INDEX { applIndex }
ASSOC_ENTRY: Oid = (*APPLICATION, 2, 1)  # assocTable.assocEntry, INDEX { applIndex, assocIndex }
APPL_TCP_PROTO_ID: Oid = (*APPLICATION, 4)
APPL_UDP_PROTO_ID: Oid = (*APPLICATION, 5)

MTA_ENTRY: Oid = (*MTA, 1, 1)  # INDEX { applIndex }
MTA_GROUP_ENTRY: Oid = (*MTA, 2, 1)  # INDEX { applIndex, mtaGroupIndex }
#: INDEX { applIndex, mtaGroupIndex, mtaGroupAssociationIndex }
MTA_GROUP_ASSOCIATION_ENTRY: Oid = (*MTA, 3, 1)

#: SNMPv2-SMI zeroDotZero: "a value used for null identifiers".
ZERO_DOT_ZERO: Oid = (0, 0)
#: The instance suffix of a scalar.
SCALAR_INSTANCE: Oid = (0,)


class ApplOperStatus(IntEnum):
    """applOperStatus (RFC 1565 named numbers)."""

    UP = 1
    DOWN = 2
    HALTED = 3
    CONGESTED = 4
    RESTARTING = 5


class AssocApplicationType(IntEnum):
    """assocApplicationType: who the remote is and whether it opened the connection."""

    UA_INITIATOR = 1
    UA_RESPONDER = 2
    PEER_INITIATOR = 3
    PEER_RESPONDER = 4


# --- the columns -----------------------------------------------------------------------------

_K = Kind
_IN, _OUT, _A = Side.INBOUND, Side.OUTBOUND, Side.ALWAYS


def _columns(entry: Oid, module: str,
             rows: tuple[tuple[int, str, Kind, str, Side], ...]) -> tuple[Column, ...]:
    return tuple(Column((*entry, sub), name, module, kind, syntax, side)
                 for sub, name, kind, syntax, side in rows)

#: system group scalars (instance .0).
SYSTEM_SCALARS = _columns(SYSTEM, SNMPV2_MIB, (
    (1, "sysDescr", _K.OCTET_STRING, "DisplayString", _A),
    (2, "sysObjectID", _K.OBJECT_IDENTIFIER, "OBJECT IDENTIFIER", _A),
    (3, "sysUpTime", _K.TIMETICKS, "TimeTicks", _A),
    (4, "sysContact", _K.OCTET_STRING, "DisplayString", _A),
    (5, "sysName", _K.OCTET_STRING, "DisplayString", _A),
    (6, "sysLocation", _K.OCTET_STRING, "DisplayString", _A),
    (7, "sysServices", _K.INTEGER, "INTEGER", _A),
))

#: applTable columns (instance .applIndex); col 1 applIndex is not-accessible.
APPL_COLUMNS = _columns(APPL_ENTRY, APPLICATION_MIB, (
    (2, "applName", _K.OCTET_STRING, "DisplayString", _A),
    (3, "applDirectoryName", _K.OCTET_STRING, "DistinguishedName", _A),
    (4, "applVersion", _K.OCTET_STRING, "DisplayString", _A),
    (5, "applUptime", _K.TIMETICKS, "TimeStamp", _A),
    (6, "applOperStatus", _K.INTEGER, "INTEGER", _A),
    (7, "applLastChange", _K.TIMETICKS, "TimeStamp", _A),
    (8, "applInboundAssociations", _K.GAUGE32, "Gauge32", _A),
    (9, "applOutboundAssociations", _K.GAUGE32, "Gauge32", _A),
    (10, "applAccumulatedInboundAssociations", _K.COUNTER32, "Counter32", _A),
    (11, "applAccumulatedOutboundAssociations", _K.COUNTER32, "Counter32", _A),
    (12, "applLastInboundActivity", _K.TIMETICKS, "TimeStamp", _A),
    (13, "applLastOutboundActivity", _K.TIMETICKS, "TimeStamp", _A),
    (14, "applRejectedInboundAssociations", _K.COUNTER32, "Counter32", _A),
    (15, "applFailedOutboundAssociations", _K.COUNTER32, "Counter32", _A),
))

#: assocTable columns (instance .applIndex.assocIndex); col 1 assocIndex is not-accessible.
ASSOC_COLUMNS = _columns(ASSOC_ENTRY, APPLICATION_MIB, (
    (2, "assocRemoteApplication", _K.OCTET_STRING, "DisplayString", _A),
    (3, "assocApplicationProtocol", _K.OBJECT_IDENTIFIER, "OBJECT IDENTIFIER", _A),
    (4, "assocApplicationType", _K.INTEGER, "INTEGER", _A),
    (5, "assocDuration", _K.TIMETICKS, "TimeStamp", _A),
))

#: mtaTable columns (instance .applIndex).
MTA_COLUMNS = _columns(MTA_ENTRY, MTA_MIB, (
    (1, "mtaReceivedMessages", _K.COUNTER32, "Counter32", _A),
    (2, "mtaStoredMessages", _K.GAUGE32, "Gauge32", _A),
    (3, "mtaTransmittedMessages", _K.COUNTER32, "Counter32", _A),
    (4, "mtaReceivedVolume", _K.COUNTER32, "Counter32", _A),
    (5, "mtaStoredVolume", _K.GAUGE32, "Gauge32", _A),
    (6, "mtaTransmittedVolume", _K.COUNTER32, "Counter32", _A),
    (7, "mtaReceivedRecipients", _K.COUNTER32, "Counter32", _A),
    (8, "mtaStoredRecipients", _K.GAUGE32, "Gauge32", _A),
    (9, "mtaTransmittedRecipients", _K.COUNTER32, "Counter32", _A),
))

#: mtaGroupTable columns (instance .applIndex.mtaGroupIndex); col 1 mtaGroupIndex is
#: not-accessible. The side says which channels have an instance.
MTA_GROUP_COLUMNS = _columns(MTA_GROUP_ENTRY, MTA_MIB, (
    (2, "mtaGroupReceivedMessages", _K.COUNTER32, "Counter32", _IN),
    (3, "mtaGroupRejectedMessages", _K.COUNTER32, "Counter32", _IN),
    (4, "mtaGroupStoredMessages", _K.GAUGE32, "Gauge32", _A),
    (5, "mtaGroupTransmittedMessages", _K.COUNTER32, "Counter32", _OUT),
    (6, "mtaGroupReceivedVolume", _K.COUNTER32, "Counter32", _IN),
    (7, "mtaGroupStoredVolume", _K.GAUGE32, "Gauge32", _A),
    (8, "mtaGroupTransmittedVolume", _K.COUNTER32, "Counter32", _OUT),
    (9, "mtaGroupReceivedRecipients", _K.COUNTER32, "Counter32", _IN),
    (10, "mtaGroupStoredRecipients", _K.GAUGE32, "Gauge32", _A),
    (11, "mtaGroupTransmittedRecipients", _K.COUNTER32, "Counter32", _OUT),
    (12, "mtaGroupOldestMessageStored", _K.INTEGER, "TimeInterval", _A),
    (13, "mtaGroupInboundAssociations", _K.GAUGE32, "Gauge32", _IN),
    (14, "mtaGroupOutboundAssociations", _K.GAUGE32, "Gauge32", _OUT),
    (15, "mtaGroupAccumulatedInboundAssociations", _K.COUNTER32, "Counter32", _IN),
    (16, "mtaGroupAccumulatedOutboundAssociations", _K.COUNTER32, "Counter32", _OUT),
    (17, "mtaGroupLastInboundActivity", _K.INTEGER, "TimeInterval", _IN),
    (18, "mtaGroupLastOutboundActivity", _K.INTEGER, "TimeInterval", _OUT),
    (19, "mtaGroupRejectedInboundAssociations", _K.COUNTER32, "Counter32", _IN),
    (20, "mtaGroupFailedOutboundAssociations", _K.COUNTER32, "Counter32", _OUT),
    (21, "mtaGroupInboundRejectionReason", _K.OCTET_STRING, "DisplayString", _IN),
    (22, "mtaGroupOutboundConnectFailureReason", _K.OCTET_STRING, "DisplayString", _OUT),
    (23, "mtaGroupScheduledRetry", _K.INTEGER, "TimeInterval", _OUT),
    (24, "mtaGroupMailProtocol", _K.OBJECT_IDENTIFIER, "OBJECT IDENTIFIER", _A),
    (25, "mtaGroupName", _K.OCTET_STRING, "DisplayString", _A),
))

#: mtaGroupAssociationTable's one column (instance .applIndex.mtaGroupIndex.assocIndex).
MTA_GROUP_ASSOCIATION_COLUMNS = _columns(MTA_GROUP_ASSOCIATION_ENTRY, MTA_MIB, (
    (1, "mtaGroupAssociationIndex", _K.INTEGER, "INTEGER", _A),
))

#: Every served object type, in OID order.
ALL_COLUMNS: tuple[Column, ...] = (
    SYSTEM_SCALARS + APPL_COLUMNS + ASSOC_COLUMNS
    + MTA_COLUMNS + MTA_GROUP_COLUMNS + MTA_GROUP_ASSOCIATION_COLUMNS
)

COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in ALL_COLUMNS}


# --- the agent's own objects ---------------------------------------------------------------------

SNMP_GROUP: Oid = (*MIB_2, 11)  # SNMPv2-MIB snmp group
SNMP_ENGINE: Oid = (1, 3, 6, 1, 6, 3, 10, 2, 1)  # SNMP-FRAMEWORK-MIB snmpEngine
SNMP_MPD_STATS: Oid = (1, 3, 6, 1, 6, 3, 11, 2, 1)  # SNMP-MPD-MIB snmpMPDStats
SNMP_TARGET_OBJECTS: Oid = (1, 3, 6, 1, 6, 3, 12, 1)  # SNMP-TARGET-MIB snmpTargetObjects
USM_STATS: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1)  # SNMP-USER-BASED-SM-MIB usmStats

SNMP_FRAMEWORK_MIB = "SNMP-FRAMEWORK-MIB"
SNMP_MPD_MIB = "SNMP-MPD-MIB"
SNMP_TARGET_MIB = "SNMP-TARGET-MIB"
SNMP_USM_MIB = "SNMP-USER-BASED-SM-MIB"


def _scalars(base: Oid, module: str,
             rows: tuple[tuple[int, str, Kind, str], ...]) -> tuple[Column, ...]:
    return tuple(Column((*base, sub), name, module, kind, syntax)
                 for sub, name, kind, syntax in rows)


#: Scalars (instance .0) whose values live in the protocol engine, not in the counters
#: database: the SNMP entity's own statistics and identity. They are read at the moment of
#: each request (`View.build(…, live=AGENT_SCALARS)`), in OID order. The snmp group is RFC 3418's
#: current snmpGroup (the RFC 1213 per-PDU counters are obsolete and not served).
AGENT_SCALARS: tuple[Column, ...] = (
    *_scalars(SNMP_GROUP, SNMPV2_MIB, (
        (1, "snmpInPkts", _K.COUNTER32, "Counter32"),
        (3, "snmpInBadVersions", _K.COUNTER32, "Counter32"),
        (4, "snmpInBadCommunityNames", _K.COUNTER32, "Counter32"),
        (5, "snmpInBadCommunityUses", _K.COUNTER32, "Counter32"),
        (6, "snmpInASNParseErrs", _K.COUNTER32, "Counter32"),
        (30, "snmpEnableAuthenTraps", _K.INTEGER, "INTEGER"),
        (31, "snmpSilentDrops", _K.COUNTER32, "Counter32"),
        (32, "snmpProxyDrops", _K.COUNTER32, "Counter32"),
    )),
    *_scalars(SNMP_ENGINE, SNMP_FRAMEWORK_MIB, (
        (1, "snmpEngineID", _K.OCTET_STRING, "SnmpEngineID"),
        (2, "snmpEngineBoots", _K.INTEGER, "INTEGER"),
        (3, "snmpEngineTime", _K.INTEGER, "INTEGER"),
        (4, "snmpEngineMaxMessageSize", _K.INTEGER, "INTEGER"),
    )),
    *_scalars(SNMP_MPD_STATS, SNMP_MPD_MIB, (
        (1, "snmpUnknownSecurityModels", _K.COUNTER32, "Counter32"),
        (2, "snmpInvalidMsgs", _K.COUNTER32, "Counter32"),
        (3, "snmpUnknownPDUHandlers", _K.COUNTER32, "Counter32"),
    )),
    *_scalars(SNMP_TARGET_OBJECTS, SNMP_TARGET_MIB, (
        (4, "snmpUnavailableContexts", _K.COUNTER32, "Counter32"),
        (5, "snmpUnknownContexts", _K.COUNTER32, "Counter32"),
    )),
    *_scalars(USM_STATS, SNMP_USM_MIB, (
        (1, "usmStatsUnsupportedSecLevels", _K.COUNTER32, "Counter32"),
        (2, "usmStatsNotInTimeWindows", _K.COUNTER32, "Counter32"),
        (3, "usmStatsUnknownUserNames", _K.COUNTER32, "Counter32"),
        (4, "usmStatsUnknownEngineIDs", _K.COUNTER32, "Counter32"),
        (5, "usmStatsWrongDigests", _K.COUNTER32, "Counter32"),
        (6, "usmStatsDecryptionErrors", _K.COUNTER32, "Counter32"),
    )),
)

#: The subtrees those scalars are in (what the read view grants besides the data).
AGENT_SUBTREES: tuple[Oid, ...] = (SNMP_GROUP, SNMP_ENGINE, SNMP_MPD_STATS, SNMP_TARGET_OBJECTS,
                                   USM_STATS)
