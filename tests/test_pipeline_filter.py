"""Real processes: ``bin/fasttail --once --from-start <corpus file> | bin/alertfilter ...``.

The two tools are joined by an OS pipe exactly as in production. Each test checks the
plumbing (every alert fasttail emits gets exactly one verdict, nothing is lost or
repeated, exit codes 0, no errors) and concrete verdicts on real corpus lines.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from banpipe.pipe import ALERT_KEYS
from toolpaths import BIN

pytestmark = pytest.mark.corpus

# The keys alertfilter adds to an alert it forwards, in this order (docs/pipe-format.md).
BAN_KEYS = ("offender", "victim", "reversed", "reason")


def fasttail_json(path, env):
    r = subprocess.run(
        [sys.executable, str(BIN / "fasttail"), "--once", "--from-start", str(path)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(x) for x in r.stdout.splitlines()]


def pipeline(path, config, env, *args):
    """``fasttail --once --from-start path | alertfilter --config config args``."""
    tail = subprocess.Popen(
        [sys.executable, str(BIN / "fasttail"), "--once", "--from-start", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    filt = subprocess.Popen(
        [sys.executable, str(BIN / "alertfilter"), "--config", str(config), *args],
        stdin=tail.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    tail.stdout.close()  # alertfilter holds the only read end now
    out, err = filt.communicate(timeout=120)
    assert tail.wait(timeout=30) == 0
    assert filt.returncode == 0, err.decode()
    return out.decode().splitlines(), err.decode().splitlines()


def write_config(tmp_path, networks, extra=""):
    path = tmp_path / "banpipe.toml"
    nets = ", ".join(f'"{n}"' for n in networks)
    path.write_text(
        f'[network]\nwan_state = "{tmp_path / "wan.json"}"\nnetworks = [{nets}]\n[filter]\n' + extra
    )
    return path


SPECIAL = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/32",
        "::/128",
        "255.255.255.255/32",
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
        "224.0.0.0/4",
        "ff00::/8",
    )
]


def assert_never_protected(ban_lines, ours):
    nets = SPECIAL + [ipaddress.ip_network(n) for n in ours]
    for text in ban_lines:
        offender = ipaddress.ip_address(text.split()[1])
        assert not any(offender.version == n.version and offender in n for n in nets), text


def verdicts(lines):
    """(ban lines, skip lines, summary) of an --explain run."""
    assert lines and lines[-1].startswith("summary: ")
    body = lines[:-1]
    assert all(x.startswith(("BAN ", "skip ")) for x in body)
    return (
        [x for x in body if x.startswith("BAN ")],
        [x for x in body if x.startswith("skip ")],
        lines[-1],
    )


def test_snort2_fast_ipv6_specials_never_banned(corpus_dir, tmp_path, tool_env):
    path = (
        corpus_dir
        / "snort2-fast"
        / "IsabelaGantzel_TCC-LoRa-IDS_snort.alert.fast-ipv6icmp-utf8.txt"
    )
    alerts = fasttail_json(path, tool_env)
    ours = ["192.168.2.0/24"]
    cfg = write_config(tmp_path, ours)
    out, err = pipeline(path, cfg, tool_env, "--explain")
    assert err == []
    bans, skips, summary = verdicts(out)
    assert len(bans) + len(skips) == len(alerts)
    assert summary.startswith(f"summary: {len(alerts)} alerts: ")
    assert_never_protected(bans, ours)
    # Corpus lines 377 and 1824: `:: -> ff02::2` and `0.0.0.0 -> 224.0.0.22`.
    assert "skip ::: unspecified address" in skips
    assert "skip 0.0.0.0: unspecified address" in skips
    assert not any(b.startswith(("BAN ::", "BAN 0.0.0.0", "BAN 255.")) for b in bans)
    # The LoRa gateway's outside peer (corpus line 3823 is the reverse direction).
    assert any(b.startswith("BAN ") and b.endswith("-> 192.168.2.83") for b in bans)


def test_snort3_eth_alerts_have_no_offender(corpus_dir, tmp_path, tool_env):
    # `{eth}  -> ` alerts carry no addresses; the rest of the file is DHCP from 0.0.0.0
    # and IGMP from the local router: nothing here may be banned.
    path = (
        corpus_dir
        / "snort3-fast"
        / "dotuyen2409_BK-IDS_alert_fast-gid116-eth-no-addresses_lines1-41.txt"
    )
    alerts = fasttail_json(path, tool_env)
    cfg = write_config(tmp_path, ["192.168.0.0/16"], "require_ours = false\n")
    out, err = pipeline(path, cfg, tool_env, "--explain")
    bans, skips, summary = verdicts(out)
    assert err == [] and bans == []
    expected = {
        None: "skip -: no offender address",
        "0.0.0.0": "skip 0.0.0.0: unspecified address",
        "192.168.142.1": "skip 192.168.142.1: our network 192.168.0.0/16",
    }
    assert skips == [expected[a["src"]] for a in alerts]
    no_offender = sum(a["src"] is None for a in alerts)
    assert no_offender >= 20
    assert summary.startswith(f"summary: {len(alerts)} alerts: {no_offender} no offender, ")


def test_suricata_json_output_is_the_alert_plus_ban_keys(corpus_dir, tmp_path, tool_env):
    path = corpus_dir / "suricata-fast" / "dveleztx_Week-9-HoneyPot-Project_mhn-suricata_fast.log"
    alerts = fasttail_json(path, tool_env)
    ours = ["10.128.0.0/16"]
    cfg = write_config(tmp_path, ours, "priorities = [1, 2]\n")
    out, err = pipeline(path, cfg, tool_env)
    got = [json.loads(x) for x in out]
    # Everything against the honeypot (10.128.0.7) from outside is a ban; the many
    # alerts against the cloud metadata address 169.254.169.254 are not ours.
    expected = [
        a
        for a in alerts
        if a["dst"] == "10.128.0.7"
        and a["priority"] in (1, 2)
        and ipaddress.ip_address(a["src"]) not in ipaddress.ip_network("10.128.0.0/16")
    ]
    assert len(got) == len(expected) > 2000
    for alert, ban in zip(expected, got):
        assert list(ban) == [*ALERT_KEYS, *BAN_KEYS]
        assert {k: ban[k] for k in ALERT_KEYS} == alert
        assert (ban["offender"], ban["victim"], ban["reversed"]) == (
            alert["src"],
            alert["dst"],
            False,
        )
        rule = f"{alert['gid']}:{alert['sid']}:{alert['rev']}"
        assert ban["reason"] == f"{rule} prio {alert['priority']} against our network 10.128.0.0/16"
    total = len(alerts)
    assert err[-1].startswith(f"alertfilter: summary: {total} alerts: {len(got)} ban, ")
    # Corpus line 1 of the file.
    first = 'BAN 176.119.4.18  1:2402000:5001 "ET DROP Dshield Block Listed Source group 1" prio 2'
    dry, _ = pipeline(path, cfg, tool_env, "--dry-run")
    assert dry[0] == first + " -> 10.128.0.7"
    assert len(dry) == len(got) + 1


def test_reverse_marker_on_real_alerts(corpus_dir, tmp_path, tool_env):
    # Corpus line 4703: `2|ET SCAN Potential SSH Scan OUTBOUND ... 172.16.0.1:34551 ->
    # 192.168.10.50:22`. With "OUTBOUND" as a marker the destination is the offender.
    path = (
        corpus_dir
        / "snort2-fast"
        / "ShreyaKunda_Snort_Suricata_Analysis_friday_pcap-cicids2017.txt"
    )
    alerts = fasttail_json(path, tool_env)
    ours = ["172.16.0.0/24"]
    cfg = write_config(
        tmp_path, ours, 'reverse_markers = ["OUTBOUND"]\npriorities = [1, 2]\nignore = ["1:2925"]\n'
    )
    out, err = pipeline(path, cfg, tool_env, "--explain")
    bans, skips, summary = verdicts(out)
    assert err == [] and len(bans) + len(skips) == len(alerts)
    assert_never_protected(bans, ours)
    assert (
        'BAN 192.168.10.50  1:2003068:6 "2|ET SCAN Potential SSH Scan OUTBOUND" prio 2 '
        "-> 172.16.0.1 (reversed)"
    ) in bans
    outbound = [a for a in alerts if "OUTBOUND" in a["msg"] and a["priority"] in (1, 2)]
    assert outbound
    assert all(b.endswith("(reversed)") for b in bans if "OUTBOUND" in b)
    assert summary.startswith(f"summary: {len(alerts)} alerts: {len(bans)} ban, ")


@pytest.mark.parametrize(
    ("relpath", "ours", "min_bans"),
    [
        # alert_full blocks with Xref lines: refs must pass through untouched.
        (
            "snort2-full/dveleztx_Week-9-HoneyPot-Project_mhn-snort_alert.full.txt",
            ["10.128.0.4"],
            2000,
        ),
        # IPv6 link-local sources and ff02:: destinations next to IPv4 traffic.
        ("suricata-fast/KAKAUsafe_IDS_fast-ipv6.log", ["192.168.219.0/24", "2405:204::/32"], 1),
    ],
)
def test_json_pipeline_keeps_every_alert_field(
    corpus_dir, tmp_path, tool_env, relpath, ours, min_bans
):
    path = corpus_dir / relpath
    alerts = fasttail_json(path, tool_env)
    cfg = write_config(tmp_path, ours, "require_ours = false\n")
    out, err = pipeline(path, cfg, tool_env)
    got = [json.loads(x) for x in out]
    assert len(got) >= min_bans
    assert err[-1].startswith(f"alertfilter: summary: {len(alerts)} alerts: {len(got)} ban")
    assert err[:-1] == []
    # Bans come out in input order, each the alert unchanged plus the ban keys.
    remaining = iter(alerts)
    for ban in got:
        alert = next(a for a in remaining if a["ts"] == ban["ts"] and a["src"] == ban["src"])
        assert {k: v for k, v in ban.items() if k not in BAN_KEYS} == alert
        assert ban["offender"] == alert["src"] and ban["reversed"] is False
    assert_never_protected([f"BAN {b['offender']}" for b in got], ours)
