"""Frozen, plain-value pictures of the store at one instant.

A `Snapshot` is what the store hands to everything that reads: the `counters show` dump and
the agent's MIB view. It holds exact values (octets, not kilo-octets; unbounded integers, not
Counter32) and wall-clock times (seconds since the epoch, as `time.time()` gives them); the
SNMP rules (K-octets, wrap, clamps, TimeInterval/TimeStamp) are applied only where values are
served. Nothing here touches SQLite, so tests can build snapshots by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """Which side of the MTA a channel works on.

    `IN` channels receive (inbound associations, received/rejected messages); `OUT` channels
    transmit (outbound associations, transmitted messages, retries); `BOTH` do both. Every
    channel has a queue, so the stored values exist for all three. The MIB view leaves the
    columns of an unused side absent, as RFC 1566 asks.
    """

    IN = "in"
    OUT = "out"
    BOTH = "both"

    @property
    def inbound(self) -> bool:
        return self is not Direction.OUT

    @property
    def outbound(self) -> bool:
        return self is not Direction.IN


#: The default mtaGroupMailProtocol: SMTP as `{applTCPProtoID 25}` (RFC 1565/2788).
SMTP_PROTOCOL = "1.3.6.1.2.1.27.4.25"


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """One channel (an mtaGroupTable row) at the snapshot's instant.

    Cumulative values count since the channel was created or last cleared. Times are wall-clock
    seconds or None when the event never happened. A reason is None when no attempt was made
    since the last clear (served as 'never'), "" when the last attempt succeeded.
    """

    index: int
    name: str
    protocol: str
    direction: Direction
    created_at: float
    received_messages: int
    rejected_messages: int
    transmitted_messages: int
    received_octets: int
    transmitted_octets: int
    received_recipients: int
    transmitted_recipients: int
    stored_messages: int
    stored_octets: int
    stored_recipients: int
    oldest_stored_at: float | None
    inbound_associations: int
    outbound_associations: int
    accumulated_inbound_associations: int
    accumulated_outbound_associations: int
    rejected_inbound_associations: int
    failed_outbound_associations: int
    last_inbound_activity: float | None
    last_outbound_activity: float | None
    inbound_rejection_reason: str | None
    outbound_failure_reason: str | None
    last_message_rejection_reason: str | None
    next_retry_at: float | None


@dataclass(frozen=True, slots=True)
class MtaTotals:
    """The MTA as a whole (the mtaTable row).

    A message handed from one channel to another counts once here: received when it first
    enters any channel's queue, stored while any channel holds it (its octets once, its
    recipients summed over the channels holding it), transmitted per copy sent out of the MTA.
    """

    received_messages: int
    received_octets: int
    received_recipients: int
    stored_messages: int
    stored_octets: int
    stored_recipients: int
    transmitted_messages: int
    transmitted_octets: int
    transmitted_recipients: int


class RemoteKind(StrEnum):
    """Whether the far end of an association is a peer MTA or a user agent (client)."""

    PEER = "peer"
    UA = "ua"


@dataclass(frozen=True, slots=True)
class AssociationSnapshot:
    """One live association (an assocTable row; also an mtaGroupAssociationTable row)."""

    index: int
    channel_index: int
    inbound: bool
    remote: str
    remote_kind: RemoteKind
    protocol: str
    opened_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the store knows, read in one transaction at `taken_at`.

    `restarted_at` is when the MTA's counters last began from zero (database created, or
    counters cleared): the agent serves it as applUptime/applLastChange so a poller can tell a
    reset from a Counter32 wrap. `database_id` changes when the database file is recreated.
    Channels are ordered by index, associations by index.
    """

    taken_at: float
    appl_index: int
    appl_name: str
    appl_version: str
    restarted_at: float
    database_id: str
    mta: MtaTotals
    channels: tuple[ChannelSnapshot, ...]
    associations: tuple[AssociationSnapshot, ...]

    def channel(self, name: str) -> ChannelSnapshot | None:
        """The channel called `name`, or None."""
        for channel in self.channels:
            if channel.name == name:
                return channel
        return None
