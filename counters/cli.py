"""The `counters` command: record mail events and dump the counters, like `pmdf counters -show`.

Each command is one `Store` call and is named after it (`receive` is `Store.receive`, `inbound
open` is `Store.open_inbound` …). Errors are translated once, in `CountersGroup.invoke`: a
`CountersError` or a bad option value becomes one line on stderr and exit status 1; other
usage errors keep click's own report and status 2.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import click

from counters.errors import CountersError, UnknownChannel
from counters.format import RENDERERS, select
from counters.ingest import ingest as ingest_lines
from counters.snapshot import SMTP_PROTOCOL, Direction, RemoteKind
from counters.store import DEFAULT_DB_PATH, Store

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


# --- the error boundary ------------------------------------------------------------------


class CommandError(click.ClickException):
    """A user error reported as `counters: error: <message>` on one line, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(self.format_message().splitlines())
        click.echo(f"counters: error: {message}", file=file, err=file is None)


class CountersGroup(click.Group):
    """The top-level group: the one place where user errors become one-line messages.

    Sub-commands (and nested groups) parse their arguments and run inside this `invoke`, so
    a store error or a rejected option value from any of them passes through here. A missing
    argument or an unknown option stays click's usage error (usage line, status 2).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CountersError as exc:
            raise CommandError(str(exc)) from None
        except click.BadParameter as exc:
            if isinstance(exc, click.MissingParameter):
                raise
            raise CommandError(exc.format_message()) from None


# --- parameter types -----------------------------------------------------------------------

class SizeType(click.IntRange):
    """Octets and recipients: integers >= 0 (click's range type, named for what it takes)."""

    name = "integer"


SIZE = SizeType(min=0)

DIRECTIONS = click.Choice([d.value for d in Direction])


def iso_time(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An ISO-8601 time (e.g. 2024-05-01T12:00:00Z; UTC unless it has an offset) as seconds
    since the epoch, as the store takes times."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 time (e.g. 2024-05-01T12:00:00Z)", ctx, param
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def msgid_argument(command: F) -> F:
    """MSGID: checked by the store (1 to 255 printable ASCII characters, no whitespace)."""
    return click.argument("message_id", metavar="MSGID")(command)


at_option = click.option(
    "--at", "at", metavar="ISO-TIME", default=None, callback=iso_time,
    help="When the event happened (ISO-8601; UTC unless an offset is given). Default: now.")


# --- the application object ----------------------------------------------------------------


@dataclass(frozen=True)
class AutoCreate:
    """What `--create` asks for: add the event's channel with these settings if it is missing."""

    direction: Direction
    protocol: str


@dataclass(frozen=True)
class App:
    """What the group hands its commands: where the database is, and how to open it."""

    db: Path

    def store(self, *, create: bool) -> Store:
        """Open the store to record; without `create` the database must exist already."""
        if not create:
            self._require_database()
        return Store(self.db, create=create)

    def reader(self) -> Store:
        """Open the store read-only: looking never creates or changes a database."""
        self._require_database()
        return Store(self.db, read_only=True)

    def _require_database(self) -> None:
        if not self.db.exists():
            raise CountersError(
                f"no database at {self.db}; record an event with --create or run "
                "`counters channel add` first")

    def event(self, channels: Sequence[str], call: Callable[[Store], T], *,
              create: AutoCreate | None = None) -> T:
        """Run one event call on the store; with `--create`, add its missing channels first.

        Adding the channels and the event are one batch: if the event fails (a bad argument,
        a direction the new channel does not have), the channels are not added either.
        """
        if create is None and not self.db.exists():
            raise _unknown_channel(channels[0])
        with self.store(create=create is not None) as store:
            if create is None:
                try:
                    return call(store)
                except UnknownChannel:
                    snapshot = store.snapshot()
                    missing = [name for name in channels if snapshot.channel(name) is None]
                    if not missing:
                        raise
                    raise _unknown_channel(missing[0]) from None
            with store.batch():
                for name in channels:
                    store.ensure_channel(name, direction=create.direction,
                                         protocol=create.protocol)
                return call(store)


def _unknown_channel(name: str) -> UnknownChannel:
    """The error for a missing channel, with the way to add it (and `--create` if offered)."""
    hint = f"add it with `counters channel add {name}`"
    command = click.get_current_context().command
    if any(param.name == "create" for param in command.params):
        hint += " or pass --create"
    return UnknownChannel(f"unknown channel {name!r} ({hint})")


def creatable(command: F) -> F:
    """Add `--create`, `--direction` and `--protocol` to an event command.

    The command receives `create: AutoCreate | None`. Whether the chosen direction suits the
    event is the store's call, made in the same batch that adds the channel.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, create: bool, direction: str | None, protocol: str | None,
                **kwargs: Any) -> Any:
        if not create:
            if direction is not None or protocol is not None:
                raise click.UsageError("--direction and --protocol go with --create")
            return command(*args, create=None, **kwargs)
        chosen = Direction(direction or Direction.BOTH)
        return command(*args, create=AutoCreate(chosen, protocol or SMTP_PROTOCOL),
                       **kwargs)

    options = [
        click.option("--create", is_flag=True,
                     help="Add the channel first if it does not exist."),
        click.option("--direction", type=DIRECTIONS, default=None,
                     help="With --create: the new channel's direction [default: both]."),
        click.option("--protocol", metavar="OID", default=None,
                     help="With --create: the new channel's mail protocol "
                          "[default: SMTP, 1.3.6.1.2.1.27.4.25]."),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return cast(F, decorated)


# --- the command tree ----------------------------------------------------------------------


@click.group("counters", cls=CountersGroup,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=click.Path(path_type=Path), envvar="MAILMIB_DB",
              default=DEFAULT_DB_PATH, show_default=True, show_envvar=True,
              help="The counters database.")
@click.version_option(package_name="mailmib")
@click.pass_context
def cli(ctx: click.Context, db: Path) -> None:
    """Record mail traffic events and show mailmib's per-channel counters.

    The counters are the RFC 1566 Mail Monitoring MIB that `mailmib-agent` serves over SNMP.
    Commands that record create the database on first use. Bad input is one line on stderr,
    exit status 1, and nothing is written.

    \b
    Example:
        counters channel add smtpd --direction in
        counters receive smtpd 4BqZ1x2y3 --octets 52431 --recipients 2
        counters show
    """
    ctx.obj = App(db)


@cli.command()
@click.argument("patterns", nargs=-1, metavar="[PATTERN]...")
@click.option("--format", "format_", type=click.Choice(sorted(RENDERERS)), default="text",
              show_default=True, help="text for people; json or csv (exact octets) for tools.")
@click.pass_obj
def show(app: App, patterns: tuple[str, ...], format_: str) -> None:
    """Show the counters of channels matching PATTERN (a name or shell glob; default all).

    Text volume is in K-octets (1024 octets, rounded up), as SNMP serves it; json and csv keep
    exact octets. The MTA block counts each message once, however many channels it crossed.

    \b
    Example:
        counters show
        counters show 'smtp*' --format json
    """
    with app.reader() as store:
        snapshot = store.snapshot()
    click.echo(RENDERERS[format_](select(snapshot, patterns)), nl=False)


@cli.command()
@click.argument("channel")
@msgid_argument
@click.option("--octets", type=SIZE, required=True, help="The message's size in octets.")
@click.option("--recipients", type=SIZE, required=True, help="How many recipients it has.")
@at_option
@creatable
@click.pass_obj
def receive(app: App, channel: str, message_id: str, octets: int, recipients: int,
            at: float | None, create: AutoCreate | None) -> None:
    """A message was received into CHANNEL and is now queued there.

    \b
    Example:
        counters receive smtpd 4BqZ1x2y3 --octets 52431 --recipients 2
    """
    app.event([channel], lambda s: s.receive(channel, message_id, octets=octets,
                                             recipients=recipients, at=at), create=create)


@cli.command()
@click.argument("channel")
@msgid_argument
@click.option("--octets", type=SIZE, default=None,
              help="Size sent [default: the queued size; required if not queued].")
@click.option("--recipients", type=SIZE, default=None,
              help="Recipients sent [default: all still queued; required if not queued].")
@at_option
@creatable
@click.pass_obj
def transmit(app: App, channel: str, message_id: str, octets: int | None,
             recipients: int | None, at: float | None, create: AutoCreate | None) -> None:
    """A copy of MSGID was sent out of the MTA by CHANNEL.

    A queued message leaves the queue once all its recipients are sent.

    \b
    Example:
        counters transmit smtp 4BqZ1x2y3
        counters transmit smtp 4BqZ1x2y3 --recipients 1
    """
    app.event([channel], lambda s: s.transmit(channel, message_id, octets=octets,
                                              recipients=recipients, at=at),
              create=create)


@cli.command()
@click.argument("source")
@click.argument("destination", metavar="DEST")
@msgid_argument
@click.option("--recipients", type=SIZE, default=None,
              help="Recipients handed over [default: all still queued].")
@at_option
@click.pass_obj
def transfer(app: App, source: str, destination: str, message_id: str,
             recipients: int | None, at: float | None) -> None:
    """Hand queued MSGID (or some of its recipients) from SOURCE to DEST inside the MTA.

    Counts as transmitted by SOURCE and received by DEST, not again for the MTA. There is no
    --create: the hand-off could still fail after DEST was added (MSGID not queued in
    SOURCE); add DEST beforehand with `counters channel add DEST --ignore`.

    \b
    Example:
        counters transfer smtpd local 4BqZ1x2y3
    """
    app.event([source, destination],
              lambda s: s.transfer(source, destination, message_id, recipients=recipients,
                                   at=at))


@cli.command()
@click.argument("channel")
@msgid_argument
@at_option
@click.pass_obj
def remove(app: App, channel: str, message_id: str, at: float | None) -> None:
    """MSGID left CHANNEL's queue without being transmitted (bounced, expired, deleted).

    \b
    Example:
        counters remove smtp 4BqZ1x2y3
    """
    app.event([channel], lambda s: s.remove(channel, message_id, at=at))


@cli.command()
@click.argument("channel")
@click.option("--reason", default="", help="Why, e.g. the SMTP reply.")
@at_option
@creatable
@click.pass_obj
def reject(app: App, channel: str, reason: str, at: float | None,
           create: AutoCreate | None) -> None:
    """CHANNEL refused a message.

    \b
    Example:
        counters reject smtpd --reason '554 5.7.1 Relay access denied'
    """
    app.event([channel], lambda s: s.reject(channel, reason=reason, at=at), create=create)


@cli.group()
def inbound() -> None:
    """Inbound associations (sessions): CHANNEL is the responder, e.g. smtpd.

    \b
    Example:
        counters inbound open smtpd --remote mx.example.org --key smtpd-4711
        counters inbound close smtpd --key smtpd-4711
    """


@cli.group()
def outbound() -> None:
    """Outbound associations (sessions): CHANNEL is the initiator, e.g. smtp.

    \b
    Example:
        counters outbound open smtp --remote mx.example.net --key smtp-4712
        counters outbound close smtp --key smtp-4712
    """


def open_options(command: F) -> F:
    """The options `inbound open` and `outbound open` share."""
    for option in reversed([
        click.argument("channel"),
        click.option("--remote", default="", help="The other end, e.g. its host name."),
        click.option("--key", default=None,
                     help="A name to close it by later, unique among CHANNEL's live ones."),
        click.option("--ua", is_flag=True, help="The other end is a user agent, not an MTA."),
        at_option,
    ]):
        command = option(command)
    return command


def close_options(command: F) -> F:
    """The options `inbound close` and `outbound close` share."""
    for option in reversed([
        click.argument("channel"),
        click.option("--index", type=click.IntRange(min=1), default=None,
                     help="The index `open` printed."),
        click.option("--key", default=None, help="The key given to `open`."),
        at_option,
    ]):
        command = option(command)
    return command


def _close(app: App, channel: str, index: int | None, key: str | None,
           at: float | None) -> None:
    if (index is None) == (key is None):
        raise click.UsageError("give exactly one of --index and --key")
    app.event([channel], lambda s: s.close_association(channel, index=index, key=key, at=at))


@inbound.command("open")
@open_options
@creatable
@click.pass_obj
def inbound_open(app: App, channel: str, remote: str, key: str | None, ua: bool,
                 at: float | None, create: AutoCreate | None) -> None:
    """An inbound association of CHANNEL was opened; prints its index.

    \b
    Example:
        counters inbound open smtpd --remote mx.example.org --key smtpd-4711
    """
    kind = RemoteKind.UA if ua else RemoteKind.PEER
    click.echo(app.event([channel], lambda s: s.open_inbound(
        channel, remote=remote, key=key, remote_kind=kind, at=at), create=create))


@inbound.command("close")
@close_options
@click.pass_obj
def inbound_close(app: App, channel: str, index: int | None, key: str | None,
                  at: float | None) -> None:
    """A live inbound association of CHANNEL ended (name it by --index or --key).

    \b
    Example:
        counters inbound close smtpd --key smtpd-4711
        counters inbound close smtpd --index 3
    """
    _close(app, channel, index, key, at)


@inbound.command("refuse")
@click.argument("channel")
@click.option("--reason", required=True, help="Why, e.g. the SMTP greeting refused.")
@at_option
@creatable
@click.pass_obj
def inbound_refuse(app: App, channel: str, reason: str, at: float | None,
                   create: AutoCreate | None) -> None:
    """CHANNEL refused an inbound association (not counted in its total).

    \b
    Example:
        counters inbound refuse smtpd --reason '554 5.7.1 no service for you'
    """
    app.event([channel], lambda s: s.refuse_inbound(channel, reason=reason, at=at),
              create=create)


@outbound.command("open")
@open_options
@creatable
@click.pass_obj
def outbound_open(app: App, channel: str, remote: str, key: str | None, ua: bool,
                  at: float | None, create: AutoCreate | None) -> None:
    """An outbound association of CHANNEL was opened; prints its index.

    \b
    Example:
        counters outbound open smtp --remote mx.example.net --key smtp-4712
    """
    kind = RemoteKind.UA if ua else RemoteKind.PEER
    click.echo(app.event([channel], lambda s: s.open_outbound(
        channel, remote=remote, key=key, remote_kind=kind, at=at), create=create))


@outbound.command("close")
@close_options
@click.pass_obj
def outbound_close(app: App, channel: str, index: int | None, key: str | None,
                   at: float | None) -> None:
    """A live outbound association of CHANNEL ended (name it by --index or --key).

    \b
    Example:
        counters outbound close smtp --key smtp-4712
    """
    _close(app, channel, index, key, at)


@outbound.command("fail")
@click.argument("channel")
@click.option("--reason", required=True, help="Why, e.g. 'connection refused'.")
@at_option
@creatable
@click.pass_obj
def outbound_fail(app: App, channel: str, reason: str, at: float | None,
                  create: AutoCreate | None) -> None:
    """An outbound association attempt of CHANNEL failed (not counted in its total).

    \b
    Example:
        counters outbound fail smtp --reason 'connect to mx.example.net: Connection refused'
    """
    app.event([channel], lambda s: s.fail_outbound(channel, reason=reason, at=at),
              create=create)


@cli.command()
@click.argument("channel")
@click.option("--in", "in_", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="The next attempt is this many seconds from now.")
@click.option("--at", "retry_at", metavar="ISO-TIME", default=None, callback=iso_time,
              help="The next attempt is at this time.")
@click.option("--none", "no_retry", is_flag=True, help="No retry is scheduled.")
@creatable
@click.pass_obj
def retry(app: App, channel: str, in_: float | None, retry_at: float | None, no_retry: bool,
          create: AutoCreate | None) -> None:
    """CHANNEL will next try to connect at a time (or not at all).

    \b
    Example:
        counters retry smtp --in 300
        counters retry smtp --at 2024-05-01T12:05:00Z
        counters retry smtp --none
    """
    if [in_ is not None, retry_at is not None, no_retry].count(True) != 1:
        raise click.UsageError("give exactly one of --in, --at and --none")
    when = time.time() + in_ if in_ is not None else retry_at
    app.event([channel], lambda s: s.schedule_retry(channel, retry_at=when), create=create)


@cli.command()
@click.argument("channels", nargs=-1, metavar="[CHANNEL]...")
@click.option("--all", "all_", is_flag=True, help="Clear every channel and the MTA totals.")
@click.pass_obj
def clear(app: App, channels: tuple[str, ...], all_: bool) -> None:
    """Zero the cumulative counters of CHANNELs, or of everything with --all.

    Queues and live associations stay. Pollers see the reset (applUptime moves).

    \b
    Example:
        counters clear smtpd smtp
        counters clear --all
    """
    if bool(channels) == all_:
        raise click.UsageError("name the channels to clear, or pass --all (not both)")
    with app.store(create=False) as store:
        store.clear(channels or None)


@cli.group()
def channel() -> None:
    """Channels: the rows of the MTA-MIB's mtaGroupTable.

    \b
    Example:
        counters channel add smtpd --direction in
        counters channel list
    """


@channel.command("add")
@click.argument("name")
@click.option("--direction", type=DIRECTIONS, default=Direction.BOTH.value, show_default=True,
              help="in: receives; out: transmits; both.")
@click.option("--protocol", metavar="OID", default=SMTP_PROTOCOL, show_default=True,
              help="The mail protocol, as a dotted OID.")
@click.option("--ignore", is_flag=True,
              help="If NAME exists already, print its index and change nothing.")
@click.pass_obj
def channel_add(app: App, name: str, direction: str, protocol: str, ignore: bool) -> None:
    """Add channel NAME and print its index (fixed for the channel's life).

    With --ignore an existing channel is fine (its settings stay as they are), so a setup
    script can run again.

    \b
    Example:
        counters channel add smtpd --direction in
        counters channel add local --direction both --ignore
    """
    add = Store.ensure_channel if ignore else Store.add_channel
    with app.store(create=True) as store:
        index = add(store, name, direction=Direction(direction), protocol=protocol)
    click.echo(index)


@channel.command("list")
@click.pass_obj
def channel_list(app: App) -> None:
    """List the channels: index, name, direction, protocol.

    \b
    Example:
        counters channel list
    """
    with app.reader() as store:
        snapshot = store.snapshot()
    rows = [("Index", "Name", "Direction", "Protocol")] + [
        (str(c.index), c.name, c.direction.value, c.protocol) for c in snapshot.channels]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for index, name, direction, protocol in rows:
        click.echo(f"{index.rjust(widths[0])}  {name.ljust(widths[1])}  "
                   f"{direction.ljust(widths[2])}  {protocol}")


@cli.group()
def mta() -> None:
    """The MTA as a whole: its applTable row.

    \b
    Example:
        counters mta set --name postfix --version 3.7.11
    """


@mta.command("set")
@click.option("--name", default=None, help="applName, e.g. postfix.")
@click.option("--version", default=None, help="applVersion, e.g. 3.7.11.")
@click.pass_obj
def mta_set(app: App, name: str | None, version: str | None) -> None:
    """Set the MTA's name and/or version, as SNMP serves them.

    \b
    Example:
        counters mta set --name postfix --version 3.7.11
    """
    if name is None and version is None:
        raise click.UsageError("give --name, --version or both")
    with app.store(create=True) as store:
        store.set_mta(name=name, version=version)


@cli.command()
@click.option("--batch", "batch_size", type=click.IntRange(1, 100_000), default=1000,
              show_default=True, help="Events per transaction.")
@click.pass_obj
def ingest(app: App, batch_size: int) -> None:
    """Record events read as JSON lines from standard input: the bulk path.

    Each line names a store event and its arguments (the Python API's names). Events are
    committed BATCH at a time; each stays atomic on its own: a line that fails is reported
    with its number and changes nothing, and the others are recorded. Exit status 1 if any
    line failed.

    \b
    Example:
        printf '%s\\n' \\
          '{"event":"ensure_channel","name":"smtpd","direction":"in"}' \\
          '{"event":"receive","channel":"smtpd","message_id":"m1","octets":900,"recipients":1}' \\
          | counters ingest
    """
    with app.store(create=True) as store:
        report = ingest_lines(store, sys.stdin, batch_size=batch_size)
    for number, message in report.failed:
        click.echo(f"counters: error: line {number}: {message}", err=True)
    if report.failed:
        raise SystemExit(1)


# --- following an MTA: its log, and its queue -----------------------------------------------


def _warn(text: str) -> None:
    click.echo(f"counters: warning: {text}", err=True)


def _postqueue_command(postqueue: str, config_dir: Path | None) -> list[str]:
    command = [postqueue]
    if config_dir is not None:
        command += ["-c", str(config_dir)]
    return [*command, "-j"]


def postqueue_options(command: F) -> F:
    """The options that say how to list Postfix's queue."""
    for option in reversed([
        click.option("--postqueue", "postqueue", default="postqueue", show_default=True,
                     metavar="COMMAND", help="Postfix's postqueue command."),
        click.option("-c", "--config-dir", type=click.Path(path_type=Path), default=None,
                     help="Postfix's configuration directory (postqueue -c), for a"
                          " non-default instance."),
    ]):
        command = option(command)
    return command


@cli.group()
def follow() -> None:
    """Follow an MTA's log into the counters, as a long-lived process.

    \b
    Example:
        counters follow postfix /var/log/mail.log
        counters follow status
    """


@follow.command("postfix")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--from", "start", type=click.Choice(["start", "end"]), default="start",
              show_default=True,
              help="Where to begin a log this database never followed (afterwards it always"
                   " resumes where it stopped).")
@click.option("--batch-lines", type=click.IntRange(1, 100_000), default=1000,
              show_default=True, help="At most this many lines per transaction.")
@click.option("--batch-seconds", type=click.FloatRange(0.001, 60), default=0.2,
              show_default=True, help="At most this long gathering one transaction's lines.")
@click.option("--poll", type=click.FloatRange(0.01, 60), default=0.2, show_default=True,
              help="Seconds between looks at a log that did not grow.")
@click.option("--sync-every", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="SECONDS",
              help="When caught up, also reconcile with `postqueue -j` at most this often"
                   " (0: never).")
@postqueue_options
@click.option("--once", is_flag=True, help="Apply what the log holds now, then exit.")
@click.pass_obj
def follow_postfix(app: App, path: Path, start: str, batch_lines: int, batch_seconds: float,
                   poll: float, sync_every: float, postqueue: str, config_dir: Path | None,
                   once: bool) -> None:
    """Turn Postfix's log at PATH into counter events, following it as it grows.

    PATH is syslog's mail log or Postfix's own maillog_file. Each batch of lines is applied
    in one transaction together with the position reached, so the follower can be stopped or
    killed at any time and resumes exactly where it stopped. Rotation (rename or
    copytruncate) and a log that does not exist yet are followed. Lines it cannot map are
    counted by kind (`counters follow status`), never fatal. SIGTERM or SIGINT stop it after
    the current batch.

    \b
    Example:
        counters follow postfix /var/log/mail.log --sync-every 300
        counters follow postfix /var/log/postfix.log --from end
    """
    import signal
    import threading

    from counters.feed import SOURCE, PostfixFeed
    from counters.follow import LogFollower
    from counters.postfix import MAX_LINE

    with app.store(create=True) as store:
        follower = LogFollower(store, path, PostfixFeed(store), source=SOURCE,
                               start_at_end=start == "end", max_lines=batch_lines,
                               max_seconds=batch_seconds, poll=poll, max_line=MAX_LINE,
                               warn=_warn)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        command = _postqueue_command(postqueue, config_dir)
        last_sync = [0.0]

        def idle() -> None:
            if not sync_every or time.monotonic() - last_sync[0] < sync_every:
                return
            last_sync[0] = time.monotonic()
            _sync_with_log(store, follower, command)

        click.echo(f"counters: following {path}", err=True)
        try:
            follower.run(stop, once=once, on_idle=idle)
        finally:
            follower.close()


def _sync_with_log(store: Store, follower: Any, command: list[str]) -> None:
    """List the queue, catch up with the log written meanwhile, then reconcile: what the
    log touched after the listing began is the log's to decide."""
    from counters.sync import reconcile, run_postqueue

    started = time.time()
    try:
        listing = run_postqueue(command)
    except CountersError as exc:
        _warn(f"sync: {exc}")
        return
    time.sleep(0.2)  # lines logged just before the listing may still be on their way
    while follower.step():
        pass
    try:
        report = reconcile(store, listing, started_at=started)
    except CountersError as exc:
        _warn(f"sync: {exc}")
        return
    if report.added or report.changed or report.removed:
        click.echo(f"counters: sync: {report.summary()}", err=True)


@follow.command("status")
@click.option("--unmapped", is_flag=True, help="Only the line kinds not mapped to events.")
@click.pass_obj
def follow_status(app: App, unmapped: bool) -> None:
    """Show where each follower is and the kinds of lines it saw (mapped to events or not).

    \b
    Example:
        counters follow status --unmapped
    """
    with app.reader() as store:
        kinds = store.line_kinds()
        sources = sorted({kind.source for kind in kinds})
        for source in sources:
            position = store.log_position(source)
            if position is not None:
                click.echo(f"{source}: device {position.device} inode {position.inode}"
                           f" offset {position.offset}")
    rows = [("Source", "Kind", "Mapped", "Lines", "Last line")] + [
        (k.source, k.kind, "yes" if k.mapped else "no", str(k.lines), k.sample[:70])
        for k in kinds if not (unmapped and k.mapped)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:2], widths, strict=False)]
        cells += [row[2].ljust(widths[2]), row[3].rjust(widths[3]), row[4]]
        click.echo("  ".join(cells).rstrip())


@cli.group()
def sync() -> None:
    """Make the stored values equal to what the MTA really holds in its queue.

    \b
    Example:
        counters sync postfix
    """


@sync.command("postfix")
@postqueue_options
@click.pass_obj
def sync_postfix(app: App, postqueue: str, config_dir: Path | None) -> None:
    """Re-read Postfix's queue (`postqueue -j`) and set the stored messages, volume,
    recipients and oldest-message ages from it. Counts nothing: received and transmitted
    totals stay as the log made them. Prints what changed.

    Run it after a restart or when the log was lost; a running `counters follow postfix
    --sync-every N` does the same by itself whenever it has caught up.

    \b
    Example:
        counters sync postfix
        counters sync postfix -c /etc/postfix-out
    """
    from counters.sync import reconcile, run_postqueue

    with app.store(create=True) as store:
        started = time.time()
        listing = run_postqueue(_postqueue_command(postqueue, config_dir))
        report = reconcile(store, listing, started_at=started)
    click.echo(report.summary())


def main() -> None:
    """The `counters` console script."""
    cli(prog_name="counters")
