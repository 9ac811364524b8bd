// sockherd's part inside a Node.js worker, loaded with `--require` before the
// app (the manager adds it to NODE_OPTIONS). It talks to the manager with
// internal messages ({cmd: 'NODE_SOCKHERD', ...}), which Node routes to
// 'internalMessage' and never to the app's 'message' listeners.
//
// - It says it is here, so that the manager knows it may ask for a stop this way.
// - Asked to stop with a signal, it lets the app's own handler run if the app
//   has one (its servers are still open; it has the whole kill timeout), and
//   otherwise stops the way Node's cluster does: close the servers, finish
//   what is in flight, exit.
// - Once a stopping cluster worker has closed all its servers itself, it
//   disconnects, so that the worker exits when its work is done, as a plain
//   `node app.js` would (the IPC channel would keep it alive).
// - While it stops, it reports how many connections its servers still hold,
//   so that a worker killed at the timeout is reported with what it lost.
// - It tells the manager about a listen() that will never reach it
//   (`exclusive: true` binds in the worker itself), so that the manager can
//   say why the app's listen fails.
'use strict';

const cluster = require('cluster');
const net = require('net');

// The app sees NODE_OPTIONS as the manager was given it, and the processes it
// starts do not load the shim.
{
  const quoted = `--require="${__filename.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  const options = (process.env.NODE_OPTIONS || '')
    .replace(quoted, '')
    .replace(`--require=${__filename}`, '')
    .trim();
  if (options === '') {
    delete process.env.NODE_OPTIONS;
  } else {
    process.env.NODE_OPTIONS = options;
  }
}

const send = (message) => {
  if (process.connected) {
    process.send(Object.assign({ cmd: 'NODE_SOCKHERD' }, message));
  }
};

// Leaves the cluster (or, for a plain IPC child, closes the channel), once.
// Node's own worker.disconnect() closes the servers still open and waits for
// them; calling it again while it runs does nothing.
const letGo = () => {
  if (!process.connected) {
    return;
  }
  if (cluster.worker) {
    cluster.worker.disconnect();
  } else {
    process.disconnect();
  }
};

// Every server that listens, until it closes.
const servers = new Set();

// How often a stopping worker looks at its servers.
const LOOK_EVERY_MS = 250;

// From the stop request on: report the open connections when their number
// changes, and let a cluster worker go once none of its servers listens.
const watch = () => {
  let reported = -1;
  const look = () => {
    if (cluster.worker && [...servers].every((server) => !server.listening)) {
      letGo();
    }
    let open = 0;
    let pending = servers.size;
    const done = () => {
      if (open !== reported) {
        reported = open;
        send({ act: 'open', connections: open });
      }
    };
    if (pending === 0) {
      done();
      return;
    }
    for (const server of servers) {
      server.getConnections((error, n) => {
        open += error ? 0 : n;
        pending -= 1;
        if (pending === 0) {
          done();
        }
      });
    }
  };
  setInterval(look, LOOK_EVERY_MS).unref();
  look();
};

let stopping = false;

process.on('internalMessage', (message) => {
  if (!message || message.cmd !== 'NODE_SOCKHERD' || message.act !== 'stop' || stopping) {
    return;
  }
  stopping = true;
  const signal = message.signal;
  if (typeof signal === 'string') {
    if (process.listenerCount(signal) > 0) {
      process.kill(process.pid, signal);
    } else {
      letGo();
    }
  }
  // After the signal is on its way: the app's handler runs first.
  setImmediate(watch);
});

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const options = args[0];
  if (options !== null && typeof options === 'object' && options.exclusive === true) {
    send({ act: 'exclusive', port: options.port, host: options.host, path: options.path });
  }
  servers.add(this);
  this.once('close', () => servers.delete(this));
  return listen.apply(this, args);
};

send({ act: 'hello' });
