#!/usr/bin/env python3
"""Counts UDP datagrams on the loopback interface, exactly and cheaply, for
benches/calls/run.sh: one AF_PACKET socket per rule with a classic BPF
filter ("udp dst port P" or "udp src port P"); nothing is read, the kernel
counts every packet that passes a filter (PACKET_STATISTICS: tp_packets
includes the ones dropped for want of buffer space). Needs root.

    rtpcount.py dst:26172 src:26172 dst:26162 src:26162

Prints "RULE COUNT" per rule on SIGTERM/SIGINT, then exits. Prints "ready"
on stdout once every filter is attached."""

import ctypes
import signal
import socket
import struct
import sys

SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003


def program(port, field):
    # Ethernet header on lo; the received copy only (lo shows each packet
    # twice: sent and received); IPv4, UDP, not a later fragment, port match.
    off = 16 if field == "dst" else 14
    drop = 12
    return [
        (0x30, 0, 0, 0xFFFFF004),         # 0 ldb [pkttype] (SKF_AD_OFF + SKF_AD_PKTTYPE)
        (0x15, drop - 2, 0, 4),           # 1 jeq PACKET_OUTGOING -> drop
        (0x28, 0, 0, 12),                 # 2 ldh [12]
        (0x15, 0, drop - 4, 0x0800),      # 3 jeq IPv4
        (0x30, 0, 0, 23),                 # 4 ldb [23]
        (0x15, 0, drop - 6, 17),          # 5 jeq UDP
        (0x28, 0, 0, 20),                 # 6 ldh [20]
        (0x45, drop - 8, 0, 0x1FFF),      # 7 jset fragment offset
        (0xB1, 0, 0, 14),                 # 8 ldxb 4*([14]&0xf)
        (0x48, 0, 0, off),                # 9 ldh [x + off]
        (0x15, 0, 1, port),               # 10 jeq port
        (0x06, 0, 0, 96),                 # 11 ret 96 (accept, short snap)
        (0x06, 0, 0, 0),                  # 12 ret 0 (drop)
    ]


def open_counter(rule):
    field, port = rule.split(":")
    insns = program(int(port), field)
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    # Protocol 0 receives nothing until bind(): attach the filter first, so
    # no unfiltered packet is counted.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(insns), ctypes.addressof(buf)))
    s.bind(("lo", ETH_P_ALL))
    s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reset
    return s, buf


def main():
    rules = sys.argv[1:]
    socks = [open_counter(r) for r in rules]
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(1))
    signal.signal(signal.SIGINT, lambda *_: done.append(1))
    print("ready", flush=True)
    while not done:
        signal.pause()
    for rule, (s, _) in zip(rules, socks):
        packets, _drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        print(rule, packets, flush=True)


if __name__ == "__main__":
    main()
