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
# killed by PID on exit; Kamailio runs in the foreground, never as a service.
# About 10 minutes with the defaults.
#
# For each server:
#   1. memory: a warm-up pass that unregisters USERS users (the same digest and
#      transaction work, no binding kept); SETTLE_SECS of quiet so that server
#      transactions (UDP Timer J, 32 s) are gone; sample M1; register USERS
#      users; SETTLE_SECS of quiet; sample M2.  bytes/binding = (M2-M1)/USERS.
#   2. rate: SIPp interop-tests/sipp/register.xml (REGISTER, 401 challenge,
#      REGISTER with credentials, 200) at RATES registrations/s, STEP_SECS each,
#      retransmissions ON (T1 = 500 ms), until the first step with a failed
#      call, a retransmission, or an achieved rate below 90% of the target.
#      Steps are longer than Timer J so that a stateful server reaches its
#      steady state (transactions expiring as fast as they are created); server
#      CPU is measured from STEADY_FROM s into the step to its end.
#
# Settings (environment, defaults below): USERS RATES STEP_SECS STEADY_FROM
# FILL_RATE SETTLE_SECS SERVERS KAM_CHILDREN SB_BIN SB_ALGORITHMS WRITE_DOCS
# MAX_SECS PIN SCHED NICE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/benches/register"
SCENARIO="$ROOT/interop-tests/sipp/register.xml"

USERS="${USERS:-10000}"
RATES="${RATES-4000 6000 8000 10000 12000 14000 16000 18000}"   # RATES="": memory only
STEP_SECS="${STEP_SECS:-38}"
STEADY_FROM="${STEADY_FROM:-32}"  # CPU is measured from here to the end of a step
FILL_RATE="${FILL_RATE:-2000}"
SETTLE_SECS="${SETTLE_SECS:-33}"
SERVERS="${SERVERS:-switchboard kamailio}"
KAM_CHILDREN="${KAM_CHILDREN:-4}"
SB_BIN="${SB_BIN:-$ROOT/target/release/switchboard}"
SB_ALGORITHMS="${SB_ALGORITHMS:-MD5, SHA-256}"   # challenges Switchboard sends, in order
WRITE_DOCS="${WRITE_DOCS:-0}"
MAX_SECS="${MAX_SECS:-560}"       # no new step starts after this many seconds (keeps a run near 10 minutes)
# PIN=1: server on CPU 0, SIPp on CPU 1 (default: no pinning, both share 2 cores).
PIN="${PIN:-0}"
# Scheduling of the server and SIPp (both alike). SCHED=rr (the default as root):
# SCHED_RR priority 10 (chrt), so that other jobs on a shared machine (someone's
# `cargo build`) only get the CPU the benchmark leaves idle; the kernel still
# keeps 5% for everything else (sched_rt_runtime_us). SCHED=other: normal
# scheduling at nice NICE; then the machine must be otherwise idle.
SCHED="${SCHED:-$([[ "$(id -u)" == 0 ]] && command -v chrt >/dev/null && echo rr || echo other)}"
NICE="${NICE:-0}"

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
elapsed() { echo $(( $(date +%s) - STARTED )); }

for tool in sipp kamailio kamcmd curl awk ss; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y sip-tester kamailio curl)"
done
((STEP_SECS > STEADY_FROM)) || die "STEP_SECS ($STEP_SECS) must be longer than STEADY_FROM ($STEADY_FROM)"

if [[ ! -x "$SB_BIN" ]]; then
  log "building $SB_BIN (cargo build --release)"
  (cd "$ROOT" && nice cargo build --release) || die "release build failed"
fi
newest_src="$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -type f -newer "$SB_BIN" 2>/dev/null | head -n1 || true)"
[[ -z "$newest_src" ]] || log "warning: $newest_src is newer than $SB_BIN (stale binary?)"

# The source the binary is compared with, as it is when the run starts.
git_rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || git_rev="$git_rev + uncommitted changes in src/"
[[ -z "$newest_src" ]] || git_rev="$git_rev (binary older than $(realpath --relative-to="$ROOT" "$newest_src"))"

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ "$SCHED" != rr ]] && awk '{ exit !($1 > 0.5) }' /proc/loadavg; then
  log "warning: load average $LOAD_AT_START: other jobs are running, numbers will be noisy"
fi
WORK="$(mktemp -d /tmp/regbench.XXXXXX)"
log "work directory (logs, SIPp statistics): $WORK"

# ---------------------------------------------------------------------------
# Cleanup: every process started here is recorded and killed by PID.
# ---------------------------------------------------------------------------
SERVER_PID=""
SIPP_PID=""
cleanup() {
  local pid pids
  # SIPP_PID is the subshell that runs SIPp (to read its CPU time); SIPp is its child.
  pids="$SERVER_PID"
  [[ -z "$SIPP_PID" ]] || pids="$(ps -o pid= --ppid "$SIPP_PID" 2>/dev/null | tr '\n' ' ') $SIPP_PID $pids"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for pid in $pids; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SIPP_PID=""
  SERVER_PID=""
  rm -f "$CTL_SOCKET"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Users u0001..uNNNN / p0001..pNNNN: Switchboard's YAML and SIPp's CSV.
# (Kamailio derives the password from the username: see kamailio.cfg.)
# ---------------------------------------------------------------------------
gen_csv() { # EXPIRES FILE
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
# SIPp is one source sending thousands of REGISTERs a second (Kamailio's
# configuration has no pike either): exempt from the per-source message rate.
limits:
  rate_exempt: ['127.0.0.1/32']
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
# Accounting over the server's processes (Kamailio: main + every child).
# ---------------------------------------------------------------------------
server_pids() {
  local all=("$SERVER_PID") queue=("$SERVER_PID") pid child
  while ((${#queue[@]})); do
    pid="${queue[0]}"; queue=("${queue[@]:1}")
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do all+=("$child"); queue+=("$child"); done
  done
  echo "${all[@]}"
}
# User + system CPU of the server's processes (all threads), in clock ticks.
cpu_ticks() {
  local total=0 pid v
  for pid in $(server_pids); do
    # After "pid (comm) " the fields are: state ppid ... utime is the 12th, stime the 13th.
    v="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# "PSS_KB RSS_KB", summed over the server's processes.
mem_kb() {
  local pss=0 rss=0 pid v
  for pid in $(server_pids); do
    v="$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)"; pss=$((pss + ${v:-0}))
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"; rss=$((rss + ${v:-0}))
  done
  echo "$pss $rss"
}
kam_shm_used() { kamcmd -s "unix:$CTL_SOCKET" core.shmmem | awk '$1 == "real_used:" {print $2}'; }
udp_rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp; }

bindings() {
  case "$1" in
    switchboard) curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/metrics" | awk '$1 == "switchboard_registrar_bindings" {print $2}' ;;
    kamailio) kamcmd -s "unix:$CTL_SOCKET" stats.get_statistics location_contacts 2>/dev/null | awk '{print $3}' ;;
  esac
}

if [[ "$SCHED" == rr ]]; then server_cmd=(chrt -r 10); sipp_cmd=(chrt -r 10)
else server_cmd=(nice -n "$NICE"); sipp_cmd=(nice -n "$NICE"); fi
if [[ "$PIN" == 1 ]]; then server_cmd+=(taskset -c 0); sipp_cmd+=(taskset -c 1); fi

start_server() {
  case "$1" in
    switchboard)
      # chrt/nice/taskset exec the binary: $! is the server's PID.
      (cd "$WORK" && exec "${server_cmd[@]}" "$SB_BIN" serve --config "$WORK/switchboard.yaml") >"$WORK/switchboard.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      die "switchboard did not start; see $WORK/switchboard.log" ;;
    kamailio)
      sed "s|unix:/tmp/kamailio-bench-ctl|unix:$CTL_SOCKET|" "$BENCH/kamailio.cfg" >"$WORK/kamailio.cfg"
      "${server_cmd[@]}" kamailio -f "$WORK/kamailio.cfg" -DD -E -m 256 -M 16 \
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

# run_sipp SERVER LABEL CSV RATE CALLS [STEADY_FROM]
# Sets S_OK S_FAIL S_RETRANS S_WALL S_SIPP_CPU S_SRV_CPU S_DROPS (kernel UDP
# receive-buffer drops, whole host) and, with STEADY_FROM, S_WIN_CPU_PCT (server
# CPU from STEADY_FROM s to the end, % of one core) and S_WIN_RATE (successful
# registrations/s over the same window, from SIPp's per-second statistics).
run_sipp() {
  local server="$1" label="$2" csv="$3" rate="$4" calls="$5" steady="${6:-0}"
  local stat="$WORK/$server-$label.stat.csv" err="$WORK/$server-$label.errors.log" times="$WORK/$server-$label.times"
  local limit=$((rate > 1000 ? rate : 1000))
  local t0 t1 c0 c1 d0 d1 cm="" tm=""
  rm -f "$stat" "$err"
  d0="$(udp_rcvbuf_errors)"; c0="$(cpu_ticks)"; t0="$(date +%s.%N)"
  # `times` in the subshell reports SIPp's CPU (its only child) once it exits.
  (
    "${sipp_cmd[@]}" sipp -sf "$SCENARIO" -inf "$csv" -t u1 -i 127.0.0.1 -p "$SIPP_PORT" \
      -r "$rate" -m "$calls" -l "$limit" -buff_size 4194304 \
      -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$err" \
      -timeout "$((STEP_SECS * 2 + 30))" -nostdin \
      "127.0.0.1:$(server_port "$server")" </dev/null >/dev/null 2>&1 || true
    times
  ) >"$times" &
  SIPP_PID=$!
  if ((steady > 0)); then
    while kill -0 "$SIPP_PID" 2>/dev/null && awk -v a="$t0" -v b="$(date +%s.%N)" -v s="$steady" 'BEGIN { exit !(b - a < s) }'; do sleep 0.2; done
    if kill -0 "$SIPP_PID" 2>/dev/null; then cm="$(cpu_ticks)"; tm="$(date +%s.%N)"; fi
  fi
  wait "$SIPP_PID" || true
  SIPP_PID=""
  t1="$(date +%s.%N)"; c1="$(cpu_ticks)"; d1="$(udp_rcvbuf_errors)"
  S_SIPP_CPU="$(tail -n1 "$times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%.2f", s }')"
  S_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
  S_SRV_CPU="$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')"
  S_DROPS=$((d1 - d0))
  S_OK=0 S_FAIL="$calls" S_RETRANS=0 S_WIN_CPU_PCT="" S_WIN_RATE=""
  if [[ -s "$stat" ]]; then
    read -r S_OK S_FAIL S_RETRANS < <(awk -F';' '
      NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
      { last = $0 }
      END { split(last, f, ";"); print f[c["SuccessfulCall(C)"]] + 0, f[c["FailedCall(C)"]] + 0, f[c["Retransmissions(C)"]] + 0 }' "$stat")
    if [[ -n "$tm" ]]; then
      S_WIN_CPU_PCT="$(awk -v a="$cm" -v b="$c1" -v ta="$tm" -v tb="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (tb - ta) }')"
      # CurrentTime is "date<TAB>time<TAB>epoch"; count from the first line at or after tm.
      S_WIN_RATE="$(awk -F';' -v tm="$tm" '
        NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        { n = split($c["CurrentTime"], t, "\t"); ts = t[n] + 0; ok = $c["SuccessfulCall(C)"] + 0
          if (!have && ts >= tm) { have = 1; t0 = ts; o0 = ok }
          tl = ts; ol = ok }
        END { if (have && tl > t0 + 1) printf "%.0f", (ol - o0) / (tl - t0) }' "$stat")"
    fi
  fi
}

# ---------------------------------------------------------------------------
# One server: memory, then the rate ladder.
# ---------------------------------------------------------------------------
declare -A R
STEP_ROWS=()

bench_server() {
  local server="$1" pss1 pss2 rss1 rss2 shm1=0 shm2=0
  log "== $server"
  start_server "$server"
  sleep 1
  read -r R[$server.pss_idle] R[$server.rss_idle] <<<"$(mem_kb)"

  log "$server: warm-up: unregister $USERS users at $FILL_RATE/s"
  run_sipp "$server" warmup "$WORK/unregister.csv" "$FILL_RATE" "$USERS"
  log "$server: warm-up: ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS; quiet for ${SETTLE_SECS}s"
  sleep "$SETTLE_SECS"
  read -r pss1 rss1 <<<"$(mem_kb)"
  [[ "$server" != kamailio ]] || shm1="$(kam_shm_used)"

  log "$server: fill: register $USERS users at $FILL_RATE/s"
  run_sipp "$server" fill "$WORK/register.csv" "$FILL_RATE" "$USERS"
  log "$server: fill: ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS; quiet for ${SETTLE_SECS}s"
  [[ "$S_OK" == "$USERS" ]] || log "warning: $server: the fill registered $S_OK of $USERS"
  sleep "$SETTLE_SECS"
  read -r pss2 rss2 <<<"$(mem_kb)"
  [[ "$server" != kamailio ]] || shm2="$(kam_shm_used)"
  R[$server.bindings]="$(bindings "$server")"
  R[$server.pss1]="$pss1"; R[$server.pss2]="$pss2"; R[$server.rss1]="$rss1"; R[$server.rss2]="$rss2"
  R[$server.bpb_pss]=$(( (pss2 - pss1) * 1024 / USERS ))
  R[$server.bpb_rss]=$(( (rss2 - rss1) * 1024 / USERS ))
  R[$server.bpb_shm]=$(( (shm2 - shm1) / USERS ))
  log "$server: ${R[$server.bindings]} bindings: PSS $pss1 -> $pss2 kB, RSS $rss1 -> $rss2 kB (${R[$server.bpb_pss]} / ${R[$server.bpb_rss]} bytes per binding)"

  local rate calls achieved cpu_pct cpu_per_k sipp_pct verdict stop=""
  R[$server.best]=0; R[$server.best_achieved]=0; R[$server.best_cpu]="-"; R[$server.best_cpu_per_k]="-"
  for rate in $RATES; do
    if (( $(elapsed) > MAX_SECS )); then stop="time budget (MAX_SECS=$MAX_SECS) used up"; break; fi
    calls=$((rate * STEP_SECS))
    sleep 2
    run_sipp "$server" "r$rate" "$WORK/register.csv" "$rate" "$calls" "$STEADY_FROM"
    achieved="$(awk -v n="$S_OK" -v w="$S_WALL" 'BEGIN { printf "%.0f", n / w }')"
    sipp_pct="$(awk -v c="$S_SIPP_CPU" -v w="$S_WALL" 'BEGIN { printf "%.0f", 100 * c / w }')"
    if [[ -n "$S_WIN_CPU_PCT" && -n "$S_WIN_RATE" && "$S_WIN_RATE" != 0 ]]; then
      cpu_pct="$(printf '%.0f' "$S_WIN_CPU_PCT")"
      cpu_per_k="$(awk -v p="$S_WIN_CPU_PCT" -v r="$S_WIN_RATE" 'BEGIN { printf "%.1f", 10 * p / r * 1000 }')"
    else # the step ended early: whole-step figures
      cpu_pct="$(awk -v c="$S_SRV_CPU" -v w="$S_WALL" 'BEGIN { printf "%.0f", 100 * c / w }')"
      cpu_per_k="$(awk -v c="$S_SRV_CPU" -v n="$S_OK" 'BEGIN { if (n > 0) printf "%.1f", 1000000 * c / n; else print "-" }')*"
    fi
    verdict=clean
    if ((S_FAIL > 0)); then verdict=FAILED; stop="failed registrations at $rate/s"
    elif ((S_RETRANS > 0)); then verdict=RETRANS; stop="retransmissions at $rate/s"
    elif ((achieved * 10 < rate * 9)); then verdict=SLOW; stop="achieved only $achieved/s of $rate/s"
    fi
    STEP_ROWS+=("| $server | $rate | $achieved | $S_OK | $S_FAIL | $S_RETRANS | $S_DROPS | $cpu_pct% | $cpu_per_k | $sipp_pct% | $verdict |")
    log "$server: $rate/s: achieved $achieved/s, ok=$S_OK failed=$S_FAIL retrans=$S_RETRANS kernel-drops=$S_DROPS; server CPU $cpu_pct% ($cpu_per_k ms per 1000); SIPp CPU $sipp_pct% -> $verdict"
    [[ "$verdict" == clean ]] || break
    R[$server.best]="$rate"; R[$server.best_achieved]="$achieved"; R[$server.best_cpu]="$cpu_pct%"; R[$server.best_cpu_per_k]="$cpu_per_k"
  done
  [[ -n "$RATES" ]] || stop="no rate steps (RATES is empty)"
  R[$server.stop]="${stop:-every rate in RATES was clean}"
  read -r R[$server.pss_end] R[$server.rss_end] <<<"$(mem_kb)"
  R[$server.bindings_end]="$(bindings "$server")"
  cleanup
}

for server in $SERVERS; do bench_server "$server"; done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
report="$WORK/report.md"
{
  echo "Command: \`$(printf '%s ' WRITE_DOCS="$WRITE_DOCS" USERS="$USERS" RATES=\""$RATES"\" STEP_SECS="$STEP_SECS" STEADY_FROM="$STEADY_FROM" FILL_RATE="$FILL_RATE" SETTLE_SECS="$SETTLE_SECS" KAM_CHILDREN="$KAM_CHILDREN" MAX_SECS="$MAX_SECS" PIN="$PIN" SCHED="$SCHED")bash benches/register/run.sh\`"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); run time $(elapsed) s; load average at the start $LOAD_AT_START"
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr), loopback only; CPU pinning: $([[ "$PIN" == 1 ]] && echo 'server on CPU 0, SIPp on CPU 1' || echo 'none (server and SIPp share both CPUs)'); server and SIPp $([[ "$SCHED" == rr ]] && echo 'under SCHED_RR priority 10 (`chrt -r 10`)' || echo "normally scheduled at nice $NICE")"
  echo "- Switchboard: git $git_rev at the start; binary \`$(realpath --relative-to="$ROOT" "$SB_BIN")\` built $(date -u -r "$SB_BIN" '+%Y-%m-%d %H:%M UTC'); log level warn; challenges $SB_ALGORITHMS"
  echo "- Kamailio: $(kamailio -v 2>/dev/null | awk '/^version:/ {print $2, $3; exit}') (Debian package $(dpkg-query -W -f='${Version}' kamailio 2>/dev/null)); $KAM_CHILDREN UDP children; \`benches/register/kamailio.cfg\`"
  echo "- SIPp: $(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[^ ]*' | head -n1 | sed 's/\.$//'); \`interop-tests/sipp/register.xml\`; retransmissions on (T1 500 ms); $USERS users; $STEP_SECS s per step"
  echo
  echo "| server | highest clean rate | achieved | server CPU there | CPU ms per 1000 registrations | bytes per binding, PSS (RSS) | memory at the end, PSS (RSS) | stopped because |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in $SERVERS; do
    extra=""
    [[ "$s" != kamailio ]] || extra="; Kamailio's own count of its shared memory: ${R[$s.bpb_shm]}"
    echo "| $s | ${R[$s.best]}/s | ${R[$s.best_achieved]}/s | ${R[$s.best_cpu]} of a core | ${R[$s.best_cpu_per_k]} | ${R[$s.bpb_pss]} (${R[$s.bpb_rss]})$extra | $(( R[$s.pss_end] / 1024 )) MiB ($(( R[$s.rss_end] / 1024 )) MiB) | ${R[$s.stop]} |"
  done
  echo
  echo "Memory in kB, summed over the server's processes, PSS / RSS: "
  for s in $SERVERS; do
    echo "$s idle ${R[$s.pss_idle]} / ${R[$s.rss_idle]}; after the warm-up ${R[$s.pss1]} / ${R[$s.rss1]}; with $USERS bindings (${R[$s.bindings]} counted by the server) ${R[$s.pss2]} / ${R[$s.rss2]}; after the last step ${R[$s.pss_end]} / ${R[$s.rss_end]} (${R[$s.bindings_end]} bindings)."
  done
  echo
  echo "Every step. A registration is REGISTER, 401, REGISTER with credentials, 200. Server CPU is user + system time of all the server's threads and processes from ${STEADY_FROM} s into the step to its end (steady state), in % of one core, and per 1,000 registrations completed in that window (\* = whole step). Kernel drops: UdpRcvbufErrors of the whole host during the step."
  echo
  echo "| server | target/s | achieved/s | successful | failed | retransmissions | kernel drops | server CPU | CPU ms per 1000 | SIPp CPU | verdict |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
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
