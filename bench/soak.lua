-- wrk script for bench/soak.sh: ends wrk's summary with one
-- machine-readable line of counts.

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "SOAK requests=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
        summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
