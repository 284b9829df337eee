"""Security, end to end: the real agent (`python -m agent --config FILE`) on real UDP ports,
polled with the real Net-SNMP tools and with hand-built datagrams.

- SNMPv3 USM: every supported auth/priv combination reads; a wrong key, an unknown user or a
  wrong security level fails and is counted in usmStats (served by the agent) and logged with
  the source address; localized keys work; the engine ID stays and snmpEngineBoots goes up
  across restarts, kept in an owner-only file.
- Communities: refused from sources outside their networks (127.0.0.2 as a second loopback
  source), on the fast path and through pysnmp alike, counted in snmpInBadCommunityNames.
- Safe defaults: non-loopback listening and serving a community there need explicit settings;
  SNMPv1/v2c can be switched off.
- Read-only: a SET through every community and every user in every context gets an error, and a
  walk of everything before and after is the same.
- Contexts: a second database in SNMPv3 context `mx2`, and an unknown context reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto.mpmod import rfc3412 as mpmod_v3
from pysnmp.proto.rfc1902 import OctetString
from pysnmp.proto.secmod.rfc3414 import localkey

from agent.oids import AGENT_SUBTREES, Kind, Oid
from agent.responder import _LenientV3Message
from counters import Direction, Store
from tests.conftest import (
    AgentProcess,
    AgentProcessFactory,
    agent_command,
    free_udp_port,
    run_agent,
)
from tests.netsnmp import END_OF_VIEW, NUMERIC, Served, oid_text, parse_varbinds
from tests.test_agent import GET, SET, V1, V2C, ber_request, tlv

pytestmark = pytest.mark.netsnmp

SYS_NAME: Oid = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_CONTACT: Oid = (1, 3, 6, 1, 2, 1, 1, 4, 0)
MTA_RECEIVED: Oid = (1, 3, 6, 1, 2, 1, 28, 1, 1, 1, 1)
GROUP_NAME_1: Oid = (1, 3, 6, 1, 2, 1, 28, 2, 1, 25, 1, 1)
SNMP_IN_PKTS: Oid = (1, 3, 6, 1, 2, 1, 11, 1, 0)
SNMP_IN_BAD_VERSIONS: Oid = (1, 3, 6, 1, 2, 1, 11, 3, 0)
SNMP_IN_BAD_COMMUNITY_NAMES: Oid = (1, 3, 6, 1, 2, 1, 11, 4, 0)
SNMP_IN_BAD_COMMUNITY_USES: Oid = (1, 3, 6, 1, 2, 1, 11, 5, 0)
SNMP_ENABLE_AUTHEN_TRAPS: Oid = (1, 3, 6, 1, 2, 1, 11, 30, 0)
ENGINE_ID: Oid = (1, 3, 6, 1, 6, 3, 10, 2, 1, 1, 0)
ENGINE_BOOTS: Oid = (1, 3, 6, 1, 6, 3, 10, 2, 1, 2, 0)
UNKNOWN_CONTEXTS: Oid = (1, 3, 6, 1, 6, 3, 12, 1, 5, 0)
USM_STATS: Oid = (1, 3, 6, 1, 6, 3, 15, 1, 1)
UNSUPPORTED_SEC_LEVELS, UNKNOWN_USER_NAMES, WRONG_DIGESTS, DECRYPTION_ERRORS = (
    (*USM_STATS, 1, 0), (*USM_STATS, 3, 0), (*USM_STATS, 5, 0), (*USM_STATS, 6, 0))

TIME_INTERVAL_COLUMNS = {(1, 3, 6, 1, 2, 1, 28, 2, 1, column) for column in (12, 17, 18, 23)}

AUTHS = ["SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PRIVS = [None, "AES-128", "AES-192", "AES-256"]
#: How Net-SNMP's tools name each privacy protocol (-x).
NETSNMP_PRIV = {"AES-128": "AES", "AES-192": "AES-192", "AES-256": "AES-256"}
AUTH_PASS = "auth pass phrase"
PRIV_PASS = "priv pass phrase"


def user_name(auth: str, priv: str | None) -> str:
    return f"{auth}-{priv or 'nopriv'}".lower()


# --- helpers ------------------------------------------------------------------------------------

def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def user_toml(name: str, auth: str, priv: str | None = None, *, auth_pass: str = AUTH_PASS,
              priv_pass: str = PRIV_PASS) -> str:
    text = (f"[[users]]\nname = {toml_string(name)}\nauth = {toml_string(auth)}\n"
            f"auth_passphrase = {toml_string(auth_pass)}\n")
    if priv is not None:
        text += f"priv = {toml_string(priv)}\npriv_passphrase = {toml_string(priv_pass)}\n"
    return text


def write_config(directory: Path, text: str) -> Path:
    path = directory / f"mailmib-{len(list(directory.glob('mailmib-*.toml')))}.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def fill(db: Path, name: str = "smtpd") -> None:
    with Store(db) as store:
        store.set_mta(name=f"{name} mta", version="1.0")
        store.add_channel(name, direction=Direction.IN)
        store.receive(name, "m1", octets=1500, recipients=2)


class Tools:
    """Net-SNMP's tools, hermetic: no ~/.snmp or /etc/snmp configuration, persistent state in
    a temporary directory."""

    def __init__(self, home: Path) -> None:
        (home / "cert_indexes").mkdir(exist_ok=True)  # else the first run says it made it
        self.env = {**os.environ, "SNMPCONFPATH": str(home), "SNMP_PERSISTENT_DIR": str(home),
                    "HOME": str(home), "MIBS": "", "MIBDIRS": str(home)}

    def run(self, tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout,
                              check=False, env=self.env)

    def v3(self, tool: str, running: AgentProcess, user: str, *args: str, auth: str = "SHA",
           auth_pass: str = AUTH_PASS, priv: str | None = None, priv_pass: str = PRIV_PASS,
           context: str | None = None, level: str | None = None,
           flags: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        command = ["-v3", "-u", user, "-a", auth, "-A", auth_pass]
        if priv is not None:
            command += ["-x", NETSNMP_PRIV[priv], "-X", priv_pass]
        command += ["-l", level or ("authPriv" if priv is not None else "authNoPriv")]
        if context is not None:
            command += ["-n", context]
        return self.run(tool, *command, *NUMERIC, "-t", "2", "-r", "1", *flags, running.target,
                        *args)

    def v2c(self, tool: str, running: AgentProcess, community: str, *args: str,
            version: str = "2c", flags: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return self.run(tool, "-v", version, "-c", community, *NUMERIC, "-t", "1", "-r", "0",
                        *flags, running.target, *args)


def values(proc: subprocess.CompletedProcess[str]) -> dict[Oid, Any]:
    assert proc.returncode == 0, proc.stderr
    return dict(parse_varbinds(proc.stdout))


def one(proc: subprocess.CompletedProcess[str]) -> Any:
    (value,) = values(proc).values()
    return value.value if isinstance(value, Served) else value


def ask(port: int, packet: bytes, *, source: str = "127.0.0.1", timeout: float = 1.0,
        version: int = V2C) -> list[tuple[Oid, Any]] | None:
    """Send one datagram from `source` and decode the answer's varbinds; None if none came."""
    from pysnmp.proto.api import v1, v2c

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            data = sock.recv(70000)
        except TimeoutError:
            return None
    api: Any = v1 if version == V1 else v2c
    message, _ = decoder.decode(data, asn1Spec=api.Message())
    pdu = api.apiMessage.get_pdu(message)
    return [(tuple(o), v.prettyPrint()) for o, v in api.apiPDU.get_varbinds(pdu)]


def agent_log(running: AgentProcess) -> str:
    text = running.stderr_text()
    assert "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(tmp_path_factory.mktemp("netsnmp-home"))


# --- the SNMPv3 matrix ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory,
           agent_process: AgentProcessFactory) -> Iterator[AgentProcess]:
    """One agent with a user for each supported auth/priv combination."""
    directory = tmp_path_factory.mktemp("matrix")
    db = directory / "mailmib.db"
    fill(db)
    text = 'sys_name = "mx-matrix"\n' + "".join(
        user_toml(user_name(auth, priv), auth, priv) for auth in AUTHS for priv in PRIVS)
    with agent_process(db, "--config", str(write_config(directory, text))) as running:
        yield running


@pytest.mark.parametrize("priv", PRIVS)
@pytest.mark.parametrize("auth", AUTHS)
def test_every_auth_priv_combination_reads(matrix: AgentProcess, tools: Tools, auth: str,
                                           priv: str | None) -> None:
    proc = tools.v3("snmpget", matrix, user_name(auth, priv), oid_text(SYS_NAME),
                    oid_text(GROUP_NAME_1), oid_text(MTA_RECEIVED), auth=auth, priv=priv)
    assert values(proc) == {SYS_NAME: Served(*_str(b"mx-matrix")),
                            GROUP_NAME_1: Served(*_str(b"smtpd")),
                            MTA_RECEIVED: Served(Kind.COUNTER32, 1)}
    assert proc.stderr == ""


def _str(value: bytes) -> tuple[Kind, bytes]:
    return Kind.OCTET_STRING, value


def usm_stat(tools: Tools, running: AgentProcess, oid: Oid) -> int:
    return int(one(tools.v3("snmpget", running, "sha-nopriv", oid_text(oid))))


@pytest.mark.parametrize("auth", AUTHS)
def test_a_wrong_auth_key_fails_and_is_counted(matrix: AgentProcess, tools: Tools,
                                               auth: str) -> None:
    before = usm_stat(tools, matrix, WRONG_DIGESTS)
    proc = tools.v3("snmpget", matrix, user_name(auth, None), oid_text(SYS_NAME), auth=auth,
                    auth_pass="not the pass phrase", flags=["-r", "0"])
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Authentication failure (incorrect password, community or key)" in proc.stderr
    # Net-SNMP's discovery is unauthenticated; the one authenticated request fails.
    assert usm_stat(tools, matrix, WRONG_DIGESTS) == before + 1


@pytest.mark.parametrize("priv", PRIVS[1:])
def test_a_wrong_priv_key_fails_and_is_counted(matrix: AgentProcess, tools: Tools,
                                               priv: str) -> None:
    before = usm_stat(tools, matrix, DECRYPTION_ERRORS)
    proc = tools.v3("snmpget", matrix, user_name("SHA-256", priv), oid_text(SYS_NAME),
                    auth="SHA-256", priv=priv, priv_pass="not the pass phrase", flags=["-r", "0"])
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Decryption error" in proc.stderr
    assert usm_stat(tools, matrix, DECRYPTION_ERRORS) == before + 1


def test_unknown_user_and_wrong_level_fail_and_are_counted(matrix: AgentProcess,
                                                          tools: Tools) -> None:
    unknown = usm_stat(tools, matrix, UNKNOWN_USER_NAMES)
    proc = tools.v3("snmpget", matrix, "nobody", oid_text(SYS_NAME), flags=["-r", "0"])
    assert proc.returncode != 0 and "Unknown user name" in proc.stderr
    assert usm_stat(tools, matrix, UNKNOWN_USER_NAMES) == unknown + 1

    levels = usm_stat(tools, matrix, UNSUPPORTED_SEC_LEVELS)
    proc = tools.v3("snmpget", matrix, "sha-aes-128", oid_text(SYS_NAME), level="authNoPriv",
                    flags=["-r", "0"])  # an authPriv user asking without privacy
    assert proc.returncode != 0 and "Unsupported security level" in proc.stderr
    proc = tools.v3("snmpget", matrix, "sha-nopriv", oid_text(SYS_NAME), level="noAuthNoPriv",
                    flags=["-r", "0"])
    assert proc.returncode != 0 and "Unsupported security level" in proc.stderr
    assert usm_stat(tools, matrix, UNSUPPORTED_SEC_LEVELS) == levels + 2


def test_failed_authentication_is_logged_with_the_source(tmp_path: Path, tools: Tools,
                                                         agent_process: AgentProcessFactory
                                                         ) -> None:
    config = write_config(tmp_path, user_toml("ops", "SHA-256", "AES-128"))
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:
        for _ in range(3):
            proc = tools.v3("snmpget", running, "ops", oid_text(SYS_NAME), auth="SHA-256",
                            auth_pass="wrong pass phrase", priv="AES-128", flags=["-r", "0"])
            assert proc.returncode != 0
        good = tools.v3("snmpget", running, "ops", oid_text(SYS_NAME), auth="SHA-256",
                        priv="AES-128")
        assert good.returncode == 0, good.stderr
        assert running.stop() == 0
        text = agent_log(running)
    lines = [line for line in text.splitlines() if "failed authentication" in line]
    # The first at once, the rest summed into one line (rate-limited), each with the source.
    assert lines[0].startswith("mailmib-agent: refused 1 SNMPv3 request that failed "
                               "authentication (last wrong digest from 127.0.0.1:")
    assert len(lines) == 2 and "refused 2 SNMPv3 requests" in lines[1]
    assert "wrong pass phrase" not in text and AUTH_PASS not in text


def test_snmp_enable_authen_traps_is_disabled(matrix: AgentProcess, tools: Tools) -> None:
    assert one(tools.v3("snmpget", matrix, "sha-nopriv", oid_text(SNMP_ENABLE_AUTHEN_TRAPS))) == 2


# --- localized keys and the engine's identity ---------------------------------------------------

def test_localized_keys(tmp_path: Path, tools: Tools, agent_process: AgentProcessFactory) -> None:
    engine_id = bytes.fromhex("80004fb80501020304050607080910")
    # RFC 3414 A.2 (with SHA-256, RFC 7860): the pass phrase hashed, then localized. AES
    # privacy keys are made the same way with the auth protocol's hash (RFC 3826 §1.2).
    auth_key, priv_key = (
        localkey.localize_key(localkey.hash_passphrase(OctetString(phrase), hashlib.sha256),
                              OctetString(engine_id), hashlib.sha256).asOctets()
        for phrase in (AUTH_PASS, PRIV_PASS))
    priv_key = priv_key[:16]
    config = write_config(tmp_path, f"""engine_id = "{engine_id.hex()}"
[[users]]
name = "ops"
auth = "SHA-256"
auth_key = "{auth_key.hex()}"
priv = "AES-128"
priv_key = "{priv_key.hex()}"
""")
    db = tmp_path / "m.db"
    fill(db)
    with agent_process(db, "--config", str(config)) as running:
        proc = tools.v3("snmpget", running, "ops", oid_text(GROUP_NAME_1), oid_text(ENGINE_ID),
                        auth="SHA-256", priv="AES-128")
        got = values(proc)
        assert got[GROUP_NAME_1] == Served(*_str(b"smtpd"))
        assert got[ENGINE_ID] == Served(*_str(engine_id))
        wrong = tools.v3("snmpget", running, "ops", oid_text(SYS_NAME), auth="SHA-256",
                         auth_pass="another pass phrase", priv="AES-128", flags=["-r", "0"])
        assert wrong.returncode != 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_engine_id_stays_and_boots_go_up_across_restarts(tmp_path: Path, tools: Tools,
                                                         agent_process: AgentProcessFactory
                                                         ) -> None:
    directory = tmp_path / "new" / "state"
    db = directory / "mailmib.db"
    config = write_config(tmp_path, user_toml("ops", "SHA-512", "AES-256"))
    state = directory / "mailmib.db.engine"
    seen = []
    port = free_udp_port()
    for _ in range(3):
        with agent_process(db, "--config", str(config), port=port) as running:
            proc = tools.v3("snmpget", running, "ops", oid_text(ENGINE_ID), oid_text(ENGINE_BOOTS),
                            auth="SHA-512", priv="AES-256")
            got = values(proc)
            seen.append((got[ENGINE_ID].value, got[ENGINE_BOOTS].value))
            # A client that already knows the engine ID skips discovery (-e).
            known = tools.v3("snmpget", running, "ops", oid_text(SYS_NAME), auth="SHA-512",
                             priv="AES-256", flags=["-e", seen[0][0].hex()])
            assert known.returncode == 0, known.stderr
    engine_ids = {engine_id for engine_id, _ in seen}
    assert len(engine_ids) == 1
    (engine_id,) = engine_ids
    assert engine_id[:5] == bytes.fromhex("80004fb805") and len(engine_id) == 17
    assert [boots for _, boots in seen] == [1, 2, 3]
    assert json.loads(state.read_text()) == {"engine_id": engine_id.hex(), "boots": 3}
    # Owner-only: the database, its journal files, the engine state; directories 0700.
    assert mode(state) == 0o600 and mode(db) == 0o600
    assert mode(directory) == 0o700 and mode(directory.parent) == 0o700
    for extra in directory.iterdir():
        assert mode(extra) & 0o077 == 0, extra

    # Configuring another engine ID starts the boot count again (RFC 3411: "since
    # snmpEngineID was last configured").
    with agent_process(db, "--config", str(config), "--engine-id", "0x8000000001aa") as running:
        got = values(tools.v3("snmpget", running, "ops", oid_text(ENGINE_ID),
                              oid_text(ENGINE_BOOTS), auth="SHA-512", priv="AES-256"))
        assert (got[ENGINE_ID].value, got[ENGINE_BOOTS].value) == (
            bytes.fromhex("8000000001aa"), 1)


# --- communities and where they may be used from -----------------------------------------------

@pytest.fixture(params=["fast path", "pysnmp only"])
def two_communities(request: pytest.FixtureRequest, tmp_path: Path,
                    agent_process: AgentProcessFactory) -> Iterator[AgentProcess]:
    config = write_config(tmp_path, """
[[communities]]
name = "from-one"
networks = ["127.0.0.1/32"]

[[communities]]
name = "from-two"
networks = ["127.0.0.2/32", "2001:db8::/32"]
""")
    db = tmp_path / "m.db"
    fill(db)
    extra = ["--no-fast-path"] if request.param == "pysnmp only" else []
    with agent_process(db, "--config", str(config), *extra) as running:
        yield running


def counter(running: AgentProcess, oid: Oid, community: bytes = b"from-one") -> int:
    answer = ask(running.port, ber_request(GET, [oid], community=community))
    assert answer is not None
    ((_, value),) = answer
    return int(value)


@pytest.mark.parametrize("version", [V1, V2C])
def test_a_community_is_refused_outside_its_networks(two_communities: AgentProcess,
                                                     version: int) -> None:
    running = two_communities
    request = {c: ber_request(GET, [SYS_NAME], community=c, version=version)
               for c in (b"from-one", b"from-two")}
    before = counter(running, SNMP_IN_BAD_COMMUNITY_NAMES)
    assert ask(running.port, request[b"from-one"], source="127.0.0.1", version=version)
    assert ask(running.port, request[b"from-two"], source="127.0.0.2", version=version)
    assert ask(running.port, request[b"from-one"], source="127.0.0.2", version=version) is None
    assert ask(running.port, request[b"from-two"], source="127.0.0.1", version=version) is None
    assert counter(running, SNMP_IN_BAD_COMMUNITY_NAMES) == before + 2
    text = agent_log(running)
    assert "refused 1 request with a community not allowed from its source (last from " \
           "127.0.0.2:" in text


def test_unknown_community_is_counted_and_logged(two_communities: AgentProcess,
                                                 tools: Tools) -> None:
    before = counter(two_communities, SNMP_IN_BAD_COMMUNITY_NAMES)
    proc = tools.v2c("snmpget", two_communities, "public", oid_text(SYS_NAME))
    assert "Timeout: No Response" in proc.stderr
    assert counter(two_communities, SNMP_IN_BAD_COMMUNITY_NAMES) == before + 1
    assert "ignored 1 request with an unknown community (last from 127.0.0.1:" in \
        agent_log(two_communities)


def test_snmp_in_pkts_counts_what_either_path_answers(two_communities: AgentProcess) -> None:
    first = counter(two_communities, SNMP_IN_PKTS)
    for _ in range(25):
        assert ask(two_communities.port, ber_request(GET, [SYS_NAME], community=b"from-one"))
    assert ask(two_communities.port, ber_request(GET, [SYS_NAME], community=b"nope")) is None
    # 25 answered, 1 dropped, and the second read itself.
    assert counter(two_communities, SNMP_IN_PKTS) == first + 27


# --- listening and versions -------------------------------------------------------------------

def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc.stderr.strip()


def test_non_loopback_listening_needs_both_acknowledgements(tmp_path: Path) -> None:
    port = free_udp_port("0.0.0.0")
    listen = f'listen = ["0.0.0.0:{port}"]\n'
    community = '[[communities]]\nname = "ops-net"\nnetworks = ["127.0.0.1/32"]\n'
    db = tmp_path / "m.db"

    bare = write_config(tmp_path, listen + community)
    assert one_line(run_agent("--config", str(bare))) == (
        f"mailmib-agent: config {bare}:1: listen[0]: refusing to listen on non-loopback "
        f"address 0.0.0.0:{port} without allow_remote = true")
    half = write_config(tmp_path, listen + "allow_remote = true\n" + community)
    assert one_line(run_agent("--config", str(half))) == (
        f"mailmib-agent: config {half}:3: communities[0].allow_remote: refusing to serve "
        f"community #1 on non-loopback address 0.0.0.0:{port} without allow_remote = true")
    assert not db.exists()

    both = write_config(tmp_path, listen + "allow_remote = true\n" + community
                        + "allow_remote = true\n")
    # Started by hand: the conftest's agents get a --listen flag, which would replace the
    # file's.
    proc = subprocess.Popen(agent_command("--config", str(both), "--db", str(db)),
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()
        assert f"on 0.0.0.0:{port} (SNMPv1/v2c, 1 community)" in ready, ready
        answer = ask(port, ber_request(GET, [SYS_NAME], community=b"ops-net"))
        assert answer is not None
        refused = ask(port, ber_request(GET, [SYS_NAME], community=b"ops-net"),
                      source="127.0.0.2")
        assert refused is None
    finally:
        proc.terminate()
        proc.wait(10)

    # SNMPv3 only: no community to acknowledge.
    v3_only = write_config(tmp_path, listen + "allow_remote = true\nsnmpv1 = false\n"
                                              "snmpv2c = false\n" + user_toml("ops", "SHA-256"))
    proc = subprocess.Popen(agent_command("--config", str(v3_only), "--db", str(db)),
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "(SNMPv3, users 'ops')" in proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)


def test_snmpv1_switched_off(tmp_path: Path, tools: Tools,
                             agent_process: AgentProcessFactory) -> None:
    config = write_config(tmp_path, "snmpv1 = false\n")
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:
        bad = counter(running, SNMP_IN_BAD_VERSIONS, b"public")
        assert ask(running.port, ber_request(GET, [SYS_NAME], version=V1), version=V1) is None
        proc = tools.v2c("snmpget", running, "public", oid_text(SYS_NAME), version="1")
        assert "Timeout: No Response" in proc.stderr
        assert tools.v2c("snmpget", running, "public", oid_text(SYS_NAME)).returncode == 0
        assert counter(running, SNMP_IN_BAD_VERSIONS, b"public") == bad + 2
        assert "(SNMPv2c, 1 community)" in running.stderr_text()


def test_snmpv1_and_v2c_switched_off(tmp_path: Path, tools: Tools,
                                     agent_process: AgentProcessFactory) -> None:
    config = write_config(tmp_path, "snmpv1 = false\nsnmpv2c = false\n"
                          + user_toml("ops", "SHA-224", "AES-192"))
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:
        for version in (V1, V2C):
            assert ask(running.port, ber_request(GET, [SYS_NAME], version=version),
                       version=version) is None
        got = values(tools.v3("snmpget", running, "ops", oid_text(SNMP_IN_BAD_VERSIONS),
                              auth="SHA-224", priv="AES-192"))
        assert got[SNMP_IN_BAD_VERSIONS].value == 2
        assert "(SNMPv3, users 'ops')" in running.stderr_text()


# --- everything read-only ---------------------------------------------------------------------

def stable_walk(proc: subprocess.CompletedProcess[str]) -> dict[Oid, Any]:
    """A walk's values, without those that move by themselves (the clock, the agent's own
    statistics, which the SETs are meant to move)."""
    out = {}
    for oid, value in values(proc).items():
        if isinstance(value, str) and value.startswith(END_OF_VIEW):
            continue
        if any(oid[:len(s)] == s for s in AGENT_SUBTREES):
            continue
        if isinstance(value, Served) and (value.kind is Kind.TIMETICKS or
                                          oid[:10] in TIME_INTERVAL_COLUMNS):
            value = (value.kind, "clock")
        out[oid] = value
    return out


READ_ONLY_USERS = [("reader", "SHA", None), ("private", "SHA-256", "AES-128"),
                   ("strong", "SHA-512", "AES-256")]


def test_set_is_refused_through_every_community_and_user(tmp_path: Path, tools: Tools,
                                                         agent_process: AgentProcessFactory
                                                         ) -> None:
    fill(tmp_path / "m.db")
    fill(tmp_path / "mx2.db", "lmtp")
    config = write_config(tmp_path, """
[[communities]]
name = "first"
[[communities]]
name = "second"
context = "mx2"
[[contexts]]
name = "mx2"
database = "mx2.db"
""" + "".join(user_toml(*user) for user in READ_ONLY_USERS))
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:

        def everything() -> list[dict[Oid, Any]]:
            walks = [stable_walk(tools.v2c("snmpbulkwalk", running, c, ".1.3.6.1"))
                     for c in ("first", "second")]
            for name, auth, priv in READ_ONLY_USERS:
                for context in ("", "mx2"):
                    walks.append(stable_walk(tools.v3("snmpbulkwalk", running, name, ".1.3.6.1",
                                                      auth=auth, priv=priv, context=context)))
            return walks

        before = everything()
        assert before[0] == before[2] and before[1] == before[3]  # contexts agree both ways
        assert before[0][GROUP_NAME_1] == Served(*_str(b"smtpd"))
        assert before[1][GROUP_NAME_1] == Served(*_str(b"lmtp"))
        targets = [oid_text(SYS_CONTACT), "s", "intruder", oid_text(MTA_RECEIVED), "u", "7",
                   # a new usmUserEntry (usmUserStatus createAndGo) and community row
                   ".1.3.6.1.6.3.15.1.2.2.1.13.5.128.0.0.0.1.4.101.118.105.108", "i", "4",
                   ".1.3.6.1.6.3.18.1.1.1.8.101.118.105.108", "i", "4"]
        refusals = 0
        for community in ("first", "second"):
            for version, reason in (("1", "(noSuchName)"), ("2c", "noAccess")):
                proc = tools.v2c("snmpset", running, community, *targets, version=version)
                assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
                refusals += 1
        for name, auth, priv in READ_ONLY_USERS:
            for context in ("", "mx2"):
                proc = tools.v3("snmpset", running, name, *targets, auth=auth, priv=priv,
                                context=context)
                assert proc.returncode != 0 and "Reason: noAccess" in proc.stderr, proc.stderr
        assert everything() == before
        # SNMPv1/v2c SETs count as uses the community does not allow.
        assert counter(running, SNMP_IN_BAD_COMMUNITY_USES, b"first") == refusals
        assert "Traceback" not in running.stderr_text()


# --- contexts ---------------------------------------------------------------------------------

def test_contexts_serve_their_own_database(tmp_path: Path, tools: Tools,
                                           agent_process: AgentProcessFactory) -> None:
    fill(tmp_path / "m.db")
    fill(tmp_path / "mx2.db", "lmtp")
    config = write_config(tmp_path, '[[contexts]]\nname = "mx2"\ndatabase = "mx2.db"\n'
                          '[[communities]]\nname = "mx2-only"\ncontext = "mx2"\n'
                          + user_toml("ops", "SHA-384", "AES-256"))
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:
        def name_in(context: str | None) -> Any:
            return one(tools.v3("snmpget", running, "ops", oid_text(GROUP_NAME_1),
                                auth="SHA-384", priv="AES-256", context=context))

        assert name_in(None) == b"smtpd" and name_in("mx2") == b"lmtp"
        assert one(tools.v2c("snmpget", running, "mx2-only", oid_text(GROUP_NAME_1))) == b"lmtp"
        proc = tools.v3("snmpget", running, "ops", oid_text(SYS_NAME), auth="SHA-384",
                        priv="AES-256", context="mx3", flags=["-r", "0"])
        assert proc.returncode != 0 and "context" in proc.stderr.lower(), proc.stderr
        unknown = one(tools.v3("snmpget", running, "ops", oid_text(UNKNOWN_CONTEXTS),
                               auth="SHA-384", priv="AES-256"))
        assert unknown == 1
        assert f"{tmp_path / 'mx2.db'} (context 'mx2')" in running.stderr_text()


# --- SNMPv3 GETBULK ---------------------------------------------------------------------------

def test_v3_bulk_walk_and_a_large_bulk_fit(tmp_path: Path, tools: Tools,
                                           agent_process: AgentProcessFactory) -> None:
    with Store(tmp_path / "m.db") as store:
        for n in range(600):
            store.add_channel(f"channel-{n:04d}")
    config = write_config(tmp_path, user_toml("ops", "SHA-256", "AES-128"))
    with agent_process(tmp_path / "m.db", "--config", str(config)) as running:
        v3 = stable_walk(tools.v3("snmpbulkwalk", running, "ops", ".1.3.6.1.2.1.28",
                                  auth="SHA-256", priv="AES-128", flags=["-Cr50"]))
        v2c = stable_walk(tools.v2c("snmpbulkwalk", running, "public", ".1.3.6.1.2.1.28"))
        assert v3 == v2c and len(v3) > 6000
        proc = tools.v3("snmpbulkget", running, "ops", ".1.3.6.1", auth="SHA-256",
                        priv="AES-128", flags=["-Cr100000"])
        got = values(proc)
        assert 1000 < len(got) < len(v3)  # cut to fit one datagram, not dropped
        silent = values(tools.v3("snmpget", running, "ops", ".1.3.6.1.2.1.11.31.0",
                                 auth="SHA-256", priv="AES-128"))
        assert next(iter(silent.values())).value == 0  # snmpSilentDrops: nothing dropped


def test_v3_getbulk_with_negative_counts_decodes() -> None:
    """The SNMPv3 scoped PDU is read with the lenient GetBulkRequest-PDU too (RFC 3416
    §4.2.3 computes with max(…, 0)); pysnmp's stock spec refuses the message."""
    bulk = tlv(0xA5, tlv(0x02, b"\x01") + tlv(0x02, b"\xff") + tlv(0x02, b"\xfb")
               + tlv(0x30, tlv(0x30, b"\x06\x03\x2b\x06\x01\x05\x00")))
    scoped = tlv(0x30, tlv(0x04, b"\x80\x00\x4f\xb8\x05") + tlv(0x04, b"") + bulk)
    header = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x02, b"\x05\xdc") + tlv(0x04, b"\x04")
                 + tlv(0x02, b"\x03"))
    message = tlv(0x30, tlv(0x02, b"\x03") + header + tlv(0x04, tlv(0x30, b"")) + scoped)
    decoded, rest = decoder.decode(message, asn1Spec=_LenientV3Message())
    assert rest == b""
    pdu = decoded["msgData"]["plaintext"]["data"]["get-bulk-request"]
    assert (int(pdu["non-repeaters"]), int(pdu["max-repetitions"])) == (-1, -5)
    with pytest.raises(Exception):  # noqa: B017 - any pyasn1 error
        decoder.decode(message, asn1Spec=mpmod_v3.SNMPv3Message())


def test_set_on_the_wire_from_a_refused_source_gets_nothing(two_communities: AgentProcess
                                                           ) -> None:
    packet = ber_request(SET, [SYS_CONTACT], community=b"from-one", value=tlv(0x04, b"x"))
    assert ask(two_communities.port, packet, source="127.0.0.2") is None
    answer = ask(two_communities.port, packet, source="127.0.0.1")
    assert answer == [(SYS_CONTACT, "x")]
