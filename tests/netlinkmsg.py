"""Netlink messages as the kernel sends them, built for tests (banpipe only parses them).

The headers are packed here from the kernel's layout, not with banpipe.netlink's own
structs, so a test of the parser does not share its mistakes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from banpipe.netlink import (
    IFA_ADDRESS,
    IFA_FLAGS,
    IFA_LABEL,
    IFA_LOCAL,
    IFF_LOWER_UP,
    IFF_UP,
    IFLA_IFNAME,
    RT_SCOPE_UNIVERSE,
    pack_attr,
)

IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


def pack_addr_payload(
    family: int,
    address: str,
    prefixlen: int,
    index: int,
    *,
    scope: int = RT_SCOPE_UNIVERSE,
    flags: int = 0,
    peer: str | None = None,
    label: str | None = None,
) -> bytes:
    """An ifaddrmsg as the kernel sends it (IPv4: IFA_LOCAL + IFA_ADDRESS; IPv6:
    IFA_ADDRESS) with a 32-bit IFA_FLAGS."""
    packed = ipaddress.ip_address(address).packed
    out = IFADDRMSG.pack(family, prefixlen, flags & 0xFF, scope, index)
    if family == socket.AF_INET:
        peer_packed = ipaddress.ip_address(peer).packed if peer else packed
        out += pack_attr(IFA_ADDRESS, peer_packed) + pack_attr(IFA_LOCAL, packed)
    elif peer:
        out += pack_attr(IFA_ADDRESS, ipaddress.ip_address(peer).packed)
        out += pack_attr(IFA_LOCAL, packed)
    else:
        out += pack_attr(IFA_ADDRESS, packed)
    if label is not None:
        out += pack_attr(IFA_LABEL, label.encode() + b"\0")
    out += pack_attr(IFA_FLAGS, struct.pack("=I", flags))
    return out


def pack_link_payload(index: int, name: str, flags: int = IFF_UP | IFF_LOWER_UP) -> bytes:
    return IFINFOMSG.pack(socket.AF_UNSPEC, 1, index, flags, 0) + pack_attr(
        IFLA_IFNAME, name.encode() + b"\0"
    )
