#!/usr/bin/env bash
# Registrar benchmark (issue 3): REGISTER with MD5 digest over UDP, SIPp against
# Switchboard and against Kamailio 5.6 (registrar + auth, contacts in memory),
# one after the other on this machine, on loopback only.
#
#   bash benches/register/run.sh                 # both servers, results on stdout
#   WRITE_DOCS=1 bash benches/register/run.sh    # ... and into docs/benchmarks.md
#
# Not a test: nothing here runs under `cargo test`. Needs Debian packages
# sip-tester (SIPp 3.6) and kamailio (5.6), curl, and target/release/switchboard
# (built with `cargo build --release` when missing). Every process it starts is
# killed by PID on exit; Kamailio is run in the foreground, never as a service.
#
# For each server:
#   1. memory: idle sample; a warm-up pass that unregisters USERS users (the same
#      digest and transaction work, no binding kept); SETTLE_SECS of quiet so
#      that server transactions (UDP Timer J, 32 s) are gone; sample M1; register
#      USERS users; SETTLE_SECS of quiet; sample M2.  bytes/binding = (M2-M1)/USERS.
#   2. rate: SIPp interop-tests/sipp/register.xml (401 challenge, authenticated
#      REGISTER, 200) at RATES registrations/s, STEP_SECS each, retransmissions
#      ON (T1 = 500 ms), until the first step with a failed call, a
#      retransmission, or an achieved rate below 90% of the target.
#
# Settings (environment): USERS RATES STEP_SECS FILL_RATE SETTLE_SECS SERVERS
# KAM_CHILDREN SB_BIN SB_ALGORITHMS WRITE_DOCS MAX_SECS QUIET_PCT QUIET_MAX_WAIT
# NOISY_PCT PIN NICE (see defaults below). The machine should be otherwise idle: each
# step waits for a quiet host and is repeated when other processes ran during it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/benches/register"
SCENARIO="$ROOT/interop-tests/sipp/register.xml"

USERS="${USERS:-10000}"
RATES="${RATES-1000 2000 4000 6000 8000 10000 12000 14000 16000 20000}"   # RATES="": memory only
STEP_SECS="${STEP_SECS:-10}"
FILL_RATE="${FILL_RATE:-1000}"
SETTLE_SECS="${SETTLE_SECS:-34}"
SERVERS="${SERVERS:-switchboard kamailio}"
KAM_CHILDREN="${KAM_CHILDREN:-4}"
SB_BIN="${SB_BIN:-$ROOT/target/release/switchboard}"
SB_ALGORITHMS="${SB_ALGORITHMS:-MD5, SHA-256}"   # challenges Switchboard sends, in order
WRITE_DOCS="${WRITE_DOCS:-0}"
MAX_SECS="${MAX_SECS:-540}"      # the run stops starting new steps after this
QUIET_PCT="${QUIET_PCT:-15}"     # before a step: wait until other processes use less than this % of a core
QUIET_MAX_WAIT="${QUIET_MAX_WAIT:-60}"   # ... but at most this many seconds
NOISY_PCT="${NOISY_PCT:-30}"     # a step during which other processes used more: run it again (twice at most)
# PIN=1: server on CPU 0, SIPp on CPU 1 (default: no pinning, both share 2 cores).
PIN="${PIN:-0}"
# Scheduling priority of the server and SIPp (both alike): -10 when root, so that
# someone else's `cargo build` on the same machine disturbs the steps less.
NICE="${NICE:-$([[ "$(id -u)" == 0 ]] && echo -10 || echo 0)}"

SIP_PORT_SB=25060
ADMIN_PORT_SB=25090
SIP_PORT_KAM=25070
SIPP_PORT=26060
DOMAIN=example.test
CTL_SOCKET="/tmp/kamailio-bench-ctl.$$"
CLK_TCK="$(getconf CLK_TCK)"
STARTED="$(date +%s)"

die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for tool in sipp kamailio kamcmd curl awk ss; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y sip-tester kamailio curl)"
done
[[ "$(nproc)" -ge 2 || "$PIN" == 0 ]] || die "PIN=1 needs two CPUs"

if [[ ! -x "$SB_BIN" ]]; then
  log "building $SB_BIN (cargo build --release)"
  (cd "$ROOT" && nice cargo build --release) || die "release build failed"
fi
newest_src="$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -type f -newer "$SB_BIN" 2>/dev/null | head -n1 || true)"
[[ -z "$newest_src" ]] || log "warning: $newest_src is newer than $SB_BIN (stale binary?)"

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
awk '{ exit !($1 > 0.5) }' /proc/loadavg && log "warning: load average $LOAD_AT_START: other jobs are running, numbers will be noisy"
WORK="$(mktemp -d /tmp/regbench.XXXXXX)"
log "work directory (logs, SIPp stats): $WORK"

# ---------------------------------------------------------------------------
# Cleanup: every process we start is recorded here and killed by PID.
# ---------------------------------------------------------------------------
SERVER_PID=""
SIPP_PID=""
cleanup() {
  local pid
  for pid in $SIPP_PID $SERVER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  for pid in $SIPP_PID $SERVER_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SIPP_PID=""
  SERVER_PID=""
  rm -f "$CTL_SOCKET"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Users: u0001..uNNNN / p0001..pNNNN, for Switchboard's YAML and SIPp's CSV.
# ---------------------------------------------------------------------------
gen_csv() { # expires file
  awk -v n="$USERS" -v d="$DOMAIN" -v e="$1" 'BEGIN {
    print "SEQUENTIAL"
    for (i = 1; i <= n; i++) {
      u = sprintf("u%04d", i); p = sprintf("p%04d", i)
      printf "%s;%s;%s;%s;[authentication username=%s password=%s];-\n", u, p, d, e, u, p
    }
  }' >"$2"
}
gen_csv 3600 "$WORK/register.csv"
gen_csv 0 "$WORK/unregister.csv"

cat >"$WORK/switchboard.yaml" <<EOF
# Generated by benches/register/run.sh
listen:
  udp: ['127.0.0.1:$SIP_PORT_SB']
  tcp: []
  tls: []
  https: []
  http: []
  admin: ['127.0.0.1:$ADMIN_PORT_SB']
log:
  level: warn
# SIPp 3.6 answers the topmost challenge and knows only MD5; the default order
# is SHA-256 first (see docs/registrar.md), so MD5 goes first here, as in tests/.
auth:
  algorithms: [$SB_ALGORITHMS]
domains:
  - name: $DOMAIN
    users:
EOF
awk -v n="$USERS" 'BEGIN { for (i = 1; i <= n; i++) printf "      - {username: u%04d, password: p%04d}\n", i, i }' >>"$WORK/switchboard.yaml"

# ---------------------------------------------------------------------------
# Process accounting: the server's PIDs (Kamailio: main + every child).
# ---------------------------------------------------------------------------
server_pids() {
  local all=("$SERVER_PID") queue=("$SERVER_PID") pid child
  while ((${#queue[@]})); do
    pid="${queue[0]}"; queue=("${queue[@]:1}")
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do all+=("$child"); queue+=("$child"); done
  done
  echo "${all[@]}"
}
# CPU seconds (user + system, all threads) of the server's processes, in ticks.
cpu_ticks() {
  local total=0 pid fields
  for pid in $(server_pids); do
    fields="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
    # after "pid (comm) ": field 3 = state ... utime is the 12th, stime the 13th
    total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
  done
  echo "$total"
}
# "PSS_KB RSS_KB" summed over the server's processes.
mem_kb() {
  local pss=0 rss=0 pid v
  for pid in $(server_pids); do
    v="$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)"; pss=$((pss + ${v:-0}))
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"; rss=$((rss + ${v:-0}))
  done
  echo "$pss $rss"
}
# Busy ticks of the whole host (all CPUs): user, nice, system, irq, softirq, steal.
host_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Waits (at most QUIET_MAX_WAIT s) until the rest of the host uses less than
# QUIET_PCT% of one core over 2 s: other people's builds skew every number.
wait_quiet() {
  local waited=0 a b pct
  while :; do
    a="$(host_busy_ticks)"; sleep 2; b="$(host_busy_ticks)"
    pct=$(( (b - a) * 100 / (2 * CLK_TCK) ))
    ((pct < QUIET_PCT)) && return 0
    if ((waited >= QUIET_MAX_WAIT)); then log "warning: host still busy ($pct% of a core), going on"; return 0; fi
    ((waited % 20 == 0)) && log "host busy ($pct% of a core): waiting for quiet"
    waited=$((waited + 2))
  done
}
udp_rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp; }

bindings() {
  case "$1" in
    switchboard) curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/metrics" | awk '$1 == "switchboard_registrar_bindings" {print $2}' ;;
    kamailio) kamcmd -s "unix:$CTL_SOCKET" stats.get_statistics location_contacts 2>/dev/null | awk '{print $3}' ;;
  esac
}

server_cpus=(nice -n "$NICE"); sipp_cpus=(nice -n "$NICE")
if [[ "$PIN" == 1 ]]; then server_cpus+=(taskset -c 0); sipp_cpus+=(taskset -c 1); fi

start_server() {
  case "$1" in
    switchboard)
      (cd "$WORK" && exec "${server_cpus[@]}" "$SB_BIN" serve --config "$WORK/switchboard.yaml") >"$WORK/switchboard.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      die "switchboard did not start; see $WORK/switchboard.log" ;;
    kamailio)
      sed "s|unix:/tmp/kamailio-bench-ctl|unix:$CTL_SOCKET|" "$BENCH/kamailio.cfg" >"$WORK/kamailio.cfg"
      "${server_cpus[@]}" kamailio -f "$WORK/kamailio.cfg" -DD -E -m 256 -M 16 \
        -A "BENCH_LISTEN=udp:127.0.0.1:$SIP_PORT_KAM" -A "BENCH_CHILDREN=$KAM_CHILDREN" \
        >"$WORK/kamailio.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 200); do
        if ss -uln "sport = :$SIP_PORT_KAM" | grep -q ":$SIP_PORT_KAM" && [[ -S "$CTL_SOCKET" ]]; then sleep 1; return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      die "kamailio did not start; see $WORK/kamailio.log" ;;
  esac
}

server_port() { [[ "$1" == switchboard ]] && echo "$SIP_PORT_SB" || echo "$SIP_PORT_KAM"; }

# run_sipp SERVER LABEL CSV RATE CALLS -> sets S_OK S_FAIL S_RETRANS S_OOC S_DEAD
#   S_WALL S_SIPP_CPU S_SRV_CPU S_OTHER_CPU S_DROPS (kernel UDP receive-buffer drops, any socket)
run_sipp() {
  local server="$1" label="$2" csv="$3" rate="$4" calls="$5"
  local stat="$WORK/$server-$label.stat.csv" err="$WORK/$server-$label.errors.log"
  local limit=$((rate > 1000 ? rate : 1000))
  local t0 t1 c0 c1 d0 d1 h0 h1 times_out
  rm -f "$stat" "$err"
  d0="$(udp_rcvbuf_errors)"; c0="$(cpu_ticks)"; h0="$(host_busy_ticks)"; t0="$(date +%s.%N)"
  # `times` in the subshell reports SIPp's CPU (its only child) once it exits.
  (
    "${sipp_cpus[@]}" sipp -sf "$SCENARIO" -inf "$csv" -t u1 -i 127.0.0.1 -p "$SIPP_PORT" \
      -r "$rate" -m "$calls" -l "$limit" -buff_size 4194304 \
      -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$err" \
      -timeout "$((STEP_SECS * 3 + 30))" -nostdin \
      "127.0.0.1:$(server_port "$server")" </dev/null >/dev/null 2>&1 || true
    times
  ) >"$WORK/$server-$label.times" &
  SIPP_PID=$!
  wait "$SIPP_PID" || true
  SIPP_PID=""
  t1="$(date +%s.%N)"; c1="$(cpu_ticks)"; h1="$(host_busy_ticks)"; d1="$(udp_rcvbuf_errors)"
  times_out="$(tail -n1 "$WORK/$server-$label.times")"
  S_SIPP_CPU="$(awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%.2f", s }' <<<"$times_out")"
  S_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
  S_SRV_CPU="$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')"
  S_DROPS=$((d1 - d0))
  # Host CPU that was neither the server nor SIPp (other jobs, softirq not charged to either).
  S_OTHER_CPU="$(awk -v a="$h0" -v b="$h1" -v hz="$CLK_TCK" -v s="$S_SRV_CPU" -v p="$S_SIPP_CPU" 'BEGIN { printf "%.2f", (b - a) / hz - s - p }')"
  if [[ -s "$stat" ]]; then
    read -r S_OK S_FAIL S_RETRANS S_OOC S_DEAD < <(awk -F';' '
      NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
      { last = $0 }
      END { split(last, f, ";"); print f[c["SuccessfulCall(C)"]] + 0, f[c["FailedCall(C)"]] + 0, f[c["Retransmissions(C)"]] + 0, f[c["OutOfCallMsgs(C)"]] + 0, f[c["DeadCallMsgs(C)"]] + 0 }' "$stat")
  else
    S_OK=0 S_FAIL="$calls" S_RETRANS=0 S_OOC=0 S_DEAD=0
  fi
}

elapsed() { echo $(( $(date +%s) - STARTED )); }

# ---------------------------------------------------------------------------
# One server: memory, then the rate ladder.
# ---------------------------------------------------------------------------
declare -A RESULT
STEP_ROWS=()

bench_server() {
  local server="$1" m0 m1 m2 pss0 pss1 pss2 rss1 rss2 n shm1 shm2
  log "== $server"
  start_server "$server"
  sleep 1
  read -r pss0 _ <<<"$(mem_kb)"

  wait_quiet
  log "$server: warm-up: unregister $USERS users at $FILL_RATE/s"
  run_sipp "$server" warmup "$WORK/unregister.csv" "$FILL_RATE" "$USERS"
  log "$server: warm-up: ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS; quiet for ${SETTLE_SECS}s"
  sleep "$SETTLE_SECS"
  read -r pss1 rss1 <<<"$(mem_kb)"
  [[ "$server" == kamailio ]] && shm1="$(kamcmd -s "unix:$CTL_SOCKET" core.shmmem | awk '$1 == "real_used:" {print $2}')"

  log "$server: fill: register $USERS users at $FILL_RATE/s"
  run_sipp "$server" fill "$WORK/register.csv" "$FILL_RATE" "$USERS"
  log "$server: fill: ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS; quiet for ${SETTLE_SECS}s"
  [[ "$S_OK" == "$USERS" ]] || log "warning: $server: fill registered $S_OK of $USERS"
  sleep "$SETTLE_SECS"
  read -r pss2 rss2 <<<"$(mem_kb)"
  n="$(bindings "$server")"
  RESULT[$server.bindings]="$n"
  RESULT[$server.pss_idle]="$pss0"
  RESULT[$server.pss1]="$pss1"; RESULT[$server.pss2]="$pss2"
  RESULT[$server.rss1]="$rss1"; RESULT[$server.rss2]="$rss2"
  RESULT[$server.bpb_pss]=$(( (pss2 - pss1) * 1024 / USERS ))
  RESULT[$server.bpb_rss]=$(( (rss2 - rss1) * 1024 / USERS ))
  if [[ "$server" == kamailio ]]; then
    shm2="$(kamcmd -s "unix:$CTL_SOCKET" core.shmmem | awk '$1 == "real_used:" {print $2}')"
    RESULT[kamailio.bpb_shm]=$(( (shm2 - shm1) / USERS ))
  fi
  log "$server: bindings=$n PSS ${pss1} -> ${pss2} kB, RSS ${rss1} -> ${rss2} kB (sum over processes)"

  local best=0 best_achieved=0 best_cpu_pct=0 best_cpu_per_k=0 rate calls stop="" achieved cpu_pct cpu_per_k sipp_pct other_pct verdict attempt
  for rate in $RATES; do
    if (( $(elapsed) > MAX_SECS )); then stop="time budget (MAX_SECS=$MAX_SECS) used up"; break; fi
    calls=$((rate * STEP_SECS))
    for attempt in 1 2 3; do
      sleep 1
      wait_quiet
      run_sipp "$server" "r$rate" "$WORK/register.csv" "$rate" "$calls"
      other_pct="$(awk -v c="$S_OTHER_CPU" -v w="$S_WALL" 'BEGIN { printf "%.0f", 100 * c / w }')"
      ((other_pct < NOISY_PCT)) && break
      log "$server: $rate/s: other processes used $other_pct% of a core during the step (attempt $attempt)"
      (( $(elapsed) > MAX_SECS )) && break
    done
    achieved="$(awk -v n="$S_OK" -v w="$S_WALL" 'BEGIN { printf "%.0f", n / w }')"
    cpu_pct="$(awk -v c="$S_SRV_CPU" -v w="$S_WALL" 'BEGIN { printf "%.0f", 100 * c / w }')"
    sipp_pct="$(awk -v c="$S_SIPP_CPU" -v w="$S_WALL" 'BEGIN { printf "%.0f", 100 * c / w }')"
    cpu_per_k="$(awk -v c="$S_SRV_CPU" -v n="$S_OK" 'BEGIN { if (n > 0) printf "%.1f", 1000000 * c / n; else print "-" }')"
    verdict=clean
    if ((S_FAIL > 0)); then verdict="FAILED"; stop="failed calls at $rate/s"
    elif ((S_RETRANS > 0)); then verdict="RETRANS"; stop="retransmissions at $rate/s"
    elif ((achieved * 10 < rate * 9)); then verdict="SLOW"; stop="achieved only $achieved/s of $rate/s"
    fi
    STEP_ROWS+=("| $server | $rate | $achieved | $S_OK | $S_FAIL | $S_RETRANS | $S_DROPS | $cpu_pct% | $cpu_per_k | $sipp_pct% | $other_pct% | $verdict |")
    log "$server: $rate/s: achieved $achieved/s ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS kernel-drops=$S_DROPS server-cpu=$cpu_pct% ($cpu_per_k ms/1000) sipp-cpu=$sipp_pct% rest-of-host=$other_pct% -> $verdict"
    [[ "$verdict" == clean ]] || break
    best="$rate"; best_achieved="$achieved"; best_cpu_pct="$cpu_pct"; best_cpu_per_k="$cpu_per_k"
  done
  [[ -n "$stop" ]] || stop="every rate in RATES was clean"
  read -r _ RESULT[$server.rss_end] <<<"$(mem_kb)"
  RESULT[$server.best]="$best"; RESULT[$server.best_achieved]="$best_achieved"
  RESULT[$server.best_cpu_pct]="$best_cpu_pct"; RESULT[$server.best_cpu_per_k]="$best_cpu_per_k"
  RESULT[$server.stop]="$stop"
  RESULT[$server.bindings_end]="$(bindings "$server")"
  cleanup
}

for server in $SERVERS; do bench_server "$server"; done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
git_rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || git_rev="$git_rev (+ uncommitted changes in src/)"
report="$WORK/report.md"
{
  echo "Command: \`$(printf '%s ' WRITE_DOCS="$WRITE_DOCS" USERS="$USERS" RATES=\""$RATES"\" STEP_SECS="$STEP_SECS" FILL_RATE="$FILL_RATE" SETTLE_SECS="$SETTLE_SECS" KAM_CHILDREN="$KAM_CHILDREN" PIN="$PIN" NICE="$NICE")bash benches/register/run.sh\`"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), run time $(elapsed) s, load average at the start: $LOAD_AT_START"
  echo "- Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr), loopback only; CPU pinning: $([[ "$PIN" == 1 ]] && echo 'server on CPU 0, SIPp on CPU 1' || echo none); server and SIPp at nice $NICE"
  echo "- Switchboard: git $git_rev, \`target/release/switchboard\`, log level warn"
  echo "- Kamailio: $(kamailio -v 2>/dev/null | awk '/^version:/ {print $2, $3; exit}') (Debian package $(dpkg-query -W -f='${Version}' kamailio 2>/dev/null)), $KAM_CHILDREN UDP children, \`benches/register/kamailio.cfg\`"
  echo "- SIPp: $(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[^ ]*' | head -n1), \`interop-tests/sipp/register.xml\`, retransmissions on (T1 500 ms), $USERS users, $STEP_SECS s per step"
  echo
  echo "| server | max clean rate (target) | achieved | server CPU at that rate | CPU ms per 1000 registrations | bytes per binding (PSS) | bytes per binding (RSS) | bindings after fill / at end | stopped because |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for server in $SERVERS; do
    extra=""
    [[ "$server" == kamailio && -n "${RESULT[kamailio.bpb_shm]:-}" ]] && extra=" (shm real_used: ${RESULT[kamailio.bpb_shm]})"
    echo "| $server | ${RESULT[$server.best]}/s | ${RESULT[$server.best_achieved]}/s | ${RESULT[$server.best_cpu_pct]}% of a core | ${RESULT[$server.best_cpu_per_k]} | ${RESULT[$server.bpb_pss]}$extra | ${RESULT[$server.bpb_rss]} | ${RESULT[$server.bindings]} / ${RESULT[$server.bindings_end]} | ${RESULT[$server.stop]} |"
  done
  echo
  echo "Memory, summed over the server's processes (kB): "
  for server in $SERVERS; do
    echo "$server idle PSS ${RESULT[$server.pss_idle]}, before the $USERS bindings PSS ${RESULT[$server.pss1]} / RSS ${RESULT[$server.rss1]}, after PSS ${RESULT[$server.pss2]} / RSS ${RESULT[$server.rss2]}, RSS at the end ${RESULT[$server.rss_end]}."
  done
  echo
  echo "Every step (a registration = REGISTER, 401, REGISTER with credentials, 200; CPU = user + system of all the server's threads and processes over the step; kernel drops = UdpRcvbufErrors on the whole host during the step; rest of host = busy CPU of the whole host (including interrupt and softirq time) minus server and SIPp during the step, in % of one core: other processes, and loopback packet delivery charged to neither; a step with more than '"$NOISY_PCT"'% was run again, twice at most):"
  echo
  echo "| server | target/s | achieved/s | successful | failed | retransmissions | kernel drops | server CPU | CPU ms per 1000 | SIPp CPU | rest of host | verdict |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${STEP_ROWS[@]}"
} >"$report"

echo
cat "$report"
echo
log "logs and SIPp statistics: $WORK"

if [[ "$WRITE_DOCS" == 1 ]]; then
  docs="$ROOT/docs/benchmarks.md"
  begin='<!-- register-results:begin (written by benches/register/run.sh) -->'
  end='<!-- register-results:end -->'
  [[ -f "$docs" ]] && grep -qF "$begin" "$docs" || die "$docs has no '$begin' marker"
  awk -v b="$begin" -v e="$end" -v r="$report" '
    $0 == b { print; while ((getline line < r) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$docs" >"$docs.tmp" && mv "$docs.tmp" "$docs"
  log "results written into $docs"
fi
