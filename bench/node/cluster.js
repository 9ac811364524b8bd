// Node's own cluster primary, for comparison: forks WORKERS copies of
// hello.js. NODE_CLUSTER_SCHED_POLICY=rr|none picks round-robin in the
// primary or the kernel spreading accept()s over shared sockets.
const cluster = require('cluster');
const path = require('path');

cluster.setupPrimary({ exec: path.join(__dirname, 'hello.js') });
for (let i = 0; i < Number(process.env.WORKERS); i++) cluster.fork();
process.on('SIGTERM', () => {
  for (const id in cluster.workers) cluster.workers[id].kill();
  process.exit(0);
});
