"""The store's named errors.

Every error a caller can cause is a `CountersError` whose message is one line fit to show a
user as it is; the CLI and the agent translate them at their boundary and nothing else.
"""

from __future__ import annotations


class CountersError(Exception):
    """Base class: a one-line, user-facing message; nothing was written."""


class UnknownChannel(CountersError):
    """No channel has that name (or index)."""


class DuplicateChannel(CountersError):
    """A channel with that name exists already."""


class UnknownMessage(CountersError):
    """The message id is not queued in that channel."""


class UnknownAssociation(CountersError):
    """No live association has that index or key in that channel."""


class BadEvent(CountersError):
    """An argument is out of range or malformed, or the event does not fit the channel."""


class DatabaseError(CountersError):
    """The database cannot be opened, read or written: locked, read-only, corrupt, newer schema."""
