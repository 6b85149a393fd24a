# Shared by run.sh (HTTP) and tcp.sh (TCP): processes, cleanup, tools, CPU accounting.
# Sourced after the caller has set WORK, KEEP_WORKDIR, INSTALL, INSTALL_OHA, BUILD, ROOT and
# TARGET_DIR.
# shellcheck shell=bash

log() { printf '[gwbench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup

STARTED=()     # "pid:signal" of every long-running process started here
LOAD_PID=      # the load generator while one runs
MADE_POLICY=0  # 1 while a policy-rc.d written here exists

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local entry pid sig
    if [[ -n $LOAD_PID ]]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    for entry in "${STARTED[@]}"; do
        pid=${entry%%:*} sig=${entry##*:}
        kill "-$sig" "$pid" 2>/dev/null || true
    done
    for entry in "${STARTED[@]}"; do
        pid=${entry%%:*}
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ $MADE_POLICY == 0 ]] || rm -f /usr/sbin/policy-rc.d
    ((${#STARTED[@]} == 0)) || log "stopped the ${#STARTED[@]} processes started here"
    if [[ $KEEP_WORKDIR == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPU SIGNAL CMD...: runs CMD pinned to CPU in the background, output in WORK/NAME.log;
# SIGNAL is what stops it on exit. Sets STARTED_PID.
start() {
    local name=$1 cpu=$2 sig=$3
    shift 3
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    STARTED+=("$STARTED_PID:$sig")
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts, or fail when PID died.
wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- tools

install_tools() {
    local packages=() cmd pkg
    for cmd in nginx:nginx haproxy:haproxy wrk:wrk redis-server:redis-server curl:curl \
        python3:python3 taskset:util-linux; do
        command -v "${cmd%%:*}" >/dev/null || packages+=("${cmd##*:}")
    done
    # NGINX's stream (TCP) proxy is a separate module package (tcp.sh uses it).
    dpkg -s libnginx-mod-stream >/dev/null 2>&1 || packages+=(libnginx-mod-stream)
    if ! command -v oha >/dev/null && [[ $INSTALL_OHA == 1 ]]; then
        # oha's TLS through the system's OpenSSL: far quicker to build than its default rustls
        # with aws-lc, and it must have one TLS backend to compile.
        for pkg in pkg-config libssl-dev; do
            dpkg -s "$pkg" >/dev/null 2>&1 || packages+=("$pkg")
        done
    fi
    if ((${#packages[@]})); then
        [[ $INSTALL == 1 ]] || die "missing ${packages[*]} (INSTALL=0)"
        [[ $(id -u) == 0 ]] || die "missing ${packages[*]}: run as root, or install them"
        log "installing ${packages[*]} (Debian packages)"
        # Debian starts a service when its package is installed; nothing may start here.
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            MADE_POLICY=1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${packages[@]}" >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get install failed"; }
        [[ $MADE_POLICY == 0 ]] || rm -f /usr/sbin/policy-rc.d
        MADE_POLICY=0
    fi
    if ! command -v oha >/dev/null && [[ $INSTALL_OHA == 1 ]]; then
        log "installing oha from crates.io (cargo install oha --locked, native-tls; several minutes, once)"
        nice cargo install oha --locked --no-default-features --features native-tls \
            >"$WORK/oha-install.log" 2>&1 ||
            log "warning: oha did not build (tail of its log below); no fixed-rate phase
$(tail -n 20 "$WORK/oha-install.log")"
    fi
    HAVE_OHA=0
    command -v oha >/dev/null && HAVE_OHA=1
    return 0
}

build_fctf() {
    if [[ $BUILD == 1 ]]; then
        log "building fctf, gw_seed and gw_tcp_load (release)"
        (cd "$ROOT" && cargo build --release --quiet -p fctf -p fctf-benches --bin fctf \
            --bin gw_seed --bin gw_tcp_load) || die "cargo build failed"
    fi
    # Overrides (none named FCTF_*: `fctf` reads FCTF_* variables as config): MINT_BIN (the fctf
    # binary), GW_SEED_BIN, GW_TCP_LOAD_BIN, and GATEWAY_BIN, run as `GATEWAY_BIN -c conf`
    # instead of `fctf gateway -c conf` (e.g. `cargo build --release -p fctf-gateway --example
    # gateway`, which builds without the other roles).
    FCTF=${MINT_BIN:-$TARGET_DIR/release/fctf}
    GW_SEED=${GW_SEED_BIN:-$TARGET_DIR/release/gw_seed}
    GW_TCP_LOAD=${GW_TCP_LOAD_BIN:-$TARGET_DIR/release/gw_tcp_load}
    if [[ -n ${GATEWAY_BIN:-} ]]; then GATEWAY_CMD=("$GATEWAY_BIN"); else GATEWAY_CMD=("$FCTF" gateway); fi
    local bin
    for bin in "$FCTF" "$GW_SEED" "${GATEWAY_CMD[0]}"; do
        [[ -x $bin ]] || die "no $bin (BUILD=0 needs it built)"
    done
}

# ---------------------------------------------------------------- measuring

# CPU ticks (utime+stime) of a process and its children (nginx's worker).
cpu_ticks() {
    local pid total=0 p fields
    pid=$1
    for p in "$pid" $(pgrep -P "$pid" || true); do
        [[ -r /proc/$p/stat ]] || continue
        # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        fields=$(sed -E 's/^.*\) //' "/proc/$p/stat")
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

# "busy total" jiffies of one CPU from /proc/stat.
cpu_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}


now_ns() { date +%s%N; }

# load OUT CMD...: the load generator on LOAD_CPU, output to OUT. In the background and waited
# for, so Ctrl-C or SIGTERM stops the run at once rather than after the current run.
load() {
    local out=$1
    shift
    taskset -c "$LOAD_CPU" "$@" >"$out" &
    LOAD_PID=$!
    wait "$LOAD_PID" || die "$1 failed (exit $?)"
    LOAD_PID=
}

# parse_oha FILE: "requests seconds p50_us p99_us bad_status errors" of an oha JSON report.
