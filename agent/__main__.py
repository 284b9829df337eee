"""`mailmib-agent`: serve a mailmib counters database over SNMP (RFC 1566 MTA-MIB).

Example:

    mailmib-agent --db var/mailmib.db --listen 127.0.0.1:1161 --listen '[::1]:1161'
    snmpwalk -v2c -c public 127.0.0.1:1161 1.3.6.1.2.1.28

Start-up problems (bad options, a busy port, an unreadable database) are one line on stderr
and exit status 1. SIGTERM or SIGINT stop the agent cleanly with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.daemon import (
    DEFAULT_COMMUNITY,
    DEFAULT_LISTEN,
    Agent,
    AgentConfig,
    AgentError,
)
from agent.responder import Endpoint, describe_exception
from counters.store import DEFAULT_DB_PATH

PROG = "mailmib-agent"
DEFAULT_PORT = DEFAULT_LISTEN.port


def parse_endpoint(text: str) -> Endpoint:
    """'127.0.0.1:1161', '[::1]:1161', 'localhost:1161' → Endpoint. ValueError if malformed.

    HOST is an IP literal (IPv6 in brackets) or 'localhost' (127.0.0.1); without ':PORT' the
    port is 1161.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("write an IPv6 address as [ADDRESS]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise ValueError("write an IPv6 address as [ADDRESS]:PORT")
    else:
        host, _, port_text = text.partition(":")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if text.startswith("[") != (address.version == 6):
        raise ValueError("write an IPv6 address as [ADDRESS]:PORT")
    if port_text == "" and text.endswith(":"):
        raise ValueError("missing port after ':'")
    if port_text == "":
        port = DEFAULT_PORT
    elif port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(f"{port_text!r} is not a port number (0-65535)")
    return Endpoint(str(address), port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve mailmib's mail counters read-only over SNMPv1/v2c as the RFC 1566 "
                    "MTA-MIB, the RFC 1565 applTable and the SNMPv2-MIB system group.",
        epilog="example: mailmib-agent --db var/mailmib.db --listen 127.0.0.1:1161")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="UDP address to answer on, repeatable; IPv6 as [::1]:1161 "
                             f"(default {DEFAULT_LISTEN})")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow listening on non-loopback addresses")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB_PATH, metavar="PATH",
                        help=f"counters database, created if missing (default {DEFAULT_DB_PATH})")
    parser.add_argument("--community", default=DEFAULT_COMMUNITY, metavar="NAME",
                        help=f"read-only community (default {DEFAULT_COMMUNITY!r})")
    parser.add_argument("--sys-contact", default="", metavar="S", help="sysContact.0")
    parser.add_argument("--sys-name", default=None, metavar="S",
                        help="sysName.0 (default: this host's name)")
    parser.add_argument("--sys-location", default="", metavar="S", help="sysLocation.0")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="answer every request through pysnmp (slower; for comparison "
                             "and debugging)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="what to log on stderr (default warning)")
    return parser


def _display_string(option: str, value: str) -> str:
    if len(value) > 255 or not value.isascii() or not value.isprintable():
        raise AgentError(f"{option} must be at most 255 printable ASCII characters")
    return value


def build_config(args: argparse.Namespace) -> AgentConfig:
    """Options → AgentConfig; AgentError (one line) for values that make no sense."""
    listen: list[Endpoint] = []
    for text in args.listen or [str(DEFAULT_LISTEN)]:
        try:
            listen.append(parse_endpoint(text))
        except ValueError as exc:
            raise AgentError(f"bad --listen {text!r}: {exc}") from None
    community = args.community
    if not community or len(community.encode()) > 255 or not community.isprintable():
        raise AgentError("--community must be 1 to 255 printable characters")
    config = AgentConfig(
        db=args.db, listen=tuple(listen), community=community, allow_remote=args.allow_remote,
        fast_path=args.fast_path,
        sys_contact=_display_string("--sys-contact", args.sys_contact),
        sys_location=_display_string("--sys-location", args.sys_location))
    if args.sys_name is not None:
        config = dataclasses.replace(config, sys_name=_display_string("--sys-name", args.sys_name))
    return config


async def serve(config: AgentConfig) -> int:
    """Run the agent until SIGTERM or SIGINT."""
    agent = Agent(config)
    await agent.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{PROG}: {agent.ready_line()}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await agent.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format=f"{PROG}: %(message)s",
                        level=getattr(logging, args.log_level.upper()))
    try:
        config = build_config(args)
        return asyncio.run(serve(config))
    except AgentError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        return 0
    except Exception as exc:  # a bug: still one line; the traceback only when asked for
        logging.getLogger("mailmib.agent").debug("internal error", exc_info=True)
        print(f"{PROG}: internal error: {describe_exception(exc)} "
              "(--log-level debug shows where)", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
