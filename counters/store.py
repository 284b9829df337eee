"""The counter store: the one write API, in MTA-MIB terms, and `snapshot()`.

CONTRACT SKELETON — the method signatures and their documented semantics are the interface the
CLI, the agent and mail pipelines rely on. Implementations fill in the bodies.

Rules every method keeps:
- Each call is one short transaction (`BEGIN IMMEDIATE`, busy timeout): all of it or none.
- Bad arguments raise a `CountersError` subclass with a one-line message before anything is
  written. SQLite failures (locked past the timeout, read-only, corrupt, newer schema) become
  `DatabaseError` with a one-line message.
- `at` is a wall-clock time (seconds since the epoch); None means now.
- Channels are named by `name` (str). Message ids are non-empty printable ASCII without
  whitespace, at most 255 characters. Octets and recipients are integers >= 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from counters.snapshot import SMTP_PROTOCOL, Direction, RemoteKind, Snapshot

DEFAULT_DB_PATH = Path("var/mailmib.db")


class Store:
    """A handle on one SQLite counters database. Cheap to open; not shared between threads."""

    def __init__(self, path: str | Path = DEFAULT_DB_PATH, *, create: bool = True,
                 busy_timeout: float = 10.0) -> None:
        """Open (and with `create`, create and migrate) the database at `path`.

        New files and their directory are created owner-only (0600/0700). With `create=False` a
        missing file is a `DatabaseError` (the agent and `counters show` read, they do not
        create by accident... the agent does create on first use; see agent docs).
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the MTA (applTable row) -------------------------------------------------------

    def set_mta(self, *, name: str | None = None, version: str | None = None) -> None:
        """Set applName / applVersion (DisplayStrings, at most 255 printable ASCII characters)."""
        raise NotImplementedError

    # --- channels ------------------------------------------------------------------------

    def add_channel(self, name: str, *, direction: Direction = Direction.BOTH,
                    protocol: str = SMTP_PROTOCOL) -> int:
        """Create a channel and return its index (mtaGroupIndex).

        Indexes start at 1, are assigned once and never reused or renumbered. `name` is
        non-empty printable ASCII, at most 255 characters, unique. `protocol` is a dotted OID.
        """
        raise NotImplementedError

    def ensure_channel(self, name: str, *, direction: Direction = Direction.BOTH,
                       protocol: str = SMTP_PROTOCOL) -> int:
        """The index of channel `name`, creating it (with these settings) if it is missing."""
        raise NotImplementedError

    # --- messages ------------------------------------------------------------------------

    def receive(self, channel: str, message_id: str, *, octets: int, recipients: int,
                at: float | None = None) -> None:
        """A message was received into `channel` and is now queued there.

        Channel: received messages/octets/recipients += 1/octets/recipients; the message joins
        the channel's queue (enqueued at `at`). MTA: if no channel holds `message_id`, it is
        new to the MTA and mtaTable received += 1/octets/recipients. Needs an inbound side
        (BadEvent otherwise); BadEvent if the id is already queued in that channel.
        """
        raise NotImplementedError

    def transmit(self, channel: str, message_id: str, *, octets: int | None = None,
                 recipients: int | None = None, at: float | None = None) -> None:
        """A copy of the message was sent out of the MTA by `channel`.

        If queued in the channel: octets default to the queued size and recipients to all the
        remaining queued recipients; the given recipients are taken off the queued ones and
        the message leaves the queue when none remain. If not queued, `octets` and
        `recipients` are required (BadEvent otherwise) and nothing is dequeued. Channel and MTA:
        transmitted += 1/octets/recipients. Needs an outbound side.
        """
        raise NotImplementedError

    def transfer(self, source: str, destination: str, message_id: str, *,
                 recipients: int | None = None, at: float | None = None) -> None:
        """Hand a queued message (or some of its recipients) from one channel to another.

        The message (size as queued; recipients as given, default all remaining) leaves or is
        reduced in `source`'s queue and joins `destination`'s (enqueued at `at`). Counts as
        transmitted by `source` if it has an outbound side and received by `destination` if it
        has an inbound side. The MTA totals do not change: the message never left the MTA.
        UnknownMessage if not queued in `source`.
        """
        raise NotImplementedError

    def remove(self, channel: str, message_id: str, *, at: float | None = None) -> None:
        """The message left the channel's queue without being transmitted (bounced, expired,
        deleted). No counter moves; only the stored values fall. UnknownMessage if not queued.
        """
        raise NotImplementedError

    def reject(self, channel: str, *, reason: str = "", at: float | None = None) -> None:
        """The channel refused a message: rejected messages += 1; the reason is kept as the
        channel's last message rejection reason. Needs an inbound side."""
        raise NotImplementedError

    # --- associations --------------------------------------------------------------------

    def open_inbound(self, channel: str, *, remote: str = "", key: str | None = None,
                     remote_kind: RemoteKind = RemoteKind.PEER, at: float | None = None) -> int:
        """An inbound association (the channel is the responder) was opened.

        Returns its assocIndex (unique among the MTA's associations, never reused). `key` is an
        optional caller-chosen name (e.g. 'smtpd[1234]') unique among the channel's live
        associations, so a log follower can close it later without keeping the index.
        accumulated inbound += 1; last inbound activity = at; inbound rejection reason = "".
        """
        raise NotImplementedError

    def open_outbound(self, channel: str, *, remote: str = "", key: str | None = None,
                      remote_kind: RemoteKind = RemoteKind.PEER, at: float | None = None) -> int:
        """An outbound association (the channel is the initiator) was opened; as above, with
        accumulated outbound, last outbound activity, and outbound failure reason = ""."""
        raise NotImplementedError

    def close_association(self, channel: str, *, index: int | None = None,
                          key: str | None = None, at: float | None = None) -> None:
        """A live association of the channel ended (give exactly one of index or key).
        Updates the last inbound/outbound activity time. UnknownAssociation if not live."""
        raise NotImplementedError

    def refuse_inbound(self, channel: str, *, reason: str, at: float | None = None) -> None:
        """The channel refused an inbound association: rejected inbound += 1 (not counted in
        the accumulated total); inbound rejection reason = reason (at most 255 characters,
        longer is cut)."""
        raise NotImplementedError

    def fail_outbound(self, channel: str, *, reason: str, at: float | None = None) -> None:
        """An outbound association attempt failed: failed outbound += 1 (not in the
        accumulated total); outbound failure reason = reason (cut at 255)."""
        raise NotImplementedError

    def schedule_retry(self, channel: str, *, retry_at: float | None) -> None:
        """The channel will next try to connect at `retry_at` (None: no retry scheduled)."""
        raise NotImplementedError

    # --- reading and resetting -----------------------------------------------------------

    def snapshot(self, *, at: float | None = None) -> Snapshot:
        """Every value at one instant, from one read transaction."""
        raise NotImplementedError

    def clear(self, channels: Iterable[str] | None = None, *, at: float | None = None) -> None:
        """Zero the cumulative counters of the named channels (all when None).

        Queues and live associations stay (they are the present, not history); reasons go back
        to never. Any clear moves `restarted_at` to `at` so pollers see the reset; clearing
        all channels also zeroes the MTA's cumulative totals.
        """
        raise NotImplementedError
