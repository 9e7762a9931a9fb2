"""fwevents: which nf_tables notifications mean our part of the firewall went."""

from __future__ import annotations

import pytest

from banpipe.fwevents import (
    NFPROTO_INET,
    NFPROTO_IPV4,
    Concern,
    Deletion,
    parse_deletions,
    unannounced,
)
from banpipe.netlink import pack_attr, pack_message


def message(kind: int, family: int, table: str, name: str | None = None, attr: int = 2) -> bytes:
    payload = bytes([family, 0, 0, 0]) + pack_attr(1, table.encode() + b"\0")
    if name is not None:
        payload += pack_attr(attr, name.encode() + b"\0")
    return pack_message((10 << 8) | kind, payload)


def test_parse_deletions_of_every_kind_and_skips_the_rest():
    data = b"".join(
        [
            message(2, NFPROTO_INET, "banpipe"),  # DELTABLE
            message(5, NFPROTO_IPV4, "filter", "BANPIPE", attr=3),  # DELCHAIN
            message(8, NFPROTO_IPV4, "filter", "INPUT"),  # DELRULE
            message(11, NFPROTO_INET, "banpipe", "v4"),  # DELSET
            message(14, NFPROTO_INET, "banpipe", "v4"),  # DELSETELEM
            message(6, NFPROTO_IPV4, "filter", "INPUT"),  # NEWRULE: not a deletion
            pack_message(3, b""),  # NLMSG_DONE
        ]
    )
    assert parse_deletions(data) == [
        Deletion("table", NFPROTO_INET, "banpipe"),
        Deletion("chain", NFPROTO_IPV4, "filter", "BANPIPE"),
        Deletion("rule", NFPROTO_IPV4, "filter", "INPUT"),
        Deletion("set", NFPROTO_INET, "banpipe", "v4"),
        Deletion("elem", NFPROTO_INET, "banpipe", "v4"),
    ]
    assert parse_deletions(data[:-7]) == parse_deletions(data)[:5]  # truncated tail ignored


@pytest.mark.parametrize(
    ("backend", "deletion", "ours"),
    [
        ("nftables", Deletion("table", NFPROTO_INET, "banpipe"), True),
        ("nftables", Deletion("set", NFPROTO_INET, "banpipe", "v6"), True),
        ("nftables", Deletion("table", NFPROTO_INET, "firewalld"), False),
        ("nftables", Deletion("table", NFPROTO_IPV4, "banpipe"), False),
        ("iptables", Deletion("table", NFPROTO_IPV4, "filter"), True),
        ("iptables", Deletion("chain", NFPROTO_IPV4, "filter", "BANPIPE"), True),
        ("iptables", Deletion("rule", NFPROTO_IPV4, "filter", "INPUT"), True),
        ("iptables", Deletion("rule", NFPROTO_IPV4, "filter", "BANPIPE"), True),
        ("iptables", Deletion("rule", NFPROTO_IPV4, "filter", "OUTPUT"), False),
        ("iptables", Deletion("rule", NFPROTO_IPV4, "nat", "INPUT"), False),
        ("ipset", Deletion("rule", NFPROTO_IPV4, "filter", "FORWARD"), True),
        ("iptables", Deletion("table", NFPROTO_INET, "banpipe"), False),
    ],
)
def test_concern(backend, deletion, ours):
    assert Concern(backend)(deletion) is ours


@pytest.mark.parametrize(
    "backend, version, silent",
    [
        ("iptables", "iptables v1.8.9 (nf_tables)", False),
        ("ipset", "iptables v1.8.9 (nf_tables)", False),
        ("iptables", "iptables v1.8.9 (legacy)", True),
        ("ipset", "iptables v1.8.9 (legacy)", True),
        ("iptables", "", True),  # no iptables to ask: assume nothing is announced
        ("nftables", "", False),
    ],
)
def test_iptables_legacy_announces_nothing(backend, version, silent):
    assert (unannounced(backend, version) is not None) is silent
