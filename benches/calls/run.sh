#!/usr/bin/env bash
# Calls benchmark (issue 6): SIPp UAC -> server -> SIPp UAS over UDP on
# loopback, Switchboard (B2BUA, trunk to trunk, RTP relayed through its rooms)
# and Kamailio 5.6 (stateful proxy: tm + record-route) one after the other.
#
#   bash benches/calls/run.sh                 # results on stdout
#   WRITE_DOCS=1 bash benches/calls/run.sh    # ... and into docs/benchmarks.md
#
# Not a test: nothing here runs under `cargo test`. Needs root (the packet
# counter adds nftables counters), Debian packages
# sip-tester (SIPp 3.6), kamailio (5.6) and nftables, python3, curl, and
# target/release/switchboard (built with `cargo build --release` when
# missing). Every process it starts is killed by PID on exit; Kamailio runs in
# the foreground, never as a service. About 12 minutes with the defaults.
#
# Part 1, signalling (both servers, same rates): benches/calls/uac.xml (INVITE
#   with a PCMU offer, 200, ACK, HOLD_MS of hold, BYE, 200) against
#   benches/calls/uas.xml (answers at once) at RATES calls/s, STEP_SECS each,
#   retransmissions on (T1 500 ms), until the first step with a failed call
#   (at either SIPp), a retransmission (either SIPp), or an achieved rate below
#   90% of the target. No RTP is sent, but Switchboard still opens its two RTP
#   legs and a room per call. Server CPU from STEADY_FROM s into a step to its
#   end, per 1,000 calls completed in that window.
# Part 2, media (Switchboard only; Kamailio does not touch RTP): for each N in
#   MEDIA_CALLS, a fresh server, N calls set up at RAMP_RATE/s, each playing a
#   PCMU packet every 20 ms from the caller (uac_rtp.xml, SIPp's rtp_stream),
#   echoed by the callee (SIPp -rtp_echo): every packet crosses Switchboard
#   twice, so a call is 100 packets/s in and 100 out. Once all N are up,
#   server CPU over MEDIA_SECS s / N = CPU per concurrent call; (RSS then -
#   RSS idle) / N = memory per call. Every RTP packet on each hop is counted
#   on lo (rtpcount.py, nftables counters): caller -> Switchboard, Switchboard -> callee, callee
#   echo -> Switchboard, Switchboard -> caller.
#
# Settings (environment, defaults below): RATES STEP_SECS STEADY_FROM HOLD_MS
# SERVERS KAM_CHILDREN KAM_SHM_MB SB_BIN WRITE_DOCS MAX_SECS MEDIA_CALLS RAMP_RATE
# MEDIA_SECS RTP_PORTS CDR MEDIA_THREADS COALESCE_US THREAD_FILL SCHED NICE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$ROOT/benches/calls"

RATES="${RATES-500 1000 1250 1500 2000 2500 3000}"   # RATES="": media only
STEP_SECS="${STEP_SECS:-40}"
STEADY_FROM="${STEADY_FROM:-33}"  # CPU is measured from here to the end of a step
HOLD_MS="${HOLD_MS:-1000}"        # hold of a signalling-only call
SERVERS="${SERVERS:-switchboard kamailio}"
KAM_CHILDREN="${KAM_CHILDREN:-4}"
# Kamailio's shared memory, MiB: tm keeps each transaction a few seconds after
# its final answer (UDP wait timer), ~150-200 MiB at 1,500 calls/s; 256 MiB ran
# out at 2,000/s ("could not allocate shared memory").
KAM_SHM_MB="${KAM_SHM_MB:-1024}"
SB_BIN="${SB_BIN:-$ROOT/target/release/switchboard}"
WRITE_DOCS="${WRITE_DOCS:-0}"
MAX_SECS="${MAX_SECS:-900}"       # no new signalling step starts after this many seconds
MEDIA_CALLS="${MEDIA_CALLS-100 200 400}"   # MEDIA_CALLS="": signalling only
RAMP_RATE="${RAMP_RATE:-50}"      # calls/s while media calls are set up
MEDIA_SECS="${MEDIA_SECS:-20}"    # measured window with all media calls up
RTP_PORTS="${RTP_PORTS:-30000-49999}"
CDR="${CDR:-true}"                # Switchboard writes cdr.jsonl (true) or not
MEDIA_THREADS="${MEDIA_THREADS:-0}"   # Switchboard's media.threads (0: one per core)
COALESCE_US="${COALESCE_US:-1000}"    # Switchboard's media.coalesce_us
THREAD_FILL="${THREAD_FILL:-256}"     # Switchboard's media.thread_fill_rooms (0: spread rooms evenly)
SCHED="${SCHED:-$([[ "$(id -u)" == 0 ]] && command -v chrt >/dev/null && echo rr || echo other)}"
NICE="${NICE:-0}"

SIP_PORT_SB=25160
ADMIN_PORT_SB=25190
SIP_PORT_KAM=25170
UAC_PORT=26160
UAC_MP=26162
UAS_PORT=26170
UAS_MP=26172
NUMBER=+15550001001
CTL_SOCKET="/tmp/kamailio-bench-ctl.$$"
CLK_TCK="$(getconf CLK_TCK)"
STARTED="$(date +%s)"

die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
elapsed() { echo $(( $(date +%s) - STARTED )); }
now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

[[ "$(id -u)" == 0 || -z "$MEDIA_CALLS" ]] || die "the media part needs root (packet counting); MEDIA_CALLS= skips it"
tools=(sipp curl awk ss python3)
# Kamailio runs only in the signalling part.
[[ -z "$RATES" || " $SERVERS " != *" kamailio "* ]] || tools+=(kamailio)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y sip-tester kamailio curl python3)"
done
[[ -z "$MEDIA_CALLS" ]] || command -v nft >/dev/null 2>&1 || die "nft not found (apt-get install -y nftables; the media part counts packets with it)"
((STEP_SECS > STEADY_FROM)) || die "STEP_SECS ($STEP_SECS) must be longer than STEADY_FROM ($STEADY_FROM)"

if [[ " $SERVERS " == *" switchboard "* && ! -x "$SB_BIN" ]]; then
  log "building $SB_BIN (cargo build --release)"
  (cd "$ROOT" && nice cargo build --release) || die "release build failed"
fi
newest_src="$([[ ! -x "$SB_BIN" ]] || find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -type f -newer "$SB_BIN" 2>/dev/null | head -n1 || true)"
[[ -z "$newest_src" ]] || log "warning: $newest_src is newer than $SB_BIN (stale binary?)"
git_rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || git_rev="$git_rev + uncommitted changes in src/"
[[ -z "$newest_src" ]] || git_rev="$git_rev (binary older than $(realpath --relative-to="$ROOT" "$newest_src"))"

LOAD_AT_START="$(loadavg)"
WORK="$(mktemp -d /tmp/callbench.XXXXXX)"
log "work directory (logs, SIPp statistics): $WORK"

# ---------------------------------------------------------------------------
# Cleanup: every process started here is recorded and killed by PID.
# ---------------------------------------------------------------------------
SERVER_PID=""
UAC_PID=""   # subshells running SIPp (to read its CPU time); SIPp is their child
UAS_PID=""
COUNT_PID=""
kill_pids() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
children_of() { [[ -z "$1" ]] || ps -o pid= --ppid "$1" 2>/dev/null | tr '\n' ' '; }
stop_sipps() {
  # shellcheck disable=SC2046
  kill_pids $(children_of "$UAC_PID") $(children_of "$UAS_PID") $UAC_PID $UAS_PID
  UAC_PID="" UAS_PID=""
}
cleanup() {
  stop_sipps
  # shellcheck disable=SC2086
  kill_pids $COUNT_PID $SERVER_PID
  COUNT_PID="" SERVER_PID=""
  rm -f "$CTL_SOCKET"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Switchboard's configuration: trunk "in" is the SIPp caller (recognised by
# its address and port, no authentication), trunk "out" the SIPp callee
# (PCMU only, so the room relays without transcoding).
# ---------------------------------------------------------------------------
cat >"$WORK/switchboard.yaml" <<EOF
# Generated by benches/calls/run.sh
listen:
  udp: ['127.0.0.1:$SIP_PORT_SB']
  tcp: []
  tls: []
  https: []
  http: []
  admin: ['127.0.0.1:$ADMIN_PORT_SB']
log:
  level: warn
turn:
  enabled: false
trunks:
  - name: in
    host: 127.0.0.1
    port: $UAC_PORT
    codecs: [PCMU]
  - name: out
    host: 127.0.0.1
    port: $UAS_PORT
    codecs: [PCMU]
dialplan:
  file: plan.yaml
  watch: false
media:
  bind: 127.0.0.1
  rtp_ports: '$RTP_PORTS'
  threads: $MEDIA_THREADS
  coalesce_us: $COALESCE_US
  thread_fill_rooms: $THREAD_FILL
cdr:
  enabled: $CDR
EOF
cat >"$WORK/plan.yaml" <<EOF
rules:
  - name: bench
    match: { source: ["trunk:in"] }
    action: { trunk: { trunks: [out] } }
EOF

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
cpu_ticks() {
  local total=0 pid v
  for pid in $(server_pids); do
    v="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
mem_kb() { # "PSS_KB RSS_KB", summed over the server's processes
  local pss=0 rss=0 pid v
  for pid in $(server_pids); do
    v="$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)"; pss=$((pss + ${v:-0}))
    v="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"; rss=$((rss + ${v:-0}))
  done
  echo "$pss $rss"
}
udp_rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp; }
sb_metric() { curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/metrics" 2>/dev/null | awk -v m="$1" '$1 == m {print $2; f = 1} END { if (!f) print 0 }'; }

if [[ "$SCHED" == rr ]]; then server_cmd=(chrt -r 10); sipp_cmd=(chrt -r 10)
else server_cmd=(nice -n "$NICE"); sipp_cmd=(nice -n "$NICE"); fi

start_server() {
  case "$1" in
    switchboard)
      (cd "$WORK" && exec "${server_cmd[@]}" "$SB_BIN" serve --config "$WORK/switchboard.yaml") >>"$WORK/switchboard.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$ADMIN_PORT_SB/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      die "switchboard did not start; see $WORK/switchboard.log" ;;
    kamailio)
      sed "s|unix:/tmp/kamailio-bench-ctl|unix:$CTL_SOCKET|" "$BENCH/kamailio.cfg" >"$WORK/kamailio.cfg"
      "${server_cmd[@]}" kamailio -f "$WORK/kamailio.cfg" -DD -E -m "$KAM_SHM_MB" -M 16 \
        -A "BENCH_LISTEN=udp:127.0.0.1:$SIP_PORT_KAM" -A "BENCH_CHILDREN=$KAM_CHILDREN" \
        -A "BENCH_CALLEE=\"sip:127.0.0.1:$UAS_PORT\"" \
        >>"$WORK/kamailio.log" 2>&1 &
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

# "OK FAILED RETRANS" from the last line of a SIPp -trace_stat file.
sipp_totals() {
  [[ -s "$1" ]] || { echo "0 -1 0"; return; }
  awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next } { last = $0 }
    END { split(last, f, ";"); print f[c["SuccessfulCall(C)"]] + 0, f[c["FailedCall(C)"]] + 0, f[c["Retransmissions(C)"]] + 0 }' "$1"
}
# Mean of a named response-time measure over the run ("setup": INVITE to 200),
# ms (SIPp prints HH:MM:SS:microseconds, at a resolution of 1 ms).
sipp_rtd() {
  [[ -s "$1" ]] || { echo "-"; return; }
  awk -F';' -v n="ResponseTime$2(C)" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next } { last = $0 }
    END { split(last, f, ";"); v = f[c[n]]; split(v, hms, ":"); if (c[n]) printf "%.1f", (hms[1] * 3600 + hms[2] * 60 + hms[3] + hms[4] / 1e6) * 1000; else print "-" }' "$1"
}
sipp_cpu() { # seconds of user + system CPU from the `times` line of a subshell
  tail -n1 "$1" 2>/dev/null | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%.2f", s }'
}

# start_uas LABEL CALLS [extra SIPp args]: the callee, in the background.
start_uas() {
  local label="$1" calls="$2"; shift 2
  rm -f "$WORK/uas-$label".*
  (
    cd "$WORK"
    "${sipp_cmd[@]}" sipp -sf "$BENCH/uas.xml" -t u1 -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$UAS_MP" \
      -m "$calls" -buff_size 4194304 -trace_stat -stf "$WORK/uas-$label.stat.csv" -fd 1 \
      -trace_err -error_file "$WORK/uas-$label.errors.log" -timeout "$((STEP_SECS * 2 + 60))" -nostdin "$@" \
      </dev/null >/dev/null 2>"$WORK/uas-$label.stderr" || true
    times
  ) >"$WORK/uas-$label.times" &
  UAS_PID=$!
  for _ in $(seq 50); do ss -uln "sport = :$UAS_PORT" | grep -q ":$UAS_PORT" && return 0; sleep 0.1; done
  die "SIPp (callee) did not start; see $WORK/uas-$label.stderr"
}
# start_uac SERVER LABEL SCENARIO RATE CALLS LIMIT HOLD_MS: the caller, in the background.
start_uac() {
  local server="$1" label="$2" scenario="$3" rate="$4" calls="$5" limit="$6" hold="$7"
  rm -f "$WORK/uac-$label".*
  (
    cd "$WORK"
    "${sipp_cmd[@]}" sipp -sf "$BENCH/$scenario" -s "$NUMBER" -t u1 -i 127.0.0.1 -mi 127.0.0.1 -p "$UAC_PORT" -mp "$UAC_MP" \
      -r "$rate" -m "$calls" -l "$limit" -d "$hold" -buff_size 4194304 \
      -trace_stat -stf "$WORK/uac-$label.stat.csv" -fd 1 -trace_err -error_file "$WORK/uac-$label.errors.log" \
      -timeout "$((STEP_SECS * 2 + 30))" -nostdin "127.0.0.1:$(server_port "$server")" \
      </dev/null >/dev/null 2>"$WORK/uac-$label.stderr" || true
    times
  ) >"$WORK/uac-$label.times" &
  UAC_PID=$!
}
# Waits for the callee to finish its calls (it exits after -m calls), at most $1 s.
wait_uas() {
  local deadline=$(( $(date +%s) + $1 ))
  while kill -0 "$UAS_PID" 2>/dev/null && (( $(date +%s) < deadline )); do sleep 0.2; done
  if kill -0 "$UAS_PID" 2>/dev/null; then
    # shellcheck disable=SC2046
    kill_pids $(children_of "$UAS_PID")
  fi
  wait "$UAS_PID" 2>/dev/null || true
  UAS_PID=""
}

# ---------------------------------------------------------------------------
# Part 1: signalling, one server.
# ---------------------------------------------------------------------------
declare -A R
STEP_ROWS=()
MEDIA_ROWS=()

bench_server() {
  local server="$1" rate calls limit t0 t1 tm cm c1 d0 d1 load
  local ok fail re uok ufail ure achieved win_rate cpu_pct cpu_per_k uac_pct uas_pct verdict stop="" setup bye mem_mid warn0 warn1
  log "== $server: signalling"
  start_server "$server"
  sleep 1
  read -r R[$server.pss_idle] R[$server.rss_idle] <<<"$(mem_kb)"
  R[$server.best]=0; R[$server.best_achieved]=0; R[$server.best_cpu]="-"; R[$server.best_cpu_per_k]="-"
  for rate in $RATES; do
    if (( $(elapsed) > MAX_SECS )); then stop="time budget (MAX_SECS=$MAX_SECS) used up"; break; fi
    calls=$((rate * STEP_SECS))
    limit=$(( rate * (HOLD_MS / 1000 + 4) + 100 ))
    sleep 2
    load="$(loadavg)"
    warn0="$(wc -l <"$WORK/$server.log")"
    start_uas "$server-r$rate" "$calls"
    d0="$(udp_rcvbuf_errors)"; t0="$(now)"
    start_uac "$server" "$server-r$rate" uac.xml "$rate" "$calls" "$limit" "$HOLD_MS"
    cm="" tm="" mem_mid="- -"
    while kill -0 "$UAC_PID" 2>/dev/null && awk -v a="$t0" -v b="$(now)" -v s="$STEADY_FROM" 'BEGIN { exit !(b - a < s) }'; do sleep 0.2; done
    if kill -0 "$UAC_PID" 2>/dev/null; then cm="$(cpu_ticks)"; tm="$(now)"; mem_mid="$(mem_kb)"; fi
    wait "$UAC_PID" 2>/dev/null || true
    UAC_PID=""
    t1="$(now)"; c1="$(cpu_ticks)"
    wait_uas 10
    d1="$(udp_rcvbuf_errors)"
    warn1="$(wc -l <"$WORK/$server.log")"
    read -r ok fail re <<<"$(sipp_totals "$WORK/uac-$server-r$rate.stat.csv")"
    read -r uok ufail ure <<<"$(sipp_totals "$WORK/uas-$server-r$rate.stat.csv")"
    setup="$(sipp_rtd "$WORK/uac-$server-r$rate.stat.csv" setup)"
    bye="$(sipp_rtd "$WORK/uac-$server-r$rate.stat.csv" bye)"
    local wall; wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    achieved="$(awk -v n="$ok" -v w="$wall" -v h="$HOLD_MS" 'BEGIN { printf "%.0f", n / (w - h / 1000) }')"
    uac_pct="$(awk -v c="$(sipp_cpu "$WORK/uac-$server-r$rate.times")" -v w="$wall" 'BEGIN { printf "%.0f", 100 * c / w }')"
    uas_pct="$(awk -v c="$(sipp_cpu "$WORK/uas-$server-r$rate.times")" -v w="$wall" 'BEGIN { printf "%.0f", 100 * c / w }')"
    win_rate=""
    if [[ -n "$tm" ]]; then
      # Calls completed per second from tm to the end (SIPp's per-second statistics).
      win_rate="$(awk -F';' -v tm="$tm" '
        NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        { n = split($c["CurrentTime"], t, "\t"); ts = t[n] + 0; ok = $c["SuccessfulCall(C)"] + 0
          if (!have && ts >= tm) { have = 1; t0 = ts; o0 = ok }
          tl = ts; ol = ok }
        END { if (have && tl > t0 + 1) printf "%.0f", (ol - o0) / (tl - t0) }' "$WORK/uac-$server-r$rate.stat.csv")"
    fi
    if [[ -n "$win_rate" && "$win_rate" != 0 ]]; then
      cpu_pct="$(awk -v a="$cm" -v b="$c1" -v ta="$tm" -v tb="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / (tb - ta) }')"
      cpu_per_k="$(awk -v a="$cm" -v b="$c1" -v ta="$tm" -v tb="$t1" -v hz="$CLK_TCK" -v r="$win_rate" 'BEGIN { printf "%.0f", 1000 * (b - a) / hz / (tb - ta) / r * 1000 }')"
    else
      cpu_pct="-"; cpu_per_k="-"
    fi
    verdict=clean
    if ((fail != 0 || ufail != 0)); then verdict=FAILED; stop="failed calls at $rate/s"
    elif ((re > 0 || ure > 0)); then verdict=RETRANS; stop="retransmissions at $rate/s"
    elif ((achieved * 10 < rate * 9)); then verdict=SLOW; stop="achieved only $achieved/s of $rate/s"
    fi
    read -r mp mr <<<"$mem_mid"
    STEP_ROWS+=("| $server | $rate | $achieved | $ok | $fail / $ufail | $re / $ure | $((d1 - d0)) | $setup / $bye | $cpu_pct% | $cpu_per_k | $((mp / 1024)) / $((mr / 1024)) | $uac_pct% / $uas_pct% | $((warn1 - warn0)) | $load | $verdict |")
    log "$server: $rate/s: achieved $achieved/s, ok=$ok failed=$fail/$ufail retrans=$re/$ure kernel-drops=$((d1 - d0)) setup=${setup}ms bye=${bye}ms; server CPU $cpu_pct% ($cpu_per_k ms per 1000 calls); SIPp CPU $uac_pct%/$uas_pct%; log lines $((warn1 - warn0)); load $load -> $verdict"
    [[ "$verdict" == clean ]] || break
    R[$server.best]="$rate"; R[$server.best_achieved]="$achieved"; R[$server.best_cpu]="$cpu_pct%"; R[$server.best_cpu_per_k]="$cpu_per_k"
  done
  [[ -n "$RATES" ]] || stop="no rate steps"
  R[$server.stop]="${stop:-every rate in RATES was clean}"
  read -r R[$server.pss_end] R[$server.rss_end] <<<"$(mem_kb)"
  cleanup
}

# ---------------------------------------------------------------------------
# Part 2: media through Switchboard, N concurrent calls.
# ---------------------------------------------------------------------------
bench_media() {
  local n="$1" ramp hold_s hold_ms packets t0 c0 c1 ta tb idle_pct pss0 rss0 pss1 rss1 calls_up rx1 tx1 skipped load
  local a1 a2 a3 a4 d0 d1 ok fail re uok ufail ure
  ramp="$(awk -v n="$n" -v r="$RAMP_RATE" 'BEGIN { printf "%.2f", n / r }')"
  hold_s="$(awk -v r="$ramp" -v m="$MEDIA_SECS" 'BEGIN { printf "%d", r + 3 + m + 2.5 }')"
  hold_ms=$((hold_s * 1000))
  packets=$(( (hold_s - 1) * 50 ))   # the tone ends 1 s before the BYE
  python3 "$BENCH/pcap.py" "$WORK/pcmu.ulaw" "$packets"
  log "== switchboard: media, $n calls (set up at $RAMP_RATE/s over ${ramp}s, ${hold_s}s each, $packets packets per call each way)"
  start_server switchboard
  sleep 2
  read -r pss0 rss0 <<<"$(mem_kb)"
  c0="$(cpu_ticks)"; ta="$(now)"; sleep 5; c1="$(cpu_ticks)"; tb="$(now)"
  idle_pct="$(awk -v a="$c0" -v b="$c1" -v ta="$ta" -v tb="$tb" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", 100 * (b - a) / hz / (tb - ta) }')"
  python3 "$BENCH/rtpcount.py" "src:$UAC_MP" "dst:$UAS_MP" "src:$UAS_MP" "dst:$UAC_MP" >"$WORK/count-$n.out" 2>&1 &
  COUNT_PID=$!
  for _ in $(seq 50); do grep -q ready "$WORK/count-$n.out" && break; sleep 0.1; done
  grep -q ready "$WORK/count-$n.out" || die "rtpcount.py did not start; see $WORK/count-$n.out"
  load="$(loadavg)"
  start_uas "media-$n" "$n" -rtp_echo
  d0="$(udp_rcvbuf_errors)"; t0="$(now)"
  start_uac switchboard "media-$n" uac_rtp.xml "$RAMP_RATE" "$n" "$((n + 10))" "$hold_ms"
  # Window: from 3 s after the last call was set up, MEDIA_SECS long.
  while awk -v a="$t0" -v b="$(now)" -v s="$ramp" 'BEGIN { exit !(b - a < s + 3) }'; do sleep 0.1; done
  c0="$(cpu_ticks)"; ta="$(now)"
  sleep "$((MEDIA_SECS / 2))"
  read -r pss1 rss1 <<<"$(mem_kb)"
  calls_up="$(sb_metric switchboard_b2bua_calls)"
  sleep "$((MEDIA_SECS - MEDIA_SECS / 2))"
  c1="$(cpu_ticks)"; tb="$(now)"
  wait "$UAC_PID" 2>/dev/null || true
  UAC_PID=""
  wait_uas 15
  sleep 1
  # The media counters are added when a leg closes: totals of the whole run.
  rx1="$(sb_metric switchboard_media_packets_received_total)"; tx1="$(sb_metric switchboard_media_packets_sent_total)"
  skipped="$(sb_metric switchboard_media_ticks_skipped_total)"
  # shellcheck disable=SC2086
  kill_pids $COUNT_PID; COUNT_PID=""
  d1="$(udp_rcvbuf_errors)"
  read -r ok fail re <<<"$(sipp_totals "$WORK/uac-media-$n.stat.csv")"
  read -r uok ufail ure <<<"$(sipp_totals "$WORK/uas-media-$n.stat.csv")"
  a1="$(awk -v r="src:$UAC_MP" '$1 == r {print $2}' "$WORK/count-$n.out")"
  a2="$(awk -v r="dst:$UAS_MP" '$1 == r {print $2}' "$WORK/count-$n.out")"
  a3="$(awk -v r="src:$UAS_MP" '$1 == r {print $2}' "$WORK/count-$n.out")"
  a4="$(awk -v r="dst:$UAC_MP" '$1 == r {print $2}' "$WORK/count-$n.out")"
  local cpu_pct per_call per_call_net kb_per_call lost_sb lost_pct
  cpu_pct="$(awk -v a="$c0" -v b="$c1" -v ta="$ta" -v tb="$tb" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (tb - ta) }')"
  per_call="$(awk -v p="$cpu_pct" -v n="$n" 'BEGIN { printf "%.3f", p / n }')"
  per_call_net="$(awk -v p="$cpu_pct" -v i="$idle_pct" -v n="$n" 'BEGIN { printf "%.3f", (p - i) / n }')"
  kb_per_call="$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }')"
  # Switchboard's own loss: caller packets that did not reach the callee, plus
  # echoed packets that did not reach the caller.
  lost_sb=$(( (a1 - a2) + (a3 - a4) ))
  lost_pct="$(awk -v l="$lost_sb" -v a="$a1" -v b="$a3" 'BEGIN { if (a + b > 0) printf "%.4f", 100 * l / (a + b); else print "-" }')"
  MEDIA_ROWS+=("| $n | $calls_up | $ok / $fail / $re | $cpu_pct% (idle $idle_pct%) | $per_call% ($per_call_net%) | $rx1 / $tx1 | $skipped | $kb_per_call KB ($((rss0 / 1024)) → $((rss1 / 1024)) MiB) | $((n * packets)) | $a1 | $a2 | $a3 | $a4 | $lost_sb ($lost_pct%) | $((d1 - d0)) | $load |")
  log "media $n: calls up $calls_up; caller ok=$ok failed=$fail retrans=$re; callee ok=$uok failed=$ufail; CPU $cpu_pct% (idle $idle_pct%) = $per_call% per call ($per_call_net% net of idle); media packets received/sent (metrics) $rx1/$tx1, ticks skipped $skipped; RSS $rss0 -> $rss1 kB = $kb_per_call KB per call; packets: expected $((n * packets)) caller sent $a1, to callee $a2, echoed $a3, to caller $a4; lost by switchboard $lost_sb ($lost_pct%); kernel drops $((d1 - d0)); load $load"
  cleanup
}

for server in $SERVERS; do
  [[ -z "$RATES" ]] || bench_server "$server"
done
if [[ " $SERVERS " == *" switchboard "* ]]; then
  for n in $MEDIA_CALLS; do bench_media "$n"; done
fi
LOAD_AT_END="$(loadavg)"

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
report="$WORK/report.md"
{
  echo "Command: \`$(printf '%s ' WRITE_DOCS="$WRITE_DOCS" RATES=\""$RATES"\" STEP_SECS="$STEP_SECS" STEADY_FROM="$STEADY_FROM" HOLD_MS="$HOLD_MS" KAM_CHILDREN="$KAM_CHILDREN" KAM_SHM_MB="$KAM_SHM_MB" MAX_SECS="$MAX_SECS" MEDIA_CALLS=\""$MEDIA_CALLS"\" RAMP_RATE="$RAMP_RATE" MEDIA_SECS="$MEDIA_SECS" CDR="$CDR" MEDIA_THREADS="$MEDIA_THREADS" COALESCE_US="$COALESCE_US" THREAD_FILL="$THREAD_FILL" SCHED="$SCHED")bash benches/calls/run.sh\`"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); run time $(elapsed) s; load average at the start $LOAD_AT_START, at the end $LOAD_AT_END"
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr), loopback only; servers and SIPp $([[ "$SCHED" == rr ]] && echo 'under SCHED_RR priority 10 (`chrt -r 10`)' || echo "normally scheduled at nice $NICE")"
  echo "- Switchboard: git $git_rev at the start; binary \`$(realpath --relative-to="$ROOT" "$SB_BIN")\` built $(date -u -r "$SB_BIN" '+%Y-%m-%d %H:%M UTC'); log level warn; CDRs $([[ "$CDR" == true ]] && echo on || echo off); trunk to trunk, PCMU both legs (relay, no transcoding)"
  echo "- Kamailio: $(kamailio -v 2>/dev/null | awk '/^version:/ {print $2, $3; exit}') (Debian package $(dpkg-query -W -f='${Version}' kamailio 2>/dev/null)); $KAM_CHILDREN UDP children, $KAM_SHM_MB MiB shared memory; \`benches/calls/kamailio.cfg\` (tm, record-route, no media)"
  echo "- SIPp: $(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[^ ]*' | head -n1 | sed 's/\.$//'); \`benches/calls/uac.xml\` → server → \`benches/calls/uas.xml\`; retransmissions on (T1 500 ms); hold $HOLD_MS ms; $STEP_SECS s per step"
  if [[ -n "$RATES" ]]; then
    echo
    echo "| server | highest clean rate | achieved | server CPU there | CPU ms per 1000 calls | memory idle → end, PSS (RSS) | stopped because |"
    echo "|---|---|---|---|---|---|---|"
    for s in $SERVERS; do
      echo "| $s | ${R[$s.best]}/s | ${R[$s.best_achieved]}/s | ${R[$s.best_cpu]} of a core | ${R[$s.best_cpu_per_k]} | $(( R[$s.pss_idle] / 1024 )) → $(( R[$s.pss_end] / 1024 )) MiB ($(( R[$s.rss_idle] / 1024 )) → $(( R[$s.rss_end] / 1024 )) MiB) | ${R[$s.stop]} |"
    done
    echo
    echo "Every step. A call is INVITE, 200, ACK, ${HOLD_MS} ms, BYE, 200 (plus the server's 100). Failed and retransmissions: caller / callee SIPp. Setup: INVITE to 200, BYE: BYE to 200, mean ms. Server CPU: all its threads and processes from ${STEADY_FROM} s into the step to its end, % of one core and per 1,000 calls completed in that window. Memory: the server's PSS / RSS in MiB at ${STEADY_FROM} s. Kernel drops: UdpRcvbufErrors of the whole host. Log lines: what the server logged at warn during the step."
    echo
    echo "| server | target/s | achieved/s | successful | failed | retransmissions | kernel drops | setup / BYE ms | server CPU | CPU ms per 1000 calls | PSS / RSS MiB | SIPp CPU caller / callee | log lines | load average | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${STEP_ROWS[@]}"
  fi
  if ((${#MEDIA_ROWS[@]})); then
    echo
    echo "Media through Switchboard (Kamailio does not relay RTP). N calls set up at $RAMP_RATE/s; each caller plays a PCMU packet every 20 ms, the callee echoes it, so every packet crosses Switchboard twice (100 packets/s in and 100 out per call). CPU: the whole process over ${MEDIA_SECS} s with all N calls up, % of one core (its idle CPU measured before the calls in brackets), per call (net of idle in brackets). Packets counted on lo: caller → Switchboard, Switchboard → callee, callee's echo → Switchboard, Switchboard → caller; Switchboard's loss = (1) − (2) + (3) − (4)."
    echo
    echo "| calls | calls up (metric) | caller ok / failed / retrans | server CPU | CPU per call | packets received / sent (metrics, whole run) | room ticks skipped | RSS per call (idle → N calls) | expected per direction | (1) caller sent | (2) to callee | (3) echoed | (4) to caller | lost by Switchboard | kernel drops | load average |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${MEDIA_ROWS[@]}"
  fi
} >"$report"

echo
cat "$report"
echo
log "logs and SIPp statistics: $WORK"

if [[ "$WRITE_DOCS" == 1 ]]; then
  docs="$ROOT/docs/benchmarks.md"
  begin='<!-- calls-results:begin (written by benches/calls/run.sh) -->'
  end='<!-- calls-results:end -->'
  [[ -f "$docs" ]] && grep -qF "$begin" "$docs" || die "$docs has no '$begin' marker"
  awk -v b="$begin" -v e="$end" -v r="$report" '
    $0 == b { print; while ((getline line < r) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$docs" >"$docs.tmp" && mv "$docs.tmp" "$docs"
  log "results written into $docs"
fi
