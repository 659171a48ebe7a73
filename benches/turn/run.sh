#!/usr/bin/env bash
# TURN relay benchmark: Switchboard's bundled TURN server against coturn, same machine, same
# load, one run. Not a test: run it by hand (see docs/benchmarks.md, section "TURN").
#
#   bash benches/turn/run.sh                 # 250, 500 and 750 clients
#   CLIENTS="200" MSGS=500 bash benches/turn/run.sh
#
# Load: coturn's own turnutils_uclient, UDP allocations, ChannelData, -c (no RTCP allocation),
# CLIENTS clients each sending MSGS packets of SIZE bytes every INTERVAL ms (20 ms and 172 bytes:
# one G.711 stream) to turnutils_peer, which echoes them back through the relay. Every packet is
# relayed twice by the server (client -> peer, peer -> client).
#
# Reported per server: packets relayed per second (2 x echoes received / transmit time), loss and
# average round-trip time as uclient reports them, and the server's CPU time (utime+stime from
# /proc/PID/stat) over the run, as a percentage of one core.
#
# Needs: cargo, coturn (apt-get install -y coturn; its daemon is never started by the package
# here: the script starts its own turnserver with a temporary config on other ports and kills it).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLIENTS="${CLIENTS:-250 500 750}"
MSGS="${MSGS:-500}"
SIZE="${SIZE:-172}"
INTERVAL="${INTERVAL:-20}"
SB_PORT="${SB_PORT:-34478}"
COTURN_PORT="${COTURN_PORT:-34578}"
PEER_PORT="${PEER_PORT:-34680}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/switchboard"
WORK="$(mktemp -d /tmp/turn-bench.XXXXXX)"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "${KEEP:-}" ]] && echo "outputs kept in $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

command -v turnutils_uclient >/dev/null || { echo "apt-get install -y coturn" >&2; exit 2; }
if [[ ! -x "$BIN" || "${BUILD:-1}" == 1 ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The kernel's count of UDP datagrams dropped for a full receive buffer (anyone's socket).
rcvbuf_errors() { awk '/^Udp:/ {n++} /^Udp:/ && n == 2 {print $6}' /proc/net/snmp; }
HZ="$(getconf CLK_TCK)"

wait_port() { # udp port
  for _ in $(seq 1 100); do
    if ss -Hlun "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on udp $1" >&2
  return 1
}

start_switchboard() {
  mkdir -p "$WORK/sb"
  cat >"$WORK/sb/switchboard.yaml" <<EOF
listen: {udp: [], tcp: [], tls: [], https: [], http: [], admin: []}
log: {level: warn}
turn:
  listen: {udp: ['127.0.0.1:$SB_PORT'], tcp: [], tls: []}
  realm: bench
  relay_ipv4: 127.0.0.1
  relay_ipv6: ''
  relay_ports: 40000-44999
  users: [{username: bench, password: bench}]
  allowed_peers: ['127.0.0.1']
  user_quota: 100000
  total_quota: 100000
  allocate_rate: 0
EOF
  (cd "$WORK/sb" && exec "$BIN" serve --log-level warn,switchboard::turn::server=debug >"$WORK/sb/log" 2>&1) &
  PIDS+=("$!")
  SERVER_PID="$!"
  wait_port "$SB_PORT"
  SERVER_PORT="$SB_PORT"
}

start_coturn() {
  mkdir -p "$WORK/coturn"
  cat >"$WORK/coturn/turnserver.conf" <<EOF
listening-ip=127.0.0.1
listening-port=$COTURN_PORT
relay-ip=127.0.0.1
min-port=45000
max-port=49999
realm=bench
user=bench:bench
lt-cred-mech
allow-loopback-peers
no-tcp
no-tls
no-dtls
no-cli
no-multicast-peers
total-quota=100000
user-quota=100000
log-file=$WORK/coturn/log
simple-log
pidfile=$WORK/coturn/pid
userdb=$WORK/coturn/db.sqlite
EOF
  turnserver -c "$WORK/coturn/turnserver.conf" >/dev/null 2>&1 &
  PIDS+=("$!")
  SERVER_PID="$!"
  wait_port "$COTURN_PORT"
  SERVER_PORT="$COTURN_PORT"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PIDS+=("$!")
wait_port "$PEER_PORT"

echo "turnutils_uclient -c -m CLIENTS -n $MSGS -l $SIZE -z $INTERVAL -e 127.0.0.1 -r $PEER_PORT -u bench -w bench -p PORT 127.0.0.1"
echo "$(nproc) cores; $(turnserver --version 2>/dev/null | head -n1 | sed 's/^/coturn /'); switchboard $(git -C "$ROOT" rev-parse --short HEAD)"
printf '\n| server | clients | offered pkt/s (relayed) | loss | avg RTT ms | server CPU, %% of a core | CPU µs per relayed packet | kernel UDP rcvbuf drops |\n'
printf '|---|---|---|---|---|---|---|---|\n'

for clients in $CLIENTS; do
  for server in switchboard coturn; do
    if [[ "$server" == switchboard ]]; then start_switchboard; else start_coturn; fi
    sleep 0.5
    before="$(ticks "$SERVER_PID")"
    drops0="$(rcvbuf_errors)"
    t0="$(date +%s.%N)"
    out="$WORK/$server-$clients.txt"
    timeout $((MSGS * INTERVAL / 1000 + 120)) turnutils_uclient -c -m "$clients" -n "$MSGS" -l "$SIZE" -z "$INTERVAL" \
      -e 127.0.0.1 -r "$PEER_PORT" -u bench -w bench -p "$SERVER_PORT" 127.0.0.1 >"$out" 2>&1 || true
    t1="$(date +%s.%N)"
    after="$(ticks "$SERVER_PID")"
    drops=$(($(rcvbuf_errors) - drops0))
    stop_server
    recv="$(grep -o 'tot_recv_msgs=[0-9]*' "$out" | tail -n1 | cut -d= -f2 || true)"
    # uclient prints progress once a second: the sending window runs from the first second with
    # packets sent to the second all were sent. (Its "Total transmit time" also counts the wait
    # for late packets at the end, so one lost packet would halve the rate.)
    total=$((clients * MSGS))
    ttime="$(awk -v total="$total" '/tot_send_msgs=/ {
        t = $1 + 0; split($0, a, "tot_send_msgs="); s = a[2] + 0
        if (s > 0 && first == "") first = t
        if (s >= total && last == "") last = t
      } END { if (first != "" && last != "") print (last > first ? last - first : 1) }' "$out" || true)"
    loss="$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' "$out" | tail -n1 | sed 's/.*(\(.*\))/\1/' || true)"
    rtt="$(grep -o 'Average round trip delay [0-9.]*' "$out" | tail -n1 | awk '{print $5}' || true)"
    wall="$(echo "$t1 - $t0" | bc -l)"
    cpu_s="$(echo "($after - $before) / $HZ" | bc -l)"
    if [[ -z "$recv" || -z "$ttime" || "$ttime" == 0 ]]; then
      printf '| %s | %s | failed (see below) | | | | |\n' "$server" "$clients"
      tail -n 5 "$out" | sed 's/^/    /'
      continue
    fi
    relayed=$((2 * recv))
    pps="$(echo "2 * $total / $ttime" | bc -l)"
    cpu_pct="$(echo "100 * $cpu_s / $wall" | bc -l)"
    us_per="$(echo "1000000 * $cpu_s / $relayed" | bc -l)"
    printf '| %s | %d | %.0f | %s | %.2f | %.1f | %.2f | %d |\n' "$server" "$clients" "$pps" "${loss:-?}" "${rtt:-0}" "$cpu_pct" "$us_per" "$drops"
  done
done
