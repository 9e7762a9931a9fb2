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


def fold_line(groups: Groups, key: tuple, ts: str | None, lineno: int) -> None:
    """One violation (``key``, its alert time stamp ``ts``, read at ``lineno``) into
    ``groups``: a new group, or one more of its group (the last line and time move)."""
    new = [ts, 1, lineno, ts]  # most lines are a group of their own: one hash of the key
    group = groups.setdefault(key, new)
    if group is not new:
        group[1] += 1
        group[2] = lineno
        group[3] = ts


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

        The only place an alertfilter line becomes a violation. A plain ban request is
        read by ``pipe.decode_ban`` (the keys banctl reads, typed: none of the checks
        of ``_line``, no dict; bench/README.md, issue 12 "banctl's intake"); any other
        line (a position record, a bad or refused line, an odd type, or every line
        where msgspec is absent) goes through ``_line``, the general way, which gives
        the same group for any line both can read.
        """
        decode, not_plain = pipe.decode_ban, pipe.NotABanRequest
        if decode is None:
            return self._lines(lines, lineno, groups)
        offenders, victims, sigs = self._offenders, self._victims, self._sigs
        judged, victim_of, sig_of = offenders.get, victims.get, sigs.get
        max_line = pipe.MAX_LINE
        # A positional stream's alerts wait in the open unit until its position arrives.
        target = self.unit if self.positional else groups
        for raw in lines:
            lineno += 1
            try:
                if len(raw) > max_line:
                    raise not_plain
                alert = decode(raw)
            except not_plain:
                target = self._line(raw, lineno, groups, target)
                continue
            verdict = judged(alert.offender)
            if verdict is None:
                verdict = offenders.lookup(alert.offender)
                self.novel = True  # maybe a new ban: the daemon commits without lingering
            if verdict[1] is not None:
                target = self._line(raw, lineno, groups, target)  # refused: reported there
                continue
            ids = (alert.gid, alert.sid, alert.rev)  # exact ints (decode_ban's types)
            sig = sig_of(ids)
            if sig is None:
                sig = sigs.lookup(ids)
            victim = alert.victim
            if victim is not None:
                text = victim
                victim = victim_of(text)
                if victim is None:
                    victim = victims.lookup(text)
            key = (
                verdict[0],
                sig,
                alert.msg[:1000],
                alert.priority,
                victim,
                alert.reversed,
                alert.reason[:1000],
            )
            # fold_line inline: the call cost 460 instructions a line, +2.1% of reading
            # (callgrind, the realistic file's first 43,838 lines; bench/README.md,
            # 2026-12-08 "banctl's recording per group"). Keep the two alike.
            ts = alert.ts[:64]
            new = [ts, 1, lineno, ts]
            group = target.setdefault(key, new)
            if group is not new:
                group[1] += 1
                group[2] = lineno
                group[3] = ts
        return self._gathered(lines)

    def _lines(self, lines: list[bytes], lineno: int, groups: Groups) -> int:
        """``gather`` the general way, line by line (``_line``)."""
        target = self.unit if self.positional else groups
        for raw in lines:
            lineno += 1
            target = self._line(raw, lineno, groups, target)
        return self._gathered(lines)

    def _gathered(self, lines: list[bytes]) -> int:
        self.counts["lines"] += len(lines)
        if lines:
            self.seen()
        return len(lines)

    def _line(self, raw: bytes, lineno: int, groups: Groups, target: Groups) -> Groups:
        """One pipe line into ``target`` (the open unit of a positional stream, else
        ``groups``), the general way: any JSON, every type checked. Returns the target
        for the next line (a position record closes the unit)."""
        offenders = self._offenders
        try:
            obj = pipe.loads(raw) if len(raw) <= pipe.MAX_LINE else None
        except ValueError:
            obj = None
        if obj.__class__ is not dict or obj.get("v") != pipe.VERSION:
            why = pipe.decode(raw, lineno)  # the pipe's reason (None: a blank line)
            if why is not None:
                self.bad(lineno, why.reason)  # type: ignore[union-attr]
            return target
        try:  # one C call for the fields of a violation
            raw, gid, sid, rev, msg, priority, victim, flipped, reason, ts = fields(obj)
        except KeyError:  # some absent: None, as for a get
            raw, gid, sid, rev, msg, priority, victim, flipped, reason, ts = map(obj.get, FIELDS)
        if type(raw) is not str or not raw:
            if obj.get("type") == pipe.POSITION:
                return self.close_unit(obj, lineno, groups)
            self.bad(lineno, "no offender address")
            return target
        verdict = offenders.get(raw)
        if verdict is None:
            verdict = offenders.lookup(raw)
            self.novel = True  # maybe a new ban: the daemon commits without lingering
        addr, refused = verdict
        if refused is not None:
            if addr is None:
                self.bad(lineno, not_an_address(raw))
            else:
                self.counts["refused"] += 1
                self.report.error(
                    f"<stdin>:{lineno}", f"refusing to ban {addr}: {refused}", "refused"
                )
            return target
        # exact types (True is not a number here)
        if type(gid) is not int or type(sid) is not int:
            sig = None
        elif type(rev) is int:
            sig = self._sigs.get((gid, sid, rev))  # all exact ints: 1 and True never meet
            if sig is None:
                sig = self._sigs.lookup((gid, sid, rev))
        else:
            sig = f"{gid}:{sid}"
        if type(priority) is int and not _INT64_MIN <= priority <= _INT64_MAX:
            # SQLite stores 64 bits: this line's error, not the batch's
            self.bad(lineno, f"priority out of range: {priority}")
            return target
        if type(victim) is str:
            text = victim
            victim = self._victims.get(text)
            if victim is None:
                victim = self._victims.lookup(text)
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
        fold_line(target, key, ts, lineno)
        return target

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
