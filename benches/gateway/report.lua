-- wrk report script for benches/gateway/run.sh: one machine-readable line at the end of a run,
-- with exact counts and latency percentiles in microseconds (wrk's own summary rounds them).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "FCTF_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
