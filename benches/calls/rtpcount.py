#!/usr/bin/env python3
"""Counts UDP datagrams delivered on this host, exactly and cheaply, for
benches/calls/run.sh: one nftables table of its own with a rule per port
('iif "lo" udp dport P counter' or the same with sport) in a filter chain
on the input hook, which every datagram that crosses lo to a local socket
passes once, before any socket buffer can drop it. The counters are
kernel counters; nothing is copied to user space. Needs root and the nft
command (Debian package nftables).

    rtpcount.py dst:26172 src:26172 dst:26162 src:26162

Prints "ready" on stdout once the rules are in place; on SIGTERM/SIGINT
prints "RULE COUNT" per rule, removes its table and exits.

Why not AF_PACKET sockets (what this script used until 2026-11-23; see
`git show 3097179:benches/calls/rtpcount.py`): a packet socket on lo makes
the kernel hand every packet to its filter, in the sender's context.
Measured with benches/rtp_engine.rs, four such sockets whose filters
matched nothing added 9-20 % (17 % on average) to the media thread's CPU;
four nftables counters, nothing measurable (docs/benchmarks.md, "The packet
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
    return f"iif \"lo\" udp {'sport' if field == 'src' else 'dport'} {int(port)} counter comment \"{rule}\""


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


def remove_stale_tables():
    """Tables an earlier run left (killed hard): each would go on costing."""
    out = subprocess.run(["nft", "-j", "list", "tables", "ip"], capture_output=True, text=True)
    for item in json.loads(out.stdout or "{}").get("nftables", []):
        name = item.get("table", {}).get("name", "")
        if name.startswith("switchboard_bench_"):
            pid = name.rsplit("_", 1)[-1]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                subprocess.run(["nft", "delete", "table", "ip", name], check=False)


def main():
    rules = sys.argv[1:]
    body = "\n".join(f"    {rule_expr(r)}" for r in rules)
    # Blocked from the start, then waited for: a signal is never missed, and
    # none ends the script between adding its table and removing it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    remove_stale_tables()
    try:
        nft(
            f"table ip {TABLE} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority -300; policy accept;\n"
            f"{body}\n"
            f"  }}\n"
            f"}}\n"
        )
        print("ready", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        found = counts()
        missing = [r for r in rules if r not in found]
        if missing:
            sys.exit(f"rtpcount.py: no counter found for {missing} in nft's output")
        for rule in rules:
            print(rule, found[rule], flush=True)
    finally:
        subprocess.run(["nft", "delete", "table", "ip", TABLE], check=False)


if __name__ == "__main__":
    main()
