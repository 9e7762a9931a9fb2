"""alertfilter's decision: should this alert lead to a ban, and of whom?

Pure code: a :class:`RuleSet` is compiled from a :class:`~banpipe.config.Config`, the live
WAN addresses and the whitelist-file entries; :func:`decide` judges one alert dict (the
pipe contract) against it and returns a :class:`Decision`. No I/O, no clock.

Checks, in order (the first that fails decides; after a swap the offender is the source
and the victim the destination):

1. ignore list: ``GID:SID``, ``GID:*``, ``GID:SID-SID`` (kind ``ignored``);
2. priority: ``[filter] priorities`` (empty = every priority), and ``no_priority`` for
   alerts without one (kind ``priority``);
3. reverse markers: a msg containing one (case-sensitive substring, as in the original
   Snort-users script) swaps source and destination;
4. an offender address must be present (kind ``no offender``) and parse (``bad address``);
5. self-protection, always on: special ranges, our addresses, the whitelist
   (kinds ``special address``, ``ours``, ``whitelisted``), via
   :class:`banpipe.protect.Protection`;
6. ``require_ours``: the victim must be one of our WAN addresses, gateways or networks
   (kind ``victim not ours``).

IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry, in alerts and in
the config alike (``::ffff:10.0.0.0/104`` protects 10.0.0.0/8).

Hot-path costs are per distinct value, not per alert: ignore matches are cached per
``(gid, sid)``, address judgements per address string, in :class:`banpipe.memo.Memo`
memos of at most 2 x :data:`CACHE_MAX` entries (memory stays flat; a reload compiles a
new RuleSet with empty caches). No regular expression runs per alert.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

from banpipe import intervals
from banpipe.address import canonical
from banpipe.alert import JUDGED
from banpipe.config import Config, ConfigError
from banpipe.memo import Memo
from banpipe.pipe import decoded_keys
from banpipe.protect import Protection

CACHE_MAX = 1 << 15

# Decision kinds: the summary counts per kind; the reason string says the details.
BAN = "ban"
K_IGNORED = "ignored"
K_PRIORITY = "priority"
K_NO_OFFENDER = "no offender"
K_BAD_ADDRESS = "bad address"
K_SPECIAL = "special address"
K_OURS = "ours"
K_WHITELISTED = "whitelisted"
K_NOT_OURS = "victim not ours"
K_REPEAT = "repeated flow"  # alertfilter's [filter] flow_window (banpipe.flows)
#: Skip kinds in check order (the summary lists them in this order).
SKIP_KINDS: tuple[str, ...] = (
    K_IGNORED,
    K_PRIORITY,
    K_NO_OFFENDER,
    K_BAD_ADDRESS,
    K_SPECIAL,
    K_OURS,
    K_WHITELISTED,
    K_NOT_OURS,
    K_REPEAT,
)


class Decision(NamedTuple):
    """The verdict on one alert.

    ``offender``/``victim`` are the would-be offender and victim after any swap
    (canonical text when they parse as addresses), also for skipped alerts so that
    ``--explain`` can name them. ``reason`` says why it is a ban, or why not.
    """

    ban: bool
    offender: str | None
    victim: str | None
    reversed: bool
    reason: str
    kind: str


_new = tuple.__new__

# --- ignore list -----------------------------------------------------------------------


class IgnoreMatcher:
    """``GID:SID``, ``GID:*`` and ``GID:SID-SID`` patterns; ``match`` is a dict hit."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(p.strip() for p in patterns))
        self._exact: dict[tuple[int, int], str] = {}
        self._whole: dict[int, str] = {}
        ranges: dict[int, list[tuple[int, int, str]]] = {}
        for pattern in self.patterns:
            gid_text, _, sid_text = pattern.partition(":")
            gid = int(gid_text)
            if sid_text == "*":
                self._whole.setdefault(gid, pattern)
            elif "-" in sid_text:
                lo, hi = (int(x) for x in sid_text.split("-"))
                ranges.setdefault(gid, []).append((lo, hi, pattern))
            else:
                self._exact.setdefault((gid, int(sid_text)), pattern)
        # Merged intervals per gid for an O(log n) membership test on a cache miss.
        self._ranges = ranges
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for gid, spans in ranges.items():
            self._starts[gid], self._ends[gid] = intervals.merged((lo, hi) for lo, hi, _ in spans)
        self._cache = Memo(CACHE_MAX)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, gid: int, sid: int) -> str | None:
        """The first listed pattern that matches ``gid:sid``, or None."""
        key = (gid, sid)
        cache = self._cache
        found = cache.get(key, cache)
        if found is cache:
            found = cache.lookup(key, self._lookup)
        return found

    def _lookup(self, key: tuple[int, int]) -> str | None:
        gid, sid = key
        hits = []
        exact = self._exact.get((gid, sid))
        if exact is not None:
            hits.append(exact)
        whole = self._whole.get(gid)
        if whole is not None:
            hits.append(whole)
        starts = self._starts.get(gid)
        if starts is not None:
            i = bisect.bisect_right(starts, sid) - 1
            if i >= 0 and sid <= self._ends[gid][i]:
                hits.extend(p for lo, hi, p in self._ranges[gid] if lo <= sid <= hi)
        if not hits:
            return None
        order = {p: n for n, p in enumerate(self.patterns)}
        return min(hits, key=order.__getitem__)


# --- the rule set ----------------------------------------------------------------------


def _protection_kind(reason: str) -> str:
    if reason.startswith("whitelisted"):
        return K_WHITELISTED
    if reason.startswith("our "):
        return K_OURS
    if reason == "no offender address":
        return K_NO_OFFENDER
    if reason.startswith("not an IP address"):
        return K_BAD_ADDRESS
    # Special ranges, and anything Protection may learn to refuse later: still a skip.
    return K_SPECIAL


class RuleSet:
    """A compiled filter configuration; immutable apart from its caches."""

    def __init__(
        self,
        *,
        protection: Protection,
        ignore: Iterable[str] = (),
        priorities: Iterable[int] = (),
        no_priority: str = "skip",
        reverse_markers: Iterable[str] = ("BLOCKED DESTINATION",),
        require_ours: bool = True,
    ) -> None:
        self.protection = protection
        self.ignore = IgnoreMatcher(ignore)
        self._ignoring = bool(self.ignore)
        self._ignore_cache = self.ignore._cache
        self.priorities: frozenset[int] = frozenset(priorities)
        if no_priority not in ("skip", "act"):
            raise ValueError(f"no_priority must be 'skip' or 'act', got {no_priority!r}")
        self.no_priority_acts = no_priority == "act"
        self.markers: tuple[str, ...] = tuple(dict.fromkeys(reverse_markers))
        if "" in self.markers:
            raise ValueError("an empty reverse marker would reverse every alert")
        self.require_ours = require_ours
        listed = ", ".join(map(str, sorted(self.priorities)))
        self._prio_listed = f"[{listed}]"
        self._prio_skip: dict[int, str] = {}
        # raw address text -> (canonical or raw, protection reason or None, kind)
        self._offenders = Memo(CACHE_MAX)
        # raw address text -> (canonical or raw, "ours" label or None)
        self._victims = Memo(CACHE_MAX)
        # (gid, sid, rev or None, priority, against, marker) -> a ban's reason: the
        # few rules and victims of a flood format their reason once, not per alert
        self._reasons = Memo(CACHE_MAX)

    @classmethod
    def from_config(cls, config: Config, protection: Protection | None = None) -> RuleSet:
        """Compile ``config``'s [filter] with ``protection`` (by default the config's
        own; with the live WAN set and whitelist files: banpipe.sources, whose
        ``Sources.protection()`` is the one place they are joined).

        Raises ConfigError for a filter setting that is valid TOML but unusable.
        """
        flt = config.filter
        if protection is None:
            protection = Protection.from_config(config)
        try:
            return cls(
                protection=protection,
                ignore=flt.ignore,
                priorities=flt.priorities,
                no_priority=flt.no_priority,
                reverse_markers=flt.reverse_markers,
                require_ours=flt.require_ours,
            )
        except ValueError as exc:
            raise ConfigError(f"{config.path or '<config>'}: [filter] {exc}") from None

    # -- cached judgements --

    def _judge_offender(self, text: str) -> tuple[str, str | None, str]:
        reason = self.protection.reason(text)
        kind = _protection_kind(reason) if reason is not None else BAN
        return (canonical(text) or text, reason, kind)

    def _judge_victim(self, text: str) -> tuple[str, str | None]:
        return (canonical(text) or text, self.protection.ours(text))

    def _priority_skip(self, priority: int | None) -> str | None:
        """Why ``priority`` is not acted on, or None when it is."""
        if priority is None:
            return None if self.no_priority_acts else 'no priority (no_priority = "skip")'
        if not self.priorities or priority in self.priorities:
            return None
        reason = self._prio_skip.get(priority)
        if reason is None:
            reason = f"priority {priority} not in {self._prio_listed}"
            if len(self._prio_skip) < 1024:
                self._prio_skip[priority] = reason
        return reason

    # -- the decision --

    def decide(self, alert: Mapping[str, Any]) -> Decision:
        """Judge one alert that :func:`banpipe.alert.problem` finds valid for ``JUDGED``."""
        return self.judge(_judged_values(alert), alert.get(_REV), alert.get(_TARGET))

    def judge(self, values: tuple[Any, ...], rev: Any, target: Any) -> Decision:
        """Judge an alert by its values of ``("v", *JUDGED)``, checked already (what
        :func:`banpipe.alert.fetcher` hands over, or the typed reader's attributes: the
        read loop's one reading of them; bench/README.md, issue 12), and its ``rev`` and
        ``target`` as ``alert.get()`` gives them (None when absent)."""
        _, gid, sid, msg, priority, src, dst = values
        marker = None
        if target is not None:
            # The rule names its target (Suricata "target:", EVE alert.target): that
            # settles who attacked whom, before and instead of any reverse marker.
            side = _target_side(target, src, dst)
            if side is None:
                why = f"target {target!r} is neither src nor dst"
                return Decision(False, None, None, False, why, K_NO_OFFENDER)
            if side == "src":
                offender, victim, swapped = dst, src, True
            else:
                offender, victim, swapped = src, dst, False
        else:
            for m in self.markers:
                if m in msg:
                    marker = m
                    break
            if marker is None:
                offender, victim, swapped = src, dst, False
            else:
                offender, victim, swapped = dst, src, True

        if self._ignoring:
            key = (gid, sid)
            cache = self._ignore_cache
            pattern = cache.get(key, cache)
            if pattern is cache:
                pattern = cache.lookup(key, self.ignore._lookup)
            if pattern is not None:
                rule = f"{gid}:{sid}"
                why = f"rule {rule} ignored" + ("" if pattern == rule else f" by {pattern}")
                return Decision(False, offender, victim, swapped, why, K_IGNORED)

        if priority is None or (self.priorities and priority not in self.priorities):
            why = self._priority_skip(priority)  # a method call only where it may skip
            if why is not None:
                return Decision(False, offender, victim, swapped, why, K_PRIORITY)

        if offender is None or offender == "":
            return Decision(False, None, victim, swapped, "no offender address", K_NO_OFFENDER)
        cache = self._offenders
        entry = cache.get(offender)
        if entry is None:
            entry = cache.lookup(offender, self._judge_offender)
        offender, why, kind = entry
        if why is not None:
            return Decision(False, offender, victim, swapped, why, kind)

        if victim is None or victim == "":
            victim, label = None, None
        else:
            cache = self._victims
            entry = cache.get(victim)
            if entry is None:
                entry = cache.lookup(victim, self._judge_victim)
            victim, label = entry
        if self.require_ours and label is None:
            why = (
                "no victim address (require_ours)"
                if victim is None
                else f"victim {victim} is not ours (require_ours)"
            )
            return Decision(False, offender, victim, swapped, why, K_NOT_OURS)

        if type(rev) is not int:
            rev = None
        against = label or victim or "no victim address"
        if target is not None:
            why = self._reason((gid, sid, rev, priority, against, None))
            why += f" (rule target {target})"
        else:
            key = (gid, sid, rev, priority, against, marker)
            why = self._reasons.get(key)
            if why is None:
                why = self._reasons.lookup(key, self._reason)
        # tuple.__new__ is C; the named tuple's own __new__ is a Python call a ban
        return _new(Decision, (True, offender, victim, swapped, why, BAN))

    @staticmethod
    def _reason(key: tuple) -> str:
        """A ban's reason for ``(gid, sid, rev or None, priority, against, marker)``;
        every part an exact int, None or str (the contract's types), so equal keys
        mean equal reasons."""
        gid, sid, rev, priority, against, marker = key
        rule = f"{gid}:{sid}" + ("" if rev is None else f":{rev}")
        prio = "none" if priority is None else priority
        why = f"{rule} prio {prio} against {against}"
        return why if marker is None else why + f" (reversed by {marker!r})"


# judge() unpacks the values of alert.JUDGED in its order (tests/test_rules.py pins it).
_judged_values = itemgetter(*decoded_keys(("v", *JUDGED)))
_REV, _TARGET = decoded_keys(("rev", "target"))


def _target_side(target: Any, src: Any, dst: Any) -> str | None:
    """Which end of the alert ``target`` names: "src", "dst", or None (neither, or bad)."""
    if type(target) is not str or not target:
        return None
    for side, addr in (("dst", dst), ("src", src)):
        if target == addr:
            return side
    t = canonical(target) or target
    for side, addr in (("dst", dst), ("src", src)):
        if type(addr) is str and addr and t == (canonical(addr) or addr):
            return side
    return None


def decide(alert: Mapping[str, Any], rules: RuleSet) -> Decision:
    """Judge ``alert`` (valid for :data:`banpipe.alert.JUDGED`) against ``rules``."""
    return rules.decide(alert)
