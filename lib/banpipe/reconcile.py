"""Ledger versus firewall: drift, repair, restore and removal.

The operations shared by the daemon (``banctl apply``, banpipe.daemon) and the admin
commands (``banctl check``, ``restore``, ``teardown``). Each caller holds the ledger's
cross-process lock (``ledger.locked()``) around them, so whichever process changes a
ban also changes the firewall, in commit order. Backends are idempotent: doing a
change twice is harmless, and a crash between commit and firewall is repaired by the
next ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from banpipe import cli
from banpipe.address import Ranges, Split
from banpipe.ctlenv import Env
from banpipe.ledger import Ledger


def firewall_error() -> type[Exception]:
    """The backends' error class (imported late: most commands never load a backend)."""
    from banpipe.firewall import FirewallError

    return FirewallError


def firewall_hint(message: str) -> str:
    """What to do next after a firewall command failed, when the message tells."""
    if "No such file or directory" in message:
        return " (install it, or choose another [firewall] backend; --backend null only prints)"
    if "Permission denied" in message or "Operation not permitted" in message:
        return " (changing the firewall needs root)"
    return ""


@dataclass
class Drift:
    missing: set[str] = field(default_factory=set)  # banned in the ledger, not in firewall
    orphans: set[str] = field(default_factory=set)  # in our firewall part, not banned
    duplicates: dict[str, int] = field(default_factory=dict)
    structure_ok: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.orphans and not self.duplicates and self.structure_ok

    def summary(self) -> str:
        parts = [
            f"{len(self.missing)} missing",
            f"{len(self.orphans)} orphans",
            f"{len(self.duplicates)} duplicates",
            "structure ok" if self.structure_ok else "structure broken",
        ]
        return ", ".join(parts)

    def as_text(self) -> str:
        """``banctl check``: one line per finding (``missing ADDR``, ``orphan ADDR``,
        ``duplicate ADDR xN``, ``problem TEXT``); empty when there is none."""
        lines = [f"missing {a}\n" for a in sorted(self.missing)]
        lines += [f"orphan {a}\n" for a in sorted(self.orphans)]
        lines += [f"duplicate {a} x{n}\n" for a, n in sorted(self.duplicates.items())]
        lines += [f"problem {p}\n" for p in self.problems]
        return "".join(lines)

    def as_json(self, after: Drift, active: int, *, repair: bool) -> dict[str, Any]:
        """``banctl check --json``: this drift, found with ``active`` bans in the
        ledger; ``after`` is the comparison after a ``repair`` (else this one)."""
        return {
            "active": active,
            "consistent": self.clean,
            "missing": sorted(self.missing),
            "orphans": sorted(self.orphans),
            "duplicates": dict(sorted(self.duplicates.items())),
            "problems": list(self.problems),
            "repaired": bool(repair and not self.clean and after.clean),
        }


def compare(ledger: Ledger, fw: Any) -> Drift:
    """Ledger's active bans versus what the firewall holds for us.

    Drift is confirmed by a second listing: right after a large change the kernel can
    list a big nftables set partially (seen: 98,115 of 100,000 elements, no error), and
    a false "missing" must not make ``banctl check`` report drift. Entries count as
    missing or orphaned only when both listings agree.
    """
    want = ledger.active_addresses()
    drift = _drift(want, fw.check())
    # A missing table, chain or set is no artefact of a partial listing: no second one.
    if not drift.clean and drift.structure_ok:
        again = _drift(want, fw.check())
        drift.missing &= again.missing
        drift.orphans &= again.orphans
        drift.duplicates = {a: n for a, n in drift.duplicates.items() if a in again.duplicates}
        drift.structure_ok = drift.structure_ok or again.structure_ok
        if again.structure_ok:
            drift.problems = again.problems
    return drift


def nothing_of_ours(fw: Any) -> bool:
    """True when the firewall holds no entry and none of our structure (a machine where
    nothing was applied yet, or after a full teardown): no drift to speak of."""
    try:
        state = fw.check()
    except firewall_error():
        return False
    return not state.entries and not state.structure_ok


def _drift(want: set[str], state: Any) -> Drift:
    """``want`` (the ledger's active entries) against what the firewall holds. An entry
    inside a banned range needs no entry of its own (the range covers it): it is not
    missing when absent nor an orphan when present (the nftables backend cannot even
    hold a range inside another)."""
    have = set(state.entries)
    missing, orphans = want - have, have - want
    ranges = Ranges([a for a in want if "/" in a])
    if ranges:
        # Only the differences can hold covered entries: a million bans are not each
        # looked up (that took 7 s a comparison with one range banned, at load 10).
        missing = {e for e in missing if not ranges.covers(e)}
        orphans = {e for e in orphans if not ranges.covers(e)}
    return Drift(
        missing=missing,
        orphans=orphans,
        duplicates=dict(state.duplicates),
        structure_ok=bool(state.structure_ok),
        problems=list(state.problems),
    )


def block(env: Env | None, ledger: Ledger, fw: Any, addrs: list[str]) -> list[str]:
    """``fw.block(addrs)``, making room when a set is full; returns the evicted bans.

    The rule when a set (one address family) holds ``[firewall] max_entries``: the
    automated bans of that family that end soonest are ended early (permanent ones
    last, the oldest ban first among equals; manual bans never), as many as the
    ledger holds over the limit plus 1% of it (at least one), so that a full set does
    not evict on every new ban. They are ended in the ledger first, then released, and
    the addresses that did not fit are blocked again (a new ban that is itself among
    the soonest to end is evicted like any other). The caller holds ``ledger.locked()``.
    Without ``env`` (no clock, no report) a full set is an error.
    """
    from banpipe.firewall import FirewallFull

    try:
        fw.block(addrs)
        return []
    except FirewallFull as full:
        if env is None or not full.addresses:
            raise
        limit = fw.settings.max_entries
        evicted: list[str] = []
        for ipv6 in sorted({":" in a for a in full.addresses}):
            over = max(ledger.count_family(ipv6=ipv6) - limit, 0)
            victims = ledger.evictable(over + max(1, limit // 100), ipv6=ipv6)
            evicted += ledger.unban(victims, env.clock(), retention=env.retention)
        if not evicted:
            raise
        lift(fw, evicted, ledger)
        gone = set(evicted)
        env.report.say(
            None,
            f"firewall full ({limit:,} entries per family): "
            f"{cli.plural(len(evicted), 'automated ban')} nearest their end ended early, "
            f"first {evicted[0]}",
            level=cli.WARNING,
        )
        fw.block([a for a in full.addresses if a not in gone])
        return evicted


def reconcile(ledger: Ledger, fw: Any, env: Env | None = None) -> Drift:
    """Make the firewall match the ledger; returns the drift found before repairing.

    The caller holds ``ledger.locked()``. Missing entries go in with ONE bulk
    ``block()`` (making room when a set is full and ``env`` is given, see ``block``);
    orphans out with one ``release()``. A duplicate is released (all of its copies)
    and blocked again once.
    """
    drift = compare(ledger, fw)
    if not drift.structure_ok:
        # No listing after init(): it creates what is missing and leaves the entries as
        # they were (a set or chain it creates is empty, and the listing said so), so
        # the listing's missing and orphans still hold. A repair after a reload is one
        # listing (iptables: two processes) shorter; the daemon looks again at once
        # when its repair changed our part (Enforcer.repair).
        fw.init()
    if drift.duplicates:
        dups = sorted(drift.duplicates)
        fw.release(dups)
        fw.block([a for a in dups if a not in drift.orphans])
    if drift.missing:
        block(env, ledger, fw, sorted(drift.missing))
    if drift.orphans:
        lift(fw, sorted(drift.orphans), ledger)
    return drift


def lift(fw: Any, entries: list[str], ledger: Ledger, keep: set[str] | None = None) -> None:
    """``fw.release(entries)``, then what stays banned inside a released range gets
    its own entry back (an address or narrower range the range covered: the nftables
    backend held no entry for it). ``keep``: the entries that stay banned (default: the
    ledger's active ones, read only when a range was released)."""
    fw.release(entries)
    gone = Ranges([e for e in entries if "/" in e])
    if not gone:
        return
    active = ledger.active_addresses() if keep is None else keep
    still = Ranges([a for a in active if "/" in a])
    back = [a for a in gone.inside(active) if not still.covers(a)]
    if back:
        fw.block(sorted(back))


def restore(env: Env, ledger: Ledger, fw: Any) -> tuple[list[str], list[str], Drift]:
    """Start-up: create our structure, lift lapsed bans and our WAN addresses, restore.

    Returns (lapsed, lifted WAN addresses, drift before repair).
    """
    now = env.clock()
    with ledger.locked():
        fw.init()
        lapsed = ledger.expire(now, retention=env.retention)
        wan = lift_wan_bans(env, ledger, fw, env.wan_addresses(), release=False)
        drift = None
        bans = ledger.active_split()  # split by kind: no pass sorts a million again
        if sum(map(len, bans)) >= REPLACE_AT:
            drift = _replace(bans, fw)
        del bans  # a million strings: not held through the comparison below
        if drift is None:
            drift = reconcile(ledger, fw, env)  # lapsed/WAN entries are orphans here
    return lapsed, wan, drift


REPLACE_AT = 100_000  # active bans: from here a backend that can replace does (below)


def _replace(bans: Split, fw: Any) -> Drift | None:
    """Make the firewall hold exactly the ledger's ``bans`` in one transaction, without
    reading it first (nftables: the kernel's set dump costs about 11 us per element,
    a million elements 10-40 s, where putting them all in again costs 3). None when
    the backend cannot (the caller then compares and repairs); the drift it returns
    is unknown, so reported clean."""
    from banpipe.firewall import FirewallFull

    replace = getattr(fw, "replace", None)
    if replace is None:
        return None
    try:
        done = replace(bans)
    except FirewallFull:
        return None  # more bans than room: the comparison makes room (block())
    return Drift() if done else None


def remove_automated(ledger: Ledger, fw: Any, *, thorough: bool) -> tuple[int, int]:
    """Take the automated bans out of the firewall, keep the manual ones.

    Returns (entries removed, manual bans kept). With no manual ban, all of banpipe's
    firewall part goes (``close(teardown=True)``: no empty chain, sets or table left).
    ``thorough`` also removes entries the ledger does not know, at the cost of reading
    the firewall. The caller holds ``ledger.locked()``. The ledger is not changed.
    """
    if not ledger.count_active(manual_only=True):
        fw.close(teardown=True)  # one bulk removal, no need to list anything
        return ledger.count_active(), 0
    automated = ledger.active_addresses(automated_only=True)
    manual = ledger.active_addresses() - automated
    drop = set(automated)
    if thorough:
        drop |= fw.check().entries - manual
    if drop:
        lift(fw, sorted(drop), ledger, keep=manual)
    fw.close(teardown=False)
    return len(drop), len(manual)


def lift_wan_bans(
    env: Env, ledger: Ledger, fw: Any, wan: Iterable[str], *, release: bool = True
) -> list[str]:
    """Unban any of ``wan`` (our own addresses now, e.g. a recycled DHCP lease)."""
    banned = [a for a in sorted(set(wan)) if (o := ledger.get(a)) is not None and o.active]
    if not banned:
        return []
    with ledger.locked():
        lifted = ledger.unban(banned, env.clock(), retention=env.retention)
        if release and lifted:
            lift(fw, lifted, ledger)
    for a in lifted:
        env.report.say(a, "ban lifted: it is our WAN address now", level=cli.WARNING)
    return lifted
