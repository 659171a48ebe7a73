#!/usr/bin/env python3
"""Counts UDP datagrams delivered on this host, exactly and cheaply, for
benches/calls/run.sh: one nftables table of its own with a rule per port
('udp dport P counter accept' or the same with sport) in a filter chain on
the input hook, which every datagram that crosses lo to a local socket
passes once, before any socket buffer can drop it. Each datagram is counted
by the first rule it matches (no datagram of the bench matches two: none
travels between 26162 and 26172); destination rules come first. Without an
interface test, datagrams to or from those ports on any interface count
(the bench runs on lo). The counters are kernel counters; nothing is
copied to user space. Needs root and the nft command (Debian package
nftables).

    rtpcount.py dst:26172 src:26172 dst:26162 src:26162

Prints "ready" on stdout once the rules are in place; on SIGTERM/SIGINT
prints "RULE COUNT" per rule, removes its table and exits.

What counting costs the server: on lo, a datagram's input hook runs in its
sender's system call, so each packet Switchboard sends is counted on
Switchboard's CPU time.
- AF_PACKET sockets (what this script used until 2026-11-23;
  `git show 3097179:benches/calls/rtpcount.py`) made the kernel hand every
  packet to each socket's filter: four of them added 9-20 % (17 % on
  average) to the media thread in benches/rtp_engine.rs.
- Four rules each 'iif "lo" udp dport P counter', every datagram through
  all four (`git show d6ba014:benches/calls/rtpcount.py`): 4.2 % of the
  media thread's samples in nf_hook_slow (perf, 400 calls).
- Named counters behind two map lookups ('counter name udp dport map {...}'):
  5.3 %, not kept.
- Now, with the rules Switchboard's packets match first and each match
  ending the chain: see docs/benchmarks.md, "Where the whole server's media
  thread goes"."""

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
    return f"udp {'sport' if field == 'src' else 'dport'} {int(port)} counter accept comment \"{rule}\""


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
    # Destination rules first: they match what Switchboard sends (to the
    # callee, to the caller), whose input hook runs on Switchboard's CPU time.
    ordered = sorted(rules, key=lambda r: not r.startswith("dst:"))
    body = "\n".join(f"    {rule_expr(r)}" for r in ordered)
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
