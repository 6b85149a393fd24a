#!/usr/bin/env bash
# Instructions per request of the Challenge Gateway's HTTP hot path, under valgrind's callgrind:
# a repeatable measure on a shared machine (instruction counts do not depend on what else runs,
# wall-clock numbers do).
#
#   benches/gateway/profile.sh                  # defaults: 10 s of wrk, 8 connections
#   DURATION=20s CONNECTIONS=16 benches/gateway/profile.sh
#
# What it does: a private redis-server and a backend (NGINX, `return 200`) on 127.0.0.1, a
# release `fctf gateway` under `valgrind --tool=callgrind` with the Redis store and limits on
# (the production bursts: token+IP 1,000,000/s burst 200, IP 1,000,000/s burst 1,000), the
# player's first visit (302 + cookie), WARMUP_REQUESTS requests to fill pools and caches, then
# the counters are zeroed (`callgrind_control -z`), wrk sends requests with the cookie for
# DURATION, the profile is dumped (`callgrind_control -d`) and the gateway is stopped. The
# requests counted are the gateway's own 200s from its `/metrics` across the window.
#
# Prints instructions per request in total and by owner of the code (self cost of each
# function, grouped by crate: ours = fctf_*, pingora, tokio, libc = malloc/free/memcpy...,
# ...), the top functions by self cost, and the inclusive cost of our Pingora hooks.
#
# Settings (environment):
#   DURATION=10s CONNECTIONS=8 WARMUP_REQUESTS=2000 TOP=40
#   PORT_BASE=18180     ports PORT_BASE+1 .. +5 on 127.0.0.1
#   LIMITS="1000000 200 1000000 1000"   token+IP per_sec burst, IP per_sec burst
#   BUILD=1             cargo build --release fctf and gw_seed first (0: use the built ones)
#   GATEWAY_BIN=        run this as the gateway (`GATEWAY_BIN -c gw.toml`), e.g. the example
#                       `cargo build --release -p fctf-gateway --example gateway`, which builds
#                       without the other roles; default `fctf gateway`
#   MINT_BIN= GW_SEED_BIN=   the fctf binary (mints the token) and gw_seed to use
#                       (none named FCTF_*: `fctf` reads FCTF_* variables as config)
#   KEEP_WORKDIR=0      1: keep the callgrind output and logs under /tmp/fctf-gwprof.*
#   OUT=                also copy the callgrind output file here
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-8}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
TOP=${TOP:-40}
PORT_BASE=${PORT_BASE:-18180}
LIMITS=${LIMITS:-1000000 200 1000000 1000}
BUILD=${BUILD:-1}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
OUT=${OUT:-}
INSTALL=${INSTALL:-1}
INSTALL_OHA=0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/fctf-gwprof.XXXXXX)
PROXY_CPU=0
LOAD_CPU=1

BACKEND_PORT=$((PORT_BASE + 1))
REDIS_PORT=$((PORT_BASE + 2))
GW_HTTP=$((PORT_BASE + 3)) GW_TCP=$((PORT_BASE + 4)) GW_ADMIN=$((PORT_BASE + 5))

# shellcheck source=benches/gateway/common.sh
source "$HERE/common.sh"

build() {
    if [[ $BUILD == 1 ]]; then
        log "building fctf and gw_seed (release)"
        (cd "$ROOT" && cargo build --release --quiet -p fctf -p fctf-benches --bin fctf \
            --bin gw_seed) || die "cargo build failed"
    fi
    FCTF=${MINT_BIN:-$TARGET_DIR/release/fctf}
    GW_SEED=${GW_SEED_BIN:-$TARGET_DIR/release/gw_seed}
    [[ -x $FCTF && -x $GW_SEED ]] || die "no $FCTF or $GW_SEED (BUILD=0 needs them built)"
    if [[ -n ${GATEWAY_BIN:-} ]]; then
        GATEWAY_CMD=("$GATEWAY_BIN")
    else
        GATEWAY_CMD=("$FCTF" gateway)
    fi
}

write_configs() {
    mkdir -p "$WORK/backend"
    cat >"$WORK/backend/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/backend/body;
    proxy_temp_path $WORK/backend/proxy;
    fastcgi_temp_path $WORK/backend/fastcgi;
    uwsgi_temp_path $WORK/backend/uwsgi;
    scgi_temp_path $WORK/backend/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / { return 200 "hello from the benchmark backend\n"; }
    }
}
EOF
    head -c 48 /dev/urandom | base64 >"$WORK/token-k1.key"
    head -c 48 /dev/urandom | base64 >"$WORK/signing-s1.key"
    chmod 600 "$WORK/token-k1.key" "$WORK/signing-s1.key"
    local l
    read -ra l <<<"$LIMITS"
    ((${#l[@]} == 4)) || die "LIMITS takes 4 numbers"
    cat >"$WORK/gw.toml" <<EOF
[tokens]
active_kid = "k1"
keys = [{ kid = "k1", secret_file = "$WORK/token-k1.key" }]

[signing]
active_kid = "s1"
keys = [{ kid = "s1", secret_file = "$WORK/signing-s1.key" }]

[store]
backend = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "fctfprof:"

[gateway]
http_listen = "127.0.0.1:$GW_HTTP"
tcp_listen = "127.0.0.1:$GW_TCP"
admin_listen = "127.0.0.1:$GW_ADMIN"
http_token_ip_per_sec = ${l[0]}
http_token_ip_burst = ${l[1]}
http_ip_per_sec = ${l[2]}
http_ip_burst = ${l[3]}
EOF
}

ok_count() { # the gateway's 200s so far
    curl -sS "http://127.0.0.1:$GW_ADMIN/metrics" |
        awk '/^fctf_gateway_http_requests_total\{status="200"\} / { print $2 }'
}

store_calls() { # rate-limit calls to Redis so far
    curl -sS "http://127.0.0.1:$GW_ADMIN/metrics" |
        awk '/^fctf_gateway_limit_store_calls_total / { print $2 }'
}

main() {
    command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
        die "needs valgrind (apt-get install valgrind)"
    install_tools
    build
    write_configs
    local port
    for port in "$BACKEND_PORT" "$REDIS_PORT" "$GW_HTTP" "$GW_TCP" "$GW_ADMIN"; do
        port_free "$port" || die "127.0.0.1:$port is in use (set PORT_BASE)"
    done
    start redis "$LOAD_CPU" TERM redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --protected-mode yes
    wait_port "$REDIS_PORT" "$STARTED_PID" || die "redis did not start"
    start backend "$LOAD_CPU" TERM nginx -e stderr -p "$WORK/backend" -c "$WORK/backend/nginx.conf"
    wait_port "$BACKEND_PORT" "$STARTED_PID" || die "backend did not start"

    local instance token
    instance=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    token=$("$FCTF" token mint --key-file "$WORK/token-k1.key" --kid k1 --team 7 --challenge 3 \
        --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" --ttl 86400)
    "$GW_SEED" --redis-url "redis://127.0.0.1:$REDIS_PORT" --key-prefix fctfprof: --team 7 \
        --challenge 3 --instance "$instance" --route "127.0.0.1:$BACKEND_PORT" >"$WORK/seed.log" ||
        die "seeding failed"

    # Not pinned: valgrind runs the guest's threads one at a time anyway.
    start gateway "0-1" INT valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$WORK/callgrind.out" "${GATEWAY_CMD[@]}" -c "$WORK/gw.toml"
    local vg=$STARTED_PID
    for _ in $(seq 60); do
        (exec 3<>"/dev/tcp/127.0.0.1/$GW_HTTP") 2>/dev/null && break
        kill -0 "$vg" 2>/dev/null || die "gateway died ($WORK/gateway.log)"
        sleep 1
    done
    port_free "$GW_HTTP" && die "gateway did not listen in 60 s"

    local headers cookie
    headers=$(curl -sS -o /dev/null -D - "http://127.0.0.1:$GW_HTTP/?fctftoken=$token")
    cookie=$(grep -i '^set-cookie: *FCTF_Auth_Token=' <<<"$headers" | head -1 |
        sed -E 's/^[^:]*: *//; s/;.*//; s/\r//')
    [[ -n $cookie ]] || die "no cookie from the first visit: $headers"
    # Warm-up: pools, caches, batches; not measured.
    local n=0
    while ((n < WARMUP_REQUESTS)); do
        load /dev/null wrk -t1 -c"$CONNECTIONS" -d1s -H "Cookie: $cookie" "http://127.0.0.1:$GW_HTTP/"
        n=$(ok_count)
    done
    callgrind_control -z "$vg" >/dev/null || die "callgrind_control -z failed"
    local ok0 ok1 calls0 calls1
    ok0=$(ok_count)
    calls0=$(store_calls)
    load "$WORK/wrk.out" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Cookie: $cookie" \
        "http://127.0.0.1:$GW_HTTP/"
    ok1=$(ok_count)
    calls1=$(store_calls)
    grep -q 'Non-2xx' "$WORK/wrk.out" && die "non-2xx answers: $(cat "$WORK/wrk.out")"
    callgrind_control -d "$vg" >/dev/null || die "callgrind_control -d failed"
    local requests=$((ok1 - ok0))
    # Let the dump finish, then stop the gateway (the final dump at exit is not used).
    sleep 1
    local dump
    dump=$(find "$WORK" -name 'callgrind.out*' -newer "$WORK/wrk.out" | sort | head -1)
    [[ -n $dump ]] || die "no callgrind dump in $WORK"
    [[ -z $OUT ]] || cp "$dump" "$OUT"
    log "$requests requests measured; profile $dump"

    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$dump" >"$WORK/self.txt"
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$dump" >"$WORK/incl.txt"
    python3 "$HERE/profile_summary.py" "$WORK/self.txt" "$WORK/incl.txt" "$requests" "$TOP" \
        "$((calls1 - calls0))"
}

main "$@"
