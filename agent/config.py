"""What `mailmib-agent` is told: the configuration types, the TOML file and its checks.

A configuration comes from a TOML file (`--config PATH`, read with the standard library's
tomllib), from command-line flags, or both: a flag replaces the file's value for its key (a
repeated flag such as `--listen` replaces the file's whole list). Everything is checked before
the agent opens anything, and a bad value is one line that names the key as written in the
file, with its line where it can be found:

    config /etc/mailmib.toml:7: communities[0].networks: '10.0.0.0/33' is not a network

Unknown keys are errors too, so a misspelt `alow_remote` cannot silently leave the default in
force. The types here are plain frozen dataclasses; secrets (community names, keys and
passphrases) are left out of their reprs so they cannot leak into a log line or a traceback.

Safe defaults: listen on 127.0.0.1:1161 only; one community `public`, usable from loopback
sources only; no SNMPv3 user. Listening on a non-loopback address needs `allow_remote`, and
every community to be served there needs its own `allow_remote` too.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from agent.oids import MTA, Oid
from counters.store import DEFAULT_DB_PATH

try:
    import importlib.metadata

    VERSION = importlib.metadata.version("mailmib")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "unknown"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORT = 1161
DEFAULT_COMMUNITY = "public"
#: Where a community may be used from unless its `networks` say otherwise.
LOOPBACK_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                          ipaddress.ip_network("::1/128"))
#: sysObjectID: mailmib has no enterprise number of its own, so it names itself by the MIB
#: module it implements (MTA-MIB, mib-2 28).
DEFAULT_SYS_OBJECT_ID: Oid = MTA
#: RFC 3414 §11.2 / Net-SNMP: pass phrases shorter than this are refused.
MIN_PASSPHRASE = 8
#: SnmpAdminString (RFC 3411) limits user and context names to 32 octets in practice
#: (usmUserName, vacmContextName: SIZE (1..32) / (0..32)).
MAX_ADMIN_NAME = 32


def default_sys_descr() -> str:
    return (f"mailmib {VERSION} mail counters agent (RFC 1566 MTA-MIB), "
            f"Python {platform.python_version()} on {platform.system()} {platform.release()}")


class ConfigError(Exception):
    """A bad configuration; the message is one line fit to show as it is."""


# --- endpoints -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Endpoint:
    """A UDP address to listen on; `host` is an IPv4 or IPv6 literal."""

    host: str
    port: int

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.host).version == 6

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


DEFAULT_LISTEN = Endpoint("127.0.0.1", DEFAULT_PORT)


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


def source_address(host: str) -> Address | None:
    """A datagram's source host as an address (IPv4-mapped IPv6 as IPv4); None if not one."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --- SNMPv1/v2c communities ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Community:
    """A read-only community: usable from `networks` only, answering from `context`'s
    database. `allow_remote` is the explicit acknowledgement needed to serve it on a
    non-loopback listen address. The name is a secret: it is kept out of the repr."""

    name: str = field(repr=False)
    networks: tuple[Network, ...] = LOOPBACK_NETWORKS
    allow_remote: bool = False
    context: str = ""

    def allows(self, source: Address | None) -> bool:
        """Whether a request from `source` may use this community."""
        return source is not None and any(source in network for network in self.networks
                                          if network.version == source.version)


# --- SNMPv3 users ------------------------------------------------------------------------------

class AuthProtocol(StrEnum):
    """USM authentication protocols mailmib accepts (HMAC-MD5 is deliberately not offered)."""

    SHA = "SHA"  # usmHMACSHAAuthProtocol, RFC 3414 (HMAC-SHA-1-96)
    SHA224 = "SHA-224"  # RFC 7860 usmHMAC128SHA224AuthProtocol
    SHA256 = "SHA-256"  # usmHMAC192SHA256AuthProtocol
    SHA384 = "SHA-384"  # usmHMAC256SHA384AuthProtocol
    SHA512 = "SHA-512"  # usmHMAC384SHA512AuthProtocol

    @property
    def key_length(self) -> int:
        """Octets of a localized key: the hash's digest size."""
        return {"SHA": 20, "SHA-224": 28, "SHA-256": 32, "SHA-384": 48, "SHA-512": 64}[self.value]


class PrivProtocol(StrEnum):
    """USM privacy protocols mailmib accepts (DES and 3DES are deliberately not offered).

    AES-192 and AES-256 use the key extension of draft-blumenthal-aes-usm-04, which is what
    Net-SNMP's `-x AES-192` / `-x AES-256` mean (checked with Net-SNMP 5.9.3)."""

    AES128 = "AES-128"  # usmAesCfb128Protocol, RFC 3826
    AES192 = "AES-192"
    AES256 = "AES-256"

    @property
    def key_length(self) -> int:
        """Octets of a localized key: what the cipher needs (at least 16 for AES-128)."""
        return {"AES-128": 16, "AES-192": 24, "AES-256": 32}[self.value]


#: Spellings accepted for the protocols (Net-SNMP writes AES-128 as plain AES).
AUTH_NAMES: dict[str, AuthProtocol] = {p.value: p for p in AuthProtocol} | {
    "SHA1": AuthProtocol.SHA, "SHA-1": AuthProtocol.SHA}
PRIV_NAMES: dict[str, PrivProtocol] = {p.value: p for p in PrivProtocol} | {
    "AES": PrivProtocol.AES128, "AES128": PrivProtocol.AES128, "AES192": PrivProtocol.AES192,
    "AES256": PrivProtocol.AES256}


@dataclass(frozen=True, slots=True)
class Key:
    """A USM key: a pass phrase (localized to the engine ID at start-up, RFC 3414 A.2) or an
    already localized key. Kept out of every repr."""

    secret: bytes = field(repr=False)
    localized: bool = False


@dataclass(frozen=True, slots=True)
class User:
    """An SNMPv3 user: authNoPriv (no `priv`) or authPriv. It may read every context."""

    name: str
    auth: AuthProtocol
    auth_key: Key
    priv: PrivProtocol | None = None
    priv_key: Key | None = None

    @property
    def level(self) -> str:
        return "authPriv" if self.priv is not None else "authNoPriv"


# --- contexts ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Context:
    """One more database, served in SNMPv3 context `name` (and to communities naming it)."""

    name: str
    db: Path


# --- the whole configuration -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything `mailmib-agent`'s configuration decides. `db` is served in the default
    context ""; each of `contexts` adds a database in a context of its own."""

    db: Path = DEFAULT_DB_PATH
    listen: tuple[Endpoint, ...] = (DEFAULT_LISTEN,)
    allow_remote: bool = False
    communities: tuple[Community, ...] = (Community(DEFAULT_COMMUNITY),)
    snmpv1: bool = True
    snmpv2c: bool = True
    users: tuple[User, ...] = ()
    engine_id: bytes | None = None
    contexts: tuple[Context, ...] = ()
    sys_descr: str = field(default_factory=default_sys_descr)
    sys_object_id: Oid = DEFAULT_SYS_OBJECT_ID
    sys_contact: str = ""
    sys_name: str = field(default_factory=socket.gethostname)
    sys_location: str = ""
    fast_path: bool = True

    @property
    def community_versions(self) -> tuple[int, ...]:
        """The community-based message versions served: 0 (SNMPv1) and/or 1 (SNMPv2c); none
        when both are switched off or no community is configured."""
        if not self.communities:
            return ()
        return tuple(v for v, on in ((0, self.snmpv1), (1, self.snmpv2c)) if on)

    @property
    def databases(self) -> tuple[tuple[str, Path], ...]:
        """(context name, database) for every database served, the default context first."""
        return (("", self.db), *((c.name, c.db) for c in self.contexts))

    @property
    def engine_state_path(self) -> Path:
        """The small file beside the database that keeps the engine ID and snmpEngineBoots."""
        return self.db.with_name(self.db.name + ".engine")

    def describe(self) -> str:
        """What is served, for the ready line; community names are secrets and not shown."""
        parts = []
        versions = self.community_versions
        if versions:
            names = "/".join(("SNMPv1", "SNMPv2c")[v] for v in versions)
            names = "SNMPv1/v2c" if len(versions) == 2 else names
            count = len(self.communities)
            parts.append(f"{names}, {count} {'community' if count == 1 else 'communities'}")
        if self.users:
            parts.append("SNMPv3, users " + ", ".join(repr(u.name) for u in self.users))
        return "; ".join(parts)


# --- checks shared by the file and the flags -------------------------------------------------

def display_string(value: str) -> str:
    """sysContact and friends: at most 255 printable ASCII characters."""
    if len(value) > 255 or not value.isascii() or not value.isprintable():
        raise ValueError("must be at most 255 printable ASCII characters")
    return value


def community_name(value: str) -> str:
    if not value or len(value.encode()) > 255 or not value.isprintable():
        raise ValueError("a community must be 1 to 255 printable characters")
    return value


def admin_name(value: str, *, empty: bool = False) -> str:
    """A user or context name: printable, at most 32 octets (RFC 3411 SnmpAdminString)."""
    if (not value and not empty) or len(value.encode()) > MAX_ADMIN_NAME \
            or not value.isprintable():
        raise ValueError(f"must be {0 if empty else 1} to {MAX_ADMIN_NAME} printable characters")
    return value


def network(value: str) -> Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a network") from None


def engine_id(value: str) -> bytes:
    """An snmpEngineID in hex ('0x8000…', '80:00:…' or plain): 5 to 32 octets, not all zeros
    or all 'ff'H (RFC 3411 SnmpEngineID)."""
    try:
        octets = hex_octets(value)
    except ValueError:
        raise ValueError(f"{value!r} is not hexadecimal") from None
    if not 5 <= len(octets) <= 32:
        raise ValueError(f"must be 5 to 32 octets, not {len(octets)}")
    if octets in (bytes(len(octets)), b"\xff" * len(octets)):
        raise ValueError("may not be all zeros or all 'ff'H")
    return octets


def passphrase(value: str) -> Key:
    if len(value) < MIN_PASSPHRASE:
        raise ValueError(f"a pass phrase needs at least {MIN_PASSPHRASE} characters")
    return Key(value.encode())


def hex_octets(value: str) -> bytes:
    """'0x8000…', '80:00:…', '80 00 …' or plain hex → bytes; ValueError otherwise."""
    text = value.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    return bytes.fromhex(text.replace(":", "").replace(" ", ""))


def localized_key(value: str, length: int, *, longer: bool = False) -> Key:
    """A localized key in hex: `length` octets (or, with `longer`, at least that many, of
    which the first `length` are used: a privacy key localized with a longer hash)."""
    try:
        octets = hex_octets(value)
    except ValueError:
        raise ValueError("a localized key must be hexadecimal") from None
    if len(octets) != length and not (longer and length < len(octets) <= 64):
        wanted = f"{length} to 64" if longer else f"{length}"
        raise ValueError(f"a localized key for this protocol has {wanted} octets, "
                         f"not {len(octets)}")
    return Key(octets[:length], localized=True)


def auth_protocol(value: str) -> AuthProtocol:
    try:
        return AUTH_NAMES[value.strip().upper()]
    except KeyError:
        names = ", ".join(p.value for p in AuthProtocol)
        raise ValueError(f"{value!r} is not an auth protocol ({names})") from None


def priv_protocol(value: str) -> PrivProtocol:
    try:
        return PRIV_NAMES[value.strip().upper()]
    except KeyError:
        names = ", ".join(p.value for p in PrivProtocol)
        raise ValueError(f"{value!r} is not a privacy protocol ({names})") from None


# --- reading the file --------------------------------------------------------------------------

KeyPath = tuple[str | int, ...]


def key_text(path: KeyPath) -> str:
    """('communities', 0, 'networks') → 'communities[0].networks'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*(?:\"([^\"]*)\"|([A-Za-z0-9_\-]+))\s*=")


def locate(text: str, path: KeyPath) -> int | None:
    """The line (1-based) where `path` is written, or where its nearest written ancestor is.

    A small line scanner, not a TOML parser: it follows `[table]` and `[[array]]` headers and
    `key =` lines, which is how configuration files are written; a key inside an inline table
    is found as the line of the key holding that table."""
    lines = text.splitlines()
    counts: dict[str, int] = {}
    table: KeyPath = ()
    headers: dict[KeyPath, int] = {}
    keys: dict[KeyPath, int] = {}
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header is not None:
            name = header.group(2).replace('"', "").strip()
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = (name, counts[name])
            else:
                table = tuple(name.split("."))
            headers.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key is not None:
            keys.setdefault((*table, key.group(1) or key.group(2)), number)
    for length in range(len(path), 0, -1):
        prefix = path[:length]
        if prefix in keys:
            return keys[prefix]
        if prefix in headers:
            return headers[prefix]
    return None


class _Reader:
    """Reads the parsed TOML document key by key, turning each problem into one line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def error(self, key: KeyPath, message: str) -> ConfigError:
        line = locate(self.text, key)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        return ConfigError(f"config {where}: {key_text(key)}: {message}")

    def table(self, value: Any, key: KeyPath, known: Iterable[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        known = tuple(known)
        for name in value:
            if name not in known:
                raise self.error((*key, name), f"unknown key (known: {', '.join(known)})")
        return value

    def array(self, value: Any, key: KeyPath) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(key, "must be an array")
        return value

    def string(self, value: Any, key: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_toml_type(value)}")
        return value

    def boolean(self, value: Any, key: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_toml_type(value)}")
        return value

    def check(self, key: KeyPath, parse: Callable[[str], T], value: Any, *,
              secret: bool = False) -> T:
        """`parse(value)`, its ValueError made one line; a secret value is never echoed."""
        text = self.string(value, key)
        try:
            return parse(text)
        except ValueError as exc:
            message = str(exc)
            if not secret and repr(text) not in message:
                message = f"{text!r}: {message}"
            raise self.error(key, message) from None

    def path_value(self, value: Any, key: KeyPath) -> Path:
        text = self.string(value, key)
        if not text:
            raise self.error(key, "must not be empty")
        p = Path(text).expanduser()
        return p if p.is_absolute() else self.path.parent / p


T = TypeVar("T")


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


TOP_KEYS = ("database", "listen", "allow_remote", "communities", "snmpv1", "snmpv2c", "users",
            "engine_id", "contexts", "sys_contact", "sys_name", "sys_location", "fast_path",
            "log_level")
COMMUNITY_KEYS = ("name", "networks", "allow_remote", "context")
USER_KEYS = ("name", "auth", "auth_passphrase", "auth_key", "priv", "priv_passphrase",
             "priv_key")
CONTEXT_KEYS = ("name", "database")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class FileSettings:
    """What a configuration file says: each key present, already checked on its own, with
    the checks between keys left to `settle`. `where(key)` names a key for an error."""

    path: Path
    text: str
    values: dict[str, Any]

    def where(self, key: KeyPath) -> str:
        line = locate(self.text, key)
        place = f"{self.path}:{line}" if line is not None else str(self.path)
        return f"config {place}: {key_text(key)}"


def read_file(path: Path) -> FileSettings:
    """Read and check a TOML configuration file; ConfigError (one line) if anything is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config {path}:{line}: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        end = re.search(r"\s*\(at end of document\)$", message)
        if match is not None:
            where, detail = f"{path}:{match.group(1)}", f" (column {match.group(2)})"
            message = message[:match.start()]
        elif end is not None:
            where, detail = f"{path}:{max(1, len(text.splitlines()))}", " (at the end)"
            message = message[:end.start()]
        else:
            where, detail = str(path), ""
        raise ConfigError(f"config {where}: not valid TOML: {message[:1].lower()}{message[1:]}"
                          f"{detail}") from None
    reader = _Reader(path, text)
    document = reader.table(document, (), TOP_KEYS)
    values: dict[str, Any] = {}
    for name, value in document.items():
        key: KeyPath = (name,)
        if name in ("database",):
            values["db"] = reader.path_value(value, key)
        elif name == "listen":
            values["listen"] = tuple(
                reader.check((name, i), parse_endpoint, item)
                for i, item in enumerate(reader.array(value, key)))
        elif name in ("allow_remote", "snmpv1", "snmpv2c", "fast_path"):
            values[name] = reader.boolean(value, key)
        elif name == "communities":
            values["communities"] = tuple(
                _read_community(reader, item, (name, i))
                for i, item in enumerate(reader.array(value, key)))
        elif name == "users":
            values["users"] = tuple(_read_user(reader, item, (name, i))
                                    for i, item in enumerate(reader.array(value, key)))
        elif name == "contexts":
            values["contexts"] = tuple(_read_context(reader, item, (name, i))
                                       for i, item in enumerate(reader.array(value, key)))
        elif name == "engine_id":
            values["engine_id"] = reader.check(key, engine_id, value)
        elif name in ("sys_contact", "sys_name", "sys_location"):
            values[name] = reader.check(key, display_string, value)
        elif name == "log_level":
            level = reader.string(value, key)
            if level not in LOG_LEVELS:
                raise reader.error(key, f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
            values[name] = level
    return FileSettings(path, text, values)


def _required(reader: _Reader, table: Mapping[str, Any], key: KeyPath, name: str) -> Any:
    if name not in table:
        raise reader.error((*key, name), "is required")
    return table[name]


def _read_community(reader: _Reader, value: Any, key: KeyPath) -> Community:
    table = reader.table(value, key, COMMUNITY_KEYS)
    name = reader.check((*key, "name"), community_name,
                        _required(reader, table, key, "name"), secret=True)
    networks = LOOPBACK_NETWORKS
    if "networks" in table:
        items = reader.array(table["networks"], (*key, "networks"))
        if not items:
            raise reader.error((*key, "networks"), "must list at least one network")
        networks = tuple(reader.check((*key, "networks"), network, item) for item in items)
    allow_remote = reader.boolean(table.get("allow_remote", False), (*key, "allow_remote"))
    context = reader.check((*key, "context"), lambda v: admin_name(v, empty=True),
                           table.get("context", ""))
    return Community(name, networks, allow_remote, context)


def _read_key(reader: _Reader, table: Mapping[str, Any], key: KeyPath, kind: str,
              length: int) -> Key:
    given = [k for k in (f"{kind}_passphrase", f"{kind}_key") if k in table]
    if len(given) != 1:
        where = (*key, given[1]) if len(given) > 1 else key
        raise reader.error(where, f"give exactly one of {kind}_passphrase and {kind}_key")
    if given[0].endswith("_passphrase"):
        return reader.check((*key, given[0]), passphrase, table[given[0]], secret=True)
    return reader.check((*key, given[0]),
                        lambda v: localized_key(v, length, longer=kind == "priv"),
                        table[given[0]], secret=True)


def _read_user(reader: _Reader, value: Any, key: KeyPath) -> User:
    table = reader.table(value, key, USER_KEYS)
    name = reader.check((*key, "name"), admin_name, _required(reader, table, key, "name"))
    auth = reader.check((*key, "auth"), auth_protocol, _required(reader, table, key, "auth"))
    auth_key = _read_key(reader, table, key, "auth", auth.key_length)
    priv = None
    priv_key = None
    if "priv" in table:
        priv = reader.check((*key, "priv"), priv_protocol, table["priv"])
        priv_key = _read_key(reader, table, key, "priv", priv.key_length)
    else:
        for stray in ("priv_passphrase", "priv_key"):
            if stray in table:
                raise reader.error((*key, stray), "needs a priv protocol (priv = \"AES-128\")")
    return User(name, auth, auth_key, priv, priv_key)


def _read_context(reader: _Reader, value: Any, key: KeyPath) -> Context:
    table = reader.table(value, key, CONTEXT_KEYS)
    name = reader.check((*key, "name"), admin_name, _required(reader, table, key, "name"))
    db = reader.path_value(_required(reader, table, key, "database"), (*key, "database"))
    return Context(name, db)


# --- flags ---------------------------------------------------------------------------------------

def parse_community_flag(text: str) -> Community:
    """`--community NAME[@NETWORK,…]`; the last '@' separates the networks."""
    name, sep, nets = text.rpartition("@")
    if not sep:
        return Community(community_name(text))
    networks = tuple(network(n) for n in nets.split(",") if n.strip())
    if not networks:
        raise ValueError("no network after '@'")
    return Community(community_name(name), networks)


def parse_user_flag(text: str) -> User:
    """`--user NAME:AUTH:PASSPHRASE[:PRIV:PASSPHRASE]` (pass phrases without ':')."""
    parts = text.split(":")
    if len(parts) not in (3, 5):
        raise ValueError("write NAME:AUTH:PASSPHRASE or NAME:AUTH:PASSPHRASE:PRIV:PASSPHRASE")
    name = admin_name(parts[0])
    auth = auth_protocol(parts[1])
    auth_key = passphrase(parts[2])
    if len(parts) == 3:
        return User(name, auth, auth_key)
    return User(name, auth, auth_key, priv_protocol(parts[3]), passphrase(parts[4]))


def parse_context_flag(text: str) -> Context:
    """`--context NAME=DATABASE`."""
    name, sep, db = text.partition("=")
    if not sep or not db:
        raise ValueError("write NAME=DATABASE")
    return Context(admin_name(name), Path(db).expanduser())


# --- settling: the checks between keys -------------------------------------------------------

Namer = Callable[[KeyPath], str]


def settle(values: Mapping[str, Any], name: Namer, *,
           default_community: bool = False) -> AgentConfig:
    """The final configuration from checked values, after the checks between keys.

    `name(key)` says how an error names a key (the file's `config PATH:LINE: key`, or a
    flag); `default_community` says the communities are the built-in default."""
    config = AgentConfig(**values)
    if not config.listen:
        raise ConfigError(f"{name(('listen',))}: no address to listen on")
    remote = [e for e in config.listen if not e.loopback]
    if remote and not config.allow_remote:
        i = config.listen.index(remote[0])
        where = name(("listen", i))
        if where.startswith("--"):  # as the flags have always said it
            raise ConfigError(f"refusing to listen on non-loopback address {remote[0]} "
                              "without --allow-remote")
        raise ConfigError(f"{where}: refusing to listen on non-loopback address {remote[0]} "
                          "without allow_remote = true")
    contexts = {""}
    databases: dict[Path, str] = {config.db.resolve(): "database"}
    for i, context in enumerate(config.contexts):
        if context.name in contexts:
            raise ConfigError(f"{name(('contexts', i, 'name'))}: context {context.name!r} "
                              "is given twice")
        contexts.add(context.name)
        real = context.db.resolve()
        if real in databases:
            raise ConfigError(f"{name(('contexts', i, 'database'))}: {context.db} is already "
                              f"served ({databases[real]})")
        databases[real] = f"contexts[{i}]"
    seen: set[str] = set()
    for i, community in enumerate(config.communities):
        if community.name in seen:
            raise ConfigError(f"{name(('communities', i, 'name'))}: the same community is "
                              "given twice")
        seen.add(community.name)
        if community.context not in contexts:
            raise ConfigError(f"{name(('communities', i, 'context'))}: no context "
                              f"{community.context!r} (contexts: "
                              f"{', '.join(map(repr, sorted(contexts)))})")
        if remote and config.community_versions and not community.allow_remote:
            if default_community:
                raise ConfigError(
                    f"{name(('communities',))}: refusing to serve the default community "
                    f"{DEFAULT_COMMUNITY!r} on non-loopback address {remote[0]}; list the "
                    "communities to serve, each with allow_remote = true, or set snmpv1 and "
                    "snmpv2c to false")
            where = name(("communities", i, "allow_remote"))
            ack = "--allow-remote" if where.startswith("--") else "allow_remote = true"
            raise ConfigError(f"{where}: refusing to serve community #{i + 1} on non-loopback "
                              f"address {remote[0]} without {ack}")
    users: set[str] = set()
    for i, user in enumerate(config.users):
        if user.name in users:
            raise ConfigError(f"{name(('users', i, 'name'))}: user {user.name!r} is given twice")
        users.add(user.name)
        for kind, key in (("auth", user.auth_key), ("priv", user.priv_key)):
            if key is not None and key.localized and config.engine_id is None:
                raise ConfigError(f"{name(('users', i, kind + '_key'))}: a localized key "
                                  "belongs to one engine ID: set engine_id too")
    if not config.community_versions and not config.users:
        raise ConfigError(f"{name(('users',))}: nothing to serve: SNMPv1 and SNMPv2c are off "
                          "(or no community is configured) and no SNMPv3 user is configured")
    return config


def warn_if_readable(path: Path, has_secrets: bool) -> str | None:
    """A warning line if a file holding secrets can be read by others, else None."""
    if not has_secrets:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return (f"warning: config {path} holds secrets and is readable by others "
                f"(mode {mode & 0o777:o}); chmod 600 it")
    return None


def flag_namer(flags: Mapping[str, str]) -> Namer:
    """Names keys by the flag that set them."""

    def name(key: KeyPath) -> str:
        return flags.get(str(key[0]), key_text(key))

    return name


def combined_namer(file: FileSettings | None, from_flags: Sequence[str],
                   flags: Mapping[str, str]) -> Namer:
    """Keys set by a flag are named by the flag; the others as in the file when there is one
    (with the line where the file has the key), else by their flag."""
    by_flag = flag_namer(flags)

    def name(key: KeyPath) -> str:
        if file is None or str(key[0]) in from_flags:
            return by_flag(key)
        return file.where(_FILE_KEYS.get(str(key[0]), key))

    return name


#: Configuration values whose key in the file has another name.
_FILE_KEYS: dict[str, KeyPath] = {"db": ("database",)}
