#!/usr/bin/env bash
# bench/node.sh — the "node" section of bench/run.sh alone: the same Node app
# (bench/node/hello.js) under sockherd, under Node's own cluster primary
# (round-robin and SCHED_NONE) and under PM2 cluster mode (from npm into a
# scratch directory with its own PM2_HOME; left out, saying so, if npm cannot
# fetch it), with a new connection per request and with keep-alive; req/s
# relative to Node's round-robin primary and to PM2, and each manager's
# memory and CPU per request (sockherd, Node's primary, PM2's God daemon).
# The measuring is run.sh's (and bench/lib.sh's), so there is one copy of it.
#
#   bench/node.sh [WORKERS] [SECONDS]       (defaults: 2 workers, 10 s)
#
# Other settings: as bench/run.sh (ROUNDS, WARMUP, CONNECTIONS, PM2=0, OUT, …).
set -euo pipefail
[[ -z ${1:-} ]] || export WORKERS=$1
[[ -z ${2:-} ]] || export DURATION=$2
export BENCH_SECTIONS=node BENCH_NAME=node.sh BENCH_COMMAND=bench/node.sh
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh"
