#!/usr/bin/env python3
"""Summary of a callgrind profile of the gateway (benches/gateway/profile.sh).

usage: profile_summary.py SELF.txt INCLUSIVE.txt REQUESTS TOP [STORE_CALLS]

SELF.txt and INCLUSIVE.txt are `callgrind_annotate --auto=no --threshold=100` outputs with
--inclusive=no and --inclusive=yes. Prints Markdown: instructions per request in total and by
owner of the code (each function's self cost, grouped by the first crate its name names that is
not core/alloc/std, or by the library its object is), the top functions by self cost, and the
inclusive cost of the gateway's own functions.
"""

import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)(?:\s+\[(.*)\])?$")
CRATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::")
STD = {"core", "alloc", "std", "hashbrown", "__rust_alloc", "__rdl_alloc"}
GROUPS = [
    ("ours (fctf_*)", ("fctf_gateway", "fctf_core", "fctf")),
    ("pingora", ("pingora_core", "pingora_proxy", "pingora_http", "pingora_pool",
                 "pingora_timeout", "pingora_error", "pingora_runtime", "pingora_limits",
                 "pingora_header_serde", "pingora_cache", "pingora")),
    ("tokio + mio", ("tokio", "mio")),
    ("http, httparse, bytes", ("http", "httparse", "bytes", "httpdate", "h2")),
    ("moka (caches)", ("moka", "crossbeam_epoch", "crossbeam_utils", "crossbeam_channel",
                       "quanta", "tagptr", "triomphe")),
    ("crypto (sha2, hmac, base64)", ("sha2", "hmac", "digest", "base64", "hex", "subtle")),
    ("redis client", ("redis", "combine")),
    ("tracing", ("tracing", "tracing_core", "tracing_subscriber")),
]
CRATE_GROUP = {crate: name for name, crates in GROUPS for crate in crates}


def parse(path):
    total, rows = 0, []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        cost = int(m.group(1).replace(",", ""))
        where, obj = m.group(2), m.group(3) or ""
        if where == "PROGRAM TOTALS":
            total = cost
            continue
        # "file:function": the file never holds "::", the function usually does.
        fm = re.match(r"^(.*?):(?!:)(.*)$", where)
        func = fm.group(2) if fm else where
        rows.append((cost, func, obj))
    return total, rows


def group_of(func, obj):
    base = obj.rsplit("/", 1)[-1]
    if base.startswith(("libc.so", "ld-linux", "libm.so", "libgcc")):
        if re.search(r"malloc|free|realloc|calloc|tcache|_int_|memalign", func):
            return "libc: malloc/free"
        if re.search(r"mem(cpy|move|set|cmp|chr)|str", func):
            return "libc: mem*/str*"
        return "libc: other"
    if base.startswith("vgpreload") or base.startswith("valgrind"):
        return "valgrind preload"
    # mimalloc is linked into the binary (C functions, no crate path).
    if re.match(r"^_?mi_", func):
        return "allocator (mimalloc)"
    for crate in CRATE.findall(func):
        if crate in STD:
            continue
        return CRATE_GROUP.get(crate, "other crates")
    if re.match(r"^(core|alloc|std)::|^<(core|alloc|std)::", func) or "__rust" in func:
        return "Rust std (core, alloc, std)"
    return "other"


def main():
    self_path, incl_path, requests, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store_calls = int(sys.argv[5]) if len(sys.argv) > 5 else None
    if requests <= 0:
        sys.exit("no request was measured")
    total, rows = parse(self_path)
    _, incl = parse(incl_path)
    # A dump taken while the program runs charges the frames still on the stack (thread starts,
    # the runtimes' worker loops) with everything below them, as if it were their own cost: no
    # function of this workload has half of the total as its own cost, so those rows go.
    rows = [r for r in rows if r[0] < total / 2]
    per = lambda cost: cost / requests
    groups = defaultdict(int)
    for cost, func, obj in rows:
        groups[group_of(func, obj)] += cost
    print(f"### Instructions per request (callgrind, {requests:,} requests)\n")
    print(f"**Total: {per(total):,.0f} instructions per request** (every thread of the process)\n")
    if store_calls is not None:
        # Under valgrind the gateway serves ~100x fewer requests per second, so more batches of
        # rate-limit tokens lapse (250 ms) before they are spent than at full speed.
        print(f"Rate-limit calls to Redis: {store_calls / requests:.3f} per request "
              "(more than at full speed: batches lapse after 250 ms)\n")
    print("| owner of the code (self cost) | instr/request | share |")
    print("| --- | ---: | ---: |")
    for name, cost in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {per(cost):,.0f} | {100 * cost / total:.1f}% |")
    print(f"\n### Top {top} functions by self cost\n")
    print("| instr/request | share | function | group |")
    print("| ---: | ---: | --- | --- |")
    for cost, func, obj in sorted(rows, key=lambda r: -r[0])[:top]:
        name = func if len(func) <= 140 else func[:137] + "..."
        name = name.replace("|", "\\|")
        print(f"| {per(cost):,.0f} | {100 * cost / total:.1f}% | `{name}` | {group_of(func, obj)} |")
    print("\n### Our functions, inclusive cost (what they and everything they call cost)\n")
    print("| instr/request | function |")
    print("| ---: | --- |")
    ours = [(c, f) for c, f, o in incl if re.match(r"^<?fctf_(gateway|core)::", f)]
    for cost, func in sorted(ours, key=lambda r: -r[0])[:top]:
        name = func if len(func) <= 160 else func[:157] + "..."
        print(f"| {per(cost):,.0f} | `{name.replace('|', chr(92) + '|')}` |")


if __name__ == "__main__":
    main()
