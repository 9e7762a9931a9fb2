"""The nftables backend's set elements (``nftables.NftablesBackend``).

Addresses go to the hash sets ``v4``/``v6``, ranges to the interval sets ``v4net``/
``v6net``; every change is one nf_tables transaction on banctl's netlink channel (``nft
-f`` lines without one). An interval set cannot hold a range inside another: a range
inside one present is not added again, a range around present ones replaces them in
the same transaction. ``NftReplace`` makes the sets hold exactly the bans without
reading them (a restart of a million bans).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import Iterable
from itertools import repeat

from banpipe.address import Ranges, Split, from_packed

from . import bulk_entries
from .nfnl import ChannelError, Message, SetFull
from .nfproto import (
    NFPROTO_INET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NLM_F_CREATE,
    NLM_F_EXCL,
    element_keys,
    nft_type,
)
from .nftjson import json_elements
from .nftmsg import interval_entries, interval_keys, setelem_filter, setelem_payload
from .nftstruct import recreate_messages, size_message

log = logging.getLogger("banpipe.firewall")

NET = "net"  # a family's ranges: the set named like its addresses' set, plus this
# Elements no ban is expected to be (_holds_exactly; one that is a ban is skipped).
SENTINELS = {"v4": ("0.0.0.0", "255.255.255.255", "0.0.0.1"), "v6": ("::", "::2", "::3")}  # noqa: S104
CHUNK = 1000  # elements per statement; all statements still form one transaction
PER_ADDRESS = 64  # addresses: up to this, each has its own message (and answer)
BATCH = 200_000  # elements per netlink transaction (about 6 MB, one datagram)


class NftElements:
    """The sets' elements: add and delete messages (or ``nft -f`` lines), the ranges'
    interval sets, reading a set's members. A mixin of ``NftablesBackend`` (settings,
    runner, channel, table, ``_families``, ``_apply``)."""

    def _elements(self, verb: str, name: str, addrs: list[str]) -> list[str]:
        return [
            f"{verb} element {self.table} {name} {{ {', '.join(addrs[i : i + CHUNK])} }}"
            for i in range(0, len(addrs), CHUNK)
        ]

    def _groups(
        self, addrs: Iterable[str] | Split
    ) -> tuple[list[tuple[str, list[str], list[bytes]]], list[tuple[str, list[str]]]]:
        """(set name, addresses, the addresses packed) and (range set name, ranges) per
        family that has any."""
        e = bulk_entries(addrs, ipv6=self.settings.ipv6)
        hosts: list[tuple[str, list[str], list[bytes]]] = []
        nets: list[tuple[str, list[str]]] = []
        for name, h, k, n in (("v4", e.v4, e.keys4, e.v4nets), ("v6", e.v6, e.keys6, e.v6nets)):
            if h:
                hosts.append((name, h, k))
            if n:
                nets.append((name + NET, n))
        return hosts, nets

    def _ranges(self, name: str) -> set[str]:
        """The ranges in one interval set (few: read whenever ranges change)."""
        if self._online():
            bodies = self.channel.dump(
                nft_type(NFT_MSG_GETSETELEM),
                setelem_filter(NFPROTO_INET, self.settings.table, name),
            )
            return {n for n in interval_entries(bodies) if n is not None}
        return self._set_members(name)

    def _change_ranges(self, name: str, add: list[str], delete: list[str]) -> None:
        """Delete then add ranges of one interval set, in one transaction."""
        if not add and not delete:
            return
        if self._online():
            messages = self._element_messages(name, delete, delete=True)
            messages += self._element_messages(name, add)
            self.channel.transact(messages, nftables=True)
            return
        self._apply(self._elements("delete", name, delete) + self._elements("add", name, add))

    def _block_ranges(self, name: str, nets: list[str]) -> None:
        present = self._ranges(name)
        have, asked = Ranges(present), Ranges(nets)
        add = [n for n in dict.fromkeys(nets) if not have.covers(n, strictly=False)]
        add = [n for n in add if not asked.covers(n)]
        wider = Ranges(add)
        self._change_ranges(name, add, sorted(p for p in present if wider.covers(p)))

    def _release_ranges(self, name: str, nets: list[str]) -> None:
        present = self._ranges(name)
        self._change_ranges(name, [], [n for n in dict.fromkeys(nets) if n in present])

    def _set_members(self, name: str) -> set[str]:
        if self._online():
            return self._dump_members(name)
        proc = self.runner(["nft", "-j", "list", "set", "inet", self.settings.table, name])
        members, _ = json_elements(json.loads(proc.stdout).get("nftables", []))
        return members

    def _dump_members(self, name: str) -> set[str]:
        assert self.channel is not None
        bodies = self.channel.dump(
            nft_type(NFT_MSG_GETSETELEM), setelem_filter(NFPROTO_INET, self.settings.table, name)
        )
        keys = element_keys(
            bodies, NFTA_SET_ELEM_LIST_ELEMENTS, (NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE)
        )
        return {t for t in map(from_packed, keys) if t is not None}

    def _send(
        self, groups: list[tuple[str, list[str], list[bytes]]], verbs: tuple[str, ...]
    ) -> bool:
        """Send the elements on the netlink channel: each verb's messages for every group,
        in order, as batches of at most BATCH elements (one transaction each). False when
        there is no channel (the caller then runs nft)."""
        if not groups or not self._online():
            return False
        mtype = {"add": nft_type(NFT_MSG_NEWSETELEM), "delete": nft_type(NFT_MSG_DELSETELEM)}
        flags = {"add": NLM_F_CREATE, "delete": 0}
        # One address per message for everyday calls, so an error names its ban.
        per = 1 if sum(len(g) for _, g, _ in groups) <= PER_ADDRESS else CHUNK
        table = self.settings.table
        messages = [
            Message(
                mtype[verb],
                setelem_payload(NFPROTO_INET, table, name, keys[i : i + per]),
                flags[verb],
                f"nftables: {verb} element {self.table} {name}",
                group[i : i + per],
            )
            for name, group, keys in groups
            for i in range(0, len(group), per)
            for verb in verbs
        ]
        step = max(len(verbs), BATCH // per // len(verbs) * len(verbs))
        for i in range(0, len(messages), step):
            self.channel.transact(messages[i : i + step], nftables=True)
        return True

    def _element_messages(
        self,
        name: str,
        entries: list[str],
        keys: list[bytes] | None = None,
        *,
        delete: bool = False,
    ) -> list[Message]:
        """NEWSETELEM (``delete``: DELSETELEM) messages of CHUNK entries each (ranges
        for a ranges' set; ``keys``: the addresses packed, when they are)."""
        interval = name.endswith(NET)
        verb, mtype, flags = (
            ("delete", NFT_MSG_DELSETELEM, 0)
            if delete
            else ("add", NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        )
        where = f"nftables: {verb} element {self.table} {name}"
        out = []
        for i in range(0, len(entries), CHUNK):
            part = entries[i : i + CHUNK]
            if interval:
                packed = interval_keys(part)
            else:
                packed = keys[i : i + CHUNK] if keys is not None else _keys(name, part)
            payload = setelem_payload(NFPROTO_INET, self.settings.table, name, packed, interval)
            out.append(Message(nft_type(mtype), payload, flags, where, part))
        return out

    def _flush_message(self, name: str) -> Message:
        # DELSETELEM without elements flushes the set.
        flush = setelem_filter(NFPROTO_INET, self.settings.table, name)
        return Message(nft_type(NFT_MSG_DELSETELEM), flush, 0, f"flush {name}")


class NftReplace(NftElements):
    """``replace()``: the sets made to hold exactly the bans without reading them."""

    def replace(self, addrs: Iterable[str] | Split) -> bool:
        """Make the sets hold exactly ``addrs`` without reading them first, never with
        a moment without the bans. False without a channel, or when a family holds more
        than ``max_entries`` (the caller then compares and makes room).

        Reading is what costs: the kernel walks a hash set from its start for every
        32 KiB chunk of a dump (a million elements: 10-40 s). Writing costs one
        transaction record per element, plus, while anyone on the machine listens to
        nf_tables events (banctl's own daemon does; netlink's listener check is not per
        namespace), a notification of a few KiB per element held until the commit: a
        million added in one transaction took 10 s of system time (load 7), in
        transactions of BATCH 3.5 s. So an address set whose dump's first chunk is
        empty (a cold start) is filled in transactions of BATCH, and one that holds
        anything is deleted and created anew, filled and referenced again in ONE
        transaction (``nftstruct.recreate_messages``): its old elements are freed after
        the commit, with no record each (a flush then adding a million was two million
        records). The ranges' sets (few) are flushed and refilled in one transaction.
        """
        if not self._online():
            return False
        hosts, nets = self._groups(addrs)
        groups = {name: (group, keys) for name, group, keys in hosts}
        if any(len(g) > self.settings.max_entries for g, _ in groups.values()):
            return False
        names = [name for name, _, _ in self._families()]
        full: list[str] = []
        filled: set[str] = set()  # sets _holds_exactly() found (and left) holding every ban
        for n in names:
            if self._holds_any(n):
                (filled.add if self._holds_exactly(n, groups) else full.append)(n)
        messages = []
        for name in names:
            wide = next((g for n, g in nets if n == name + NET), [])
            messages.append(self._flush_message(name + NET))
            messages += self._element_messages(name + NET, sorted(Ranges(wide).collapse(wide)))
        for name in names:
            if name not in full and name not in filled and name in groups:
                self._send([(name, *groups[name])], ("add",))
        if full:
            fill = [m for n in full for m in self._element_messages(n, *groups.get(n, ([], [])))]
            try:
                self.channel.transact(
                    recreate_messages(self.settings, full) + messages + fill, nftables=True
                )
                return True
            except SetFull:
                raise
            except ChannelError as exc:
                # A set something else refers to cannot be deleted: flush it instead.
                log.warning("nftables: sets not re-created (%s); flushing them", exc)
                messages += [self._flush_message(n) for n in full] + fill
        self.channel.transact(messages, nftables=True)
        return True

    def _holds_any(self, name: str) -> bool:
        """Whether an address set holds any element: its dump's first chunk only."""
        assert self.channel is not None
        first = self.channel.first(
            nft_type(NFT_MSG_GETSETELEM), setelem_filter(NFPROTO_INET, self.settings.table, name)
        )
        return bool(
            element_keys(first, NFTA_SET_ELEM_LIST_ELEMENTS, (NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE))
        )

    def _holds_exactly(self, name: str, groups: dict[str, tuple[list[str], list[bytes]]]) -> bool:
        """Whether a set that holds something holds exactly ``groups[name]``, without
        reading it (a warm restart, the set as banctl left it). Every ban is added in
        transactions of BATCH (cheap for the elements present: no record, no
        notification; a million: about 1 s of system time), so the set holds at least
        them; then, with its size limit set to their number plus one, one more element
        (a sentinel, added and deleted in one transaction) fits only if the set holds
        no other element. The limit is put back either way."""
        assert self.channel is not None
        group, keys = groups.get(name, ([], []))
        if group:
            self._send([(name, group, keys)], ("add",))
        sentinel = next(a for a in SENTINELS[name] if a not in group)
        where = f"nftables: sentinel {sentinel} in {self.table} {name}"
        table = self.settings.table
        probe = [
            Message(
                nft_type(mtype),
                setelem_payload(NFPROTO_INET, table, name, _keys(name, [sentinel])),
                flags,
                where,
            )
            for mtype, flags in (
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL),
                (NFT_MSG_DELSETELEM, 0),
            )
        ]
        back = size_message(self.settings, name, self.settings.max_entries)
        self.channel.transact([size_message(self.settings, name, len(group) + 1)], nftables=True)
        try:
            self.channel.transact([*probe, back], nftables=True)
            return True
        except ChannelError as exc:
            if exc.errno not in (errno.ENFILE, errno.EEXIST):
                raise
            self.channel.transact([back], nftables=True)
            return False


def _keys(name: str, addrs: list[str]) -> map:
    """The packed addresses of one family's set, in a C loop (a million: 0.2 s)."""
    return map(socket.inet_pton, repeat(socket.AF_INET6 if name == "v6" else socket.AF_INET), addrs)
