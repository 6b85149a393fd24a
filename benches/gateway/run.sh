#!/usr/bin/env bash
# Load benchmark of the Challenge Gateway (issue 3) against the same backend reached directly,
# through NGINX and through HAProxy, in one run with the targets interleaved.
#
#   benches/gateway/run.sh                      # defaults: DURATION=10s ROUNDS=3
#   DURATION=30s ROUNDS=5 benches/gateway/run.sh
#
# Method (docs/benchmarks.md, "Challenge Gateway load benchmark"): the proxy under test runs
# alone on core PROXY_CPU (0) with one worker; the load generator, the backend and Redis run on
# core LOAD_CPU (1). Each round measures every target in turn (direct, nginx, haproxy, gw-on,
# gw-off), first at saturation (wrk, closed loop), then at a fixed rate (oha, open loop with
# latency correction) of FIXED_PERCENT of NGINX's median saturated rate. Reported: medians over
# rounds of req/s, the proxy's CPU µs per request (utime+stime from /proc/<pid>/stat over the
# measured window), p99, and each as a ratio to NGINX from the same run; the run checks that
# core 0 was at least 90% busy, and mostly with the proxy, during every saturated proxy run.
#
# Everything listens on 127.0.0.1 only, and every process the script starts is stopped on exit
# (also on Ctrl-C). Needs root only to install missing Debian packages.
#
# Settings (environment):
#   DURATION=10s        length of each measured run (wrk/oha syntax: 10s, 1m)
#   ROUNDS=3            rounds of all targets; medians are over rounds
#   WARMUP=2s           unmeasured load before each saturated run (pools, caches)
#   CONNECTIONS=64      concurrent client connections
#   TARGETS="direct nginx haproxy gw-on gw-off"
#   FIXED_PERCENT=25    fixed rate as a percentage of NGINX's median saturated req/s
#   FIXED_RATE=         fixed rate in req/s (overrides FIXED_PERCENT)
#   PROXY_CPU=0 LOAD_CPU=1
#   PORT_BASE=18080     ports PORT_BASE+1 .. PORT_BASE+10 on 127.0.0.1
#   GW_ON_LIMITS="1000000 200 1000000 1000"        token+IP per_sec burst, IP per_sec burst
#   GW_OFF_LIMITS="1000000 10000000 1000000 10000000"
#   ACCESS_LOG=0        0: no access log from NGINX nor the gateways (RUST_LOG=info with the
#                       access target off); 1: both write one line per request (NGINX to a
#                       file, the gateway to its standard error, a file here). HAProxy logs
#                       nothing either way (it logs only through syslog).
#   INSTALL=1           apt-get install missing nginx/haproxy/wrk/redis-server/curl/python3
#   INSTALL_OHA=1       cargo install oha (native-tls) when missing; 0: skip the fixed rate
#   BUILD=1             cargo build --release fctf and gw_seed first
#   KEEP_WORKDIR=0      1: keep configs, logs and raw tool outputs under /tmp
#   RESULTS_OUT=/tmp/fctf-gwbench-results.tsv   every measurement, one line each
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
TARGETS=${TARGETS:-direct nginx haproxy gw-on gw-off}
FIXED_PERCENT=${FIXED_PERCENT:-25}
FIXED_RATE=${FIXED_RATE:-}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-18080}
GW_ON_LIMITS=${GW_ON_LIMITS:-1000000 200 1000000 1000}
GW_OFF_LIMITS=${GW_OFF_LIMITS:-1000000 10000000 1000000 10000000}
ACCESS_LOG=${ACCESS_LOG:-0}
INSTALL=${INSTALL:-1}
INSTALL_OHA=${INSTALL_OHA:-1}
BUILD=${BUILD:-1}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
RESULTS_OUT=${RESULTS_OUT:-/tmp/fctf-gwbench-results.tsv}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fctf-gwbench.XXXXXX)
RESULTS=$WORK/results.tsv
CLK_TCK=$(getconf CLK_TCK)

BACKEND_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
HAPROXY_PORT=$((PORT_BASE + 3))
REDIS_PORT=$((PORT_BASE + 4))
GW_ON_HTTP=$((PORT_BASE + 5)) GW_ON_TCP=$((PORT_BASE + 6)) GW_ON_ADMIN=$((PORT_BASE + 7))
GW_OFF_HTTP=$((PORT_BASE + 8)) GW_OFF_TCP=$((PORT_BASE + 9)) GW_OFF_ADMIN=$((PORT_BASE + 10))

# shellcheck source=benches/gateway/common.sh
source "$HERE/common.sh"

# The instance every gateway request is admitted to.
TEAM=7
CHALLENGE=3

# ---------------------------------------------------------------- configs

write_nginx_conf() { # NAME PORT SERVER-BLOCK-BODY [HTTP-EXTRA]
    local name=$1 port=$2 body=$3 extra=${4:-}
    mkdir -p "$WORK/$name"
    # The proxy under test logs as the gateway does (ACCESS_LOG); the backend never.
    local access_log="access_log off;"
    [[ $name != nginx || $ACCESS_LOG != 1 ]] || access_log="access_log $WORK/$name/access.log;"
    cat >"$WORK/$name/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $WORK/$name/nginx.pid;
error_log $WORK/$name/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    $access_log
    client_body_temp_path $WORK/$name/body;
    proxy_temp_path $WORK/$name/proxy;
    fastcgi_temp_path $WORK/$name/fastcgi;
    uwsgi_temp_path $WORK/$name/uwsgi;
    scgi_temp_path $WORK/$name/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    $extra
    server {
        listen 127.0.0.1:$port reuseport;
        $body
    }
}
EOF
}

write_configs() {
    # The backend: a fixed small answer, as fast as a server gets.
    write_nginx_conf backend "$BACKEND_PORT" '
        default_type text/plain;
        location / { return 200 "hello from the benchmark backend\n"; }'
    # NGINX as ingress-nginx uses it: HTTP/1.1 upstream with a keep-alive pool, and the
    # forwarding headers the gateway also sets. ($host and friends are NGINX's variables.)
    # shellcheck disable=SC2016
    write_nginx_conf nginx "$NGINX_PORT" '
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }' "upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; keepalive_requests 1000000; }"

    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend backend
backend backend
    server s1 127.0.0.1:$BACKEND_PORT
EOF

    head -c 48 /dev/urandom | base64 >"$WORK/token-k1.key"
    head -c 48 /dev/urandom | base64 >"$WORK/signing-s1.key"
    chmod 600 "$WORK/token-k1.key" "$WORK/signing-s1.key"
    local on off
    read -ra on <<<"$GW_ON_LIMITS"
    read -ra off <<<"$GW_OFF_LIMITS"
    ((${#on[@]} == 4 && ${#off[@]} == 4)) || die "GW_ON_LIMITS and GW_OFF_LIMITS take 4 numbers each"
    write_gateway_conf gw-on "$GW_ON_HTTP" "$GW_ON_TCP" "$GW_ON_ADMIN" "${on[@]}"
    write_gateway_conf gw-off "$GW_OFF_HTTP" "$GW_OFF_TCP" "$GW_OFF_ADMIN" "${off[@]}"
}

write_gateway_conf() { # NAME HTTP TCP ADMIN TOKEN_IP_RATE TOKEN_IP_BURST IP_RATE IP_BURST
    local name=$1
    cat >"$WORK/$name.toml" <<EOF
[tokens]
active_kid = "k1"
keys = [{ kid = "k1", secret_file = "$WORK/token-k1.key" }]

[signing]
active_kid = "s1"
keys = [{ kid = "s1", secret_file = "$WORK/signing-s1.key" }]

[store]
backend = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "fctfbench:$name:"

[gateway]
http_listen = "127.0.0.1:$2"
tcp_listen = "127.0.0.1:$3"
admin_listen = "127.0.0.1:$4"
http_token_ip_per_sec = $5
http_token_ip_burst = $6
http_ip_per_sec = $7
http_ip_burst = $8
EOF
}

# ---------------------------------------------------------------- servers

declare -A URL CPU_PIDS_OF ADMIN_OF COOKIE_OF

start_servers() {
    local port
    for port in "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$REDIS_PORT" "$GW_ON_HTTP" \
        "$GW_ON_TCP" "$GW_ON_ADMIN" "$GW_OFF_HTTP" "$GW_OFF_TCP" "$GW_OFF_ADMIN"; do
        port_free "$port" || die "127.0.0.1:$port is in use (set PORT_BASE)"
    done

    start redis "$LOAD_CPU" TERM redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --protected-mode yes
    wait_port "$REDIS_PORT" "$STARTED_PID" || die "redis did not start ($WORK/redis.log)"

    start backend "$LOAD_CPU" TERM nginx -e stderr -p "$WORK/backend" -c "$WORK/backend/nginx.conf"
    wait_port "$BACKEND_PORT" "$STARTED_PID" || die "backend nginx did not start ($WORK/backend.log)"
    URL[direct]=http://127.0.0.1:$BACKEND_PORT/

    start nginx "$PROXY_CPU" TERM nginx -e stderr -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
    wait_port "$NGINX_PORT" "$STARTED_PID" || die "nginx did not start ($WORK/nginx.log)"
    URL[nginx]=http://127.0.0.1:$NGINX_PORT/
    CPU_PIDS_OF[nginx]=$STARTED_PID   # master; its worker is found as its child

    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy config refused"
    start haproxy "$PROXY_CPU" TERM haproxy -db -f "$WORK/haproxy.cfg"
    wait_port "$HAPROXY_PORT" "$STARTED_PID" || die "haproxy did not start ($WORK/haproxy.log)"
    URL[haproxy]=http://127.0.0.1:$HAPROXY_PORT/
    CPU_PIDS_OF[haproxy]=$STARTED_PID

    local instance token name http admin
    instance=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    token=$("$FCTF" token mint --key-file "$WORK/token-k1.key" --kid k1 --team "$TEAM" \
        --challenge "$CHALLENGE" --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" --ttl 86400)
    for name in gw-on gw-off; do
        "$FCTF" check-config -c "$WORK/$name.toml" >"$WORK/$name.check" 2>&1 ||
            { cat "$WORK/$name.check" >&2; die "$name config refused"; }
        taskset -c "$LOAD_CPU" "$GW_SEED" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
            --key-prefix "fctfbench:$name:" --team "$TEAM" --challenge "$CHALLENGE" \
            --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" >>"$WORK/seed.log" ||
            die "seeding the deployment record failed"
        if [[ $name == gw-on ]]; then http=$GW_ON_HTTP admin=$GW_ON_ADMIN; else http=$GW_OFF_HTTP admin=$GW_OFF_ADMIN; fi
        # SIGINT: Pingora's fast shutdown (SIGTERM would drain for the grace period).
        # `fctf gateway` logs each request at INFO (its access log) unless told otherwise.
        start "$name" "$PROXY_CPU" INT env RUST_LOG="$GW_RUST_LOG" "${GATEWAY_CMD[@]}" -c "$WORK/$name.toml"
        wait_port "$http" "$STARTED_PID" || die "$name did not start ($WORK/$name.log)"
        URL[$name]=http://127.0.0.1:$http/
        CPU_PIDS_OF[$name]=$STARTED_PID
        ADMIN_OF[$name]=http://127.0.0.1:$admin/metrics
        COOKIE_OF[$name]=$(bootstrap_cookie "$name" "$token")
    done
}

# bootstrap_cookie NAME TOKEN: the player's first visit; prints the cookie to send afterwards.
bootstrap_cookie() {
    local name=$1 token=$2 headers status cookie
    headers=$(curl -sS -o /dev/null -D - "${URL[$name]}?fctftoken=$token") || die "$name: first visit failed"
    status=$(head -1 <<<"$headers" | awk '{print $2}')
    [[ $status == 302 ]] || die "$name: first visit answered $status, want 302: $headers"
    cookie=$(grep -i '^set-cookie: *FCTF_Auth_Token=' <<<"$headers" | head -1 | sed -E 's/^[^:]*: *//; s/;.*//; s/\r//')
    [[ -n $cookie ]] || die "$name: no FCTF_Auth_Token cookie in: $headers"
    printf '%s' "$cookie"
}

# Every target must answer the backend's body with 200 before anything is measured.
check_targets() {
    local target body want
    want=$(curl -sS "${URL[direct]}") || die "backend does not answer"
    for target in $TARGETS; do
        [[ -n ${URL[$target]:-} ]] || die "unknown target $target"
        body=$(curl -sS -f -H "Cookie: ${COOKIE_OF[$target]:-x=y}" "${URL[$target]}") ||
            die "$target does not answer 200"
        [[ $body == "$want" ]] || die "$target answered something else than the backend: $body"
    done
}

store_calls() { # gateway metrics URL -> limit store calls so far
    curl -sS "$1" | awk '/^fctf_gateway_limit_store_calls_total / { print $2 }'
}
parse_oha() {
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in r["statusCodeDistribution"].items()}
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
# "aborted due to deadline": requests in flight when the run ended, not failures.
errors = sum(v for k, v in r["errorDistribution"].items() if "deadline" not in k)
p = r["latencyPercentiles"]
print(ok, r["summary"]["total"], round(p["p50"] * 1e6), round(p["p99"] * 1e6),
      sum(codes.values()) - ok, errors)
EOF
}

# measure PHASE TARGET ROUND RATE: one measured run; appends a line to RESULTS.
measure() {
    local phase=$1 target=$2 round=$3 rate=$4
    local url=${URL[$target]} cookie=${COOKIE_OF[$target]:-} pid=${CPU_PIDS_OF[$target]:-}
    local headers=()
    [[ -z $cookie ]] || headers=(-H "Cookie: $cookie")
    if [[ $phase == saturation ]]; then
        load /dev/null wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${headers[@]}" "$url"
    fi
    local ticks0=0 calls0=0 busy0 total0 t0
    [[ -z $pid ]] || ticks0=$(cpu_ticks "$pid")
    [[ -z ${ADMIN_OF[$target]:-} ]] || calls0=$(store_calls "${ADMIN_OF[$target]}")
    read -r busy0 total0 < <(cpu_jiffies "$PROXY_CPU")
    t0=$(now_ns)
    local out=$WORK/$phase-$target-$round.out
    if [[ $phase == saturation ]]; then
        load "$out" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --timeout 10s \
            -s "$HERE/report.lua" "${headers[@]}" "$url"
    else
        load "$out" oha --no-tui --output-format json -z "$DURATION" -c "$CONNECTIONS" \
            -q "$rate" --latency-correction --worker-threads 1 "${headers[@]}" "$url"
    fi
    local t1 busy1 total1 ticks1=0 calls1=0
    t1=$(now_ns)
    read -r busy1 total1 < <(cpu_jiffies "$PROXY_CPU")
    [[ -z $pid ]] || ticks1=$(cpu_ticks "$pid")
    [[ -z ${ADMIN_OF[$target]:-} ]] || calls1=$(store_calls "${ADMIN_OF[$target]}")

    local requests seconds p50 p99 bad errors
    if [[ $phase == saturation ]]; then
        local line
        line=$(grep '^FCTF_RESULT' "$out") || die "no wrk result in $out"
        requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
        seconds=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line" | awk '{print $1 / 1e6}')
        p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
        p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
        bad=$(sed -E 's/.*status_errors=([0-9]+).*/\1/' <<<"$line")
        errors=$(sed -E 's/.*socket_errors=([0-9]+).*/\1/' <<<"$line")
    else
        read -r requests seconds p50 p99 bad errors < <(parse_oha "$out")
    fi
    local wall cpu_us share busy calls_per_req rps
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')
    rps=$(awk -v n="$requests" -v s="$seconds" 'BEGIN { printf "%.1f", n / s }')
    busy=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" 'BEGIN { printf "%.3f", t ? b / t : 0 }')
    if [[ -n $pid ]]; then
        cpu_us=$(awk -v d="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.3f", n ? d / hz * 1e6 / n : 0 }')
        share=$(awk -v d="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.3f", d / hz / w }')
    else
        cpu_us=- share=-
    fi
    if [[ -n ${ADMIN_OF[$target]:-} ]]; then
        calls_per_req=$(awk -v d="$((calls1 - calls0))" -v n="$requests" 'BEGIN { printf "%.4f", n ? d / n : 0 }')
    else
        calls_per_req=-
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$target" "$round" \
        "$rps" "$requests" "$p50" "$p99" "$bad" "$errors" "$cpu_us" "$share" "$busy" \
        "$calls_per_req" >>"$RESULTS"
    log "$phase $target round $round: $rps req/s, p99 ${p99} µs, proxy CPU ${cpu_us} µs/req, core $PROXY_CPU busy $busy"
}

# ---------------------------------------------------------------- main

main() {
    [[ $(nproc --all) -ge 2 ]] || die "needs 2 CPUs (PROXY_CPU and LOAD_CPU)"
    case $ACCESS_LOG in
    0) GW_RUST_LOG=info,fctf_gateway::access=off ;;
    1) GW_RUST_LOG=info ;;
    *) die "ACCESS_LOG is 0 or 1" ;;
    esac
    install_tools
    build_fctf
    write_configs
    LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
    start_servers
    check_targets
    local threads names
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/${CPU_PIDS_OF[gw-on]}/status")
    names=$(cat /proc/"${CPU_PIDS_OF[gw-on]}"/task/*/comm | sort | uniq -c | awk '{ printf "%s%s x%d", sep, $2, $1; sep = ", " }')
    log "all targets answer; the gateway process has $threads threads, all on core $PROXY_CPU: $names"

    printf 'phase\ttarget\tround\trps\trequests\tp50_us\tp99_us\tbad_status\tsocket_errors\tcpu_us_per_req\tproxy_share\tcore0_busy\tstore_calls_per_req\n' >"$RESULTS"
    local round target
    for round in $(seq "$ROUNDS"); do
        for target in $TARGETS; do measure saturation "$target" "$round" -; done
    done

    local rate=${FIXED_RATE}
    if [[ -z $rate ]]; then
        rate=$(awk -F'\t' '$1 == "saturation" && $2 == "nginx" { print $4 }' "$RESULTS" | sort -n |
            awk -v p="$FIXED_PERCENT" '{ v[NR] = $1 } END { if (NR) printf "%d", v[int((NR + 1) / 2)] * p / 100 }')
    fi
    if [[ $HAVE_OHA == 1 && -n $rate && $rate -gt 0 ]]; then
        for round in $(seq "$ROUNDS"); do
            for target in $TARGETS; do measure fixed "$target" "$round" "$rate"; done
        done
    else
        log "no fixed-rate phase (oha: $HAVE_OHA, rate: ${rate:-none})"
    fi

    local status=0
    {
        echo
        echo "## Challenge Gateway load benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS; proxy on core $PROXY_CPU, load/backend/Redis on core $LOAD_CPU;"
        echo "gateway: $threads threads ($names); limits on: $GW_ON_LIMITS; limits off: $GW_OFF_LIMITS"
        echo "(token+IP per_sec burst, IP per_sec burst); access logs (NGINX, gateways): $([[ $ACCESS_LOG == 1 ]] && echo on || echo off);"
        echo "gateway command: ${GATEWAY_CMD[*]}; $(nproc --all) CPUs, $(uname -r); load average at the start $LOAD_AT_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        python3 "$HERE/summarize.py" "$RESULTS" "$TARGETS" "$CONNECTIONS" "${rate:-0}" || status=$?
    }
    cp "$RESULTS" "$RESULTS_OUT"
    log "raw measurements: $RESULTS_OUT"
    return "$status"
}

main "$@"
