"""The role against a booted Debian gateway: real systemd as PID 1 in systemd-nspawn, in a
network namespace this test owns (ansible/README.md, "Testing").

The tests run in order and share one gateway: deploy twice (idempotence), drive the real
pipeline until an alert becomes an iptables rule, power off and look from outside (rules
gone, ledger kept, journal order), reboot (ban restored, order holds with a slow stop),
a negative control without the drop-in (order reversed), then boot/ban/poweroff cycles.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from deploy_harness import (
    ALERT_FILE,
    WAN_ADDR,
    WAN_IFACE,
    Container,
    Netns,
    PlayResult,
    ansible_playbook,
    assert_play_ok,
    copy_rootfs,
    first_index,
    in_netns_chroot,
    journal,
    messages,
    provision_gateway,
    wait_for,
    write_inventory,
)

pytestmark = [pytest.mark.deploy, pytest.mark.root]

OFFENDER = "203.0.113.9"
NOT_OURS_VICTIM = "198.51.100.7"
DROPIN = "etc/systemd/system/banpipe.service.d/10-shutdown-order.conf"
SLOW_STOP = "etc/systemd/system/banpipe.service.d/99-test-slow-stop.conf"
CYCLES = int(os.environ.get("BANPIPE_DEPLOY_CYCLES", "5"))
BAN_TIMEOUT = 15.0


@dataclass
class Gateway:
    root: Path
    netns: Netns
    work: Path
    name: str
    inventory: Path | None = None
    container: Container | None = None
    plays: list[PlayResult] = field(default_factory=list)
    boots: int = 0
    stage: str = "new"
    timings: dict[str, float] = field(default_factory=dict)

    def boot(self) -> Container:
        if self.container is not None:
            # An earlier test failed with the gateway up: cut its power (banpipe must
            # survive that too) so that this test boots its own gateway instead of
            # failing on a machine name still in use.
            self.container.kill()
            self.container = None
        self.boots += 1
        start = time.monotonic()
        self.container = Container(
            self.root, self.name, self.netns, self.work / f"{self.name}-console.log"
        ).boot()
        self.timings[f"boot{self.boots}"] = time.monotonic() - start
        return self.container

    def require(self, stage: str) -> None:
        if self.stage != stage:
            pytest.fail(f"an earlier step failed (at {self.stage!r}, needed {stage!r})")


@pytest.fixture(scope="module")
def gateway(deploy_work, base_rootfs):
    name = f"bpdeploy{os.getpid()}"
    netns = Netns(name).create()
    root = copy_rootfs(base_rootfs, deploy_work / "gateway")
    provision_gateway(root, name)
    gw = Gateway(root=root, netns=netns, work=deploy_work, name=name)
    try:
        yield gw
    finally:
        if gw.container is not None:
            gw.container.kill()
        netns.delete()
        if gw.timings:
            print("\ndeploy timings: " + ", ".join(f"{k}={v:.1f}s" for k, v in gw.timings.items()))


def alert_line(src: str, dst: str, sid: int = 2001219) -> str:
    """A Snort 2 alert_fast line (docs/formats.md), stamped now."""
    ts = datetime.now().strftime("%m/%d-%H:%M:%S.%f")
    return (
        f"{ts}  [**] [1:{sid}:20] ET SCAN Potential SSH Scan [**] "
        f"[Classification: Attempted Information Leak] [Priority: 2] "
        f"{{TCP}} {src}:40000 -> {dst}:22\n"
    )


def append_alert(gw: Gateway, line: str) -> None:
    with open(gw.root / ALERT_FILE.lstrip("/"), "a") as f:
        f.write(line)


def firewall(gw: Gateway) -> str:
    """iptables-save and ip6tables-save of our netns, with the rootfs's own binaries (so
    it works the same while the gateway runs and after it is gone)."""
    v4 = in_netns_chroot(gw.netns, gw.root, "iptables-save").stdout
    v6 = in_netns_chroot(gw.netns, gw.root, "ip6tables-save").stdout
    return v4 + v6


def banned(gw: Gateway, addr: str) -> bool:
    return f"-s {addr}/32 -j DROP" in firewall(gw)


def wait_banned(gw: Gateway, addr: str, what: str | None = None) -> None:
    """Wait for addr's DROP rule; on a timeout, say what the boot's units logged."""
    try:
        wait_for(lambda: banned(gw, addr), BAN_TIMEOUT, 0.1, what or f"a DROP rule for {addr}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{boot_log(gw)}") from None


def boot_log(gw: Gateway) -> str:
    """The running gateway's journal of banpipe's units since boot (monotonic times)."""
    if gw.container is None:
        return "(the gateway is not running)"
    units = ("banpipe-restore.service", "wanwatch.service", "banpipe.service")
    out = gw.container.run(
        "journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", "200",
        *(f"--unit={u}" for u in units), check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


def ledger_addresses(gw: Gateway) -> str:
    """`banctl list --all --json` of the deployed banctl on the rootfs (in our netns, so
    even a firewall access could not reach the host's)."""
    return in_netns_chroot(
        gw.netns,
        gw.root,
        "/usr/local/bin/banctl",
        "--config",
        "/etc/banpipe/banpipe.toml",
        "list",
        "--all",
        "--json",
    ).stdout


def poweroff_and_read_journal(gw: Gateway) -> list[dict]:
    """Power off and return the journal entries of the shutdown only: earlier stops (the
    handler's restart, Restart=on-failure) must not stand in for the shutdown's."""
    assert gw.container is not None
    boot_id = gw.container.boot_id
    since = int(time.time() * 1_000_000)
    gw.timings[f"poweroff{gw.boots}"] = gw.container.poweroff()
    gw.container = None
    assert boot_id
    entries = journal(gw.root, boot_id)
    shutdown = [e for e in entries if int(e["__REALTIME_TIMESTAMP"]) >= since]
    assert shutdown, "no journal entries after the poweroff request"
    # banctl finished its own stop, and none of its firewall commands was killed under it.
    text = messages(shutdown)
    ours = "\n".join(
        line for line in messages(entries).splitlines() if "banpipe" in line or "banctl" in line
    )
    assert "banctl: stopped (" in text, ours[-4000:]
    assert "exit -15" not in text and "exit -9" not in text, text[-3000:]
    return shutdown


def stop_order(entries: list[dict]) -> tuple[int, int, int]:
    """Journal positions: banpipe stopped, network.target stopped, networking stopping."""
    return (
        first_index(entries, "Stopped banpipe.service", unit="banpipe.service"),
        first_index(entries, "Stopped target network.target", unit="network.target"),
        first_index(entries, "Stopping networking.service", unit="networking.service"),
    )


def unit_processes(ct: Container, unit: str) -> dict[int, str]:
    """PID -> command line of every process in the unit's cgroup (minbase has no ps)."""
    cgroup = ct.run("systemctl", "show", unit, "-p", "ControlGroup", "--value").stdout.strip()
    out = ct.run(
        "sh",
        "-c",
        'for p in $(cat "/sys/fs/cgroup$1/cgroup.procs"); do'
        ' printf "%s " "$p"; tr "\\0" " " </proc/$p/cmdline; echo; done',
        "sh",
        cgroup,
    ).stdout
    return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in out.splitlines() if line}


def unit_state(ct: Container, unit: str) -> dict[str, str]:
    out = ct.run("systemctl", "show", unit, "-p", "ActiveState,MainPID,NRestarts").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_clean_after_poweroff(gw: Gateway, addresses: list[str]) -> None:
    rules = firewall(gw)
    for addr in addresses:
        assert addr not in rules, f"{addr} still in the firewall after poweroff:\n{rules}"
    assert "BANPIPE" not in rules, f"banpipe's chain or jumps left behind:\n{rules}"


# --- the tests, in order ------------------------------------------------------------------


def test_role_deploys_into_the_booted_gateway_and_a_rerun_changes_nothing(gateway, wheelhouse):
    gw = gateway
    ct = gw.boot()
    gw.inventory = write_inventory(
        gw.work / "gateway-inventory.json",
        gw.name,
        {
            "ansible_connection": "community.docker.nsenter",
            "ansible_nsenter_pid": ct.leader,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "banpipe_wheelhouse": str(wheelhouse),
            "banpipe_wan_interface": WAN_IFACE,
            "banpipe_alert_file": ALERT_FILE,
            "banpipe_restart_sec": 1,
        },
    )
    for run_no in (1, 2):
        start = time.monotonic()
        result = ansible_playbook(gw.inventory, gw.work)
        gw.timings[f"ansible{run_no}"] = time.monotonic() - start
        gw.plays.append(result)
        assert_play_ok(result)
    first, second = gw.plays
    assert first.changed > 0
    assert second.changed == 0, f"changed on the second run: {second.changed_tasks}"
    gw.stage = "deployed"


def test_services_run_hardened_with_the_drop_in_merged(gateway):
    gw = gateway
    gw.require("deployed")
    ct = gw.container
    assert ct is not None
    out = ct.run("systemctl", "is-active", "banpipe.service", "wanwatch.service", check=False)
    assert out.stdout.split() == ["active", "active"], (
        out.stdout + ct.run("journalctl", "-b", "--no-pager", "-n", "60", check=False).stdout
    )
    props = dict(
        line.split("=", 1)
        for line in ct.run(
            "systemctl",
            "show",
            "banpipe.service",
            "-p",
            "DropInPaths,After,Wants,RequiresMountsFor,ProtectSystem,ProtectHome,PrivateTmp,"
            "NoNewPrivileges,CapabilityBoundingSet,KillMode,ExecStopPost,Restart",
        ).stdout.splitlines()
        if "=" in line
    )
    assert "/etc/systemd/system/banpipe.service.d/10-shutdown-order.conf" in props["DropInPaths"]
    for unit in ("network.target", "network-online.target", "wanwatch.service"):
        assert unit in props["After"].split()
    assert "network-online.target" in props["Wants"].split()
    assert {"/var/lib/banpipe", "/var/log/snort"} <= set(props["RequiresMountsFor"].split())
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes" and props["NoNewPrivileges"] == "yes"
    assert set(props["CapabilityBoundingSet"].split()) == {
        "cap_net_admin",
        "cap_net_raw",
        "cap_dac_read_search",
    }
    assert props["KillMode"] == "mixed" and props["Restart"] == "on-failure"
    wan_type = ct.run("systemctl", "show", "wanwatch.service", "-p", "Type", "--value")
    assert wan_type.stdout.strip() == "notify", "banpipe would start before our WAN is known"
    assert "banctl" in props["ExecStopPost"] and "teardown" in props["ExecStopPost"]
    # The runner and the three stages run in the unit's cgroup.
    procs = " ".join(unit_processes(ct, "banpipe.service").values())
    for cmd in ("pipeline", "bin/fasttail", "bin/alertfilter", "bin/banctl"):
        assert cmd in procs, procs


def test_wanwatch_reports_our_wan_address(gateway):
    gw = gateway
    gw.require("deployed")
    assert gw.container is not None
    wait_for(
        lambda: WAN_ADDR in gw.container.run("cat", "/run/banpipe/wan.json", check=False).stdout,
        10,
        0.2,
        f"{WAN_ADDR} in /run/banpipe/wan.json",
    )


def test_an_alert_against_our_wan_address_becomes_an_iptables_rule(gateway):
    gw = gateway
    gw.require("deployed")
    # First an alert against someone else (require_ours: no ban), then one against us; the
    # pipe keeps order, so once the second is banned the first has been decided.
    append_alert(gw, alert_line("203.0.113.10", NOT_OURS_VICTIM, sid=2001220))
    start = time.monotonic()
    append_alert(gw, alert_line(OFFENDER, WAN_ADDR))
    wait_banned(gw, OFFENDER)
    gw.timings["alert-to-rule"] = time.monotonic() - start
    rules = firewall(gw)
    assert "-A INPUT -j BANPIPE" in rules and "-A FORWARD -j BANPIPE" in rules, rules
    assert "203.0.113.10" not in rules, "banned an alert that was not against us"
    gw.stage = "banned"


def test_a_dead_stage_takes_the_pipeline_down_and_systemd_restarts_it(gateway):
    """SIGKILL to alertfilter, the middle stage: in a plain `sh -c 'a | b | c'` banctl would
    exit on end of input while fasttail lingered and the unit stayed "active" with nobody
    banning. The runner stops the pipeline with alertfilter's status; Restart=on-failure
    brings it back and banctl restores the ban."""
    gw = gateway
    gw.require("banned")
    ct = gw.container
    assert ct is not None
    before = unit_state(ct, "banpipe.service")
    victim = next(
        p for p, cmd in unit_processes(ct, "banpipe.service").items() if "alertfilter" in cmd
    )
    ct.run("sh", "-c", 'kill -KILL "$1"', "sh", str(victim))

    def restarted() -> bool:
        now = unit_state(ct, "banpipe.service")
        return (
            now["ActiveState"] == "active"
            and int(now["NRestarts"]) == int(before["NRestarts"]) + 1
            and now["MainPID"] != before["MainPID"]
        )

    wait_for(restarted, 20, 0.2, "banpipe.service restarted once")
    wait_banned(gw, OFFENDER, "the ban restored after restart")

    def unit_log_at(priority: str = "debug") -> str:
        argv = ("journalctl", "-b", "-u", "banpipe.service", "-p", priority, "-o", "cat")
        return ct.run(*argv, "--no-pager").stdout

    def unit_log() -> str:
        return unit_log_at()

    # banpipe-restore.service may have put the ban back first: wait for banctl itself.
    wait_for(lambda: unit_log().count("banctl: started") >= 2, BAN_TIMEOUT, 0.2, "banctl restarted")
    log = unit_log()
    assert "firewall entries kept" in log  # end of input is no orderly stop
    assert "alertfilter ended with status 137" in log, log[-3000:]
    # Severities reach the journal: `journalctl -p err` finds the dead stage and not
    # the ban, `-p info` has the ban too.
    errors = unit_log_at("err")
    assert "banpipe: alertfilter ended with status 137" in errors, errors
    assert f"{OFFENDER}: banned until" not in errors, errors
    assert f"banctl: {OFFENDER}: banned until" in unit_log_at("info")
    assert [p for p, cmd in unit_processes(ct, "banpipe.service").items() if p == victim] == []


def test_poweroff_stops_banpipe_before_the_network_and_removes_its_rules(gateway):
    gw = gateway
    gw.require("banned")
    entries = poweroff_and_read_journal(gw)
    assert_clean_after_poweroff(gw, [OFFENDER])
    assert OFFENDER in ledger_addresses(gw), "the ban is not in the ledger after poweroff"
    stopped, net_target, networking = stop_order(entries)
    assert stopped < net_target and stopped < networking, messages(entries[max(0, stopped - 30) :])
    gw.stage = "off"


def test_reboot_restores_the_ban_and_the_order_holds_with_a_slow_stop(gateway):
    """ExecStop=/bin/sleep 2 delays banctl's SIGTERM; with the drop-in the network waits."""
    gw = gateway
    gw.require("off")
    slow = gw.root / SLOW_STOP
    slow.write_text("[Service]\nExecStop=/bin/sleep 2\n")
    gw.boot()
    wait_banned(gw, OFFENDER, "the ban restored at start")
    assert_restored_before_the_network(gw)
    entries = poweroff_and_read_journal(gw)
    assert_clean_after_poweroff(gw, [OFFENDER])
    stopped, net_target, networking = stop_order(entries)
    assert stopped < net_target and stopped < networking, messages(entries[max(0, stopped - 30) :])
    gw.stage = "off-slow"


def assert_restored_before_the_network(gw: Gateway) -> None:
    """banpipe-restore.service put the bans in before any interface came up: the banned
    source is dropped from the first packet after boot (on_stop = "remove" took them out
    at the poweroff before). Monotonic timestamps of this boot, from systemd itself."""
    ct = gw.container
    assert ct is not None

    def stamp(unit: str, prop: str) -> int:
        out = ct.run("systemctl", "show", unit, "-p", prop, "--value").stdout.strip()
        assert out.isdigit() and int(out) > 0, f"{unit} {prop}: {out!r}"
        return int(out)

    restored = stamp("banpipe-restore.service", "ActiveEnterTimestampMonotonic")
    pre = stamp("network-pre.target", "ActiveEnterTimestampMonotonic")
    ifup = stamp("networking.service", "InactiveExitTimestampMonotonic")
    assert restored <= pre <= ifup, (restored, pre, ifup)
    log = ct.run("journalctl", "-b", "-u", "banpipe-restore.service", "-o", "cat").stdout
    assert "restored: " in log, log


def test_negative_control_without_the_drop_in_the_network_goes_first(gateway):
    """The same slow stop without 10-shutdown-order.conf: the order test must fail."""
    gw = gateway
    gw.require("off-slow")
    dropin = gw.root / DROPIN
    saved = dropin.read_text()
    dropin.unlink()
    try:
        ct = gw.boot()
        wait_for(
            lambda: (
                ct.run("systemctl", "is-active", "banpipe.service", check=False).stdout.strip()
                == "active"
            ),
            15,
            0.1,
            "banpipe.service active",
        )
        entries = poweroff_and_read_journal(gw)
    finally:
        dropin.write_text(saved)
        (gw.root / SLOW_STOP).unlink(missing_ok=True)
    stopped, net_target, networking = stop_order(entries)
    assert networking < stopped, messages(entries[max(0, networking - 5) : stopped + 5])
    gw.stage = "off-again"


def test_state_on_a_netdev_mount_is_there_from_start_to_stop(gateway):
    """RequiresMountsFor= at run time: /var/lib/banpipe as a `_netdev` bind mount (remote
    storage stands in), which default dependencies do not order before banpipe. The ledger
    lives only on the mount, so bans restored at start prove it was mounted first; the
    journal shows it unmounted only after banpipe stopped; the new ban is on the mount."""
    gw = gateway
    gw.require("off-again")
    state, store = gw.root / "var/lib/banpipe", gw.root / "srv/banpipe-state"
    fstab = gw.root / "etc/fstab"
    saved_fstab = fstab.read_text()
    store.mkdir(parents=True, mode=0o750)
    for f in state.iterdir():
        shutil.move(f, store / f.name)
    fstab.write_text(saved_fstab + "/srv/banpipe-state /var/lib/banpipe none bind,_netdev 0 0\n")
    try:
        ct = gw.boot()
        boot_id = ct.boot_id
        wait_banned(gw, OFFENDER, "bans restored from the mount")
        addr = "203.0.113.77"
        append_alert(gw, alert_line(addr, WAN_ADDR))
        wait_banned(gw, addr)
        shutdown = poweroff_and_read_journal(gw)
        assert boot_id
        boot = journal(gw.root, boot_id)
        # banpipe-restore.service does not pull a network mount in before network-pre.target
        # (that was an ordering cycle: systemd dropped banpipe's jobs); it is skipped while
        # the ledger is not there, and banpipe.service restores once the mount is up.
        mounted = first_index(boot, "Mounted var-lib-banpipe.mount", unit="var-lib-banpipe.mount")
        started = first_index(boot, "Started banpipe.service", unit="banpipe.service")
        assert mounted < started, messages(boot[mounted : started + 1])
        stopped = first_index(shutdown, "Stopped banpipe.service", unit="banpipe.service")
        unmounting = first_index(shutdown, "Unmounting var-lib-banpipe.mount")
        assert stopped < unmounting, messages(shutdown[unmounting : stopped + 1])
        assert_clean_after_poweroff(gw, [OFFENDER, addr])
        on_mount = in_netns_chroot(
            gw.netns,
            gw.root,
            "/usr/local/bin/banctl",
            "--config",
            "/etc/banpipe/banpipe.toml",
            "--ledger",
            "/srv/banpipe-state/ledger.sqlite3",
            "list",
            "--all",
            "--json",
        ).stdout
        assert addr in on_mount and OFFENDER in on_mount, on_mount
        assert not list(state.iterdir()), "banpipe wrote under the mount point"
    finally:
        fstab.write_text(saved_fstab)
        if gw.container is not None and gw.container.running():
            # A failure above must not leave the next tests a running gateway to trip on.
            gw.container.kill()
            gw.container = None
        if gw.container is None:
            for f in store.iterdir():
                shutil.move(f, state / f.name)


def test_repeated_boot_ban_poweroff_cycles_leave_nothing_behind(gateway):
    """Fast stops race SIGTERM against end of input in banctl; repeat to catch it."""
    gw = gateway
    gw.require("off-again")
    addresses = [OFFENDER]
    for cycle in range(CYCLES):
        addr = f"203.0.113.{20 + cycle}"
        # Written while the gateway is off (the IDS may alert at boot before banpipe
        # runs): read at start, and judged only once wanwatch has told systemd that our
        # WAN address is in its state file (Type=notify), not dropped as not ours.
        while_off = f"198.51.100.{20 + cycle}"  # apart from addr for any CYCLES
        addresses += [addr, while_off]
        append_alert(gw, alert_line(while_off, WAN_ADDR))
        gw.boot()
        wait_banned(gw, OFFENDER, "bans restored at start")
        append_alert(gw, alert_line(addr, WAN_ADDR))
        for a in (while_off, addr):
            wait_banned(gw, a)
        entries = poweroff_and_read_journal(gw)
        assert_clean_after_poweroff(gw, addresses)
        stopped, net_target, networking = stop_order(entries)
        assert stopped < net_target and stopped < networking, f"cycle {cycle}"
    ledger = ledger_addresses(gw)
    missing = [a for a in addresses if a not in ledger]
    assert not missing, f"not in the ledger: {missing}"


def test_reconfiguring_a_running_gateway_nftables_keep_and_a_static_wan(gateway, wheelhouse):
    """The role's other branches on a running gateway: backend nftables, on_stop = "keep"
    (no ExecStopPost teardown; entries survive the stop) and a static WAN address instead
    of wanwatch (its unit stopped, disabled and removed). Handlers restart banpipe; a
    second run changes nothing."""
    gw = gateway
    gw.require("off-again")
    ct = gw.boot()
    wait_banned(gw, OFFENDER, "bans restored at start")
    assert gw.inventory is not None
    inventory = json.loads(gw.inventory.read_text())
    hostvars = inventory["banpipe"]["hosts"][gw.name]
    hostvars.update(
        ansible_nsenter_pid=ct.leader,
        banpipe_firewall_backend="nftables",
        banpipe_ban_on_stop="keep",
        banpipe_wan_interface=None,
        banpipe_network_wan=[WAN_ADDR],
    )
    gw.inventory.write_text(json.dumps(inventory))
    start = time.monotonic()
    first = ansible_playbook(gw.inventory, gw.work)
    gw.timings["ansible-reconfigure"] = time.monotonic() - start
    assert_play_ok(first)
    for task in (
        "banpipe : Write banpipe.toml and check it with banpipe's own config loader",
        "banpipe : Stop and disable wanwatch.service when no WAN interface is set",
        "banpipe : Remove wanwatch.service when no WAN interface is set",
        "banpipe : Restart banpipe",
    ):
        assert task in first.changed_tasks, (task, first.changed_tasks)
    again = ansible_playbook(gw.inventory, gw.work)
    assert_play_ok(again)
    assert again.changed == 0, f"changed on the second run: {again.changed_tasks}"

    assert ct.run("systemctl", "is-active", "wanwatch.service", check=False).stdout.strip() in (
        "inactive",
        "unknown",
    )
    assert not (gw.root / "etc/systemd/system/wanwatch.service").exists()
    stop_post = ct.run("systemctl", "show", "banpipe.service", "-p", "ExecStopPost", "--value")
    assert "teardown" not in stop_post.stdout

    def in_nft_set(addr: str) -> bool:
        out = in_netns_chroot(gw.netns, gw.root, "nft", "list", "ruleset", check=False).stdout
        return "table inet banpipe" in out and addr in out

    wait_for(lambda: in_nft_set(OFFENDER), BAN_TIMEOUT, 0.1, f"{OFFENDER} in the nftables set")
    assert "BANPIPE" not in firewall(gw), "the iptables chain outlived the backend switch"
    # The static WAN address alone makes an alert "ours".
    addr = "203.0.113.99"
    append_alert(gw, alert_line(addr, WAN_ADDR))
    wait_for(lambda: in_nft_set(addr), BAN_TIMEOUT, 0.1, f"{addr} in the nftables set")

    entries = poweroff_and_read_journal(gw)
    stopped, net_target, networking = stop_order(entries)
    assert stopped < net_target and stopped < networking
    ruleset = in_netns_chroot(gw.netns, gw.root, "nft", "list", "ruleset").stdout
    assert OFFENDER in ruleset and addr in ruleset, f"on_stop = keep lost entries:\n{ruleset}"


def test_fleet_servers_install_a_hardened_banshare_after_banpipe(gateway, wheelhouse):
    """banpipe_fleet_servers set: nats-py installed from the wheelhouse, banshare.service
    installed, hardened, ordered after banpipe and running; with no NATS server there it
    reports the outage once and keeps retrying while local banning goes on."""
    gw = gateway
    gw.require("off-again")
    ct = gw.boot()
    assert gw.inventory is not None
    inventory = json.loads(gw.inventory.read_text())
    hostvars = inventory["banpipe"]["hosts"][gw.name]
    hostvars.update(
        ansible_nsenter_pid=ct.leader,
        banpipe_fleet_servers=["nats://127.0.0.1:4222"],
        banpipe_fleet_name="edge-1",
    )
    gw.inventory.write_text(json.dumps(inventory))
    first = ansible_playbook(gw.inventory, gw.work)
    assert_play_ok(first)
    for task in (
        "banpipe : Install nats-py for banshare from the wheelhouse",
        "banpipe : Install banshare.service when fleet servers are set",
    ):
        assert task in first.changed_tasks, (task, first.changed_tasks)
    again = ansible_playbook(gw.inventory, gw.work)
    assert_play_ok(again)
    assert again.changed == 0, f"changed on the second run: {again.changed_tasks}"

    wait_for(
        lambda: unit_state(ct, "banshare.service").get("ActiveState") == "active",
        BAN_TIMEOUT, 0.2, "banshare.service active",
    )  # fmt: skip
    props = dict(
        line.split("=", 1)
        for line in ct.run(
            "systemctl", "show", "banshare.service", "-p",
            "After,ProtectSystem,NoNewPrivileges,CapabilityBoundingSet,Restart",
        ).stdout.splitlines()
        if "=" in line
    )  # fmt: skip
    assert "banpipe.service" in props["After"].split()
    assert props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes"
    assert set(props["CapabilityBoundingSet"].split()) == {"cap_net_admin", "cap_net_raw"}
    assert props["Restart"] == "on-failure"

    def outage_reported() -> bool:
        out = ct.run("journalctl", "-u", "banshare.service", "--no-pager", check=False).stdout
        return "banshare: nats: unreachable" in out

    wait_for(outage_reported, BAN_TIMEOUT, 0.2, "banshare reports the missing server")
    addr = "203.0.113.98"  # local banning goes on without the engine
    append_alert(gw, alert_line(addr, WAN_ADDR))

    def in_nft_set() -> bool:
        out = in_netns_chroot(gw.netns, gw.root, "nft", "list", "ruleset", check=False).stdout
        return addr in out

    wait_for(in_nft_set, BAN_TIMEOUT, 0.2, f"{addr} banned while NATS is unreachable")
    log = ct.run("journalctl", "-u", "banshare.service", "--no-pager", check=False).stdout
    assert log.count("banshare: nats: unreachable") == 1, log[-2000:]
    poweroff_and_read_journal(gw)
