"""`mailmib-agent`: serve a mailmib counters database over SNMP (RFC 1566 MTA-MIB).

Example:

    mailmib-agent --config /etc/mailmib.toml
    mailmib-agent --db var/mailmib.db --listen 127.0.0.1:1161 --listen '[::1]:1161'
    snmpwalk -v2c -c public 127.0.0.1:1161 1.3.6.1.2.1.28

Every setting can be given in the TOML file (`--config`, see contrib/mailmib.toml) or by a
flag; a flag wins over the file. Start-up problems (a bad setting, a busy port, an unreadable
database) are one line on stderr and exit status 1. SIGTERM or SIGINT stop the agent cleanly
with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.config import (
    DEFAULT_COMMUNITY,
    DEFAULT_LISTEN,
    DEFAULT_PORT,
    LOG_LEVELS,
    AgentConfig,
    Community,
    ConfigError,
    FileSettings,
    combined_namer,
    display_string,
    engine_id,
    parse_community_flag,
    parse_context_flag,
    parse_endpoint,
    parse_user_flag,
    read_file,
    settle,
    warn_if_readable,
)
from agent.daemon import Agent, AgentError
from agent.responder import describe_exception
from counters.store import DEFAULT_DB_PATH

__all__ = ["DEFAULT_PORT", "build_config", "build_parser", "main", "parse_endpoint"]

PROG = "mailmib-agent"

#: The flag that sets each configuration key (for naming a key in an error).
FLAGS = {"db": "--db", "listen": "--listen", "allow_remote": "--allow-remote",
         "communities": "--community", "snmpv1": "--snmpv1", "snmpv2c": "--snmpv2c",
         "users": "--user", "engine_id": "--engine-id", "contexts": "--context",
         "sys_contact": "--sys-contact", "sys_name": "--sys-name",
         "sys_location": "--sys-location", "fast_path": "--fast-path"}


def build_parser() -> argparse.ArgumentParser:
    on_off = argparse.BooleanOptionalAction
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve mailmib's mail counters read-only over SNMP (v1, v2c and v3 USM) "
                    "as the RFC 1566 MTA-MIB, the RFC 1565 applTable and the SNMPv2-MIB "
                    "system group. Settings come from --config FILE and/or the flags below; "
                    "a flag wins over the file.",
        epilog="example: mailmib-agent --config /etc/mailmib.toml; "
               "mailmib-agent --db var/mailmib.db --listen 127.0.0.1:1161")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (see contrib/mailmib.toml)")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="UDP address to answer on, repeatable; IPv6 as [::1]:1161 "
                             f"(default {DEFAULT_LISTEN})")
    parser.add_argument("--allow-remote", action=on_off, default=None,
                        help="allow listening on non-loopback addresses, and serving the "
                             "communities given by --community (or the default one) there")
    parser.add_argument("--db", type=Path, default=None, metavar="PATH",
                        help=f"counters database, created if missing (default {DEFAULT_DB_PATH})")
    parser.add_argument("--context", action="append", metavar="NAME=PATH",
                        help="serve another database in SNMPv3 context NAME, repeatable")
    parser.add_argument("--community", action="append", metavar="NAME[@NETWORK,...]",
                        help=f"read-only community, repeatable (default {DEFAULT_COMMUNITY!r}); "
                             "usable from the networks after the last '@' (default loopback "
                             "only), e.g. public@127.0.0.1/32,10.1.0.0/16")
    parser.add_argument("--snmpv1", action=on_off, default=None,
                        help="answer SNMPv1 requests (default on)")
    parser.add_argument("--snmpv2c", action=on_off, default=None,
                        help="answer SNMPv2c requests (default on)")
    parser.add_argument("--user", action="append", metavar="NAME:AUTH:PASS[:PRIV:PASS]",
                        help="SNMPv3 user, repeatable: AUTH one of SHA, SHA-224, SHA-256, "
                             "SHA-384, SHA-512; PRIV one of AES-128 (AES), AES-192, AES-256. "
                             "Pass phrases given here are visible to other local users (ps): "
                             "prefer the configuration file")
    parser.add_argument("--engine-id", default=None, metavar="HEX",
                        help="fixed snmpEngineID (default: made once and kept beside the "
                             "database)")
    parser.add_argument("--sys-contact", default=None, metavar="S", help="sysContact.0")
    parser.add_argument("--sys-name", default=None, metavar="S",
                        help="sysName.0 (default: this host's name)")
    parser.add_argument("--sys-location", default=None, metavar="S", help="sysLocation.0")
    parser.add_argument("--fast-path", dest="fast_path", action=on_off, default=None,
                        help="answer SNMPv1/v2c reads from pre-encoded views (default on; "
                             "--no-fast-path sends every request through pysnmp, for "
                             "comparison and debugging)")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS,
                        help="what to log on stderr (default warning)")
    return parser


T = TypeVar("T")


def _flag(option: str, parse: Callable[[str], T], text: str, *, secret: bool = False) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        shown = "" if secret else f" {text!r}"
        raise ConfigError(f"bad {option}{shown}: {exc}") from None


def load(args: argparse.Namespace) -> tuple[AgentConfig, str, FileSettings | None]:
    """Options (and the file they name) → (config, log level, the file read); ConfigError."""
    file = read_file(args.config) if args.config is not None else None
    values: dict[str, Any] = dict(file.values) if file is not None else {}
    log_level = args.log_level or values.pop("log_level", None) or "warning"
    values.pop("log_level", None)
    from_flags: set[str] = set()

    def override(key: str, value: Any) -> None:
        values[key] = value
        from_flags.add(key)

    if args.db is not None:
        override("db", args.db)
    if args.listen:
        override("listen", tuple(_flag("--listen", parse_endpoint, t) for t in args.listen))
    if args.allow_remote is not None:
        override("allow_remote", args.allow_remote)
    if args.community:
        communities = []
        for number, text in enumerate(args.community, start=1):
            community = _flag(f"--community #{number}", parse_community_flag, text, secret=True)
            communities.append(Community(community.name, community.networks,
                                         bool(args.allow_remote)))
        override("communities", tuple(communities))
    default_community = "communities" not in values
    if default_community:
        values["communities"] = (
            Community(DEFAULT_COMMUNITY, allow_remote=bool(args.allow_remote)),)
    for key in ("snmpv1", "snmpv2c", "fast_path"):
        if getattr(args, key) is not None:
            override(key, getattr(args, key))
    if args.user:
        override("users", tuple(_flag(f"--user #{n}", parse_user_flag, t, secret=True)
                                for n, t in enumerate(args.user, start=1)))
    if args.context:
        override("contexts", tuple(_flag("--context", parse_context_flag, t)
                                   for t in args.context))
    if args.engine_id is not None:
        override("engine_id", _flag("--engine-id", engine_id, args.engine_id))
    for key in ("sys_contact", "sys_name", "sys_location"):
        text = getattr(args, key)
        if text is not None:
            option = "--" + key.replace("_", "-")
            try:
                override(key, display_string(text))
            except ValueError as exc:
                raise ConfigError(f"{option} {exc}") from None
    name = combined_namer(file, sorted(from_flags), FLAGS)
    return settle(values, name, default_community=default_community), log_level, file


def build_config(args: argparse.Namespace) -> AgentConfig:
    """Options → AgentConfig; ConfigError (one line) for values that make no sense."""
    return load(args)[0]


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
    try:
        config, log_level, file = load(args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 1
    logging.basicConfig(stream=sys.stderr, format=f"{PROG}: %(message)s",
                        level=getattr(logging, log_level.upper()))
    if file is not None:
        warning = warn_if_readable(file.path, bool(config.users) or "communities" in file.values)
        if warning is not None:
            logging.getLogger("mailmib.agent").warning("%s", warning)
    try:
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
