#!/usr/bin/env bash
# Builds and runs the fctf-core and fctf-gateway fuzz targets (stable toolchain). See docs/fuzzing.md.
#
#   fuzz/run.sh replay               build every target, run each over its committed corpus once
#                                    (what CI runs; a few seconds once built)
#   fuzz/run.sh fuzz <secs> [t...]   fuzz each target (default: all) for <secs> seconds and
#                                    print libFuzzer's final stats; a crash input is left in
#                                    fuzz/artifacts/<target>/
#   fuzz/run.sh list                 print the target names
#
# Builds go to $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set, else to fuzz/target: never
# the main workspace's target dir, whose flags differ (coverage instrumentation) and which the
# fuzz build would otherwise keep invalidating.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
targets=(
    token_verify token_roundtrip naming_parse
    gateway_tcp_line gateway_cookie gateway_redirect gateway_routing gateway_framing gateway_host
)
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$here/target}"
cargo_fuzz_version="0.13.2"

# No RUSTC_BOOTSTRAP: with `--sanitizer none`, cargo-fuzz 0.13 passes only flags stable rustc
# accepts. Setting it would also make dependencies' build scripts detect "nightly" and switch on
# unstable features, so the fuzz build would no longer be the code the workspace ships.
unset RUSTC_BOOTSTRAP

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

ensure_cargo_fuzz() {
    if cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
        return
    fi
    echo "run.sh: installing cargo-fuzz $cargo_fuzz_version (once per machine, about a minute)" >&2
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
}

# The flags every build and run shares: no sanitizer (ASan needs nightly; this is safe Rust),
# release with debug assertions (cargo-fuzz's default), the separate target dir.
fuzz_flags=(--sanitizer none --target-dir "$target_dir" --fuzz-dir "$here")

build_all() {
    ensure_cargo_fuzz
    cargo fuzz build "${fuzz_flags[@]}"
}

replay() {
    build_all
    local failed=0 passed=0
    for t in "${targets[@]}"; do
        local corpus="$here/corpus/$t"
        local n
        n="$(find "$corpus" -type f | wc -l)"
        if [ "$n" -eq 0 ]; then
            echo "run.sh: corpus/$t is empty: commit seeds for it" >&2
            failed=$((failed + 1))
            continue
        fi
        # -runs=0 runs each corpus input once and mutates nothing, so the committed corpus is
        # left as it is.
        local log="$target_dir/replay-$t.log"
        if cargo fuzz run "${fuzz_flags[@]}" "$t" "$corpus" -- -runs=0 2>"$log"; then
            echo "replay $t: $n inputs ok"
            passed=$((passed + 1))
        else
            cat "$log" >&2
            echo "replay $t: FAILED" >&2
            failed=$((failed + 1))
        fi
    done
    echo "fuzz-replay: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

fuzz() {
    local secs="$1"
    shift
    local chosen=("$@")
    [ "${#chosen[@]}" -gt 0 ] || chosen=("${targets[@]}")
    build_all
    local failed=0
    for t in "${chosen[@]}"; do
        # New inputs go to a scratch corpus (the first directory libFuzzer is given); the
        # committed seeds are read only. Promote useful finds by hand (see docs/fuzzing.md).
        local scratch="$here/scratch/$t"
        mkdir -p "$scratch"
        echo "== fuzzing $t for ${secs}s (scratch corpus: fuzz/scratch/$t)"
        if ! cargo fuzz run "${fuzz_flags[@]}" "$t" "$scratch" "$here/corpus/$t" -- \
            -max_total_time="$secs" -print_final_stats=1; then
            echo "fuzz $t: FAILED (crash input under fuzz/artifacts/$t)" >&2
            failed=$((failed + 1))
        fi
    done
    [ "$failed" -eq 0 ]
}

mkdir -p "$target_dir"
case "${1:-}" in
    replay) replay ;;
    fuzz)
        [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage
        shift
        fuzz "$@"
        ;;
    list) printf '%s\n' "${targets[@]}" ;;
    *) usage ;;
esac
