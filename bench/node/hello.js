// The benchmark app: the smallest HTTP server, the same under every manager.
// Its answer names its process, so that bench/lib.sh can tell when every
// worker answers. HOST (bench/run.sh sets 127.0.0.1) keeps it on loopback.
const http = require('http');

const body = `hello from pid ${process.pid}\n`;
http
  .createServer((req, res) => res.end(body))
  .listen(Number(process.env.PORT), process.env.HOST);
