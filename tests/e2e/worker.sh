#!/bin/sh
# The e2e suite's worker: the hello example, after a line on each stream
# (so the journal has worker lines to check) and a pause (so a start and a
# reload last long enough to be watched). exec keeps the pid and fd 3, the
# channel to the manager.
echo "worker $SOCKHERD_WORKER_ID says hello on stdout"
echo "worker $SOCKHERD_WORKER_ID says hello on stderr" >&2
sleep "${E2E_WORKER_DELAY:-0}"
# New code that cannot start: while the suite has created this file, a new
# worker hangs without ever reporting ready, so a reload fails on the
# manager's --ready-timeout. Workers already running are not affected.
if [ -e /run/sockherd-e2e-hang ]; then
  echo "worker $SOCKHERD_WORKER_ID hangs before ready (/run/sockherd-e2e-hang)" >&2
  exec sleep infinity
fi
exec /usr/local/lib/sockherd/hello
