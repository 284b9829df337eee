"""Counters databases with realistic traffic, built through the public `counters.Store` API.

A channel is inbound (like smtpd), outbound (like smtp) or both (like a relay). Inbound sides
open and close associations (a few stay live), receive messages (sizes and recipients drawn
from plausible ranges), reject some, refuse some connections with an SMTP reason. Outbound
sides get messages handed over from inbound channels (`transfer`), transmit most and keep some
queued, fail some connections and schedule retries. Every time is within the last hour, so the
TimeInterval columns have real values. Deterministic for a given size (seeded).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from counters import Store
from counters.snapshot import Direction, RemoteKind

SMTP = "1.3.6.1.2.1.27.4.25"
LMTP = "1.3.6.1.2.1.27.4.24"
SUBMISSION = "1.3.6.1.2.1.27.4.587"

REJECTIONS = (
    "550 5.1.1 <info@example.org>: Recipient address rejected: User unknown",
    "554 5.7.1 Service unavailable; Client host [192.0.2.44] blocked",
    "452 4.3.1 Insufficient system storage",
    "550 5.7.1 Message rejected as spam by content filter",
)
REFUSALS = (
    "421 4.7.0 Too many connections from 198.51.100.9",
    "554 5.7.1 Client host rejected: cannot find your hostname",
    "too many errors after RCPT from unknown[203.0.113.5]",
)
FAILURES = (
    "connect to mx.example.net[192.0.2.7]:25: Connection timed out",
    "Host or domain name not found. Name service error for name=mx.invalid",
    "connect to mx2.example.com[198.51.100.2]:25: Connection refused",
    "TLS handshake failed with mx.example.org[203.0.113.8]:25",
)
REMOTES = ("mx.example.org", "mail.example.net", "smtp.example.com", "relay.example.edu",
           "mx1.example.info", "client.example.org")

#: Events are committed this many at a time (`store.batch()`).
BATCH = 2000


def _name(direction: Direction, number: int) -> str:
    prefix = {Direction.IN: "smtpd-in", Direction.OUT: "smtp-out", Direction.BOTH: "relay"}
    return f"{prefix[direction]}-{number:05d}"


def build(path: Path, channels: int, *, seed: int | None = None) -> dict[str, int]:
    """Create `path` with `channels` channels of traffic; counts of what was written."""
    rng = random.Random(seed if seed is not None else channels)
    now = time.time()
    counts = {"channels": channels, "events": 0, "live_associations": 0, "queued": 0}
    plan: list[tuple[str, Direction]] = []
    for number in range(1, channels + 1):
        roll = rng.random()
        direction = (Direction.IN if roll < 0.35 else
                     Direction.OUT if roll < 0.70 else Direction.BOTH)
        plan.append((_name(direction, number), direction))
    inbound = [name for name, d in plan if d.inbound]

    with Store(path) as store:
        pending: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

        def flush() -> None:
            with store.batch():
                for method, args, kwargs in pending:
                    getattr(store, method)(*args, **kwargs)
            counts["events"] += len(pending)
            pending.clear()

        def event(method: str, *args: object, **kwargs: object) -> None:
            pending.append((method, args, kwargs))
            if len(pending) >= BATCH:
                flush()

        for name, direction in plan:
            protocol = rng.choices((SMTP, LMTP, SUBMISSION), weights=(8, 1, 1))[0]
            event("add_channel", name, direction=direction, protocol=protocol)
        flush()

        queued: dict[str, list[str]] = {name: [] for name in inbound}
        serial = 0
        for name, direction in plan:
            if direction.inbound:
                for _ in range(rng.randint(1, 3)):
                    key = f"s{serial}"
                    serial += 1
                    at = now - rng.uniform(60, 3600)
                    event("open_inbound", name, remote=rng.choice(REMOTES), key=key, at=at,
                          remote_kind=RemoteKind.UA if rng.random() < 0.1 else RemoteKind.PEER)
                    if rng.random() < 0.8:
                        event("close_association", name, key=key, at=at + rng.uniform(1, 50))
                    else:
                        counts["live_associations"] += 1
                for _ in range(rng.randint(1, 6)):
                    message = f"{name}.{serial}"
                    serial += 1
                    event("receive", name, message, octets=int(rng.lognormvariate(9.5, 1.2)),
                          recipients=rng.randint(1, 4), at=now - rng.uniform(1, 3500))
                    queued[name].append(message)
                if rng.random() < 0.3:
                    event("reject", name, reason=rng.choice(REJECTIONS))
                if rng.random() < 0.2:
                    event("refuse_inbound", name, reason=rng.choice(REFUSALS))
            if direction.outbound:
                for _ in range(rng.randint(0, 2)):
                    key = f"s{serial}"
                    serial += 1
                    at = now - rng.uniform(60, 3600)
                    event("open_outbound", name, remote=rng.choice(REMOTES), key=key, at=at)
                    if rng.random() < 0.85:
                        event("close_association", name, key=key, at=at + rng.uniform(1, 50))
                    else:
                        counts["live_associations"] += 1
                if rng.random() < 0.25:
                    event("fail_outbound", name, reason=rng.choice(FAILURES))
                    event("schedule_retry", name, retry_at=now + rng.uniform(60, 1800))
        flush()

        # Hand messages from inbound channels to outbound ones; transmit most of them.
        outbound = [name for name, d in plan if d.outbound]
        for name in outbound:
            for _ in range(rng.randint(1, 4)):
                source = rng.choice(inbound) if inbound else None
                if source is None or source == name or not queued[source]:
                    message = f"{name}.{serial}"
                    serial += 1
                    event("transmit", name, message, octets=int(rng.lognormvariate(9.5, 1.2)),
                          recipients=rng.randint(1, 3), at=now - rng.uniform(1, 3000))
                    continue
                message = queued[source].pop()
                event("transfer", source, name, message, at=now - rng.uniform(1, 3000))
                if rng.random() < 0.8:
                    event("transmit", name, message, at=now - rng.uniform(1, 2000))
        flush()
        snapshot = store.snapshot()
    counts["queued"] = snapshot.mta.stored_messages
    counts["live_associations"] = len(snapshot.associations)
    return counts
