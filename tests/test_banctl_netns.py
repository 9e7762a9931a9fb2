"""banctl against the real firewall, inside network namespaces the tests create.

An "attacker" namespace (203.0.113.7/.8, 2001:db8:66::7/::8) talks to a "gateway"
namespace over a veth pair (tests/netns.py); banctl runs in the gateway. Every backend
gets the same scenarios: traffic from a banned address is dropped while others pass,
expiry lets it through again (IPv4 and IPv6), kill -9 at random moments never leaves
the firewall different from the ledger, an external flush is repaired (by the daemon
and by ``check --repair``), and admin commands act at once while ``apply`` runs.
"""

from __future__ import annotations

import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from banpipe import banctl
from banpipe.config import load_config
from banpipe.firewall import SubprocessRunner, make_backend
from banpipe.ledger import Ledger
from netns import NetnsPair

pytestmark = pytest.mark.root

BACKENDS = ["iptables", "ipset", "nftables"]
BIN = Path(__file__).resolve().parents[1] / "bin" / "banctl"
LIB = Path(__file__).resolve().parents[1] / "lib"
V4, V4_OK = "203.0.113.7", "203.0.113.8"
V6, V6_OK = "2001:db8:66::7", "2001:db8:66::8"

# Flushes done behind banctl's back, per backend (only inside the gateway namespace).
FLUSH = {
    "iptables": [["iptables", "-F", "BANPIPE"], ["ip6tables", "-F", "BANPIPE"]],
    "ipset": [["ipset", "flush", "banpipe4"], ["ipset", "flush", "banpipe6"]],
    "nftables": [["nft", "flush", "ruleset"]],
}


class Low:
    def uniform(self, a, b):
        return a


def alert(offender: str, sid: int = 2003) -> str:
    return json.dumps(
        {
            "v": 1,
            "ts": "2026-11-28T10:00:00",
            "gid": 1,
            "sid": sid,
            "rev": 1,
            "msg": "test alert",
            "priority": 2,
            "src": offender,
            "dst": "198.51.100.2",
            "offender": offender,
            "victim": "198.51.100.2",
            "reversed": False,
            "reason": "netns test",
        }
    )


@pytest.fixture
def pair():
    with NetnsPair("bc") as p:
        yield p


def write_config(tmp_path: Path, backend: str, extra: str = "") -> str:
    path = tmp_path / "banpipe.toml"
    path.write_text(
        "[network]\n"
        'networks = ["198.51.100.0/24", "2001:db8:1::/64"]\n'
        f'wan_state = "{tmp_path / "wan.json"}"\n'
        "[firewall]\n"
        f'backend = "{backend}"\n'
        "[banctl]\n"
        f'ledger = "{tmp_path / "ledger.sqlite3"}"\n' + extra
    )
    return str(path)


class Banctl:
    """banctl for one gateway namespace: in-process commands and a real daemon."""

    def __init__(self, pair: NetnsPair, config: str) -> None:
        self.pair = pair
        self.config = config
        self.cfg = load_config(config)
        self.runner = SubprocessRunner(prefix=pair.gateway.prefix)

    def __call__(self, *argv: str, stdin: str = "", clock=None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = banctl.main(
            ["--config", self.config, *argv],
            stdin=io.StringIO(stdin),
            stdout=out,
            stderr=err,
            clock=clock,
            rng=Low(),
            runner=self.runner,
        )
        return rc, out.getvalue(), err.getvalue()

    def spawn(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(LIB), "PYTHONUNBUFFERED": "1"}
        return self.pair.gateway.popen(
            [sys.executable, str(BIN), "--config", self.config, "apply"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    def started(self, *banned: str) -> subprocess.Popen:
        """A daemon spawned and started, then fed an alert for each of ``banned`` and
        waited for until they are the firewall's entries. Stopped if that fails."""
        proc = self.spawn()
        try:
            assert wait_for(lambda: proc.stderr.readline().startswith("banctl: started"))
            if banned:
                proc.stdin.write("".join(f"{alert(addr)}\n" for addr in banned))
                proc.stdin.flush()
                assert wait_for(lambda: self.firewall().entries == set(banned))
        except BaseException:
            stop(proc)
            raise
        return proc

    def firewall(self):
        fw = make_backend(self.cfg.firewall.backend, self.cfg.firewall, self.runner)
        return fw.check()

    def active(self) -> set[str]:
        with Ledger.open(self.cfg.banctl.ledger) as led:
            return led.active_addresses()

    def banned_once(self, addr: str) -> bool:
        if not Path(self.cfg.banctl.ledger).exists():
            return False
        with Ledger.open(self.cfg.banctl.ledger) as led:
            o = led.get(addr)
            return o is not None and o.bans >= 1

    def assert_consistent(self) -> None:
        state = self.firewall()
        assert state.structure_ok, state.problems
        assert state.duplicates == {}
        assert state.entries == self.active()


def wait_for(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ban_drops_traffic_and_expiry_lets_it_through(tmp_path, pair, backend):
    b = Banctl(pair, write_config(tmp_path, backend, '[ban]\non_stop = "keep"\nbase = "10m"\n'))
    now = time.time()
    assert pair.ping(V4) and pair.ping(V6)
    rc, _, err = b("apply", stdin=f"{alert(V4)}\n{alert(V6)}\n", clock=lambda: now)
    assert rc == 0, err
    assert not pair.ping(V4), "banned IPv4 source still answered"
    assert not pair.ping(V6), "banned IPv6 source still answered"
    assert pair.ping(V4_OK) and pair.ping(V6_OK), "unbanned sources must pass"
    with pair.listen_tcp(8080):
        assert pair.tcp_probe(V4, 8080) == "timeout"
        assert pair.tcp_probe(V4_OK, 8080) == "open"
    b.assert_consistent()
    rc, out, _ = b("expire", clock=lambda: now + 599)
    assert out.startswith("0 expired") and not pair.ping(V4)
    rc, out, _ = b("expire", clock=lambda: now + 600)
    assert rc == 0 and {"expired " + V4, "expired " + V6} <= set(out.splitlines())
    assert pair.ping(V4) and pair.ping(V6)
    b.assert_consistent()


@pytest.mark.parametrize("backend", BACKENDS)
def test_banned_range_drops_every_source_inside_until_unbanned(tmp_path, pair, backend):
    b = Banctl(pair, write_config(tmp_path, backend, '[ban]\non_stop = "keep"\n'))
    rc, out, err = b("ban", "203.0.113.0/29")  # .7 inside, .8 not
    assert rc == 0 and out.startswith("203.0.113.0/29: banned"), err
    rc, _, err = b("ban", "2001:db8:66::/125", "--for", "1h")
    assert rc == 0, err
    assert not pair.ping(V4) and not pair.ping(V6)
    assert pair.ping(V4_OK) and pair.ping(V6_OK)
    # An address inside: its violation is recorded, its own ban too.
    rc, _, err = b("apply", stdin=f"{alert(V4)}\n")
    assert rc == 0, err
    rc, out, _ = b("check")
    assert rc == 0, out
    rc, out, _ = b("unban", "203.0.113.0/29")
    assert rc == 0 and out == "203.0.113.0/29: unbanned\n"
    assert not pair.ping(V4), "its own ban stays"
    b("unban", V4)
    b("unban", "2001:db8:66::/125")
    assert pair.ping(V4) and pair.ping(V6)
    b.assert_consistent()


@pytest.mark.parametrize("backend", BACKENDS)
def test_daemon_expires_short_ban_by_itself(tmp_path, pair, backend):
    cfg = write_config(tmp_path, backend, "[ban]\nbase = 1\nextend = [0, 0]\nmax = 1\n")
    b = Banctl(pair, cfg)
    proc = b.spawn()
    try:
        proc.stdin.write(alert(V6) + "\n")
        proc.stdin.flush()
        assert wait_for(lambda: b.banned_once(V6))
        # the ban lasts a second; the daemon must lift it by itself
        assert wait_for(lambda: b.active() == set())
        assert wait_for(lambda: pair.ping(V6, timeout=0.3))
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    assert f"{V6}: ban expired, lifted" in err


def wait_started(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until banctl apply says it started (its stderr), or fail."""
    fd, said = proc.stderr.fileno(), ""
    deadline = time.monotonic() + timeout
    while "banctl: started" not in said:
        left = deadline - time.monotonic()
        assert left > 0, f"banctl apply did not start within {timeout} s: {said}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096).decode(errors="replace")
            assert chunk, f"banctl apply ended before it started: {said}"
            said += chunk


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_at_random_moments_never_leaves_drift(tmp_path, pair, backend):
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    b = Banctl(pair, write_config(tmp_path, backend, "[ban]\nspoof_max = 0\n"))
    serial = 0
    for cycle in range(4):
        proc = b.spawn()
        try:
            # The kill moment counts from banctl's start, not from the spawn: on a loaded
            # machine start-up alone took longer than the whole window, and every cycle's
            # kill landed before the first ban ("nothing was banned at all").
            wait_started(proc)
            # a stream of new offenders (and repeats), killed somewhere in the middle of
            # the work: right after a write, while banctl records and blocks it
            deadline = time.monotonic() + rnd.uniform(0.3, 1.5)
            while True:
                batch = []
                for _ in range(rnd.randint(1, 400)):
                    serial += 1
                    n = serial if rnd.random() < 0.8 else rnd.randint(1, serial)
                    if rnd.random() < 0.5:
                        batch.append(alert(f"2001:db8:66:1::{n:x}"))
                    else:
                        batch.append(alert(f"192.0.2.{n % 250 + 1}"))  # documentation
                proc.stdin.write("\n".join(batch) + "\n")
                proc.stdin.flush()
                if time.monotonic() >= deadline:
                    break
                time.sleep(rnd.uniform(0, 0.05))
            time.sleep(rnd.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
            try:
                proc.stdin.close()
            except OSError:
                pass  # unflushed input to a dead process
        # A firewall command the killed process started (ipset restore, nft -f) may
        # still run: the restore below starts once it has ended, not after a pause.
        assert wait_for(lambda: not pair.gateway.pids()), pair.gateway.pids()
        rc, out, err = b("restore")
        assert rc == 0, f"seed {seed} cycle {cycle}: {err}"
        b.assert_consistent()
    assert len(b.active()) > 0, f"seed {seed}: nothing was banned at all"


@pytest.mark.parametrize("backend", BACKENDS)
def test_external_flush_repaired_by_check_and_by_daemon(tmp_path, pair, backend):
    cfg = write_config(tmp_path, backend, 'check_interval = 1\n[ban]\non_stop = "keep"\n')
    b = Banctl(pair, cfg)
    rc, _, err = b("apply", stdin=f"{alert(V4)}\n{alert(V6)}\n")
    assert rc == 0, err
    for argv in FLUSH[backend]:
        pair.gateway.run(argv)
    assert pair.ping(V4), "flush did not open the firewall: the test proves nothing"
    rc, out, _ = b("check")
    assert rc == 1 and f"missing {V4}" in out.splitlines()
    rc, out, _ = b("check", "--repair")
    assert rc == 0 and out.splitlines()[-1].endswith("repaired")
    assert b("check")[0] == 0
    assert not pair.ping(V4) and not pair.ping(V6)
    # now the daemon, with a 1 s check interval
    proc = b.started()
    try:
        for argv in FLUSH[backend]:
            pair.gateway.run(argv)
        assert wait_for(lambda: b.firewall().entries == {V4, V6})
        assert not pair.ping(V4)
    finally:
        err = stop(proc)
    assert "repaired" in err
    b.assert_consistent()


# What takes our part away, per backend, that the kernel announces (fwevents).
WIPE = {
    "iptables": [
        [["iptables", "-F", "BANPIPE"]],
        [["iptables", "-F"], ["ip6tables", "-F"]],
        [["iptables", "-D", "INPUT", "-j", "BANPIPE"]],
    ],
    "ipset": [[["iptables", "-F"], ["ip6tables", "-F"]]],
    "nftables": [[["nft", "flush", "ruleset"]], [["nft", "delete", "table", "inet", "banpipe"]]],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_firewall_wiped_is_repaired_at_once_without_waiting_for_the_check(tmp_path, pair, backend):
    """The periodic check is an hour away: only the kernel's notification can repair."""
    cfg = write_config(tmp_path, backend, 'check_interval = "1h"\n[ban]\non_stop = "keep"\n')
    b = Banctl(pair, cfg)
    proc = b.started(V4, V6)
    try:
        for wipe in WIPE[backend]:
            for argv in wipe:
                pair.gateway.run(argv)
            assert wait_for(lambda: b("check")[0] == 0), wipe
            assert not pair.ping(V4, timeout=0.5) and not pair.ping(V6, timeout=0.5)
    finally:
        err = stop(proc)
    assert "firewall changed from outside; repaired" in err
    b.assert_consistent()


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_wipe_right_after_the_start_is_repaired_at_once(tmp_path, pair, backend):
    """The restore's own notifications are forgotten before "started" is said: a wipe
    just after that line was discarded with them (bench_durability, 3 of 4 runs)."""
    cfg = write_config(tmp_path, backend, 'check_interval = "1h"\n[ban]\non_stop = "keep"\n')
    b = Banctl(pair, cfg)
    stop(b.started(V4))
    proc = b.started()
    try:
        for argv in WIPE[backend][-1]:
            pair.gateway.run(argv)
        assert wait_for(lambda: b("check")[0] == 0)
    finally:
        err = stop(proc)
    assert "firewall changed from outside; repaired" in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_admin_commands_while_apply_runs(tmp_path, pair, backend):
    b = Banctl(pair, write_config(tmp_path, backend))
    proc = b.spawn()
    try:
        assert wait_for(lambda: proc.stderr.readline().startswith("banctl: started"))
        proc.stdin.write(alert(V4) + "\n")
        proc.stdin.flush()
        assert wait_for(lambda: not pair.ping(V4, timeout=0.3))
        rc, _, err = b("ban", V4_OK, "--reason", "admin")
        assert rc == 0, err
        assert not pair.ping(V4_OK)  # at once: the command changed the firewall itself
        rc, _, _ = b("unban", V4)
        assert rc == 0 and pair.ping(V4)
        # Banned for an hour first, so that "dropped at once" is not a race against
        # its expiry (a 1 s ban had lapsed before a probe started on a loaded machine);
        # then shortened to 1 s by a second command.
        rc, _, _ = b("ban", V6, "--for", "1h")
        assert rc == 0 and not pair.ping(V6)
        rc, out, _ = b("ban", V6, "--for", "1s")
        assert rc == 0 and "ban changed to manual" in out
        # the daemon notices the new expiry (no polling; its check interval is 60 s)
        assert wait_for(lambda: pair.ping(V6, timeout=0.3))
        rc, out, _ = b("list")
        assert V4_OK in out and "manual" in out and V4 not in out.replace(V4_OK, "")
        b.assert_consistent()
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    # on_stop = remove: automated gone, the manual ban stays
    assert b.firewall().entries == {V4_OK}
    assert not pair.ping(V4_OK)


def no_trace(pair: NetnsPair) -> list[str]:
    """Whatever of banpipe's is left in the gateway's firewall (should be nothing)."""
    left = []
    for cmd in ("iptables-save", "ip6tables-save"):
        left += [ln for ln in pair.gateway.run([cmd]).stdout.splitlines() if "BANPIPE" in ln]
    left += [ln for ln in pair.gateway.run(["ipset", "list", "-n"]).stdout.split() if ln]
    tables = pair.gateway.run(["nft", "list", "tables"]).stdout.splitlines()
    left += [t for t in tables if "banpipe" in t]
    return left


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_leaves_no_trace_and_teardown_is_idempotent(tmp_path, pair, backend):
    b = Banctl(pair, write_config(tmp_path, backend))
    rc, _, err = b("apply", stdin=f"{alert(V4)}\n{alert(V6)}\n")
    assert rc == 0, err
    # End of input is what a crash upstream looks like: no orderly stop, entries stay.
    assert not pair.ping(V4, timeout=0.5)
    b.assert_consistent()
    for _ in range(2):  # on_stop = remove, nothing manual: all gone; safe twice
        rc, out, err = b("teardown")
        assert rc == 0, err
        assert no_trace(pair) == []
    assert pair.ping(V4)
    assert b.active() == {V4, V6}  # the ledger is intact
    rc, _, _ = b("restore")
    assert rc == 0 and not pair.ping(V4)
    b.assert_consistent()
    for _ in range(2):  # as ExecStopPost after banctl's own stop: safe twice
        rc, out, err = b("teardown")
        assert rc == 0, err
        assert no_trace(pair) == []
    assert pair.ping(V4) and pair.ping(V6)
    # with a manual ban, teardown keeps it (and only it); --all removes everything
    b("restore")
    rc, _, err = b("ban", V4_OK, "--reason", "manual")
    assert rc == 0, err
    rc, _, err = b("teardown")
    assert rc == 0, err
    assert pair.ping(V4) and pair.ping(V6) and not pair.ping(V4_OK)
    assert b.firewall().entries == {V4_OK}
    for _ in range(2):
        rc, _, err = b("teardown", "--all")
        assert rc == 0, err
        assert no_trace(pair) == []
    assert pair.ping(V4_OK)


@pytest.mark.parametrize("backend", ["ipset", "nftables"])
def test_full_set_evicts_the_bans_nearest_their_end(tmp_path, pair, backend):
    """[firewall] max_entries is the sets' size; when one is full, the automated bans of
    that family nearest their end are ended early (reported), manual bans are kept,
    and ledger and firewall stay equal."""
    cfg = tmp_path / "banpipe.toml"
    cfg.write_text(
        "[network]\n"
        'networks = ["198.51.100.0/24", "2001:db8:1::/64"]\n'
        "[firewall]\n"
        f'backend = "{backend}"\n'
        "max_entries = 4\n"
        "[ban]\nspoof_max = 0\n"
        "[banctl]\n"
        f'ledger = "{tmp_path / "ledger.sqlite3"}"\n'
    )
    b = Banctl(pair, str(cfg))
    t = [1_800_000_000.0]
    rc, _, err = b("ban", "192.0.2.200", clock=lambda: t[0])
    assert rc == 0, err
    for i in range(1, 7):
        t[0] += 1
        rc, _, err = b("apply", stdin=alert(f"192.0.2.{i}") + "\n", clock=lambda: t[0])
        assert rc == 0, err
    assert "firewall full" in err
    active = b.active()
    assert "192.0.2.200" in active  # manual: never evicted
    # The oldest automated bans (same duration: nearest their end) went first.
    assert {"192.0.2.5", "192.0.2.6"} <= active and "192.0.2.1" not in active
    assert len(active) <= 4
    b.assert_consistent()
    # IPv6 has its own set and is not touched by the IPv4 set being full.
    rc, _, err = b("apply", stdin=alert(V6) + "\n", clock=lambda: t[0])
    assert rc == 0 and V6 in b.active(), err
    b.assert_consistent()


def test_big_restore_on_nftables_replaces_without_reading_the_set(tmp_path, pair, monkeypatch):
    """From REPLACE_AT active bans, start-up puts the ledger's bans into the nftables
    sets in one transaction instead of dumping them (orphans go, missing come)."""
    from banpipe import reconcile

    monkeypatch.setattr(reconcile, "REPLACE_AT", 1)
    b = Banctl(pair, write_config(tmp_path, "nftables", '[ban]\non_stop = "keep"\n'))
    rc, _, err = b("apply", stdin=f"{alert(V4)}\n{alert(V6)}\n")
    assert rc == 0, err
    pair.gateway.run(["nft", "add", "element", "inet", "banpipe", "v4", "{ 192.0.2.99 }"])
    pair.gateway.run(["nft", "delete", "element", "inet", "banpipe", "v6", f"{{ {V6} }}"])
    from banpipe.firewall.nftables import NftablesBackend

    with monkeypatch.context() as m:
        m.setattr(NftablesBackend, "check", lambda self: pytest.fail("restore read the sets"))
        rc, _, err = b("restore")
    assert rc == 0, err
    b.assert_consistent()
    assert not pair.ping(V6, timeout=0.5)
