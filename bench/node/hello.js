// The benchmark app: the smallest HTTP server, the same under every manager.
const http = require('http');

http
  .createServer((req, res) => res.end('hello\n'))
  .listen(Number(process.env.PORT));
