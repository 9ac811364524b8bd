#!/usr/bin/env bash
# bench/dispatch.sh — the "rust" section of bench/run.sh alone: the hello
# worker behind sockherd's round-robin dispatch against the same HTTP code in
# processes that accept() on one shared socket (examples/hello_shared), with a
# new connection per request and with keep-alive; req/s, ratio, p50/p99, and
# the manager's VmRSS/VmHWM and CPU µs per connection. Kept so that the
# commands in bench/RESULTS.md keep working; the measuring is run.sh's (and
# bench/lib.sh's), so there is one copy of it.
#
#   bench/dispatch.sh              ROUNDS=5 bench/dispatch.sh
#
# Settings: as bench/run.sh (WORKERS, DURATION, WARMUP, ROUNDS, CONNECTIONS,
# THREADS, BASE_PORT, OUT).
set -euo pipefail
export BENCH_SECTIONS=rust BENCH_NAME=dispatch.sh BENCH_COMMAND=bench/dispatch.sh
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh"
