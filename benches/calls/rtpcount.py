#!/usr/bin/env python3
"""Counts UDP datagrams delivered on this host, exactly and cheaply, for
benches/calls/run.sh: one nftables table of its own with a rule per port
("udp dport P counter" or "udp sport P counter") in a filter chain on the
input hook, which every datagram that crosses lo to a local socket passes
once. The counters are kernel counters; nothing is copied to user space.
Needs root and the nft command (Debian package nftables).

    rtpcount.py dst:26172 src:26172 dst:26162 src:26162

Prints "ready" on stdout once the rules are in place; on SIGTERM/SIGINT
prints "RULE COUNT" per rule, removes its table and exits.

Why not AF_PACKET sockets (what this script used before 2026-11-23): a
packet socket on lo makes the kernel run its filter on every packet, in
the sender's context. Measured with benches/rtp_engine.rs, four such
sockets whose filters matched nothing added 15-19 % to the media thread's
CPU; four nftables counters add 0-3 % (docs/benchmarks.md, "The packet
counter's own cost")."""

import json
import os
import signal
import subprocess
import sys

TABLE = f"switchboard_bench_{os.getpid()}"


def nft(script):
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def rule_expr(rule):
    field, port = rule.split(":")
    if field not in ("src", "dst") or not port.isdigit():
        sys.exit(f"rtpcount.py: bad rule {rule!r} (want src:PORT or dst:PORT)")
    return f"udp {'sport' if field == 'src' else 'dport'} {int(port)} counter comment \"{rule}\""


def counts():
    out = subprocess.run(
        ["nft", "-j", "list", "table", "ip", TABLE], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for item in json.loads(out).get("nftables", []):
        r = item.get("rule")
        if not r:
            continue
        packets = next((e["counter"]["packets"] for e in r.get("expr", []) if "counter" in e), 0)
        found[r.get("comment", "")] = packets
    return found


def main():
    rules = sys.argv[1:]
    body = "\n".join(f"    {rule_expr(r)}" for r in rules)
    nft(
        f"table ip {TABLE} {{\n"
        f"  chain input {{\n"
        f"    type filter hook input priority -300; policy accept;\n"
        f"{body}\n"
        f"  }}\n"
        f"}}\n"
    )
    # Blocked, then waited for: no window where a signal is missed.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        print("ready", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        found = counts()
        for rule in rules:
            print(rule, found.get(rule, 0), flush=True)
    finally:
        subprocess.run(["nft", "delete", "table", "ip", TABLE], check=False)


if __name__ == "__main__":
    main()
