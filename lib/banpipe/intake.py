"""``banctl apply``'s intake: alertfilter's lines become violations, or are refused.

:class:`Intake` is the deciding part of the daemon (banpipe.daemon): it validates each
line, refuses protected and invalid offenders, and reduces what is left to groups of
identical violations, ready for ``Ledger.record_groups``. In a stream with position
records (``fasttail --ledger``), the violations of a unit wait until the position
that closes it arrives; a unit the ledger already holds is ignored.

This is the hot path of a flood, so each line is reduced at once to its violation's
group with memos for the addresses (banpipe.memo): no parsed object outlives its line
(a list of them made the cyclic GC walk it again and again).
"""

from __future__ import annotations

from collections import Counter
from operator import itemgetter
from typing import Any

from banpipe import cli, pipe, positions
from banpipe.address import canonical
from banpipe.memo import Memo
from banpipe.protect import Protection

CACHE_MAX = 100_000  # per-address memos of the hot path (canonical form, protection)
SIG_CACHE = 4096  # per generation: rules that fire at all are few
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# The keys of a pipe line that make its violation, and its alert time stamp.
FIELDS = ("offender", "gid", "sid", "rev", "msg", "priority", "victim", "reversed", "reason", "ts")
fields = itemgetter(*FIELDS)

Groups = dict[tuple, list]  # Violation[:7] -> [alert_ts, count, last line, last alert_ts]


def not_an_address(raw: str) -> str:
    return f"offender is not an IP address: {raw[:64]!r}"


def _victim(text: str) -> str:
    return canonical(text) or text[:64]


def _sig(ids: tuple[int, int, int]) -> str:
    return f"{ids[0]}:{ids[1]}:{ids[2]}"


def _alert_ts(ts: Any) -> str | None:
    if type(ts) is str:
        return ts[:64]
    return str(ts) if type(ts) in (int, float) else None


class Intake:
    """Lines in, violation groups out; bad and refused lines reported and counted."""

    def __init__(
        self,
        protection: Protection,
        recorded: positions.Recorded,
        counts: Counter[str],
        report: cli.Reporter,
        seen: Any,
    ) -> None:
        self.protection = protection
        self.recorded = recorded  # the positions the ledger holds (shared with the recorder)
        self.counts = counts
        self.report = report
        self.seen = seen  # called after each burst of input (the monitor's liveness)
        # Raw offender text -> (canonical address or None, why it is refused or None);
        # cleared whenever the protection changes. Raw victim text -> its stored form.
        self._offenders = Memo(CACHE_MAX // 2, self._judge)
        self._victims = Memo(CACHE_MAX // 2, _victim)
        self._sigs = Memo(SIG_CACHE, _sig)  # (gid, sid, rev) -> "gid:sid:rev"
        self.positional = False  # the input carries position records
        self.novel = False  # an offender not met lately was gathered (set until cleared)
        self.unit: Groups = {}  # violations of the open unit

    def protect(self, protection: Protection) -> None:
        """New protection (the WAN addresses changed): every offender is judged again."""
        self.protection = protection
        self._offenders.clear()

    def _judge(self, raw: str) -> tuple[str | None, str | None]:
        """(canonical address, None) for an offender that may be banned; (address, why)
        for a protected one; (None, "") for text that is no address."""
        addr = canonical(raw.strip())
        if addr is None:
            return None, ""
        return addr, self.protection.reason(addr)

    def gather(self, lines: list[bytes], lineno: int, groups: Groups) -> int:
        """Decode and validate pipe lines into ``groups`` (``Violation[:7]`` -> [alert_ts,
        count, last line, last alert_ts], what ``Ledger.record_groups`` takes); bad and
        refused lines are reported and counted. ``lineno`` is the number of the line
        before the first. Returns the number of lines consumed.

        The only place an alertfilter line becomes a violation. A valid line is decoded
        here without banpipe.pipe.PipeReader's generator between (about a quarter of
        banctl's reading time); any other gets its reason from ``pipe.decode``.
        """
        counts, report = self.counts, self.report
        offenders, victims, sigs = self._offenders, self._victims, self._sigs
        judged, victim_of, sig_of = offenders.get, victims.get, sigs.get
        loads, max_line, version = pipe.loads, pipe.MAX_LINE, pipe.VERSION
        # A positional stream's alerts wait in the open unit until its position arrives.
        target = self.unit if self.positional else groups
        for raw in lines:
            lineno += 1
            try:
                obj = loads(raw) if len(raw) <= max_line else None
            except ValueError:
                obj = None
            if obj.__class__ is not dict or obj.get("v") != version:
                why = pipe.decode(raw, lineno)  # the pipe's reason (None: a blank line)
                if why is not None:
                    self.bad(lineno, why.reason)  # type: ignore[union-attr]
                continue
            try:  # one C call for the fields of a violation (a dict.get each: 15% more)
                raw, gid, sid, rev, msg, priority, victim, flipped, reason, ts = fields(obj)
            except KeyError:  # some absent: None, as for a get
                raw, gid, sid, rev, msg, priority, victim, flipped, reason, ts = map(
                    obj.get, FIELDS
                )
            if type(raw) is not str or not raw:
                if obj.get("type") == pipe.POSITION:
                    target = self.close_unit(obj, lineno, groups)
                    continue
                self.bad(lineno, "no offender address")
                continue
            verdict = judged(raw)
            if verdict is None:
                verdict = offenders.lookup(raw)
                self.novel = True  # maybe a new ban: the daemon commits without lingering
            addr, refused = verdict
            if refused is not None:
                if addr is None:
                    self.bad(lineno, not_an_address(raw))
                else:
                    counts["refused"] += 1
                    report.error(
                        f"<stdin>:{lineno}", f"refusing to ban {addr}: {refused}", "refused"
                    )
                continue
            # exact types (True is not a number here)
            if type(gid) is not int or type(sid) is not int:
                sig = None
            elif type(rev) is int:
                sig = sig_of((gid, sid, rev))  # all exact ints: 1 and True never meet here
                if sig is None:
                    sig = sigs.lookup((gid, sid, rev))
            else:
                sig = f"{gid}:{sid}"
            if type(priority) is int and not _INT64_MIN <= priority <= _INT64_MAX:
                # SQLite stores 64 bits: this line's error, not the batch's
                self.bad(lineno, f"priority out of range: {priority}")
                continue
            if type(victim) is str:
                text = victim
                victim = victim_of(text)
                if victim is None:
                    victim = victims.lookup(text)
            else:
                victim = None
            key = (
                addr,
                sig,
                msg[:1000] if type(msg) is str else None,
                priority if type(priority) is int else None,
                victim,
                flipped is True,
                reason[:1000] if type(reason) is str else None,
            )
            if type(ts) is not str or len(ts) > 64:
                ts = _alert_ts(ts)
            group = target.get(key)
            if group is None:
                target[key] = [ts, 1, lineno, ts]
            else:
                group[1] += 1
                group[2] = lineno
                group[3] = ts
        counts["lines"] += len(lines)
        if lines:
            self.seen()
        return len(lines)

    def bad(self, lineno: int, reason: str) -> None:
        """A line that is no valid alertfilter line: reported and counted."""
        self.counts["bad"] += 1
        self.report.error(f"<stdin>:{lineno}", reason, "bad")

    def close_unit(self, obj: dict[str, Any], lineno: int, groups: Groups) -> Groups:
        """A position record closes the open unit: its violations join ``groups`` (to
        be recorded with the position) unless the ledger already holds them. Returns
        the new open unit."""
        self.positional = True
        try:
            pos = positions.parse(obj)
        except ValueError as exc:
            self.bad(lineno, f"bad position: {exc}")
            return self.unit  # the unit stays open until a valid position closes it
        if pos is None or self.recorded.is_new(pos):
            positions.merge(groups, self.unit)
            if pos is not None:
                self.recorded.advance(pos)
        else:
            self.counts["repeated"] += sum(g[1] for g in self.unit.values())
        self.unit = {}
        return self.unit

    def drop_open_unit(self) -> None:
        """End of input inside a unit: its alerts come again when fasttail resumes."""
        n = sum(g[1] for g in self.unit.values())
        if n:
            self.report.say(
                None,
                f"end of input after {n} violations without their position: not "
                "recorded (they come again from the recorded position)",
            )
        self.unit = {}
