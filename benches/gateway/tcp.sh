#!/usr/bin/env bash
# TCP load benchmark of the Challenge Gateway (issue 3) against the same backend reached directly,
# through NGINX stream and through HAProxy in TCP mode, in one run with the targets interleaved.
#
#   benches/gateway/tcp.sh                       # defaults: SECS=10 ROUNDS=3
#
# Same method as run.sh (docs/benchmarks.md): the proxy under test alone on core PROXY_CPU with one
# worker; the load generator (gw_tcp_load), the backend and Redis on core LOAD_CPU. Per round and
# target:
#   bulk      BULK_CONNS connections stream zeros to a discarding backend for SECS:
#             Gbit/s and the proxy's CPU seconds per GiB relayed;
#   connrate  CONCURRENCY loops of connect, (token line + grant), ping/pong, close, for SECS:
#             connections/s, the proxy's CPU µs per connection, p50/p99 of one connection.
# Then, gateway only: resident memory (VmRSS) before, while IDLE_SESSIONS authenticated idle
# sessions are held open (the goal is at most 64 MiB above the baseline with 10,000), and after
# they closed. Each session costs the gateway two descriptors: IDLE_SESSIONS is lowered to what
# the open-file limit allows (with a warning) when it cannot be raised far enough.
# MODES picks the measurements (`MODES=idle`: the memory only, from a fresh gateway).
# MODES=profile (alone): the gateway under valgrind's callgrind instead, WARMUP_SECS of connrate
# load, counters zeroed, PROFILE_SECS more; prints instructions per connection (every thread of
# the process), by owner of the code and by function (profile_summary.py), and Redis commands per
# connection (INFO commandstats of the private Redis across the window). Instruction counts do
# not depend on what else runs on the machine: use them to compare code changes.
# Reported: medians over rounds, as ratios to NGINX (bulk) and HAProxy (connection rate).
#
# Settings (environment): SECS=10 ROUNDS=3 MODES="bulk connrate idle" TARGETS="direct nginx haproxy gw" BULK_CONNS=4
# CONCURRENCY=32 IDLE_SESSIONS=10000 IDLE_SECS=5 PROXY_CPU=0 LOAD_CPU=1 PORT_BASE=19080 INSTALL=1
# BUILD=1 KEEP_WORKDIR=0 RESULTS_OUT=/tmp/fctf-gwbench-tcp-results.tsv
# Profile mode: WARMUP_SECS=3 PROFILE_SECS=10 PROFILE_CONCURRENCY=8 TOP=40 PROFILE_OUT= (copy of
# the callgrind output).
set -euo pipefail

SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-bulk connrate idle}
TARGETS=${TARGETS:-direct nginx haproxy gw}
BULK_CONNS=${BULK_CONNS:-4}
CONCURRENCY=${CONCURRENCY:-32}
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
IDLE_SECS=${IDLE_SECS:-5}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-19080}
INSTALL=${INSTALL:-1}
INSTALL_OHA=0
BUILD=${BUILD:-1}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
RESULTS_OUT=${RESULTS_OUT:-/tmp/fctf-gwbench-tcp-results.tsv}
WARMUP_SECS=${WARMUP_SECS:-3}
PROFILE_SECS=${PROFILE_SECS:-10}
PROFILE_CONCURRENCY=${PROFILE_CONCURRENCY:-8}
TOP=${TOP:-40}
PROFILE_OUT=${PROFILE_OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fctf-gwbench-tcp.XXXXXX)
RESULTS=$WORK/results.tsv
CLK_TCK=$(getconf CLK_TCK)

BACKEND_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
HAPROXY_PORT=$((PORT_BASE + 3))
REDIS_PORT=$((PORT_BASE + 4))
GW_HTTP=$((PORT_BASE + 5)) GW_TCP=$((PORT_BASE + 6)) GW_ADMIN=$((PORT_BASE + 7))
TEAM=7
CHALLENGE=4

# shellcheck source=benches/gateway/common.sh
source "$HERE/common.sh"

declare -A ADDR PROXY_PID
TOKEN=

write_configs() {
    # HAProxy refuses to start when maxconn needs more descriptors (two per connection) than
    # the open-file limit allows.
    local haproxy_maxconn=$((($(ulimit -n) - 100) / 2))
    ((haproxy_maxconn <= 30000)) || haproxy_maxconn=30000
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; multi_accept on; }
stream {
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        proxy_pass 127.0.0.1:$BACKEND_PORT;
        tcp_nodelay on;
    }
}
CONF
    cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn $haproxy_maxconn
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend backend
backend backend
    server s1 127.0.0.1:$BACKEND_PORT
CONF
    head -c 48 /dev/urandom | base64 >"$WORK/token-k1.key"
    head -c 48 /dev/urandom | base64 >"$WORK/signing-s1.key"
    chmod 600 "$WORK/token-k1.key" "$WORK/signing-s1.key"
    # Caps far above the load, so the benchmark measures the path, not a refusal.
    cat >"$WORK/gw.toml" <<CONF
[tokens]
active_kid = "k1"
keys = [{ kid = "k1", secret_file = "$WORK/token-k1.key" }]

[signing]
active_kid = "s1"
keys = [{ kid = "s1", secret_file = "$WORK/signing-s1.key" }]

[store]
backend = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "fctfbench:tcp:"

[gateway]
http_listen = "127.0.0.1:$GW_HTTP"
tcp_listen = "127.0.0.1:$GW_TCP"
admin_listen = "127.0.0.1:$GW_ADMIN"
tcp_attempts_per_sec = 1000000
tcp_attempts_burst = 10000000
tcp_connections_global = 10000000
tcp_connections_per_ip = 10000000
tcp_connections_per_token = 100000
CONF
}

start_servers() {
    local port instance
    for port in "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$REDIS_PORT" "$GW_HTTP" "$GW_TCP" "$GW_ADMIN"; do
        port_free "$port" || die "127.0.0.1:$port is in use (set PORT_BASE)"
    done
    start redis "$LOAD_CPU" TERM redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --protected-mode yes
    wait_port "$REDIS_PORT" "$STARTED_PID" || die "redis did not start"
    start backend "$LOAD_CPU" TERM "$GW_TCP_LOAD" backend --listen "127.0.0.1:$BACKEND_PORT"
    wait_port "$BACKEND_PORT" "$STARTED_PID" || die "backend did not start"
    ADDR[direct]=127.0.0.1:$BACKEND_PORT

    start nginx "$PROXY_CPU" TERM nginx -e stderr -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
    wait_port "$NGINX_PORT" "$STARTED_PID" || die "nginx did not start ($WORK/nginx.log)"
    ADDR[nginx]=127.0.0.1:$NGINX_PORT
    PROXY_PID[nginx]=$STARTED_PID

    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy config refused"
    start haproxy "$PROXY_CPU" TERM haproxy -db -f "$WORK/haproxy.cfg"
    wait_port "$HAPROXY_PORT" "$STARTED_PID" || die "haproxy did not start"
    ADDR[haproxy]=127.0.0.1:$HAPROXY_PORT
    PROXY_PID[haproxy]=$STARTED_PID

    instance=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    TOKEN=$("$FCTF" token mint --key-file "$WORK/token-k1.key" --kid k1 --team "$TEAM" \
        --challenge "$CHALLENGE" --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" --ttl 86400)
    "$FCTF" check-config -c "$WORK/gw.toml" >"$WORK/gw.check" 2>&1 || { cat "$WORK/gw.check" >&2; die "gateway config refused"; }
    taskset -c "$LOAD_CPU" "$GW_SEED" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
        --key-prefix "fctfbench:tcp:" --team "$TEAM" --challenge "$CHALLENGE" \
        --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" >>"$WORK/seed.log" || die "seeding failed"
    if [[ " $MODES " == *" profile "* ]]; then
        # Not pinned: valgrind runs the guest's threads one at a time anyway.
        start gw "0-1" INT valgrind --tool=callgrind --dump-instr=no \
            --callgrind-out-file="$WORK/callgrind.out" "${GATEWAY_CMD[@]}" -c "$WORK/gw.toml"
        for _ in $(seq 120); do
            port_free "$GW_TCP" || break
            kill -0 "$STARTED_PID" 2>/dev/null || die "gateway died ($WORK/gw.log)"
            sleep 0.5
        done
        port_free "$GW_TCP" && die "gateway did not listen in 60 s"
    else
        start gw "$PROXY_CPU" INT "${GATEWAY_CMD[@]}" -c "$WORK/gw.toml"
        wait_port "$GW_TCP" "$STARTED_PID" || die "gateway did not start ($WORK/gw.log)"
    fi
    ADDR[gw]=127.0.0.1:$GW_TCP
    PROXY_PID[gw]=$STARTED_PID
}

token_args() { [[ $1 != gw ]] || printf -- '--token\n%s\n' "$TOKEN"; }

# measure MODE TARGET ROUND: one run; appends "mode target round value units cpu_per busy".
measure() {
    local mode=$1 target=$2 round=$3 pid=${PROXY_PID[$2]:-} out=$WORK/$1-$2-$3.out
    local -a extra
    mapfile -t extra < <(token_args "$target")
    local ticks0=0 ticks1=0 busy0 total0 busy1 total1 r0 e0=0 r1 e1=0
    # The gateway's round trips to Redis (scripts) during the run.
    [[ $target != gw ]] || read -r r0 e0 < <(redis_calls)
    [[ -z $pid ]] || ticks0=$(cpu_ticks "$pid")
    read -r busy0 total0 < <(cpu_jiffies "$PROXY_CPU")
    if [[ $mode == bulk ]]; then
        load "$out" "$GW_TCP_LOAD" bulk --target "${ADDR[$target]}" --conns "$BULK_CONNS" --secs "$SECS" "${extra[@]}"
    else
        load "$out" "$GW_TCP_LOAD" connrate --target "${ADDR[$target]}" --concurrency "$CONCURRENCY" --secs "$SECS" "${extra[@]}"
    fi
    [[ -z $pid ]] || ticks1=$(cpu_ticks "$pid")
    read -r busy1 total1 < <(cpu_jiffies "$PROXY_CPU")
    # Releases wait a little to be gathered: let them land before counting.
    [[ $target != gw ]] || { sleep 0.5; read -r r1 e1 < <(redis_calls); }
    local busy cpu_s line
    busy=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" 'BEGIN { printf "%.3f", t ? b / t : 0 }')
    cpu_s=$(awk -v d="$((ticks1 - ticks0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.4f", d / hz }')
    line=$(grep '^FCTF_TCP_' "$out") || die "no result in $out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$round" "$cpu_s" "$busy" "$line" "$((e1 - e0))" >>"$RESULTS"
    log "$mode $target round $round: $line cpu=${cpu_s}s core$PROXY_CPU-busy=$busy"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

measure_idle() {
    local pid=${PROXY_PID[gw]} before during after out=$WORK/idle.out
    # Two descriptors per session in the gateway, plus its listeners, Redis and slack.
    local fit=$((($(ulimit -n) - 200) / 2))
    if ((IDLE_SESSIONS > fit)); then
        log "warning: open-file limit $(ulimit -n) fits $fit sessions, not $IDLE_SESSIONS: measuring $fit"
        IDLE_SESSIONS=$fit
    fi
    before=$(rss_kib "$pid")
    taskset -c "$LOAD_CPU" "$GW_TCP_LOAD" idle --target "${ADDR[gw]}" --token "$TOKEN" \
        --conns "$IDLE_SESSIONS" --secs "$IDLE_SECS" >"$out" &
    LOAD_PID=$!
    for _ in $(seq 600); do grep -q '^FCTF_TCP_IDLE' "$out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    during=$(rss_kib "$pid")
    wait "$LOAD_PID" || die "idle load failed"
    LOAD_PID=
    # The sessions are closed; give the gateway a moment to end them.
    sleep 2
    after=$(rss_kib "$pid")
    printf 'idle\tgw\t1\t%s\t%s\t%s\t%s\n' "$before" "$during" "$(grep '^FCTF_TCP_IDLE' "$out")" "$after" >>"$RESULTS"
    log "idle: gateway RSS ${before} KiB before, ${during} KiB with $(grep '^FCTF_TCP_IDLE' "$out"), ${after} KiB after they closed"
}

# gw_metric NAME: a counter of the gateway's /metrics (no labels).
gw_metric() {
    curl -sS "http://127.0.0.1:$GW_ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# redis_calls: commands the private Redis has served so far (INFO commandstats, INFO itself not
# counted), as "total evalsha".
redis_calls() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
        /^cmdstat_/ && $1 != "cmdstat_info" { total += $3 }
        $1 == "cmdstat_evalsha" { eval = $3 }
        END { print total + 0, eval + 0 }'
}

measure_profile() {
    command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
        die "needs valgrind (apt-get install valgrind)"
    local pid=${PROXY_PID[gw]} s0 s1 r0 e0 r1 e1 dump
    log "profile: warm-up ${WARMUP_SECS}s (pools, caches, batches), not measured"
    load "$WORK/warmup.out" "$GW_TCP_LOAD" connrate --target "${ADDR[gw]}" \
        --concurrency "$PROFILE_CONCURRENCY" --secs "$WARMUP_SECS" --token "$TOKEN"
    # Let the warm-up's sessions end and their leases be released.
    sleep 2
    callgrind_control -z "$pid" >/dev/null || die "callgrind_control -z failed"
    s0=$(gw_metric fctf_gateway_tcp_sessions_total)
    read -r r0 e0 < <(redis_calls)
    load "$WORK/profile-load.out" "$GW_TCP_LOAD" connrate --target "${ADDR[gw]}" \
        --concurrency "$PROFILE_CONCURRENCY" --secs "$PROFILE_SECS" --token "$TOKEN"
    sleep 2
    callgrind_control -d "$pid" >/dev/null || die "callgrind_control -d failed"
    s1=$(gw_metric fctf_gateway_tcp_sessions_total)
    read -r r1 e1 < <(redis_calls)
    sleep 1
    dump=$(find "$WORK" -name 'callgrind.out*' -newer "$WORK/profile-load.out" | sort | head -1)
    [[ -n $dump ]] || die "no callgrind dump in $WORK"
    [[ -z $PROFILE_OUT ]] || cp "$dump" "$PROFILE_OUT"
    local conns=$((s1 - s0))
    log "profile: $conns sessions measured ($(grep '^FCTF_TCP_' "$WORK/profile-load.out")); $dump"
    echo
    echo "Redis round trips (EVALSHA) per connection: $(awk -v e=$((e1 - e0)) -v n="$conns" \
        'BEGIN { printf "%.3f", e / n }'); commands Redis ran, inside the scripts included: $(awk \
        -v r=$((r1 - r0)) -v n="$conns" 'BEGIN { printf "%.1f", r / n }') ($conns connections,
concurrency $PROFILE_CONCURRENCY; the gateway runs ~50x slower under valgrind, so more asks
gather per call than at full speed)"
    echo
    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$dump" >"$WORK/self.txt"
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$dump" >"$WORK/incl.txt"
    python3 "$HERE/profile_summary.py" "$WORK/self.txt" "$WORK/incl.txt" "$conns" "$TOP" |
        sed 's/per request/per connection/g; s/instr\/request/instr\/conn/g; s/ requests)/ connections)/g'
}

summarize() {
    python3 - "$RESULTS" "$TARGETS" "$BULK_CONNS" "$CONCURRENCY" <<'PY'
import re, statistics, sys
path, targets, bulk_conns, conc = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
def kv(text):
    return dict(re.findall(r"(\w+)=([\d.]+)", text))
bulk, conn, idle = {}, {}, None
for r in rows:
    if r[0] == "bulk":
        m = kv(r[5]); gib = float(m["bytes"]) / 2**30
        bulk.setdefault(r[1], []).append((float(m["gbit_per_s"]), float(r[3]) / gib if gib else 0, float(r[4])))
    elif r[0] == "connrate":
        m = kv(r[5]); n = float(m["conns"])
        evals = int(r[6]) if len(r) > 6 and r[6] else 0
        conn.setdefault(r[1], []).append((float(m["per_s"]), float(r[3]) * 1e6 / n if n else 0, int(m["p50_us"]), int(m["p99_us"]), int(m["errors"]), float(r[4]), evals / n if n else 0))
    elif r[0] == "idle":
        idle = (int(r[3]), int(r[4]), kv(r[5]), int(r[6]) if len(r) > 6 else None)
med = lambda xs: statistics.median(xs)
print(f"Bulk throughput ({bulk_conns} connections, client to backend), medians:\n")
print("| target | Gbit/s | x NGINX | proxy CPU s per GiB | core 0 busy |")
print("|---|---|---|---|---|")
ref = med([x[0] for x in bulk.get("nginx", [(0,)])]) or None
for t in targets:
    if t not in bulk: continue
    g = med([x[0] for x in bulk[t]]); c = med([x[1] for x in bulk[t]]); b = med([x[2] for x in bulk[t]])
    ratio = f"{g/ref:.2f}x" if ref else "-"
    cpu = "-" if t == "direct" else f"{c:.3f}"
    print(f"| {t} | {g:.2f} | {ratio} | {cpu} | {b:.2f} |")
print(f"\nConnection rate ({conc} concurrent loops; connect, token line for the gateway, ping/pong, close), medians:\n")
print("| target | conn/s | x HAProxy | proxy CPU us per conn | p50 us | p99 us | errors | core 0 busy | Redis calls per conn |")
print("|---|---|---|---|---|---|---|---|---|")
ref = med([x[0] for x in conn.get("haproxy", [(0,)])]) or None
for t in targets:
    if t not in conn: continue
    xs = conn[t]
    r = med([x[0] for x in xs])
    ratio = f"{r/ref:.2f}x" if ref else "-"
    cpu = "-" if t == "direct" else f"{med([x[1] for x in xs]):.1f}"
    calls = f"{med([x[6] for x in xs]):.2f}" if t == "gw" else "-"
    print(f"| {t} | {r:.0f} | {ratio} | {cpu} | {med([x[2] for x in xs]):.0f} | {med([x[3] for x in xs]):.0f} | {sum(x[4] for x in xs)} | {med([x[5] for x in xs]):.2f} | {calls} |")
if idle:
    before, during, m, after = idle
    n = int(m.get("opened", 0))
    print(f"\nIdle sessions: gateway resident memory {before/1024:.1f} MiB before, {during/1024:.1f} MiB with {n} authenticated idle sessions open"
          + (f" (+{(during-before)/1024:.1f} MiB, {(during-before)*1024/n:.0f} bytes per session; x10,000: {(during-before)*10000/n/1024:.1f} MiB)" if n else "")
          + (f", {after/1024:.1f} MiB after they closed" if after is not None else "")
          + f"; failed to open: {m.get('failed', '?')}.")
PY
}

main() {
    [[ $(nproc --all) -ge 2 ]] || die "needs 2 CPUs (PROXY_CPU and LOAD_CPU)"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null ||
        log "warning: could not raise the open-file limit ($(ulimit -n))"
    log "open-file limit $(ulimit -n); load: $(uptime)"
    install_tools
    build_fctf
    [[ -x $GW_TCP_LOAD ]] || die "no $GW_TCP_LOAD (BUILD=0 needs it built)"
    write_configs
    start_servers
    : >"$RESULTS"
    if [[ " $MODES " == *" profile "* ]]; then
        log "load: $(uptime)"
        {
            echo
            echo "## Challenge Gateway TCP profile, $(date -u +%Y-%m-%dT%H:%MZ)"
            measure_profile
        }
        return
    fi
    local round target
    for round in $(seq "$ROUNDS"); do
        if [[ " $MODES " == *" bulk "* ]]; then
            for target in $TARGETS; do measure bulk "$target" "$round"; done
        fi
        if [[ " $MODES " == *" connrate "* ]]; then
            for target in $TARGETS; do measure connrate "$target" "$round"; done
        fi
    done
    [[ " $TARGETS " != *" gw "* || " $MODES " != *" idle "* ]] || measure_idle
    log "load after the run: $(uptime)"
    {
        echo
        echo "## Challenge Gateway TCP benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "SECS=$SECS ROUNDS=$ROUNDS; proxy on core $PROXY_CPU, load/backend/Redis on core $LOAD_CPU; $(nproc --all) CPUs, $(uname -r)"
        echo
        summarize
    }
    cp "$RESULTS" "$RESULTS_OUT"
    log "raw measurements: $RESULTS_OUT"
}

main "$@"
