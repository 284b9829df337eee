"""mailmib's counter store: per-channel mail traffic counters in SQLite."""

from counters.errors import (
    BadEvent,
    CountersError,
    DatabaseError,
    DuplicateChannel,
    UnknownAssociation,
    UnknownChannel,
    UnknownMessage,
)
from counters.snapshot import (
    SMTP_PROTOCOL,
    AssociationSnapshot,
    ChannelSnapshot,
    Direction,
    MtaTotals,
    RemoteKind,
    Snapshot,
)
from counters.store import DEFAULT_DB_PATH, Store

__all__ = [
    "DEFAULT_DB_PATH",
    "SMTP_PROTOCOL",
    "AssociationSnapshot",
    "BadEvent",
    "ChannelSnapshot",
    "CountersError",
    "DatabaseError",
    "Direction",
    "DuplicateChannel",
    "MtaTotals",
    "RemoteKind",
    "Snapshot",
    "Store",
    "UnknownAssociation",
    "UnknownChannel",
    "UnknownMessage",
]
__version__ = "0.1.0"
