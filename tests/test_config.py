"""The configuration: the TOML file, the flags, and the one-line errors for everything wrong.

Bad configurations are table-driven: each case is a file (and sometimes flags) and the exact
line `mailmib-agent` must print — naming the key as written in the file and its line — with
exit status 1 and nothing created. Most cases run `agent.__main__.main` in this process (the
checks all happen before anything is opened); a few run the real `python -m agent` to show the
process behaves the same. Secrets (communities, pass phrases, keys) never appear in a message.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

import pytest

from agent.__main__ import build_parser, load, main
from agent.config import (
    LOOPBACK_NETWORKS,
    AgentConfig,
    AuthProtocol,
    Community,
    Context,
    Endpoint,
    PrivProtocol,
    locate,
    parse_community_flag,
    parse_user_flag,
    warn_if_readable,
)
from tests.conftest import REPO, run_agent

SECRET = "s3cret-community"
PASS = "pass phrase 1"


def write(tmp_path: Path, text: str, name: str = "mailmib.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def configure(*argv: str) -> AgentConfig:
    return load(args(*argv))[0]


# --- good configurations ------------------------------------------------------------------------

def test_defaults_without_a_file() -> None:
    config = configure()
    assert config.listen == (Endpoint("127.0.0.1", 1161),)
    assert config.communities == (Community("public"),)
    assert config.communities[0].networks == LOOPBACK_NETWORKS
    assert not config.allow_remote and not config.communities[0].allow_remote
    assert (config.snmpv1, config.snmpv2c, config.users, config.contexts) == (True, True, (), ())
    assert config.engine_state_path == config.db.with_name("mailmib.db.engine")


def test_a_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
database = "data/mx1.db"
listen = ["127.0.0.1:1161", "[::1]:1162", "192.0.2.10:161"]
allow_remote = true
snmpv1 = false
engine_id = "80:00:4f:b8:05:01:02:03:04:05:06:07"
sys_contact = "postmaster@example.org"
sys_name = "mx1"
sys_location = "rack 4"
fast_path = false
log_level = "info"

[[communities]]
name = "{SECRET}"
networks = ["127.0.0.1/32", "2001:db8::/32", "192.0.2.0/24"]
allow_remote = true
context = "mx2"

[[users]]
name = "ops"
auth = "SHA-512"
auth_passphrase = "{PASS}"
priv = "AES"
priv_passphrase = "{PASS}"

[[users]]
name = "legacy"
auth = "sha"
auth_key = "0x{"11" * 20}"
priv = "AES-256"
priv_key = "{"22" * 32}"

[[contexts]]
name = "mx2"
database = "/srv/mx2.db"
""")
    config, level, _ = load(args("--config", str(path)))
    assert level == "info"
    assert config.db == tmp_path / "data" / "mx1.db"  # relative to the file's directory
    assert config.listen[1] == Endpoint("::1", 1162) and config.allow_remote
    assert (config.snmpv1, config.snmpv2c, config.fast_path) == (False, True, False)
    assert config.community_versions == (1,)
    assert config.engine_id == bytes.fromhex("80004fb805010203040506 07".replace(" ", ""))
    (community,) = config.communities
    assert community.name == SECRET and community.context == "mx2" and community.allow_remote
    assert community.networks[1] == ipaddress.ip_network("2001:db8::/32")
    ops, legacy = config.users
    assert (ops.auth, ops.priv, ops.level) == (AuthProtocol.SHA512, PrivProtocol.AES128,
                                               "authPriv")
    assert ops.auth_key.secret == PASS.encode() and not ops.auth_key.localized
    assert legacy.auth_key.localized and legacy.auth_key.secret == b"\x11" * 20
    assert legacy.priv is PrivProtocol.AES256 and legacy.priv_key is not None
    assert legacy.priv_key.secret == b"\x22" * 32
    assert config.contexts == (Context("mx2", Path("/srv/mx2.db")),)
    assert config.databases == (("", config.db), ("mx2", Path("/srv/mx2.db")))
    assert (config.sys_contact, config.sys_name, config.sys_location) == (
        "postmaster@example.org", "mx1", "rack 4")
    # Secrets stay out of reprs (and so out of any log line or traceback).
    assert SECRET not in repr(config) and PASS not in repr(config) and "1111" not in repr(config)


def test_the_shipped_example_is_valid() -> None:
    config = configure("--config", str(REPO / "contrib" / "mailmib.toml"))
    assert config.users and config.contexts and config.communities
    assert config.allow_remote and all(c.allow_remote for c in config.communities)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
database = "a.db"
listen = ["127.0.0.1:1"]
sys_name = "from-file"
[[communities]]
name = "{SECRET}"
[[users]]
name = "u"
auth = "SHA"
auth_passphrase = "{PASS}"
""")
    config = configure("--config", str(path), "--db", "b.db", "--listen", "127.0.0.2:2",
                       "--listen", "[::1]:3", "--sys-name", "from-flag", "--community",
                       "other@10.0.0.0/8,::1", "--no-snmpv1", "--engine-id", "8000000001",
                       "--context", "mx2=c.db", "--no-fast-path")
    assert config.db == Path("b.db")
    assert config.listen == (Endpoint("127.0.0.2", 2), Endpoint("::1", 3))
    assert config.sys_name == "from-flag"
    assert [c.name for c in config.communities] == ["other"]  # the flag's list replaces
    assert config.communities[0].networks == (ipaddress.ip_network("10.0.0.0/8"),
                                              ipaddress.ip_network("::1/128"))
    assert [u.name for u in config.users] == ["u"]  # kept from the file
    assert config.snmpv1 is False and config.engine_id == bytes.fromhex("8000000001")
    assert config.contexts == (Context("mx2", Path("c.db")),) and not config.fast_path


@pytest.mark.parametrize("text, name, networks", [
    ("public", "public", LOOPBACK_NETWORKS),
    ("a@b@127.0.0.1", "a@b", (ipaddress.ip_network("127.0.0.1/32"),)),
    ("x@10.0.0.0/8, 192.0.2.0/24", "x", (ipaddress.ip_network("10.0.0.0/8"),
                                         ipaddress.ip_network("192.0.2.0/24"))),
])
def test_community_flag(text: str, name: str, networks: tuple[object, ...]) -> None:
    community = parse_community_flag(text)
    assert (community.name, community.networks) == (name, networks)


def test_user_flag() -> None:
    user = parse_user_flag(f"ops:sha-256:{PASS}:aes-192:{PASS}")
    assert (user.name, user.auth, user.priv) == ("ops", AuthProtocol.SHA256, PrivProtocol.AES192)
    assert parse_user_flag(f"mon:SHA:{PASS}").priv is None


def test_community_source_check() -> None:
    community = Community("c", (ipaddress.ip_network("127.0.0.1/32"),
                                ipaddress.ip_network("2001:db8::/32")))
    assert community.allows(ipaddress.ip_address("127.0.0.1"))
    assert not community.allows(ipaddress.ip_address("127.0.0.2"))
    assert community.allows(ipaddress.ip_address("2001:db8::5"))
    assert not community.allows(ipaddress.ip_address("::1"))
    assert not community.allows(None)


def test_locate_follows_tables_and_arrays_of_tables() -> None:
    text = 'listen = ["a"]\n\n[[communities]]\nname = "x"\n\n[[communities]]\nname = "y"\n' \
           'networks = [\n "z"]\n[system]\nkey = 1\n'
    assert locate(text, ("listen", 0)) == 1
    assert locate(text, ("communities", 1, "networks")) == 8
    assert locate(text, ("communities", 0, "networks")) == 3  # not written: its table
    assert locate(text, ("communities", 0, "name")) == 4
    assert locate(text, ("system", "key")) == 11
    assert locate(text, ("nothing",)) is None


# --- bad configurations: one line each, naming the key ------------------------------------

USER = f'[[users]]\nname = "u"\nauth = "SHA"\nauth_passphrase = "{PASS}"\n'

BAD_FILES: list[tuple[str, str, str]] = [  # (id, file, the line after "mailmib-agent: ")
    ("toml syntax", 'listen = ["127.0.0.1:1161"\nsnmpv1 = true\n',
     "config {path}:2: not valid TOML: unclosed array (column 1)"),
    ("toml at end", "listen = [\n", "config {path}:1: not valid TOML: invalid value (at the end)"),
    ("duplicate key", "snmpv1 = true\nsnmpv1 = false\n",
     "config {path}:2: not valid TOML: cannot overwrite a value (column 15)"),
    ("unknown key", "snmpv1 = true\nalow_remote = true\n",
     "config {path}:2: alow_remote: unknown key (known: database, listen, allow_remote, "
     "communities, snmpv1, snmpv2c, users, engine_id, contexts, sys_contact, sys_name, "
     "sys_location, fast_path, log_level)"),
    ("bad network", f'[[communities]]\nname = "{SECRET}"\nnetworks = ["10.0.0.0/33"]\n',
     "config {path}:3: communities[0].networks: '10.0.0.0/33' is not a network"),
    ("no networks", f'[[communities]]\nname = "{SECRET}"\nnetworks = []\n',
     "config {path}:3: communities[0].networks: must list at least one network"),
    ("unknown community key", f'[[communities]]\nname = "{SECRET}"\nnetwork = ["::1"]\n',
     "config {path}:3: communities[0].network: unknown key (known: name, networks, "
     "allow_remote, context)"),
    ("community without name", '[[communities]]\nnetworks = ["::1/128"]\n',
     "config {path}:1: communities[0].name: is required"),
    ("empty community", '[[communities]]\nname = ""\n',
     "config {path}:2: communities[0].name: a community must be 1 to 255 printable characters"),
    ("twice the same community",
     f'[[communities]]\nname = "{SECRET}"\n[[communities]]\nname = "{SECRET}"\n',
     "config {path}:4: communities[1].name: the same community is given twice"),
    ("inline tables", 'communities = [{name = "a", networks = ["x"]}]\n',
     "config {path}:1: communities[0].networks: 'x' is not a network"),
    ("community of no context",
     f'[[communities]]\nname = "{SECRET}"\ncontext = "mx3"\n',
     "config {path}:3: communities[0].context: no context 'mx3' (contexts: '')"),
    ("bad listen", 'listen = ["mail.example.org:161"]\n',
     "config {path}:1: listen[0]: 'mail.example.org:161': 'mail.example.org' is not an IP "
     "address"),
    ("listen not a list", 'listen = "127.0.0.1:161"\n',
     "config {path}:1: listen: must be an array"),
    ("no listen", "listen = []\n", "config {path}:1: listen: no address to listen on"),
    ("remote listen", 'listen = ["127.0.0.1:1161", "0.0.0.0:161"]\n',
     "config {path}:1: listen[1]: refusing to listen on non-loopback address 0.0.0.0:161 "
     "without allow_remote = true"),
    ("remote community", 'listen = ["[::]:161"]\nallow_remote = true\n\n[[communities]]\n'
     f'name = "{SECRET}"\nnetworks = ["2001:db8::/32"]\n',
     "config {path}:4: communities[0].allow_remote: refusing to serve community #1 on "
     "non-loopback address [::]:161 without allow_remote = true"),
    ("remote default community", 'listen = ["0.0.0.0:161"]\nallow_remote = true\n',
     "config {path}: communities: refusing to serve the default community 'public' on "
     "non-loopback address 0.0.0.0:161; list the communities to serve, each with "
     "allow_remote = true, or set snmpv1 and snmpv2c to false"),
    ("not a boolean", 'snmpv2c = "no"\n', "config {path}:1: snmpv2c: must be true or false, "
                                           "not a string"),
    ("nothing to serve", "snmpv1 = false\nsnmpv2c = false\n",
     "config {path}: users: nothing to serve: SNMPv1 and SNMPv2c are off (or no community is "
     "configured) and no SNMPv3 user is configured"),
    ("MD5", f'[[users]]\nname = "u"\nauth = "MD5"\nauth_passphrase = "{PASS}"\n',
     "config {path}:3: users[0].auth: 'MD5' is not an auth protocol (SHA, SHA-224, SHA-256, "
     "SHA-384, SHA-512)"),
    ("DES", USER + f'priv = "DES"\npriv_passphrase = "{PASS}"\n',
     "config {path}:5: users[0].priv: 'DES' is not a privacy protocol (AES-128, AES-192, "
     "AES-256)"),
    ("short pass phrase", '[[users]]\nname = "u"\nauth = "SHA"\nauth_passphrase = "1234567"\n',
     "config {path}:4: users[0].auth_passphrase: a pass phrase needs at least 8 characters"),
    ("two keys", USER + f'auth_key = "{"00" * 20}"\n',
     "config {path}:5: users[0].auth_key: give exactly one of auth_passphrase and auth_key"),
    ("no key", '[[users]]\nname = "u"\nauth = "SHA"\n',
     "config {path}:1: users[0]: give exactly one of auth_passphrase and auth_key"),
    ("no auth", '[[users]]\nname = "u"\n', "config {path}:1: users[0].auth: is required"),
    ("priv key without priv", USER + f'priv_passphrase = "{PASS}"\n',
     "config {path}:5: users[0].priv_passphrase: needs a priv protocol (priv = \"AES-128\")"),
    ("short localized key", '[[users]]\nname = "u"\nauth = "SHA-256"\nauth_key = "0011"\n',
     "config {path}:4: users[0].auth_key: a localized key for this protocol has 32 octets, "
     "not 2"),
    ("localized key not hex", '[[users]]\nname = "u"\nauth = "SHA"\nauth_key = "xyz"\n',
     "config {path}:4: users[0].auth_key: a localized key must be hexadecimal"),
    ("localized key, no engine ID",
     f'[[users]]\nname = "u"\nauth = "SHA"\nauth_key = "{"ab" * 20}"\n',
     "config {path}:4: users[0].auth_key: a localized key belongs to one engine ID: set "
     "engine_id too"),
    ("long user name", f'[[users]]\nname = "{"u" * 33}"\nauth = "SHA"\n'
                       f'auth_passphrase = "{PASS}"\n',
     f"config {{path}}:2: users[0].name: {'u' * 33!r}: must be 1 to 32 printable characters"),
    ("same user twice", USER + USER,
     "config {path}:6: users[1].name: user 'u' is given twice"),
    ("engine id too short", 'engine_id = "0x80000001"\n',
     "config {path}:1: engine_id: '0x80000001': must be 5 to 32 octets, not 4"),
    ("engine id zeros", 'engine_id = "0000000000"\n',
     "config {path}:1: engine_id: '0000000000': may not be all zeros or all 'ff'H"),
    ("engine id not hex", 'engine_id = "engine"\n',
     "config {path}:1: engine_id: 'engine' is not hexadecimal"),
    ("context twice", '[[contexts]]\nname = "a"\ndatabase = "a.db"\n'
                      '[[contexts]]\nname = "a"\ndatabase = "b.db"\n',
     "config {path}:5: contexts[1].name: context 'a' is given twice"),
    ("context of the main database", 'database = "m.db"\n[[contexts]]\nname = "a"\n'
                                     'database = "m.db"\n',
     "config {path}:4: contexts[0].database: {dir}/m.db is already served (database)"),
    ("context without database", '[[contexts]]\nname = "a"\n',
     "config {path}:1: contexts[0].database: is required"),
    ("sys_contact", 'sys_contact = "caf\u00e9"\n',
     "config {path}:1: sys_contact: 'caf\u00e9': must be at most 255 printable ASCII "
     "characters"),
    ("log level", 'log_level = "loud"\n',
     "config {path}:1: log_level: 'loud' is not one of debug, info, warning, error"),
    ("a table for a value", "[listen]\nx = 1\n", "config {path}:1: listen: must be an array"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD_FILES],
                         ids=[i for i, _, _ in BAD_FILES])
def test_bad_file_is_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert main(["--config", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"mailmib-agent: {expected.format(path=path, dir=tmp_path)}\n"
    for secret in (SECRET, PASS, "ab" * 20):
        assert secret not in out.err
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing created


BAD_FLAGS: list[tuple[list[str], str]] = [
    (["--listen", "0.0.0.0:161"],
     "refusing to listen on non-loopback address 0.0.0.0:161 without --allow-remote"),
    (["--community", f"{SECRET}@10.0.0.0/33"],
     "bad --community #1: '10.0.0.0/33' is not a network"),
    (["--community", ""], "bad --community #1: a community must be 1 to 255 printable characters"),
    (["--user", "bob:SHA:short"], "bad --user #1: a pass phrase needs at least 8 characters"),
    (["--user", f"bob:MD5:{PASS}"], "bad --user #1: 'MD5' is not an auth protocol (SHA, "
                                    "SHA-224, SHA-256, SHA-384, SHA-512)"),
    (["--user", "bob"], "bad --user #1: write NAME:AUTH:PASSPHRASE or "
                        "NAME:AUTH:PASSPHRASE:PRIV:PASSPHRASE"),
    (["--engine-id", "zz"], "bad --engine-id 'zz': 'zz' is not hexadecimal"),
    (["--context", "mx2"], "bad --context 'mx2': write NAME=DATABASE"),
    (["--no-snmpv1", "--no-snmpv2c"], "--user: nothing to serve: SNMPv1 and SNMPv2c are off (or "
                                      "no community is configured) and no SNMPv3 user is "
                                      "configured"),
    (["--sys-name", "\x07"], "--sys-name must be at most 255 printable ASCII characters"),
]


@pytest.mark.parametrize("argv, expected", BAD_FLAGS, ids=[a[0] for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                              expected: str) -> None:
    assert main(argv) == 1
    out = capsys.readouterr()
    assert out.err == f"mailmib-agent: {expected}\n"
    assert SECRET not in out.err


def test_a_flag_error_about_a_file_key_names_the_flag(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'listen = ["127.0.0.1:1161"]\n')
    assert main(["--config", str(path), "--listen", "192.0.2.1:161"]) == 1
    assert capsys.readouterr().err == ("mailmib-agent: refusing to listen on non-loopback "
                                       "address 192.0.2.1:161 without --allow-remote\n")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["--config", str(path)]) == 1
    assert capsys.readouterr().err == (f"mailmib-agent: config {path}: cannot read it: "
                                       "No such file or directory\n")


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'snmpv1 = true\nsys_name = "caf\xe9"\n')
    assert main(["--config", str(path)]) == 1
    assert capsys.readouterr().err == f"mailmib-agent: config {path}:2: not UTF-8 text\n"


def test_the_real_process_says_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[communities]]\nname = "{SECRET}"\nnetworks = ["10.0.0.0/33"]\n')
    db = tmp_path / "never.db"
    proc = run_agent("--config", str(path), "--db", str(db))
    assert proc.returncode == 1
    assert proc.stderr == (f"mailmib-agent: config {path}:3: communities[0].networks: "
                           "'10.0.0.0/33' is not a network\n")
    assert proc.stdout == "" and not db.exists()


def test_a_corrupt_engine_state_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "mailmib.db"
    state = tmp_path / "mailmib.db.engine"
    state.write_text("{not json")
    proc = run_agent("--db", str(db), "--listen", "127.0.0.1:0")
    assert proc.returncode == 1
    assert proc.stderr == (f"mailmib-agent: engine state: {state} is not a mailmib engine "
                           "state file (move it away to start afresh: SNMPv3 clients will then "
                           "see a new engine)\n")


def test_a_world_readable_file_with_secrets_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, USER)
    os.chmod(path, 0o644)
    assert warn_if_readable(path, True) == (f"warning: config {path} holds secrets and is "
                                            "readable by others (mode 644); chmod 600 it")
    os.chmod(path, 0o600)
    assert warn_if_readable(path, True) is None
