"""Follow a growing log file into the store, exactly once, across rotations and crashes.

`LogFollower` reads complete lines from a file and hands them, a batch at a time, to a sink
(`PostfixFeed.apply`) inside one `Store.batch()` that also saves the follower's position: the
file's identity (device, inode and first bytes) and the offset after the last line applied.
Either the events of a batch and its position are committed together or neither is, so a
follower killed at any point and restarted resumes at the first line not applied: no line is
lost or counted twice.

What it copes with:
- **A log that does not exist yet**: it waits for it and starts at its beginning.
- **Rotation by rename and create** (logrotate's default, `postfix logrotate`): it reads the
  old file (still open) to its end, then starts the new one at offset 0. If it was stopped
  meanwhile, it finds the old file again by device and inode among the rotated names beside
  it (`mail.log.1`, `mail.log-20240501` …) and reads the rest of it first.
- **copytruncate**: the file shrinks (or its first bytes change) under the same inode; the
  lines written before the copy that were not read yet are read from the copy (found by its
  first bytes), then the file is read again from 0.
- **Partial lines**: only lines ending in a newline are applied; the rest waits (the last
  line of a rotated-away file is applied as it is).
- **Huge lines**: a line longer than `max_line` is not kept in memory; it is handed on as
  its first `max_line + 1` bytes (the Postfix feed counts it as `oversized`).
- **A locked or failing database**: the batch is rolled back and read again later.

Batches hold up to `max_lines` lines or what arrived within `max_seconds`, so a busy log costs
one commit per batch, not per line.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from counters.errors import CountersError
from counters.store import HEAD_BYTES, LogPosition, Store

CHUNK = 65536
#: Rotated copies are looked for among names that start with the log's name and do not end
#: in one of these (compressed copies cannot be read back).
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")


class LineSink(Protocol):
    """Receives complete lines (without the newline) inside the follower's batch."""

    def apply(self, lines: Sequence[bytes]) -> None: ...


@dataclass
class _Open:
    """The file being read, and where."""

    file: BinaryIO
    device: int
    inode: int
    head: bytes


class LogFollower:
    """Follows `path` into `store` under the name `source`; `sink` turns lines into events."""

    def __init__(self, store: Store, path: str | Path, sink: LineSink, *, source: str,
                 start_at_end: bool = False, max_lines: int = 1000, max_seconds: float = 0.2,
                 poll: float = 0.2, max_line: int = 16384,
                 warn: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.path = Path(path)
        self.sink = sink
        self.source = source
        self.max_lines = max_lines
        self.max_seconds = max_seconds
        self.poll = poll
        self.max_line = max_line
        self._warn = warn or (lambda text: None)
        self._current: _Open | None = None
        self._committed = 0         # offset of the first line not applied (saved)
        self._consumed = 0          # the same, counting lines handed out in this batch
        self._read_at = 0           # where the next read starts
        self._buffer = bytearray()  # bytes from _consumed to _read_at (a prefix if skipping)
        self._skipping = False      # inside a line longer than max_line
        #: lines applied by this follower, and batches that failed in a row
        self.applied = 0
        self.failures = 0
        self._resume(start_at_end)

    # --- opening ---------------------------------------------------------------------------

    def _open(self, path: Path) -> _Open | None:
        try:
            file = open(path, "rb")  # noqa: SIM115 - kept open across calls, closed in _close
        except FileNotFoundError:
            return None
        stat = os.fstat(file.fileno())
        head = os.pread(file.fileno(), HEAD_BYTES, 0)
        return _Open(file, stat.st_dev, stat.st_ino, head)

    def _at(self, opened: _Open | None, offset: int) -> None:
        if self._current is not None and (opened is None
                                          or opened.file is not self._current.file):
            self._current.file.close()
        self._current = opened
        self._committed = self._consumed = self._read_at = offset
        self._buffer = bytearray()
        self._skipping = False

    def _resume(self, start_at_end: bool) -> None:
        saved = self.store.log_position(self.source)
        opened = self._open(self.path)
        if saved is None:
            offset = 0
            if opened is not None and start_at_end:
                offset = self._line_end_before(opened, os.fstat(opened.file.fileno()).st_size)
            self._at(opened, offset)
            if opened is not None:
                self._commit([], offset)
            return
        if opened is not None and self._same(opened, saved):
            size = os.fstat(opened.file.fileno()).st_size
            if size >= saved.offset:
                self._at(opened, saved.offset)
                return
        old = self._find_previous(saved, exclude=opened)
        if old is not None:
            if opened is not None:
                opened.file.close()
            self._at(old, saved.offset)  # read the rest of it; then the rotation check
            return                       # moves on to self.path
        self._warn(f"{self.path}: the file last read (inode {saved.inode}) is gone; reading"
                   f" {self.path} from its beginning")
        self._at(opened, 0)
        if opened is not None:
            self._commit([], 0)

    @staticmethod
    def _same(opened: _Open, saved: LogPosition) -> bool:
        return ((opened.device, opened.inode) == (saved.device, saved.inode)
                and opened.head[:len(saved.head)] == saved.head)

    def _candidates(self) -> list[Path]:
        directory = self.path.parent
        name = self.path.name
        try:
            entries = list(directory.iterdir())
        except OSError:
            return []
        found = [p for p in entries if p.name != name and p.name.startswith(name)
                 and not p.name.endswith(COMPRESSED) and p.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def _find_previous(self, saved: LogPosition, *, exclude: _Open | None) -> _Open | None:
        """The file `saved` was taken in, now under a rotated name: the same inode (renamed)
        or, failing that, the same first bytes and at least `saved.offset` long (a copy)."""
        by_head: _Open | None = None
        for path in self._candidates():
            opened = self._open(path)
            if opened is None:
                continue
            if exclude is not None and (opened.device, opened.inode) == (exclude.device,
                                                                         exclude.inode):
                opened.file.close()
                continue
            size = os.fstat(opened.file.fileno()).st_size
            if self._same(opened, saved) and size >= saved.offset:
                if by_head is not None:
                    by_head.file.close()
                return opened
            if (by_head is None and saved.head and opened.head[:len(saved.head)] == saved.head
                    and size >= saved.offset):
                by_head = opened
                continue
            opened.file.close()
        return by_head

    @staticmethod
    def _line_end_before(opened: _Open, size: int) -> int:
        """The offset just after the last newline before `size` (0 if none in the last
        64 KiB): where to start so that no partial line is read."""
        start = max(0, size - CHUNK)
        data = os.pread(opened.file.fileno(), size - start, start)
        index = data.rfind(b"\n")
        return start + index + 1 if index >= 0 else start if start else 0

    # --- reading -----------------------------------------------------------------------

    def _take_lines(self, lines: list[bytes], limit: int) -> None:
        """Move complete lines from the buffer to `lines` (at most `limit`)."""
        buffer = self._buffer
        while len(lines) < limit and not self._skipping:
            index = buffer.find(b"\n")
            if index < 0:
                if len(buffer) > self.max_line:
                    self._skipping = True
                    del buffer[self.max_line + 1:]
                return
            lines.append(bytes(buffer[:min(index, self.max_line + 1)]))
            del buffer[:index + 1]
            self._consumed += index + 1

    def _feed(self, chunk: bytes, lines: list[bytes]) -> None:
        """Add bytes read at `_read_at` to the buffer (or skip them inside a huge line)."""
        if self._skipping:
            index = chunk.find(b"\n")
            if index < 0:
                self._read_at += len(chunk)
                return
            lines.append(bytes(self._buffer))
            self._consumed = self._read_at + index + 1
            self._read_at += len(chunk)
            self._buffer = bytearray(chunk[index + 1:])
            self._skipping = False
            return
        self._buffer += chunk
        self._read_at += len(chunk)

    def _read(self) -> bytes:
        assert self._current is not None
        return os.pread(self._current.file.fileno(), CHUNK, self._read_at)

    def _rotated(self) -> tuple[str, _Open | None] | None:
        """At the end of the current file: has it been replaced or truncated? Returns
        ('new', file at self.path) or ('truncated', the copy holding the unread rest, or
        None), or None if the current file is still the one to read."""
        current = self._current
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None  # renamed away, not yet recreated: keep reading the old one
        if current is None:
            opened = self._open(self.path)
            return ("new", opened) if opened is not None else None
        if (stat.st_dev, stat.st_ino) != (current.device, current.inode):
            opened = self._open(self.path)
            return ("new", opened) if opened is not None else None
        return self._truncated()

    def _truncated(self) -> tuple[str, _Open | None] | None:
        """Has the current file been truncated in place (copytruncate), perhaps refilled?
        Then ('truncated', the copy holding what was not read yet, or None)."""
        current = self._current
        if current is None:
            return None
        size = os.fstat(current.file.fileno()).st_size
        head = os.pread(current.file.fileno(), len(current.head), 0)
        if size >= self._read_at and head == current.head:
            return None
        saved = LogPosition(current.device, current.inode, current.head, self._read_at)
        copy = self._find_previous(saved, exclude=current) if current.head else None
        return "truncated", copy

    # --- batches ---------------------------------------------------------------------

    def step(self) -> bool:
        """Read and apply one batch; whether anything was applied or the file changed."""
        lines: list[bytes] = []
        switch: _Open | None = None
        deadline = time.monotonic() + self.max_seconds
        if self._current is None:
            rotated = self._rotated()
            if rotated is None or rotated[1] is None:
                return False
            self._at(rotated[1], 0)
            self._commit([], 0)
            return True
        checked = False
        while len(lines) < self.max_lines:
            self._take_lines(lines, self.max_lines)
            if len(lines) >= self.max_lines or (lines and time.monotonic() > deadline):
                break
            # Before reading on, make sure the bytes at our offset still follow what we read.
            rotated = None if checked else self._truncated()
            checked = True
            chunk = b"" if rotated else self._read()
            if chunk:
                self._feed(chunk, lines)
                continue
            rotated = rotated or self._rotated()
            if rotated is None:
                break
            kind, other = rotated
            if kind == "new":
                chunk = self._read()  # the writer may have written after our last read
                if chunk:
                    assert other is not None
                    other.file.close()
                    self._feed(chunk, lines)
                    continue
                self._last_line(lines)
                switch = other
                break
            # truncated: read the unread rest from the copy, then the file from 0
            if other is not None:
                lines.extend(self._rest_of(other))
                other.file.close()
            else:
                self._warn(f"{self.path} was truncated; lines written after offset"
                           f" {self._read_at} and before the truncation are lost")
            self._last_line(lines)
            current = self._current
            assert current is not None  # the same inode, read again from its start
            switch = _Open(current.file, current.device, current.inode,
                           os.pread(current.file.fileno(), HEAD_BYTES, 0))
            break
        if switch is not None:
            return self._commit(lines, 0, switch=switch)
        if not lines:
            return False
        return self._commit(lines, self._consumed)

    def _last_line(self, lines: list[bytes]) -> None:
        """The file will not grow any more: what remains in the buffer is its last line."""
        if self._buffer:
            lines.append(bytes(self._buffer[:self.max_line + 1]))
        self._buffer = bytearray()
        self._skipping = False

    def _rest_of(self, copy: _Open) -> list[bytes]:
        """The lines of a copytruncate copy after what was read from the original."""
        lines: list[bytes] = []
        offset = self._read_at
        while chunk := os.pread(copy.file.fileno(), CHUNK, offset):
            offset += len(chunk)
            self._feed(chunk, lines)
            self._take_lines(lines, 1 << 62)
        self._last_line(lines)
        return lines

    def _commit(self, lines: list[bytes], offset: int, *, switch: _Open | None = None) -> bool:
        """Apply `lines` and save the position (offset in `switch` if given, else in the
        current file) in one transaction. On a database error, undo what was read and
        return False: the same lines are read again next time."""
        target = switch if switch is not None else self._current
        if target is None:
            return False
        if len(target.head) < HEAD_BYTES:
            head = os.pread(target.file.fileno(), HEAD_BYTES, 0)
            if head.startswith(target.head):
                target.head = head
        position = LogPosition(target.device, target.inode, target.head, offset)
        target_file = self._current.file if self._current is not None else None
        try:
            with self.store.batch():
                if lines:
                    self.sink.apply(lines)
                self.store.save_log_position(self.source, position)
        except CountersError as exc:
            self._warn(f"cannot apply {len(lines)} lines of {self.path}: {exc}; retrying")
            self.failures += 1
            if switch is not None and switch.file is not target_file:
                switch.file.close()
            self._buffer = bytearray()
            self._skipping = False
            self._consumed = self._read_at = self._committed
            return False
        self.applied += len(lines)
        self.failures = 0
        if switch is not None:
            self._at(switch, offset)
        else:
            self._committed = offset
        return True

    def run(self, stop: threading.Event, *, once: bool = False,
            on_idle: Callable[[], None] | None = None) -> None:
        """Apply batches until `stop` is set (or, with `once`, until the end of the file).
        `on_idle` runs whenever the follower has caught up."""
        while not stop.is_set():
            try:
                progressed = self.step()
            except OSError as exc:
                self._warn(f"reading {self.path}: {exc}")
                self.failures += 1
                progressed = False
            if progressed:
                continue
            if once:
                return
            if on_idle is not None and not self.failures:
                on_idle()
            stop.wait(min(self.poll * (1 + self.failures), 5.0))

    def close(self) -> None:
        if self._current is not None:
            with contextlib.suppress(OSError):
                self._current.file.close()
            self._current = None
