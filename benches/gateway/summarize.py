#!/usr/bin/env python3
"""Tables of benches/gateway/run.sh: medians over rounds, and ratios to NGINX from the same run.

Reads the tab-separated measurements run.sh wrote (one line per target, round and phase) and
prints Markdown tables, the checks of the method (core 0 busy, no refused request) and the
issue's goals as ratios. Standard library only.
"""

import csv
import statistics
import sys

PROXIES = ("nginx", "haproxy", "gw-on", "gw-off")
BUSY_MIN = 0.90


def median(rows, key):
    values = [float(r[key]) for r in rows if r[key] not in ("", "-")]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def percent(fraction):
    return "-" if fraction is None else f"{fraction:.0%}"


def ratio(value, reference):
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def by_target(rows, phase):
    out = {}
    for row in rows:
        if row["phase"] == phase:
            out.setdefault(row["target"], []).append(row)
    return out


def saturation_table(groups, order, connections):
    print(f"### Saturation (wrk, {connections} connections; medians of rounds)\n")
    print("| target | req/s | vs NGINX | proxy CPU µs/req | vs NGINX | p99 ms | vs NGINX "
          "| proxy share of core 0 | core 0 busy | store calls/req |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ref = groups.get("nginx", [])
    ref_rps, ref_cpu, ref_p99 = median(ref, "rps"), median(ref, "cpu_us_per_req"), median(ref, "p99_us")
    medians = {}
    for target in order:
        rows = groups.get(target)
        if not rows:
            continue
        rps, cpu, p99 = median(rows, "rps"), median(rows, "cpu_us_per_req"), median(rows, "p99_us")
        share, busy = median(rows, "proxy_share"), median(rows, "core0_busy")
        calls = median(rows, "store_calls_per_req")
        medians[target] = {"rps": rps, "cpu": cpu, "p99": p99}
        print(f"| {target} | {fmt(rps, 0)} | {ratio(rps, ref_rps)} | {fmt(cpu, 2)} | {ratio(cpu, ref_cpu)} "
              f"| {fmt(p99 and p99 / 1000, 2)} | {ratio(p99, ref_p99)} "
              f"| {percent(share)} | {percent(busy)} | {fmt(calls, 3)} |")
    print()
    return medians


def fixed_table(groups, order, rate):
    print(f"### Fixed rate (oha, {rate} req/s with latency correction; medians of rounds)\n")
    print("| target | achieved req/s | p50 ms | p99 ms | p99 vs NGINX | proxy CPU µs/req | vs NGINX |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ref = groups.get("nginx", [])
    ref_p99, ref_cpu = median(ref, "p99_us"), median(ref, "cpu_us_per_req")
    medians = {}
    for target in order:
        rows = groups.get(target)
        if not rows:
            continue
        rps, p50, p99 = median(rows, "rps"), median(rows, "p50_us"), median(rows, "p99_us")
        cpu = median(rows, "cpu_us_per_req")
        medians[target] = {"p99": p99}
        print(f"| {target} | {fmt(rps, 0)} | {fmt(p50 and p50 / 1000, 3)} | {fmt(p99 and p99 / 1000, 3)} "
              f"| {ratio(p99, ref_p99)} | {fmt(cpu, 2)} | {ratio(cpu, ref_cpu)} |")
    print()
    return medians


def checks(rows, rate):
    problems = []
    for row in rows:
        where = f"{row['phase']} {row['target']} round {row['round']}"
        if row["phase"] == "fixed" and float(row["rps"]) < 0.95 * rate:
            problems.append(f"{where}: only {float(row['rps']):,.0f} of {rate:,.0f} req/s served "
                            "(the fixed rate was not held; its latencies are not valid)")
        if int(row["bad_status"]) or int(row["socket_errors"]):
            problems.append(f"{where}: {row['bad_status']} non-2xx responses, "
                            f"{row['socket_errors']} socket errors (the figures of this run are not valid)")
        if row["phase"] == "saturation" and row["target"] in PROXIES:
            busy = float(row["core0_busy"])
            share = float(row["proxy_share"])
            if busy < BUSY_MIN:
                problems.append(f"{where}: core 0 only {busy:.1%} busy (want >= {BUSY_MIN:.0%}): "
                                "the proxy was not saturated, the load generator or core 1 was the limit")
            elif share < BUSY_MIN:
                problems.append(f"{where}: core 0 {busy:.1%} busy but the proxy used only {share:.1%} "
                                "of it: something else ran on core 0 (a quiet machine is needed)")
    return problems


def goals(sat, fixed):
    lines = []
    on, off, ngx = sat.get("gw-on"), sat.get("gw-off"), sat.get("nginx")
    if on and ngx and on["rps"] and ngx["rps"]:
        r = on["rps"] / ngx["rps"]
        lines.append(f"- gateway (limits on) req/s vs NGINX: {r:.2f}x (goal >= 1.0x, first milestone 0.8x): "
                     f"{'met' if r >= 1.0 else 'milestone met' if r >= 0.8 else 'not met'}")
    if on and off and on["rps"] and off["rps"]:
        r = on["rps"] / off["rps"]
        lines.append(f"- limits on vs limits off req/s: {r:.2f}x (goal >= 0.9x): {'met' if r >= 0.9 else 'not met'}")
    fon, fngx = fixed.get("gw-on"), fixed.get("nginx")
    if fon and fngx and fon["p99"] and fngx["p99"]:
        r = fon["p99"] / fngx["p99"]
        lines.append(f"- gateway (limits on) p99 at the fixed rate vs NGINX: {r:.2f}x (goal <= 1.5x): "
                     f"{'met' if r <= 1.5 else 'not met'}")
    return lines


def main():
    path, order, connections, rate = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    sat = saturation_table(by_target(rows, "saturation"), order, connections)
    fixed = {}
    if any(r["phase"] == "fixed" for r in rows):
        fixed = fixed_table(by_target(rows, "fixed"), order, rate)
    else:
        print("(no fixed-rate phase: oha is not installed)\n")
    print("### Checks\n")
    problems = checks(rows, float(rate))
    for line in problems or ["- every round: no refused request, and core 0 at least 90% busy with the "
                             "proxy using it at saturation"]:
        print(line if line.startswith("- ") else f"- {line}")
    print("\n### Goals (issue 3), from this run\n")
    for line in goals(sat, fixed) or ["- (the gateway or NGINX was not measured)"]:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
