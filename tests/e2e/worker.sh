#!/bin/sh
# The e2e suite's worker: the hello example, after a line on each stream
# (so the journal has worker lines to check) and a pause (so a start and a
# reload last long enough to be watched). exec keeps the pid and fd 3, the
# channel to the manager.
echo "worker $SOCKHERD_WORKER_ID says hello on stdout"
echo "worker $SOCKHERD_WORKER_ID says hello on stderr" >&2
sleep "${E2E_WORKER_DELAY:-0}"
exec /usr/local/lib/sockherd/hello
